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

use super::conditional::{create_only, if_match, not_modified, refuse_if_none_match};
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

fn written(status: StatusCode, r: &SessionRef) -> axum::response::Response {
    (status, [(header::ETAG, etag(r.version))], Json(r)).into_response()
}

async fn create(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body: CreateBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    let r = s.services.sessions.create(body.data, ttl).await?;
    Ok(written(StatusCode::CREATED, &r))
}

async fn read(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let session = s.services.sessions.get(&id).await?;
    let tag = [(header::ETAG, etag(session.version))];
    if not_modified(&headers, session.version) {
        return Ok((StatusCode::NOT_MODIFIED, tag).into_response());
    }
    Ok((tag, Json(session)).into_response())
}

async fn replace(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let cond = if_match(&headers)?;
    let create = create_only(&headers)?;
    let body: DataBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    let sessions = &s.services.sessions;
    if create {
        // express-session makes the id, then saves: create it under that id, never over one.
        let r = sessions.create_with_id(&id, body.data, ttl).await?;
        return Ok(written(StatusCode::CREATED, &r));
    }
    let r = cond.missing_fails(sessions.put(&id, body.data, cond.version(), ttl).await)?;
    Ok(written(StatusCode::OK, &r))
}

async fn merge(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let cond = if_match(&headers)?;
    refuse_if_none_match(&headers, "PATCH")?;
    let body: PatchBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    let patched = s
        .services
        .sessions
        .patch(&id, body.data, cond.version(), ttl)
        .await;
    Ok(written(StatusCode::OK, &cond.missing_fails(patched)?))
}

async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let cond = if_match(&headers)?;
    refuse_if_none_match(&headers, "DELETE")?;
    cond.missing_fails(s.services.sessions.delete(&id, cond.version()).await)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn regenerate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let cond = if_match(&headers)?;
    refuse_if_none_match(&headers, "regenerate")?;
    let r = s.services.sessions.regenerate_at(&id, cond.version()).await;
    Ok(written(StatusCode::OK, &cond.missing_fails(r)?))
}

async fn touch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    refuse_if_none_match(&headers, "touch")?;
    if headers.contains_key(header::IF_MATCH) {
        return Err(ApiError::bad(
            "touch takes no If-Match: it renews the TTL whatever the version",
            "leave If-Match out, or PATCH {\"data\": {}, \"ttl\": ...} with If-Match to renew at a version",
        ));
    }
    let body: TouchBody = json_body(body)?;
    let ttl = opt_duration("ttl", body.ttl.as_deref())?;
    s.services.sessions.touch(&id, ttl).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
