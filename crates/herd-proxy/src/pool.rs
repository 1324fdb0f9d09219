//! A keep-alive pool of HTTP/1.1 connections to one instance.
//!
//! Checkout pops the most recently used idle connection (LIFO keeps few connections hot and lets
//! the rest age out), skipping closed or expired ones; otherwise it connects. Connections come
//! back only after their response body was fully read (see `body::UpstreamBody`). Owning the
//! pool, rather than using a generic client, lets the gateway see whether a request reached the
//! backend: a connect failure or a connection closed before the write leaves the request intact
//! for a retry on another instance.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::body::UpBody;

/// Longest wait for a pooled connection to accept its next request before connecting anew.
const READY_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Idle {
    conn: SendRequest<UpBody>,
    since: Instant,
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect refused or failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP/1.1 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

#[derive(Debug)]
pub(crate) struct Pool {
    addr: SocketAddr,
    instance: String,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(
        addr: SocketAddr,
        instance: String,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Pool {
            addr,
            instance,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// A ready connection: pooled if one is usable, else a new one.
    pub(crate) async fn get(&self) -> Result<SendRequest<UpBody>, ConnectError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut idle) = idle else { break };
            if idle.since.elapsed() > self.idle_timeout || idle.conn.is_closed() {
                continue;
            }
            if idle.conn.is_ready() {
                return Ok(idle.conn);
            }
            // Pooled only after both directions finished, so readiness is a poll away; bound it
            // anyway rather than stall a request behind a connection that never frees up.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, idle.conn.ready()).await {
                return Ok(idle.conn);
            }
        }
        self.connect(false).await
    }

    /// A new connection, never pooled before, that can switch protocols (`101`).
    pub(crate) async fn connect_for_upgrade(&self) -> Result<SendRequest<UpBody>, ConnectError> {
        self.connect(true).await
    }

    /// Returns a connection whose exchange has completed.
    pub(crate) fn put(&self, conn: SendRequest<UpBody>) {
        if conn.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            // Evict the oldest so the hottest stay.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Drops idle connections older than the idle timeout. Called by the gateway's sweeper.
    pub(crate) fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|i| now.duration_since(i.since) <= self.idle_timeout && !i.conn.is_closed());
    }

    async fn connect(&self, upgrades: bool) -> Result<SendRequest<UpBody>, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        stream.set_nodelay(true)?;
        let (conn, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        // The driver ends when the connection closes or every sender is dropped (pool eviction,
        // sweep, gateway shutdown), so it needs no separate stop signal.
        let span =
            tracing::debug_span!("upstream_conn", instance = %self.instance, addr = %self.addr);
        tokio::spawn(
            async move {
                let res = if upgrades {
                    // Ends when the connection is handed over to a tunnel (`hyper::upgrade::on`).
                    driver.with_upgrades().await
                } else {
                    driver.await
                };
                if let Err(e) = res {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            }
            .instrument(span),
        );
        Ok(conn)
    }
}
