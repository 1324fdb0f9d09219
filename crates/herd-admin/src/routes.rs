//! Admin API handlers.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt as _;
use herd_fleet::{tail_lines, FleetError};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;

use crate::AdminState;

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/cluster/status", get(cluster_status))
        .route("/scaling/manual", post(scale))
        .route("/scaling/status", get(scaling_status))
        .route("/scaling/events", get(scaling_events))
        .route("/scaling/pause", post(scaling_pause))
        .route("/reload", post(reload))
        .route("/logs/{app}", get(logs))
        .fallback(not_found)
        .with_state(state)
}

/// An error answer: status plus `{"error", "hint"}`.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    hint: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "hint": self.hint})),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such admin endpoint", None)
}

fn api_error(status: StatusCode, msg: &str, hint: Option<&str>) -> ApiError {
    ApiError {
        status,
        message: msg.to_owned(),
        hint: hint.map(str::to_owned),
    }
}

fn error(status: StatusCode, msg: &str, hint: Option<&str>) -> Response {
    api_error(status, msg, hint).into_response()
}

pub(crate) fn fleet_error(e: &FleetError) -> Response {
    let status = match e {
        FleetError::UnknownApp { .. } | FleetError::UnknownInstance { .. } => StatusCode::NOT_FOUND,
        FleetError::NotSupervised { .. }
        | FleetError::InvalidCount { .. }
        | FleetError::NotAutoscaled { .. }
        | FleetError::Launch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        FleetError::ReloadFailed { .. } => StatusCode::CONFLICT,
        FleetError::Stopped { .. } | FleetError::LogDir { .. } | FleetError::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let hint = match e {
        FleetError::NotAutoscaled { app } => Some(format!(
            "without [app.scaling] there is no autoscaler to hand the count back to: set it with herd scale {app} N, or add [app.scaling] to the app's config"
        )),
        _ => None,
    };
    error(status, &e.to_string(), hint.as_deref())
}

async fn health(
    State(s): State<AdminState>,
    anonymous: Option<axum::Extension<crate::auth::Anonymous>>,
) -> Response {
    if s.stopping.is_cancelled() || s.fleet.is_stopping() {
        // Shutting down: the gateway no longer takes connections. A load balancer or
        // Kubernetes probe in front must take this node out now, not at its next failure.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopping"})),
        )
            .into_response();
    }
    let apps = s.fleet.status();
    // An app scaled to zero by its autoscaler (`min = 0`) is healthy: its first request starts
    // an instance. One scaled to zero otherwise (`herd scale web 0`) answers every request 503.
    // Ready is not enough: an app whose every instance has its circuit open answers 503.
    let healthy = apps
        .iter()
        .all(|a| a.serving > 0 || (a.desired == 0 && a.scale_from_zero));
    let detail: Vec<_> = apps
        .iter()
        .map(|a| json!({"name": a.name, "ready": a.ready, "serving": a.serving, "desired": a.desired}))
        .collect();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let verdict = if healthy { "ok" } else { "degraded" };
    if anonymous.is_some() {
        return (status, Json(json!({ "status": verdict }))).into_response();
    }
    (status, Json(json!({"status": verdict, "apps": detail}))).into_response()
}

async fn cluster_status(State(s): State<AdminState>) -> Response {
    Json(json!({ "apps": s.fleet.status() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    app: Option<String>,
    /// Required unless `clear` is true: a count, or `"max"` (one per core of this machine,
    /// as `instances = "max"`).
    instances: Option<Instances>,
    reason: Option<String>,
    /// Drop a manual override and let the autoscaler decide again.
    #[serde(default)]
    clear: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Instances {
    Count(u32),
    Word(String),
    /// Anything else (`-3`, `2.5`, `true`): named in the error, not serde's untagged wording.
    Other(serde_json::Value),
}

fn pick_app(s: &AdminState, app: Option<String>) -> Result<String, ApiError> {
    match app {
        Some(a) => Ok(a),
        None => {
            let names = s.fleet.app_names();
            match names.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(api_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "\"app\" is required when herd runs several apps",
                    Some(&format!("one of: {}", names.join(", "))),
                )),
            }
        }
    }
}

/// Parses a JSON body whatever its `Content-Type` (so `curl -d` works); an empty body is `{}`.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {e}"),
            Some(&format!("expected {example}")),
        )
    })
}

async fn scale(State(s): State<AdminState>, body: Bytes) -> Response {
    let body: ScaleBody = match parse_json(&body, r#"{"app":"web","instances":3,"reason":"..."}"#) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let app = match pick_app(&s, body.app) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if body.clear {
        return match s.fleet.clear_manual(&app).await {
            Ok(()) => Json(json!({"app": app, "manual": null})).into_response(),
            Err(e) => fleet_error(&e),
        };
    }
    let instances = match body.instances {
        Some(Instances::Count(n)) => n,
        Some(Instances::Word(w)) if w == "max" => {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            u32::try_from(cores).unwrap_or(u32::MAX)
        }
        Some(Instances::Word(w)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("\"instances\" is {w:?}: expected a count or \"max\""),
                Some(r#"{"app":"web","instances":3} or {"app":"web","instances":"max"}"#),
            );
        }
        Some(Instances::Other(v)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("\"instances\" is {v}: expected a whole number from 0 to 4294967295, or \"max\""),
                Some(r#"{"app":"web","instances":3} or {"app":"web","instances":"max"}"#),
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "\"instances\" is required",
                Some(r#"{"app":"web","instances":3,"reason":"..."} or {"app":"web","clear":true}"#),
            );
        }
    };
    let reason = match crate::errors::reason(body.reason) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why, Some("give a short reason")),
    };
    match s.fleet.scale(&app, instances, reason).await {
        Ok(in_force) => {
            Json(json!({"app": app, "instances": in_force, "requested": instances})).into_response()
        }
        Err(e) => fleet_error(&e),
    }
}

async fn scaling_status(State(s): State<AdminState>) -> Response {
    let apps: Vec<_> = s
        .fleet
        .scaling_status()
        .into_iter()
        .map(|(name, view)| match view {
            Some(v) => json!({"name": name, "enabled": true, "status": v}),
            None => json!({"name": name, "enabled": false}),
        })
        .collect();
    Json(json!({ "apps": apps })).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    app: Option<String>,
    limit: Option<usize>,
}

async fn scaling_events(State(s): State<AdminState>, Query(q): Query<EventsQuery>) -> Response {
    match s.fleet.scaling_events(q.app.as_deref()) {
        Ok(mut events) => {
            let limit = q.limit.unwrap_or(100).min(1000);
            let skip = events.len().saturating_sub(limit);
            events.drain(..skip);
            Json(json!({ "events": events })).into_response()
        }
        Err(e) => fleet_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    app: Option<String>,
    paused: bool,
    reason: Option<String>,
}

async fn scaling_pause(State(s): State<AdminState>, body: Bytes) -> Response {
    let body: PauseBody = match parse_json(&body, r#"{"app":"web","paused":true,"reason":"..."}"#) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let app = match pick_app(&s, body.app) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let reason = match crate::errors::reason(body.reason) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why, Some("give a short reason")),
    };
    match s.fleet.pause(&app, body.paused, reason).await {
        Ok(()) => Json(json!({"app": app, "paused": body.paused})).into_response(),
        Err(e) => fleet_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    app: Option<String>,
}

async fn reload(State(s): State<AdminState>, body: Bytes) -> Response {
    let body: ReloadBody =
        match parse_json(&body, r#"{"app":"web"}, or an empty body for every app"#) {
            Ok(b) => b,
            Err(r) => return r.into_response(),
        };
    match s.fleet.reload(body.app.as_deref()).await {
        Ok(()) => Json(json!({"reloaded": body.app.map_or_else(|| json!("all"), |a| json!(a))}))
            .into_response(),
        Err(e) => fleet_error(&e),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
    follow: Option<bool>,
}

async fn logs(
    State(s): State<AdminState>,
    Path(app): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let (rx, files) = match s.fleet.logs(&app) {
        Ok(x) => x,
        Err(e) => return fleet_error(&e),
    };
    let lines = q.lines.unwrap_or(20).min(10_000);
    let mut history = String::new();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().replace(".log", ""))
            .unwrap_or_default();
        for line in tail_lines(f, lines).await {
            history.push_str(&format!("{name} | {line}\n"));
        }
    }
    let head = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(history)) });
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow.unwrap_or(false) {
        return (headers, Body::from_stream(head)).into_response();
    }
    let live = BroadcastStream::new(rx).filter_map(|item| async move {
        match item {
            Ok(l) => {
                let stream = match l.stream {
                    herd_fleet::Stream::Out => "out",
                    herd_fleet::Stream::Err => "err",
                };
                Some(Ok(Bytes::from(format!(
                    "{}.{stream} | {}\n",
                    l.instance, l.line
                ))))
            }
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => Some(Ok(
                Bytes::from(format!("herd | ({n} lines skipped: reader too slow)\n")),
            )),
        }
    });
    let until = s.shutdown.clone().cancelled_owned();
    let stream = head.chain(live).take_until(until);
    (headers, Body::from_stream(stream)).into_response()
}
