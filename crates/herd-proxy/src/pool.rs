//! A keep-alive pool of HTTP/1.1 connections to one instance, or, for `protocol = "h2c"`, one
//! shared HTTP/2 connection (prior knowledge) that every request multiplexes on and that is
//! dialled again when it closes.
//!
//! Each shard (see `shard`) has its own idle list and its own HTTP/2 connection, so a request
//! only ever uses connections driven by its own thread (nginx's `keepalive` is likewise per
//! worker process): `pool_max_idle` is per shard.
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
use crate::shard;

/// Longest wait for a pooled connection to accept its next request before connecting anew.
const READY_WAIT: Duration = Duration::from_millis(100);

/// One shard's `h2c` connection.
type H2Slot = tokio::sync::Mutex<Option<http2::SendRequest<UpBody>>>;

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

/// A pool's settings, from `[gateway]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolLimits {
    /// `pool_max_idle` per shard.
    pub(crate) max_idle: usize,
    /// `pool_idle_timeout`.
    pub(crate) idle_timeout: Duration,
    /// `connect_timeout` (a route may override it per dial).
    pub(crate) connect_timeout: Duration,
    /// `max_headers` in a response.
    pub(crate) max_headers: usize,
}

#[derive(Debug)]
pub(crate) struct Pool {
    addr: SocketAddr,
    instance: String,
    /// Idle connections, one list per shard.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// `h2c`: the shared connection of each shard; the async lock is held only while
    /// (re)connecting.
    h2: Option<Box<[H2Slot]>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// Header fields a response may carry (hyper: 100 unless raised).
    max_headers: usize,
}

impl Pool {
    pub(crate) fn new(
        addr: SocketAddr,
        instance: String,
        limits: &PoolLimits,
        protocol: Protocol,
        shards: usize,
    ) -> Self {
        let PoolLimits {
            max_idle,
            idle_timeout,
            connect_timeout,
            max_headers,
        } = *limits;
        let shards = shards.max(1);
        Pool {
            addr,
            instance,
            idle: (0..shards).map(|_| Mutex::default()).collect(),
            h2: (protocol == Protocol::H2c)
                .then(|| (0..shards).map(|_| H2Slot::default()).collect()),
            max_idle,
            idle_timeout,
            connect_timeout,
            max_headers,
        }
    }

    /// A ready connection: pooled if one is usable, else a new one, dialled within
    /// `connect_timeout` (else the gateway's).
    #[cfg(test)]
    pub(crate) async fn get(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<Conn, ConnectError> {
        self.checkout(connect_timeout).await.map(|(c, _)| c)
    }

    /// As `get`, and whether the connection served an exchange before (an HTTP/1.1
    /// connection from the idle list, which the instance may be closing as it is used).
    pub(crate) async fn checkout(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<(Conn, bool), ConnectError> {
        if let Some(slot) = self.h2_slot() {
            return self
                .get_h2(slot, connect_timeout)
                .await
                .map(|c| (Conn::H2(c), false));
        }
        self.get_h1(connect_timeout)
            .await
            .map(|(c, reused)| (Conn::H1(c), reused))
    }

    async fn get_h2(
        &self,
        slot: &H2Slot,
        connect_timeout: Option<Duration>,
    ) -> Result<http2::SendRequest<UpBody>, ConnectError> {
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        // Boxed: dialling is the cold path (see `get_h1`).
        let conn = Box::pin(self.connect_h2(connect_timeout)).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn connect_h2(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<http2::SendRequest<UpBody>, ConnectError> {
        let stream = self.dial(connect_timeout).await?;
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
        Ok(conn)
    }

    /// Drops the shared HTTP/2 connection after a failure on it, so the next request dials
    /// anew instead of finding a connection that is closing but not yet seen closed.
    pub(crate) async fn forget_h2(&self) {
        if let Some(slot) = self.h2_slot() {
            *slot.lock().await = None;
        }
    }

    async fn get_h1(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<(SendRequest<UpBody>, bool), ConnectError> {
        loop {
            let idle = self.idle().lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut idle) = idle else { break };
            if idle.since.elapsed() > self.idle_timeout || idle.conn.is_closed() {
                continue;
            }
            if idle.conn.is_ready() {
                return Ok((idle.conn, true));
            }
            // Pooled only after both directions finished, so readiness is a poll away; bound it
            // anyway rather than stall a request behind a connection that never frees up.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, idle.conn.ready()).await {
                return Ok((idle.conn, true));
            }
        }
        // Boxed: dialling is the cold path, and its state would size every request's future.
        Box::pin(self.connect(false, connect_timeout))
            .await
            .map(|c| (c, false))
    }

    /// A new connection, never pooled before, that can switch protocols (`101`).
    /// Always HTTP/1.1, also for `h2c` apps (extended CONNECT is not used).
    pub(crate) async fn connect_for_upgrade(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<Conn, ConnectError> {
        Box::pin(self.connect(true, connect_timeout))
            .await
            .map(Conn::H1)
    }

    /// Returns a connection whose exchange has completed (HTTP/2 handles are simply dropped:
    /// the shared connection stays in its slot).
    pub(crate) fn put(&self, conn: Conn) {
        let Conn::H1(conn) = conn else { return };
        if conn.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle().lock().unwrap_or_else(|e| e.into_inner());
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
        for idle in &self.idle {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|i| {
                now.duration_since(i.since) <= self.idle_timeout && !i.conn.is_closed()
            });
        }
    }

    /// The calling shard's idle list.
    fn idle(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[shard::current() % self.idle.len()]
    }

    /// The calling shard's `h2c` connection slot (`None`: an HTTP/1.1 app).
    fn h2_slot(&self) -> Option<&H2Slot> {
        self.h2
            .as_deref()
            .map(|h2| &h2[shard::current() % h2.len()])
    }

    async fn dial(&self, connect_timeout: Option<Duration>) -> Result<TcpStream, ConnectError> {
        let limit = connect_timeout.unwrap_or(self.connect_timeout);
        let stream = tokio::time::timeout(limit, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(limit))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn connect(
        &self,
        upgrades: bool,
        connect_timeout: Option<Duration>,
    ) -> Result<SendRequest<UpBody>, ConnectError> {
        let stream = self.dial(connect_timeout).await?;
        let mut builder = http1::Builder::new();
        if self.max_headers != crate::serving::HYPER_MAX_HEADERS {
            builder.max_headers(self.max_headers);
        }
        let (conn, driver) = builder.handshake(TokioIo::new(stream)).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A backend that accepts connections (counting them) and keeps them open.
    async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                open.push(s);
            }
        });
        (addr, accepted)
    }

    fn pool(addr: SocketAddr, shards: usize) -> Arc<Pool> {
        Arc::new(Pool::new(
            addr,
            "web-1".into(),
            &PoolLimits {
                max_idle: 8,
                idle_timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(5),
                max_headers: 100,
            },
            Protocol::Http1,
            shards,
        ))
    }

    /// Checks a connection out and back in on a thread serving shard `index`.
    fn round_trip_on_shard(pool: &Arc<Pool>, index: usize) {
        let pool = Arc::clone(pool);
        std::thread::spawn(move || {
            shard::enter(index);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let conn = pool.get(None).await.unwrap();
                    pool.put(conn);
                });
        })
        .join()
        .unwrap();
    }

    /// Waits (bounded) until the backend has accepted `n` connections.
    async fn accepted_reaches(accepted: &AtomicUsize, n: usize) {
        for _ in 0..500 {
            if accepted.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), n);
    }

    #[tokio::test]
    async fn each_shard_keeps_its_own_idle_connections() {
        let (addr, accepted) = backend().await;
        let pool = pool(addr, 2);
        let conn = pool.get(None).await.unwrap();
        pool.put(conn);
        accepted_reaches(&accepted, 1).await;
        // Shard 1 does not take shard 0's idle connection: it dials its own.
        round_trip_on_shard(&pool, 1);
        accepted_reaches(&accepted, 2).await;
        assert_eq!(pool.idle[0].lock().unwrap().len(), 1);
        // Back on shard 0, the pooled connection is the one checked out.
        let conn = pool.get(None).await.unwrap();
        assert_eq!(pool.idle[0].lock().unwrap().len(), 0);
        pool.put(conn);
        assert_eq!(pool.idle[0].lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn one_shard_pools_are_shared_by_every_thread() {
        let (addr, _) = backend().await;
        let pool = pool(addr, 1);
        let conn = pool.get(None).await.unwrap();
        pool.put(conn);
        // Any shard index maps onto the single list (a gateway served with `serve`).
        let seen = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                shard::enter(5);
                pool.idle().lock().unwrap().len()
            })
            .join()
            .unwrap()
        };
        assert_eq!(seen, 1);
    }
}
