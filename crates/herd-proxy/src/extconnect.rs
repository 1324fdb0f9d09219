//! WebSocket (and any other `:protocol`) over HTTP/2: extended CONNECT (RFC 8441).
//!
//! The gateway's HTTP/2 listeners advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so a browser
//! on an h2 connection opens its WebSockets as streams of that connection. Before routing, the
//! stream's request becomes the HTTP/1.1 upgrade it stands for (`GET`, `Connection: upgrade`,
//! `Upgrade: <protocol>`, and for `websocket` a fresh `Sec-WebSocket-Key`), so routes, rate
//! limits and backends see what they already understand; it goes to the backend on a
//! connection of its own, as HAProxy does. The backend's `101` becomes
//! the stream's `200` once its `Sec-WebSocket-Accept` matches the key herd sent, and the stream
//! and the backend connection are spliced like any tunnel.
//!
//! A CONNECT without `:protocol` (a forward proxy's tunnel to any host) is refused with 501:
//! herd is a reverse proxy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Version};
use sha1::{Digest, Sha1};

use crate::error::ProxyError;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// RFC 6455 §1.3.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// An HTTP/2 stream that asked for a protocol: what its answer needs.
#[derive(Debug, Clone)]
pub(crate) struct ExtConnect {
    /// The `:protocol`, sent to the backend as `Upgrade`.
    pub(crate) protocol: HeaderValue,
    /// For `websocket`: the `Sec-WebSocket-Accept` the backend must answer.
    accept: Option<String>,
}

/// Turns an extended CONNECT into the HTTP/1.1 upgrade request a backend expects; `Ok(None)`
/// for every other request (left as it is).
pub(crate) fn normalize<B>(req: &mut Request<B>) -> Result<Option<ExtConnect>, ProxyError> {
    if req.method() != Method::CONNECT {
        return Ok(None);
    }
    let protocol = match req.extensions_mut().remove::<hyper::ext::Protocol>() {
        Some(p) if req.version() == Version::HTTP_2 => p,
        _ => return Err(ProxyError::ConnectRefused),
    };
    if crate::forward::is_http_protocol(protocol.as_str()) {
        // A tunnel speaking HTTP would carry requests past routing and rate limits.
        return Err(ProxyError::BadRequest {
            reason: "an HTTP protocol (h2c) is not tunnelled",
        });
    }
    let protocol =
        HeaderValue::from_str(protocol.as_str()).map_err(|_| ProxyError::BadRequest {
            reason: "the :protocol pseudo-header is not a valid token",
        })?;
    *req.method_mut() = Method::GET;
    let headers = req.headers_mut();
    // As an HTTP/1.1 client would send it: routes with `websocket = true` match it too.
    headers.insert(header::UPGRADE, protocol.clone());
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let accept = protocol
        .as_bytes()
        .eq_ignore_ascii_case(b"websocket")
        .then(|| {
            let key = STANDARD.encode(rand::random::<[u8; 16]>());
            let accept = accept_for(&key);
            headers.insert(
                SEC_WEBSOCKET_KEY.clone(),
                HeaderValue::from_str(&key).expect("base64 is a valid header value"),
            );
            accept
        });
    Ok(Some(ExtConnect { protocol, accept }))
}

impl ExtConnect {
    /// Checks the backend's `101`: `Err` when its `Sec-WebSocket-Accept` does not answer the
    /// key herd sent (not a WebSocket server, or a confused one: the tunnel is not opened).
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if let Some(want) = &self.accept {
            let got = headers.get(&SEC_WEBSOCKET_ACCEPT);
            if got.is_none_or(|g| g.as_bytes() != want.as_bytes()) {
                return Err("the instance's Sec-WebSocket-Accept does not match the key sent");
            }
        }
        Ok(())
    }
}

/// Turns a checked `101`'s headers into the stream's `200` headers.
pub(crate) fn strip(headers: &mut HeaderMap) {
    headers.remove(&SEC_WEBSOCKET_ACCEPT);
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2_connect(protocol: Option<&'static str>) -> Request<()> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("https://example.com/chat")
            .body(())
            .unwrap();
        if let Some(p) = protocol {
            req.extensions_mut()
                .insert(hyper::ext::Protocol::from_static(p));
        }
        req
    }

    #[test]
    fn accept_matches_rfc_6455_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn websocket_stream_becomes_an_http1_upgrade_with_a_fresh_key() {
        let mut req = h2_connect(Some("websocket"));
        let ext = normalize(&mut req).unwrap().unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(ext.protocol, "websocket");
        assert_eq!(req.headers()[header::UPGRADE], "websocket");
        assert_eq!(
            crate::forward::upgrade_request(req.headers()).unwrap(),
            "websocket"
        );
        let key = req.headers()[&SEC_WEBSOCKET_KEY]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);

        let mut ok = HeaderMap::new();
        ok.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        ok.insert(
            SEC_WEBSOCKET_ACCEPT.clone(),
            HeaderValue::from_str(&accept_for(&key)).unwrap(),
        );
        ok.insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
        ext.check(&ok).unwrap();
        strip(&mut ok);
        assert!(!ok.contains_key(header::UPGRADE));
        assert!(!ok.contains_key(&SEC_WEBSOCKET_ACCEPT));
        assert_eq!(ok["sec-websocket-protocol"], "chat", "negotiation passes");

        let mut wrong = HeaderMap::new();
        wrong.insert(
            SEC_WEBSOCKET_ACCEPT.clone(),
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert!(ext.check(&wrong).is_err());
        assert!(ext.check(&HeaderMap::new()).is_err(), "missing accept");
    }

    #[test]
    fn other_protocols_need_no_key_and_plain_connect_is_refused() {
        let mut req = h2_connect(Some("echo"));
        let ext = normalize(&mut req).unwrap().unwrap();
        assert!(!req.headers().contains_key(&SEC_WEBSOCKET_KEY));
        ext.check(&HeaderMap::new()).unwrap();

        let mut plain = h2_connect(None);
        assert!(matches!(
            normalize(&mut plain),
            Err(ProxyError::ConnectRefused)
        ));
        let mut get = Request::new(());
        assert!(normalize(&mut get).unwrap().is_none());
    }
}
