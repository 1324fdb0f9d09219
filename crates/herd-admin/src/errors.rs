//! Every error answer of the admin API is JSON `{"error", "hint"}`, the form `openapi.json`
//! promises: axum's own rejections (a bad query string, a body over the limit, a wrong method)
//! are plain text, so they are rewritten here.

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

/// The largest request body the admin API reads (its bodies are a few fields).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// The longest `reason` an operator may give (it is logged and kept in the events).
pub(crate) const MAX_REASON: usize = 500;

/// Rewrites a plain-text 4xx answer as JSON; anything else passes unchanged.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() || is_json || status == StatusCode::UNAUTHORIZED {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (error, hint) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method not allowed on this path".to_owned(),
            "the Allow header lists the methods; GET /openapi.json documents every path",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            format!("request body over {MAX_BODY} bytes"),
            "admin API bodies are a few fields; see GET /openapi.json",
        ),
        _ if text.is_empty() => (
            status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_owned(),
            "see GET /openapi.json",
        ),
        _ => (text, "see GET /openapi.json for this path's parameters"),
    };
    let body = serde_json::to_vec(&json!({"error": error, "hint": hint})).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// `reason` as given (or `"manual"`), or why it is refused.
pub(crate) fn reason(given: Option<String>) -> Result<String, String> {
    match given {
        None => Ok("manual".to_owned()),
        Some(r) if r.chars().count() > MAX_REASON => Err(format!(
            "\"reason\" is {} characters; the most is {MAX_REASON}",
            r.chars().count()
        )),
        Some(r) if r.chars().any(char::is_control) => {
            Err("\"reason\" holds control characters (line breaks, escapes)".to_owned())
        }
        Some(r) => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    async fn rewrite(status: StatusCode, text: &'static str) -> (StatusCode, serde_json::Value) {
        let r = json_errors((status, text).into_response()).await;
        let status = r.status();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = to_bytes(r.into_body(), 4096).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn plain_text_rejections_become_json() {
        let (status, v) = rewrite(
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: limit: invalid digit found in string",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("limit: invalid digit"));
        let (_, v) = rewrite(StatusCode::METHOD_NOT_ALLOWED, "").await;
        assert_eq!(v["error"], "method not allowed on this path");
        let (_, v) = rewrite(StatusCode::PAYLOAD_TOO_LARGE, "Failed to buffer").await;
        assert!(v["error"].as_str().unwrap().contains("65536"));
    }

    #[tokio::test]
    async fn json_and_successful_answers_pass_unchanged() {
        let ok = json_errors("fine".into_response()).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(to_bytes(ok.into_body(), 100).await.unwrap(), "fine");
    }

    #[test]
    fn a_reason_is_bounded_and_printable() {
        assert_eq!(reason(None).unwrap(), "manual");
        assert_eq!(reason(Some("deploy".into())).unwrap(), "deploy");
        assert!(reason(Some("x".repeat(MAX_REASON + 1))).is_err());
        assert!(reason(Some("a\nb".into())).is_err());
    }
}
