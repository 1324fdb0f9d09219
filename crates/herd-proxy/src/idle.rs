//! `[gateway] idle_timeout` (nginx `keepalive_timeout`): closes a client connection that has no
//! request in flight and has moved no byte either way for that long. hyper has no such timer for
//! HTTP/2, and for HTTP/1 only the head-read timeout (`client_header_timeout`, which also runs
//! while a keep-alive connection waits for its next request), so herd keeps its own: the stream
//! wrapper notes the time of the last byte read or written, the service counts requests in
//! flight, and one timer per connection re-arms itself from the last activity.
//!
//! `[gateway] idle_release` uses the same bookkeeping: once an HTTP/1 keep-alive connection has
//! been quiet that long between two requests, the server asks hyper to let go of it
//! (`graceful_shutdown` with the stream in a [`Reclaim`] wrapper whose shutdown does nothing
//! and which hands the stream back when hyper drops it), frees hyper's buffers and parks the
//! bare socket (`parking`); the next byte starts a new connection task on the same socket.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Reads that returned bytes, and requests begun: a release is undone if either moves
    /// while hyper lets go (see `marks`).
    reads: AtomicU64,
    requests: AtomicU64,
    /// The client spoke HTTP/2 (never released: its state is the multiplexed session).
    h2: AtomicBool,
    /// Responses whose body hyper has not finished writing (see [`Answering`]).
    answering: AtomicUsize,
    /// hyper's last write found the socket full: bytes still wait in its buffer.
    write_blocked: AtomicBool,
    /// A response ended the connection's keep-alive (`Connection: close`, HTTP/1.0): hyper
    /// closes it, so it must not be released.
    closing: AtomicBool,
    /// An HTTP/2 connection must end after its streams in flight (GOAWAY): the connection is
    /// over `max_conn_per_ip`, the HTTP/2 counterpart of `Connection: close`.
    goaway: tokio::sync::Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            answering: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            goaway: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Counts a request in flight until the guard drops (when the handler has answered).
    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// Counts the connection busy (not as a new request) until the guard drops: an HTTP/2
    /// stream that became a tunnel.
    pub(crate) fn busy(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// Wraps a response body so that the response counts as being answered until hyper is
    /// done with its body (a release must not cut a body still being written, nor one whose
    /// end is the connection's close).
    pub(crate) fn answering<B>(self: &Arc<Self>, body: B) -> Answering<B> {
        self.answering.fetch_add(1, Ordering::AcqRel);
        Answering {
            inner: body,
            activity: Arc::clone(self),
        }
    }

    /// Notes that a response ends the connection's keep-alive: never release it.
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Asks the connection's task to end an HTTP/2 connection gracefully (GOAWAY).
    pub(crate) fn goaway(&self) {
        self.goaway.notify_one();
    }

    /// Resolves once [`Activity::goaway`] has been asked for (a permit is kept if it was asked
    /// before anyone waited).
    pub(crate) async fn goaway_asked(&self) {
        self.goaway.notified().await;
    }

    /// Notes the outcome of a write to the client: `Pending` means hyper holds unsent bytes.
    fn wrote<T>(&self, res: &Poll<std::io::Result<T>>) {
        match res {
            Poll::Pending => self.write_blocked.store(true, Ordering::Release),
            Poll::Ready(_) => self.write_blocked.store(false, Ordering::Release),
        }
    }

    /// Notes that the connection speaks HTTP/2.
    pub(crate) fn saw_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// Reads with bytes and requests begun so far.
    pub(crate) fn marks(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Acquire),
            self.requests.load(Ordering::Acquire),
        )
    }

    /// Resolves once an HTTP/1 connection that has served a request has been idle for `after`
    /// between two requests (`between` says whether every byte read belongs to a complete
    /// request) with every response written; never for HTTP/2. While a request head or body is part-way in, it looks again every `after`.
    pub(crate) async fn release_point(&self, after: Duration, between: impl Fn() -> bool) {
        loop {
            self.idle(after).await;
            if self.h2.load(Ordering::Relaxed) {
                return std::future::pending().await;
            }
            // A connection that has not sent a request yet stays with hyper, whose head-read
            // timer (`client_header_timeout`) deals with clients that send nothing.
            let served = self.requests.load(Ordering::Acquire) > 0;
            let written = self.answering.load(Ordering::Acquire) == 0
                && !self.write_blocked.load(Ordering::Acquire);
            if self.closing.load(Ordering::Acquire) {
                return std::future::pending().await;
            }
            if served && between() && written {
                return;
            }
            tokio::time::sleep(after).await;
        }
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
            this.activity.reads.fetch_add(1, Ordering::AcqRel);
        }
        res
    }
}

impl<T> Watched<T> {
    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// A response body counted in [`Activity`] until it is dropped.
#[derive(Debug)]
pub(crate) struct Answering<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> Drop for Answering<B> {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Answering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where a released connection's stream comes back to.
#[derive(Debug)]
pub(crate) struct Home<T> {
    armed: AtomicBool,
    slot: Mutex<Option<T>>,
}

impl<T> Default for Home<T> {
    fn default() -> Self {
        Home {
            armed: AtomicBool::new(false),
            slot: Mutex::new(None),
        }
    }
}

impl<T> Home<T> {
    /// From now on the stream is kept, not shut down, when hyper lets go of it.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// The stream, once hyper has dropped it after `arm`.
    pub(crate) fn take(&self) -> Option<T> {
        self.slot.lock().ok()?.take()
    }
}

/// The stream as hyper holds it: when armed, shutting it down does nothing and dropping it
/// hands it back to its [`Home`].
#[derive(Debug)]
pub(crate) struct Reclaim<T> {
    inner: Option<T>,
    home: Arc<Home<T>>,
}

impl<T> Reclaim<T> {
    pub(crate) fn new(inner: T, home: Arc<Home<T>>) -> Self {
        Reclaim {
            inner: Some(inner),
            home,
        }
    }

    fn inner(&mut self) -> std::io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the client stream was released"))
    }
}

impl<T> Drop for Reclaim<T> {
    fn drop(&mut self) {
        if self.home.armed.load(Ordering::Acquire) {
            if let (Some(inner), Ok(mut slot)) = (self.inner.take(), self.home.slot.lock()) {
                *slot = Some(inner);
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Reclaim<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Reclaim<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().inner() {
            Ok(inner) => Pin::new(inner).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.home.armed.load(Ordering::Acquire) {
            // Released, not closed: flush what hyper wrote and keep the socket open.
            return match this.inner() {
                Ok(inner) => Pin::new(inner).poll_flush(cx),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        match this.inner() {
            Ok(inner) => Pin::new(inner).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
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
        this.activity.wrote(&res);
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
        this.activity.wrote(&res);
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
