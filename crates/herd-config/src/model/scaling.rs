//! `[app.scaling]`: the autoscaling policy of one app, as validated. `herd-scaler` runs it.
//!
//! Names and defaults follow Kubernetes HPA v2 (`tolerance`, `scale_up`/`scale_down` windows and
//! steps), Knative KPA (`panic`, `idle_to_zero`) and AWS Auto Scaling (`warmup`, cooldowns,
//! scheduled and predictive scaling); `docs/config.md` has the reference.

use std::fmt;
use std::time::Duration;

pub use crate::cron::Cron;

/// `[app.scaling]`: absent means the app is not autoscaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// `min`, default 1. `0` allows scaling to zero after `idle_to_zero` without traffic.
    pub min: u32,
    /// `max`, default 10, at least 1 and at least `min`.
    pub max: u32,
    /// `target`: one entry per metric; the largest recommendation wins (HPA). Defaults to
    /// `{ concurrency = 10 }` unless rules are given; empty when only rules drive scaling.
    pub targets: Vec<MetricTarget>,
    /// `interval`, default 1s: how often the engine decides.
    pub interval: Duration,
    /// `tolerance`, default 0.1 (HPA): no change while |usage ratio − 1| ≤ tolerance.
    pub tolerance: f64,
    /// `scale_up`, default window 0s, max_step 100%.
    pub scale_up: Behavior,
    /// `scale_down`, default window 300s, max_step 100%.
    pub scale_down: Behavior,
    /// `warmup`, default `"auto"`.
    pub warmup: Warmup,
    /// `panic`, default `{ window = "6s", threshold = 2.0, stable_window = "6s" }`; `false` turns it off.
    pub panic: Option<Panic>,
    /// `idle_to_zero`, default 5m: with `min = 0`, how long without traffic before scaling to zero.
    pub idle_to_zero: Duration,
    /// `hold_timeout`, default 30s: with `min = 0`, how long the gateway holds a request while
    /// the first instance starts (then 503).
    pub hold_timeout: Duration,
    /// `hold_queue`, default 1000: requests held at most while scaled to zero (more get 503).
    pub hold_queue: usize,
    /// `[[app.scaling.rule]]`: threshold rules with cooldowns, in file order.
    pub rules: Vec<Rule>,
    /// `[[app.scaling.schedule]]`: cron entries raising the bounds, in file order.
    pub schedules: Vec<Schedule>,
    /// `predictive`: absent means no forecasting.
    pub predictive: Option<Predictive>,
    /// `cost_per_hour`, default 0: price of one instance-hour, used by `herd simulate`.
    pub cost_per_hour: f64,
}

/// A metric the scaler can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// In-flight requests per instance, plus requests the gateway holds for the app.
    Concurrency,
    /// Requests per second per instance.
    Rps,
    /// CPU per instance, in percent of one core.
    Cpu,
    /// Resident memory per instance, in bytes.
    Memory,
    /// Resident memory per instance, in percent of its `max_memory`.
    MemoryPercent,
    /// 95th percentile latency, in milliseconds.
    LatencyP95,
    /// Requests waiting in the gateway for an instance, per instance.
    QueueDepth,
    /// Failed responses as a fraction of all responses (0.01 = 1 %).
    ErrorRate,
}

impl Metric {
    /// Every metric, in the order recommendations are reported.
    pub const ALL: [Metric; 8] = [
        Metric::Concurrency,
        Metric::Rps,
        Metric::Cpu,
        Metric::Memory,
        Metric::MemoryPercent,
        Metric::LatencyP95,
        Metric::QueueDepth,
        Metric::ErrorRate,
    ];

    /// The names accepted in `target` and `rule.metric`.
    pub const NAMES: [&'static str; 7] = [
        "concurrency",
        "rps",
        "cpu",
        "memory",
        "latency_p95",
        "queue_depth",
        "error_rate",
    ];

    /// The key as written in the config (`memory` for both memory forms).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Metric::Concurrency => "concurrency",
            Metric::Rps => "rps",
            Metric::Cpu => "cpu",
            Metric::Memory | Metric::MemoryPercent => "memory",
            Metric::LatencyP95 => "latency_p95",
            Metric::QueueDepth => "queue_depth",
            Metric::ErrorRate => "error_rate",
        }
    }

    /// Load metrics add up over instances: the recommendation is `ceil(total / target)` and
    /// instances that are starting or warming up do not dilute it. The others are averaged over
    /// measured instances, HPA-style.
    #[must_use]
    pub fn is_total(self) -> bool {
        matches!(self, Metric::Concurrency | Metric::Rps | Metric::QueueDepth)
    }

    /// Formats a value of this metric with its unit, e.g. `70%`, `200ms`, `512MiB`.
    #[must_use]
    pub fn format(self, value: f64) -> String {
        match self {
            Metric::Cpu | Metric::MemoryPercent => format!("{}%", round2(value)),
            Metric::Memory => format!("{}MiB", round2(value / 1_048_576.0)),
            Metric::LatencyP95 => format!("{}ms", round2(value)),
            Metric::ErrorRate => format!("{}%", round2(value * 100.0)),
            Metric::Concurrency | Metric::Rps | Metric::QueueDepth => round2(value).to_string(),
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `target` entry: keep `metric` at `value` per instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricTarget {
    /// Which metric.
    pub metric: Metric,
    /// The target, in the metric's unit (see [`Metric`]); always > 0.
    pub value: f64,
}

/// `scale_up` / `scale_down`: HPA `behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// `window`: stabilization window. Scaling down uses the highest recommendation within it,
    /// scaling up the lowest.
    pub window: Duration,
    /// `max_step`: the most instances added/removed per `interval`; with several, the largest
    /// wins (HPA `selectPolicy: Max`).
    pub max_step: Vec<Step>,
}

impl Behavior {
    /// The most instances this behaviour lets change in one interval from `current` (at least 1).
    #[must_use]
    pub fn step_limit(&self, current: u32) -> u32 {
        self.max_step
            .iter()
            .map(|s| s.limit(current))
            .max()
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// One `max_step` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// `"4"` or `4`: that many instances.
    Instances(u32),
    /// `"100%"`: that share of the current count, rounded up.
    Percent(f64),
}

impl Step {
    /// Instances this step allows from `current`.
    #[must_use]
    pub fn limit(self, current: u32) -> u32 {
        match self {
            Step::Instances(n) => n,
            Step::Percent(p) => {
                let n = (f64::from(current) * p / 100.0).ceil();
                if n >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    // In range and non-negative: the cast is exact.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let n = n.max(0.0) as u32;
                    n
                }
            }
        }
    }
}

/// `warmup`: how long a new instance counts toward capacity but not toward metrics, during
/// which the app is not scaled in (AWS instance warmup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// `"auto"`: until the instance has been ready for one `interval` (its first full sample).
    Auto,
    /// A duration from the instance's start; `"0s"` turns warmup off.
    Fixed(Duration),
}

/// `panic`: Knative's panic mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panic {
    /// `window`, default 6s: the short window over which demand is averaged.
    pub window: Duration,
    /// `threshold`, default 2.0: panic when that demand is ≥ threshold × ready instances.
    pub threshold: f64,
    /// `stable_window`, default 6s (Knative: 60 s): panic ends after this long below the threshold.
    pub stable_window: Duration,
}

/// One `[[app.scaling.rule]]`: when `metric` stays above `above` (below `below`) for `sustain`,
/// add (remove) `step` instances, then wait `cooldown`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// `metric`, averaged per ready instance.
    pub metric: Metric,
    /// `above`: scale out over this value.
    pub above: Option<f64>,
    /// `below`: scale in under this value.
    pub below: Option<f64>,
    /// `for`, default 0s: how long the condition must hold.
    pub sustain: Duration,
    /// `step`, default 1.
    pub step: u32,
    /// `cooldown`, default 300s (AWS): after firing, this rule waits this long.
    pub cooldown: Duration,
}

/// One `[[app.scaling.schedule]]`: from each time `cron` fires (in `tz`), `min`/`max` are raised
/// for `duration`, or, without a duration, until another schedule without one fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// `cron`, five fields.
    pub cron: Cron,
    /// `tz`, default `"UTC"`: an IANA time zone name.
    pub tz: jiff::tz::TimeZone,
    /// The zone name as written.
    pub tz_name: String,
    /// `min`: the lower bound while active.
    pub min: Option<u32>,
    /// `max`: the upper bound while active (raises `max`, never lowers it below `min`).
    pub max: Option<u32>,
    /// `duration`: how long the entry stays active after each firing.
    pub duration: Option<Duration>,
}

/// `predictive`: seasonal forecasting from the engine's own history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predictive {
    /// `mode`: `"forecast_only"` reports, `"on"` acts.
    pub mode: PredictiveMode,
    /// `lead`, default `"auto"`: how far ahead the forecast acts.
    pub lead: Lead,
}

/// `predictive.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictiveMode {
    /// `"forecast_only"`: compute and report the forecast, never act on it.
    ForecastOnly,
    /// `"on"`: scale out ahead of forecast demand (never in).
    On,
}

/// `predictive.lead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// `"auto"`: the measured instance start time + 60 s.
    Auto,
    /// A fixed duration.
    Fixed(Duration),
}
