//! A keep-alive pool of HTTP/1.1 connections to one instance, or, for `protocol = "h2c"`, one
//! shared HTTP/2 connection (prior knowledge) that every request multiplexes on and that is
//! dialled again when it closes.
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

use herd_config::Protocol;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::{http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// A connection ready for one request: HTTP/1.1 (exclusive) or HTTP/2 (a shared handle).
#[derive(Debug)]
pub(crate) enum Conn {
    H1(SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

impl Conn {
    /// Sends the request; on failure before the write, hyper hands the request back.
    pub(crate) async fn try_send_request(
        &mut self,
        req: Request<UpBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpBody>>> {
        match self {
            Conn::H1(c) => c.try_send_request(req).await,
            Conn::H2(c) => c.try_send_request(req).await,
        }
    }

    pub(crate) fn is_h2(&self) -> bool {
        matches!(self, Conn::H2(_))
    }
}

#[derive(Debug)]
pub(crate) struct Pool {
    addr: SocketAddr,
    instance: String,
    idle: Mutex<Vec<Idle>>,
    /// `h2c`: the shared connection; the async lock is held only while (re)connecting.
    h2: Option<tokio::sync::Mutex<Option<http2::SendRequest<UpBody>>>>,
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
        protocol: Protocol,
    ) -> Self {
        Pool {
            addr,
            instance,
            idle: Mutex::new(Vec::new()),
            h2: (protocol == Protocol::H2c).then(|| tokio::sync::Mutex::new(None)),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// A ready connection: pooled if one is usable, else a new one.
    pub(crate) async fn get(&self) -> Result<Conn, ConnectError> {
        if let Some(h2) = &self.h2 {
            return self.get_h2(h2).await.map(Conn::H2);
        }
        self.get_h1().await.map(Conn::H1)
    }

    async fn get_h2(
        &self,
        slot: &tokio::sync::Mutex<Option<http2::SendRequest<UpBody>>>,
    ) -> Result<http2::SendRequest<UpBody>, ConnectError> {
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let stream = self.dial().await?;
        let (conn, driver) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await?;
        // Ends when the backend closes the connection or every handle is dropped.
        let span =
            tracing::debug_span!("upstream_h2c", instance = %self.instance, addr = %self.addr);
        tokio::spawn(
            async move {
                if let Err(e) = driver.await {
                    tracing::debug!(error = %e, "upstream h2c connection ended with an error");
                }
            }
            .instrument(span),
        );
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the shared HTTP/2 connection after a failure on it, so the next request dials
    /// anew instead of finding a connection that is closing but not yet seen closed.
    pub(crate) async fn forget_h2(&self) {
        if let Some(h2) = &self.h2 {
            *h2.lock().await = None;
        }
    }

    async fn get_h1(&self) -> Result<SendRequest<UpBody>, ConnectError> {
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
    /// Always HTTP/1.1, also for `h2c` apps (extended CONNECT is not used).
    pub(crate) async fn connect_for_upgrade(&self) -> Result<Conn, ConnectError> {
        self.connect(true).await.map(Conn::H1)
    }

    /// Returns a connection whose exchange has completed (HTTP/2 handles are simply dropped:
    /// the shared connection stays in its slot).
    pub(crate) fn put(&self, conn: Conn) {
        let Conn::H1(conn) = conn else { return };
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

    async fn dial(&self) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn connect(&self, upgrades: bool) -> Result<SendRequest<UpBody>, ConnectError> {
        let stream = self.dial().await?;
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
