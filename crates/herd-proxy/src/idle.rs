//! `[gateway] idle_timeout` (nginx `keepalive_timeout`): closes a client connection that has no
//! request in flight and has moved no byte either way for that long. hyper has no such timer for
//! HTTP/2, and for HTTP/1 only the head-read timeout (`client_header_timeout`, which also runs
//! while a keep-alive connection waits for its next request), so herd keeps its own: the stream
//! wrapper notes the time of the last byte read or written, the service counts requests in
//! flight, and one timer per connection re-arms itself from the last activity.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// tokio's clock, so tests can run it in virtual time.
use tokio::time::Instant;

/// One client connection's activity.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte moved.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Counts a request in flight until the guard drops (when the handler has answered).
    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// Resolves once the connection has been idle for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let due = self.last() + timeout;
            tokio::time::sleep_until(due).await;
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            if busy {
                // A request is being handled: look again one period from now.
                self.touch();
            } else if self.last() + timeout <= Instant::now() {
                return;
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client stream, noting each byte's time in its [`Activity`].
#[derive(Debug)]
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        activity.touch();
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_and_restarts_on_activity() {
        let a = Activity::new();
        a.touch();
        let start = Instant::now();
        let guard = a.begin();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.idle(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!waiter.is_finished(), "a request in flight keeps it open");
        drop(guard);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!waiter.is_finished());
        waiter.await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(35));
    }
}
