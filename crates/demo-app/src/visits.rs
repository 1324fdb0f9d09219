//! `GET /visits`: a visit counter kept in a herd session, to show the shared services at work.
//! Whichever instance answers, the count goes on: the session lives in herd's store, reached
//! through `HERD_SERVICES_URL` with `HERD_SERVICES_TOKEN`. The session id travels in the
//! `demo_sid` cookie.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

struct Services {
    url: String,
    auth: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn services() -> Option<&'static Services> {
    static S: OnceLock<Option<Services>> = OnceLock::new();
    S.get_or_init(|| {
        let url = std::env::var("HERD_SERVICES_URL").ok()?;
        let token = std::env::var("HERD_SERVICES_TOKEN").ok()?;
        Some(Services {
            url: url.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {token}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    })
    .as_ref()
}

async fn call(
    s: &Services,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", s.url))
        .header(header::AUTHORIZATION, &s.auth)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
    let resp = s.client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("demo_sid=").map(str::to_owned))
        .filter(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A services answer other than the expected one, as the demo's own 502.
fn upstream(outcome: Result<(u16, Value), String>) -> Response {
    let text = match outcome {
        Ok((code, v)) => format!("services answered {code}: {v}\n"),
        Err(e) => format!("services unreachable: {e}\n"),
    };
    (StatusCode::BAD_GATEWAY, text).into_response()
}

pub(crate) async fn visits(headers: HeaderMap) -> Response {
    let Some(s) = services() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no HERD_SERVICES_URL: run demo-app under herd\n",
        )
            .into_response();
    };
    let instance = crate::instance();
    let existing = match session_cookie(&headers) {
        Some(id) => match call(s, "GET", &format!("/v1/sessions/{id}"), None).await {
            Ok((200, v)) => Some((id, v["data"]["visits"].as_u64().unwrap_or(0))),
            Ok((404, _)) => None,
            other => return upstream(other),
        },
        None => None,
    };
    let (id, n) = match existing {
        Some((id, n)) => {
            let patch = json!({"data": {"visits": n + 1, "last_instance": instance}});
            match call(s, "PATCH", &format!("/v1/sessions/{id}"), Some(patch)).await {
                Ok((200, _)) => (id, n + 1),
                other => return upstream(other),
            }
        }
        None => {
            let body = json!({"data": {"visits": 1, "last_instance": instance}});
            match call(s, "POST", "/v1/sessions", Some(body)).await {
                Ok((201, v)) => (v["id"].as_str().unwrap_or_default().to_owned(), 1),
                other => return upstream(other),
            }
        }
    };
    (
        [(
            header::SET_COOKIE,
            format!("demo_sid={id}; Path=/; HttpOnly; SameSite=Lax"),
        )],
        format!("visit {n} on {instance}\n"),
    )
        .into_response()
}
