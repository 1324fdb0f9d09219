//! The simulator on small traces: reports add up, HPA's defaults react later than herd's
//! policy, and the shipped traces parse.

use herd_config::{Metric, MetricTarget, Scaling};

use super::*;

fn step_trace() -> Trace {
    // 10 minutes at 200 rps, 10 minutes at 1500 rps, 10 minutes at 200 rps.
    let mut csv = String::from("time,rps\n");
    for t in (0..1800).step_by(10) {
        let v = if (600..1200).contains(&t) { 1500 } else { 200 };
        csv.push_str(&format!("{t},{v}\n"));
    }
    Trace::parse(&csv).unwrap()
}

fn policy() -> Scaling {
    Scaling {
        min: 1,
        max: 40,
        targets: vec![MetricTarget {
            metric: Metric::Concurrency,
            value: 8.0,
        }],
        cost_per_hour: 0.5,
        ..Scaling::default()
    }
}

#[test]
fn herd_meets_a_step_sooner_than_hpa_defaults() {
    let trace = step_trace();
    let herd = run(&policy(), &trace, &SimOptions::new(100.0));
    let hpa = run(
        &policy(),
        &trace,
        &SimOptions {
            policy: Policy::HpaDefault,
            ..SimOptions::new(100.0)
        },
    );
    let (h, k) = (&herd.report, &hpa.report);
    assert_eq!(h.policy, "herd");
    assert_eq!(k.policy, "hpa-default");
    assert!((h.duration_s - 1800.0).abs() < 1e-9, "{h:?}");
    assert!(
        h.unmet_demand_seconds > 0.0,
        "a 10 s start time cannot be hidden: {h:?}"
    );
    assert!(
        h.unmet_demand_seconds * 3.0 < k.unmet_demand_seconds,
        "herd {h:?}\nhpa {k:?}"
    );
    assert!(
        h.peak_instances >= 19,
        "1500 rps at 80 rps per instance: {h:?}"
    );
    assert!((h.cost - h.instance_hours * 0.5).abs() < 1e-9);
    assert!((h.mean_instances * h.duration_s / 3600.0 - h.instance_hours).abs() < 1e-6);
    assert!(h.scaling_actions >= 2);
    assert!(herd.svg.starts_with("<svg") && herd.svg.contains("herd:"));
    assert_eq!(herd.svg.matches("<polyline").count(), 3);
}

#[test]
fn constant_load_costs_its_capacity_and_nothing_more() {
    let trace = Trace::parse("time,rps\n0,400\n3600,400\n").unwrap();
    let r = run(&policy(), &trace, &SimOptions::new(100.0)).report;
    assert_eq!(r.unmet_demand_seconds, 0.0, "{r:?}");
    assert_eq!(r.scaling_actions, 0, "{r:?}");
    // 400 rps at 100 ms = 40 in flight; target 8 → 5 instances for two hours.
    assert!((r.instance_hours - 10.0).abs() < 1e-6, "{r:?}");
}

#[test]
fn concurrency_traces() {
    let trace = Trace::parse("time,concurrency\n0,20\n300,90\n900,20\n1200,20\n").unwrap();
    let opts = SimOptions::new(10.0);
    let r = run(&policy(), &trace, &opts).report;
    assert!(r.peak_instances >= 12, "{r:?}");
    assert!(
        r.unmet_demand_seconds > 0.0 && r.unmet_demand_seconds < 60.0,
        "{r:?}"
    );
}

#[test]
fn default_capacity_puts_the_target_at_80_percent() {
    let p = policy();
    assert!((SimOptions::default_capacity(&p, TraceKind::Concurrency, 0.1) - 10.0).abs() < 1e-9);
    assert!((SimOptions::default_capacity(&p, TraceKind::Rps, 0.1) - 100.0).abs() < 1e-9);
    let rps = Scaling {
        targets: vec![MetricTarget {
            metric: Metric::Rps,
            value: 40.0,
        }],
        ..policy()
    };
    assert!((SimOptions::default_capacity(&rps, TraceKind::Rps, 0.1) - 50.0).abs() < 1e-9);
}

#[test]
fn hpa_defaults_keep_targets_and_bounds() {
    let p = Scaling { min: 0, ..policy() };
    let h = hpa_default(&p);
    assert_eq!((h.min, h.max), (1, 40));
    assert_eq!(h.targets, p.targets);
    assert_eq!(h.interval, Duration::from_secs(15));
    assert_eq!(h.scale_up.step_limit(2), 4);
    assert_eq!(h.scale_up.step_limit(10), 10);
    assert_eq!(h.scale_down.window, Duration::from_secs(300));
    assert!(h.panic.is_none() && h.predictive.is_none() && h.rules.is_empty());
}

#[test]
fn shipped_traces_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/traces");
    for (name, rows, end) in [
        ("step_spike.csv", 3600, 3600.0),
        ("daily_sine_14d.csv", 14 * 1440, 14.0 * 86_400.0),
        ("flash_crowd.csv", 7200, 7200.0),
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let t = Trace::parse(&text).unwrap();
        assert_eq!(t.kind, TraceKind::Rps, "{name}");
        assert_eq!(t.points.len(), rows, "{name}");
        assert!((t.end_s() - end).abs() < 1e-6, "{name}: {}", t.end_s());
    }
}
