//! What herd does as the edge, around every request: `X-Request-Id`, the request body limit
//! (`[gateway] max_body_size`) and optional security headers on responses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id that is passed on; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` if it is sane (1 to 128 visible ASCII characters, one value),
/// otherwise a new random 128-bit id in hex.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(v), None) = (sent.next(), sent.next()) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    hex_id(rand::random::<u128>())
}

/// `n` as 32 lower-case hex digits, written in place: one allocation (the value's), no
/// formatting machinery.
fn hex_id(n: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, d) in id.iter_mut().enumerate() {
        *d = HEX[usize::try_from((n >> (124 - 4 * i)) & 0xf).unwrap_or(0)];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `[gateway] max_body_size` for one request, carried to the upstream body in the request's
/// extensions. `exceeded` tells the handler to answer 413 rather than 502.
#[derive(Debug, Clone)]
pub(crate) struct BodyLimit {
    pub(crate) max: u64,
    pub(crate) seen: u64,
    pub(crate) exceeded: Arc<AtomicBool>,
}

impl BodyLimit {
    pub(crate) fn new(max: u64) -> Self {
        BodyLimit {
            max,
            seen: 0,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts `n` more body bytes; false (and marked exceeded) once past the limit.
    pub(crate) fn admit(&mut self, n: usize) -> bool {
        self.seen = self.seen.saturating_add(n as u64);
        let ok = self.seen <= self.max;
        if !ok {
            self.exceeded.store(true, Ordering::Release);
        }
        ok
    }

    pub(crate) fn was_exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }
}

/// A `Content-Length` already over the limit: refused before anything is forwarded.
pub(crate) fn check_length(headers: &HeaderMap, max: Option<u64>) -> Result<(), ProxyError> {
    // More than one `Content-Length` field, even equal ones: refused in every protocol. An
    // HTTP/1 head never gets here with two (the framing guard refuses it first); an HTTP/2
    // request would otherwise reach the backend with both.
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ProxyError::BadRequest {
            reason: "more than one Content-Length field",
        });
    }
    // A transfer coding other than `chunked` (`gzip, chunked`) would reach the app neither
    // decoded nor labelled: refused, as nginx does (501).
    let codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    for coding in codings {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::TransferCoding);
        }
    }
    let Some(max) = max else { return Ok(()) };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(ProxyError::BodyTooLarge { limit: max }),
        _ => Ok(()),
    }
}

/// The error streamed to the backend when a body grows past the limit (hyper then aborts the
/// upstream request).
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_size ({0} bytes)")]
pub(crate) struct BodyTooLarge(pub(crate) u64);

const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

/// Sets the request id on the response and, with `security`, the security headers the
/// response lacks (a backend's own choice wins).
pub(crate) fn finish(resp: &mut Response<ProxyBody>, id: HeaderValue, security: bool) {
    let headers = resp.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), id);
    if security {
        for (name, value) in SECURITY_HEADERS {
            if !headers.contains_key(name) {
                headers.insert(name, HeaderValue::from_static(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_the_number_in_hex() {
        for n in [0, 1, 0xdead_beef, u128::MAX, u128::MAX / 3 * 2] {
            assert_eq!(hex_id(n), format!("{n:032x}").as_str());
        }
    }

    #[test]
    fn sane_request_ids_pass_and_others_are_replaced() {
        let mut h = HeaderMap::new();
        let fresh = request_id(&h);
        assert_eq!(fresh.len(), 32);
        assert!(fresh.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(fresh, request_id(&h), "random");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_eq!(request_id(&h).len(), 32, "{bad:?}");
        }
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(request_id(&h).len(), 32);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(&X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(request_id(&h).len(), 32, "two ids: neither is trusted");
    }

    #[test]
    fn body_limit_counts_and_declared_lengths_are_checked() {
        let mut l = BodyLimit::new(10);
        assert!(l.admit(6) && l.admit(4) && !l.was_exceeded());
        assert!(!l.admit(1) && l.was_exceeded());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(check_length(&h, Some(10)).is_err());
        assert!(check_length(&h, Some(11)).is_ok());
        assert!(check_length(&h, None).is_ok());
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(matches!(
            check_length(&h, None),
            Err(ProxyError::BadRequest { .. })
        ));
    }
}
