//! The config file exactly as written: serde structs mirroring the TOML layout.
//!
//! Every table denies unknown keys, and every value keeps its byte span ([`Spanned`]) so that
//! validation errors can point at `file:line:col`. Values whose format herd parses itself
//! (durations, sizes, addresses, instances, port ranges, arrays of strings) are kept as
//! [`toml::Value`]: a wrong type then becomes a validation error with a hint, collected together
//! with all other errors, instead of a serde error that stops at the first problem.
//! Everything is optional here; required keys and defaults are handled in `validate`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A value herd parses itself, with its span.
pub(crate) type Val = Spanned<toml::Value>;
/// A string with its span.
pub(crate) type Str = Spanned<String>;
/// An integer with its span (range-checked during validation).
pub(crate) type Int = Spanned<i64>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) gateway: Option<RawGateway>,
    pub(crate) admin: Option<RawAdmin>,
    pub(crate) logs: Option<RawLogs>,
    #[serde(default)]
    pub(crate) app: Vec<Spanned<RawApp>>,
    #[serde(default)]
    pub(crate) route: Vec<Spanned<RawRoute>>,
    pub(crate) alerts: Option<Spanned<RawAlerts>>,
    #[serde(default)]
    pub(crate) alert: Vec<Spanned<RawAlert>>,
    #[serde(default)]
    pub(crate) rate_limit: Vec<Spanned<RawRateLimit>>,
    pub(crate) store: Option<RawStore>,
    pub(crate) services: Option<RawServices>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) backend: Option<Str>,
    pub(crate) path: Option<Str>,
    pub(crate) url: Option<Str>,
    pub(crate) cluster: Option<Val>,
    pub(crate) timeout: Option<Val>,
}

/// `[services]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServices {
    pub(crate) enabled: Option<Spanned<bool>>,
    pub(crate) listen: Option<Val>,
    pub(crate) token: Option<Str>,
    pub(crate) max_body_size: Option<Val>,
    pub(crate) session_ttl: Option<Val>,
    pub(crate) rolling_sessions: Option<Spanned<bool>>,
    pub(crate) session_touch_after: Option<Val>,
    pub(crate) cache: Option<BTreeMap<String, RawCacheStrategy>>,
    pub(crate) cache_memory: Option<Val>,
    pub(crate) job_lease: Option<Val>,
    pub(crate) max_stalled: Option<Int>,
    pub(crate) queue: Option<BTreeMap<String, RawQueue>>,
}

/// `[services.queue.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub(crate) rate: Option<Str>,
    pub(crate) concurrency: Option<Int>,
}

/// `[services.cache.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCacheStrategy {
    pub(crate) l1_ttl: Option<Val>,
    pub(crate) l2_ttl: Option<Val>,
    pub(crate) refresh_ahead: Option<Val>,
    pub(crate) grace: Option<Val>,
    pub(crate) l1_max_entries: Option<Int>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) listen: Option<Val>,
    pub(crate) connect_timeout: Option<Val>,
    pub(crate) response_timeout: Option<Val>,
    pub(crate) pool_idle_timeout: Option<Val>,
    pub(crate) pool_max_idle: Option<Int>,
    pub(crate) shutdown_timeout: Option<Val>,
    pub(crate) max_conn_per_ip: Option<Int>,
    pub(crate) client_header_timeout: Option<Val>,
    pub(crate) client_body_timeout: Option<Val>,
    pub(crate) max_connections: Option<Int>,
    pub(crate) max_header_size: Option<Val>,
    pub(crate) max_body_size: Option<Val>,
    pub(crate) security_headers: Option<Spanned<bool>>,
    pub(crate) merge_slashes: Option<Spanned<bool>>,
    pub(crate) max_headers: Option<Int>,
    pub(crate) proxy_protocol: Option<Spanned<bool>>,
    pub(crate) proxy_protocol_from: Option<Val>,
    pub(crate) tunnel_idle_timeout: Option<Val>,
    pub(crate) tls: Option<Spanned<RawTls>>,
    pub(crate) redirect_http: Option<Val>,
    // Data plane (validate/data_plane.rs).
    pub(crate) idle_timeout: Option<Val>,
    pub(crate) idle_release: Option<Val>,
    pub(crate) total_timeout: Option<Val>,
    pub(crate) retries: Option<Int>,
    pub(crate) retry_on: Option<Val>,
    pub(crate) retry_budget: Option<Val>,
    pub(crate) retry_budget_min_per_s: Option<Int>,
    pub(crate) circuit_consecutive: Option<Int>,
    pub(crate) circuit_error_rate: Option<Val>,
    pub(crate) circuit_min_requests: Option<Int>,
    pub(crate) circuit_window: Option<Val>,
    pub(crate) circuit_open: Option<Val>,
    pub(crate) circuit_half_open: Option<Int>,
    pub(crate) error_page_503: Option<Str>,
    pub(crate) compress: Option<Spanned<bool>>,
    pub(crate) compress_types: Option<Val>,
    pub(crate) compress_min_size: Option<Val>,
    pub(crate) access_log: Option<Str>,
    pub(crate) access_log_format: Option<Str>,
    pub(crate) threads: Option<Int>,
    pub(crate) sticky_secret: Option<Str>,
}

/// `[gateway.tls]`: the default certificate, and `[[gateway.tls.sni]]` entries chosen by SNI.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Option<Str>,
    pub(crate) key: Option<Str>,
    #[serde(default)]
    pub(crate) sni: Vec<Spanned<RawSni>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSni {
    pub(crate) host: Option<Str>,
    pub(crate) cert: Option<Str>,
    pub(crate) key: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<Val>,
    pub(crate) token: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogs {
    pub(crate) dir: Option<Str>,
    pub(crate) max_size: Option<Val>,
    pub(crate) max_files: Option<Int>,
    pub(crate) time: Option<Spanned<bool>>,
    pub(crate) date_format: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApp {
    pub(crate) name: Option<Str>,
    pub(crate) command: Option<Val>,
    pub(crate) servers: Option<Val>,
    pub(crate) cwd: Option<Str>,
    pub(crate) instances: Option<Val>,
    pub(crate) port_range: Option<Val>,
    pub(crate) balance: Option<Str>,
    pub(crate) hash_key: Option<Str>,
    pub(crate) hash_balance_factor: Option<Int>,
    pub(crate) env: Option<Spanned<BTreeMap<String, Val>>>,
    pub(crate) max_memory: Option<Val>,
    pub(crate) kill_timeout: Option<Val>,
    pub(crate) kill_signal: Option<Str>,
    pub(crate) drain_timeout: Option<Val>,
    pub(crate) ready_timeout: Option<Val>,
    pub(crate) min_uptime: Option<Val>,
    pub(crate) max_restarts: Option<Int>,
    pub(crate) restart_delay: Option<Val>,
    pub(crate) max_restart_delay: Option<Val>,
    pub(crate) worker: Option<Spanned<bool>>,
    pub(crate) max_fails: Option<Int>,
    pub(crate) fail_timeout: Option<Val>,
    pub(crate) health: Option<Spanned<RawHealth>>,
    pub(crate) scaling: Option<Spanned<RawScaling>>,
    pub(crate) protocol: Option<Str>,
    pub(crate) error_page_503: Option<Str>,
    // Load balancing beyond `balance` (validate/lb.rs).
    pub(crate) sticky: Option<Val>,
    pub(crate) weight: Option<Int>,
    pub(crate) max_conn: Option<Int>,
    pub(crate) queue: Option<Int>,
    pub(crate) queue_timeout: Option<Val>,
    pub(crate) slow_start: Option<Val>,
    pub(crate) observe: Option<Str>,
}

impl RawApp {
    /// The keys that only make sense when herd runs the app (`command`), with their spans.
    pub(crate) fn command_only_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut keys = Vec::new();
        let mut add = |name: &'static str, span: Option<std::ops::Range<usize>>| {
            if let Some(span) = span {
                keys.push((name, span));
            }
        };
        add("cwd", self.cwd.as_ref().map(Spanned::span));
        add("instances", self.instances.as_ref().map(Spanned::span));
        add("port_range", self.port_range.as_ref().map(Spanned::span));
        add("env", self.env.as_ref().map(Spanned::span));
        add("max_memory", self.max_memory.as_ref().map(Spanned::span));
        add(
            "kill_timeout",
            self.kill_timeout.as_ref().map(Spanned::span),
        );
        add("kill_signal", self.kill_signal.as_ref().map(Spanned::span));
        add(
            "drain_timeout",
            self.drain_timeout.as_ref().map(Spanned::span),
        );
        add(
            "ready_timeout",
            self.ready_timeout.as_ref().map(Spanned::span),
        );
        add("min_uptime", self.min_uptime.as_ref().map(Spanned::span));
        add(
            "max_restarts",
            self.max_restarts.as_ref().map(Spanned::span),
        );
        add(
            "restart_delay",
            self.restart_delay.as_ref().map(Spanned::span),
        );
        add(
            "max_restart_delay",
            self.max_restart_delay.as_ref().map(Spanned::span),
        );
        add("scaling", self.scaling.as_ref().map(Spanned::span));
        add("worker", self.worker.as_ref().map(Spanned::span));
        keys
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub(crate) path: Option<Str>,
    pub(crate) interval: Option<Val>,
    pub(crate) fastinter: Option<Val>,
    pub(crate) timeout: Option<Val>,
    pub(crate) rise: Option<Int>,
    pub(crate) fall: Option<Int>,
    pub(crate) downinter: Option<Val>,
    pub(crate) expect_status: Option<Val>,
}

/// `[app.scaling]`. `panic` is a table or `false`, so it is parsed by hand.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScaling {
    pub(crate) min: Option<Int>,
    pub(crate) max: Option<Int>,
    pub(crate) target: Option<Spanned<RawTarget>>,
    pub(crate) interval: Option<Val>,
    pub(crate) tolerance: Option<Val>,
    pub(crate) scale_up: Option<Spanned<RawBehavior>>,
    pub(crate) scale_down: Option<Spanned<RawBehavior>>,
    pub(crate) warmup: Option<Val>,
    pub(crate) panic: Option<Val>,
    pub(crate) idle_to_zero: Option<Val>,
    pub(crate) hold_timeout: Option<Val>,
    pub(crate) hold_queue: Option<Int>,
    pub(crate) predictive: Option<Spanned<RawPredictive>>,
    pub(crate) cost_per_hour: Option<Val>,
    #[serde(default)]
    pub(crate) rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(crate) schedule: Vec<Spanned<RawSchedule>>,
}

/// `target = { concurrency = 10, cpu = "70%" }`: values are parsed per metric.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub(crate) concurrency: Option<Val>,
    pub(crate) rps: Option<Val>,
    pub(crate) cpu: Option<Val>,
    pub(crate) memory: Option<Val>,
    pub(crate) latency_p95: Option<Val>,
    pub(crate) queue_depth: Option<Val>,
    pub(crate) error_rate: Option<Val>,
}

impl RawTarget {
    /// The metrics that are set, by name, in the documented order.
    pub(crate) fn entries(&self) -> Vec<(&'static str, &Val)> {
        [
            ("concurrency", &self.concurrency),
            ("rps", &self.rps),
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("latency_p95", &self.latency_p95),
            ("queue_depth", &self.queue_depth),
            ("error_rate", &self.error_rate),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBehavior {
    pub(crate) window: Option<Val>,
    pub(crate) max_step: Option<Val>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPredictive {
    pub(crate) mode: Option<Str>,
    pub(crate) lead: Option<Val>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) metric: Option<Str>,
    pub(crate) above: Option<Val>,
    pub(crate) below: Option<Val>,
    #[serde(rename = "for")]
    pub(crate) sustain: Option<Val>,
    pub(crate) step: Option<Int>,
    pub(crate) cooldown: Option<Val>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) cron: Option<Str>,
    pub(crate) tz: Option<Str>,
    pub(crate) min: Option<Int>,
    pub(crate) max: Option<Int>,
    pub(crate) duration: Option<Val>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Option<Str>,
    pub(crate) host: Option<Str>,
    pub(crate) path_prefix: Option<Str>,
    pub(crate) path: Option<Str>,
    pub(crate) path_regex: Option<Str>,
    pub(crate) methods: Option<Val>,
    pub(crate) header: Option<Spanned<RawHeaderMatch>>,
    pub(crate) websocket: Option<Spanned<bool>>,
    pub(crate) app: Option<Str>,
    pub(crate) request_headers: Option<Spanned<RawHeaderRewrite>>,
    pub(crate) response_headers: Option<Spanned<RawHeaderRewrite>>,
    pub(crate) strip_prefix: Option<Str>,
    pub(crate) response_timeout: Option<Val>,
    pub(crate) connect_timeout: Option<Val>,
    /// `true`, `false` or a count.
    pub(crate) retries: Option<Val>,
    pub(crate) retry_on: Option<Val>,
    pub(crate) total_timeout: Option<Val>,
    pub(crate) compress: Option<Spanned<bool>>,
    pub(crate) balance: Option<Str>,
    pub(crate) hash_key: Option<Str>,
    pub(crate) sticky: Option<Val>,
}

/// `header = { name = "X-Canary", value = "1" }` in a `[[route]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatch {
    pub(crate) name: Option<Str>,
    pub(crate) value: Option<Str>,
}

/// `request_headers` / `response_headers` in a `[[route]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRewrite {
    pub(crate) add: Option<BTreeMap<String, Val>>,
    pub(crate) remove: Option<Val>,
}

/// `[alerts]`: global alert settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub(crate) defaults: Option<Spanned<bool>>,
    pub(crate) webhooks: Option<Val>,
    pub(crate) webhook_timeout: Option<Val>,
    pub(crate) webhook_retries: Option<Int>,
}

/// One `[[alert]]`. Thresholds are parsed per metric (a duration for latencies, `"80%"`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    pub(crate) name: Option<Str>,
    pub(crate) metric: Option<Str>,
    pub(crate) app: Option<Str>,
    pub(crate) warning: Option<Val>,
    pub(crate) critical: Option<Val>,
    pub(crate) below: Option<Spanned<bool>>,
    #[serde(rename = "for")]
    pub(crate) sustain: Option<Val>,
    pub(crate) webhooks: Option<Val>,
}

/// One `[[rate_limit]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) name: Option<Str>,
    pub(crate) key: Option<Str>,
    pub(crate) rate: Option<Val>,
    pub(crate) burst: Option<Int>,
    pub(crate) nodelay: Option<Spanned<bool>>,
    pub(crate) delay: Option<Int>,
    pub(crate) app: Option<Str>,
    pub(crate) path_prefix: Option<Str>,
    pub(crate) route: Option<Str>,
    pub(crate) status: Option<Int>,
    pub(crate) shared: Option<Spanned<bool>>,
}

/// Parses TOML text into the raw structs, keeping the dotted key path of any error.
pub(crate) fn from_str(
    text: &str,
) -> Result<RawConfig, serde_path_to_error::Error<toml::de::Error>> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text))
}
