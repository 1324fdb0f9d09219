//! End-to-end tests of `[app.scaling]`: defaults, the issue's example, every key, and each error
//! with its line, key and hint.

use std::path::Path;
use std::time::Duration;

use crate::{
    parse, Config, ConfigError, Lead, Metric, MetricTarget, Panic, PredictiveMode, Scaling, Step,
    Warmup,
};

const APP: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n";

fn ok(text: &str) -> Config {
    match parse(text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("expected a valid config, got:\n{errs}"),
    }
}

fn scaling(section: &str) -> Scaling {
    ok(&format!("{APP}{section}")).apps[0]
        .scaling
        .clone()
        .expect("scaling is set")
}

/// The single error in the app's scaling section, checked for its line and key.
#[track_caller]
fn one(section: &str, line: usize, key: &str) -> ConfigError {
    let text = format!("{APP}{section}");
    let errs = match parse(&text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => panic!("expected errors, got {cfg:#?}"),
        Err(errs) => errs.0,
    };
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!((err.line, err.key.as_str()), (line, key), "{err}");
    assert!(err.col >= 1, "{err}");
    assert!(err.hint.is_some(), "every error has a hint: {err}");
    err
}

#[test]
fn absent_means_no_autoscaling() {
    assert_eq!(ok(APP).apps[0].scaling, None);
}

#[test]
fn empty_table_takes_the_defaults() {
    let s = scaling("[app.scaling]\n");
    assert_eq!(s, Scaling::default());
    assert_eq!((s.min, s.max), (1, 10));
    assert_eq!(
        s.targets,
        [MetricTarget {
            metric: Metric::Concurrency,
            value: 10.0
        }]
    );
    assert_eq!(s.interval, Duration::from_secs(1));
    assert!((s.tolerance - 0.1).abs() < 1e-12);
    assert_eq!(s.scale_up.window, Duration::ZERO);
    assert_eq!(s.scale_down.window, Duration::from_secs(300));
    assert_eq!(s.scale_up.max_step, [Step::Percent(100.0)]);
    assert_eq!(s.warmup, Warmup::Auto);
    assert_eq!(
        s.panic,
        Some(Panic {
            window: Duration::from_secs(6),
            threshold: 2.0,
            stable_window: Duration::from_secs(6)
        })
    );
    assert_eq!(s.idle_to_zero, Duration::from_secs(300));
    assert!(s.rules.is_empty() && s.schedules.is_empty());
    assert_eq!(s.predictive, None);
    assert!(s.cost_per_hour.abs() < f64::EPSILON);
}

#[test]
fn the_issue_example_parses() {
    let s = scaling(
        r#"
[app.scaling]
min = 1
max = 10
target = { concurrency = 10 }
interval = "1s"
tolerance = 0.1
scale_up = { window = "0s", max_step = "100%" }
scale_down = { window = "300s", max_step = "100%" }
warmup = "auto"
panic = { window = "6s", threshold = 2.0 }
idle_to_zero = "5m"

[[app.scaling.rule]]
metric = "cpu"
above = 80
below = 20
for = "2m"
step = 2

[[app.scaling.schedule]]
cron = "0 8 * * 1-5"
min = 4
tz = "Europe/Berlin"
"#,
    );
    let want = Scaling {
        rules: s.rules.clone(),
        schedules: s.schedules.clone(),
        ..Scaling::default()
    };
    assert_eq!(s, want);
    let r = &s.rules[0];
    assert_eq!(r.metric, Metric::Cpu);
    assert_eq!((r.above, r.below), (Some(80.0), Some(20.0)));
    assert_eq!(r.sustain, Duration::from_secs(120));
    assert_eq!(r.step, 2);
    assert_eq!(r.cooldown, Duration::from_secs(300));
    let sc = &s.schedules[0];
    assert_eq!(sc.cron.as_str(), "0 8 * * 1-5");
    assert_eq!(sc.tz_name, "Europe/Berlin");
    assert_eq!((sc.min, sc.max, sc.duration), (Some(4), None, None));
}

#[test]
fn every_key() {
    let text = r#"[[app]]
name = "web"
command = ["./app"]
max_memory = "1GiB"

[app.scaling]
min = 0
max = 40
target = { concurrency = 8, rps = 150.5, cpu = "70%", memory = "80%", latency_p95 = "250ms", queue_depth = 5, error_rate = "2%" }
interval = "500ms"
tolerance = 0
scale_up = { window = "10s", max_step = [4, "100%"] }
scale_down = { window = "2m", max_step = "10%" }
warmup = "30s"
panic = false
idle_to_zero = "90s"
predictive = { mode = "on", lead = "3m" }
cost_per_hour = 0.12

[[app.scaling.rule]]
metric = "memory"
above = "900MiB"
cooldown = "1m"

[[app.scaling.schedule]]
cron = "@daily"
min = 2
max = 50
duration = "8h"
"#;
    let s = ok(text).apps[0].scaling.clone().unwrap();
    assert_eq!((s.min, s.max), (0, 40));
    let t: Vec<(Metric, f64)> = s.targets.iter().map(|t| (t.metric, t.value)).collect();
    assert_eq!(
        t,
        [
            (Metric::Concurrency, 8.0),
            (Metric::Rps, 150.5),
            (Metric::Cpu, 70.0),
            (Metric::MemoryPercent, 80.0),
            (Metric::LatencyP95, 250.0),
            (Metric::QueueDepth, 5.0),
            (Metric::ErrorRate, 0.02),
        ]
    );
    assert_eq!(s.interval, Duration::from_millis(500));
    assert!(s.tolerance.abs() < f64::EPSILON);
    assert_eq!(
        s.scale_up.max_step,
        [Step::Instances(4), Step::Percent(100.0)]
    );
    assert_eq!(s.scale_up.step_limit(2), 4);
    assert_eq!(s.scale_up.step_limit(10), 10);
    assert_eq!(s.scale_down.step_limit(3), 1, "10 % of 3, rounded up");
    assert_eq!(s.scale_down.window, Duration::from_secs(120));
    assert_eq!(s.warmup, Warmup::Fixed(Duration::from_secs(30)));
    assert_eq!(s.panic, None);
    assert_eq!(s.idle_to_zero, Duration::from_secs(90));
    let p = s.predictive.unwrap();
    assert_eq!(p.mode, PredictiveMode::On);
    assert_eq!(p.lead, Lead::Fixed(Duration::from_secs(180)));
    assert!((s.cost_per_hour - 0.12).abs() < 1e-12);
    assert_eq!(s.rules[0].metric, Metric::Memory);
    assert_eq!(s.rules[0].above, Some(900.0 * 1_048_576.0));
    assert_eq!(s.rules[0].step, 1);
    assert_eq!(s.schedules[0].tz_name, "UTC");
    assert_eq!(s.schedules[0].duration, Some(Duration::from_secs(8 * 3600)));
}

#[test]
fn rules_alone_mean_no_default_target() {
    let s = scaling("[app.scaling]\n[[app.scaling.rule]]\nmetric = \"rps\"\nabove = 100\n");
    assert!(s.targets.is_empty());
    assert_eq!(s.rules.len(), 1);
    let s = scaling("[app.scaling]\nmin = 20\n");
    assert_eq!(s.max, 20, "max defaults to min when min is above 10");
}

#[test]
fn predictive_defaults() {
    let s = scaling("[app.scaling]\npredictive = {}\n");
    let p = s.predictive.unwrap();
    assert_eq!(p.mode, PredictiveMode::ForecastOnly, "AWS's default mode");
    assert_eq!(p.lead, Lead::Auto);
    let s = scaling("[app.scaling]\npanic = { threshold = 3 }\nwarmup = \"0s\"\n");
    assert_eq!(s.panic.unwrap().threshold, 3.0);
    assert_eq!(s.panic.unwrap().window, Duration::from_secs(6));
    assert_eq!(s.warmup, Warmup::Fixed(Duration::ZERO));
}

#[test]
fn bounds_errors() {
    let err = one("[app.scaling]\nmin = 5\nmax = 3\n", 6, "app[0].scaling.max");
    assert!(err.message.contains("max 3 is less than min 5"), "{err}");
    let err = one("[app.scaling]\nmax = 0\n", 5, "app[0].scaling.max");
    assert!(err.message.contains("at least 1"), "{err}");
    one("[app.scaling]\nmin = -1\n", 5, "app[0].scaling.min");
}

#[test]
fn target_errors() {
    let err = one("[app.scaling]\ntarget = {}\n", 5, "app[0].scaling.target");
    assert!(err.hint.unwrap().contains("concurrency"));
    let err = one(
        "[app.scaling]\ntarget = { concurrency = 0 }\n",
        5,
        "app[0].scaling.target.concurrency",
    );
    assert!(err.message.contains("greater than 0"), "{err}");
    let err = one(
        "[app.scaling]\ntarget = { concurency = 10 }\n",
        5,
        "app[0].scaling.target.concurency",
    );
    assert!(err.hint.unwrap().contains("did you mean \"concurrency\""));
    one(
        "[app.scaling]\ntarget = { latency_p95 = 200 }\n",
        5,
        "app[0].scaling.target.latency_p95",
    );
    let err = one(
        "[app.scaling]\ntarget = { memory = \"80%\" }\n",
        5,
        "app[0].scaling.target.memory",
    );
    assert!(err.hint.unwrap().contains("max_memory"));
    one(
        "[app.scaling]\ntarget = { error_rate = 5 }\n",
        5,
        "app[0].scaling.target.error_rate",
    );
    one(
        "[app.scaling]\ntolerance = 1.5\n",
        5,
        "app[0].scaling.tolerance",
    );
    one(
        "[app.scaling]\ncost_per_hour = -1\n",
        5,
        "app[0].scaling.cost_per_hour",
    );
}

#[test]
fn behaviour_errors() {
    let err = one(
        "[app.scaling]\nscale_up = { max_step = \"lots\" }\n",
        5,
        "app[0].scaling.scale_up.max_step",
    );
    assert!(err.message.contains("\"N\" or \"N%\""), "{err}");
    one(
        "[app.scaling]\nscale_down = { max_step = \"0%\" }\n",
        5,
        "app[0].scaling.scale_down.max_step",
    );
    one(
        "[app.scaling]\nscale_down = { window = \"5 minutes\" }\n",
        5,
        "app[0].scaling.scale_down.window",
    );
    one(
        "[app.scaling]\nwarmup = \"soon\"\n",
        5,
        "app[0].scaling.warmup",
    );
    one(
        "[app.scaling]\ninterval = \"0s\"\n",
        5,
        "app[0].scaling.interval",
    );
}

#[test]
fn panic_errors() {
    let err = one(
        "[app.scaling]\npanic = { threshold = 1.0 }\n",
        5,
        "app[0].scaling.panic.threshold",
    );
    assert!(err.message.contains("greater than 1"), "{err}");
    let err = one(
        "[app.scaling]\npanic = { windw = \"6s\" }\n",
        5,
        "app[0].scaling.panic.windw",
    );
    assert!(err.hint.unwrap().contains("did you mean \"window\""));
    one(
        "[app.scaling]\npanic = \"yes\"\n",
        5,
        "app[0].scaling.panic",
    );
    one(
        "[app.scaling]\npanic = { window = \"10s\", stable_window = \"5s\" }\n",
        5,
        "app[0].scaling.panic.stable_window",
    );
}

#[test]
fn the_stable_window_defaults_to_the_panic_window() {
    let s = scaling("[app.scaling]\npanic = { window = \"10s\" }\n");
    let p = s.panic.expect("panic is on");
    assert_eq!(p.stable_window, std::time::Duration::from_secs(10));
    let s = scaling("[app.scaling]\npanic = { window = \"2s\", stable_window = \"30s\" }\n");
    assert_eq!(
        s.panic.unwrap().stable_window,
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn predictive_errors() {
    let err = one(
        "[app.scaling]\npredictive = { mode = \"of\" }\n",
        5,
        "app[0].scaling.predictive.mode",
    );
    assert!(err.hint.unwrap().contains("did you mean \"on\""));
    one(
        "[app.scaling]\npredictive = { lead = \"soon\" }\n",
        5,
        "app[0].scaling.predictive.lead",
    );
}

#[test]
fn rule_errors() {
    let err = one(
        "[app.scaling]\n[[app.scaling.rule]]\nmetric = \"cpuu\"\nabove = 80\n",
        6,
        "app[0].scaling.rule[0].metric",
    );
    assert!(err.hint.unwrap().contains("did you mean \"cpu\""));
    one(
        "[app.scaling]\n[[app.scaling.rule]]\nabove = 80\n",
        5,
        "app[0].scaling.rule[0].metric",
    );
    one(
        "[app.scaling]\n[[app.scaling.rule]]\nmetric = \"cpu\"\n",
        5,
        "app[0].scaling.rule[0]",
    );
    let err = one(
        "[app.scaling]\n[[app.scaling.rule]]\nmetric = \"cpu\"\nabove = 50\nbelow = 60\n",
        8,
        "app[0].scaling.rule[0].below",
    );
    assert!(err.message.contains("must be less than above"), "{err}");
    one(
        "[app.scaling]\n[[app.scaling.rule]]\nmetric = \"cpu\"\nabove = 50\nstep = 0\n",
        8,
        "app[0].scaling.rule[0].step",
    );
    let err = one(
        "[app.scaling]\n[[app.scaling.rule]]\nmetric = \"cpu\"\nabove = 50\nfor = 2\n",
        8,
        "app[0].scaling.rule[0].for",
    );
    assert!(err.hint.unwrap().contains("\"2s\""));
}

#[test]
fn schedule_errors() {
    let err = one(
        "[app.scaling]\n[[app.scaling.schedule]]\ncron = \"0 8 * * 1-8\"\nmin = 2\n",
        6,
        "app[0].scaling.schedule[0].cron",
    );
    assert!(err.message.contains("day-of-week value 8"), "{err}");
    let err = one(
        "[app.scaling]\n[[app.scaling.schedule]]\ncron = \"0 8 * * *\"\nmin = 2\ntz = \"Europe/Berln\"\n",
        8,
        "app[0].scaling.schedule[0].tz",
    );
    assert!(
        err.hint.unwrap().contains("did you mean \"Europe/Berlin\""),
        "{}",
        err.message
    );
    one(
        "[app.scaling]\n[[app.scaling.schedule]]\ncron = \"0 8 * * *\"\n",
        5,
        "app[0].scaling.schedule[0]",
    );
    let err = one(
        "[app.scaling]\n[[app.scaling.schedule]]\ncron = \"0 8 * * *\"\nmin = 20\n",
        7,
        "app[0].scaling.schedule[0].min",
    );
    assert!(err.hint.unwrap().contains("add max = 20"));
    one(
        "[app.scaling]\n[[app.scaling.schedule]]\ncron = \"0 8 * * *\"\nmin = 2\nduration = \"0s\"\n",
        8,
        "app[0].scaling.schedule[0].duration",
    );
}

#[test]
fn scaling_needs_a_command() {
    let text = "[[app]]\nname = \"old\"\nservers = [\"127.0.0.1:80\"]\n[app.scaling]\nmax = 3\n";
    let errs = parse(text, "herd.toml", Path::new("/base")).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].key, "app[0].scaling");
    assert_eq!(errs[0].line, 4);
}

#[test]
fn the_example_file_autoscales_web() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/herd.toml"
    ));
    let cfg = crate::load(path).unwrap_or_else(|e| panic!("{e}"));
    let s = cfg.apps[0].scaling.as_ref().expect("web autoscales");
    assert_eq!(s.targets.len(), 2);
    assert_eq!(s.targets[1].metric, Metric::MemoryPercent);
    assert_eq!(s.rules.len(), 1);
    assert_eq!(s.schedules[0].tz_name, "Europe/Berlin");
    assert_eq!(
        s.predictive.map(|p| p.mode),
        Some(PredictiveMode::ForecastOnly)
    );
    assert_eq!(cfg.apps[1].scaling, None);
}
