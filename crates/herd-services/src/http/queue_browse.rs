//! `/v1/queues/{q}`: listing a state's jobs, removing one job, draining, reading schedules.
//! The routes are registered with the rest of the queue's in `queues`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};

use super::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_body, ApiError, ApiResult, AppState};
use crate::queue::JobRecord;

/// A job as the API shows it: its record without the lease token (only the reserve hands
/// that out, as the proof of the lease), with its state as a caller reads it (`delayed`).
pub(super) fn shown(mut rec: JobRecord, now_ms: i64) -> Result<Value, ApiError> {
    rec.lease_token = None;
    let status = rec.status(now_ms);
    let mut out = serde_json::to_value(&rec).map_err(|e| ApiError::internal(e.to_string()))?;
    out["state"] = Value::from(status);
    Ok(out)
}

/// `{"jobs": [...]}`, each as [`shown`].
pub(super) fn jobs(recs: Vec<JobRecord>, now_ms: i64) -> ApiResult {
    let jobs = recs
        .into_iter()
        .map(|r| shown(r, now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>, usage: &str) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text()), usage))
}

/// `GET /v1/queues/{q}/jobs?state=waiting&offset=0&limit=100`.
pub(super) async fn list(
    State(s): State<AppState>,
    Path(q): Path<String>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let params = query(
        params,
        "use ?state=waiting|delayed|active|completed|failed&offset=N&limit=N (limit 100 by default, 1000 at most)",
    )?;
    let Some(state) = params.state else {
        return Err(ApiError::bad(
            "missing query parameter `state`",
            "name the state to list: ?state=waiting (or delayed, active, completed, failed)",
        ));
    };
    let limit = params.limit.unwrap_or(100).min(1000);
    let queues = &s.services.queues;
    let recs = queues
        .list(&q, &state, params.offset.unwrap_or(0), limit)
        .await?;
    jobs(recs, queues.now_ms())
}

/// `DELETE /v1/queues/{q}/jobs/{id}`.
pub(super) async fn remove(
    State(s): State<AppState>,
    Path((q, id)): Path<(String, String)>,
) -> ApiResult {
    s.services.queues.remove(&q, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default)]
    delayed: bool,
}

/// `POST /v1/queues/{q}/drain` `{"delayed": false}`.
pub(super) async fn drain(
    State(s): State<AppState>,
    Path(q): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: DrainBody = json_body(body)?;
    let drained = s.services.queues.drain(&q, body.delayed).await?;
    Ok(Json(drained).into_response())
}

/// `GET /v1/queues/{q}/schedules`.
pub(super) async fn schedules(State(s): State<AppState>, Path(q): Path<String>) -> ApiResult {
    let list = s.services.queues.schedules(&q).await?;
    Ok(Json(json!({ "schedules": list })).into_response())
}

/// `GET /v1/queues/{q}/schedules/{name}`.
pub(super) async fn schedule(
    State(s): State<AppState>,
    Path((q, name)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(s.services.queues.schedule(&q, &name).await?).into_response())
}
