//! Property tests of the engine, checked against the policy it was given:
//!
//! - bounds always hold (the config's, as raised by schedules);
//! - constant load never flaps (target tracking: the count moves in one direction only, then
//!   settles; with step rules one overshoot correction is allowed);
//! - within tolerance of every target, nothing changes;
//! - no scale-in during panic or warmup;
//! - predictive scaling never scales in: with the same inputs, a forecasting engine never wants
//!   fewer instances than one without, and a scale-in that names the forecast is one the
//!   forecast held up (the metrics asked for fewer).

use std::time::Duration;

use herd_config::{
    Behavior, Cron, Lead, Metric, MetricTarget, Panic, Predictive, PredictiveMode, Rule, Scaling,
    Schedule, Step, Warmup,
};
use herd_scaler::{Engine, History, InstanceSample, ManualOverride, Observation, Reason};
use proptest::prelude::*;

/// 2024-01-01T00:00:00Z, a Monday.
const MONDAY: i64 = 1_704_067_200_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u32..10).prop_map(Step::Instances),
        (10u32..300).prop_map(|p| Step::Percent(f64::from(p))),
    ]
}

fn behavior(max_window: u64) -> impl Strategy<Value = Behavior> {
    (0..=max_window, prop::collection::vec(step(), 1..3)).prop_map(|(w, max_step)| Behavior {
        window: secs(w),
        max_step,
    })
}

fn targets() -> impl Strategy<Value = Vec<MetricTarget>> {
    (
        prop::option::of(1u32..40),
        prop::option::of(20u32..90),
        prop::option::of(50u32..400),
    )
        .prop_map(|(conc, cpu, rps)| {
            let mut t = Vec::new();
            if let Some(c) = conc {
                t.push(MetricTarget {
                    metric: Metric::Concurrency,
                    value: f64::from(c),
                });
            }
            if let Some(c) = cpu {
                t.push(MetricTarget {
                    metric: Metric::Cpu,
                    value: f64::from(c),
                });
            }
            if let Some(r) = rps {
                t.push(MetricTarget {
                    metric: Metric::Rps,
                    value: f64::from(r),
                });
            }
            if t.is_empty() {
                t.push(MetricTarget {
                    metric: Metric::Concurrency,
                    value: 10.0,
                });
            }
            t
        })
}

/// Threshold rules on proportional metrics (CPU), `below` well under `above`.
fn rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(
        (40u32..95, 1u32..5, 0u64..20, 1u32..4, 0u64..60).prop_map(
            |(above, div, sustain, step, cooldown)| Rule {
                metric: Metric::Cpu,
                above: Some(f64::from(above)),
                below: Some(f64::from(above) / f64::from(div + 2)),
                sustain: secs(sustain),
                step,
                cooldown: secs(cooldown),
            },
        ),
        0..2,
    )
}

fn schedules() -> impl Strategy<Value = Vec<Schedule>> {
    prop::collection::vec(
        (
            1u32..10,
            0u32..20,
            prop::option::of(0u32..30),
            prop::option::of(1u64..600),
        )
            .prop_map(|(every, min, max, duration)| Schedule {
                cron: Cron::parse(&format!("*/{every} * * * *")).unwrap(),
                tz: jiff::tz::TimeZone::UTC,
                tz_name: "UTC".into(),
                min: Some(min),
                max: max.map(|m| m.max(min)),
                duration: duration.map(secs),
            }),
        0..3,
    )
}

/// Any valid policy. `tolerance` and `threshold` are kept apart so that "within tolerance"
/// cannot also mean "panic".
fn scaling(with_rules: bool) -> impl Strategy<Value = Scaling> {
    (
        (
            0u32..4,
            1u32..25,
            targets(),
            0u32..30,
            behavior(30),
            behavior(120),
        ),
        (
            prop_oneof![
                Just(Warmup::Auto),
                (0u64..30).prop_map(|s| Warmup::Fixed(secs(s)))
            ],
            // Thresholds from 1.5: above 1 + the largest tolerance generated (0.29).
            prop::option::of((2u64..10, 15u32..40, 10u64..90)),
            5u64..120,
            if with_rules {
                rules().boxed()
            } else {
                Just(Vec::new()).boxed()
            },
            prop::option::of(30u64..600),
        ),
    )
        .prop_map(
            |((min, span, targets, tol, up, down), (warmup, panic, idle, rules, lead))| Scaling {
                min,
                max: (min + span).max(1),
                targets,
                interval: secs(1),
                tolerance: f64::from(tol) / 100.0,
                scale_up: up,
                scale_down: down,
                warmup,
                panic: panic.map(|(w, t, stable)| Panic {
                    window: secs(w),
                    threshold: f64::from(t) / 10.0,
                    stable_window: secs(stable.max(w)),
                }),
                idle_to_zero: secs(idle),
                rules,
                schedules: Vec::new(),
                predictive: lead.map(|l| Predictive {
                    mode: PredictiveMode::On,
                    lead: Lead::Fixed(secs(l)),
                }),
                ..Scaling::default()
            },
        )
}

/// One instance as the test generates it.
#[derive(Debug, Clone)]
struct Inst {
    ready: bool,
    age_s: u64,
    in_flight: f64,
    cpu: f64,
}

fn inst() -> impl Strategy<Value = Inst> {
    (any::<bool>(), 0u64..120, 0u32..60, 0u32..200).prop_map(|(ready, age_s, f, cpu)| Inst {
        ready,
        age_s,
        in_flight: f64::from(f),
        cpu: f64::from(cpu),
    })
}

/// One tick's observation: arbitrary instances, queue and switches.
#[derive(Debug, Clone)]
struct Tick {
    instances: Vec<Inst>,
    queue: u32,
    manual: Option<u32>,
    paused: bool,
}

fn tick(max_current: usize) -> impl Strategy<Value = Tick> {
    (
        prop::collection::vec(inst(), 0..=max_current),
        prop_oneof![4 => Just(0u32), 1 => 0u32..100],
        prop_oneof![9 => Just(None), 1 => (0u32..40).prop_map(Some)],
        prop_oneof![9 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(instances, queue, manual, paused)| Tick {
            instances,
            queue,
            manual,
            paused,
        })
}

fn observation(t: &Tick) -> Observation {
    Observation {
        instances: t
            .instances
            .iter()
            .enumerate()
            .map(|(i, x)| InstanceSample {
                id: format!("web-{i}"),
                ready: x.ready,
                age_ms: x.age_s * 1000,
                in_flight: if x.ready { x.in_flight } else { 0.0 },
                rps: if x.ready { x.in_flight * 10.0 } else { 0.0 },
                cpu_percent: x.cpu,
                ..InstanceSample::default()
            })
            .collect(),
        current: u32::try_from(t.instances.len()).unwrap(),
        queue_depth: f64::from(t.queue),
        manual: t.manual.map(|instances| ManualOverride {
            instances,
            reason: "test".into(),
        }),
        paused: t.paused,
        start_time_ms: Some(5_000),
    }
}

/// A history with a daily pattern so that forecasts act.
fn daily_history(peak: f64) -> History {
    let start = MONDAY / 60_000 - 2 * 1440;
    let minutes: Vec<(i64, f64)> = (0..2 * 1440)
        .map(|m| {
            let phase = (m % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            (start + m, peak * (0.5 + 0.5 * phase.sin()))
        })
        .collect();
    History::restore(&minutes)
}

/// A fleet that does what the engine says: new instances are ready after `start_s`.
struct World {
    instances: Vec<(usize, u64)>, // (id, started at)
    next_id: usize,
    start_s: u64,
}

impl World {
    fn new(n: u32, start_s: u64) -> World {
        World {
            instances: (0..n as usize).map(|i| (i, 0)).collect(),
            next_id: n as usize,
            start_s,
        }
    }

    /// Constant total load: `load` requests in flight spread over the ready instances (CPU
    /// 5 % per request), or waiting in the gateway when none is ready.
    fn observe(&self, now: u64, load: f64) -> Observation {
        let is_ready = |started: u64| started == 0 || now >= started + self.start_s;
        let ready = self.instances.iter().filter(|(_, s)| is_ready(*s)).count();
        let per = if ready == 0 { 0.0 } else { load / ready as f64 };
        Observation {
            instances: self
                .instances
                .iter()
                .map(|(id, started)| {
                    let r = is_ready(*started);
                    InstanceSample {
                        id: format!("web-{id}"),
                        ready: r,
                        age_ms: (now - started.min(&now)) * 1000
                            + if *started == 0 { 3_600_000 } else { 0 },
                        in_flight: if r { per } else { 0.0 },
                        rps: if r { per * 10.0 } else { 0.0 },
                        cpu_percent: if r { per * 5.0 } else { 0.0 },
                        ..InstanceSample::default()
                    }
                })
                .collect(),
            current: u32::try_from(self.instances.len()).unwrap(),
            queue_depth: if ready == 0 { load } else { 0.0 },
            start_time_ms: Some(self.start_s * 1000),
            ..Observation::default()
        }
    }

    fn apply(&mut self, now: u64, d: &herd_scaler::Decision) {
        while self.instances.len() < d.desired as usize {
            self.instances.push((self.next_id, now));
            self.next_id += 1;
        }
        for id in &d.scale_in_candidates {
            if self.instances.len() <= d.desired as usize {
                break;
            }
            self.instances.retain(|(i, _)| format!("web-{i}") != *id);
        }
        self.instances.truncate(d.desired as usize);
    }
}

/// Direction changes in a sequence of counts (ignoring flat stretches).
fn reversals(counts: &[u32]) -> usize {
    let mut last_dir = 0i8;
    let mut n = 0;
    for w in counts.windows(2) {
        let dir = (w[1] > w[0]) as i8 - (w[1] < w[0]) as i8;
        if dir != 0 {
            if last_dir != 0 && dir != last_dir {
                n += 1;
            }
            last_dir = dir;
        }
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn bounds_always_hold(
        cfg in scaling(true),
        sched in schedules(),
        ticks in prop::collection::vec(tick(30), 1..80),
    ) {
        let cfg = Scaling { schedules: sched, ..cfg };
        let mut e = Engine::new(&cfg);
        for (i, t) in ticks.iter().enumerate() {
            let now = i as u64 * 1000;
            // Minutes apart, so that schedules start and end.
            let d = e.tick(now, MONDAY + i as i64 * 61_000, &observation(t));
            prop_assert!(d.bounds.min >= cfg.min && d.bounds.max >= cfg.max && d.bounds.max >= d.bounds.min, "{d:?}");
            if !t.paused || t.manual.is_some() {
                prop_assert!(d.desired >= d.bounds.min && d.desired <= d.bounds.max, "{d:?}");
            }
            if cfg.schedules.is_empty() && (!t.paused || t.manual.is_some()) {
                prop_assert!(d.desired >= cfg.min && d.desired <= cfg.max, "{d:?}");
            }
        }
    }

    #[test]
    fn constant_load_never_flaps(
        cfg in scaling(false),
        start in 1u32..20,
        load in 0u32..400,
        start_s in 0u64..20,
    ) {
        let initial = start.clamp(cfg.min.max(1), cfg.max);
        let mut world = World::new(initial, start_s);
        let mut e = Engine::new(&cfg);
        let mut counts = vec![initial];
        for now in 1..=900u64 {
            let d = e.tick(now * 1000, MONDAY + now as i64 * 1000, &world.observe(now, f64::from(load)));
            world.apply(now, &d);
            counts.push(d.desired);
        }
        prop_assert_eq!(reversals(&counts), 0, "{:?}", counts);
        let tail = &counts[counts.len() - 60..];
        prop_assert!(tail.iter().all(|c| *c == tail[0]), "not settled: {:?}", tail);
    }

    #[test]
    fn constant_load_with_rules_settles(
        cfg in scaling(true),
        start in 1u32..20,
        load in 0u32..400,
        start_s in 0u64..20,
    ) {
        let initial = start.clamp(cfg.min.max(1), cfg.max);
        let mut world = World::new(initial, start_s);
        let mut e = Engine::new(&cfg);
        let mut counts = vec![initial];
        for now in 1..=1500u64 {
            let d = e.tick(now * 1000, MONDAY + now as i64 * 1000, &world.observe(now, f64::from(load)));
            world.apply(now, &d);
            counts.push(d.desired);
        }
        prop_assert!(reversals(&counts) <= 1, "{:?}", counts);
        let tail = &counts[counts.len() - 60..];
        prop_assert!(tail.iter().all(|c| *c == tail[0]), "not settled: {:?}", tail);
    }

    #[test]
    fn tolerance_holds(
        cfg in scaling(false),
        n in 1u32..20,
        ratios in prop::collection::vec(-100i32..=100, 3),
        ticks in 1usize..20,
    ) {
        let cfg = Scaling { predictive: None, min: cfg.min.min(n), max: cfg.max.max(n), ..cfg };
        // Every target at a usage ratio within ±tolerance.
        let ratio = |i: usize| 1.0 + cfg.tolerance * f64::from(ratios[i]) / 100.0;
        let mut per_conc = 0.0;
        let mut cpu = 0.0;
        let mut rps = 0.0;
        for (i, t) in cfg.targets.iter().enumerate() {
            match t.metric {
                Metric::Concurrency => per_conc = t.value * ratio(i),
                Metric::Cpu => cpu = t.value * ratio(i),
                Metric::Rps => rps = t.value * ratio(i),
                _ => {}
            }
        }
        let o = Observation {
            instances: (0..n).map(|i| InstanceSample {
                id: format!("web-{i}"),
                ready: true,
                age_ms: 3_600_000,
                in_flight: per_conc,
                rps,
                cpu_percent: cpu,
                ..InstanceSample::default()
            }).collect(),
            current: n,
            ..Observation::default()
        };
        let mut e = Engine::new(&cfg);
        for i in 0..ticks {
            let d = e.tick(i as u64 * 1000, MONDAY, &o);
            // With min = 0 and no traffic at all, idle_to_zero may apply; otherwise no change.
            if per_conc > 0.0 || rps > 0.0 || cfg.min > 0 {
                prop_assert_eq!(d.desired, n, "{:?}", d);
            }
        }
    }

    #[test]
    fn no_scale_in_during_panic_or_warmup(
        cfg in scaling(true),
        ticks in prop::collection::vec(tick(24), 1..80),
    ) {
        let mut e = Engine::new(&cfg);
        for (i, t) in ticks.iter().enumerate() {
            let o = observation(t);
            let d = e.tick(i as u64 * 1000, MONDAY + i as i64 * 1000, &o);
            if t.manual.is_some() || t.paused || o.current > d.bounds.max {
                continue;
            }
            if d.panic || d.warming > 0 {
                prop_assert!(d.desired >= o.current, "{d:?}");
            }
        }
    }

    #[test]
    fn predictive_never_scales_in(
        cfg in scaling(true),
        peak in 1u32..30,
        ticks in prop::collection::vec(tick(24), 1..80),
    ) {
        let on = Scaling {
            predictive: Some(Predictive { mode: PredictiveMode::On, lead: Lead::Fixed(secs(600)) }),
            ..cfg.clone()
        };
        let off = Scaling { predictive: None, ..cfg };
        let mut with = Engine::new(&on);
        with.restore_history(daily_history(f64::from(peak)));
        let mut without = Engine::new(&off);
        for (i, t) in ticks.iter().enumerate() {
            let o = observation(t);
            let now = i as u64 * 1000;
            let wall = MONDAY + i as i64 * 7_000;
            let a = with.tick(now, wall, &o);
            let b = without.tick(now, wall, &o);
            prop_assert!(a.desired >= b.desired, "with {a:?}\nwithout {b:?}");
            // A scale-in may mention the forecast only as what held the count up.
            if let (true, Reason::Forecast { recommended, .. }) = (a.desired < o.current, &a.reason) {
                prop_assert!(*recommended < a.desired, "{a:?}");
            }
        }
    }
}

#[test]
fn reversals_counts_direction_changes() {
    assert_eq!(reversals(&[1, 2, 2, 3, 3]), 0);
    assert_eq!(reversals(&[5, 4, 4, 2]), 0);
    assert_eq!(reversals(&[1, 3, 2]), 1);
    assert_eq!(reversals(&[1, 3, 2, 4]), 2);
}
