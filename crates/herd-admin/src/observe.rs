//! Observation and control endpoints beyond the core admin API: telemetry history and its live
//! stream, per-app performance over 1 and 5 minutes, the load balancer's view, the store's
//! status, instance drain/ready, and config reload.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;

use crate::AdminState;

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/telemetry", get(telemetry))
        .route("/telemetry/stream", get(stream))
        .route("/health/performance", get(performance))
        .route("/loadbalancer/status", get(lb_status))
        .route("/loadbalancer/instances/{id}/{action}", post(lb_action))
        .route("/store/status", get(store_status))
        .route("/config/reload", post(config_reload))
        .route("/openapi.json", get(openapi))
        .route("/alerts", get(alerts))
        .with_state(state)
}

#[derive(Deserialize)]
struct Minutes {
    minutes: Option<usize>,
}

async fn telemetry(State(s): State<AdminState>, Query(q): Query<Minutes>) -> Response {
    let minutes = q.minutes.unwrap_or(15).clamp(1, 15);
    Json(json!({ "samples": s.telemetry.history(minutes * 60) })).into_response()
}

/// Server-sent events: one `tick` per second (sample, cluster status, new scaling events).
async fn stream(State(s): State<AdminState>) -> Response {
    let ticks = BroadcastStream::new(s.telemetry.subscribe()).filter_map(|t| async move {
        // A slow reader skips ticks rather than holding the sampler back.
        let t = t.ok()?;
        let data = serde_json::to_string(&*t).ok()?;
        Some(Ok::<_, Infallible>(Bytes::from(format!(
            "event: tick\ndata: {data}\n\n"
        ))))
    });
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(Bytes::from_static(b"retry: 2000\n: herd telemetry\n\n"))
    });
    let until = s.shutdown.clone().cancelled_owned();
    let body = Body::from_stream(hello.chain(ticks).take_until(until));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn performance(State(s): State<AdminState>) -> Response {
    let one = s.telemetry.window(60);
    let five = s.telemetry.window(300);
    let apps: Vec<_> = s
        .fleet
        .app_names()
        .into_iter()
        .map(|name| {
            let pick = |w: &[(String, crate::telemetry::WindowFigures)]| {
                w.iter()
                    .find(|(a, _)| *a == name)
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default()
            };
            json!({"app": name, "1m": pick(&one), "5m": pick(&five)})
        })
        .collect();
    Json(json!({ "apps": apps })).into_response()
}

/// Per instance: state, whether it takes new requests, its weight in force (slow start
/// included), in-flight, requests, failures, circuit, and the last active check.
async fn lb_status(State(s): State<AdminState>) -> Response {
    let apps: Vec<_> = s
        .fleet
        .status()
        .into_iter()
        .map(|a| {
            let weights = s.lb.as_ref().map(|lb| lb.lb_weights(&a.name)).unwrap_or_default();
            let instances: Vec<_> = a
                .instances
                .iter()
                .map(|i| {
                    let w = weights.iter().find(|w| w.instance == i.id);
                    let in_rotation = match &s.lb {
                        Some(_) => w.is_some() && !i.passively_down && i.circuit != "open",
                        None => {
                            i.state == herd_core::InstanceState::Ready
                                && !i.passively_down
                                && i.circuit != "open"
                        }
                    };
                    json!({
                        "id": i.id,
                        "addr": i.addr.clone().or_else(|| i.port.map(|p| format!("127.0.0.1:{p}"))),
                        "state": i.state,
                        "in_rotation": in_rotation,
                        "passively_down": i.passively_down,
                        // Out of rotation an instance gets no traffic: its weight in force is 0.
                        "weight": w.map_or(if s.lb.is_some() { 0.0 } else { 1.0 }, |w| w.effective_weight),
                        "configured_weight": w.map(|w| w.weight),
                        "backup": w.is_some_and(|w| w.backup),
                        "max_conn": w.map(|w| w.max_conn),
                        "in_flight": i.in_flight,
                        "requests": i.requests_total,
                        "failures": i.failures,
                        "circuit": i.circuit,
                        "last_check": i.last_check.as_ref().map(|c| json!({
                            "at": c.at_rfc3339(), "at_unix_ms": c.at_unix_ms,
                            "ok": c.ok, "detail": c.detail,
                        })),
                    })
                })
                .collect();
            let queued = s.lb.as_ref().map_or(0, |lb| lb.queued(&a.name));
            json!({"app": a.name, "ready": a.ready, "queued": queued, "instances": instances})
        })
        .collect();
    Json(json!({ "apps": apps })).into_response()
}

/// `drain`: no new requests, in-flight ones finish; `maint`: the same with active checks
/// paused (HAProxy MAINT); `ready`: back into rotation.
async fn lb_action(
    State(s): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let result = match action.as_str() {
        "drain" => s.fleet.set_drained(&id, true).await,
        "ready" => s.fleet.set_drained(&id, false).await,
        "maint" => s.fleet.set_maint(&id, true).await,
        other => return (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": format!("unknown action {other:?}"), "hint": "use drain, maint or ready"}),
            ),
        )
            .into_response(),
    };
    match result {
        Ok(()) => Json(json!({
            "instance": id,
            "action": action,
            "drained": action != "ready",
            "maint": action == "maint",
        }))
        .into_response(),
        // 404 for an unknown id (its message says where ids are listed), 503 while herd
        // shuts down, and so on.
        Err(e) => crate::routes::fleet_error(&e),
    }
}

/// The OpenAPI document of this API (kept in `openapi/openapi.json`, checked against the
/// router's routes by a test).
pub(crate) const OPENAPI: &str = include_str!("../openapi/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn alerts(State(s): State<AdminState>) -> Response {
    let status = s
        .alerts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .status();
    let firing = status
        .iter()
        .filter(|a| matches!(a.state, herd_alerts::AlertState::Firing))
        .count();
    Json(json!({ "firing": firing, "alerts": status })).into_response()
}

async fn store_status(State(s): State<AdminState>) -> Response {
    use herd_store::Backend as _;
    let Some(services) = &s.services else {
        return Json(json!({
            "backend": null,
            "state": "not_configured",
            "detail": "the services are off ([services] enabled = false), so no store is open"
        }))
        .into_response();
    };
    let status = services.store().status();
    Json(json!({
        "backend": status.backend,
        "state": status.state,
        "target": status.target,
        "last_error": status.last_error,
        "cache": services.cache.stats(),
    }))
    .into_response()
}

async fn config_reload(State(s): State<AdminState>) -> Response {
    let Some(reloader) = &s.reload else {
        return (
            StatusCode::CONFLICT,
            Json(
                json!({"error": "herd runs without a config file (quick mode); nothing to reload",
                        "hint": "start herd with `herd up -c herd.toml` to reload config"}),
            ),
        )
            .into_response();
    };
    match tokio::time::timeout(Duration::from_secs(60), reloader.reload()).await {
        Ok(Ok(report)) => Json(json!({"reloaded": true, "report": report})).into_response(),
        // Not the file's fault: nothing is applied once the shutdown has begun.
        Ok(Err(_)) if s.fleet.is_stopping() => crate::routes::fleet_error(
            &herd_fleet::FleetError::ShuttingDown,
        ),
        Ok(Err(errors)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"reloaded": false, "error": "the new config is invalid; the running config stays in force", "errors": errors})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({"reloaded": false, "error": "reload did not finish within 60 s"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every `.route("PATH", get(..)|post(..))` in the router sources.
    fn routes_in_code() -> BTreeSet<(String, String)> {
        let sources = [
            include_str!("routes.rs"),
            include_str!("observe.rs"),
            include_str!("lib.rs"),
            include_str!("dashboard.rs"),
        ];
        let mut out = BTreeSet::new();
        for src in sources {
            let code = src.split("#[cfg(test)]").next().unwrap_or(src);
            for piece in code.split(".route(\"").skip(1) {
                let Some((path, rest)) = piece.split_once('"') else {
                    continue;
                };
                let rest = rest.trim_start_matches([',', ' ', '\n']);
                let method = if rest.starts_with("post(") {
                    "post"
                } else if rest.starts_with("get(") || rest.starts_with("scrape") {
                    "get"
                } else {
                    continue;
                };
                out.insert((method.to_owned(), path.to_owned()));
            }
        }
        out
    }

    #[test]
    fn openapi_documents_exactly_the_routes_that_exist() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let code = routes_in_code();
        assert!(
            code.len() > 15,
            "route extraction found too few routes: {code:?}"
        );
        let undocumented: Vec<_> = code.difference(&documented).collect();
        let missing: Vec<_> = documented.difference(&code).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            missing.is_empty(),
            "openapi.json documents routes that do not exist: {missing:?}"
        );
    }

    /// The actions `POST /loadbalancer/instances/{id}/{action}` takes are the ones documented.
    #[test]
    fn openapi_lists_exactly_the_instance_actions() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let params = doc["paths"]["/loadbalancer/instances/{id}/{action}"]["post"]["parameters"]
            .as_array()
            .unwrap();
        let action = params.iter().find(|p| p["name"] == "action").unwrap();
        let mut documented: Vec<&str> = action["schema"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        documented.sort_unstable();
        let src = include_str!("observe.rs");
        let handler = src.split("async fn lb_action(").nth(1).unwrap();
        let handler = handler.split("\n}\n").next().unwrap();
        let mut in_code: Vec<&str> = handler
            .split('"')
            .collect::<Vec<_>>()
            .windows(3)
            .filter(|w| w[2].trim_start().starts_with("=>") && !w[1].is_empty())
            .map(|w| w[1])
            .collect();
        in_code.sort_unstable();
        assert_eq!(documented, in_code);
    }
}
