//! Validation of `[app.scaling]`: bounds, targets, behaviours, warmup, panic, rules, schedules
//! and predictive scaling. Like the rest of validation, every problem is reported with its key
//! and a hint, and a default is used so that the other keys are still checked.

use std::ops::Range;
use std::time::Duration;

use toml::{Spanned, Value};

use super::values::fmt_duration;
use super::Validator;
use crate::defaults as d;
use crate::error::closest;
use crate::model::{
    Behavior, Lead, Metric, MetricTarget, Panic, Predictive, PredictiveMode, Rule, Scaling,
    Schedule, Step, Warmup,
};
use crate::raw::{RawBehavior, RawPredictive, RawRule, RawScaling, RawSchedule, Val};
use crate::units::{parse_duration, parse_size, DURATION_HINT};
use crate::Cron;

const METRIC_HINT: &str =
    "metrics: concurrency, rps, cpu, memory, latency_p95, queue_depth, error_rate";

impl Validator<'_> {
    /// `max_memory` is the app's, for `memory = "80%"`.
    pub(super) fn scaling(
        &mut self,
        p: &str,
        raw: &Spanned<RawScaling>,
        max_memory: Option<u64>,
    ) -> Scaling {
        let s = raw.get_ref();
        let min = self.u32(s.min.as_ref(), &format!("{p}.min"), d::SCALING_MIN, 0);
        let max_default = d::SCALING_MAX.max(min);
        let max = self.u32(s.max.as_ref(), &format!("{p}.max"), max_default, 1);
        if min > max {
            let span = s
                .max
                .as_ref()
                .or(s.min.as_ref())
                .map_or(0..0, Spanned::span);
            self.err(
                &span,
                &format!("{p}.max"),
                format!("max {max} is less than min {min}"),
                Some(format!("raise max to at least {min}, or lower min")),
            );
        }

        let mut targets = Vec::new();
        match &s.target {
            Some(t) => {
                let entries = t.get_ref().entries();
                if entries.is_empty() {
                    self.err(
                        &t.span(),
                        &format!("{p}.target"),
                        "target names no metric",
                        Some(format!(
                            "e.g. target = {{ concurrency = 10 }}; {METRIC_HINT}"
                        )),
                    );
                }
                for (name, v) in entries {
                    let key = format!("{p}.target.{name}");
                    if let Some((metric, value)) =
                        self.metric_value(name, v, &key, max_memory, false)
                    {
                        targets.push(MetricTarget { metric, value });
                    }
                }
            }
            None if s.rule.is_empty() => targets.push(d::SCALING_TARGET),
            None => {}
        }

        let interval = self.duration(
            s.interval.as_ref(),
            &format!("{p}.interval"),
            d::SCALING_INTERVAL,
            true,
        );
        let tolerance = match &s.tolerance {
            None => d::SCALING_TOLERANCE,
            Some(v) => match number(v.get_ref()) {
                Some(t) if (0.0..1.0).contains(&t) => t,
                _ => {
                    self.err(
                        &v.span(),
                        &format!("{p}.tolerance"),
                        format!(
                            "tolerance must be a number from 0 to below 1, got {}",
                            v.get_ref()
                        ),
                        Some(
                            "e.g. tolerance = 0.1 (no change while within 10 % of the target)"
                                .into(),
                        ),
                    );
                    d::SCALING_TOLERANCE
                }
            },
        };
        let scale_up = self.behavior(
            &format!("{p}.scale_up"),
            s.scale_up.as_ref(),
            d::SCALE_UP_WINDOW,
        );
        let scale_down = self.behavior(
            &format!("{p}.scale_down"),
            s.scale_down.as_ref(),
            d::SCALE_DOWN_WINDOW,
        );
        let warmup = self.warmup(&format!("{p}.warmup"), s.warmup.as_ref());
        let panic = self.panic(&format!("{p}.panic"), s.panic.as_ref());
        let idle_to_zero = self.duration(
            s.idle_to_zero.as_ref(),
            &format!("{p}.idle_to_zero"),
            d::IDLE_TO_ZERO,
            true,
        );
        let hold_timeout = self.duration(
            s.hold_timeout.as_ref(),
            &format!("{p}.hold_timeout"),
            d::HOLD_TIMEOUT,
            true,
        );
        let hold_queue = self.u32(
            s.hold_queue.as_ref(),
            &format!("{p}.hold_queue"),
            d::HOLD_QUEUE,
            1,
        ) as usize;
        let predictive = s
            .predictive
            .as_ref()
            .map(|pr| self.predictive(&format!("{p}.predictive"), pr.get_ref()));
        let cost_per_hour = match &s.cost_per_hour {
            None => 0.0,
            Some(v) => match number(v.get_ref()) {
                Some(c) if c >= 0.0 && c.is_finite() => c,
                _ => {
                    self.err(
                        &v.span(),
                        &format!("{p}.cost_per_hour"),
                        format!("cost_per_hour must be a number >= 0, got {}", v.get_ref()),
                        Some("the price of one instance-hour, e.g. cost_per_hour = 0.05".into()),
                    );
                    0.0
                }
            },
        };
        let rules = s
            .rule
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.rule(&format!("{p}.rule[{i}]"), r, max_memory))
            .collect();
        let schedules = s
            .schedule
            .iter()
            .enumerate()
            .filter_map(|(i, sc)| self.schedule(&format!("{p}.schedule[{i}]"), sc, max))
            .collect();

        Scaling {
            min,
            max: max.max(min),
            targets,
            interval,
            tolerance,
            scale_up,
            scale_down,
            warmup,
            panic,
            idle_to_zero,
            hold_timeout,
            hold_queue,
            rules,
            schedules,
            predictive,
            cost_per_hour,
        }
    }

    /// A target or rule threshold: the value's form picks the metric for `memory` (a size or a
    /// percentage of `max_memory`). `allow_zero` is for rule thresholds.
    fn metric_value(
        &mut self,
        name: &str,
        v: &Val,
        key: &str,
        max_memory: Option<u64>,
        allow_zero: bool,
    ) -> Option<(Metric, f64)> {
        let span = v.span();
        let parsed: Result<(Metric, f64), String> = match (name, v.get_ref()) {
            ("concurrency" | "rps" | "queue_depth", value) => {
                let metric = match name {
                    "concurrency" => Metric::Concurrency,
                    "rps" => Metric::Rps,
                    _ => Metric::QueueDepth,
                };
                number(value)
                    .map(|n| (metric, n))
                    .ok_or_else(|| format!("e.g. {name} = 10 (a number, per instance)"))
            }
            ("cpu", Value::String(s)) => percent(s)
                .map(|n| (Metric::Cpu, n))
                .ok_or_else(|| "e.g. cpu = 70 or cpu = \"70%\" (percent of one core)".to_owned()),
            ("cpu", value) => number(value)
                .map(|n| (Metric::Cpu, n))
                .ok_or_else(|| "e.g. cpu = 70 or cpu = \"70%\" (percent of one core)".to_owned()),
            ("memory", Value::String(s)) if s.trim_end().ends_with('%') => match percent(s) {
                Some(_) if max_memory.is_none() => {
                    self.err(
                        &span,
                        key,
                        format!("memory = \"{s}\" is a share of max_memory, which this app does not set"),
                        Some("set max_memory for the app, or use a size such as memory = \"400MiB\"".into()),
                    );
                    return None;
                }
                Some(n) => Ok((Metric::MemoryPercent, n)),
                None => Err("e.g. memory = \"80%\" (of max_memory) or memory = \"400MiB\"".into()),
            },
            ("memory", Value::String(s)) => parse_size(s)
                .map(|b| {
                    // Sizes are far below 2^53: the conversion is exact.
                    #[allow(clippy::cast_precision_loss)]
                    let b = b as f64;
                    (Metric::Memory, b)
                })
                .map_err(|e| format!("invalid size \"{s}\": {e}; e.g. memory = \"400MiB\" or \"80%\" (of max_memory)")),
            ("memory", _) => {
                Err("e.g. memory = \"400MiB\" (per instance) or memory = \"80%\" (of max_memory)".into())
            }
            ("latency_p95", Value::String(s)) => parse_duration(s)
                .map(|d| (Metric::LatencyP95, d.as_secs_f64() * 1000.0))
                .map_err(|e| format!("invalid duration \"{s}\": {e}; {DURATION_HINT}")),
            ("latency_p95", _) => Err("e.g. latency_p95 = \"200ms\"".into()),
            ("error_rate", Value::String(s)) => percent(s)
                .filter(|n| *n <= 100.0)
                .map(|n| (Metric::ErrorRate, n / 100.0))
                .ok_or_else(|| "e.g. error_rate = 0.01 or error_rate = \"1%\"".to_owned()),
            ("error_rate", value) => match number(value) {
                Some(n) if n <= 1.0 => Ok((Metric::ErrorRate, n)),
                _ => Err("a fraction of responses: error_rate = 0.01 or \"1%\"".into()),
            },
            _ => Err(METRIC_HINT.to_owned()),
        };
        match parsed {
            Ok((metric, value))
                if value.is_finite() && (value > 0.0 || (allow_zero && value >= 0.0)) =>
            {
                Some((metric, value))
            }
            Ok((metric, value)) => {
                let at_least = if allow_zero { ">= 0" } else { "greater than 0" };
                self.err(
                    &span,
                    key,
                    format!("{name} must be {at_least}, got {}", metric.format(value)),
                    Some(format!("e.g. {name} = {}", example(name))),
                );
                None
            }
            Err(hint) => {
                self.err(
                    &span,
                    key,
                    format!("invalid {name} value {}", v.get_ref()),
                    Some(hint),
                );
                None
            }
        }
    }

    fn behavior(
        &mut self,
        p: &str,
        raw: Option<&Spanned<RawBehavior>>,
        default_window: Duration,
    ) -> Behavior {
        let Some(raw) = raw else {
            return Behavior {
                window: default_window,
                max_step: vec![d::MAX_STEP],
            };
        };
        let b = raw.get_ref();
        let window = self.duration(
            b.window.as_ref(),
            &format!("{p}.window"),
            default_window,
            false,
        );
        let max_step = match &b.max_step {
            None => vec![d::MAX_STEP],
            Some(v) => {
                let key = format!("{p}.max_step");
                let items: Vec<&Value> = match v.get_ref() {
                    Value::Array(items) if !items.is_empty() => items.iter().collect(),
                    Value::Array(_) => Vec::new(),
                    one => vec![one],
                };
                let mut steps = Vec::new();
                for item in &items {
                    match parse_step(item) {
                        Ok(step) => steps.push(step),
                        Err(message) => self.err(
                            &v.span(),
                            &key,
                            message,
                            Some("a count or a percentage of the current instances, e.g. max_step = \"100%\", max_step = 4, or max_step = [4, \"100%\"] (the larger wins)".into()),
                        ),
                    }
                }
                if items.is_empty() {
                    self.err(
                        &v.span(),
                        &key,
                        "max_step must not be empty",
                        Some("e.g. max_step = \"100%\"".into()),
                    );
                }
                if steps.is_empty() {
                    vec![d::MAX_STEP]
                } else {
                    steps
                }
            }
        };
        Behavior { window, max_step }
    }

    fn warmup(&mut self, key: &str, v: Option<&Val>) -> Warmup {
        match v.map(Spanned::get_ref) {
            None => Warmup::Auto,
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("auto") => Warmup::Auto,
            Some(_) => Warmup::Fixed(self.duration(v, key, Duration::ZERO, false)),
        }
    }

    fn panic(&mut self, p: &str, v: Option<&Val>) -> Option<Panic> {
        let Some(v) = v else {
            return Some(d::PANIC);
        };
        let hint =
            "e.g. panic = { window = \"6s\", threshold = 2.0 }, or panic = false to turn it off";
        let table = match v.get_ref() {
            Value::Boolean(false) => return None,
            Value::Boolean(true) => return Some(d::PANIC),
            Value::Table(t) => t,
            other => {
                self.err(
                    &v.span(),
                    p,
                    format!("expected a table or false, found {}", other.type_str()),
                    Some(hint.into()),
                );
                return Some(d::PANIC);
            }
        };
        let span = v.span();
        let mut panic = d::PANIC;
        for (k, value) in table {
            let key = format!("{p}.{k}");
            let spanned = Spanned::new(span.clone(), value.clone());
            match k.as_str() {
                "window" => {
                    panic.window = self.duration(Some(&spanned), &key, d::PANIC.window, true);
                }
                "stable_window" => {
                    panic.stable_window =
                        self.duration(Some(&spanned), &key, d::PANIC.stable_window, true);
                }
                "threshold" => match number(value) {
                    Some(t) if t > 1.0 && t.is_finite() => panic.threshold = t,
                    _ => self.err(
                        &span,
                        &key,
                        format!("threshold must be a number greater than 1, got {value}"),
                        Some("panic starts when demand reaches threshold × ready instances, e.g. threshold = 2.0 (Knative's 200 %)".into()),
                    ),
                },
                other => {
                    let valid = ["window", "threshold", "stable_window"];
                    let mut h = String::new();
                    if let Some(best) = closest(other, &valid) {
                        h.push_str(&format!("did you mean \"{best}\"? "));
                    }
                    h.push_str("valid keys here: window, threshold, stable_window");
                    self.err(&span, &key, format!("unknown key \"{other}\""), Some(h));
                }
            }
        }
        if !table.contains_key("stable_window") {
            // Defaults to the panic window, whatever that is (docs/config.md).
            panic.stable_window = panic.window;
        }
        if panic.stable_window < panic.window {
            self.err(
                &span,
                &format!("{p}.stable_window"),
                format!(
                    "stable_window {} is shorter than window {}",
                    fmt_duration(panic.stable_window),
                    fmt_duration(panic.window)
                ),
                Some(
                    "the stable window is usually 10 × the panic window (Knative: 60s and 6s)"
                        .into(),
                ),
            );
        }
        Some(panic)
    }

    fn predictive(&mut self, p: &str, raw: &RawPredictive) -> Predictive {
        let mode = match &raw.mode {
            None => PredictiveMode::ForecastOnly,
            Some(m) => match m.get_ref().as_str() {
                "forecast_only" => PredictiveMode::ForecastOnly,
                "on" => PredictiveMode::On,
                other => {
                    let mut hint = String::new();
                    if let Some(best) = closest(other, &["forecast_only", "on"]) {
                        hint.push_str(&format!("did you mean \"{best}\"? "));
                    }
                    hint.push_str("valid values: \"forecast_only\" (report only) and \"on\" (act ahead of forecast demand)");
                    self.err(
                        &m.span(),
                        &format!("{p}.mode"),
                        format!("unknown predictive mode \"{other}\""),
                        Some(hint),
                    );
                    PredictiveMode::ForecastOnly
                }
            },
        };
        let lead = match raw.lead.as_ref() {
            None => Lead::Auto,
            Some(v) if matches!(v.get_ref(), Value::String(s) if s.trim().eq_ignore_ascii_case("auto")) => {
                Lead::Auto
            }
            Some(v) => Lead::Fixed(self.duration(
                Some(v),
                &format!("{p}.lead"),
                Duration::from_secs(120),
                true,
            )),
        };
        Predictive { mode, lead }
    }

    fn rule(&mut self, p: &str, raw: &Spanned<RawRule>, max_memory: Option<u64>) -> Option<Rule> {
        let r = raw.get_ref();
        let Some(name) = &r.metric else {
            self.err(
                &raw.span(),
                &format!("{p}.metric"),
                "missing metric",
                Some(format!("e.g. metric = \"cpu\"; {METRIC_HINT}")),
            );
            return None;
        };
        let metric_name = name.get_ref().as_str();
        if !Metric::NAMES.contains(&metric_name) {
            let mut hint = String::new();
            if let Some(best) = closest(metric_name, &Metric::NAMES) {
                hint.push_str(&format!("did you mean \"{best}\"? "));
            }
            hint.push_str(METRIC_HINT);
            self.err(
                &name.span(),
                &format!("{p}.metric"),
                format!("unknown metric \"{metric_name}\""),
                Some(hint),
            );
            return None;
        }
        let above = r
            .above
            .as_ref()
            .map(|v| self.metric_value(metric_name, v, &format!("{p}.above"), max_memory, true));
        let below = r
            .below
            .as_ref()
            .map(|v| self.metric_value(metric_name, v, &format!("{p}.below"), max_memory, true));
        if above.is_none() && below.is_none() {
            self.err(
                &raw.span(),
                p,
                "a rule needs above, below or both",
                Some(format!(
                    "e.g. metric = \"{metric_name}\", above = {}, for = \"2m\", step = 2",
                    example(metric_name)
                )),
            );
            return None;
        }
        // An invalid threshold has been reported already.
        let (Some(above), Some(below)) = (
            above.map_or(Some(None), |x| x.map(Some)),
            below.map_or(Some(None), |x| x.map(Some)),
        ) else {
            return None;
        };
        let below_span = r.below.as_ref().map_or(0..0, Spanned::span);
        let metric = match (above, below) {
            (Some((ma, _)), Some((mb, _))) if ma != mb => {
                self.err(
                    &below_span,
                    &format!("{p}.below"),
                    "above and below use different forms (a size and a percentage)",
                    Some("write both as sizes (\"400MiB\") or both as shares of max_memory (\"80%\")".into()),
                );
                return None;
            }
            (Some((m, _)), _) | (None, Some((m, _))) => m,
            (None, None) => return None,
        };
        if let (Some((_, a)), Some((_, b))) = (above, below) {
            if b >= a {
                self.err(
                    &below_span,
                    &format!("{p}.below"),
                    format!(
                        "below ({}) must be less than above ({})",
                        metric.format(b),
                        metric.format(a)
                    ),
                    Some("leave a gap between the two so the rule cannot flap".into()),
                );
                return None;
            }
        }
        Some(Rule {
            metric,
            above: above.map(|(_, v)| v),
            below: below.map(|(_, v)| v),
            sustain: self.duration(
                r.sustain.as_ref(),
                &format!("{p}.for"),
                Duration::ZERO,
                false,
            ),
            step: self.u32(r.step.as_ref(), &format!("{p}.step"), d::RULE_STEP, 1),
            cooldown: self.duration(
                r.cooldown.as_ref(),
                &format!("{p}.cooldown"),
                d::RULE_COOLDOWN,
                false,
            ),
        })
    }

    fn schedule(&mut self, p: &str, raw: &Spanned<RawSchedule>, max: u32) -> Option<Schedule> {
        let s = raw.get_ref();
        let cron = match &s.cron {
            None => {
                self.err(
                    &raw.span(),
                    &format!("{p}.cron"),
                    "missing cron",
                    Some("e.g. cron = \"0 8 * * 1-5\" (08:00, Monday to Friday)".into()),
                );
                None
            }
            Some(c) => match Cron::parse(c.get_ref()) {
                Ok(cron) => Some(cron),
                Err(e) => {
                    self.err(
                        &c.span(),
                        &format!("{p}.cron"),
                        format!("invalid cron \"{}\": {e}", c.get_ref()),
                        Some("five fields: minute hour day-of-month month day-of-week, e.g. \"0 8 * * 1-5\" (08:00, Monday to Friday)".into()),
                    );
                    None
                }
            },
        };
        let tz_name =
            s.tz.as_ref()
                .map_or(d::SCHEDULE_TZ, |t| t.get_ref().as_str())
                .trim()
                .to_owned();
        let tz = match jiff::tz::TimeZone::get(&tz_name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let span = s.tz.as_ref().map_or(0..0, Spanned::span);
                let names: Vec<String> = jiff::tz::db()
                    .available()
                    .map(|n| n.as_str().to_owned())
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut hint = String::new();
                if let Some(best) = closest(&tz_name, &refs) {
                    hint.push_str(&format!("did you mean \"{best}\"? "));
                }
                hint.push_str("use an IANA time zone name, e.g. \"Europe/Berlin\", \"America/New_York\" or \"UTC\"");
                self.err(
                    &span,
                    &format!("{p}.tz"),
                    format!("unknown time zone \"{tz_name}\""),
                    Some(hint),
                );
                None
            }
        };
        let min = s
            .min
            .as_ref()
            .map(|v| self.u32(Some(v), &format!("{p}.min"), 0, 0));
        let smax = s
            .max
            .as_ref()
            .map(|v| self.u32(Some(v), &format!("{p}.max"), max, 1));
        if min.is_none() && smax.is_none() {
            self.err(
                &raw.span(),
                p,
                "a schedule needs min, max or both",
                Some("e.g. cron = \"0 8 * * 1-5\", min = 4, duration = \"10h\"".into()),
            );
        }
        if let Some(m) = min {
            let limit = smax.unwrap_or(max).max(max);
            if m > limit {
                let span = s.min.as_ref().map_or(0..0, Spanned::span);
                self.err(
                    &span,
                    &format!("{p}.min"),
                    format!("schedule min {m} is above max {limit}"),
                    Some(format!(
                        "add max = {m} to this schedule, or raise [app.scaling] max"
                    )),
                );
            }
            if let Some(x) = smax {
                if m > x {
                    let span: Range<usize> = s.max.as_ref().map_or(0..0, Spanned::span);
                    self.err(
                        &span,
                        &format!("{p}.max"),
                        format!("schedule max {x} is less than its min {m}"),
                        Some(format!("raise max to at least {m}")),
                    );
                }
            }
        }
        let duration = s.duration.as_ref().map(|v| {
            self.duration(
                Some(v),
                &format!("{p}.duration"),
                Duration::from_secs(3600),
                true,
            )
        });
        Some(Schedule {
            cron: cron?,
            tz: tz?,
            tz_name,
            min,
            max: smax,
            duration,
        })
    }
}

/// An integer or float as f64.
pub(super) fn number(v: &Value) -> Option<f64> {
    match v {
        // Config integers are small; exactness beyond 2^53 does not matter here.
        #[allow(clippy::cast_precision_loss)]
        Value::Integer(n) => Some(*n as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

/// `"70%"` or `"70"` → 70.0.
pub(super) fn percent(s: &str) -> Option<f64> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_step(v: &Value) -> Result<Step, String> {
    match v {
        Value::Integer(n) if *n >= 1 => u32::try_from(*n)
            .map(Step::Instances)
            .map_err(|_| format!("max_step {n} is too large")),
        Value::String(s) if s.trim().ends_with('%') => match percent(s) {
            Some(p) if p > 0.0 => Ok(Step::Percent(p)),
            _ => Err(format!(
                "invalid max_step \"{s}\": expected a percentage above 0"
            )),
        },
        Value::String(s) => match s.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Step::Instances(n)),
            _ => Err(format!(
                "invalid max_step \"{s}\": expected \"N\" or \"N%\""
            )),
        },
        other => Err(format!(
            "invalid max_step {other}: expected \"N\" or \"N%\""
        )),
    }
}

fn example(metric: &str) -> &'static str {
    match metric {
        "cpu" => "70",
        "memory" => "\"400MiB\"",
        "latency_p95" => "\"200ms\"",
        "error_rate" => "0.01",
        "rps" => "100",
        _ => "10",
    }
}
