//! Header rewriting between client and backend.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// What a client sends to pose as a proxy in front of herd, which frameworks behind a trusted
/// proxy believe (Spring's `ForwardedHeaderFilter`, Rack, Symfony's `X-Original-URL`): herd is
/// that proxy, so a client's values are removed (`Forwarded` is then written by herd).
/// `X-Forwarded-Ssl` and `X-Forwarded-Scheme` are Rack's other ways to say https; `Proxy` is
/// "httpoxy" (CGI and WSGI turn it into `HTTP_PROXY`, which HTTP libraries take as their proxy).
static SPOOFABLE: [HeaderName; 9] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("proxy"),
];
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed list plus any named in `Connection`,
/// except `Host` (every HTTP/1.1 request carries one, RFC 9112 §3.2) and `X-Request-Id` (herd's
/// own): a client listing them in `Connection` must not strip them from what the app receives.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| *n != header::HOST && *n != crate::edge::X_REQUEST_ID)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// [`remove_hop_by_hop`] for a backend's response. A response framed by `Transfer-Encoding`
/// also loses any `Content-Length`: the coding wins (RFC 9112 §6.3, which requires a proxy
/// to drop the length), and hyper re-frames the decoded body for the client.
///
/// `Trailer` stays (RFC 9110 §6.6.2: an end-to-end field): it announces the trailer fields,
/// and hyper sends an HTTP/1.1 client the announced trailers when it asked for them with
/// `TE: trailers` (HTTP/2 clients always get them).
pub(crate) fn remove_hop_by_hop_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let trailer: Vec<HeaderValue> = headers.get_all(header::TRAILER).iter().cloned().collect();
    remove_hop_by_hop(headers);
    for t in trailer {
        headers.append(header::TRAILER, t);
    }
}

/// Whether a request's `TE` accepts trailer fields (`TE: trailers`).
pub(crate) fn takes_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|t| {
            t.split(';')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

/// The protocol an HTTP/1.1 request asks to switch to: `Upgrade` present and `upgrade` among
/// the `Connection` options (RFC 9110 §7.8). Read before the hop-by-hop headers go.
///
/// An upgrade to HTTP itself (`h2c`, `HTTP/2.0`) is not one: tunnelled, it would carry requests
/// past routing, rate limits, the forwarding headers and the access log (h2c smuggling). It
/// goes on as an ordinary request without its `Upgrade`, as nginx and HAProxy send it.
pub(crate) fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    if upgrade
        .to_str()
        .unwrap_or("")
        .split(',')
        .any(|p| is_http_protocol(p.trim()))
    {
        return None;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        .then(|| upgrade.clone())
}

/// Whether an `Upgrade` protocol (or an extended CONNECT `:protocol`) is HTTP itself.
pub(crate) fn is_http_protocol(p: &str) -> bool {
    p.eq_ignore_ascii_case("h2c")
        || p.eq_ignore_ascii_case("h2")
        || p.get(..5).is_some_and(|h| h.eq_ignore_ascii_case("http/"))
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub(crate) fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Sets `X-Forwarded-For` (appending the client to any existing chain), `X-Real-IP`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` (RFC 7239), and removes a client's
/// `X-Forwarded-Port`, `-Prefix`, `-Server`, `-Ssl`, `-Scheme`, `X-Original-URL`, `X-Rewrite-URL`,
/// `Proxy` and every header named with `_` (herd is the
/// edge, so client-sent values are replaced: an app that trusts `X-Real-IP` or builds links from `X-Forwarded-Host` cannot be
/// handed a forged one; without a `Host`, an HTTP/1.0 request, it gets none).
pub(crate) fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str) {
    let ip = client.to_string();
    // The address's value is shared by `X-Real-IP` and a chain that starts here (no copy).
    let ip_value = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.clone())).ok();
    let mut xff = String::new();
    for prev in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(prev) = prev.to_str() {
            if !prev.trim().is_empty() {
                xff.push_str(prev.trim());
                xff.push_str(", ");
            }
        }
    }
    let chain = if xff.is_empty() {
        ip_value.clone()
    } else {
        xff.push_str(&ip);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)).ok()
    };
    if let Some(v) = chain {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Some(v) = ip_value {
        headers.insert(X_REAL_IP.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    for name in &SPOOFABLE {
        headers.remove(name);
    }
    // Headers with `_` in their name are dropped, as nginx does (`underscores_in_headers
    // off`): CGI, WSGI, Rack and PHP turn `-` and `_` into the same `HTTP_X_REAL_IP`, so
    // `X_Real_IP: 6.6.6.6` would reach the app beside herd's own `X-Real-IP`.
    if headers.keys().any(|k| k.as_str().contains('_')) {
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // RFC 7239, as herd sees the request: `for` (IPv6 quoted and bracketed), `proto`, `host`.
    let host = headers.get(header::HOST).cloned();
    // One buffer, handed to the header without a copy.
    let mut forwarded = String::with_capacity(48 + host.as_ref().map_or(0, HeaderValue::len));
    forwarded.push_str("for=");
    if client.is_ipv6() {
        forwarded.push_str("\"[");
        forwarded.push_str(&ip);
        forwarded.push_str("]\"");
    } else {
        forwarded.push_str(&ip);
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
        forwarded.push_str(";host=\"");
        forwarded.push_str(h);
        forwarded.push('"');
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        headers.insert(SPOOFABLE[0].clone(), v);
    }
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// HTTP/2 clients may split `Cookie` into several fields; an HTTP/1.1 backend expects one,
/// joined with "; " (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_response_loses_its_content_length() {
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        remove_hop_by_hop_response(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        remove_hop_by_hop_response(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_forged_forwarded_host_never_reaches_the_app() {
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("good.example"));
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("host, x-request-id"),
        );
        h.insert(&crate::edge::X_REQUEST_ID, HeaderValue::from_static("id-1"));
        remove_hop_by_hop(&mut h);
        add_forwarded(&mut h, client, "http");
        assert_eq!(h[header::HOST], "good.example", "Host stays though listed");
        assert_eq!(h[&X_FORWARDED_HOST], "good.example");
        assert_eq!(h[&crate::edge::X_REQUEST_ID], "id-1");
        // No Host (HTTP/1.0): the client's value is dropped, not passed on.
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        add_forwarded(&mut h, client, "http");
        assert!(h.get(&X_FORWARDED_HOST).is_none());
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn cookies_are_joined_and_multi_line_headers_read_whole() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-two"));
        h.insert("x-two", HeaderValue::from_static("1"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        remove_hop_by_hop(&mut h);
        assert!(!h.contains_key("x-two"));
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 127.0.0.1");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            upgrade_request(&h),
            None,
            "Upgrade alone is not a request to switch"
        );
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x, Upgrade"));
        assert_eq!(upgrade_request(&h).unwrap(), "websocket");
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty());
        keep_upgrade(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(
            (&h[header::CONNECTION], &h[header::UPGRADE]),
            (
                &HeaderValue::from_static("upgrade"),
                &HeaderValue::from_static("websocket")
            )
        );
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"example.com\""
        );
    }

    #[test]
    fn a_client_cannot_pose_as_a_proxy_in_front_of_herd() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        for (k, v) in [
            ("forwarded", "for=1.2.3.4;proto=https;host=evil"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-server", "evil"),
            ("x-original-url", "/internal/x"),
            ("x-rewrite-url", "/internal/x"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("proxy", "http://evil:1"),
            ("x_real_ip", "6.6.6.6"),
            ("x_forwarded_proto", "https"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        add_forwarded(&mut h, "::1".parse().unwrap(), "https");
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=https;host=\"example.com\""
        );
        for k in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "proxy",
            "x_real_ip",
            "x_forwarded_proto",
        ] {
            assert!(h.get(k).is_none(), "{k}");
        }
        assert_eq!(h["x-real-ip"], "::1");
    }
}
