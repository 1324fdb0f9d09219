//! `/v1/locks/{name}` (acquire, renew, release) and `/v1/ratelimit/{key}` (one shared GCRA
//! step; the verdict is the answer, so a refusal is 200 with `"allowed": false` and a
//! `Retry-After` header).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;

use super::Path;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;

use super::{json_body, opt_time, wait_duration, ApiResult, AppState, Table};
use crate::queue::spec::DelaySpec;
use crate::ratelimit::Rate;

pub(super) fn routes(t: Table) -> Table {
    t.add(
        "/v1/locks/{name}",
        &["post", "delete"],
        post(acquire).delete(release),
    )
    .add("/v1/locks/{name}/renew", &["post"], post(renew))
    .add("/v1/ratelimit/{key}", &["post"], post(check))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    ttl: Option<DelaySpec>,
    wait: Option<DelaySpec>,
}

/// TTL when the caller names none.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

async fn acquire(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: AcquireBody = json_body(body)?;
    let ttl = opt_time("ttl", body.ttl.as_ref())?.unwrap_or(DEFAULT_TTL);
    let wait = wait_duration(body.wait.as_ref())?;
    let lease = s.services.locks.acquire(&name, ttl, wait).await?;
    Ok(Json(lease).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    token: String,
    ttl: Option<DelaySpec>,
}

async fn renew(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: RenewBody = json_body(body)?;
    let ttl = opt_time("ttl", body.ttl.as_ref())?.unwrap_or(DEFAULT_TTL);
    s.services.locks.renew(&name, &body.token, ttl).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    token: String,
}

async fn release(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: ReleaseBody = json_body(body)?;
    s.services.locks.release(&name, &body.token).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    rate: String,
    #[serde(default)]
    burst: u32,
}

async fn check(
    State(s): State<AppState>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: CheckBody = json_body(body)?;
    let rate = Rate::parse(&body.rate)?;
    let verdict = s.services.rate_limits.check(&key, rate, body.burst).await?;
    if verdict.allowed {
        Ok(Json(verdict).into_response())
    } else {
        let secs = verdict.retry_after_ms.div_ceil(1000).max(1);
        Ok(([(header::RETRY_AFTER, secs.to_string())], Json(verdict)).into_response())
    }
}
