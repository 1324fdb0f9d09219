//! Response compression (`compress = true`): gzip or brotli, chosen by the client's
//! `Accept-Encoding` q-values (brotli when equal), streamed through `async-compression`.
//!
//! Skipped for HEAD requests, 1xx/204/206/304 responses, anything with `Content-Range` or a
//! `Content-Encoding` already, `Cache-Control: no-transform`, `text/event-stream` (the encoder
//! holds bytes back until its buffer fills, which would stall an event stream), types outside
//! `compress_types`, and bodies whose `Content-Length` is under `compress_min_size`.
//! A compressed response loses `Content-Length`, gains `Vary: Accept-Encoding`, and a strong
//! `ETag` becomes weak (the bytes differ from the uncompressed representation).

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use async_compression::Level;
use futures_util::{StreamExt as _, TryStreamExt as _};
use herd_config::Compress;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyDataStream, StreamBody};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::body::ProxyBody;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The coding to use for a client's `Accept-Encoding` values, if any (RFC 9110 §12.5.3):
/// the highest non-zero q-value among `br` and `gzip` (a `*` covers the ones not named),
/// brotli on a tie.
pub(crate) fn negotiate<'a>(accept: impl Iterator<Item = &'a str>) -> Option<Coding> {
    let (mut br, mut gzip, mut star): (Option<f32>, Option<f32>, Option<f32>) = (None, None, None);
    for item in accept.flat_map(|v| v.split(',')) {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let mut q = 1.0f32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0);
                }
            }
        }
        let is = |name: &str| coding.eq_ignore_ascii_case(name);
        if is("br") {
            br = Some(br.map_or(q, |b| b.max(q)));
        } else if is("gzip") || is("x-gzip") {
            gzip = Some(gzip.map_or(q, |g| g.max(q)));
        } else if coding == "*" {
            star = Some(q);
        }
    }
    let br = br.or(star).unwrap_or(0.0);
    let gzip = gzip.or(star).unwrap_or(0.0);
    if br <= 0.0 && gzip <= 0.0 {
        None
    } else if br >= gzip {
        Some(Coding::Brotli)
    } else {
        Some(Coding::Gzip)
    }
}

/// Whether `content_type` (parameters ignored) is in `types` (`text/*` covers `text/html`).
fn compressible(content_type: &str, types: &[String]) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "text/event-stream" {
        return false;
    }
    let Some((top, sub)) = media.split_once('/') else {
        return false;
    };
    types.iter().any(|t| {
        if *t == media || t == "*" {
            return true;
        }
        let Some((t_top, t_sub)) = t.split_once('/') else {
            return false;
        };
        t_top == top
            && (t_sub == "*"
                // `application/*+json`: every JSON-based type (`ld+json`, `problem+json`).
                || t_sub
                    .strip_prefix('*')
                    .is_some_and(|suffix| suffix.starts_with('+') && sub.ends_with(suffix)))
    })
}

/// What the request said that compression needs, read before the request is forwarded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wants {
    coding: Option<Coding>,
    head: bool,
}

impl Wants {
    /// An HTTP/1.0 client gets nothing compressed (nginx's `gzip_http_version 1.1`): a
    /// compressed body has no length known ahead, and HTTP/1.0 has no chunked coding, so the
    /// response would have to end with the connection whatever the client asked.
    pub(crate) fn of(method: &Method, version: http::Version, headers: &HeaderMap) -> Self {
        Wants {
            coding: (version >= http::Version::HTTP_11)
                .then(|| {
                    negotiate(
                        headers
                            .get_all(header::ACCEPT_ENCODING)
                            .iter()
                            .filter_map(|v| v.to_str().ok()),
                    )
                })
                .flatten(),
            head: method == Method::HEAD,
        }
    }
}

/// Whether this response is compressed for a client that accepts a coding (whether this
/// client does or not).
fn eligible(wants: &Wants, resp: &Response<ProxyBody>, cfg: &Compress) -> bool {
    let h = resp.headers();
    let status = resp.status();
    if wants.head
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
        || h.contains_key(header::CONTENT_ENCODING)
        || h.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let no_transform = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    let typed = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| compressible(t, &cfg.types));
    let small = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n < cfg.min_size);
    !no_transform && typed && !small
}

/// Compresses `resp` when the request and the response allow it.
pub(crate) fn apply(
    wants: &Wants,
    resp: Response<ProxyBody>,
    cfg: &Compress,
) -> Response<ProxyBody> {
    if !eligible(wants, &resp, cfg) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    // Compressed or not, the answer depends on Accept-Encoding (nginx `gzip_vary`), so that a
    // shared cache keeps the two apart.
    let varies = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("accept-encoding") || v.trim() == "*");
    if !varies {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let Some(coding) = wants.coding else {
        return Response::from_parts(parts, body);
    };
    h.remove(header::CONTENT_LENGTH);
    // The encoder passes data only: the backend's trailers do not follow (nginx forwards
    // none at all), so their announcement goes too.
    h.remove(header::TRAILER);
    // Ranges of the backend's bytes are not ranges of these (nginx's gzip filter clears it too):
    // a client resuming a download would splice plain bytes into compressed ones.
    h.remove(header::ACCEPT_RANGES);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    if let Some(etag) = h
        .get(header::ETAG)
        .filter(|e| e.as_bytes().starts_with(b"\""))
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            h.insert(header::ETAG, v);
        }
    }
    let reader = Yielding::new(StreamReader::new(
        BodyDataStream::new(body).map_err(std::io::Error::other),
    ));
    let body = match coding {
        Coding::Brotli => encoded(BrotliEncoder::with_quality(
            reader,
            Level::Precise(BROTLI_QUALITY),
        )),
        Coding::Gzip => encoded(GzipEncoder::with_quality(
            reader,
            Level::Precise(GZIP_LEVEL),
        )),
    };
    Response::from_parts(parts, body)
}

/// Brotli's quality: 4 compresses HTML/JS/JSON within a few percent of gzip -6's size or
/// better at about gzip's speed; the library's default, 11, is for files compressed once (it
/// ran at ~1 MB/s here, so one large response held a gateway thread for many seconds).
const BROTLI_QUALITY: i32 = 4;

/// gzip's level: 6, zlib's default and ngx_http_gzip_static's usual choice.
const GZIP_LEVEL: i32 = 6;

/// Input bytes the encoder may take in one poll: a fast backend always has more ready, and an
/// encoder reads on until it has output to give, so without a bound one large response would
/// be compressed whole in one poll while every other connection of the gateway thread waits.
const INPUT_PER_POLL: usize = 64 * 1024;

/// Gives the task back to the runtime after every [`INPUT_PER_POLL`] bytes read (it asks to be
/// polled again at once), so compression shares its thread with the other connections.
struct Yielding<R> {
    inner: R,
    taken: usize,
}

impl<R> Yielding<R> {
    fn new(inner: R) -> Self {
        Yielding { inner, taken: 0 }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Yielding<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<R: tokio::io::AsyncBufRead + Unpin> tokio::io::AsyncBufRead for Yielding<R> {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.taken >= INPUT_PER_POLL {
            this.taken = 0;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let polled = std::pin::Pin::new(&mut this.inner).poll_fill_buf(cx);
        if polled.is_pending() {
            this.taken = 0;
        }
        polled
    }

    fn consume(self: std::pin::Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.taken += amt;
        std::pin::Pin::new(&mut this.inner).consume(amt);
    }
}

fn encoded<R>(encoder: R) -> ProxyBody
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    let frames = ReaderStream::new(encoder).map(|chunk| chunk.map(Frame::data));
    ProxyBody::wrap(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_input_yields_after_its_share_of_bytes() {
        use std::task::{Context, Poll};
        use tokio::io::AsyncBufRead;
        let data = vec![7u8; 3 * INPUT_PER_POLL];
        let mut r = Yielding::new(&data[..]);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pending = 0;
        let mut read = 0;
        while read < data.len() {
            match std::pin::Pin::new(&mut r).poll_fill_buf(&mut cx) {
                Poll::Pending => pending += 1,
                Poll::Ready(Ok(buf)) => {
                    let n = buf.len().min(INPUT_PER_POLL / 2);
                    std::pin::Pin::new(&mut r).consume(n);
                    read += n;
                }
                Poll::Ready(Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(pending, 2, "a yield after each {INPUT_PER_POLL} bytes");
    }

    fn pick(v: &str) -> Option<Coding> {
        negotiate(std::iter::once(v))
    }

    #[test]
    fn http_1_0_clients_get_nothing_compressed() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        let of = |v| Wants::of(&Method::GET, v, &h).coding;
        assert_eq!(of(http::Version::HTTP_10), None);
        assert_eq!(of(http::Version::HTTP_11), Some(Coding::Gzip));
        assert_eq!(of(http::Version::HTTP_2), Some(Coding::Gzip));
    }

    #[test]
    fn q_values_decide_and_brotli_wins_ties() {
        assert_eq!(pick("gzip, br"), Some(Coding::Brotli));
        assert_eq!(pick("gzip;q=1.0, br;q=0.8"), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0, gzip"), Some(Coding::Gzip));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("*"), Some(Coding::Brotli));
        assert_eq!(pick("*;q=0.5, br;q=0.1"), Some(Coding::Gzip));
        assert_eq!(pick("gzip;q=0, br;q=0"), None);
        assert_eq!(pick("GZIP;Q=0.5"), Some(Coding::Gzip));
        assert_eq!(pick("deflate"), None);
        assert_eq!(pick(""), None);
    }

    #[test]
    fn types_match_exactly_or_by_wildcard() {
        let types: Vec<String> = ["text/*", "application/json"].map(String::from).to_vec();
        assert!(compressible("text/html; charset=utf-8", &types));
        assert!(compressible("Application/JSON", &types));
        assert!(!compressible("application/json-patch", &types));
        assert!(!compressible("image/png", &types));
        assert!(!compressible("text/event-stream", &types));
        assert!(!compressible("garbage", &types));
        let suffix = vec!["application/*+json".to_owned()];
        assert!(compressible("application/ld+json", &suffix));
        assert!(compressible(
            "application/problem+json; charset=utf-8",
            &suffix
        ));
        assert!(!compressible("application/json", &suffix));
        assert!(!compressible("text/x+json", &suffix));
        let all = vec!["*".to_owned()];
        assert!(compressible("image/png", &all));
        assert!(!compressible("text/event-stream", &all), "never a stream");
    }
}
