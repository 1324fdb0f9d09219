//! The one-sentence summaries of notifications and of `GET /alerts` rows, in the metric's
//! units: "latency_p95 of web is 3.42s, above the critical threshold of 3s for 30s".

use std::time::Duration;

use herd_config::AlertRule;

use crate::types::Severity;

/// Why a firing alert resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// A sample showed the value back within the lowest threshold.
    Cleared,
    /// No value for the no-data timeout.
    NoData,
    /// A reload removed the rule, changed what it watches, or removed the app.
    Removed,
    /// herd is shutting down and stops watching.
    Stopped,
}

/// `above` or `below`.
fn direction(rule: &AlertRule) -> &'static str {
    if rule.below {
        "below"
    } else {
        "above"
    }
}

fn threshold(rule: &AlertRule, severity: Severity) -> String {
    rule.threshold(severity == Severity::Critical)
        .map_or_else(|| "-".to_owned(), |t| rule.metric.format(t))
}

/// The lowest threshold set: the one the value must be back within for the alert to resolve.
fn lowest(rule: &AlertRule) -> (Severity, String) {
    let severity = if rule.warning.is_some() {
        Severity::Warning
    } else {
        Severity::Critical
    };
    (severity, threshold(rule, severity))
}

pub(crate) fn firing(
    rule: &AlertRule,
    app: &str,
    value: f64,
    severity: Severity,
    previous: Option<Severity>,
) -> String {
    let mut s = format!(
        "{} of {app} is {}, {} the {} threshold of {}",
        rule.metric,
        rule.metric.format(value),
        direction(rule),
        severity.as_str(),
        threshold(rule, severity),
    );
    if !rule.sustain.is_zero() {
        s.push_str(&format!(" for {}", duration(rule.sustain)));
    }
    if let Some(previous) = previous {
        s.push_str(&format!(" (was {})", previous.as_str()));
    }
    s
}

pub(crate) fn resolved(
    rule: &AlertRule,
    app: &str,
    value: Option<f64>,
    fired_ms: i64,
    why: Resolution,
) -> String {
    let after = format!("after firing for {}", millis(fired_ms));
    match (why, value) {
        (Resolution::Cleared, Some(v)) => {
            let (severity, threshold) = lowest(rule);
            format!(
                "{} of {app} is back to {}, not {} the {} threshold of {threshold}, {after}",
                rule.metric,
                rule.metric.format(v),
                direction(rule),
                severity.as_str(),
            )
        }
        (Resolution::NoData | Resolution::Cleared, _) => format!(
            "no {} data for {app} for {}; resolved {after}",
            rule.metric,
            duration(crate::NO_DATA_TIMEOUT)
        ),
        (Resolution::Removed, _) => {
            format!("the alert on {app} was removed or changed by a reload; resolved {after}")
        }
        (Resolution::Stopped, _) => format!(
            "herd is shutting down and stops watching {app}; resolved {after} (not because the condition cleared: a herd started again alerts anew if it still holds)"
        ),
    }
}

/// The summary of an inactive alert.
pub(crate) fn inactive(rule: &AlertRule, app: &str, value: Option<f64>) -> String {
    match value {
        None => format!("no {} data for {app}", rule.metric),
        Some(v) => {
            let (severity, threshold) = lowest(rule);
            format!(
                "{} of {app} is {}, not {} the {} threshold of {threshold}",
                rule.metric,
                rule.metric.format(v),
                direction(rule),
                severity.as_str(),
            )
        }
    }
}

/// The summary of a pending alert whose condition has held for `held_ms`.
pub(crate) fn pending(
    rule: &AlertRule,
    app: &str,
    value: Option<f64>,
    severity: Severity,
    held_ms: i64,
) -> String {
    let now = match value {
        Some(v) => format!("{} of {app} is {}", rule.metric, rule.metric.format(v)),
        None => format!("no {} data for {app} in the last sample", rule.metric),
    };
    format!(
        "{now}; {} the {} threshold of {} for {} of {}",
        direction(rule),
        severity.as_str(),
        threshold(rule, severity),
        millis(held_ms),
        duration(rule.sustain),
    )
}

/// The summary of a firing alert, firing for `fired_ms`.
pub(crate) fn firing_status(
    rule: &AlertRule,
    app: &str,
    value: Option<f64>,
    severity: Severity,
    fired_ms: i64,
) -> String {
    let now = match value {
        Some(v) => format!("{} of {app} is {}", rule.metric, rule.metric.format(v)),
        None => format!("no {} data for {app} in the last sample", rule.metric),
    };
    format!(
        "{now}; {} the {} threshold of {}, firing for {}",
        direction(rule),
        severity.as_str(),
        threshold(rule, severity),
        millis(fired_ms),
    )
}

fn duration(d: Duration) -> String {
    millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `500ms`, `30s`, `2m10s`, `1h5m`, `3d2h`: the two largest units, truncated.
pub(crate) fn millis(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let units = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let first = units.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    units[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_config::AlertMetric;

    fn rule() -> AlertRule {
        AlertRule {
            name: "slow".into(),
            metric: AlertMetric::LatencyP95,
            app: None,
            warning: Some(1.0),
            critical: Some(3.0),
            below: false,
            sustain: Duration::from_secs(30),
            webhooks: Vec::new(),
            builtin: false,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(millis(-5), "0ms");
        assert_eq!(millis(500), "500ms");
        assert_eq!(millis(30_000), "30s");
        assert_eq!(millis(130_500), "2m10s");
        assert_eq!(millis(3_900_000), "1h5m");
        assert_eq!(millis(3_600_000), "1h");
        assert_eq!(millis(3_601_000), "1h");
        assert_eq!(millis(2 * 86_400_000 + 7_200_000), "2d2h");
    }

    #[test]
    fn sentences() {
        let r = rule();
        assert_eq!(
            firing(&r, "web", 3.42, Severity::Critical, Some(Severity::Warning)),
            "latency_p95 of web is 3.42s, above the critical threshold of 3s for 30s (was warning)"
        );
        assert_eq!(
            resolved(&r, "web", Some(0.12), 130_000, Resolution::Cleared),
            "latency_p95 of web is back to 120ms, not above the warning threshold of 1s, after firing for 2m10s"
        );
        assert_eq!(
            resolved(&r, "web", None, 400_000, Resolution::NoData),
            "no latency_p95 data for web for 5m; resolved after firing for 6m40s"
        );
        assert_eq!(
            pending(&r, "web", Some(1.5), Severity::Warning, 10_000),
            "latency_p95 of web is 1.5s; above the warning threshold of 1s for 10s of 30s"
        );
        assert_eq!(
            firing_status(&r, "web", Some(4.0), Severity::Critical, 60_000),
            "latency_p95 of web is 4s; above the critical threshold of 3s, firing for 1m"
        );
        assert_eq!(
            inactive(&r, "web", Some(0.2)),
            "latency_p95 of web is 200ms, not above the warning threshold of 1s"
        );
        assert_eq!(inactive(&r, "web", None), "no latency_p95 data for web");
    }
}
