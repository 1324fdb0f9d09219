//! Data-plane settings of `[gateway]` (and their per-app / per-route overrides): client idle and
//! total timeouts, retries and the retry budget, the per-instance circuit breaker, the 503 error
//! page, response compression, the access log and the gateway thread count.

use std::path::PathBuf;
use std::time::Duration;

/// The data-plane keys of `[gateway]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPlane {
    /// `idle_timeout`, default 75s (nginx `keepalive_timeout`): a client connection with no
    /// request in flight and no byte received for this long is closed.
    pub idle_timeout: Duration,
    /// `idle_release`, default 50ms, `"off"` to keep them: an HTTP/1 keep-alive connection (plain
    /// TCP) that has waited this long for its next request gives back its per-connection HTTP
    /// buffers and state and waits on the bare socket, as nginx does on a keep-alive connection.
    pub idle_release: Option<Duration>,
    /// `total_timeout`, default off: the whole exchange, response body included, must finish
    /// within this; before the response head the client gets 504, after it the stream is cut.
    pub total_timeout: Option<Duration>,
    /// `retries`, default 3 (HAProxy `retries`): attempts after the first for a request that
    /// reached a backend. Connect failures move on regardless (the request was never sent).
    pub retries: u32,
    /// `retry_on`, default `["connect-failure", "reset"]` (HAProxy `retry-on` names; the default
    /// is nginx's `proxy_next_upstream error`: an idempotent request whose connection broke is
    /// sent to another instance, so an instance that dies mid-request costs the client nothing).
    pub retry_on: RetryOn,
    /// `retry_budget`, default 0.2: retries may add at most this fraction of the app's requests
    /// over a 10 s window, plus `retry_budget_min_per_s` (Finagle's `RetryBudget`).
    pub retry_budget: f64,
    /// `retry_budget_min_per_s`, default 10 (Finagle's and linkerd's `minRetriesPerSecond`):
    /// retries allowed per second on top of the ratio, so a quiet app can still retry. `0`
    /// makes `retry_budget` a strict cap at every request rate.
    pub retry_budget_min_per_s: u32,
    /// `circuit_*`: the per-instance circuit breaker.
    pub circuit: Circuit,
    /// `error_page_503`: the body answered when no instance can serve (apps may override).
    pub error_page_503: Option<ErrorPage>,
    /// `compress`, `compress_types`, `compress_min_size`.
    pub compress: Compress,
    /// `access_log` / `access_log_format`; `None` = no access log.
    pub access_log: Option<AccessLog>,
    /// `threads`, default: one per core. Gateway threads (shards, each with its own runtime and
    /// listening socket); the control plane's runtime gets as many worker threads.
    pub threads: Option<usize>,
}

/// `retry_on`: which outcomes of a request that reached a backend are retried (idempotent,
/// bodiless requests only). A connect failure is always retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// `"502"`, `"503"`, `"504"`: the backend answered with this status.
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
    /// `"reset"`: the connection broke before a response head arrived.
    pub reset: bool,
    /// `"timeout"`: no response head within `response_timeout`.
    pub timeout: bool,
}

impl Default for RetryOn {
    /// `["connect-failure", "reset"]`.
    fn default() -> Self {
        RetryOn {
            reset: true,
            ..RetryOn::none()
        }
    }
}

impl RetryOn {
    /// `["connect-failure"]` alone: nothing that reached a backend is retried.
    #[must_use]
    pub fn none() -> Self {
        RetryOn {
            status_502: false,
            status_503: false,
            status_504: false,
            reset: false,
            timeout: false,
        }
    }

    /// Whether a backend answer with `status` is retried.
    #[must_use]
    pub fn status(&self, status: u16) -> bool {
        match status {
            502 => self.status_502,
            503 => self.status_503,
            504 => self.status_504,
            _ => false,
        }
    }
}

/// `circuit_*` in `[gateway]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circuit {
    /// `circuit_consecutive`, default 5; 0 = this trigger off.
    pub consecutive: u32,
    /// `circuit_error_rate`, default 0.5; 0 = this trigger off.
    pub error_rate: f64,
    /// `circuit_min_requests`, default 20.
    pub min_requests: u32,
    /// `circuit_window`, default 10s: the error rate's counting window.
    pub window: Duration,
    /// `circuit_open`, default 10s.
    pub open: Duration,
    /// `circuit_half_open`, default 1: probes admitted at once while half-open.
    pub half_open: u32,
}

/// A page read at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    /// The file, resolved against the config file's directory.
    pub path: PathBuf,
    pub body: Vec<u8>,
    /// From the extension: `.html`, `.json`, `.txt`, `.xml`.
    pub content_type: String,
}

/// `compress*` in `[gateway]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// `compress`, default false (routes may turn it on or off).
    pub enabled: bool,
    /// `compress_types`: media types (`text/*` matches any text type), lowercased.
    pub types: Vec<String>,
    /// `compress_min_size`, default 1KiB: responses with a smaller `Content-Length` stay as is.
    pub min_size: u64,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `"stdout"`.
    Stdout,
    /// A file path (appended to), relative to the config file's directory.
    File(PathBuf),
}

/// `access_log = "stdout" | "path"`, `access_log_format = "json"` (the only format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub target: AccessLogTarget,
}

/// `protocol` of an `[[app]]`: how herd talks to its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `"http1"` (default): a keep-alive pool of HTTP/1.1 connections per instance.
    #[default]
    Http1,
    /// `"h2c"`: one multiplexed HTTP/2 connection (prior knowledge, no TLS) per instance.
    H2c,
}

/// The data-plane overrides of a `[[route]]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteDataPlane {
    /// `retry_on`: replaces the gateway's.
    pub retry_on: Option<RetryOn>,
    /// `total_timeout`: replaces the gateway's; `Some(None)` (`"off"`) turns it off for the
    /// route, `None` keeps the gateway's.
    pub total_timeout: Option<Option<Duration>>,
    /// `compress`: replaces the gateway's `compress`.
    pub compress: Option<bool>,
}

pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
pub(crate) const IDLE_RELEASE: Duration = Duration::from_millis(50);
pub(crate) const RETRIES: u32 = 3;
pub(crate) const RETRY_BUDGET: f64 = 0.2;
pub(crate) const RETRY_BUDGET_MIN_PER_S: u32 = 10;
pub(crate) const COMPRESS_MIN_SIZE: u64 = 1024;
pub(crate) const COMPRESS_TYPES: [&str; 5] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
];

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            consecutive: 5,
            error_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open: Duration::from_secs(10),
            half_open: 1,
        }
    }
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            enabled: false,
            types: COMPRESS_TYPES.iter().map(|&t| t.to_owned()).collect(),
            min_size: COMPRESS_MIN_SIZE,
        }
    }
}

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane {
            idle_timeout: IDLE_TIMEOUT,
            idle_release: Some(IDLE_RELEASE),
            total_timeout: None,
            retries: RETRIES,
            retry_on: RetryOn::default(),
            retry_budget: RETRY_BUDGET,
            retry_budget_min_per_s: RETRY_BUDGET_MIN_PER_S,
            circuit: Circuit::default(),
            error_page_503: None,
            compress: Compress::default(),
            access_log: None,
            threads: None,
        }
    }
}
