//! `herd simulate`: replays a load trace through the same [`Engine`] against a queueing model
//! of instances, and reports what the policy cost and how much demand it left unmet.
//!
//! The model, stepped every second (or every `interval` when shorter):
//!
//! - an instance serves up to `capacity` (trace units: requests per second for an `rps` trace,
//!   concurrent requests for a `concurrency` trace) once it is ready, `start_time` after it was
//!   started; a stopped instance's capacity goes at once;
//! - `rps` traces: a fluid queue. Requests beyond the ready capacity wait in the gateway
//!   (`queue_depth`) and are served first when capacity frees up. A second is *unmet* when
//!   requests are still waiting at its end;
//! - `concurrency` traces: the requests beyond the ready capacity are the queue; a second is
//!   unmet when there are any;
//! - what the engine sees: per ready instance an equal share of the load, `in_flight` and `rps`
//!   related by Little's law with `service_time` (default 100 ms), CPU = 100 % × served /
//!   capacity, and the gateway's queue; latency and memory are not modelled (reported missing).
//!
//! [`Policy::HpaDefault`] runs the same engine with Kubernetes HPA's defaults instead of the
//! app's policy: 15 s sync, tolerance 0.1, scale-up 4 pods or 100 % per 15 s, scale-down window
//! 300 s and 100 % per 15 s, no panic mode, no warmup hold, no rules, schedules or forecast,
//! `min` at least 1 (HPA does not scale to zero). The app's targets and bounds are kept.
//!
//! Instance-hours count every instance that exists, starting ones included.

mod svg;
mod trace;

use std::time::Duration;

use serde::Serialize;

use herd_config::{Behavior, Metric, Scaling, Step, Warmup};

use crate::engine::Engine;
use crate::observation::{InstanceSample, Observation};

pub use trace::{Trace, TraceError, TraceKind};

/// Which policy drives the simulated app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The app's `[app.scaling]`.
    Herd,
    /// Kubernetes HPA's defaults with the app's targets and bounds (see [`hpa_default`]).
    HpaDefault,
}

impl Policy {
    /// `herd` or `hpa-default`, as on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Policy::Herd => "herd",
            Policy::HpaDefault => "hpa-default",
        }
    }
}

/// How the simulated instances behave.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// What one ready instance serves, in trace units.
    pub capacity: f64,
    /// Seconds from start to ready.
    pub start_time_s: f64,
    /// The policy.
    pub policy: Policy,
    /// Service time per request, relating `rps` and `in_flight` (Little's law). Default 0.1 s.
    pub service_time_s: f64,
    /// Wall-clock time of the trace's time 0 (schedules, forecast). Default 2024-01-01T00:00Z,
    /// a Monday.
    pub start_unix_ms: i64,
}

impl SimOptions {
    /// Options with the given per-instance capacity, a 10 s start time and the herd policy.
    #[must_use]
    pub fn new(capacity: f64) -> SimOptions {
        SimOptions {
            capacity,
            start_time_s: 10.0,
            policy: Policy::Herd,
            service_time_s: 0.1,
            start_unix_ms: 1_704_067_200_000,
        }
    }

    /// A capacity for when none is given: 1.25 × the target of the trace's own metric (so the
    /// target sits at 80 % of capacity), converted with the service time when the target is
    /// the other of rps/concurrency; 12.5 concurrent requests (or its rps) otherwise.
    #[must_use]
    pub fn default_capacity(scaling: &Scaling, kind: TraceKind, service_time_s: f64) -> f64 {
        let st = service_time_s.max(1e-6);
        for t in &scaling.targets {
            match (kind, t.metric) {
                (TraceKind::Rps, Metric::Rps) | (TraceKind::Concurrency, Metric::Concurrency) => {
                    return 1.25 * t.value
                }
                (TraceKind::Rps, Metric::Concurrency) => return 1.25 * t.value / st,
                (TraceKind::Concurrency, Metric::Rps) => return 1.25 * t.value * st,
                _ => {}
            }
        }
        match kind {
            TraceKind::Concurrency => 12.5,
            TraceKind::Rps => 12.5 / st,
        }
    }
}

/// What a run cost and how well it served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `herd` or `hpa-default`.
    pub policy: &'static str,
    /// Simulated time.
    pub duration_s: f64,
    /// Instance-hours, starting instances included.
    pub instance_hours: f64,
    /// `instance_hours × cost_per_hour`.
    pub cost: f64,
    /// Seconds in which demand was not served within the second (SLO misses).
    pub unmet_demand_seconds: f64,
    /// Demand beyond ready capacity, integrated over time (requests for an rps trace,
    /// request-seconds for a concurrency trace).
    pub excess_demand: f64,
    /// Changes of the instance count.
    pub scaling_actions: u32,
    /// Most instances at once.
    pub peak_instances: u32,
    /// Mean instances.
    pub mean_instances: f64,
    /// Per-instance capacity used.
    pub capacity: f64,
    /// Start time used.
    pub start_time_s: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:.2} instance-hours (cost {:.2}), {:.0} s unmet demand, {} scaling actions, peak {} instances",
            self.policy,
            self.instance_hours,
            self.cost,
            self.unmet_demand_seconds,
            self.scaling_actions,
            self.peak_instances
        )
    }
}

/// A run's report and its plot.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// The figures.
    pub report: Report,
    /// Demand against capacity over time, as an SVG document.
    pub svg: String,
}

/// Kubernetes HPA's defaults, keeping the app's targets, bounds and price.
#[must_use]
pub fn hpa_default(scaling: &Scaling) -> Scaling {
    Scaling {
        min: scaling.min.max(1),
        max: scaling.max.max(1),
        interval: Duration::from_secs(15),
        tolerance: 0.1,
        scale_up: Behavior {
            window: Duration::ZERO,
            max_step: vec![Step::Instances(4), Step::Percent(100.0)],
        },
        scale_down: Behavior {
            window: Duration::from_secs(300),
            max_step: vec![Step::Percent(100.0)],
        },
        warmup: Warmup::Fixed(Duration::ZERO),
        panic: None,
        rules: Vec::new(),
        schedules: Vec::new(),
        predictive: None,
        ..scaling.clone()
    }
}

struct Instance {
    ready_at: f64,
    started: f64,
}

/// The most points the plot gets.
const PLOT_POINTS: usize = 1200;
/// Before the trace, the policy runs this long at the trace's first load (not counted), so that
/// every run starts from the policy's own steady state.
const PRE_ROLL_S: f64 = 600.0;
/// Requests left waiting at the end of a second that make it an unmet second.
const BACKLOG_EPS: f64 = 0.5;

/// Replays `trace` under `opts.policy`.
#[must_use]
#[allow(clippy::too_many_lines, clippy::cast_precision_loss)] // one loop; counts are small
pub fn run(scaling: &Scaling, trace: &Trace, opts: &SimOptions) -> SimResult {
    let cfg = match opts.policy {
        Policy::Herd => scaling.clone(),
        Policy::HpaDefault => hpa_default(scaling),
    };
    let mut engine = Engine::new(&cfg);
    let capacity = opts.capacity.max(1e-9);
    let service = opts.service_time_s.max(1e-6);
    let interval_s = cfg.interval.as_secs_f64().max(1e-3);
    let dt = interval_s.min(1.0);
    let t0 = trace.start_s();
    let t_end = trace.end_s();
    let steps = ((t_end - t0) / dt).ceil().max(1.0);
    // Whole steps: a trace of 14 days at 1 s is 1.2 million.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let steps = steps as u64;

    let mut hint = 0;
    let first = trace.at(t0, &mut hint);
    let min_start = cfg.min.max(1);
    let initial =
        crate::metrics::ceil_u32(first / capacity).clamp(min_start, cfg.max.max(min_start));
    let mut instances: Vec<Instance> = Vec::new();
    let mut obs = Observation {
        start_time_ms: Some((opts.start_time_s.max(0.0) * 1000.0) as u64),
        ..Observation::default()
    };
    let mut next_id = 0u64;
    let mut add = |instances: &mut Vec<Instance>, obs: &mut Observation, t: f64, ready_at: f64| {
        next_id += 1;
        instances.push(Instance {
            ready_at,
            started: t,
        });
        obs.instances.push(InstanceSample {
            id: format!("sim-{next_id}"),
            rss_bytes: 100 << 20,
            ..InstanceSample::default()
        });
    };
    for _ in 0..initial {
        add(
            &mut instances,
            &mut obs,
            t0 - 2.0 * PRE_ROLL_S,
            t0 - 2.0 * PRE_ROLL_S,
        );
    }

    let pre_steps = (PRE_ROLL_S / dt).ceil() as u64;
    let mut backlog = 0.0;
    let mut next_tick = t0 - pre_steps as f64 * dt + interval_s;
    let mut unmet_s = 0.0;
    let mut excess = 0.0;
    let mut instance_s = 0.0;
    let mut actions = 0u32;
    let mut peak = 0u32;
    let bucket = usize::try_from(steps)
        .unwrap_or(usize::MAX)
        .div_ceil(PLOT_POINTS)
        .max(1);
    let mut plot: Vec<svg::Point> = Vec::with_capacity(PLOT_POINTS + 1);
    let mut acc: Option<svg::Point> = None;
    let mut in_bucket = 0usize;

    for k in 0..pre_steps + steps {
        let counted = k >= pre_steps;
        let t = t0 + (k as f64 - pre_steps as f64) * dt;
        let demand = if counted {
            trace.at(t, &mut hint)
        } else {
            first
        };
        let n = instances.len();
        let ready = instances.iter().filter(|i| i.ready_at <= t).count();
        let ready_cap = ready as f64 * capacity;
        if counted {
            peak = peak.max(u32::try_from(n).unwrap_or(u32::MAX));
            instance_s += n as f64 * dt;
        }

        // Serve this step.
        let (per_instance_conc, per_instance_rps, queue) = match trace.kind {
            TraceKind::Rps => {
                let arrivals = demand * dt;
                let served = (backlog + arrivals).min(ready_cap * dt);
                backlog = backlog + arrivals - served;
                if counted {
                    excess += (demand - ready_cap).max(0.0) * dt;
                    if backlog > BACKLOG_EPS {
                        unmet_s += dt;
                    }
                }
                let rate = if ready > 0 {
                    served / dt / ready as f64
                } else {
                    0.0
                };
                let offered = if ready > 0 {
                    demand / ready as f64
                } else {
                    0.0
                };
                (rate * service, offered, backlog)
            }
            TraceKind::Concurrency => {
                let in_service = demand.min(ready_cap);
                let queue = demand - in_service;
                if counted {
                    excess += queue * dt;
                    if queue > 1e-6 {
                        unmet_s += dt;
                    }
                }
                let conc = if ready > 0 {
                    in_service / ready as f64
                } else {
                    0.0
                };
                (conc, conc / service, queue)
            }
        };

        let cap_total = n as f64 * capacity;
        if counted {
            let point = (t, demand, ready_cap, cap_total);
            acc = Some(match acc {
                None => point,
                Some(a) => (a.0, a.1.max(demand), a.2.min(ready_cap), a.3.max(cap_total)),
            });
            in_bucket += 1;
            if in_bucket == bucket {
                plot.extend(acc.take());
                in_bucket = 0;
            }
        }

        // Decide at the end of the step, on this step's figures.
        let t_next = t + dt;
        if t_next + 1e-9 < next_tick {
            continue;
        }
        next_tick += interval_s;
        for (inst, sample) in instances.iter().zip(obs.instances.iter_mut()) {
            let is_ready = inst.ready_at <= t;
            sample.ready = is_ready;
            sample.age_ms = ((t_next - inst.started).max(0.0) * 1000.0) as u64;
            let (c, r) = if is_ready {
                (per_instance_conc, per_instance_rps)
            } else {
                (0.0, 0.0)
            };
            sample.in_flight = c;
            sample.rps = r;
            sample.cpu_percent =
                100.0 * (c / service) / (capacity_rps(trace.kind, capacity, service));
        }
        obs.current = u32::try_from(n).unwrap_or(u32::MAX);
        obs.queue_depth = queue;
        let now_ms = ((t_next - t0 + PRE_ROLL_S) * 1000.0).round() as u64;
        let wall = opts
            .start_unix_ms
            .saturating_add(((t_next - t0) * 1000.0).round() as i64);
        let decision = engine.tick(now_ms, wall, &obs);
        if !decision.changed {
            continue;
        }
        if counted {
            actions += 1;
        }
        let desired = usize::try_from(decision.desired).unwrap_or(usize::MAX);
        while instances.len() < desired {
            add(
                &mut instances,
                &mut obs,
                t_next,
                t_next + opts.start_time_s.max(0.0),
            );
        }
        for id in &decision.scale_in_candidates {
            if instances.len() <= desired {
                break;
            }
            if let Some(pos) = obs.instances.iter().position(|s| &s.id == id) {
                obs.instances.remove(pos);
                instances.remove(pos);
            }
        }
        while instances.len() > desired {
            instances.pop();
            obs.instances.pop();
        }
    }
    plot.extend(acc.take());

    let duration_s = steps as f64 * dt;
    let instance_hours = instance_s / 3600.0;
    let report = Report {
        policy: opts.policy.name(),
        duration_s,
        instance_hours,
        cost: instance_hours * cfg.cost_per_hour,
        unmet_demand_seconds: unmet_s,
        excess_demand: excess,
        scaling_actions: actions,
        peak_instances: peak,
        mean_instances: if duration_s > 0.0 {
            instance_s / duration_s
        } else {
            0.0
        },
        capacity,
        start_time_s: opts.start_time_s,
    };
    let title = format!(
        "{}: {:.1} instance-hours, {:.0} s unmet demand, {} actions (capacity {} {}/instance, start {} s)",
        report.policy,
        report.instance_hours,
        report.unmet_demand_seconds,
        report.scaling_actions,
        capacity,
        trace.kind,
        opts.start_time_s
    );
    let svg = svg::render(&title, &trace.kind.to_string(), &plot);
    SimResult { report, svg }
}

/// Requests per second one instance serves.
fn capacity_rps(kind: TraceKind, capacity: f64, service: f64) -> f64 {
    match kind {
        TraceKind::Rps => capacity,
        TraceKind::Concurrency => capacity / service,
    }
}

#[cfg(test)]
mod tests;
