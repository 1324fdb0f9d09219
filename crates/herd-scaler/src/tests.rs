//! Fixed scenarios for the engine: one per stage, each replayed tick by tick.

use std::time::Duration;

use herd_config::{
    Behavior, Cron, Lead, Metric, MetricTarget, Predictive, PredictiveMode, Rule, Scaling,
    Schedule, Step, Warmup,
};

use crate::{Direction, Engine, History, InstanceSample, ManualOverride, Observation, Reason};

/// 2024-01-01T00:00:00Z, a Monday.
const MONDAY: i64 = 1_704_067_200_000;
const S: u64 = 1000;

fn ready(id: usize, in_flight: f64) -> InstanceSample {
    InstanceSample {
        id: format!("web-{id}"),
        ready: true,
        age_ms: 3_600_000,
        in_flight,
        rps: in_flight * 10.0,
        cpu_percent: in_flight * 5.0,
        ..InstanceSample::default()
    }
}

fn starting(id: usize) -> InstanceSample {
    InstanceSample {
        id: format!("web-{id}"),
        ready: false,
        age_ms: 2_000,
        ..InstanceSample::default()
    }
}

/// `n` ready instances sharing `load` requests in flight.
fn obs(n: usize, load: f64) -> Observation {
    let per = if n == 0 { 0.0 } else { load / n as f64 };
    Observation {
        instances: (0..n).map(|i| ready(i, per)).collect(),
        current: u32::try_from(n).unwrap(),
        queue_depth: if n == 0 { load } else { 0.0 },
        ..Observation::default()
    }
}

fn cfg() -> Scaling {
    Scaling::default()
}

/// CPU above 80 % (and below `below`) for 10 s: `step` instances, then `cooldown_s`.
fn cpu_rule(below: Option<f64>, step: u32, cooldown_s: u64) -> Rule {
    Rule {
        metric: Metric::Cpu,
        above: Some(80.0),
        below,
        sustain: Duration::from_secs(10),
        step,
        cooldown: Duration::from_secs(cooldown_s),
    }
}

/// No scale-down window and no step limit: a scale-in shows in the very tick.
fn scale_in_at_once() -> Behavior {
    Behavior {
        window: Duration::ZERO,
        max_step: vec![Step::Percent(100.0)],
    }
}

/// Ticks once a second from `from` for `secs` with the same observation; returns the decisions.
fn run(e: &mut Engine, from: u64, secs: u64, o: &Observation) -> Vec<crate::Decision> {
    (0..secs)
        .map(|i| {
            let now = (from + i) * S;
            e.tick(now, MONDAY + i64::try_from(now).unwrap(), o)
        })
        .collect()
}

#[test]
fn step_load_scales_up_in_one_interval() {
    let mut e = Engine::new(&cfg());
    let d = e.tick(0, MONDAY, &obs(2, 20.0));
    assert_eq!(d.desired, 2);
    assert!(matches!(d.reason, Reason::Stable { .. }), "{d:?}");
    // 35 in flight over 2 instances, target 10: 4 at once.
    let d = e.tick(S, MONDAY + 1000, &obs(2, 35.0));
    assert_eq!(d.desired, 4);
    assert!(d.changed);
    assert!(
        matches!(&d.reason, Reason::Metric { metric, recommended: 4, .. } if metric == "concurrency"),
        "{d:?}"
    );
    assert!(
        d.explanation
            .starts_with("scale 2 → 4: concurrency is 17.5 per instance"),
        "{}",
        d.explanation
    );
    // 100 in flight: 10 wanted, 100 % per interval allows 4 → 8.
    let d = e.tick(2 * S, MONDAY + 2000, &obs(4, 100.0));
    assert_eq!(d.desired, 8);
    assert!(
        matches!(
            d.reason,
            Reason::StepLimit {
                direction: Direction::Up,
                limit: 4,
                recommended: 10
            }
        ),
        "{d:?}"
    );
}

#[test]
fn constant_load_is_stable() {
    let mut e = Engine::new(&cfg());
    // 47 in flight on 5 instances: 0.94 of target, within the 0.1 tolerance.
    for d in run(&mut e, 0, 600, &obs(5, 47.0)) {
        assert_eq!(d.desired, 5);
        assert!(!d.changed);
        assert!(!d.panic);
    }
}

#[test]
fn scale_down_waits_for_the_window() {
    let mut e = Engine::new(&cfg());
    run(&mut e, 0, 10, &obs(6, 60.0));
    let ds = run(&mut e, 10, 300, &obs(6, 20.0));
    for d in &ds[..ds.len() - 10] {
        assert_eq!(d.desired, 6);
        assert!(
            matches!(
                d.reason,
                Reason::Window {
                    direction: Direction::Down,
                    ..
                }
            ),
            "{d:?}"
        );
    }
    let d = run(&mut e, 310, 1, &obs(6, 20.0)).remove(0);
    assert_eq!(d.desired, 2, "{d:?}");
    assert_eq!(d.scale_in_candidates.len(), 4);
}

/// Knative's panic mode: a 6 s window, threshold 2, and this stable window.
fn panic(stable_s: u64) -> herd_config::Panic {
    herd_config::Panic {
        window: Duration::from_secs(6),
        threshold: 2.0,
        stable_window: Duration::from_secs(stable_s),
    }
}

#[test]
fn panic_mode_holds_the_count() {
    let c = Scaling {
        scale_down: scale_in_at_once(),
        // Knative's 60 s stable window (herd's default is the 6 s panic window).
        panic: Some(panic(60)),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    run(&mut e, 0, 5, &obs(2, 20.0));
    // A burst: 60 in flight on 2 ready → demand 6. Averaged over the 6 s panic window it
    // reaches 2 × 2 ready on the third tick.
    let burst = run(&mut e, 5, 6, &obs(2, 60.0));
    assert!(!burst[1].panic && burst[2].panic, "{burst:#?}");
    assert_eq!(burst[0].desired, 4, "limited by max_step");
    // The burst ends at once: in panic the count does not go down until 60 s after the
    // demand was last over the threshold.
    let last_over = burst.iter().rposition(|d| d.panic).unwrap() as u64 + 5;
    let hold = run(&mut e, 11, 50, &obs(4, 8.0));
    for (i, d) in hold.iter().enumerate() {
        assert!(d.panic);
        assert!(d.desired >= 4, "{d:?}");
        assert!(matches!(d.reason, Reason::Panic { .. }), "{d:?}");
        if i >= 6 {
            assert_eq!(d.desired, 4, "the burst has left the panic window: {d:?}");
        }
    }
    let later = run(&mut e, 61, 30, &obs(4, 8.0));
    let first_down = later.iter().position(|d| d.desired < 4).unwrap() as u64 + 61;
    assert!(first_down >= last_over + 60, "{first_down} vs {last_over}");
    assert!(!later.last().unwrap().panic);
}

#[test]
fn panic_never_adds_instances_once_the_burst_is_over() {
    // A short scale-down window: the fleet shrinks as soon as the burst ends, while the
    // panic window's average still holds the burst.
    let c = Scaling {
        scale_down: scale_in_at_once(),
        panic: Some(panic(6)),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    run(&mut e, 0, 3, &obs(6, 60.0));
    let after = run(&mut e, 3, 10, &obs(1, 0.0));
    for d in &after {
        assert!(d.desired <= 1, "no demand, yet scaled up: {d:#?}");
        assert!(!d.panic, "{d:#?}");
    }
}

#[test]
fn warmup_blocks_scale_in_and_counts_toward_capacity() {
    let c = Scaling {
        scale_down: scale_in_at_once(),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    run(&mut e, 0, 3, &obs(3, 30.0));
    // Load falls while a fourth instance is still starting: no scale-in.
    let mut o = obs(3, 5.0);
    o.instances.push(starting(3));
    o.current = 4;
    let d = e.tick(3 * S, MONDAY + 3000, &o);
    assert_eq!(d.desired, 4);
    assert_eq!(d.warming, 1);
    assert!(
        matches!(
            d.reason,
            Reason::Warmup {
                warming: 1,
                recommended: 1
            }
        ),
        "{d:?}"
    );
    // The starting instance counts toward capacity: 38 in flight on 3 ready + 1 starting = 4.
    let mut o = obs(3, 38.0);
    o.instances.push(starting(3));
    o.current = 4;
    assert_eq!(e.tick(4 * S, MONDAY + 4000, &o).desired, 4);
    // Ready now: warming for one interval ("auto"), then scale-in is allowed.
    let o = obs(4, 5.0);
    assert_eq!(e.tick(5 * S, MONDAY + 5000, &o).desired, 4);
    let d = e.tick(6 * S, MONDAY + 6000, &o);
    assert_eq!((d.desired, d.warming), (1, 0), "{d:?}");
}

#[test]
fn a_slot_never_ready_for_five_minutes_stops_blocking_scale_in() {
    // web-3 crash-loops (or is errored, with no process): every sample is young or age 0, but
    // it has not been ready for 5 minutes, so it is broken, not warming.
    for warmup in [Warmup::Auto, Warmup::Fixed(Duration::from_secs(60))] {
        let c = Scaling {
            scale_down: scale_in_at_once(),
            warmup,
            ..cfg()
        };
        let mut e = Engine::new(&c);
        let mut o = obs(3, 5.0);
        let mut looping = starting(3);
        looping.age_ms = 0;
        o.instances.push(looping);
        o.current = 4;
        let ds = run(&mut e, 0, 301, &o);
        // (The first interval, "auto" counts the ready ones as just seen ready too.)
        for d in &ds[..299] {
            assert_eq!(d.desired, 4, "{warmup:?} {d:?}");
            assert!(d.warming >= 1, "{warmup:?} {d:?}");
        }
        assert_eq!(ds[298].warming, 1, "{warmup:?} {:?}", ds[298]);
        let last = ds.last().unwrap();
        assert_eq!(last.warming, 0, "{warmup:?} {last:?}");
        assert!(last.desired < 4, "{warmup:?} {last:?}");
    }
}

#[test]
fn a_broken_instance_never_blocks_scale_in() {
    // web-3 is errored (or down, in maintenance, in a restart backoff): not warming, even in
    // its first tick and however young its slot.
    for warmup in [Warmup::Auto, Warmup::Fixed(Duration::from_secs(60))] {
        let c = Scaling {
            scale_down: scale_in_at_once(),
            warmup,
            ..cfg()
        };
        let mut e = Engine::new(&c);
        run(&mut e, 0, 2, &obs(3, 5.0));
        let mut o = obs(3, 5.0);
        let mut errored = starting(3);
        errored.broken = true;
        o.instances.push(errored);
        o.current = 4;
        let d = e.tick(2 * S, MONDAY + 2000, &o);
        assert_eq!(d.warming, 0, "{warmup:?} {d:?}");
        assert!(d.desired < 4, "{warmup:?} {d:?}");
    }
}

#[test]
fn fixed_warmup_keeps_new_instances_out_of_averages() {
    let c = Scaling {
        targets: vec![MetricTarget {
            metric: Metric::Cpu,
            value: 50.0,
        }],
        warmup: Warmup::Fixed(Duration::from_secs(60)),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    // A new instance burns 100 % CPU while it starts (JIT): it must not cause a scale-up.
    let mut o = obs(2, 20.0); // 50 % CPU each
    let mut hot = ready(2, 0.0);
    hot.age_ms = 5_000;
    hot.cpu_percent = 100.0;
    o.instances.push(hot);
    o.current = 3;
    let d = e.tick(0, MONDAY, &o);
    assert_eq!(d.desired, 3, "{d:?}");
    assert_eq!(d.warming, 1);
    assert!((d.per_metric[0].value - 50.0).abs() < 1e-9);
}

#[test]
fn a_count_at_max_names_what_was_asked_before_the_step_limit() {
    let c = Scaling {
        max: 6,
        scale_up: Behavior {
            window: Duration::ZERO,
            max_step: vec![Step::Instances(1)],
        },
        ..cfg()
    };
    let mut e = Engine::new(&c);
    // 180 in flight on 6, target 10: 18 asked for; the step limit says 7, max says 6.
    let d = e.tick(0, MONDAY, &obs(6, 180.0));
    assert_eq!(d.desired, 6);
    assert!(
        matches!(
            d.reason,
            Reason::Bounds {
                recommended: 18,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn idle_to_zero_and_back() {
    let c = Scaling {
        min: 0,
        idle_to_zero: Duration::from_secs(60),
        scale_down: scale_in_at_once(),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    run(&mut e, 0, 5, &obs(2, 15.0));
    let idle = run(&mut e, 5, 59, &obs(2, 0.0));
    for d in &idle[1..] {
        assert_eq!(d.desired, 1, "one instance stays until idle_to_zero: {d:?}");
    }
    assert!(
        matches!(idle[10].reason, Reason::IdleToZero { .. }),
        "{:?}",
        idle[10]
    );
    let d = run(&mut e, 64, 1, &obs(1, 0.0)).remove(0);
    assert_eq!(d.desired, 0, "{d:?}");
    assert!(
        d.explanation.contains("no traffic for 60s"),
        "{}",
        d.explanation
    );
    let d = run(&mut e, 65, 1, &obs(0, 0.0)).remove(0);
    assert_eq!(d.desired, 0);
    // At zero, the reason to stay there is the lack of traffic, not a metric's tolerance.
    assert!(matches!(d.reason, Reason::IdleToZero { .. }), "{d:?}");
    // Three requests wait in the gateway: scale from zero at once.
    let d = run(&mut e, 66, 1, &obs(0, 3.0)).remove(0);
    assert_eq!(d.desired, 1);
    assert!(matches!(d.reason, Reason::ScaleFromZero { .. }), "{d:?}");
}

#[test]
fn schedule_raises_min_in_its_time_zone() {
    let c = Scaling {
        schedules: vec![Schedule {
            cron: Cron::parse("0 8 * * 1-5").unwrap(),
            tz: jiff::tz::TimeZone::get("Europe/Berlin").unwrap(),
            tz_name: "Europe/Berlin".into(),
            min: Some(4),
            max: None,
            duration: Some(Duration::from_secs(3600)),
        }],
        scale_down: scale_in_at_once(),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    let hour = 3_600_000i64;
    // 06:59 UTC = 07:59 Berlin: not yet.
    let d = e.tick(0, MONDAY + 7 * hour - 60_000, &obs(1, 5.0));
    assert_eq!((d.desired, d.bounds.min), (1, 1));
    // 07:00 UTC = 08:00 Berlin.
    let d = e.tick(S, MONDAY + 7 * hour, &obs(1, 5.0));
    assert_eq!((d.desired, d.bounds.min), (4, 4));
    assert!(
        matches!(
            &d.reason,
            Reason::Schedule {
                index: 0,
                min: 4,
                ..
            }
        ),
        "{d:?}"
    );
    assert!(d.explanation.contains("0 8 * * 1-5"), "{}", d.explanation);
    // An hour later it has ended (the second tick: the new instances warmed up for one).
    e.tick(2 * S, MONDAY + 8 * hour, &obs(4, 5.0));
    let d = e.tick(3 * S, MONDAY + 8 * hour + 1000, &obs(4, 5.0));
    assert_eq!((d.desired, d.bounds.min), (1, 1), "{d:?}");
}

/// A day of history where demand is 2 instances, and 10 from 12:00 to 13:00.
fn lunch_history() -> History {
    let day0 = MONDAY / 60_000;
    let minutes: Vec<(i64, f64)> = (0..1440)
        .map(|m| (day0 + m, if (720..780).contains(&m) { 10.0 } else { 2.0 }))
        .collect();
    History::restore(&minutes)
}

fn predictive(mode: PredictiveMode) -> Scaling {
    Scaling {
        predictive: Some(Predictive {
            mode,
            lead: Lead::Fixed(Duration::from_secs(120)),
        }),
        ..cfg()
    }
}

#[test]
fn forecast_scales_out_ahead_of_a_daily_peak() {
    let mut e = Engine::new(&predictive(PredictiveMode::On));
    e.restore_history(lunch_history());
    let day = 86_400_000i64;
    // The next day at 11:58: demand is still 2, but 10 is forecast within the 2-minute lead.
    let at = MONDAY + day + (11 * 60 + 58) * 60_000;
    let d = e.tick(0, at, &obs(2, 20.0));
    let f = d.forecast.clone().unwrap();
    assert!(f.acting && f.mode == "on", "{f:?}");
    assert!(f.demand.unwrap() >= 9.0, "{f:?}");
    assert!(
        matches!(d.reason, Reason::StepLimit { .. } | Reason::Forecast { .. }),
        "{d:?}"
    );
    assert_eq!(d.desired, 4, "max_step still applies");
    let d = e.tick(S, at + 1000, &obs(4, 20.0));
    assert_eq!(d.desired, 8);
    // At 11:50 nothing is forecast beyond what the metrics ask.
    let mut e = Engine::new(&predictive(PredictiveMode::On));
    e.restore_history(lunch_history());
    let d = e.tick(0, MONDAY + day + (11 * 60 + 50) * 60_000, &obs(2, 20.0));
    assert_eq!(d.desired, 2, "{d:?}");
}

#[test]
fn forecast_only_reports() {
    let mut e = Engine::new(&predictive(PredictiveMode::ForecastOnly));
    e.restore_history(lunch_history());
    let at = MONDAY + 86_400_000 + (11 * 60 + 58) * 60_000;
    let d = e.tick(0, at, &obs(2, 20.0));
    assert_eq!(d.desired, 2);
    let f = d.forecast.unwrap();
    assert!(!f.acting && f.mode == "forecast_only");
    assert!(f.demand.unwrap() >= 9.0);
}

#[test]
fn manual_and_pause() {
    let mut e = Engine::new(&cfg());
    let mut o = obs(3, 30.0);
    o.manual = Some(ManualOverride {
        instances: 50,
        reason: "launch day".into(),
    });
    let d = e.tick(0, MONDAY, &o);
    assert_eq!(d.desired, 10, "clamped to max");
    assert!(d.explanation.contains("launch day"), "{}", d.explanation);
    let mut o = obs(12, 0.0);
    o.paused = true;
    let d = e.tick(S, MONDAY + 1000, &o);
    assert_eq!((d.desired, d.changed), (12, false));
    assert_eq!(d.reason, Reason::Paused);
}

#[test]
fn rules_fire_after_for_and_hold_scale_in() {
    let c = Scaling {
        targets: Vec::new(),
        rules: vec![cpu_rule(Some(20.0), 2, 30)],
        ..cfg()
    };
    let mut e = Engine::new(&c);
    // 18 in flight each → 90 % CPU. The first tick has no measured instance (all warming), so
    // the 10 s of `for` start on the second.
    let ds = run(&mut e, 0, 12, &obs(2, 36.0));
    assert!(ds[..11].iter().all(|d| d.desired == 2));
    assert_eq!(ds[11].desired, 4);
    assert!(
        matches!(
            ds[11].reason,
            Reason::Rule {
                index: 0,
                direction: Direction::Up,
                ..
            }
        ),
        "{:?}",
        ds[11]
    );
    // Cooldown: still hot on 4, but no second step until 30 s later.
    let ds = run(&mut e, 12, 30, &obs(4, 72.0));
    assert!(
        ds[..29].iter().all(|d| d.desired == 4),
        "{:?}",
        ds.iter().map(|d| d.desired).collect::<Vec<_>>()
    );
    assert_eq!(ds[29].desired, 6);
    // Cold: 2 % CPU. The down rule fires after its `for` and cooldown.
    let ds = run(&mut e, 42, 41, &obs(6, 2.4));
    assert!(ds.iter().any(|d| d.desired == 4
        && matches!(
            d.reason,
            Reason::Rule {
                direction: Direction::Down,
                ..
            }
        )));
}

#[test]
fn a_rule_moves_by_its_own_step_whatever_max_step_says() {
    // `max_step` limits what targets ask for; a rule's `step` is its own amount.
    let c = Scaling {
        targets: Vec::new(),
        rules: vec![cpu_rule(Some(20.0), 3, 30)],
        scale_up: Behavior {
            window: Duration::ZERO,
            max_step: vec![Step::Instances(1)],
        },
        scale_down: Behavior {
            window: Duration::ZERO,
            max_step: vec![Step::Instances(1)],
        },
        ..cfg()
    };
    let mut e = Engine::new(&c);
    let ds = run(&mut e, 0, 12, &obs(2, 36.0));
    assert_eq!(ds[11].desired, 5, "{:?}", ds[11]);
    assert!(matches!(ds[11].reason, Reason::Rule { .. }), "{:?}", ds[11]);
    let ds = run(&mut e, 12, 60, &obs(5, 1.0));
    assert!(
        ds.iter().any(|d| d.desired == 2),
        "{:?}",
        ds.iter().map(|d| d.desired).collect::<Vec<_>>()
    );
}

#[test]
fn a_rule_scale_out_waits_the_scale_down_window_before_the_targets_undo_it() {
    // Concurrency asks for 1 throughout; a rate rule scales out 1 → 3. The targets may not
    // take that back before a whole scale-down window has passed since.
    let c = Scaling {
        targets: vec![MetricTarget {
            metric: Metric::Concurrency,
            value: 2.0,
        }],
        rules: vec![Rule {
            metric: Metric::Rps,
            above: Some(20.0),
            below: Some(5.0),
            sustain: Duration::from_secs(3),
            step: 2,
            cooldown: Duration::from_secs(30),
        }],
        scale_down: Behavior {
            window: Duration::from_secs(20),
            max_step: vec![Step::Instances(1)],
        },
        warmup: Warmup::Fixed(Duration::ZERO),
        ..cfg()
    };
    let busy = |n: usize| Observation {
        instances: (0..n)
            .map(|i| InstanceSample {
                rps: 40.0 / n as f64,
                in_flight: 0.5 / n as f64,
                ..ready(i, 0.0)
            })
            .collect(),
        current: u32::try_from(n).unwrap(),
        ..Observation::default()
    };
    let mut e = Engine::new(&c);
    let ds = run(&mut e, 0, 6, &busy(1));
    let fired = ds
        .iter()
        .position(|d| d.desired == 3)
        .expect("the rule scales out") as u64;
    let ds = run(&mut e, fired + 1, 18, &busy(3));
    assert!(
        ds.iter().all(|d| d.desired == 3),
        "{:?}",
        ds.iter()
            .map(|d| (d.desired, d.explanation.clone()))
            .collect::<Vec<_>>()
    );
    // After the window, the targets scale in, as far as the rule's `above` lets them.
    let ds = run(&mut e, fired + 19, 10, &busy(3));
    assert!(
        ds.iter().any(|d| d.desired == 2),
        "{:?}",
        ds.iter().map(|d| d.desired).collect::<Vec<_>>()
    );
}

#[test]
fn a_rule_clamped_by_min_does_not_delay_the_next_scale_out() {
    // Overnight the `below` side asks for 0 again and again; `min = 1` keeps 1. A spike must
    // then scale out after its `for`, not after a cooldown those firings started.
    let c = Scaling {
        targets: Vec::new(),
        rules: vec![cpu_rule(Some(20.0), 1, 300)],
        warmup: Warmup::Fixed(Duration::ZERO),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    let quiet = run(&mut e, 0, 60, &obs(1, 0.4));
    assert!(quiet.iter().all(|d| d.desired == 1));
    let hot = run(&mut e, 60, 12, &obs(1, 18.0));
    assert_eq!(hot[10].desired, 2, "{:?}", hot[10]);
}

#[test]
fn a_held_back_scale_in_says_what_the_rule_would_see() {
    let c = Scaling {
        targets: vec![MetricTarget {
            metric: Metric::Concurrency,
            value: 20.0,
        }],
        rules: vec![cpu_rule(None, 1, 60)],
        scale_down: scale_in_at_once(),
        warmup: Warmup::Fixed(Duration::ZERO),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    // 10 in flight each → 50 % CPU on 4; concurrency asks for 2, where CPU would be 100 %.
    let d = e.tick(0, MONDAY, &obs(4, 40.0));
    assert_eq!(d.desired, 3, "{d:?}");
    assert!(
        matches!(
            d.reason,
            Reason::RuleHoldBack {
                index: 0,
                asked: 2,
                ..
            }
        ),
        "{d:?}"
    );
    assert!(
        d.explanation
            .contains("at 2 instances cpu would be 100 per instance, above rule 0's 80"),
        "{}",
        d.explanation
    );
}

#[test]
fn missing_metrics_keep_the_count() {
    let c = Scaling {
        targets: vec![MetricTarget {
            metric: Metric::LatencyP95,
            value: 200.0,
        }],
        ..cfg()
    };
    let mut e = Engine::new(&c);
    let d = e.tick(0, MONDAY, &obs(3, 30.0));
    assert_eq!(d.desired, 3);
    assert_eq!(d.reason, Reason::NoMetrics);
    assert_eq!(d.per_metric[0].recommended, None);
}

#[test]
fn scale_in_picks_the_idlest() {
    let c = Scaling {
        scale_down: scale_in_at_once(),
        warmup: Warmup::Fixed(Duration::ZERO),
        ..cfg()
    };
    let mut e = Engine::new(&c);
    let mut o = obs(4, 0.0);
    for (i, inst) in o.instances.iter_mut().enumerate() {
        inst.in_flight = [3.0, 0.0, 1.0, 0.0][i];
        inst.age_ms = [10, 20, 30, 5][i] * 1000;
    }
    let d = e.tick(0, MONDAY, &o);
    assert_eq!(d.desired, 1);
    assert_eq!(d.scale_in_candidates, ["web-3", "web-1", "web-2"]);
}

#[test]
fn decisions_serialize_to_json() {
    let mut e = Engine::new(&predictive(PredictiveMode::On));
    let d = e.tick(0, MONDAY, &obs(2, 35.0));
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["desired"], 4);
    assert_eq!(json["reason"]["kind"], "metric");
    assert_eq!(d.reason.kind(), "metric");
    assert_eq!(json["per_metric"][0]["metric"], "concurrency");
    assert_eq!(json["forecast"]["mode"], "on");
    assert!(json["explanation"]
        .as_str()
        .unwrap()
        .contains("concurrency"));
}

#[test]
fn reconfigure_keeps_history() {
    let mut e = Engine::new(&predictive(PredictiveMode::On));
    e.restore_history(lunch_history());
    let n = e.history().len();
    e.reconfigure(&Scaling {
        max: 20,
        ..predictive(PredictiveMode::On)
    });
    assert_eq!(e.history().len(), n);
    assert_eq!(e.config().max, 20);
}

#[test]
fn a_metric_no_instance_reports_serializes_as_null() {
    let c = Scaling {
        targets: vec![MetricTarget {
            metric: Metric::LatencyP95,
            value: 200.0,
        }],
        ..cfg()
    };
    let mut e = Engine::new(&c);
    // No latency figure from any instance (no traffic).
    let d = e.tick(0, MONDAY, &obs(2, 0.0));
    let v = serde_json::to_value(&d.per_metric[0]).unwrap();
    assert_eq!(v["value"], serde_json::Value::Null, "{v}");
    assert_eq!(v["recommended"], serde_json::Value::Null, "{v}");
    assert_eq!(v["target"], 200.0);
}
