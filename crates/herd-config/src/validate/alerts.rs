//! Validation of `[alerts]` and `[[alert]]`: rule names, metrics, per-metric thresholds
//! (durations for latencies, percentages, sizes), the app a rule watches, and webhook URLs.
//! The built-in rules come first unless `defaults = false`; an `[[alert]]` with a built-in's
//! name replaces it.

use std::collections::HashMap;
use std::ops::Range;

use toml::{Spanned, Value};

use super::scaling::{number, percent};
use super::Validator;
use crate::defaults as d;
use crate::error::closest;
use crate::model::{AlertMetric, AlertRule, Alerts, App, Backends, WebhookUrl};
use crate::raw::{RawAlert, RawConfig, Val};
use crate::units::{parse_duration, parse_size, DURATION_HINT, SIZE_HINT};

const METRIC_HINT: &str = "metrics: rps, error_rate, latency_p50, latency_p95, latency_p99, in_flight, ready, desired, instances, cpu, memory, rss_bytes";

impl Validator<'_> {
    /// `apps` are the validated apps, for `app = "..."` and `memory` (needs `max_memory`).
    pub(super) fn alerts(&mut self, raw: &RawConfig, apps: &[App]) -> Alerts {
        let mut alerts = Alerts::default();
        if let Some(section) = &raw.alerts {
            let a = section.get_ref();
            alerts.defaults = a
                .defaults
                .as_ref()
                .map_or(d::ALERTS_DEFAULTS, |b| *b.get_ref());
            if let Some(v) = &a.webhooks {
                alerts.webhooks = self.webhooks(v, "alerts.webhooks");
            }
            alerts.webhook_timeout = self.duration(
                a.webhook_timeout.as_ref(),
                "alerts.webhook_timeout",
                d::WEBHOOK_TIMEOUT,
                true,
            );
            alerts.webhook_retries = self.u32(
                a.webhook_retries.as_ref(),
                "alerts.webhook_retries",
                d::WEBHOOK_RETRIES,
                0,
            );
        }

        let mut rules: Vec<AlertRule> = Vec::new();
        // First definition of each [[alert]] name: name -> span.
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        for (i, alert) in raw.alert.iter().enumerate() {
            if let Some(rule) = self.alert(&format!("alert[{i}]"), alert, apps, &mut names) {
                rules.push(rule);
            }
        }
        let mut all: Vec<AlertRule> = if alerts.defaults {
            d::builtin_alerts()
                .into_iter()
                .filter(|b| !names.contains_key(&b.name))
                .collect()
        } else {
            Vec::new()
        };
        all.extend(rules);
        alerts.rules = all;
        alerts
    }

    fn alert(
        &mut self,
        p: &str,
        raw: &Spanned<RawAlert>,
        apps: &[App],
        names: &mut HashMap<String, Range<usize>>,
    ) -> Option<AlertRule> {
        let a = raw.get_ref();
        let span = raw.span();
        let name = self.alert_name(p, &span, a, names);
        let metric = match &a.metric {
            None => {
                self.err(
                    &span,
                    &format!("{p}.metric"),
                    "missing metric",
                    Some(format!("e.g. metric = \"latency_p95\"; {METRIC_HINT}")),
                );
                None
            }
            Some(m) => {
                let metric = AlertMetric::from_name(m.get_ref());
                if metric.is_none() {
                    let hint = match metric_alias(m.get_ref()) {
                        Some(alias) => format!("did you mean \"{alias}\"? {METRIC_HINT}"),
                        None => METRIC_HINT.to_owned(),
                    };
                    self.err(
                        &m.span(),
                        &format!("{p}.metric"),
                        format!("unknown metric \"{}\"", m.get_ref()),
                        Some(hint),
                    );
                }
                metric
            }
        };
        let app = a
            .app
            .as_ref()
            .and_then(|s| self.alert_app(p, s, metric, apps));
        let below = a.below.as_ref().is_some_and(|b| *b.get_ref());
        let sustain = self.duration(a.sustain.as_ref(), &format!("{p}.for"), d::ALERT_FOR, false);
        let webhooks = a
            .webhooks
            .as_ref()
            .map(|v| self.webhooks(v, &format!("{p}.webhooks")))
            .unwrap_or_default();
        let metric = metric?;

        let warning = a
            .warning
            .as_ref()
            .map(|v| self.threshold(metric, v, &format!("{p}.warning")));
        let critical = a
            .critical
            .as_ref()
            .map(|v| self.threshold(metric, v, &format!("{p}.critical")));
        if warning.is_none() && critical.is_none() {
            self.err(
                &span,
                p,
                "an alert needs a warning or a critical threshold (or both)",
                Some(format!(
                    "e.g. metric = \"{metric}\", warning = {}, critical = {}",
                    example(metric, false),
                    example(metric, true)
                )),
            );
            return None;
        }
        // An invalid threshold has been reported already.
        let warning = warning.map_or(Some(None), |w| w.map(Some))?;
        let critical = critical.map_or(Some(None), |c| c.map(Some))?;
        if let (Some(w), Some(c)) = (warning, critical) {
            let in_order = if below { w > c } else { w < c };
            if !in_order {
                let crit_span = a.critical.as_ref().map_or(span.clone(), Spanned::span);
                let (relation, fix) = if below {
                    (
                        "above",
                        "with below = true the value gets worse as it falls",
                    )
                } else {
                    ("below", "the value gets worse as it rises; for a value that must not fall, set below = true")
                };
                self.err(
                    &crit_span,
                    &format!("{p}.critical"),
                    format!(
                        "warning ({}) must be {relation} critical ({})",
                        metric.format(w),
                        metric.format(c)
                    ),
                    Some(format!("swap them, or drop one; {fix}")),
                );
                return None;
            }
        }
        Some(AlertRule {
            name: name?,
            metric,
            app,
            warning,
            critical,
            below,
            sustain,
            webhooks,
            builtin: false,
        })
    }

    fn alert_name(
        &mut self,
        p: &str,
        alert_span: &Range<usize>,
        a: &RawAlert,
        names: &mut HashMap<String, Range<usize>>,
    ) -> Option<String> {
        let key = format!("{p}.name");
        let Some(name) = &a.name else {
            self.err(
                alert_span,
                &key,
                "missing name",
                Some("add name = \"api_slow\" (letters, digits, \"-\", \"_\" and \".\")".into()),
            );
            return None;
        };
        let span = name.span();
        let name = name.get_ref();
        let valid = (1..=64).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.err(
                &span,
                &key,
                format!("invalid alert name {name:?}"),
                Some("use 1 to 64 letters, digits, \"-\", \"_\" and \".\", starting with a letter or digit, e.g. \"api_slow\"".into()),
            );
            return None;
        }
        if let Some(first) = names.get(name) {
            let first = first.clone();
            self.duplicate_name(&span, &key, "alert", name, &first);
            return None;
        }
        names.insert(name.clone(), span);
        Some(name.clone())
    }

    fn alert_app(
        &mut self,
        p: &str,
        name: &Spanned<String>,
        metric: Option<AlertMetric>,
        apps: &[App],
    ) -> Option<String> {
        let key = format!("{p}.app");
        let Some(app) = apps.iter().find(|a| a.name == *name.get_ref()) else {
            let known: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
            let mut hint = String::new();
            if let Some(best) = closest(name.get_ref(), &known) {
                hint.push_str(&format!("did you mean \"{best}\"? "));
            }
            if known.is_empty() {
                hint.push_str("no apps are defined");
            } else {
                hint.push_str(&format!(
                    "known apps: {}; leave app out to watch every app",
                    known.join(", ")
                ));
            }
            self.err(
                &name.span(),
                &key,
                format!("alert on unknown app \"{}\"", name.get_ref()),
                Some(hint),
            );
            return None;
        };
        let max_memory = match &app.backends {
            Backends::Command(c) => c.max_memory,
            Backends::Servers(_) => None,
        };
        if metric == Some(AlertMetric::Memory) && max_memory.is_none() {
            self.err(
                &name.span(),
                &key,
                format!(
                    "metric memory is a share of max_memory, which app \"{}\" does not set",
                    app.name
                ),
                Some("set max_memory for the app, or watch metric = \"rss_bytes\" with a size such as warning = \"400MiB\"".into()),
            );
        }
        Some(app.name.clone())
    }

    /// A threshold in the metric's unit; `None` after reporting an invalid one.
    fn threshold(&mut self, metric: AlertMetric, v: &Val, key: &str) -> Option<f64> {
        let parsed: Result<f64, String> = match (metric, v.get_ref()) {
            (m, Value::String(s)) if m.is_latency() => parse_duration(s)
                .map(|d| d.as_secs_f64())
                .map_err(|e| format!("invalid duration \"{s}\": {e}; {DURATION_HINT}")),
            (AlertMetric::Cpu | AlertMetric::Memory, Value::String(s)) => {
                percent(s).ok_or_else(|| format!("e.g. {} (percent)", example(metric, false)))
            }
            (AlertMetric::ErrorRate, Value::String(s)) => percent(s)
                .filter(|n| s.trim_end().ends_with('%') && *n <= 100.0)
                .map(|n| n / 100.0)
                .ok_or_else(|| {
                    "from \"0%\" to \"100%\", e.g. \"5%\" or 0.05 (a fraction of answers)"
                        .to_owned()
                }),
            (AlertMetric::ErrorRate, value) => match number(value) {
                Some(n) if n <= 1.0 => Ok(n),
                _ => Err("a fraction of answers from 0 to 1, e.g. 0.05 or \"5%\"".to_owned()),
            },
            (AlertMetric::RssBytes, Value::String(s)) => parse_size(s)
                .map(|b| {
                    // Sizes are far below 2^53: the conversion is exact.
                    #[allow(clippy::cast_precision_loss)]
                    let b = b as f64;
                    b
                })
                .map_err(|e| format!("invalid size \"{s}\": {e}; {SIZE_HINT}")),
            (_, value) => number(value).ok_or_else(|| match metric {
                m if m.is_latency() => {
                    "a duration such as \"3s\" or \"500ms\", or a number of seconds".to_owned()
                }
                _ => format!("e.g. {}", example(metric, false)),
            }),
        };
        let field = key.rsplit('.').next().unwrap_or(key);
        match parsed {
            Ok(n) if n.is_finite() && n >= 0.0 => Some(n),
            Ok(n) => {
                self.err(
                    &v.span(),
                    key,
                    format!("{field} must not be negative, got {}", metric.format(n)),
                    Some(format!(
                        "e.g. {field} = {}",
                        example(metric, field == "critical")
                    )),
                );
                None
            }
            Err(hint) => {
                self.err(
                    &v.span(),
                    key,
                    format!("invalid {field} threshold {} for {metric}", v.get_ref()),
                    Some(hint),
                );
                None
            }
        }
    }

    /// `webhooks`: an array of URLs (a single string is accepted too), without repeats.
    fn webhooks(&mut self, v: &Val, key: &str) -> Vec<WebhookUrl> {
        let items: Vec<&Value> = match v.get_ref() {
            Value::Array(items) => items.iter().collect(),
            one @ Value::String(_) => vec![one],
            other => {
                self.err(
                    &v.span(),
                    key,
                    format!("expected an array of URLs, found {}", other.type_str()),
                    Some("e.g. webhooks = [\"http://127.0.0.1:9000/hooks/herd\"]".into()),
                );
                return Vec::new();
            }
        };
        let mut urls: Vec<WebhookUrl> = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{j}]");
            let Value::String(s) = item else {
                self.err(
                    &v.span(),
                    &item_key,
                    format!("expected a URL string, found {}", item.type_str()),
                    Some("quote it, e.g. \"http://127.0.0.1:9000/hooks/herd\"".into()),
                );
                continue;
            };
            match s.parse::<WebhookUrl>() {
                Ok(url) if !urls.contains(&url) => urls.push(url),
                Ok(_) => {}
                Err(e) => {
                    let hint = e.hint().to_owned();
                    self.err(&v.span(), &item_key, e.to_string(), Some(hint));
                }
            }
        }
        urls
    }
}

/// The metric a common other name means.
fn metric_alias(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase().replace(['-', ' '], "_");
    if let Some(m) = AlertMetric::from_name(&lower) {
        return Some(m.name());
    }
    let alias = match lower.as_str() {
        "latency" | "response_time" | "responsetime" | "p95" | "latency_p95_ms" => "latency_p95",
        "p50" | "median" => "latency_p50",
        "p99" => "latency_p99",
        "concurrency" | "connections" | "inflight" => "in_flight",
        "memory_percent" | "mem" => "memory",
        "rss" | "memory_bytes" => "rss_bytes",
        "errors" | "errorrate" | "error_ratio" => "error_rate",
        "cpu_percent" | "cpu_usage" => "cpu",
        _ => {
            let names = AlertMetric::ALL.map(AlertMetric::name);
            return closest(name, &names);
        }
    };
    Some(alias)
}

fn example(metric: AlertMetric, critical: bool) -> &'static str {
    match (metric, critical) {
        (AlertMetric::Cpu, false) => "60",
        (AlertMetric::Cpu, true) => "80",
        (AlertMetric::Memory, false) => "70",
        (AlertMetric::Memory, true) => "90",
        (m, false) if m.is_latency() => "\"1s\"",
        (m, true) if m.is_latency() => "\"3s\"",
        (AlertMetric::ErrorRate, false) => "\"1%\"",
        (AlertMetric::ErrorRate, true) => "\"5%\"",
        (AlertMetric::RssBytes, false) => "\"400MiB\"",
        (AlertMetric::RssBytes, true) => "\"480MiB\"",
        (AlertMetric::Rps, false) => "500",
        (AlertMetric::Rps, true) => "1000",
        (_, false) => "100",
        (_, true) => "200",
    }
}
