//! The last wrapper on a response body: it enforces `total_timeout` while the body streams
//! (the stream fails at the deadline: hyper then closes an HTTP/1 connection or resets the
//! HTTP/2 stream, since the response head is already out) and writes the access log line,
//! with the bytes actually sent, when the body ends or is dropped.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::access_log::{Exchange, Record};
use crate::body::{BoxError, ProxyBody};

/// The response body ran past `total_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("response cut: total_timeout of {0:?} reached")]
struct TotalTimeout(Duration);

struct Tail {
    inner: ProxyBody,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    log: Option<(Record, Exchange)>,
    status: u16,
    bytes: u64,
    /// The body the client is owed: `Some(0)` when it gets none (an answer to `HEAD`, a `204`,
    /// a `304`), the `Content-Length` when there is one. Past it, hyper may drop the body
    /// without reading its end, and that is no cut.
    owed: Option<u64>,
}

/// Wraps `resp` when there is a deadline or a log line to write; else returns it unchanged.
pub(crate) fn wrap(
    resp: Response<ProxyBody>,
    ex: Exchange,
    record: Option<Record>,
    head: bool,
) -> Response<ProxyBody> {
    // herd's own answers (errors, the 504 for this very timeout) are short and go out whole.
    let local = matches!(resp.body(), ProxyBody::Local(_));
    let deadline = ex
        .deadline
        .zip(ex.total_timeout)
        .filter(|_| !local)
        .map(|(at, total)| (Box::pin(tokio::time::sleep_until(at.into())), total));
    if deadline.is_none() && record.is_none() {
        return resp;
    }
    let status = resp.status().as_u16();
    let owed = if head || matches!(status, 100..=199 | 204 | 304) {
        Some(0)
    } else {
        resp.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    };
    let (parts, inner) = resp.into_parts();
    let tail = Tail {
        inner,
        deadline,
        log: record.map(|r| (r, ex)),
        status,
        bytes: 0,
        owed,
    };
    Response::from_parts(parts, ProxyBody::wrap(tail))
}

impl Tail {
    fn log(&mut self) {
        if let Some((record, ex)) = self.log.take() {
            record.finish(self.status, self.bytes, &ex);
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Dropped before its end: the client's connection closed or its stream was reset
        // under it (the client left, or `idle_timeout` passed with no byte moving). The status
        // went out whole; the line says the body did not.
        let whole = self.inner.is_end_stream() || self.owed.is_some_and(|n| self.bytes >= n);
        if !whole {
            if let Some((_, ex)) = &mut self.log {
                if ex.body_error.is_none() {
                    ex.body_error = Some(CUT_ON_THE_CLIENT_SIDE.to_owned());
                }
            }
        }
        self.log();
    }
}

/// `body_error` of a response whose client connection ended before its body did.
const CUT_ON_THE_CLIENT_SIDE: &str = "response cut: the client connection closed (or its stream was reset) before the body ended: the client left, or no byte moved for idle_timeout";

impl Body for Tail {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some((sleep, total)) = &mut this.deadline {
            if sleep.as_mut().poll(cx).is_ready() {
                let total = *total;
                this.deadline = None;
                if let Some((_, ex)) = &mut this.log {
                    ex.body_error = Some(TotalTimeout(total).to_string());
                }
                this.log();
                return Poll::Ready(Some(Err(TotalTimeout(total).into())));
            }
        }
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                } else if frame.is_trailers() {
                    // Trailers are the last frame: hyper may not ask for the end after them.
                    this.log();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some((_, ex)) = &mut this.log {
                    ex.body_error = Some(e.to_string());
                }
                this.log();
            }
            Poll::Ready(None) => this.log(),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
