//! What the telemetry sampler (in herd-admin) records every second, per app. The dashboard
//! charts these, the alert rules evaluate them, `GET /health/performance` aggregates them.

use serde::Serialize;

/// One app at one moment (rates and quantiles over the last second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppSample {
    pub app: String,
    /// Requests answered per second (any status).
    pub rps: f64,
    /// 5xx answers / all answers, 0..=1; `None` without answers (no value, as Prometheus's
    /// `rate(5xx) / rate(all)` is then: an alert neither fires nor resolves on it).
    pub error_rate: Option<f64>,
    /// Response time quantiles in milliseconds (time to response head), `None` without traffic.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests in flight to the app's instances.
    pub in_flight: u64,
    pub ready: u32,
    pub desired: u32,
    /// Instances that exist (any state).
    pub instances: u32,
    /// Mean CPU of the app's instances, percent of one core.
    pub cpu_percent: f64,
    /// Mean RSS of the instances as a percentage of `max_memory` (`None` without a limit).
    pub memory_percent: Option<f64>,
    /// Sum of the instances' RSS.
    pub rss_bytes: u64,
}

impl AppSample {
    /// The value of a named metric, as alert rules and the dashboard refer to it.
    /// Names: `rps`, `error_rate`, `latency_p50`, `latency_p95`, `latency_p99` (seconds),
    /// `in_flight`, `ready`, `desired`, `instances`, `cpu` (percent), `memory` (percent of
    /// `max_memory`), `rss_bytes`.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "rps" => self.rps,
            "error_rate" => self.error_rate?,
            "latency_p50" => self.p50_ms? / 1000.0,
            "latency_p95" => self.p95_ms? / 1000.0,
            "latency_p99" => self.p99_ms? / 1000.0,
            "in_flight" => self.in_flight as f64,
            "ready" => f64::from(self.ready),
            "desired" => f64::from(self.desired),
            "instances" => f64::from(self.instances),
            "cpu" => self.cpu_percent,
            "memory" => self.memory_percent?,
            "rss_bytes" => self.rss_bytes as f64,
            _ => return None,
        })
    }

    /// Every metric name [`AppSample::metric`] knows.
    pub const METRICS: [&'static str; 12] = [
        "rps",
        "error_rate",
        "latency_p50",
        "latency_p95",
        "latency_p99",
        "in_flight",
        "ready",
        "desired",
        "instances",
        "cpu",
        "memory",
        "rss_bytes",
    ];
}

/// Every app at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    pub apps: Vec<AppSample>,
}
