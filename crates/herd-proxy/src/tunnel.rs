//! Upgraded connections (WebSocket, or any HTTP/1.1 `Upgrade` a backend accepts with `101`;
//! over HTTP/2, an extended CONNECT stream, see `extconnect`): after the `101`, the client
//! connection (or stream) and a fresh connection to one instance are spliced byte for byte
//! until either side closes, nothing passes either way for `[gateway] tunnel_idle_timeout`, or
//! the gateway's shutdown deadline runs out.
//!
//! Each tunnel holds its instance's in-flight guard, so a drain waits for it (bounded by the
//! instance's `drain_timeout`), and its client connection's slot under `max_connections` and
//! `max_conn_per_ip`, so tunnels count as the connections they are (an HTTP/2 tunnel is a
//! stream: its connection keeps the slot, and the tunnel keeps that connection from closing as
//! idle). The gateway tracks every tunnel task: shutdown waits for them within
//! `shutdown_timeout`, then cancels the rest.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use herd_core::InFlightGuard;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What a tunnel holds for its whole life.
pub(crate) struct Held {
    /// Its instance's in-flight count (a drain waits for the tunnel).
    pub(crate) _in_flight: InFlightGuard,
    /// An HTTP/1.1 tunnel: its client connection's limits slot.
    pub(crate) _conn: Option<crate::client_conn::Keep>,
    /// An HTTP/2 tunnel: its connection counted busy, so it is not closed as idle.
    pub(crate) _stream: Option<crate::handler::StreamBusy>,
}

/// A tunnel's access log line, handed over by the request path once the `101` (or an HTTP/2
/// stream's `200`) is on its way: written when the tunnel closes, with the tunnel's length and
/// the bytes sent to the client (nginx logs an upgraded connection when it closes).
pub(crate) type LogLine = (crate::access_log::Record, crate::access_log::Exchange, u16);

/// Put in the extensions of a tunnel's response: the request path sends the line here
/// instead of writing it at the `101`.
#[derive(Debug, Clone)]
pub(crate) struct TunnelLog(
    pub(crate) std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<LogLine>>>>,
);

/// The gateway's open tunnels: a tracker to wait for them and a token to end them.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tunnels {
    /// Splices `client` and `upstream` once both upgrades complete, in a task that ends on
    /// close, idle timeout or [`Tunnels::close_all`]. `held` is held until then.
    pub(crate) fn spawn(
        &self,
        client: OnUpgrade,
        upstream: OnUpgrade,
        held: Held,
        idle: Duration,
        span: tracing::Span,
        log: tokio::sync::oneshot::Receiver<LogLine>,
    ) {
        let stop = self.stop.clone();
        self.tracker.spawn(
            async move {
                let _held = held;
                let down = AtomicU64::new(0);
                tokio::select! {
                    () = run(client, upstream, idle, &down) => {}
                    () = stop.cancelled() => tracing::debug!("tunnel closed by shutdown"),
                }
                // Sent before the client could upgrade; none without an access log.
                if let Ok((record, ex, status)) = log.await {
                    record.finish(status, down.load(Ordering::Relaxed), &ex);
                }
            }
            .instrument(span),
        );
    }

    /// Waits until every tunnel has ended. New tunnels may still start meanwhile.
    pub(crate) async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Ends every open tunnel now (the shutdown deadline passed).
    pub(crate) fn close_all(&self) {
        self.stop.cancel();
    }
}

/// Splices until close or idle; `down` counts the bytes written to the client meanwhile.
async fn run(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, down: &AtomicU64) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let mut client = Active::new(TokioIo::new(client), start, &last, Some(down));
    let mut upstream = Active::new(TokioIo::new(upstream), start, &last, None);
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match res {
            Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
        },
        () = idle_for(idle, start, &last) => tracing::debug!(?idle, "tunnel closed after idle timeout"),
    }
}

/// Resolves once nothing was read on either side for `idle`.
async fn idle_for(idle: Duration, start: Instant, last: &AtomicU64) {
    loop {
        let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
        if seen.elapsed() >= idle {
            return;
        }
        tokio::time::sleep_until(seen + idle).await;
    }
}

/// An IO that notes the time of its last read of at least one byte (every write follows one).
/// Optionally counts the bytes written to it.
struct Active<'a, T> {
    inner: T,
    start: Instant,
    last: &'a AtomicU64,
    written: Option<&'a AtomicU64>,
}

impl<'a, T> Active<'a, T> {
    fn new(inner: T, start: Instant, last: &'a AtomicU64, written: Option<&'a AtomicU64>) -> Self {
        Active {
            inner,
            start,
            last,
            written,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(this.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.store(ms, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(written)) = (&res, this.written) {
            written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
