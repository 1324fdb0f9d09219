//! Bearer-token check for the admin API.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AdminState;

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The dashboard's page and static assets (`GET /`, `GET /assets/*`) carry no data: the
/// browser must load them before it can ask for a token. Nothing else is public.
fn is_public(method: &Method, path: &str) -> bool {
    method == Method::GET && (path == "/" || path.starts_with("/assets/"))
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
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
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
    use super::{constant_time_eq, is_public};
    use axum::http::Method;

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

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
    }
}
