//! `/v1/queues/{q}`: add (one or bulk), reserve (long-poll), ack / fail / extend with the lease
//! token, counts, job records, dead letters, pause / resume / clean, repeatable schedules;
//! listing, removing and draining are in `queue_browse`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};

use super::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::queue_browse as browse;
use super::{json_body, opt_time, wait_duration, ApiError, ApiResult, AppState, Table};
use crate::queue::spec::DelaySpec;
use crate::queue::{AckRequest, JobSpec, Queues, State as JobState};

pub(super) fn routes(t: Table) -> Table {
    t.add("/v1/queues/{q}", &["get"], get(counts))
        .add(
            "/v1/queues/{q}/jobs",
            &["get", "post"],
            get(browse::list).post(add),
        )
        .add(
            "/v1/queues/{q}/jobs/{id}",
            &["get", "delete"],
            get(job).delete(browse::remove),
        )
        .add("/v1/queues/{q}/jobs/{id}/ack", &["post"], post(ack))
        .add("/v1/queues/{q}/jobs/{id}/fail", &["post"], post(fail))
        .add("/v1/queues/{q}/jobs/{id}/extend", &["post"], post(extend))
        .add("/v1/queues/{q}/reserve", &["post"], post(reserve))
        .add("/v1/queues/{q}/ack", &["post"], post(ack_many))
        .add("/v1/queues/{q}/dead", &["get"], get(dead))
        .add(
            "/v1/queues/{q}/dead/{id}",
            &["delete"],
            axum::routing::delete(delete_dead),
        )
        .add(
            "/v1/queues/{q}/dead/{id}/retry",
            &["post"],
            post(retry_dead),
        )
        .add("/v1/queues/{q}/pause", &["post"], post(pause))
        .add("/v1/queues/{q}/resume", &["post"], post(resume))
        .add("/v1/queues/{q}/clean", &["post"], post(clean))
        .add("/v1/queues/{q}/drain", &["post"], post(browse::drain))
        .add("/v1/queues/{q}/schedules", &["get"], get(browse::schedules))
        .add(
            "/v1/queues/{q}/schedules/{name}",
            &["get", "put", "delete"],
            get(browse::schedule)
                .put(set_schedule)
                .delete(delete_schedule),
        )
}

async fn add(
    State(s): State<AppState>,
    Path(q): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: Value = json_body(body)?;
    if let Some(jobs) = body.get("jobs") {
        let Some(list) = jobs.as_array() else {
            return Err(ApiError::bad(
                "invalid JSON body: field `jobs` must be an array",
                "send {\"jobs\": [{...}, ...]}",
            ));
        };
        if let Some(other) = body
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "jobs"))
        {
            return Err(ApiError::bad(
                format!("invalid JSON body: unknown field `{other}` beside `jobs`"),
                "a bulk add is {\"jobs\": [...]} alone; each job carries its own options",
            ));
        }
        let mut new = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let job = parse_job(v.clone(), &format!("jobs[{i}]."))?;
            new.push(job.to_new_job().map_err(|e| in_job(e, i))?);
        }
        let added = s.services.queues.add_bulk_new(&q, new).await?;
        let duplicates: Vec<&str> = added
            .iter()
            .filter(|(_, new)| !new)
            .map(|(id, _)| id.as_str())
            .collect();
        let ids: Vec<&str> = added.iter().map(|(id, _)| id.as_str()).collect();
        let body = if duplicates.is_empty() {
            json!({ "ids": ids })
        } else {
            // The ids whose job_id named a job already there (nothing added for them).
            json!({ "ids": ids, "duplicates": duplicates })
        };
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let job = parse_job(body, "")?.to_new_job()?;
    // A `job_id` already there adds nothing: 200 with the id, as BullMQ hands back the job
    // it has, instead of 201.
    let (id, created) = s.services.queues.add_new(&q, job).await?;
    if created {
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
    } else {
        Ok(Json(json!({ "id": id, "duplicate": true })).into_response())
    }
}

const JOB_FIELDS: &str = "a job is {\"name\", \"data\", \"attempts\", \"backoff\", \"delay\", \"priority\", \"job_id\", \"remove_on_complete\", \"remove_on_fail\", \"lifo\"}";

/// One job of an add; `at` prefixes the field an error names (`jobs[3].`).
fn parse_job(v: Value, at: &str) -> Result<JobSpec, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad(
            match at.strip_suffix('.') {
                Some(job) => format!("invalid job: field `{job}`: expected a JSON object"),
                None => "invalid job: expected a JSON object".to_owned(),
            },
            JOB_FIELDS,
        ));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        ApiError::bad(
            format!("invalid job: {}", super::at_field(&e, at)),
            JOB_FIELDS,
        )
    })
}

/// An invalid option of the `i`th job of a bulk add, saying which job.
fn in_job(e: crate::ServiceError, i: usize) -> ApiError {
    match e {
        crate::ServiceError::Invalid { what, reason, hint } => crate::ServiceError::Invalid {
            what: format!("jobs[{i}].{what}"),
            reason,
            hint,
        }
        .into(),
        other => other.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    max: Option<usize>,
    lease: Option<DelaySpec>,
    wait: Option<DelaySpec>,
}

async fn reserve(
    State(s): State<AppState>,
    Path(q): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: ReserveBody = json_body(body)?;
    let lease = opt_time("lease", body.lease.as_ref())?;
    let wait = wait_duration(body.wait.as_ref())?;
    let jobs = s
        .services
        .queues
        .reserve(&q, body.max.unwrap_or(1), lease, wait)
        .await?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    lease_token: String,
    result: Option<Value>,
    /// Lease the next jobs in the same call (a non-waiting reserve after the ack).
    #[serde(default, deserialize_with = "crate::object::opt")]
    next: Option<NextBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextBody {
    max: Option<usize>,
    lease: Option<DelaySpec>,
}

async fn ack(
    State(s): State<AppState>,
    Path((q, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: AckBody = json_body(body)?;
    let queues = &s.services.queues;
    let Some(next) = body.next else {
        queues.ack(&q, &id, &body.lease_token, body.result).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let lease = opt_time("next.lease", next.lease.as_ref())?;
    let jobs = queues
        .ack_and_reserve(
            &q,
            &id,
            &body.lease_token,
            body.result,
            next.max.unwrap_or(1),
            lease,
        )
        .await
        .map_err(in_next)?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

/// An ack's `next` reserve names its own fields (`next.max`, not `max`) in errors.
fn in_next(e: crate::ServiceError) -> crate::ServiceError {
    match e {
        crate::ServiceError::Invalid { what, reason, hint } if what == "max" || what == "lease" => {
            crate::ServiceError::Invalid {
                what: format!("next.{what}"),
                reason,
                hint,
            }
        }
        e => e,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckManyBody {
    #[serde(deserialize_with = "crate::object::list")]
    acks: Vec<AckItem>,
    #[serde(default, deserialize_with = "crate::object::opt")]
    next: Option<NextBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckItem {
    id: String,
    lease_token: String,
    result: Option<Value>,
}

/// Several acks in one call, each with its own outcome; with `next`, a non-waiting reserve
/// after them.
async fn ack_many(
    State(s): State<AppState>,
    Path(q): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: AckManyBody = json_body(body)?;
    let ids: Vec<String> = body.acks.iter().map(|a| a.id.clone()).collect();
    let acks = body
        .acks
        .into_iter()
        .map(|a| AckRequest {
            id: a.id,
            lease_token: a.lease_token,
            result: a.result,
        })
        .collect();
    let queues = &s.services.queues;
    let (outcomes, jobs) = match body.next {
        None => (queues.ack_many(&q, acks).await?, Vec::new()),
        Some(next) => {
            let lease = opt_time("next.lease", next.lease.as_ref())?;
            queues
                .ack_many_and_reserve(&q, acks, next.max.unwrap_or(1), lease)
                .await
                .map_err(in_next)?
        }
    };
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => acked.push(id),
            Err(e) => errors.push(json!({
                "id": id, "status": e.status(), "error": e.to_string(), "hint": e.hint(),
            })),
        }
    }
    Ok(Json(json!({ "acked": acked, "errors": errors, "jobs": jobs })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    lease_token: String,
    error: Option<String>,
    retry: Option<bool>,
}

async fn fail(
    State(s): State<AppState>,
    Path((q, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: FailBody = json_body(body)?;
    let error = body.error.unwrap_or_else(|| "failed".to_owned());
    let failed = s
        .services
        .queues
        .fail(
            &q,
            &id,
            &body.lease_token,
            &error,
            body.retry.unwrap_or(true),
        )
        .await?;
    // `due_ms` says when a retry is due; a dead-lettered job has none.
    let body = if failed.state == JobState::Failed {
        json!({ "state": failed.status() })
    } else {
        json!({ "state": failed.status(), "due_ms": failed.due_ms })
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    lease_token: String,
    lease: Option<DelaySpec>,
}

async fn extend(
    State(s): State<AppState>,
    Path((q, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: ExtendBody = json_body(body)?;
    // No `lease`: the same default as `reserve` (`[services] job_lease`), so a worker that
    // heartbeats with `extend {}` keeps the lease it was given.
    let lease = opt_time("lease", body.lease.as_ref())?;
    let until = s
        .services
        .queues
        .extend(&q, &id, &body.lease_token, lease)
        .await?;
    Ok(Json(json!({ "lease_until_ms": until })).into_response())
}

async fn counts(State(s): State<AppState>, Path(q): Path<String>) -> ApiResult {
    Ok(Json(s.services.queues.counts(&q).await?).into_response())
}

async fn job(State(s): State<AppState>, Path((q, id)): Path<(String, String)>) -> ApiResult {
    let queues = &s.services.queues;
    let rec = queues.get(&q, &id).await?;
    Ok(Json(browse::shown(rec, queues.now_ms())?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Dead letters are the `failed` state's jobs, oldest first.
async fn dead(
    State(s): State<AppState>,
    Path(q): Path<String>,
    query: Result<Query<DeadQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = browse::query(
        query,
        "use ?offset=N&limit=N (limit 100 by default, 1000 at most)",
    )?;
    let queues = &s.services.queues;
    // Pages as `GET .../jobs?state=failed` does: a limit over 1000 is served as 1000.
    let recs = queues
        .list(
            &q,
            "failed",
            query.offset.unwrap_or(0),
            query.limit.unwrap_or(100).min(1000),
        )
        .await?;
    browse::jobs(recs, queues.now_ms())
}

async fn retry_dead(State(s): State<AppState>, Path((q, id)): Path<(String, String)>) -> ApiResult {
    s.services.queues.retry_dead(&q, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_dead(
    State(s): State<AppState>,
    Path((q, id)): Path<(String, String)>,
) -> ApiResult {
    s.services.queues.delete_dead(&q, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(s): State<AppState>, Path(q): Path<String>) -> ApiResult {
    s.services.queues.pause(&q).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn resume(State(s): State<AppState>, Path(q): Path<String>) -> ApiResult {
    s.services.queues.resume(&q).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CleanBody {
    state: String,
    grace: Option<DelaySpec>,
    limit: Option<usize>,
}

async fn clean(
    State(s): State<AppState>,
    Path(q): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: CleanBody = json_body(body)?;
    let grace = opt_time("grace", body.grace.as_ref())?.unwrap_or(Duration::ZERO);
    let limit = match body.limit {
        None => 1000,
        Some(n @ 1..=10_000) => n,
        Some(n) => {
            return Err(ApiError::bad(
                format!("limit {n} is outside 1..10000"),
                "clean removes at most 10000 jobs a call (1000 when limit is left out); call again while `removed` comes back full (BullMQ's limit 0, no limit, is that loop)",
            ))
        }
    };
    let cleaned = s
        .services
        .queues
        .clean(&q, &body.state, grace, limit)
        .await?;
    Ok(Json(cleaned).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    every: Option<DelaySpec>,
    cron: Option<String>,
    tz: Option<String>,
    #[serde(deserialize_with = "crate::object::one")]
    job: JobSpec,
}

async fn set_schedule(
    State(s): State<AppState>,
    Path((q, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: ScheduleBody = json_body(body)?;
    let every = opt_time("every", body.every.as_ref())?;
    let repeat = Queues::repeat_of(every, body.cron.as_deref(), body.tz.as_deref())?;
    let info = s
        .services
        .queues
        .set_schedule(&q, &name, repeat, body.job)
        .await?;
    Ok(Json(info).into_response())
}

async fn delete_schedule(
    State(s): State<AppState>,
    Path((q, name)): Path<(String, String)>,
) -> ApiResult {
    s.services.queues.delete_schedule(&q, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
