//! Bearer-token check for the admin API.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AdminState;

use herd_core::token::{bearer, constant_time_eq};

/// The dashboard's page and static assets (`GET /`, `GET /assets/*`) carry no data: the
/// browser must load them before it can ask for a token. Nothing else is public.
fn is_public(method: &Method, path: &str) -> bool {
    method == Method::GET && (path == "/" || path.starts_with("/assets/"))
}

/// `GET /health` (and `HEAD`): answered without the token, as a verdict only (see [`Anonymous`]).
fn is_probe(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && path == "/health"
}

/// Marks a request made without the token that is answered anyway (a health probe): the
/// answer carries no detail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anonymous;

/// Without a token the API is open to whatever runs on this machine; this keeps web pages out.
/// A page on another site may make the browser send requests to 127.0.0.1 (cross-site
/// requests, and DNS rebinding, where the attacker's own name resolves to 127.0.0.1). So in
/// that mode a request must name this machine in `Host` (an IP address or `localhost`), and a
/// request from a page (`Origin`) must come from the same host and port. The herd CLI, curl and
/// the dashboard itself pass. With a token, the token decides (a page cannot attach it).
pub(crate) async fn same_origin(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    if state.token.is_some() {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match refuse(host, origin) {
        None => next.run(req).await,
        Some(why) => (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({
                "error": why,
                "hint": "open the admin API as http://127.0.0.1:<port>/ (or localhost), or set [admin] token"
            })),
        )
            .into_response(),
    }
}

/// `localhost`, an IPv4 address or a bracketed IPv6 address, then an optional `:port` (digits,
/// at most 65535): nothing else (no user info, no second colon, no unclosed bracket).
fn local_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => (None, rest),
            _ => return false,
        },
        None => {
            let (name, rest) = host.find(':').map_or((host, ""), |i| host.split_at(i));
            (Some(name), rest)
        }
    };
    let name_ok = name.is_none_or(|n| {
        n.eq_ignore_ascii_case("localhost") || n.parse::<std::net::Ipv4Addr>().is_ok()
    });
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        });
    name_ok && port_ok
}

/// Why a tokenless request is refused, if it is.
fn refuse(host: Option<&str>, origin: Option<&str>) -> Option<&'static str> {
    if let Some(host) = host {
        if !local_host(host) {
            return Some("Host must be an IP address or localhost (with an optional port) when the admin API has no token");
        }
    }
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let from = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            (from != Some(host)).then_some("cross-origin request refused (Origin is not this API)")
        }
        (Some(_), None) => Some("cross-origin request refused (no Host)"),
        _ => None,
    }
}

pub(crate) async fn require_token(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    if is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let authorized = presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
    // Only a caller that sends no credentials at all: a wrong token still gets 401, so a
    // monitor holding a stale one finds out.
    let anonymous = !req.headers().contains_key(header::AUTHORIZATION);
    if anonymous && is_probe(req.method(), req.uri().path()) {
        // A balancer or Kubernetes probe in front holds no admin token (that token can scale,
        // reload and drain): it gets the verdict, without the apps' detail.
        let mut req = req;
        req.extensions_mut().insert(Anonymous);
        return next.run(req).await;
    }
    match presented {
        Some(_) if authorized => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"herd-admin\"")],
            axum::Json(serde_json::json!({
                "error": "missing or wrong admin token",
                "hint": "send `Authorization: Bearer <token>` (herd CLI: --token or HERD_ADMIN_TOKEN)"
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_probe, is_public, refuse};
    use axum::http::Method;

    #[test]
    fn only_the_dashboard_page_and_assets_are_public() {
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::GET, "/assets/app.js"));
        for (m, p) in [
            (Method::POST, "/"),
            (Method::HEAD, "/"),
            (Method::POST, "/assets/app.js"),
            (Method::GET, "/assets"),
            (Method::GET, "/cluster/status"),
            (Method::GET, "/health"),
            (Method::GET, "/metrics"),
            (Method::GET, "//"),
            (Method::GET, "/index.html"),
            (Method::GET, "/telemetry/stream"),
        ] {
            assert!(!is_public(&m, p), "{m} {p}");
        }
        assert!(is_probe(&Method::GET, "/health"));
        assert!(is_probe(&Method::HEAD, "/health"));
        for (m, p) in [
            (Method::POST, "/health"),
            (Method::GET, "/health/performance"),
            (Method::GET, "/health/"),
        ] {
            assert!(!is_probe(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn tokenless_requests_must_come_from_this_machine() {
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST",
            "[::1]:9090",
            "10.0.0.5",
        ] {
            assert_eq!(refuse(Some(host), None), None, "{host}");
        }
        assert_eq!(refuse(None, None), None, "HTTP/1.0 without Host");
        assert!(
            refuse(Some("evil.example:9090"), None).is_some(),
            "DNS rebinding"
        );
        assert!(refuse(Some("127.0.0.1.evil.example"), None).is_some());
        for bad in [
            "localhost:1@evil.com",
            "[::1",
            "[::1]x",
            "127.0.0.1:90:90",
            "127.0.0.1:99999",
            "127.0.0.1:",
            "::1",
            "[evil.com]:80",
        ] {
            assert!(refuse(Some(bad), None).is_some(), "{bad}");
        }
        let same = Some("http://127.0.0.1:9090");
        assert_eq!(refuse(Some("127.0.0.1:9090"), same), None, "the dashboard");
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9091",
            "null",
            "http://localhost:9090",
        ] {
            assert!(
                refuse(Some("127.0.0.1:9090"), Some(origin)).is_some(),
                "{origin}"
            );
        }
    }
}
