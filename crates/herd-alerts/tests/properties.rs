//! Property tests of the alert engine against the rules' definition: random rules and random
//! series (values, gaps) on one app.
//!
//! - a severity never fires before its condition has held for `for`, and the alert fires once
//!   the lowest condition has;
//! - a firing alert resolves on the first sample back within its lowest threshold, and only then;
//! - per alert, notifications go firing → (severity changes) → resolved → firing ...;
//! - `status()` agrees with the notifications.

use std::time::Duration;

use herd_alerts::{AlertEngine, AlertState, NotificationState, Severity};
use herd_config::{AlertMetric, AlertRule};
use herd_core::telemetry::{AppSample, Sample};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;

fn rule_strategy() -> impl Strategy<Value = AlertRule> {
    (
        0u64..6,
        prop::option::of(1.0f64..5.0),
        prop::option::of(0.5f64..4.0),
        any::<bool>(),
    )
        .prop_filter_map("needs a threshold", |(for_s, w, extra, below)| {
            // With both, warning comes first in the alert's direction.
            let (warning, critical) = match (w, extra) {
                (None, None) => return None,
                (Some(w), None) => (Some(w), None),
                (None, Some(c)) => (None, Some(c + 1.0)),
                (Some(w), Some(d)) if below => (Some(w + d), Some(w)),
                (Some(w), Some(d)) => (Some(w), Some(w + d)),
            };
            Some(AlertRule {
                name: "r".into(),
                metric: AlertMetric::Rps,
                app: None,
                warning,
                critical,
                below,
                sustain: Duration::from_secs(for_s),
                webhooks: Vec::new(),
                builtin: false,
            })
        })
}

/// (seconds since the previous sample, value) pairs; gaps stay far below the no-data timeout.
fn series_strategy() -> impl Strategy<Value = Vec<(i64, Option<f64>)>> {
    prop::collection::vec(
        (1i64..=3, prop::option::weighted(0.85, 0.0f64..8.0)),
        1..120,
    )
}

/// Whether `v` meets the condition of `severity` (critical implies at least warning).
fn meets(rule: &AlertRule, v: f64, severity: Severity) -> bool {
    let crit = rule.critical.is_some_and(|c| rule.crosses(v, c));
    match severity {
        Severity::Critical => crit,
        Severity::Warning => crit || rule.warning.is_some_and(|w| rule.crosses(v, w)),
    }
}

/// A stretch unobserved for longer than `for`: the timers not yet fired start again (while
/// firing at warning, the critical one).
fn forget(runs: &mut [Option<i64>; 2], firing: Option<Severity>) {
    match firing {
        None => *runs = [None, None],
        Some(Severity::Warning) => runs[1] = None,
        Some(Severity::Critical) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn notifications_follow_the_rule(rule in rule_strategy(), series in series_strategy()) {
        let mut engine = AlertEngine::new(std::slice::from_ref(&rule), &["web".to_owned()]);
        let sustain = i64::try_from(rule.sustain.as_millis()).unwrap();
        let mut t = T0;
        // Since when each condition (warning-or-worse, critical) has held on every value, with
        // no stretch unobserved for `for` while not firing (then it starts again).
        let mut runs: [Option<i64>; 2] = [None, None];
        let mut last_value: Option<i64> = None;
        let mut firing: Option<Severity> = None;
        let idx = |s: Severity| usize::from(s == Severity::Critical);

        for (dt, value) in series {
            t += dt * 1000;
            let sample = Sample {
                at_unix_ms: t,
                apps: vec![AppSample { app: "web".into(), rps: value.unwrap_or(f64::NAN), ..AppSample::default() }],
            };
            match value {
                Some(v) => {
                    if last_value.is_some_and(|l| t - l > sustain) {
                        forget(&mut runs, firing);
                    }
                    for s in [Severity::Warning, Severity::Critical] {
                        runs[idx(s)] = if meets(&rule, v, s) { runs[idx(s)].or(Some(t)) } else { None };
                    }
                    last_value = Some(t);
                }
                None => {
                    if last_value.is_none_or(|l| t - l > sustain) {
                        forget(&mut runs, firing);
                    }
                }
            }
            let out = engine.evaluate(&sample);
            prop_assert!(out.len() <= 1);
            let lowest = if rule.warning.is_some() { Severity::Warning } else { Severity::Critical };

            if let Some(n) = out.first() {
                prop_assert_eq!(n.at_unix_ms, t);
                match n.state {
                    NotificationState::Firing => {
                        let v = value.expect("fires only on a sample with a value");
                        prop_assert_eq!(n.value, Some(v));
                        prop_assert_eq!(n.previous, firing, "alternation");
                        prop_assert_ne!(Some(n.severity), firing, "a change of severity");
                        // The condition of this severity held, watched, for at least `for`.
                        let start = runs[idx(n.severity)];
                        prop_assert!(start.is_some(), "fired {:?} without its condition", n.severity);
                        let start = start.unwrap_or(t);
                        prop_assert!(t - start >= sustain, "fired {}ms after the condition began, for is {}ms", t - start, sustain);
                        firing = Some(n.severity);
                    }
                    NotificationState::Resolved => {
                        prop_assert_eq!(Some(n.severity), firing, "resolves what fired");
                        let v = value.expect("gaps are short: only a value resolves");
                        prop_assert!(!meets(&rule, v, lowest));
                        firing = None;
                    }
                }
            } else if let (Some(v), Some(_)) = (value, firing) {
                // Still firing: the value must still meet the lowest condition.
                prop_assert!(meets(&rule, v, lowest), "a clear sample must resolve");
            }

            // And it fires as soon as the lowest condition has held for `for`.
            if let (Some(_), Some(start)) = (value, runs[idx(lowest)]) {
                if t - start >= sustain {
                    prop_assert!(firing.is_some(), "held for {}ms, for is {}ms", t - start, sustain);
                }
            }

            let status = &engine.status()[0];
            prop_assert_eq!(status.state == AlertState::Firing, firing.is_some());
            if firing.is_some() {
                prop_assert_eq!(status.severity, firing);
            }
            if status.state == AlertState::Pending {
                prop_assert!(value.is_none() || meets(&rule, value.unwrap_or(0.0), lowest));
            }
        }
    }

    #[test]
    fn never_panics_on_odd_values_or_times(
        times in prop::collection::vec(any::<i64>(), 1..40),
        values in prop::collection::vec(prop::option::of(prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)]), 1..40),
        rule in rule_strategy(),
    ) {
        let mut engine = AlertEngine::new(&[rule], &["web".to_owned()]);
        for (t, v) in times.into_iter().zip(values) {
            let sample = Sample {
                at_unix_ms: t,
                apps: vec![AppSample { app: "web".into(), rps: v.unwrap_or(f64::NAN), ..AppSample::default() }],
            };
            let _ = engine.evaluate(&sample);
            let _ = serde_json::to_string(&engine.status()).unwrap();
        }
    }
}
