//! What the engine returns: the desired count, the input that decided it, and one sentence
//! saying so. Everything here serializes to JSON for the admin API.

use serde::Serialize;

use herd_config::Metric;

/// Which way a limit or window acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Adding instances.
    Up,
    /// Removing instances.
    Down,
}

/// The input that decided the desired count.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A target metric is out of tolerance; `recommended` instances bring it back.
    Metric {
        /// `concurrency`, `cpu`, ...
        metric: String,
        /// Observed value per instance.
        value: f64,
        /// The target per instance.
        target: f64,
        /// What this metric asks for.
        recommended: u32,
    },
    /// Every metric is within tolerance of its target (or asks for the current count).
    Stable {
        /// The metric with the highest recommendation, if any.
        metric: Option<String>,
    },
    /// No target metric could be computed this tick (no ready instance reports it).
    NoMetrics,
    /// A stabilization window held the count (`scale_down.window`: a higher recommendation
    /// within it; `scale_up.window`: a lower one).
    Window {
        /// Which window.
        direction: Direction,
        /// Its length.
        window_s: f64,
        /// What the metrics asked for this tick.
        recommended: u32,
    },
    /// The forecast asks for more than the metrics (predictive `mode = "on"`). It only ever
    /// raises the count: when the count still goes down, the forecast held it up.
    Forecast {
        /// Forecast demand in instances over the lead time.
        demand: f64,
        /// How far ahead.
        lead_s: f64,
        /// What the metrics asked for.
        recommended: u32,
    },
    /// A threshold rule fired (or its `above` threshold holds back a scale-in).
    Rule {
        /// Index in `[[app.scaling.rule]]`.
        index: usize,
        /// The rule's metric.
        metric: String,
        /// Its current value per instance.
        value: f64,
        /// The threshold crossed.
        threshold: f64,
        /// `up` for `above`, `down` for `below`.
        direction: Direction,
    },
    /// A scale-in stopped short so that a rule's `above` would not fire right back: at the
    /// count asked for, the rule's metric would be over its threshold.
    RuleHoldBack {
        /// Index in `[[app.scaling.rule]]`.
        index: usize,
        /// The rule's metric.
        metric: String,
        /// The count the other inputs asked for.
        asked: u32,
        /// The metric per instance at that count.
        would_be: f64,
        /// The rule's `above`.
        threshold: f64,
    },
    /// Knative panic mode: the short-window demand is ≥ threshold × ready instances.
    Panic {
        /// Demand in instances over the panic window.
        demand: f64,
        /// Ready instances.
        ready: u32,
        /// `panic.threshold`.
        threshold: f64,
    },
    /// Instances are warming up: no scale-in until they are done.
    Warmup {
        /// How many.
        warming: u32,
        /// What the count would otherwise have been.
        recommended: u32,
    },
    /// `max_step` limited the change.
    StepLimit {
        /// Which behaviour.
        direction: Direction,
        /// Most instances per interval.
        limit: u32,
        /// What was asked for.
        recommended: u32,
    },
    /// `min`/`max` clamped the count.
    Bounds {
        /// In force.
        min: u32,
        /// In force.
        max: u32,
        /// What was asked for.
        recommended: u32,
    },
    /// A schedule raised the bounds and they decided the count.
    Schedule {
        /// Index in `[[app.scaling.schedule]]`.
        index: usize,
        /// Its cron expression.
        cron: String,
        /// Lower bound in force.
        min: u32,
        /// Upper bound in force.
        max: u32,
    },
    /// No traffic for `idle_to_zero` with `min = 0`, or not yet (one instance is kept).
    IdleToZero {
        /// Time without traffic.
        idle_s: f64,
        /// `idle_to_zero`.
        after_s: f64,
    },
    /// Traffic arrived while no instance runs.
    ScaleFromZero {
        /// Requests the gateway holds.
        queue_depth: f64,
    },
    /// An operator's override.
    Manual {
        /// The count asked for (before clamping to bounds).
        instances: u32,
        /// Their reason.
        reason: String,
    },
    /// Autoscaling is paused: the count stays as it is.
    Paused,
}

/// One target metric's view of this tick. Serialized with `value`, `demand` and `ratio` as
/// `null` when no instance reports the metric (`recommended` is `None`): a 0 would read as a
/// measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecommendation {
    /// `concurrency`, `rps`, `cpu`, `memory`, `latency_p95`, `queue_depth`, `error_rate`.
    pub metric: String,
    /// Observed value per instance (total ÷ ready instances for load metrics; the average over
    /// measured instances for the others).
    pub value: f64,
    /// The target per instance.
    pub target: f64,
    /// Demand in instances: what would put the metric exactly on target.
    pub demand: f64,
    /// `demand / current` (1.0 = on target).
    pub ratio: f64,
    /// The count this metric asks for; `None` when no instance reports it.
    pub recommended: Option<u32>,
}

impl Serialize for MetricRecommendation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let measured = self.recommended.is_some();
        let shown = |v: f64| measured.then_some(v);
        let mut st = s.serialize_struct("MetricRecommendation", 6)?;
        st.serialize_field("metric", &self.metric)?;
        st.serialize_field("value", &shown(self.value))?;
        st.serialize_field("target", &self.target)?;
        st.serialize_field("demand", &shown(self.demand))?;
        st.serialize_field("ratio", &shown(self.ratio))?;
        st.serialize_field("recommended", &self.recommended)?;
        st.end()
    }
}

impl MetricRecommendation {
    pub(crate) fn missing(metric: Metric, target: f64) -> Self {
        MetricRecommendation {
            metric: metric.name().to_owned(),
            value: 0.0,
            target,
            demand: 0.0,
            ratio: 0.0,
            recommended: None,
        }
    }
}

/// The forecast, when `predictive` is configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastReport {
    /// `forecast_only` or `on`.
    pub mode: &'static str,
    /// How far ahead it looks.
    pub lead_s: f64,
    /// Forecast demand in instances (max over the lead time); `None` until a day of history.
    pub demand: Option<f64>,
    /// Seasonal-naive part (median of the same 5 minutes last week, or yesterday, scaled by
    /// the last 30 minutes against then).
    pub seasonal_naive: Option<f64>,
    /// Holt-Winters part (additive, daily season).
    pub holt_winters: Option<f64>,
    /// Minutes of history held.
    pub history_minutes: usize,
    /// Whether the forecast raised the recommendation this tick (later stages such as
    /// `max_step` may still limit it).
    pub acting: bool,
}

/// Bounds in force this tick (schedules included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Lower bound.
    pub min: u32,
    /// Upper bound.
    pub max: u32,
}

/// The result of one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Instances the app should have.
    pub desired: u32,
    /// Instances it has (starting ones included).
    pub current: u32,
    /// `desired != current`.
    pub changed: bool,
    /// The input that decided `desired`.
    pub reason: Reason,
    /// One sentence: which input won and why.
    pub explanation: String,
    /// Each target metric's recommendation.
    pub per_metric: Vec<MetricRecommendation>,
    /// In panic mode.
    pub panic: bool,
    /// Instances warming up (starting, or ready for less than the warmup).
    pub warming: u32,
    /// Bounds in force.
    pub bounds: Bounds,
    /// The forecast, when predictive scaling is configured.
    pub forecast: Option<ForecastReport>,
    /// When `desired < current`: the instances to stop, idlest first (not ready, then fewest
    /// in flight, then youngest).
    pub scale_in_candidates: Vec<String>,
}

/// Formats a float for explanations: at most two decimals, no trailing zeros.
pub(crate) fn num(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    if r == r.trunc() && r.abs() < 1e15 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

impl Reason {
    /// The variant's name as in its JSON `kind` field, e.g. `"step_limit"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Metric { .. } => "metric",
            Reason::Stable { .. } => "stable",
            Reason::NoMetrics => "no_metrics",
            Reason::Window { .. } => "window",
            Reason::Forecast { .. } => "forecast",
            Reason::Rule { .. } => "rule",
            Reason::RuleHoldBack { .. } => "rule_hold_back",
            Reason::Panic { .. } => "panic",
            Reason::Warmup { .. } => "warmup",
            Reason::StepLimit { .. } => "step_limit",
            Reason::Bounds { .. } => "bounds",
            Reason::Schedule { .. } => "schedule",
            Reason::IdleToZero { .. } => "idle_to_zero",
            Reason::ScaleFromZero { .. } => "scale_from_zero",
            Reason::Manual { .. } => "manual",
            Reason::Paused => "paused",
        }
    }

    /// The sentence for a decision from `current` to `desired`.
    pub(crate) fn explain(&self, current: u32, desired: u32) -> String {
        let head = if desired == current {
            format!("keep {current}")
        } else {
            format!("scale {current} → {desired}")
        };
        let why = match self {
            Reason::Metric {
                metric,
                value,
                target,
                recommended,
            } => format!(
                "{metric} is {} per instance against a target of {}, which asks for {recommended}",
                num(*value),
                num(*target)
            ),
            Reason::Stable { metric: Some(m) } => {
                format!("every metric is within tolerance of its target (highest: {m})")
            }
            Reason::Stable { metric: None } => "nothing asks for a change".to_owned(),
            Reason::NoMetrics => {
                "no ready instance reports the target metrics yet, so nothing changes".to_owned()
            }
            Reason::Window {
                direction: Direction::Down,
                window_s,
                recommended,
            } => format!(
                "metrics ask for {recommended}, but the scale_down window keeps the highest recommendation of the last {}s, {desired}",
                num(*window_s)
            ),
            Reason::Window {
                direction: Direction::Up,
                window_s,
                recommended,
            } => format!(
                "metrics ask for {recommended}, but the scale_up window keeps the lowest recommendation of the last {}s, {desired}",
                num(*window_s)
            ),
            Reason::Forecast {
                demand,
                lead_s,
                recommended,
            } if desired < current => format!(
                "metrics ask for {recommended}, and the forecast of {} instances of demand within the next {}s keeps {desired}",
                num(*demand),
                num(*lead_s)
            ),
            Reason::Forecast {
                demand,
                lead_s,
                recommended,
            } => format!(
                "the forecast expects {} instances of demand within the next {}s (metrics ask for {recommended})",
                num(*demand),
                num(*lead_s)
            ),
            Reason::Rule {
                index,
                metric,
                value,
                threshold,
                direction,
            } => match direction {
                Direction::Up => format!(
                    "rule {index}: {metric} is {} per instance, above {}",
                    num(*value),
                    num(*threshold)
                ),
                Direction::Down => format!(
                    "rule {index}: {metric} is {} per instance, below {}",
                    num(*value),
                    num(*threshold)
                ),
            },
            Reason::RuleHoldBack {
                index,
                metric,
                asked,
                would_be,
                threshold,
            } => format!(
                "metrics ask for {asked}, but at {asked} instances {metric} would be {} per instance, above rule {index}'s {}",
                num(*would_be),
                num(*threshold)
            ),
            Reason::Panic {
                demand,
                ready,
                threshold,
            } => format!(
                "panic mode: demand over the panic window ({} instances) reached {}× the {ready} ready; no scale-down until it stays below for the stable window",
                num(*demand),
                num(*threshold)
            ),
            Reason::Warmup {
                warming,
                recommended,
            } => format!(
                "metrics ask for {recommended}, but {warming} instance(s) are warming up and there is no scale-in meanwhile"
            ),
            Reason::StepLimit {
                direction,
                limit,
                recommended,
            } => {
                let which = match direction {
                    Direction::Up => "scale_up",
                    Direction::Down => "scale_down",
                };
                format!("{recommended} asked for, limited to {limit} per interval by {which}.max_step")
            }
            Reason::Bounds {
                min,
                max,
                recommended,
            } => format!("{recommended} asked for, clamped to the bounds {min}..={max}"),
            Reason::Schedule {
                index,
                cron,
                min,
                max,
            } => format!("schedule {index} (\"{cron}\") sets the bounds to {min}..={max}"),
            Reason::IdleToZero { idle_s, after_s } if idle_s >= after_s => format!(
                "no traffic for {}s (idle_to_zero is {}s)",
                num(*idle_s),
                num(*after_s)
            ),
            Reason::IdleToZero { idle_s, after_s } => format!(
                "no traffic for {}s; one instance stays until idle_to_zero ({}s)",
                num(*idle_s),
                num(*after_s)
            ),
            Reason::ScaleFromZero { queue_depth } => format!(
                "traffic arrived with no instance running ({} request(s) waiting)",
                num(*queue_depth)
            ),
            Reason::Manual { instances, reason } if *instances != desired => {
                format!("manual override to {instances}, held at {desired} by min/max: {reason}")
            }
            Reason::Manual { instances, reason } => {
                format!("manual override to {instances}: {reason}")
            }
            Reason::Paused => "autoscaling is paused".to_owned(),
        };
        format!("{head}: {why}")
    }
}
