//! The services' HTTP API: `/v1/sessions`, `/v1/cache`, `/v1/queues`, `/v1/locks`,
//! `/v1/ratelimit`, plus `GET /health` and `GET /openapi.json`.
//!
//! - this module: the router, the Bearer-token check, body limits, JSON errors.
//! - `sessions`, `cache`, `queues`, `locks`: the handlers, one file per service.
//!
//! Every path but `/health` and `/openapi.json` needs `Authorization: Bearer <token>`
//! (compared in constant time, never logged). Errors are `{"error": what, "hint": how to fix}`:
//! 400 bad input, 401 token, 404, 409 CAS conflict or wrong lease token, 412 If-Match
//! mismatch, 413 body too large, 503 store unavailable (with the reason). The OpenAPI document
//! is `openapi.json` beside this file; a test keeps it and the routes equal.

mod cache;
mod conditional;
mod locks;
mod queue_browse;
mod queues;
mod serve;
mod sessions;
mod wellformed;

pub use serve::{
    serve_router, serve_router_with, ApiLimits, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT,
    MAX_CONNECTIONS,
};

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use herd_core::logcap::LogCap;
use herd_store::Backend as _;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{ServiceError, Services};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// HTTP settings.
#[derive(Clone)]
pub struct HttpConfig {
    /// The Bearer token every call but `/health` and `/openapi.json` must present.
    pub token: Arc<str>,
    /// Largest request body (default 1 MiB); larger ones get 413.
    pub max_body: usize,
}

impl HttpConfig {
    /// Settings with the default body limit.
    #[must_use]
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        HttpConfig {
            token: token.into(),
            max_body: 1 << 20,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) services: Arc<Services>,
    token: Arc<str>,
}

/// An error as the API answers it.
#[derive(Debug)]
pub(crate) enum ApiError {
    Service(ServiceError),
    Plain {
        status: StatusCode,
        error: String,
        hint: String,
    },
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Service(e)
    }
}

impl ApiError {
    pub(crate) fn internal(error: impl Into<String>) -> Self {
        ApiError::Plain {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: error.into(),
            hint: "this is a bug in herd: please report it with the request".into(),
        }
    }

    pub(crate) fn bad(error: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError::Plain {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            hint: hint.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, hint) = match self {
            ApiError::Service(e) => {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    // An outage fails every call: one line a second, with the count.
                    static CAP: LogCap = LogCap::new(Duration::from_secs(1));
                    if let Some(held_back) = CAP.admit() {
                        tracing::warn!(error = %e, similar_lines_held_back = held_back, "services API call failed");
                    }
                } else if status.is_server_error() {
                    tracing::warn!(error = %e, "services API call failed");
                }
                (status, e.to_string(), e.hint())
            }
            ApiError::Plain {
                status,
                error,
                hint,
            } => (status, error, hint),
        };
        let mut response = (status, Json(json!({ "error": error, "hint": hint }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // The store reconnects within about a second; clients that honour it back off.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// axum's `Path`, refusing a bad segment (not UTF-8, say) with the API's JSON error instead of
/// axum's plain-text one.
pub(crate) struct Path<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::bad(
                format!("invalid path: {}", e.body_text()),
                "each path segment is percent-encoded UTF-8 (names and keys are text)",
            )),
        }
    }
}

/// Parses a JSON body, turning size and syntax problems into 413 / 400 with a hint.
pub(crate) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    let empty = bytes.is_empty();
    let bytes = if empty {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    // A body is one JSON object (serde alone would also take an array for a struct).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad(
            "invalid JSON body: expected a JSON object",
            "send a JSON object as documented in GET /openapi.json",
        ));
    }
    let bytes = wellformed::lone_surrogates_replaced(&bytes);
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = at_field(&e, "");
        if empty && message.starts_with("missing field") {
            // The empty body stood in for `{}`: say that, not "at line 1 column 2".
            let field = message.split('`').nth(1).unwrap_or("?");
            return ApiError::bad(
                format!("this call needs a JSON body with `{field}`; the request had none"),
                format!("send e.g. {{\"{field}\": ...}} with Content-Type: application/json (see GET /openapi.json)"),
            );
        }
        ApiError::bad(format!("invalid JSON body: {message}"), body_hint(&message))
    })?;
    // One object, nothing after it (`{..}{..}` or `{..}garbage` is not half accepted).
    de.end().map_err(|e| {
        ApiError::bad(
            format!("invalid JSON body: {e}"),
            "send exactly one JSON object, with nothing after it",
        )
    })?;
    Ok(value)
}

/// The fields that take a duration, with an example of one, and whether a number of
/// milliseconds is taken too (everywhere but sessions' `ttl`: the hint must hold for both).
const DURATIONS: [(&str, &str, bool); 5] = [
    ("ttl", "1h", false),
    ("lease", "30s", true),
    ("wait", "5s", true),
    ("grace", "1m", true),
    ("every", "5m", true),
];

/// The hint for a body that did not decode: the expected form when the field takes a
/// duration (and the error is about its value, not an unknown field of that name), else where
/// the forms are documented.
fn body_hint(message: &str) -> String {
    let field = message
        .strip_prefix("field `")
        .and_then(|m| m.split('`').next())
        .map(|path| path.rsplit('.').next().unwrap_or(path));
    let unknown = message.contains("unknown field");
    match field
        .filter(|_| !unknown)
        .and_then(|f| DURATIONS.iter().find(|(name, _, _)| *name == f))
    {
        Some((name, example, true)) => format!(
            "{name} is a duration: a string such as \"{name}\": \"{example}\" (ms, s, m, h or d), or a whole number of milliseconds"
        ),
        Some((name, example, false)) => format!(
            "{name} is a duration in a string, e.g. \"{name}\": \"{example}\" (ms, s, m, h or d)"
        ),
        None => "send a JSON object as documented in GET /openapi.json".to_owned(),
    }
}

/// A JSON decoding error that names the field it is about (`backoff.delay`, `jobs[1].priority`)
/// and never the server's own type names; `at` prefixes the path (`jobs[1].`, or "").
pub(crate) fn at_field(e: &serde_path_to_error::Error<serde_json::Error>, at: &str) -> String {
    let inner = e.inner().to_string();
    // serde names the Rust type it wanted: "expected struct ReserveBody".
    let inner = match inner.find("expected struct ") {
        Some(i) => {
            let rest = &inner[i + "expected struct ".len()..];
            let end = rest
                .find(|c: char| !c.is_alphanumeric())
                .unwrap_or(rest.len());
            format!("{}expected a JSON object{}", &inner[..i], &rest[end..])
        }
        None => inner,
    };
    let path = e.path().to_string();
    let inner = field_range(&path, plain_types(&inner));
    // serde_path_to_error writes `?` for a place it could not name (the input ended inside
    // a value): name what it could, or nothing.
    let path = match path.trim_end_matches("?").trim_end_matches('.') {
        "" => ".",
        named => named,
    };
    match (path, at.strip_suffix('.')) {
        (".", None) => inner,
        (".", Some(whole)) => format!("field `{whole}`: {inner}"),
        (path, _) => format!("field `{at}{path}`: {inner}"),
    }
}

/// The range a field really takes, where it is narrower than its type's: serde only knows that
/// `attempts` is a `u32`, not that 0 is refused.
fn field_range(path: &str, message: String) -> String {
    const RANGES: [(&str, &str); 3] = [
        ("attempts", "a whole number from 1 to 4294967295"),
        (
            "priority",
            "a whole number from 0 (none) to 2097152 (1 is the highest)",
        ),
        ("max", "a whole number from 1 to 1000"),
    ];
    let field = path.rsplit('.').next().unwrap_or(path);
    let Some((_, range)) = RANGES.iter().find(|(name, _)| *name == field) else {
        return message;
    };
    match message.find("expected a whole number") {
        Some(i) => {
            let end = message[i..]
                .find(" at line ")
                .map_or(message.len(), |j| i + j);
            format!("{}expected {range}{}", &message[..i], &message[end..])
        }
        None => message,
    }
}

/// serde's words for what it wanted, in JSON's terms rather than the server's Rust types.
fn plain_types(message: &str) -> String {
    const WORDS: [(&str, &str); 9] = [
        (
            "data did not match any variant of untagged enum AgeSpec",
            "expected a number of seconds or a duration such as \"1h\"",
        ),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
    ];
    let mut out = message.to_owned();
    for (rust, json) in WORDS {
        // Whole words only: "expected u32" must not match inside "expected u320".
        while let Some(i) = out.find(rust) {
            let end = i + rust.len();
            if out[end..].starts_with(|c: char| c.is_alphanumeric()) {
                break;
            }
            out.replace_range(i..end, json);
        }
    }
    if let Some(i) = out.find("data did not match any variant of untagged enum ") {
        out.replace_range(
            i..,
            "expected one of the forms GET /openapi.json documents for it",
        );
    }
    out
}

/// The raw body, with 413 for one past the limit.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::Plain {
                status,
                error: "request body too large".into(),
                hint:
                    "send a smaller body (the limit is [services] max_body_size, 1 MiB by default)"
                        .into(),
            }
        } else {
            ApiError::Plain {
                status,
                error: format!("unreadable request body: {rejection}"),
                hint: "resend the request".into(),
            }
        }
    })
}

/// Parses an optional duration field such as `"30s"`.
pub(crate) fn opt_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    text.map(|t| crate::queue::spec::duration(field, t))
        .transpose()
        .map_err(ApiError::from)
}

/// Reads an optional duration field of a JSON body: a text such as `"30s"` or, as BullMQ and
/// Redlock take them, a whole number of milliseconds.
pub(crate) fn opt_time(
    field: &str,
    spec: Option<&DelaySpec>,
) -> Result<Option<Duration>, ApiError> {
    spec.map(|s| s.duration(field))
        .transpose()
        .map_err(ApiError::from)
}

/// The longest a long-poll (a reserve's or a lock's `wait`) may be held: a request held
/// longer is usually cut by a proxy's timeout in between.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Parses a long-poll's `wait` (0 when absent), refusing one over 5 m.
pub(crate) fn wait_duration(spec: Option<&DelaySpec>) -> Result<Duration, ApiError> {
    let wait = opt_time("wait", spec)?.unwrap_or(Duration::ZERO);
    if wait > MAX_WAIT {
        return Err(ApiError::bad(
            "invalid wait: it is above 5m",
            "wait for at most \"5m\" and call again",
        ));
    }
    Ok(wait)
}

use herd_core::token::{bearer, constant_time_eq};

use crate::queue::spec::DelaySpec;

fn is_public(path: &str) -> bool {
    path == "/health" || path == "/openapi.json"
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"herd-services\"")],
            Json(json!({
                "error": "missing or wrong services token",
                "hint": "send `Authorization: Bearer <token>` with [services] token from herd's config; without one (quick mode), herd made a random token at start that only its instances get, as HERD_SERVICES_TOKEN: set [services] token in a config file to call the API yourself"
            })),
        )
            .into_response(),
    }
}

async fn health(State(state): State<AppState>, headers: header::HeaderMap) -> Response {
    let status = state.services.store().status();
    let code = if status.state == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Open to probes without the token: they get the state. Where the store is (a path, a
    // Redis host) and its last error are for callers with the token.
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|p| constant_time_eq(p.as_bytes(), state.token.as_bytes()));
    let store = if authorized {
        json!(status)
    } else {
        json!({ "backend": status.backend, "state": status.state })
    };
    (
        code,
        Json(json!({ "status": status.state, "store": store })),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn wrong_method(req: Request) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({
            "error": format!("{} is not served on {}", req.method(), req.uri().path()),
            "hint": "see GET /openapi.json for the methods each path answers (the Allow header lists them)"
        })),
    )
        .into_response()
}

async fn no_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "no such endpoint",
            "hint": "see GET /openapi.json for the paths this API serves"
        })),
    )
        .into_response()
}

/// The endpoints that read a query string; every other one refuses a query, which would
/// otherwise be ignored without a word (`POST /v1/locks/x?ttl=1s` taking the default TTL).
/// [`check_request`] also refuses compressed request bodies (415).
const TAKE_A_QUERY: [(&str, &str); 5] = [
    ("GET", "/v1/cache/{ns}/{key}"),
    ("HEAD", "/v1/cache/{ns}/{key}"),
    ("PUT", "/v1/cache/{ns}/{key}"),
    ("GET", "/v1/queues/{q}/jobs"),
    ("GET", "/v1/queues/{q}/dead"),
];

async fn check_request(matched: axum::extract::MatchedPath, req: Request, next: Next) -> Response {
    // A compressed body would be stored as its compressed bytes (a cache value) or fail as
    // bad JSON: say what is wrong instead (RFC 9110 §15.5.16).
    if let Some(coding) = req.headers().get(header::CONTENT_ENCODING) {
        let coding = String::from_utf8_lossy(coding.as_bytes()).trim().to_owned();
        if !coding.eq_ignore_ascii_case("identity") {
            return ApiError::Plain {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                error: format!(
                    "request bodies with Content-Encoding {} are not supported",
                    crate::error::quoted(&coding)
                ),
                hint: "send the body uncompressed, without Content-Encoding".into(),
            }
            .into_response();
        }
    }
    let query = req.uri().query().unwrap_or("");
    let method = req.method().as_str();
    if query.is_empty()
        || TAKE_A_QUERY
            .iter()
            .any(|(m, p)| *m == method && *p == matched.as_str())
    {
        return next.run(req).await;
    }
    let names: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split('=').next().unwrap_or(kv))
        .map(|name| crate::error::quoted(name).to_string())
        .collect();
    ApiError::bad(
        format!(
            "unknown query parameter {}: {method} {} takes none",
            names.join(", "),
            matched.as_str()
        ),
        "send the options in the JSON body, e.g. {\"ttl\": \"30s\"} (see GET /openapi.json)",
    )
    .into_response()
}

/// Collects routes with the methods they answer, so tests can compare them to the OpenAPI
/// document.
#[derive(Default)]
pub(crate) struct Table {
    router: Router<AppState>,
    pub(crate) routes: Vec<(&'static str, &'static str)>,
}

impl Table {
    pub(crate) fn add(
        mut self,
        path: &'static str,
        methods: &[&'static str],
        handler: MethodRouter<AppState>,
    ) -> Self {
        for m in methods {
            self.routes.push((m, path));
        }
        self.router = self.router.route(path, handler);
        self
    }
}

fn table() -> Table {
    let t = Table::default().add("/health", &["get"], get(health)).add(
        "/openapi.json",
        &["get"],
        get(openapi),
    );
    let t = sessions::routes(t);
    let t = cache::routes(t);
    let t = queues::routes(t);
    locks::routes(t)
}

/// Every (method, path) the router serves, lowercase methods (for the OpenAPI test).
#[must_use]
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().routes
}

/// The services API router. Serve it with `axum::serve`; cancel `services`' shutdown token and
/// the server's graceful shutdown together.
pub fn router(services: Arc<Services>, config: HttpConfig) -> Router {
    let state = AppState {
        services,
        token: config.token,
    };
    table()
        .router
        .route_layer(axum::middleware::from_fn(check_request))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Probe {
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn field_errors_and_public_paths() {
        let err = |text: &str| {
            let de = &mut serde_json::Deserializer::from_str(text);
            let e = serde_path_to_error::deserialize::<_, Probe>(de).unwrap_err();
            super::at_field(&e, "")
        };
        assert!(err("0").contains("expected a JSON object"), "{}", err("0"));
        assert!(!err("0").contains("Probe"), "{}", err("0"));
        assert!(
            err(r#"{"inner":{"n":"x"}}"#).starts_with("field `inner.n`: "),
            "{}",
            err(r#"{"inner":{"n":"x"}}"#)
        );
        let n = err(r#"{"inner":{"n":-1}}"#);
        assert!(
            n.contains("expected a whole number from 0 to 4294967295") && !n.contains("u32"),
            "{n}"
        );
        assert!(super::is_public("/health"));
        assert!(!super::is_public("/health/"));
    }

    #[test]
    fn fields_narrower_than_their_type_state_their_own_range() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Job {
            attempts: Option<u32>,
            priority: Option<u32>,
            max: Option<usize>,
        }
        let err = |text: &str| {
            let de = &mut serde_json::Deserializer::from_str(text);
            let e = serde_path_to_error::deserialize::<_, Job>(de).unwrap_err();
            super::at_field(&e, "jobs[2].")
        };
        let a = err(r#"{"attempts":-1}"#);
        assert!(
            a.starts_with("field `jobs[2].attempts`: ")
                && a.contains("expected a whole number from 1 to 4294967295 at line 1"),
            "{a}"
        );
        let p = err(r#"{"priority":5000000000}"#);
        assert!(p.contains("from 0 (none) to 2097152"), "{p}");
        let m = err(r#"{"max":1.5}"#);
        assert!(m.contains("from 1 to 1000"), "{m}");
        assert!(!super::is_public("/v1/sessions"));
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
                    .filter(|k| *k != "parameters")
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let mut routed: BTreeSet<(String, String)> = super::routes()
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
        // Every GET answers HEAD too; openapi.json documents the HEADs that matter.
        let heads: Vec<(String, String)> = routed
            .iter()
            .filter(|(m, _)| m == "get")
            .map(|(_, p)| ("head".to_owned(), p.clone()))
            .collect();
        routed.extend(heads.iter().filter(|h| documented.contains(h)).cloned());
        assert!(routed.len() > 25, "{routed:?}");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let missing: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            missing.is_empty(),
            "openapi.json documents routes that do not exist: {missing:?}"
        );
    }

    /// What OpenAPI 3.0 requires of a schema that herd's document could get wrong by hand:
    /// `required` lists are non-empty and name declared properties, and every `$ref` resolves.
    #[test]
    fn openapi_document_is_well_formed() {
        fn walk(v: &serde_json::Value, doc: &serde_json::Value, at: &str, refs: &mut usize) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(req) = map.get("required").and_then(|r| r.as_array()) {
                        assert!(!req.is_empty(), "{at}: empty required list");
                        if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
                            for name in req {
                                let name = name.as_str().unwrap();
                                assert!(
                                    props.contains_key(name),
                                    "{at}: required {name} is not a property"
                                );
                            }
                        }
                    }
                    if let Some(r) = map.get("$ref").and_then(|r| r.as_str()) {
                        let target = r.strip_prefix('#').unwrap();
                        assert!(doc.pointer(target).is_some(), "{at}: {r} does not resolve");
                        *refs += 1;
                    }
                    for (k, child) in map {
                        walk(child, doc, &format!("{at}/{k}"), refs);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(child, doc, &format!("{at}/{i}"), refs);
                    }
                }
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        let mut refs = 0;
        walk(&doc, &doc, "", &mut refs);
        assert!(refs > 50, "{refs}");
    }
}
