//! Bodies: what goes to a backend ([`UpBody`]) and what goes back to the client ([`ProxyBody`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use herd_core::{InFlightGuard, RouteStats};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::Full;
use hyper::body::Incoming;

use crate::edge::{BodyLimit, BodyTooLarge};
use crate::pool::{Conn, Pool};

/// How far the client's request body has got: when a frame of it was last read, and when the
/// whole of it had been handed to the backend connection. The response timeout counts from
/// the end of the upload; `client_body_timeout` bounds the pause between two reads.
#[derive(Debug)]
pub(crate) struct Upload {
    start: Instant,
    /// Microseconds from `start` to the last frame read from the client.
    last_read_us: AtomicU64,
    /// Microseconds from `start` to the end of the body, plus one; 0 while it is being sent.
    done_at_us: AtomicU64,
    /// Reading the client's body failed (the client broke it off, sent a malformed one, or
    /// passed `max_body_size`): the upstream request that fails with it is not the
    /// instance's fault, whatever error the upstream connection reports (HTTP/2 reports a
    /// reset stream, not hyper's "user" error).
    client_failed: std::sync::atomic::AtomicBool,
    /// The failure was the client going away mid-body (its connection closed or broke), not a
    /// malformed body: logged as 499, as nginx does, rather than a 400 nobody receives.
    client_gone: std::sync::atomic::AtomicBool,
}

impl Upload {
    fn new(done: bool) -> Upload {
        Upload {
            start: Instant::now(),
            last_read_us: AtomicU64::new(0),
            done_at_us: AtomicU64::new(u64::from(done)),
            client_failed: std::sync::atomic::AtomicBool::new(false),
            client_gone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }

    fn mark_read(&self) {
        self.last_read_us
            .store(self.since_start(), Ordering::Relaxed);
    }

    fn mark_done(&self) {
        let at = self.since_start() + 1;
        let _ = self
            .done_at_us
            .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the whole body has been handed to the connection.
    pub(crate) fn is_done(&self) -> bool {
        self.done_at_us.load(Ordering::Acquire) != 0
    }

    /// When the whole body had been handed to the connection.
    pub(crate) fn done_at(&self) -> Option<Instant> {
        match self.done_at_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(self.start + std::time::Duration::from_micros(us - 1)),
        }
    }

    /// Whether reading the client's body failed (see [`Upload::client_failed`]).
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Acquire)
    }

    /// Whether the client went away while its body was being read (see `client_gone`).
    pub(crate) fn client_gone(&self) -> bool {
        self.client_gone.load(Ordering::Acquire)
    }

    /// When a frame of the body was last read from the client (the start, before the first).
    pub(crate) fn last_read(&self) -> Instant {
        self.start + std::time::Duration::from_micros(self.last_read_us.load(Ordering::Relaxed))
    }
}

/// The request body sent upstream: the client's stream, or nothing (a rebuilt retry).
#[derive(Debug)]
pub(crate) enum UpBody {
    /// The upload's progress is tracked; bytes are counted into the route's statistics; past
    /// `max_body_size` the stream fails (hyper then aborts the upstream request).
    Client(Incoming, Arc<Upload>, Arc<RouteStats>, Option<BodyLimit>),
    Empty,
}

impl UpBody {
    pub(crate) fn client(
        body: Incoming,
        stats: Arc<RouteStats>,
        limit: Option<BodyLimit>,
    ) -> (Self, Arc<Upload>) {
        let upload = Arc::new(Upload::new(body.is_end_stream()));
        (
            UpBody::Client(body, Arc::clone(&upload), stats, limit),
            upload,
        )
    }
}

/// A request body that ended because the client left: its connection closed before the body
/// was complete, or broke (a reset). A malformed body (a bad chunk) is not that.
fn client_went_away(e: &hyper::Error) -> bool {
    connection_ended(e) || e.is_canceled()
}

/// A hyper error that is a connection ending (closed early, reset, broken), on either side.
/// hyper reports a malformed chunk as an I/O error too (`InvalidInput`/`InvalidData`): only the
/// kinds of a connection that ended count.
pub(crate) fn connection_ended(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    e.is_incomplete_message()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    ErrorKind::UnexpectedEof
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                )
            })
}

/// The error type of the bodies the gateway streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Client(b, done, stats, limit) => {
                let res = Pin::new(&mut *b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &res {
                    done.mark_read();
                    if let Some(data) = frame.data_ref() {
                        stats.add_bytes_in(data.len() as u64);
                        if let Some(limit) = limit {
                            if !limit.admit(data.len()) {
                                done.client_failed.store(true, Ordering::Release);
                                return Poll::Ready(Some(Err(BodyTooLarge(limit.max).into())));
                            }
                        }
                    }
                }
                if let Poll::Ready(Some(Err(e))) = &res {
                    if client_went_away(e) {
                        done.client_gone.store(true, Ordering::Release);
                    }
                    done.client_failed.store(true, Ordering::Release);
                }
                if matches!(res, Poll::Ready(None)) || b.is_end_stream() {
                    done.mark_done();
                }
                res.map(|f| f.map(|r| r.map_err(BoxError::from)))
            }
            UpBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Client(b, ..) => b.is_end_stream(),
            UpBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Client(b, ..) => b.size_hint(),
            UpBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// A response herd wrote itself (errors).
    Local(Full<Bytes>),
    /// A backend's response, streamed.
    Upstream(UpstreamBody),
    /// A body wrapped on the way out (compression, `total_timeout`, access log).
    Wrapped(UnsyncBoxBody<Bytes, BoxError>),
}

impl ProxyBody {
    /// A short local body.
    #[must_use]
    pub fn text(s: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(s.into()))
    }

    /// Wraps any body (boxed; used for the transforms on the way out).
    pub(crate) fn wrap<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt as _;
        ProxyBody::Wrapped(body.map_err(Into::into).boxed_unsync())
    }
}

/// Streams a backend response. When the stream ends it returns the connection to the pool
/// (only if the request body was fully sent too: a backend may answer before an upload ends) and
/// ends the in-flight count; if dropped early, the connection is discarded (hyper closes it).
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    guard: Option<InFlightGuard>,
    conn: Option<(Conn, Arc<Pool>)>,
    request_done: Option<Arc<Upload>>,
    stats: Arc<RouteStats>,
}

impl UpstreamBody {
    pub(crate) fn new(
        inner: Incoming,
        guard: InFlightGuard,
        conn: Conn,
        pool: Arc<Pool>,
        request_done: Option<Arc<Upload>>,
        stats: Arc<RouteStats>,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            guard: Some(guard),
            conn: Some((conn, pool)),
            request_done,
            stats,
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some((conn, pool)) = self.conn.take() {
            let sent = self.request_done.as_ref().is_none_or(|d| d.is_done());
            if sent {
                pool.put(conn);
            }
        }
        self.guard = None;
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Wrapped(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Upstream(up) => {
                let res = Pin::new(&mut up.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &res {
                    if let Some(data) = frame.data_ref() {
                        up.stats.add_bytes_out(data.len() as u64);
                    }
                }
                match &res {
                    Poll::Ready(None) => up.finish(),
                    Poll::Ready(Some(Ok(_))) if up.inner.is_end_stream() => up.finish(),
                    Poll::Ready(Some(Err(e))) => {
                        // The head went out as it came (a 200, say): only the log can tell
                        // that the client got less than the whole body.
                        tracing::warn!(app = %up.stats.app, route = %up.stats.route, error = %e, "the app's response body broke off before its end; the client got it truncated");
                        up.conn = None;
                        up.guard = None;
                    }
                    _ => {}
                }
                res.map(|f| f.map(|r| r.map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.is_end_stream(),
            ProxyBody::Upstream(up) => up.inner.is_end_stream(),
            ProxyBody::Wrapped(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(b) => b.size_hint(),
            ProxyBody::Upstream(up) => up.inner.size_hint(),
            ProxyBody::Wrapped(b) => b.size_hint(),
        }
    }
}
