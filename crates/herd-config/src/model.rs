//! The validated, typed configuration that the rest of herd runs on.
//!
//! Every value here has passed validation: durations and sizes are parsed, defaults are filled in,
//! cross-references (routes → apps) are resolved. Runtime code never sees raw TOML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod alerts;
pub(crate) mod data_plane;
mod lb;
mod rate_limit;
mod scaling;
mod store;

pub use alerts::*;
pub use data_plane::*;
pub use lb::*;
pub use rate_limit::*;
pub use scaling::*;
pub use store::*;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[gateway]`.
    pub gateway: Gateway,
    /// `[admin]`.
    pub admin: Admin,
    /// Apps in file order; the first one receives traffic when no route is configured.
    pub apps: Vec<App>,
    /// Routes in file order; first match wins. Empty means "everything goes to the first app".
    pub routes: Vec<Route>,
    /// Directory for per-instance log files (`[logs] dir`, default `.herd/logs`).
    pub logs: Logs,
    /// `[alerts]` and `[[alert]]`: the alert rules in force and where notifications go.
    pub alerts: Alerts,
    /// `[[rate_limit]]` in file order; a request must pass every one that applies to it.
    pub rate_limits: Vec<RateLimit>,
    /// `[store]`: where shared state lives.
    pub store: Store,
    /// `[services]`: the services API for app instances.
    pub services: Services,
}

/// `[gateway]`: the public listener and how herd talks to backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// `listen`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `connect_timeout`, default 5s: TCP connect to a backend.
    pub connect_timeout: Duration,
    /// `response_timeout`, default 60s (nginx `proxy_read_timeout`): wait for a backend's response head.
    pub response_timeout: Duration,
    /// `pool_idle_timeout`, default 4s: kept below Node's 5s keep-alive so pooled connections do not race the close.
    pub pool_idle_timeout: Duration,
    /// `pool_max_idle`, default 32 (nginx `keepalive 32`): idle connections kept per instance.
    pub pool_max_idle: usize,
    /// `shutdown_timeout`, default 10s: how long herd waits for in-flight client requests on shutdown.
    pub shutdown_timeout: Duration,
    /// `max_conn_per_ip`, default 0 (unlimited): open client connections per client IP (nginx
    /// `limit_conn`); requests on connections over the limit get 503.
    pub max_conn_per_ip: u32,
    /// `client_header_timeout`, default 30s (hyper's default; nginx `client_header_timeout` is
    /// 60s): a client must send a whole HTTP/1 request head within this, or its connection is
    /// closed (slowloris).
    pub client_header_timeout: Duration,
    /// `client_body_timeout`, default 60s (nginx's name and default): the longest a client may
    /// pause between two reads of its request body; past it the request gets 408 and the
    /// instance is not blamed.
    pub client_body_timeout: Duration,
    /// `max_connections`, default 0 (unlimited): open client connections; when reached, herd
    /// stops accepting until one closes (new clients wait in the kernel's backlog).
    pub max_connections: usize,
    /// `max_header_size`, default 64KiB: largest request head (HTTP/1 request line + headers;
    /// HTTP/2 header list); over it the client gets 431.
    pub max_header_size: u64,
    /// `max_body_size`, default unlimited (nginx `client_max_body_size`): over it the client
    /// gets 413.
    pub max_body_size: Option<u64>,
    /// `proxy_protocol`, default false (HAProxy `accept-proxy`, nginx `listen ... proxy_protocol`):
    /// every connection to the gateway listener starts with a PROXY protocol header (v1 or v2)
    /// from the load balancer in front, whose client address herd then uses; a connection
    /// without one is closed.
    pub proxy_protocol: bool,
    /// `proxy_protocol_from`, default any: the balancers' addresses (CIDRs or single
    /// addresses) allowed to connect when `proxy_protocol` is on (nginx `set_real_ip_from`);
    /// connections from anywhere else are closed before their header is read.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// `security_headers`, default false: add `X-Content-Type-Options`, `X-Frame-Options` and
    /// `Referrer-Policy` to responses that lack them.
    pub security_headers: bool,
    /// `merge_slashes`, default true (nginx's): runs of `/` in a request path become one before
    /// routing, and the backend gets the merged path. Dot segments and escaped unreserved
    /// characters are normalised either way.
    pub merge_slashes: bool,
    /// `max_headers`, default 100 (HAProxy `tune.http.maxhdr` is 101): header fields in an
    /// HTTP/1 request (more: 431) and in a backend's response (more: 502).
    pub max_headers: usize,
    /// `tunnel_idle_timeout`, default 60s (nginx `proxy_read_timeout`): an upgraded connection
    /// (WebSocket or any `Upgrade`) that carries no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// `[gateway.tls]`: when set, the gateway listener speaks TLS only (HTTP/2 by ALPN `h2`, or
    /// HTTP/1.1).
    pub tls: Option<Tls>,
    /// `redirect_http`, default none: a plain-HTTP listener answering every request with 308 to
    /// `https://<host><path>`.
    pub redirect_http: Option<SocketAddr>,
    /// Timeouts, retries, circuit breaker, error page, compression, access log, threads.
    pub data_plane: DataPlane,
    /// `sticky_secret`: HMAC key of sticky-session cookies; `None` = random per herd process
    /// (several herd nodes behind one address need the same secret).
    pub sticky_secret: Option<String>,
}

/// `[gateway.tls]`. Paths are PEM files, relative to the config file's directory. The files are
/// read when the gateway starts and again on SIGHUP or when one of them changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// `cert`: the default certificate chain, used when no `sni` entry matches.
    pub cert: PathBuf,
    /// `key`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `[[gateway.tls.sni]]` entries: a certificate for one host name (lowercase; `*.` + a
    /// domain matches one label below it).
    pub sni: Vec<SniCert>,
}

/// `[[gateway.tls.sni]] host = "api.example.com", cert = "...", key = "..."`.
#[derive(Debug, Clone, PartialEq)]
pub struct SniCert {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`: the admin API (status, scaling, reload, logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// `listen`, default `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// `token`: required when `listen` is not a loopback address.
    pub token: Option<String>,
}

/// `[logs]`: per-instance stdout/stderr files and their rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Logs {
    /// `dir`, default `.herd/logs` (relative to the config file's directory, or the cwd in quick mode).
    pub dir: PathBuf,
    /// `max_size`, default 10MiB: a log file is rotated when it grows past this.
    pub max_size: u64,
    /// `max_files`, default 3: rotated files kept per stream (`web-1.out.log.1` .. `.3`).
    pub max_files: u32,
    /// The strftime format of the timestamp put before each line of instance output (`time =
    /// true`: RFC 3339 with milliseconds; `date_format`: any); `None` (the default): none.
    pub date_format: Option<String>,
}

/// How many instances an app wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// An explicit count (>= 1).
    Count(u32),
    /// `"max"`: one per CPU core.
    Max,
    /// `-1`: one per CPU core minus one (at least one), as PM2.
    MaxMinusOne,
}

impl Instances {
    /// Resolves to a concrete count given the number of CPU cores.
    #[must_use]
    pub fn resolve(self, cores: usize) -> u32 {
        let cores = u32::try_from(cores.max(1)).unwrap_or(u32::MAX);
        match self {
            Instances::Count(n) => n,
            Instances::Max => cores,
            Instances::MaxMinusOne => cores.saturating_sub(1).max(1),
        }
    }
}

/// `balance`: how requests are spread over an app's ready instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// `"round_robin"` (default): each instance in turn by weight (nginx's smooth weighted
    /// round robin).
    RoundRobin,
    /// `"least_conn"`: the instance with the fewest in-flight requests.
    LeastConn,
    /// `"random_two"`: two random instances, the one with fewer in-flight requests wins (P2C).
    RandomTwo,
    /// `"peak_ewma"`: P2C on latency EWMA × (in-flight + 1), decay 10 s (linkerd, Finagle).
    PeakEwma,
    /// `"ip_hash"`: consistent hash of the client IP, with bounded load.
    IpHash,
    /// `"hash"`: consistent hash of [`App::hash_key`], with bounded load.
    Hash,
    /// `"first"`: the first instance in order that is not skipped (HAProxy `first`).
    First,
}

/// `hash_key`: what `balance = "hash"` hashes. Requests without it fall back to round robin
/// (as HAProxy's `hdr()`/`url_param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `"header:X-User"`: the first value of that header (name stored lowercased).
    Header(String),
    /// `"cookie:session"`: that cookie's value.
    Cookie(String),
    /// `"query:user"`: that query parameter's raw (undecoded) value.
    Query(String),
    /// `"path"`: the request path.
    Path,
}

/// Where an app's backends come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Backends {
    /// herd starts and supervises the processes.
    Command(Command),
    /// Fixed servers herd does not start (`servers = ["10.0.0.5:80"]`); only health-checked.
    Servers(Vec<SocketAddr>),
}

/// A supervised app: how herd starts, restarts and stops its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `command`: program and arguments, never run through a shell.
    pub argv: Vec<String>,
    /// `cwd`, default: the config file's directory (cwd in quick mode).
    pub cwd: PathBuf,
    /// `env`: extra environment variables.
    pub env: BTreeMap<String, String>,
    /// `instances`, default 1.
    pub instances: Instances,
    /// `port_range`, default 20000-20999 (inclusive).
    pub port_range: (u16, u16),
    /// `max_memory`: RSS limit (bytes) of the instance's process group; over it, the instance is replaced.
    pub max_memory: Option<u64>,
    /// `kill_timeout`, default 5s: `kill_signal` → SIGKILL.
    pub kill_timeout: Duration,
    /// `kill_signal`, default SIGTERM: what a graceful stop sends the instance's process group
    /// (PM2 sends SIGINT; Docker's `STOPSIGNAL`, systemd's `KillSignal`).
    pub kill_signal: StopSignal,
    /// `drain_timeout`, default 30s: how long in-flight requests may take once an instance leaves rotation.
    pub drain_timeout: Duration,
    /// `ready_timeout`, default 30s: a starting instance that is not ready by then is restarted.
    pub ready_timeout: Duration,
    /// `min_uptime`, default 1s (PM2): an exit sooner counts as unstable.
    pub min_uptime: Duration,
    /// `max_restarts`, default 16 (PM2): consecutive unstable restarts before `errored`.
    pub max_restarts: u32,
    /// `restart_delay`, default 100ms (PM2 `exp_backoff_restart_delay`): first backoff, ×1.5 each time.
    pub restart_delay: Duration,
    /// `max_restart_delay`, default 15s: backoff cap.
    pub max_restart_delay: Duration,
    /// `worker`, default false: the instances serve no requests (queue consumers, scripts):
    /// no health checks, ready once started, never in the gateway's rotation.
    pub worker: bool,
}

/// `[app.health]`: active health checks (HAProxy-style `inter`/`fastinter`/`rise`/`fall`).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `path`: HTTP GET path; `None` means a TCP connect check.
    pub path: Option<String>,
    /// `interval`, default 2s (HAProxy `inter`).
    pub interval: Duration,
    /// `fastinter`, default 250ms: interval while an instance is starting or changing state.
    pub fastinter: Duration,
    /// `timeout`, default 1s.
    pub timeout: Duration,
    /// `rise`, default 2.
    pub rise: u32,
    /// `fall`, default 3.
    pub fall: u32,
    /// `downinter` (HAProxy): interval while an instance that was up is down; `None` = `interval` (HAProxy's default).
    pub downinter: Option<Duration>,
    /// `expect_status`, default `200-399`: inclusive status ranges an HTTP check accepts.
    pub expect_status: Vec<(u16, u16)>,
}

/// One `[[app]]`: a named group of backends behind the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// `name`: unique; lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// `command` (herd runs it) or `servers` (fixed addresses).
    pub backends: Backends,
    /// `balance`, default round robin.
    pub balance: Balance,
    /// `hash_key`: `Some` exactly when `balance` is [`Balance::Hash`].
    pub hash_key: Option<HashKey>,
    /// `hash_balance_factor`, default 125 (HAProxy `hash-balance-factor`): with `hash` and
    /// `ip_hash`, no instance takes more than ceil(factor/100 × mean in-flight); 0 = unbounded.
    pub hash_balance_factor: u32,
    /// `[app.health]`; defaults to a TCP connect check.
    pub health: Health,
    /// `max_fails`, default 1 (nginx): failed attempts within `fail_timeout` that take an instance out passively.
    pub max_fails: u32,
    /// `fail_timeout`, default 10s (nginx).
    pub fail_timeout: Duration,
    /// `[app.scaling]`; `None` (the default) means a fixed instance count.
    pub scaling: Option<Scaling>,
    /// `protocol`, default `"http1"`.
    pub protocol: Protocol,
    /// `error_page_503`: overrides `[gateway] error_page_503` for this app.
    pub error_page_503: Option<ErrorPage>,
    /// Sticky sessions, weights, backups, `max_conn` and its queue, slow start, `observe`.
    pub lb: LoadBalancing,
}

impl App {
    /// A supervised app whose instances serve no requests (`worker = true`).
    #[must_use]
    pub fn is_worker(&self) -> bool {
        matches!(&self.backends, Backends::Command(c) if c.worker)
    }
}

/// One `[[route]]`: requests that pass every matcher set (host, path, method, header,
/// WebSocket) go to `app`, with the route's overrides. Unset matchers match everything.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `name`: the route's statistics label; `None` = `route<N>` (N = position in the file).
    pub name: Option<String>,
    /// Host match (port ignored), case-insensitive; stored lowercased. Either exact
    /// (`api.example.com`) or a wildcard on one leading label (`*.example.com`, which matches
    /// `a.example.com` but neither `example.com` nor `a.b.example.com`).
    pub host: Option<String>,
    /// The request path starts with this (always begins with `/`).
    pub path_prefix: Option<String>,
    /// The request path equals this (no query; always begins with `/`).
    pub path: Option<String>,
    /// A regular expression (Rust `regex` syntax) searched in the request path (not the query):
    /// unanchored unless written with `^`/`$`, as nginx `location ~`. Validated at load.
    pub path_regex: Option<String>,
    /// `methods`: uppercase method names; empty = any method.
    pub methods: Vec<String>,
    /// `header = { name, value }`: the request carries this header (with exactly this value).
    pub header: Option<HeaderMatch>,
    /// `websocket = true`: only WebSocket upgrade requests (`Upgrade: websocket`); `false`
    /// (default) matches any request.
    pub websocket: bool,
    /// Index into `Config::apps`.
    pub app: usize,
    /// `request_headers`: set or removed on the request sent upstream.
    pub request_headers: HeaderRewrite,
    /// `response_headers`: set or removed on the backend's response.
    pub response_headers: HeaderRewrite,
    /// `strip_prefix`: removed from the front of the path sent upstream (at a `/` boundary);
    /// the query is kept.
    pub strip_prefix: Option<String>,
    /// `response_timeout`: overrides `[gateway] response_timeout` for this route.
    pub response_timeout: Option<Duration>,
    /// `connect_timeout`: overrides `[gateway] connect_timeout` for this route's new backend
    /// connections.
    pub connect_timeout: Option<Duration>,
    /// `retries`: a count, or `true` (the gateway's count, the default) / `false` (0). With 0 a
    /// request that reached a backend is not sent again (connect failures still move on).
    pub retries: Option<u32>,
    /// `retry_on`, `total_timeout`, `compress` overrides.
    pub data_plane: RouteDataPlane,
    /// `balance`/`hash_key`/`sticky` overriding the app's for this route.
    pub overrides: RouteBalance,
}

impl Default for Route {
    /// Matches everything, sends to app 0, changes nothing (the gateway's retries).
    fn default() -> Self {
        Route {
            name: None,
            host: None,
            path_prefix: None,
            path: None,
            path_regex: None,
            methods: Vec::new(),
            header: None,
            websocket: false,
            app: 0,
            request_headers: HeaderRewrite::default(),
            response_headers: HeaderRewrite::default(),
            strip_prefix: None,
            response_timeout: None,
            connect_timeout: None,
            retries: None,
            data_plane: RouteDataPlane::default(),
            overrides: RouteBalance::default(),
        }
    }
}

/// `header = { name = "X-Canary", value = "1" }` in a `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, lowercased.
    pub name: String,
    /// Exact (case-sensitive) value of one of the header's fields; `None` = present at all.
    pub value: Option<String>,
}

/// `request_headers` / `response_headers = { add = { "X-From" = "herd" }, remove = ["X-Debug"] }`.
/// Removals happen first; `add` replaces any field of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRewrite {
    /// Name (lowercased) and value pairs, sorted by name.
    pub add: Vec<(String, String)>,
    /// Names, lowercased.
    pub remove: Vec<String>,
}

impl HeaderRewrite {
    /// Whether this rewrite changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The signal a graceful stop sends (`kill_signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopSignal {
    #[default]
    Term,
    Int,
    Quit,
    Hup,
    Usr1,
    Usr2,
}

impl StopSignal {
    /// Every one, with its name.
    pub const ALL: [(StopSignal, &'static str); 6] = [
        (StopSignal::Term, "SIGTERM"),
        (StopSignal::Int, "SIGINT"),
        (StopSignal::Quit, "SIGQUIT"),
        (StopSignal::Hup, "SIGHUP"),
        (StopSignal::Usr1, "SIGUSR1"),
        (StopSignal::Usr2, "SIGUSR2"),
    ];

    /// `SIGTERM`, `SIGINT`, …
    #[must_use]
    pub fn name(self) -> &'static str {
        StopSignal::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("SIGTERM", |(_, n)| n)
    }
}
