//! `/v1/cache`: raw-byte values per namespace and key (`?ttl=30s&tags=a,b` on PUT), prefix and
//! tag invalidation, stats. A GET says where it was answered in `X-Cache` (`HIT-L1`,
//! `HIT-L2`) and how fresh it is in `X-Cache-Freshness`; it answers from L1 while the store
//! is down. `GET ?fill=5s` coalesces loads (`Cache::get_or_lease`): the caller told
//! `X-Cache-Fill: load` (on a 404) or `refresh` (on a 200) loads the value and PUTs it; callers
//! that miss meanwhile wait for that PUT.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};

use super::Path;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{body_bytes, json_body, opt_duration, ApiError, ApiResult, AppState, Table};
use crate::cache::{Hit, Leased, Level, PutOptions};
use crate::ServiceError;

pub(super) fn routes(t: Table) -> Table {
    // A key named `invalidate` is a key like any other for GET, PUT and DELETE: the router
    // picks the literal segment for every method, so those methods are served there too
    // (documented under `{key}`, so only POST is listed for this path).
    let as_key = |Path(ns): Path<String>| Path((ns, "invalidate".to_owned()));
    t.add("/v1/cache/stats", &["get"], get(stats))
        .add(
            "/v1/cache/{ns}/invalidate",
            &["post"],
            post(invalidate)
                .get(move |s, m, ns, q| read(s, m, as_key(ns), q))
                .put(move |s, ns, q, h, b| write(s, as_key(ns), q, h, b))
                .delete(move |s, ns| remove(s, as_key(ns))),
        )
        .add(
            "/v1/cache/{ns}/{key}",
            &["get", "put", "delete"],
            get(read).put(write).delete(remove),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    ttl: Option<String>,
    tags: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    fill: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    prefix: Option<String>,
    tag: Option<String>,
}

async fn read(
    State(s): State<AppState>,
    method: axum::http::Method,
    Path((ns, key)): Path<(String, String)>,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        ApiError::bad(
            format!("invalid query: {e}"),
            "use ?fill=5s (how long loading a missing value may take) or no query",
        )
    })?;
    let cache = &s.services.cache;
    let lease = opt_duration("fill", q.fill.as_deref())?;
    // A HEAD (an existence probe, a monitor) never takes a lease: nobody would load the
    // value, and callers would wait out the lease for nothing.
    let lease = lease.filter(|_| method != axum::http::Method::HEAD);
    let (hit, fill) = match lease {
        None => (cache.get(&ns, &key).await?, None),
        Some(lease) => match cache.get_or_lease(&ns, &key, lease).await? {
            Leased::Hit(hit) => (Some(hit), None),
            Leased::Refresh(hit) => (Some(hit), Some("refresh")),
            Leased::Load => (None, Some("load")),
        },
    };
    let mut resp = match hit {
        Some(hit) => found(hit),
        None => ApiError::from(ServiceError::not_found(format!(
            "cache key {key} in namespace {ns}"
        )))
        .into_response(),
    };
    if let Some(fill) = fill {
        resp.headers_mut().insert(
            header::HeaderName::from_static("x-cache-fill"),
            header::HeaderValue::from_static(fill),
        );
    }
    Ok(resp)
}

fn found(hit: Hit) -> axum::response::Response {
    let level = match hit.level {
        Level::L1 => "HIT-L1",
        Level::L2 => "HIT-L2",
    };
    let content_type = hit
        .content_type
        .as_deref()
        .and_then(|ct| header::HeaderValue::from_str(ct).ok())
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    (
        [(header::CONTENT_TYPE, content_type)],
        [
            (header::HeaderName::from_static("x-cache"), level),
            (
                header::HeaderName::from_static("x-cache-freshness"),
                hit.freshness.as_str(),
            ),
        ],
        hit.value,
    )
        .into_response()
}

async fn write(
    State(s): State<AppState>,
    Path((ns, key)): Path<(String, String)>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    headers: header::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        ApiError::bad(
            format!("invalid query: {e}"),
            "use ?ttl=30s and ?tags=a,b only",
        )
    })?;
    let value = body_bytes(body)?;
    let ttl = opt_duration("ttl", q.ttl.as_deref())?;
    let tags = q
        .tags
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| ct.len() <= 200)
        .map(str::to_owned);
    let opts = PutOptions {
        ttl,
        tags,
        content_type,
    };
    s.services.cache.put_with(&ns, &key, value, opts).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(State(s): State<AppState>, Path((ns, key)): Path<(String, String)>) -> ApiResult {
    if s.services.cache.delete(&ns, &key).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ServiceError::not_found(format!("cache key {key} in namespace {ns}")).into())
    }
}

async fn invalidate(
    State(s): State<AppState>,
    Path(ns): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: InvalidateBody = json_body(body)?;
    let removed = match (body.prefix, body.tag) {
        (Some(prefix), None) => s.services.cache.invalidate_prefix(&ns, &prefix).await?,
        (None, Some(tag)) => s.services.cache.invalidate_tag(&ns, &tag).await?,
        _ => {
            return Err(ApiError::bad(
                "set exactly one of \"prefix\" and \"tag\"",
                "e.g. {\"prefix\": \"user:42:\"} or {\"tag\": \"user:42\"}",
            ))
        }
    };
    Ok(Json(json!({ "removed": removed })).into_response())
}

async fn stats(State(s): State<AppState>) -> ApiResult {
    Ok(Json(s.services.cache.stats_exact().await).into_response())
}
