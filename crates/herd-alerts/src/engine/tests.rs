//! Unit tests of the engine: timing, severities, missing data, apps, reloads, built-ins.

use std::time::Duration;

use herd_config::{AlertMetric, Alerts};
use herd_core::telemetry::{AppSample, Sample};

use super::*;
use crate::types::AlertState;
use crate::NO_DATA_TIMEOUT;

const T0: i64 = 1_700_000_000_000;

fn rule(
    name: &str,
    metric: AlertMetric,
    warning: Option<f64>,
    critical: Option<f64>,
    for_s: u64,
) -> AlertRule {
    AlertRule {
        name: name.into(),
        metric,
        app: None,
        warning,
        critical,
        below: false,
        sustain: Duration::from_secs(for_s),
        webhooks: Vec::new(),
        builtin: false,
    }
}

fn latency(for_s: u64) -> AlertRule {
    rule("slow", AlertMetric::LatencyP95, Some(1.0), Some(3.0), for_s)
}

/// A sample at `T0 + secs` with each app's p95 in ms (`None`: no traffic).
fn p95(secs: i64, apps: &[(&str, Option<f64>)]) -> Sample {
    Sample {
        at_unix_ms: T0 + secs * 1000,
        apps: apps
            .iter()
            .map(|(app, ms)| AppSample {
                app: (*app).into(),
                p95_ms: *ms,
                ..AppSample::default()
            })
            .collect(),
    }
}

fn web(secs: i64, ms: Option<f64>) -> Sample {
    p95(secs, &[("web", ms)])
}

fn apps(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn states(n: &[Notification]) -> Vec<(NotificationState, Severity)> {
    n.iter().map(|n| (n.state, n.severity)).collect()
}

#[test]
fn fires_after_for_and_resolves_on_the_first_clear_sample() {
    let mut e = AlertEngine::new(&[latency(3)], &apps(&["web"]));
    assert!(e.evaluate(&web(0, Some(200.0))).is_empty());
    assert_eq!(e.status()[0].state, AlertState::Inactive);
    for s in 1..=3 {
        assert!(e.evaluate(&web(s, Some(1500.0))).is_empty(), "second {s}");
    }
    let st = &e.status()[0];
    assert_eq!(
        (st.state, st.severity),
        (AlertState::Pending, Some(Severity::Warning))
    );
    assert_eq!(st.since_unix_ms, Some(T0 + 1000));
    assert_eq!(
        st.summary,
        "latency_p95 of web is 1.5s; above the warning threshold of 1s for 2s of 3s"
    );

    let n = e.evaluate(&web(4, Some(1500.0)));
    assert_eq!(n.len(), 1);
    let n = &n[0];
    assert_eq!(
        (n.alert.as_str(), n.app.as_str(), n.metric),
        ("slow", "web", "latency_p95")
    );
    assert_eq!(
        (n.state, n.severity, n.previous),
        (NotificationState::Firing, Severity::Warning, None)
    );
    assert_eq!((n.value, n.threshold), (Some(1.5), 1.0));
    assert_eq!((n.since_unix_ms, n.at_unix_ms), (T0 + 4000, T0 + 4000));
    assert_eq!(
        n.summary,
        "latency_p95 of web is 1.5s, above the warning threshold of 1s for 3s"
    );
    let st = &e.status()[0];
    assert_eq!(
        (st.state, st.since_unix_ms, st.last_change_unix_ms),
        (AlertState::Firing, Some(T0 + 4000), Some(T0 + 4000))
    );

    assert!(e.evaluate(&web(5, Some(1200.0))).is_empty());
    let n = e.evaluate(&web(6, Some(900.0)));
    assert_eq!(
        states(&n),
        [(NotificationState::Resolved, Severity::Warning)]
    );
    assert_eq!(
        (n[0].value, n[0].since_unix_ms, n[0].at_unix_ms),
        (Some(0.9), T0 + 4000, T0 + 6000)
    );
    assert_eq!(n[0].summary, "latency_p95 of web is back to 900ms, not above the warning threshold of 1s, after firing for 2s");
    let st = &e.status()[0];
    assert_eq!(
        (st.state, st.severity, st.since_unix_ms),
        (AlertState::Inactive, None, None)
    );
    assert_eq!(st.last_change_unix_ms, Some(T0 + 6000));
}

#[test]
fn a_blip_shorter_than_for_never_fires() {
    let mut e = AlertEngine::new(&[latency(3)], &apps(&["web"]));
    for s in 0..100 {
        let ms = if s % 3 == 2 { 100.0 } else { 5000.0 };
        assert!(e.evaluate(&web(s, Some(ms))).is_empty(), "second {s}");
    }
}

#[test]
fn for_zero_fires_on_the_first_sample_past_the_threshold() {
    let mut e = AlertEngine::new(&[latency(0)], &apps(&["web"]));
    let n = e.evaluate(&web(0, Some(3500.0)));
    assert_eq!(
        states(&n),
        [(NotificationState::Firing, Severity::Critical)]
    );
    assert_eq!(n[0].threshold, 3.0);
    // Exactly at the threshold is not past it (the seed compares with `>`).
    let n = e.evaluate(&web(1, Some(1000.0)));
    assert_eq!(
        states(&n),
        [(NotificationState::Resolved, Severity::Critical)]
    );
}

#[test]
fn escalation_waits_for_for_and_de_escalation_does_not() {
    let mut e = AlertEngine::new(&[latency(2)], &apps(&["web"]));
    let mut log = Vec::new();
    let trace = [
        1500.0, 1500.0, 1500.0, 4000.0, 4000.0, 4000.0, 2000.0, 4000.0, 500.0,
    ];
    for (s, ms) in trace.iter().enumerate() {
        for n in e.evaluate(&web(s as i64, Some(*ms))) {
            log.push((s, n.state, n.severity, n.previous));
        }
    }
    use NotificationState::{Firing, Resolved};
    use Severity::{Critical, Warning};
    assert_eq!(
        log,
        [
            (2, Firing, Warning, None),
            (5, Firing, Critical, Some(Warning)),
            (6, Firing, Warning, Some(Critical)),
            (8, Resolved, Warning, None),
        ]
    );
}

#[test]
fn critical_only_and_below_rules() {
    let mut low = rule("no_capacity", AlertMetric::Ready, None, Some(1.0), 0);
    low.below = true;
    let mut e = AlertEngine::new(&[low], &apps(&["web"]));
    let ready = |secs: i64, n: u32| Sample {
        at_unix_ms: T0 + secs * 1000,
        apps: vec![AppSample {
            app: "web".into(),
            ready: n,
            ..AppSample::default()
        }],
    };
    assert!(e.evaluate(&ready(0, 2)).is_empty());
    assert!(e.evaluate(&ready(1, 1)).is_empty());
    let n = e.evaluate(&ready(2, 0));
    assert_eq!(
        states(&n),
        [(NotificationState::Firing, Severity::Critical)]
    );
    assert_eq!(
        n[0].summary,
        "ready of web is 0, below the critical threshold of 1"
    );
    let n = e.evaluate(&ready(3, 1));
    assert_eq!(
        states(&n),
        [(NotificationState::Resolved, Severity::Critical)]
    );
    assert_eq!(
        n[0].summary,
        "ready of web is back to 1, not below the critical threshold of 1, after firing for 1s"
    );
}

#[test]
fn missing_values_hold_the_state_until_the_no_data_timeout() {
    let mut e = AlertEngine::new(&[latency(5)], &apps(&["web"]));
    // Pending across a gap shorter than `for` (sparse traffic): it stays pending, and fires
    // once every value seen for `for` was past the threshold.
    assert!(e.evaluate(&web(0, Some(2000.0))).is_empty());
    for s in 1..=4 {
        assert!(e.evaluate(&web(s, None)).is_empty());
    }
    assert_eq!(e.status()[0].state, AlertState::Pending);
    assert_eq!(e.status()[0].value, None);
    assert!(e.evaluate(&web(5, None)).is_empty());
    assert_eq!(e.status()[0].state, AlertState::Pending);
    assert!(e.evaluate(&web(6, None)).is_empty());
    // A gap longer than `for`: nothing was watched for that long, pending starts again.
    assert_eq!(e.status()[0].state, AlertState::Inactive);
    assert!(e.evaluate(&web(7, Some(2000.0))).is_empty());
    for s in 8..=11 {
        assert!(e.evaluate(&web(s, None)).is_empty());
    }
    let n = e.evaluate(&web(12, Some(2000.0)));
    assert_eq!(states(&n), [(NotificationState::Firing, Severity::Warning)]);
    assert_eq!(e.status()[0].since_unix_ms, Some(T0 + 12_000));

    // Firing across a gap: held, and a sample past the threshold continues it quietly.
    let gap = NO_DATA_TIMEOUT.as_secs() as i64;
    assert!(e.evaluate(&web(12, None)).is_empty());
    assert!(e.evaluate(&web(11 + gap - 1, None)).is_empty());
    assert_eq!(e.status()[0].state, AlertState::Firing);
    assert!(e.evaluate(&web(11 + gap - 1, Some(2000.0))).is_empty());

    // Five minutes without a value resolve it, without a value.
    let last = 11 + gap - 1;
    assert!(e.evaluate(&web(last + gap - 1, None)).is_empty());
    let n = e.evaluate(&web(last + gap, None));
    assert_eq!(
        states(&n),
        [(NotificationState::Resolved, Severity::Warning)]
    );
    assert_eq!(n[0].value, None);
    assert!(
        n[0].summary
            .starts_with("no latency_p95 data for web for 5m; resolved after firing for 9m58s"),
        "{}",
        n[0].summary
    );
    assert_eq!(e.status()[0].state, AlertState::Inactive);

    // An app missing from the sample, and a NaN, are missing values too.
    let mut e = AlertEngine::new(&[latency(0)], &apps(&["web"]));
    assert_eq!(e.evaluate(&web(0, Some(5000.0))).len(), 1);
    assert!(e.evaluate(&p95(1, &[])).is_empty());
    assert!(e.evaluate(&web(2, Some(f64::NAN))).is_empty());
    assert_eq!(e.status()[0].state, AlertState::Firing);
}

#[test]
fn two_slow_answers_far_apart_do_not_fire() {
    // The false page: one slow answer, half a minute of quiet, another slow answer.
    let mut e = AlertEngine::new(&[latency(10)], &apps(&["web"]));
    assert!(e.evaluate(&web(0, Some(2000.0))).is_empty());
    for s in 1..33 {
        assert!(e.evaluate(&web(s, None)).is_empty());
    }
    assert!(e.evaluate(&web(33, Some(2000.0))).is_empty());
    assert_eq!(e.status()[0].state, AlertState::Pending);
    assert_eq!(e.status()[0].since_unix_ms, Some(T0 + 33_000));
    // Without samples in between (herd was busy), the same.
    let mut e = AlertEngine::new(&[latency(10)], &apps(&["web"]));
    assert!(e.evaluate(&web(0, Some(2000.0))).is_empty());
    assert!(e.evaluate(&web(33, Some(2000.0))).is_empty());
    assert_eq!(e.status()[0].since_unix_ms, Some(T0 + 33_000));
    // Firing at warning: two critical answers a minute apart do not escalate it either.
    for s in 34..=43 {
        e.evaluate(&web(s, Some(2000.0)));
    }
    assert_eq!(e.status()[0].severity, Some(Severity::Warning));
    assert!(e.evaluate(&web(44, Some(5000.0))).is_empty());
    for s in 45..104 {
        assert!(e.evaluate(&web(s, None)).is_empty());
    }
    assert!(e.evaluate(&web(104, Some(5000.0))).is_empty());
    assert_eq!(e.status()[0].severity, Some(Severity::Warning));
}

#[test]
fn a_value_after_a_long_silence_starts_the_timers_again() {
    let mut e = AlertEngine::new(&[latency(5)], &apps(&["web"]));
    assert!(e.evaluate(&web(0, Some(2000.0))).is_empty());
    // No samples at all for ten minutes (herd was stopped): the condition has not been
    // observed for 5 s in a row.
    assert!(e.evaluate(&web(600, Some(2000.0))).is_empty());
    assert_eq!(e.status()[0].since_unix_ms, Some(T0 + 600_000));
    assert_eq!(e.evaluate(&web(605, Some(2000.0))).len(), 1);
}

#[test]
fn rules_without_an_app_watch_every_app_including_new_ones() {
    let mut pinned = rule("api_slow", AlertMetric::LatencyP95, None, Some(1.0), 0);
    pinned.app = Some("api".into());
    let mut e = AlertEngine::new(&[latency(0), pinned], &apps(&["web", "api"]));
    let keys: Vec<(String, String)> = e.status().into_iter().map(|s| (s.name, s.app)).collect();
    let want = [("slow", "web"), ("slow", "api"), ("api_slow", "api")];
    assert_eq!(keys, want.map(|(a, b)| (a.to_owned(), b.to_owned())));

    let n = e.evaluate(&p95(
        0,
        &[
            ("web", Some(100.0)),
            ("api", Some(2000.0)),
            ("new", Some(5000.0)),
        ],
    ));
    let got: Vec<(&str, &str, Severity)> = n
        .iter()
        .map(|n| (n.alert.as_str(), n.app.as_str(), n.severity))
        .collect();
    assert_eq!(
        got,
        [
            ("slow", "api", Severity::Warning),
            ("slow", "new", Severity::Critical),
            ("api_slow", "api", Severity::Critical)
        ]
    );
    assert_eq!(e.status().len(), 4);
    assert_eq!(e.status()[2].app, "new");
}

#[test]
fn reload_keeps_unchanged_alerts_and_resolves_removed_ones() {
    let cpu = rule("cpu", AlertMetric::Cpu, Some(60.0), None, 0);
    let mut e = AlertEngine::new(&[latency(0), cpu.clone()], &apps(&["web", "old"]));
    let sample = Sample {
        at_unix_ms: T0,
        apps: ["web", "old"]
            .map(|app| AppSample {
                app: app.into(),
                p95_ms: Some(5000.0),
                cpu_percent: 90.0,
                ..AppSample::default()
            })
            .to_vec(),
    };
    assert_eq!(e.evaluate(&sample).len(), 4);

    // "slow" gets a new threshold, "cpu" goes, and so does the app "old".
    let mut slow = latency(0);
    slow.critical = Some(10.0);
    let n = e.reload(&[slow], &apps(&["web"]), T0 + 1000);
    let got: Vec<(&str, &str, NotificationState, Option<f64>)> = n
        .iter()
        .map(|n| (n.alert.as_str(), n.app.as_str(), n.state, n.value))
        .collect();
    assert_eq!(
        got,
        [
            ("slow", "old", NotificationState::Resolved, None),
            ("cpu", "web", NotificationState::Resolved, None),
            ("cpu", "old", NotificationState::Resolved, None),
        ]
    );
    assert!(n[0].summary.contains("reload"), "{}", n[0].summary);
    let st = e.status();
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0].state, st[0].severity),
        (AlertState::Firing, Some(Severity::Critical))
    );
    // The next sample applies the new thresholds: 5 s is now only a warning.
    let n = e.evaluate(&web(2, Some(5000.0)));
    assert_eq!(states(&n), [(NotificationState::Firing, Severity::Warning)]);
    assert_eq!(n[0].previous, Some(Severity::Critical));
    assert_eq!(n[0].since_unix_ms, T0, "the episode goes on");
}

#[test]
fn built_in_rules_on_a_busy_app() {
    let mut e = AlertEngine::new(&Alerts::default().rules, &apps(&["web"]));
    let busy = |secs: i64| Sample {
        at_unix_ms: T0 + secs * 1000,
        apps: vec![AppSample {
            app: "web".into(),
            cpu_percent: 85.0,
            memory_percent: None,
            p95_ms: Some(250.0),
            ..AppSample::default()
        }],
    };
    for s in 0..30 {
        assert!(e.evaluate(&busy(s)).is_empty(), "second {s}");
    }
    let n = e.evaluate(&busy(30));
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].alert.as_str(), n[0].severity, n[0].threshold),
        ("cpu_high", Severity::Critical, 80.0)
    );
    assert_eq!(
        n[0].summary,
        "cpu of web is 85%, above the critical threshold of 80% for 30s"
    );
}

#[test]
fn metric_names_are_the_telemetry_names() {
    let names = AlertMetric::ALL.map(AlertMetric::name);
    assert_eq!(names, AppSample::METRICS);
    let sample = AppSample {
        memory_percent: Some(1.0),
        error_rate: Some(0.0),
        p50_ms: Some(1.0),
        p95_ms: Some(1.0),
        p99_ms: Some(1.0),
        ..AppSample::default()
    };
    for name in names {
        assert!(sample.metric(name).is_some(), "{name}");
    }
}

#[test]
fn the_engine_can_move_to_a_task() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<AlertEngine>();
    send_sync::<crate::Notifier>();
}

/// Sparse failing traffic: seconds with answers (all 5xx) between seconds with none. A second
/// without answers has no error rate, so it neither resolves a firing alert nor resets a
/// pending one (it used to count as 0 %).
#[test]
fn an_error_rate_alert_holds_across_seconds_without_answers() {
    let errors = |secs: i64, rate: Option<f64>| Sample {
        at_unix_ms: T0 + secs * 1000,
        apps: vec![AppSample {
            app: "web".into(),
            error_rate: rate,
            ..AppSample::default()
        }],
    };
    let rules = [
        rule("now", AlertMetric::ErrorRate, Some(0.05), None, 0),
        rule("later", AlertMetric::ErrorRate, Some(0.05), None, 5),
    ];
    let mut e = AlertEngine::new(&rules, &apps(&["web"]));
    let mut fired = Vec::new();
    for s in 0..12 {
        let rate = (s % 2 == 0).then_some(1.0);
        for n in e.evaluate(&errors(s, rate)) {
            fired.push((s, n.alert.clone(), n.state));
        }
    }
    assert_eq!(
        fired,
        [
            (0, "now".to_owned(), NotificationState::Firing),
            (6, "later".to_owned(), NotificationState::Firing),
        ],
        "no flapping, and the pending one fires after its for"
    );
}

#[test]
fn stopping_resolves_every_firing_alert_and_says_why() {
    let mut e = AlertEngine::new(&[latency(0)], &apps(&["web", "api"]));
    e.evaluate(&p95(0, &[("web", Some(5000.0)), ("api", Some(10.0))]));
    let n = e.stop(T0 + 7000);
    assert_eq!(n.len(), 1, "only the firing one: {n:?}");
    assert_eq!(
        (n[0].app.as_str(), n[0].state),
        ("web", NotificationState::Resolved)
    );
    assert_eq!(n[0].value, None);
    assert!(n[0].summary.contains("shutting down"), "{}", n[0].summary);
    assert!(e.stop(T0 + 8000).is_empty(), "resolved once");
}
