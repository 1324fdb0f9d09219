//! `/v1/sessions`: create, read, replace (If-Match), merge, delete, regenerate, touch. The
//! session's version is its ETag (`"3"`); `If-Match` takes it back.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;

use super::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{json_body, opt_duration, ApiError, ApiResult, AppState, Table};
use crate::sessions::SessionRef;

pub(super) fn routes(t: Table) -> Table {
    t.add("/v1/sessions", &["post"], post(create))
        .add(
            "/v1/sessions/{id}",
            &["get", "put", "patch", "delete"],
            get(read).put(replace).patch(merge).delete(remove),
        )
        .add("/v1/sessions/{id}/regenerate", &["post"], post(regenerate))
        .add("/v1/sessions/{id}/touch", &["post"], post(touch))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    data: Map<String, Value>,
    ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataBody {
    data: Map<String, Value>,
    /// A new TTL for the session, kept from now on (absent: the one it has).
    ttl: Option<String>,
}

/// A merge may change only the TTL (`{"ttl": "2h"}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    data: Map<String, Value>,
    ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TouchBody {
    ttl: Option<String>,
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// `If-Match: "3"` (also `3`); `*` or absent means any version; a weak `W/"3"` never matches (412).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    if text.starts_with("W/") {
        // If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never matches, which is
        // a failed precondition (412), not a malformed request.
        return Err(ApiError::Plain {
            status: StatusCode::PRECONDITION_FAILED,
            error: format!(
                "If-Match {text:?} is a weak ETag, which never matches (RFC 9110 §13.1.1)"
            ),
            hint: "send the ETag header of your last read as it came, without W/".into(),
        });
    }
    let bare = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    bare.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad(
            format!("invalid If-Match header {text:?}: expected one version"),
            "send the ETag from the last read, e.g. If-Match: \"3\" (one version, not a list)",
        )
    })
}

fn written(status: StatusCode, r: &SessionRef) -> axum::response::Response {
    (status, [(header::ETAG, etag(r.version))], Json(r)).into_response()
}

async fn create(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body: CreateBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    let r = s.services.sessions.create(body.data, ttl).await?;
    Ok(written(StatusCode::CREATED, &r))
}

async fn read(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let session = s.services.sessions.get(&id).await?;
    Ok(([(header::ETAG, etag(session.version))], Json(session)).into_response())
}

async fn replace(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let expected = if_match(&headers)?;
    let body: DataBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    let r = s
        .services
        .sessions
        .put(&id, body.data, expected, ttl)
        .await?;
    Ok(written(StatusCode::OK, &r))
}

async fn merge(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let expected = if_match(&headers)?;
    let body: PatchBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    let r = s
        .services
        .sessions
        .patch(&id, body.data, expected, ttl)
        .await?;
    Ok(written(StatusCode::OK, &r))
}

async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let expected = if_match(&headers)?;
    s.services.sessions.delete(&id, expected).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn regenerate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let r = s
        .services
        .sessions
        .regenerate_at(&id, if_match(&headers)?)
        .await?;
    Ok(written(StatusCode::OK, &r))
}

async fn touch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: TouchBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    s.services.sessions.touch(&id, ttl).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).ok().flatten(), None);
        for (v, want) in [("\"3\"", Some(3)), ("5", Some(5)), ("*", None)] {
            h.insert(header::IF_MATCH, v.parse().unwrap());
            assert_eq!(if_match(&h).ok().flatten(), want, "{v}");
        }
        for bad in ["\"x\"", "W/\"4\"", "\"1\", \"2\""] {
            h.insert(header::IF_MATCH, bad.parse().unwrap());
            assert!(if_match(&h).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn if_match_never_panics(s in "[ -~]{0,24}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = s.parse() {
                h.insert(header::IF_MATCH, v);
                let _ = if_match(&h);
            }
        }
    }
}
