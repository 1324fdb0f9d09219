//! The engine: one [`Engine::tick`] per `interval` turns an [`Observation`] into a
//! [`Decision`]. The stages run in this order, each one able to replace the count and the
//! reason (the last stage that changed the count is the reason reported):
//!
//! 1. **metrics**: each target's recommendation (`metrics`), the largest wins;
//! 2. **forecast** (`predictive.mode = "on"`): raises the recommendation to the forecast demand
//!    over the lead time, never lowers it;
//! 3. **windows**: HPA stabilization of that recommendation (`window`);
//! 4. **rules**: fired threshold rules; the largest of them and the windowed target wins; a
//!    scale-in that would push a proportional metric back over a rule's `above` is held;
//! 5. **zero**: with `min = 0`, scale from zero on traffic, keep one instance until
//!    `idle_to_zero` without traffic, then go to zero;
//! 6. **panic**: while in panic, never below the current count nor the panic-window demand;
//! 7. **warmup**: while an instance warms up, never below the current count;
//! 8. **max_step**: at most that many instances added/removed per interval (a fired rule
//!    still moves by its own `step`);
//! 9. **bounds**: `min`/`max`, raised by active schedules;
//! 10. **manual** override (clamped to the bounds), else **pause** (the count stays).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use herd_config::{Lead, PredictiveMode, Scaling, Warmup};

use crate::decision::{Bounds, Decision, Direction, ForecastReport, Reason};
use crate::forecast::History;
use crate::metrics::{ceil_u32, per_instance, recommend};
use crate::observation::Observation;
use crate::rules::{proportional, RuleState, Values};
use crate::schedule::Schedules;
use crate::window::Windows;

/// An instance that has not been ready for this long (since its start, or across restarts:
/// a crash loop) is treated as broken rather than warming up, so that it cannot block
/// scale-in forever. One the supervisor reports broken (errored, down, in maintenance, in a
/// restart backoff) is never warming up.
pub const STUCK_AFTER: Duration = Duration::from_secs(300);

/// `lead = "auto"` without a measured start time assumes this one.
pub const DEFAULT_START_TIME: Duration = Duration::from_secs(60);

/// The autoscaling engine of one app. Holds its history; does no I/O.
#[derive(Debug)]
pub struct Engine {
    cfg: Scaling,
    st: State,
}

#[derive(Debug, Default)]
struct State {
    tick: u64,
    started_ms: Option<u64>,
    /// Ready instances: when first seen ready, and the tick they were last seen.
    ready_since: HashMap<String, (u64, u64)>,
    /// Instances not ready: when first seen so (restarts keep it), and the tick last seen.
    not_ready_since: HashMap<String, (u64, u64)>,
    windows: Windows,
    schedules: Schedules,
    rules: Vec<RuleState>,
    history: History,
    panic_samples: VecDeque<(u64, f64)>,
    in_panic: bool,
    last_over: Option<u64>,
    last_traffic_ms: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Engine {
    /// A fresh engine for a validated `[app.scaling]`.
    #[must_use]
    pub fn new(cfg: &Scaling) -> Engine {
        Engine {
            cfg: cfg.clone(),
            st: State {
                rules: vec![RuleState::default(); cfg.rules.len()],
                ..State::default()
            },
        }
    }

    /// The policy in force.
    #[must_use]
    pub fn config(&self) -> &Scaling {
        &self.cfg
    }

    /// Replaces the policy (config reload), keeping the history and windows.
    pub fn reconfigure(&mut self, cfg: &Scaling) {
        if cfg.rules != self.cfg.rules {
            self.st.rules = vec![RuleState::default(); cfg.rules.len()];
        }
        if cfg.schedules != self.cfg.schedules {
            self.st.schedules = Schedules::default();
        }
        self.cfg = cfg.clone();
    }

    /// The demand history predictive scaling learns from (export it to persist it).
    #[must_use]
    pub fn history(&self) -> &History {
        &self.st.history
    }

    /// Replaces the demand history, e.g. with one saved before a restart.
    pub fn restore_history(&mut self, history: History) {
        self.st.history = history;
    }

    /// Decides the desired instance count. `now_ms` is a monotonic clock; `wall_unix_ms` the
    /// wall clock (schedules, forecast history). Call it every `interval`.
    #[allow(clippy::too_many_lines)] // the stages read best in order, in one place
    pub fn tick(&mut self, now_ms: u64, wall_unix_ms: i64, obs: &Observation) -> Decision {
        let cfg = &self.cfg;
        let st = &mut self.st;
        st.tick += 1;
        let started = *st.started_ms.get_or_insert(now_ms);
        let current = obs.current;
        let ready = obs.ready();

        // Warmup: which instances count toward capacity but not toward metrics.
        let warming = warming_flags(cfg, st, now_ms, obs);
        let warming_count = u32::try_from(warming.iter().filter(|w| **w).count()).unwrap_or(0);

        let active = st.schedules.active(cfg, wall_unix_ms);
        let per_metric: Vec<_> = cfg
            .targets
            .iter()
            .map(|t| recommend(t, obs, &warming, cfg.tolerance))
            .collect();
        let best = per_metric
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.recommended.map(|r| (r, i)))
            .fold(None::<(u32, usize)>, |acc, (r, i)| match acc {
                Some((best, _)) if best >= r => acc,
                _ => Some((r, i)),
            });
        let demand = per_metric
            .iter()
            .filter(|m| m.recommended.is_some())
            .map(|m| m.demand)
            .fold(None::<f64>, |acc, d| Some(acc.map_or(d, |a| a.max(d))));

        let traffic = obs.queue_depth > 0.0
            || obs
                .instances
                .iter()
                .any(|i| i.in_flight > 0.0 || i.rps > 0.0);
        if traffic {
            st.last_traffic_ms = Some(now_ms);
        }
        let idle_ms = now_ms.saturating_sub(st.last_traffic_ms.unwrap_or(started));

        // 1. Metrics.
        let (mut rec, mut reason) = match best {
            Some((r, i)) => {
                let m = &per_metric[i];
                let reason = if r == current {
                    Reason::Stable {
                        metric: Some(m.metric.clone()),
                    }
                } else {
                    Reason::Metric {
                        metric: m.metric.clone(),
                        value: m.value,
                        target: m.target,
                        recommended: r,
                    }
                };
                (Some(r), reason)
            }
            None if cfg.targets.is_empty() => (None, Reason::Stable { metric: None }),
            None => (None, Reason::NoMetrics),
        };

        // 2. Forecast: only ever raises.
        let mut forecast = None;
        if let Some(p) = &cfg.predictive {
            if let Some(d) = demand {
                st.history.record(wall_unix_ms, d);
            }
            let lead_ms = match p.lead {
                Lead::Fixed(d) => ms(d),
                Lead::Auto => obs
                    .start_time_ms
                    .unwrap_or(ms(DEFAULT_START_TIME))
                    .saturating_add(60_000),
            };
            let f = st.history.forecast(wall_unix_ms, lead_ms);
            let wanted = ceil_u32(f.demand);
            #[allow(clippy::cast_precision_loss)] // lead times are small
            let lead_s = lead_ms as f64 / 1000.0;
            // Only alongside the metrics: a forecast alone has nothing to be checked against,
            // and the windows must see the same ticks with and without it.
            let acting = p.mode == PredictiveMode::On && rec.is_some_and(|r| wanted > r);
            if acting {
                reason = Reason::Forecast {
                    demand: f.demand,
                    lead_s,
                    recommended: rec.unwrap_or(current),
                };
                rec = Some(wanted);
            }
            forecast = Some(ForecastReport {
                mode: match p.mode {
                    PredictiveMode::On => "on",
                    PredictiveMode::ForecastOnly => "forecast_only",
                },
                lead_s,
                demand: (f.seasonal_naive.is_some() || f.holt_winters.is_some())
                    .then_some(f.demand),
                seasonal_naive: f.seasonal_naive,
                holt_winters: f.holt_winters,
                history_minutes: st.history.len(),
                acting,
            });
        }

        // 3. Stabilization windows.
        let target_opinion = rec.map(|r| {
            let s = st.windows.stabilize(
                now_ms,
                r,
                current,
                cfg.scale_up.window,
                cfg.scale_down.window,
            );
            if s != r {
                let (direction, window) = if s > r {
                    (Direction::Down, cfg.scale_down.window)
                } else {
                    (Direction::Up, cfg.scale_up.window)
                };
                reason = Reason::Window {
                    direction,
                    window_s: secs(window),
                    recommended: r,
                };
            }
            s
        });

        // 4. Rules, combined with the target opinion by taking the largest.
        let mut desired = target_opinion;
        let mut fired_rules: Vec<(usize, Direction)> = Vec::new();
        for (i, rule) in cfg.rules.iter().enumerate() {
            let values = per_instance(rule.metric, obs, &warming).map(|v| {
                if proportional(rule.metric) {
                    Values {
                        up: v * f64::from(ready.max(1)) / f64::from(current.max(1)),
                        down: v,
                    }
                } else {
                    Values::same(v)
                }
            });
            let Some(fired) = st.rules[i].evaluate(i, rule, now_ms, values, current) else {
                continue;
            };
            fired_rules.push((i, fired.direction));
            if desired.is_none_or(|d| fired.recommended > d) {
                desired = Some(fired.recommended);
                reason = Reason::Rule {
                    index: i,
                    metric: rule.metric.name().to_owned(),
                    value: fired.value,
                    threshold: fired.threshold,
                    direction: fired.direction,
                };
            }
        }
        if let Some(d) = desired.filter(|d| target_opinion.is_none_or(|t| *d > t)) {
            st.windows.note(now_ms, d);
        }
        let mut v = desired.unwrap_or(current);
        let asked = v;
        if v < current {
            // Do not scale in so far that a rule's `above` would fire right back.
            for (i, rule) in cfg.rules.iter().enumerate() {
                let (Some(above), true) = (rule.above, proportional(rule.metric)) else {
                    continue;
                };
                let Some(value) = per_instance(rule.metric, obs, &warming) else {
                    continue;
                };
                let load = value * f64::from(ready.max(1));
                let needed = ceil_u32(load / above).min(current);
                if needed > v {
                    reason = Reason::RuleHoldBack {
                        index: i,
                        metric: rule.metric.name().to_owned(),
                        asked,
                        would_be: load / f64::from(asked.max(1)),
                        threshold: above,
                    };
                    v = needed;
                }
            }
        }

        // 5. Scale to and from zero.
        if active.min == 0 {
            let idle = Reason::IdleToZero {
                #[allow(clippy::cast_precision_loss)]
                idle_s: idle_ms as f64 / 1000.0,
                after_s: secs(cfg.idle_to_zero),
            };
            if current == 0 && traffic {
                v = v.max(1);
                reason = Reason::ScaleFromZero {
                    queue_depth: obs.queue_depth,
                };
            } else if !traffic && idle_ms >= ms(cfg.idle_to_zero) {
                // At zero too: "no traffic" is why it stays there, not a metric's tolerance.
                reason = idle;
                v = 0;
            } else if v == 0 {
                v = 1;
                if !traffic {
                    reason = idle;
                }
            }
        }

        // 6. Panic mode.
        if let Some(p) = &cfg.panic {
            let window = ms(p.window);
            st.panic_samples.push_back((now_ms, demand.unwrap_or(0.0)));
            while st
                .panic_samples
                .front()
                .is_some_and(|(t, _)| now_ms.saturating_sub(*t) >= window.max(1))
            {
                st.panic_samples.pop_front();
            }
            #[allow(clippy::cast_precision_loss)] // a handful of samples
            let avg = st.panic_samples.iter().map(|(_, d)| d).sum::<f64>()
                / st.panic_samples.len().max(1) as f64;
            // Over when the window's average and the demand now both reach the threshold: the
            // average alone still holds a burst that is over, and after a scale-in (a short
            // `scale_down.window`) it would read that past burst against the fewer ready
            // instances and add instances to a fleet with no demand.
            let bar = p.threshold * f64::from(ready.max(1));
            let now_demand = demand.unwrap_or(0.0);
            let over = avg > 0.0 && avg >= bar && now_demand >= bar;
            if over {
                st.in_panic = true;
                st.last_over = Some(now_ms);
            } else if st.in_panic
                && st
                    .last_over
                    .is_none_or(|t| now_ms.saturating_sub(t) >= ms(p.stable_window))
            {
                st.in_panic = false;
            }
            if st.in_panic {
                let floor = ceil_u32(avg).max(current);
                if v < floor {
                    v = floor;
                    reason = Reason::Panic {
                        demand: avg,
                        ready,
                        threshold: p.threshold,
                    };
                }
            }
        } else {
            st.in_panic = false;
        }

        // 7. Warmup: no scale-in meanwhile.
        if warming_count > 0 && v < current {
            reason = Reason::Warmup {
                warming: warming_count,
                recommended: v,
            };
            v = current;
        }

        // 8. Step limits, on what the targets ask for: a fired rule moves by its own `step`.
        let rule_step = |dir: Direction| {
            fired_rules
                .iter()
                .filter(|(_, d)| *d == dir)
                .map(|(i, _)| cfg.rules[*i].step)
                .max()
                .unwrap_or(0)
        };
        if v > current {
            let limit = cfg
                .scale_up
                .step_limit(current)
                .max(rule_step(Direction::Up));
            if v - current > limit {
                reason = Reason::StepLimit {
                    direction: Direction::Up,
                    limit,
                    recommended: v,
                };
                v = current.saturating_add(limit);
            }
        } else if v < current {
            let limit = cfg
                .scale_down
                .step_limit(current)
                .max(rule_step(Direction::Down));
            if current - v > limit {
                reason = Reason::StepLimit {
                    direction: Direction::Down,
                    limit,
                    recommended: v,
                };
                v = current - limit;
            }
        }

        // 9. Bounds.
        let bound_reason = |from: Option<usize>, recommended: u32| match from {
            Some(i) => Reason::Schedule {
                index: i,
                cron: cfg.schedules[i].cron.to_string(),
                min: active.min,
                max: active.max,
            },
            None => Reason::Bounds {
                min: active.min,
                max: active.max,
                recommended,
            },
        };
        // What was asked before a step limit cut it: "18 asked for, clamped to 1..=6" says more
        // than the step limit's own 7.
        let asked_for = match &reason {
            Reason::StepLimit { recommended, .. } => *recommended,
            _ => v,
        };
        if v < active.min {
            reason = bound_reason(active.min_from, asked_for.min(v));
            v = active.min;
        } else if v > active.max {
            reason = bound_reason(active.max_from, asked_for.max(v));
            v = active.max;
        }

        // 10. The operator.
        if let Some(m) = &obs.manual {
            v = m.instances.clamp(active.min, active.max);
            reason = Reason::Manual {
                instances: m.instances,
                reason: m.reason.clone(),
            };
        } else if obs.paused {
            v = current;
            reason = Reason::Paused;
        }
        // A rule's cooldown follows a change its way, not a firing that changed nothing.
        for (i, direction) in fired_rules {
            let moved = match direction {
                Direction::Up => v > current,
                Direction::Down => v < current,
            };
            if moved {
                st.rules[i].acted(now_ms);
            }
        }

        Decision {
            desired: v,
            current,
            changed: v != current,
            explanation: reason.explain(current, v),
            reason,
            per_metric,
            panic: st.in_panic,
            warming: warming_count,
            bounds: Bounds {
                min: active.min,
                max: active.max,
            },
            forecast,
            scale_in_candidates: scale_in_candidates(obs, current.saturating_sub(v)),
        }
    }
}

/// Which instances are warming up, per `warmup` (see [`Warmup`]).
fn warming_flags(cfg: &Scaling, st: &mut State, now_ms: u64, obs: &Observation) -> Vec<bool> {
    let tick = st.tick;
    // Not ready for `STUCK_AFTER` by its own age or by how long its slot has gone without
    // being ready (a restart resets the age, not this).
    let stuck: Vec<bool> = obs
        .instances
        .iter()
        .map(|i| {
            if i.ready {
                return false;
            }
            if i.broken {
                return true;
            }
            let entry = st
                .not_ready_since
                .entry(i.id.clone())
                .or_insert((now_ms, tick));
            entry.1 = tick;
            i.age_ms >= ms(STUCK_AFTER) || now_ms.saturating_sub(entry.0) >= ms(STUCK_AFTER)
        })
        .collect();
    st.not_ready_since.retain(|_, (_, seen)| *seen == tick);
    match cfg.warmup {
        Warmup::Fixed(d) => {
            let d = ms(d);
            obs.instances
                .iter()
                .zip(&stuck)
                .map(|(i, stuck)| !stuck && i.age_ms < d)
                .collect()
        }
        Warmup::Auto => {
            let interval = ms(cfg.interval);
            let flags = obs
                .instances
                .iter()
                .zip(&stuck)
                .map(|(i, stuck)| {
                    if !i.ready {
                        return !stuck;
                    }
                    let since = match st.ready_since.get_mut(i.id.as_str()) {
                        Some(entry) => {
                            entry.1 = tick;
                            entry.0
                        }
                        None => {
                            st.ready_since.insert(i.id.clone(), (now_ms, tick));
                            now_ms
                        }
                    };
                    now_ms.saturating_sub(since) < interval
                })
                .collect();
            st.ready_since.retain(|_, (_, seen)| *seen == tick);
            flags
        }
    }
}

/// The `n` idlest instances: not ready first, then fewest in flight, then youngest.
fn scale_in_candidates(obs: &Observation, n: u32) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<_> = obs.instances.iter().collect();
    order.sort_by(|a, b| {
        a.ready
            .cmp(&b.ready)
            .then(a.in_flight.total_cmp(&b.in_flight))
            .then(a.age_ms.cmp(&b.age_ms))
    });
    order
        .into_iter()
        .take(usize::try_from(n).unwrap_or(usize::MAX))
        .map(|i| i.id.clone())
        .collect()
}
