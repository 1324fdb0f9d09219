//! End-to-end tests of `[alerts]` and `[[alert]]`: the built-in rules, every key, replacing a
//! built-in, and each error with its line, key and hint.

use std::path::Path;
use std::time::Duration;

use crate::{parse, AlertMetric, AlertRule, Alerts, Config, ConfigError};

const APPS: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\nmax_memory = \"512MiB\"\n\
                    [[app]]\nname = \"legacy\"\nservers = [\"127.0.0.1:7001\"]\n";

fn ok(text: &str) -> Config {
    match parse(&format!("{APPS}{text}"), "herd.toml", Path::new("/base")) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("expected a valid config, got:\n{errs}"),
    }
}

fn errs(text: &str) -> Vec<ConfigError> {
    match parse(&format!("{APPS}{text}"), "herd.toml", Path::new("/base")) {
        Ok(cfg) => panic!("expected errors, got {:#?}", cfg.alerts),
        Err(errs) => errs.0,
    }
}

/// The single error in `text` (after the 7 lines of `APPS`), checked for its line and key.
#[track_caller]
fn one(text: &str, line: usize, key: &str) -> ConfigError {
    let errs = errs(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!((err.line, err.key.as_str()), (line + 7, key), "{err}");
    assert!(err.col >= 1, "{err}");
    assert!(err.hint.is_some(), "every error has a hint: {err}");
    err
}

fn rule<'a>(cfg: &'a Config, name: &str) -> &'a AlertRule {
    cfg.alerts
        .rules
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}: {:#?}", cfg.alerts.rules))
}

#[test]
fn defaults_are_the_seeds_scaling_monitor() {
    let cfg = ok("");
    assert_eq!(cfg.alerts, Alerts::default());
    let a = &cfg.alerts;
    assert!(a.defaults);
    assert!(a.webhooks.is_empty());
    assert_eq!(a.webhook_timeout, Duration::from_secs(5));
    assert_eq!(a.webhook_retries, 5);
    let names: Vec<&str> = a.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["cpu_high", "memory_high", "latency_high"]);
    let cpu = rule(&cfg, "cpu_high");
    assert_eq!(cpu.metric, AlertMetric::Cpu);
    assert_eq!((cpu.warning, cpu.critical), (Some(60.0), Some(80.0)));
    let mem = rule(&cfg, "memory_high");
    assert_eq!(mem.metric, AlertMetric::Memory);
    assert_eq!((mem.warning, mem.critical), (Some(70.0), Some(90.0)));
    let lat = rule(&cfg, "latency_high");
    assert_eq!(lat.metric, AlertMetric::LatencyP95);
    // The seed reports a response time over 3000 ms with severity "warning".
    assert_eq!((lat.warning, lat.critical), (Some(3.0), None));
    for r in &a.rules {
        assert!(r.builtin && !r.below && r.app.is_none() && r.webhooks.is_empty());
        assert_eq!(r.sustain, Duration::from_secs(30));
    }
    assert_eq!(Alerts::builtin_rules(), a.rules);
}

#[test]
fn every_key() {
    let cfg = ok(r#"
[alerts]
defaults = false
webhooks = ["http://127.0.0.1:9000/all?token=abc", "http://127.0.0.1:9000/all?token=abc"]
webhook_timeout = "2s"
webhook_retries = 0

[[alert]]
name = "web_slow"
metric = "latency_p99"
app = "web"
warning = "500ms"
critical = 2
for = "1m"
webhooks = "http://hooks.internal:8081/herd"

[[alert]]
name = "no_capacity"
metric = "ready"
below = true
warning = 2
critical = 1

[[alert]]
name = "errors"
metric = "error_rate"
critical = "5%"

[[alert]]
name = "big"
metric = "rss_bytes"
warning = "1GiB"
critical = 2e9

[[alert]]
name = "hot.cpu"
metric = "cpu"
warning = "70%"
"#);
    let a = &cfg.alerts;
    assert!(!a.defaults);
    assert_eq!(a.webhooks.len(), 1, "repeats are dropped");
    assert_eq!(
        a.webhooks[0].as_str(),
        "http://127.0.0.1:9000/all?token=abc"
    );
    assert_eq!(a.webhook_timeout, Duration::from_secs(2));
    assert_eq!(a.webhook_retries, 0);
    let names: Vec<&str> = a.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["web_slow", "no_capacity", "errors", "big", "hot.cpu"]
    );

    let slow = rule(&cfg, "web_slow");
    assert_eq!(slow.metric, AlertMetric::LatencyP99);
    assert_eq!(slow.app.as_deref(), Some("web"));
    assert_eq!((slow.warning, slow.critical), (Some(0.5), Some(2.0)));
    assert_eq!(slow.sustain, Duration::from_secs(60));
    assert_eq!(slow.webhooks[0].redacted(), "http://hooks.internal:8081");
    assert!(!slow.builtin);

    let ready = rule(&cfg, "no_capacity");
    assert!(ready.below);
    assert_eq!((ready.warning, ready.critical), (Some(2.0), Some(1.0)));
    assert_eq!(ready.sustain, Duration::ZERO, "for defaults to 0s");
    assert!(ready.crosses(0.0, 1.0) && !ready.crosses(1.0, 1.0));

    assert_eq!(rule(&cfg, "errors").critical, Some(0.05));
    assert_eq!(rule(&cfg, "big").warning, Some(1_073_741_824.0));
    assert_eq!(rule(&cfg, "hot.cpu").warning, Some(70.0));
}

#[test]
fn an_alert_named_like_a_built_in_replaces_it() {
    let cfg =
        ok("[[alert]]\nname = \"latency_high\"\nmetric = \"latency_p95\"\ncritical = \"1s\"\n");
    let names: Vec<&str> = cfg.alerts.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["cpu_high", "memory_high", "latency_high"]);
    let lat = rule(&cfg, "latency_high");
    assert_eq!((lat.warning, lat.critical), (None, Some(1.0)));
    assert!(!lat.builtin);
    assert_eq!(lat.sustain, Duration::ZERO);
}

#[test]
fn quick_mode_keeps_the_built_ins() {
    let cfg = crate::quick(
        crate::Quick::new(vec!["./app".into()], "app"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(cfg.alerts, Alerts::default());
}

// ----- errors ----------------------------------------------------------------------------------

#[test]
fn missing_keys() {
    let err = one(
        "[[alert]]\nmetric = \"cpu\"\nwarning = 1\n",
        1,
        "alert[0].name",
    );
    assert!(err.message.contains("missing name"), "{err}");
    let err = one(
        "[[alert]]\nname = \"x\"\nwarning = 1\n",
        1,
        "alert[0].metric",
    );
    assert!(err.hint.unwrap().contains("latency_p95"));
    let err = one("[[alert]]\nname = \"x\"\nmetric = \"cpu\"\n", 1, "alert[0]");
    assert!(err.message.contains("warning or a critical"), "{err}");
    assert!(err.hint.unwrap().contains("warning = 60, critical = 80"));
}

#[test]
fn unknown_metric_lists_the_metrics() {
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"response_time\"\nwarning = \"1s\"\n",
        3,
        "alert[0].metric",
    );
    assert_eq!(err.message, "unknown metric \"response_time\"");
    let hint = err.hint.unwrap();
    assert!(hint.starts_with("did you mean \"latency_p95\"?"), "{hint}");
    assert!(hint.contains("rss_bytes"), "{hint}");
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"latency_p59\"\nwarning = 1\n",
        3,
        "alert[0].metric",
    );
    assert!(err
        .hint
        .unwrap()
        .starts_with("did you mean \"latency_p50\"?"));
}

#[test]
fn bad_names() {
    let err = one(
        "[[alert]]\nname = \"has space\"\nmetric = \"cpu\"\nwarning = 1\n",
        2,
        "alert[0].name",
    );
    assert!(err.message.contains("invalid alert name"), "{err}");
    let err = one(
        "[[alert]]\nname = \"a\"\nmetric = \"cpu\"\nwarning = 1\n[[alert]]\nname = \"a\"\nmetric = \"rps\"\nwarning = 1\n",
        6,
        "alert[1].name",
    );
    assert_eq!(
        err.message,
        "duplicate alert name \"a\" (first defined on line 9)"
    );
}

#[test]
fn unknown_app() {
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"cpu\"\napp = \"webb\"\nwarning = 1\n",
        4,
        "alert[0].app",
    );
    assert_eq!(err.message, "alert on unknown app \"webb\"");
    let hint = err.hint.unwrap();
    assert!(hint.starts_with("did you mean \"web\"?"), "{hint}");
    assert!(hint.contains("known apps: web, legacy"), "{hint}");
}

#[test]
fn memory_needs_max_memory() {
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"memory\"\napp = \"legacy\"\nwarning = 70\n",
        4,
        "alert[0].app",
    );
    assert!(err.message.contains("does not set"), "{err}");
    assert!(err.hint.unwrap().contains("rss_bytes"));
    // On an app with max_memory, or on every app, it is fine.
    ok("[[alert]]\nname = \"x\"\nmetric = \"memory\"\napp = \"web\"\nwarning = \"70%\"\n");
    ok("[[alert]]\nname = \"x\"\nmetric = \"memory\"\nwarning = 70\n");
}

#[test]
fn bad_thresholds() {
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"latency_p95\"\nwarning = \"3x\"\n",
        4,
        "alert[0].warning",
    );
    assert!(err.hint.unwrap().contains("\"2s\""));
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"latency_p95\"\nwarning = true\n",
        4,
        "alert[0].warning",
    );
    assert!(err.hint.unwrap().contains("\"3s\""));
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"cpu\"\ncritical = -5\n",
        4,
        "alert[0].critical",
    );
    assert_eq!(err.message, "critical must not be negative, got -5%");
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"error_rate\"\ncritical = 5\n",
        4,
        "alert[0].critical",
    );
    assert!(err.hint.unwrap().contains("\"5%\""));
    // Over 100 % could never fire.
    one(
        "[[alert]]\nname = \"x\"\nmetric = \"error_rate\"\nwarning = \"150%\"\n",
        4,
        "alert[0].warning",
    );
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"ready\"\ncritical = \"1\"\n",
        4,
        "alert[0].critical",
    );
    assert!(err.message.contains("for ready"), "{err}");
    one(
        "[[alert]]\nname = \"x\"\nmetric = \"rss_bytes\"\ncritical = \"1XB\"\n",
        4,
        "alert[0].critical",
    );
}

#[test]
fn thresholds_in_the_wrong_order() {
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"cpu\"\nwarning = 90\ncritical = 80\n",
        5,
        "alert[0].critical",
    );
    assert_eq!(err.message, "warning (90%) must be below critical (80%)");
    assert!(err.hint.unwrap().contains("below = true"));
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"ready\"\nbelow = true\nwarning = 1\ncritical = 2\n",
        6,
        "alert[0].critical",
    );
    assert_eq!(err.message, "warning (1) must be above critical (2)");
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"latency_p95\"\nwarning = \"1s\"\ncritical = \"1s\"\n",
        5,
        "alert[0].critical",
    );
    assert!(err.message.contains("(1s)"), "{err}");
}

#[test]
fn bad_webhooks() {
    let err = one(
        "[alerts]\nwebhooks = [\"https://hooks.slack.com/services/T0/B0/SECRET\"]\n",
        2,
        "alerts.webhooks[0]",
    );
    assert_eq!(
        err.message,
        "webhook URL uses https://, which herd does not support"
    );
    assert!(!err.to_string().contains("SECRET"), "{err}");
    assert!(err.hint.unwrap().contains("TLS"));
    one(
        "[[alert]]\nname = \"x\"\nmetric = \"cpu\"\nwarning = 1\nwebhooks = [\"http://ok/\", \"hooks.internal/x\"]\n",
        5,
        "alert[0].webhooks[1]",
    );
    one(
        "[[alert]]\nname = \"x\"\nmetric = \"cpu\"\nwarning = 1\nwebhooks = [1]\n",
        5,
        "alert[0].webhooks[0]",
    );
    let err = one("[alerts]\nwebhooks = 3\n", 2, "alerts.webhooks");
    assert!(err.message.contains("expected an array"), "{err}");
}

#[test]
fn bad_global_values() {
    one(
        "[alerts]\nwebhook_timeout = \"0s\"\n",
        2,
        "alerts.webhook_timeout",
    );
    one(
        "[alerts]\nwebhook_retries = -1\n",
        2,
        "alerts.webhook_retries",
    );
    let err = one("[alerts]\ndefaults = \"yes\"\n", 2, "alerts.defaults");
    assert!(err.message.contains("expected a boolean"), "{err}");
    let err = one("[alerts]\nwebhook = []\n", 2, "alerts.webhook");
    assert!(err.hint.unwrap().starts_with("did you mean \"webhooks\"?"));
    let err = one(
        "[[alert]]\nname = \"x\"\nmetric = \"cpu\"\nwarn = 1\n",
        4,
        "alert[0].warn",
    );
    assert!(err.hint.unwrap().contains("warning"));
}

#[test]
fn single_brackets_get_a_hint() {
    let err = one("[alert]\nname = \"x\"\n", 1, "alert");
    assert!(err.to_string().contains("[[alert]]"), "{err}");
}

#[test]
fn every_problem_is_reported() {
    let errs = errs(
        "[[alert]]\nname = \"a b\"\nmetric = \"cpu\"\napp = \"nope\"\nwarning = \"x\"\nfor = \"2\"\nwebhooks = [\"ftp://x\"]\n",
    );
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "alert[0].name",
            "alert[0].app",
            "alert[0].warning",
            "alert[0].for",
            "alert[0].webhooks[0]"
        ]
    );
}

#[test]
fn the_example_file_has_alerts() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/herd.toml"
    ));
    let cfg = crate::load(path).unwrap_or_else(|errs| panic!("{errs}"));
    let names: Vec<&str> = cfg.alerts.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cpu_high",
            "memory_high",
            "latency_high",
            "web_slow",
            "legacy_down"
        ]
    );
    assert_eq!(cfg.alerts.webhooks.len(), 1);
    assert_eq!(rule(&cfg, "web_slow").webhooks.len(), 1);
}
