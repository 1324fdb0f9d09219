//! Request-smuggling guard: follows HTTP/1 request framing on a client connection, alongside
//! hyper, to flag requests that hyper accepts only after normalising them.
//!
//! hyper 1 already refuses (400, connection closed) obs-fold lines, differing `Content-Length`
//! values, a `Transfer-Encoding` whose last coding is not `chunked`, and `Transfer-Encoding` on
//! HTTP/1.0. It accepts, as RFC 9112 §6.1/§6.3 allow, a request carrying both `Content-Length`
//! and `Transfer-Encoding` (it drops `Content-Length`) and repeated equal `Content-Length`
//! headers (it keeps one), so the handler never sees the ambiguity. Because a front end and a
//! back end that disagree on framing is exactly what smuggling exploits, herd refuses both with
//! 400: [`Scan`] wraps the socket, parses each request head with the same parser hyper uses
//! (`httparse`), walks the body framing to find the next head, and records the first offending
//! request's ordinal in [`Verdict`], which the service checks before a backend is touched.
//!
//! It also checks chunk-size lines. hyper rejects a bad one too, but only when the body is read,
//! after the head has been forwarded; when the bad chunk arrives with the head (the usual attack)
//! the request is refused here before it reaches a backend. A bad chunk that arrives later
//! makes hyper fail the body: the upstream request is aborted (the backend never sees a complete
//! request) and the client gets 400, not held against the instance (`handler`).
//!
//! After a flagged request or anything it cannot parse (hyper rejects that itself), the scanner
//! stops: the connection is closed after such a request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_util::future::{ready, Either, Ready};
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::handler::error_response;

/// hyper's default limit on the number of request headers.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line followed; hyper refuses chunk extensions far shorter.
const MAX_LINE: usize = 64 * 1024;

/// What the scanner found, read by the service for each request of the connection in order.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    flagged: OnceLock<(u64, &'static str)>,
    served: AtomicU64,
    /// A backend answered `101`: the bytes that follow are a tunnel, not HTTP.
    tunnel: AtomicBool,
    /// The scanner holds part of a request (a head or a body not yet complete), or has
    /// stopped: the connection is not between two requests.
    partial: AtomicBool,
    /// Complete request heads the scanner has read (compared with `served`: a request hyper
    /// read but has not handed to the service yet sits in hyper's buffer).
    heads: AtomicU64,
    /// The connection's slot under `max_connections` and `max_conn_per_ip`: held here for the
    /// connection's life, and handed to its tunnel when it becomes one (see [`Upgrading`]).
    keep: std::sync::Mutex<Option<crate::client_conn::Keep>>,
}

impl Verdict {
    /// Holds the connection's limits slot while the connection lives.
    pub(crate) fn hold(&self, keep: crate::client_conn::Keep) {
        *self
            .keep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keep);
    }

    /// Takes the slot back (the connection is parked, or became a tunnel).
    pub(crate) fn take_keep(&self) -> Option<crate::client_conn::Keep> {
        self.keep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Every byte read so far belongs to complete requests (what `idle_release` needs: hyper
    /// then holds no unparsed input).
    pub(crate) fn between_requests(&self) -> bool {
        !self.partial.load(Ordering::Relaxed)
            && !self.tunnel.load(Ordering::Relaxed)
            && self.heads.load(Ordering::Relaxed) == self.served.load(Ordering::Relaxed)
    }

    /// Called once per request the service receives, in order: why this request must be
    /// refused, if it must.
    pub(crate) fn next_request(&self) -> Option<&'static str> {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        match self.flagged.get() {
            Some(&(k, why)) if k <= n => Some(why),
            _ => None,
        }
    }
}

/// Handed to the handler in the extensions of a request that asks for an upgrade, to stop the
/// scan once the connection becomes a tunnel.
#[derive(Debug, Clone)]
pub(crate) struct Upgrading(Arc<Verdict>);

impl Upgrading {
    /// The upgrade succeeded: from now on the client's bytes are not HTTP/1. Returns the
    /// connection's limits slot, for the tunnel to hold: a tunnel still counts under
    /// `max_connections` and `max_conn_per_ip`.
    pub(crate) fn tunnel(&self) -> Option<crate::client_conn::Keep> {
        self.0.tunnel.store(true, Ordering::Relaxed);
        self.0.take_keep()
    }
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    /// How many bytes of the CRLF after a chunk's data were seen.
    ChunkEnd(u8),
    Trailer(Vec<u8>),
    Off,
}

/// Follows request framing over the bytes read from one client connection.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    heads: u64,
    max_head: usize,
    /// As many header fields as hyper accepts (`[gateway] max_headers`): a head with more
    /// than the scanner can parse would otherwise turn the checks off for the connection.
    max_headers: usize,
    verdict: Arc<Verdict>,
}

impl Scanner {
    /// `max_head` should be at least hyper's `max_buf_size`, so no head hyper parses goes
    /// unchecked.
    pub(crate) fn new(max_head: usize, max_headers: usize, verdict: Arc<Verdict>) -> Self {
        Scanner {
            state: State::Head(Vec::new()),
            heads: 0,
            max_head,
            max_headers,
            verdict,
        }
    }

    fn flag(&mut self, why: &'static str) {
        let _ = self
            .verdict
            .flagged
            .set((self.heads.saturating_sub(1), why));
        self.state = State::Off;
    }

    /// Consumes bytes as they are read from the client.
    pub(crate) fn feed(&mut self, input: &[u8]) {
        self.follow(input);
        let between = matches!(&self.state, State::Head(b) if b.is_empty());
        self.verdict.partial.store(!between, Ordering::Relaxed);
        self.verdict.heads.store(self.heads, Ordering::Relaxed);
    }

    fn follow(&mut self, mut input: &[u8]) {
        if self.verdict.tunnel.load(Ordering::Relaxed) {
            self.state = State::Off;
        }
        while !input.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Head(buf) if buf.is_empty() => {
                    // The usual case: a whole head within one read, parsed in place.
                    let Some(len) = self.head(input) else { return };
                    input = &input[len..];
                }
                State::Head(buf) => {
                    let mut buf = std::mem::take(buf);
                    buf.extend_from_slice(input);
                    // The bytes buffered before were an incomplete head, so whatever follows
                    // the head lies within `input`.
                    let Some(len) = self.head(&buf) else { return };
                    input = &input[input.len() - (buf.len() - len)..];
                }
                State::Fixed(left) => {
                    let n = (*left).min(input.len() as u64);
                    *left -= n;
                    #[allow(clippy::cast_possible_truncation)] // n <= input.len()
                    let n = n as usize;
                    input = &input[n..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkData(left) => {
                    let n = (*left).min(input.len() as u64);
                    *left -= n;
                    #[allow(clippy::cast_possible_truncation)] // n <= input.len()
                    let n = n as usize;
                    input = &input[n..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(0);
                    }
                }
                State::ChunkEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if input[0] != want {
                        self.flag("malformed chunked body");
                        return;
                    }
                    input = &input[1..];
                    *seen += 1;
                    if *seen == 2 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::ChunkSize(line) | State::Trailer(line) => {
                    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(input);
                        if line.len() > MAX_LINE {
                            self.flag("chunk line too long");
                        }
                        return;
                    };
                    line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if matches!(self.state, State::Trailer(_)) {
                        if line.is_empty() {
                            self.state = State::Head(Vec::new());
                        }
                        continue;
                    }
                    match chunk_size(line) {
                        Some(0) => self.state = State::Trailer(Vec::new()),
                        Some(n) => self.state = State::ChunkData(n),
                        None => {
                            self.flag("invalid chunk size");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Checks a head; returns its length once it is complete.
    fn head(&mut self, buf: &[u8]) -> Option<usize> {
        // On the stack up to hyper's default; a larger `max_headers` takes a heap array.
        let mut stack = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut heap;
        let headers: &mut [httparse::Header<'_>] = if self.max_headers <= MAX_HEADERS {
            &mut stack
        } else {
            heap = vec![httparse::EMPTY_HEADER; self.max_headers];
            &mut heap
        };
        let mut req = httparse::Request::new(headers);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() <= self.max_head => {
                self.state = State::Head(buf.to_vec());
                return None;
            }
            // hyper refuses these itself (400 or 431) and closes the connection.
            _ => {
                self.state = State::Off;
                return None;
            }
        };
        self.heads += 1;
        let (mut lengths, mut encodings, mut chunked) = (0, 0, false);
        let mut chunked_codings = 0;
        let mut length = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encodings += 1;
                chunked_codings += h
                    .value
                    .split(|&b| b == b',')
                    .filter(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                    .count();
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        if encodings > 0 && lengths > 0 {
            self.flag("both Content-Length and Transfer-Encoding");
            return None;
        }
        if chunked_codings > 1 {
            // RFC 9112 §6.1: chunked is applied at most once (nginx: 400 or 501).
            self.flag("chunked applied more than once");
            return None;
        }
        if lengths > 1 {
            self.flag("several Content-Length headers");
            return None;
        }
        if lengths == 1 && length.is_none() {
            // A list such as "5, 5" (a duplicate in disguise) or garbage.
            self.flag("invalid or repeated Content-Length");
            return None;
        }
        // Requests with `Upgrade` (or CONNECT) are followed like any other: unless the backend
        // answers `101` (then the handler marks the connection a tunnel through [`Upgrading`] and
        // the scan stops), the next bytes are HTTP/1 again; stopping here would let a harmless
        // first request, refused an upgrade, open the way for a smuggled second one.
        self.state = if encodings > 0 {
            if chunked && req.version == Some(1) {
                State::ChunkSize(Vec::new())
            } else {
                State::Off // refused by hyper
            }
        } else {
            match length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => State::Head(Vec::new()),
            }
        };
        Some(len)
    }
}

/// A chunk-size line's size (extensions after `;` or whitespace ignored, as hyper does).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|&b| matches!(b, b';' | b' ' | b'\t'))
        .unwrap_or(line.len());
    let hex = std::str::from_utf8(&line[..end]).ok()?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A client socket whose reads go through a [`Scanner`].
#[derive(Debug)]
pub(crate) struct Scan<T> {
    inner: T,
    scanner: Scanner,
}

impl<T> Scan<T> {
    pub(crate) fn new(
        inner: T,
        max_head: usize,
        max_headers: usize,
        verdict: Arc<Verdict>,
    ) -> Self {
        Scan {
            inner,
            scanner: Scanner::new(max_head, max_headers, verdict),
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// The connection's service, refusing the requests its [`Scan`] flagged: 400 and
/// `Connection: close`, before any route, limit or backend is involved.
#[derive(Debug, Clone)]
pub(crate) struct Guarded<S> {
    verdict: Arc<Verdict>,
    inner: S,
    /// The access log (refusals get their line too) and the client.
    log: Option<Arc<crate::access_log::AccessLogger>>,
    refused: Arc<herd_core::RefusedRequests>,
    peer: std::net::SocketAddr,
}

impl<S> Guarded<S> {
    pub(crate) fn new(
        verdict: Arc<Verdict>,
        inner: S,
        log: Option<Arc<crate::access_log::AccessLogger>>,
        refused: Arc<herd_core::RefusedRequests>,
        peer: std::net::SocketAddr,
    ) -> Self {
        Guarded {
            verdict,
            inner,
            log,
            refused,
            peer,
        }
    }
}

impl<S> Service<Request<Incoming>> for Guarded<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>>,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<ProxyBody>, S::Error>>, S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // HTTP/2 streams share the counter but are never flagged (the scanner stops at the
        // preface, which is not HTTP/1).
        match self.verdict.next_request() {
            Some(reason) => {
                tracing::debug!(reason, "refused ambiguous request framing");
                let mut resp = error_response(&ProxyError::BadRequest { reason });
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                let resp = crate::handler::refused(
                    self.log.as_ref(),
                    &self.refused,
                    &req,
                    self.peer,
                    resp,
                );
                Either::Left(ready(Ok(resp)))
            }
            None => {
                if req.headers().contains_key(header::UPGRADE) {
                    req.extensions_mut()
                        .insert(Upgrading(Arc::clone(&self.verdict)));
                }
                Either::Right(self.inner.call(req))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Scan<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.scanner.feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Scan<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<Option<&'static str>> {
        let verdict = Arc::new(Verdict::default());
        let mut s = Scanner::new(64 * 1024, MAX_HEADERS, Arc::clone(&verdict));
        for c in chunks {
            s.feed(c);
        }
        let heads = s.heads;
        (0..heads).map(|_| verdict.next_request()).collect()
    }

    #[test]
    fn a_head_with_more_fields_than_hypers_default_is_still_checked() {
        // `max_headers = 300`: hyper accepts 150 fields, so the scanner must read them all.
        let mut head = b"POST /a HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..150 {
            head.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        let verdict = Arc::new(Verdict::default());
        let mut s = Scanner::new(64 * 1024, 300, Arc::clone(&verdict));
        s.feed(&head);
        assert_eq!(s.heads, 1, "the head was parsed");
        assert!(
            verdict.next_request().is_some(),
            "smuggling framing passed unflagged"
        );
    }

    #[test]
    fn clean_keep_alive_requests_pass_byte_by_byte_too() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(scan(&[stream]), vec![None, None, None]);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&bytes), vec![None, None, None]);
    }

    #[test]
    fn chunked_twice_is_refused() {
        for te in [
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: chunked, gzip, chunked",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n0\r\n\r\n");
            assert_eq!(
                scan(&[head.as_bytes()]),
                vec![Some("chunked applied more than once")],
                "{te}"
            );
        }
    }

    #[test]
    fn an_upgrade_request_does_not_stop_the_scan() {
        let v = scan(&[
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(
            v,
            vec![None, Some("both Content-Length and Transfer-Encoding")]
        );
    }

    #[test]
    fn a_tunnel_is_not_scanned() {
        let verdict = Arc::new(Verdict::default());
        let mut s = Scanner::new(64 * 1024, MAX_HEADERS, Arc::clone(&verdict));
        s.feed(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        Upgrading(Arc::clone(&verdict)).tunnel();
        s.feed(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(s.heads, 1);
        assert_eq!(
            (verdict.next_request(), verdict.next_request()),
            (None, None)
        );
    }

    #[test]
    fn ambiguous_framing_is_flagged_on_the_right_request() {
        let v = scan(&[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(
            v,
            vec![None, Some("both Content-Length and Transfer-Encoding")]
        );
        let v = scan(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx"]);
        assert_eq!(v, vec![Some("several Content-Length headers")]);
        let v = scan(&[b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx"]);
        assert_eq!(v, vec![Some("invalid or repeated Content-Length")]);
    }

    proptest::proptest! {
        /// Where reads split the stream never changes the verdicts.
        #[test]
        fn read_boundaries_do_not_matter(mut cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let stream: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
                POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET /c HTTP/1.1\r\n\r\n\
                POST /d HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            cuts.push(0);
            cuts.push(stream.len());
            cuts.iter_mut().for_each(|c| *c = (*c).min(stream.len()));
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            proptest::prop_assert_eq!(
                scan(&pieces),
                vec![None, None, None, Some("both Content-Length and Transfer-Encoding")]
            );
        }
    }

    #[test]
    fn bad_chunks_are_flagged() {
        for body in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"-1\r\n",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
        ] {
            let mut req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            req.extend_from_slice(body);
            assert!(
                scan(&[&req])[0].is_some(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(chunk_size(b"00000000000000001a"), Some(26));
        assert_eq!(chunk_size(b"a ; x=y"), Some(10));
    }
}
