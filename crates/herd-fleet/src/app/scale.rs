//! The autoscaler loop of one app: every `interval` (and at once when the gateway starts
//! holding requests for an app at zero) build an observation from the instances, ask the pure
//! engine (`herd-scaler`) for a decision, record it, and act on it: scale-up adds slots,
//! scale-in drains the instances the engine names as idlest.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herd_core::InstanceState;
use herd_scaler::{Decision, InstanceSample, ManualOverride, Observation};
use serde::Serialize;

use super::AppActor;
use crate::instance::Inst;

/// Scaling events kept for `GET /scaling/events`.
pub(crate) const EVENTS_KEPT: usize = 200;

/// One decision that changed (or tried to change) the instance count, or an operator action.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingEvent {
    /// Order of events across every app of this herd (strictly increasing): a reader that has
    /// seen event `seq` has seen every earlier one, whatever the clock said.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    pub app: String,
    pub from: u32,
    pub to: u32,
    /// The decision, with the input that won and why.
    pub decision: Decision,
}

/// The last [`ScalingEvent::seq`] handed out (process-wide).
static EVENT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often the demand history is saved (also at shutdown).
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The autoscaler's state inside the app actor.
pub(crate) struct Scaler {
    pub(crate) engine: herd_scaler::Engine,
    pub(crate) manual: Option<ManualOverride>,
    pub(crate) paused: bool,
    /// The reason given with the pause in force.
    pub(crate) pause_reason: Option<String>,
    pub(crate) last: Option<Decision>,
    /// Decisions that changed the count, by reason kind (for `herd_scaling_decisions_total`).
    pub(crate) decisions: std::collections::BTreeMap<&'static str, u64>,
    /// Smoothed spawn → ready time of recent instances (for `lead = "auto"`).
    pub(crate) start_time_ms: Option<u64>,
    epoch: Instant,
    /// Where the demand history for predictive scaling is kept across restarts.
    history_file: Option<std::path::PathBuf>,
    last_save: Instant,
}

impl Scaler {
    /// `history_file`: where predictive scaling keeps its demand history (read now if it exists).
    pub(crate) fn new(cfg: &herd_config::Scaling, history_file: std::path::PathBuf) -> Self {
        let mut engine = herd_scaler::Engine::new(cfg);
        let history_file = cfg.predictive.as_ref().map(|_| history_file);
        if let Some(history) = history_file.as_deref().and_then(load_history) {
            engine.restore_history(history);
        }
        Scaler {
            engine,
            manual: None,
            paused: false,
            pause_reason: None,
            last: None,
            decisions: std::collections::BTreeMap::new(),
            start_time_ms: None,
            epoch: Instant::now(),
            history_file,
            last_save: Instant::now(),
        }
    }

    /// A new policy (config reload). Predictive scaling turned on reads the saved history as
    /// at start, and turned off saves it one last time.
    pub(crate) fn reconfigure(
        &mut self,
        cfg: &herd_config::Scaling,
        history_file: std::path::PathBuf,
    ) {
        match (&self.history_file, &cfg.predictive) {
            (None, Some(_)) => {
                if let Some(history) = load_history(&history_file) {
                    self.engine.restore_history(history);
                }
                self.history_file = Some(history_file);
                self.last_save = Instant::now();
            }
            (Some(_), None) => {
                self.save_history(true);
                self.history_file = None;
            }
            _ => {}
        }
        self.engine.reconfigure(cfg);
    }

    /// Saves the demand history (predictive scaling only): at most every 5 minutes unless `force`.
    pub(crate) fn save_history(&mut self, force: bool) {
        let Some(path) = &self.history_file else {
            return;
        };
        if !force && self.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        self.last_save = Instant::now();
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.engine.history().export())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "failed to save the demand history");
        }
    }

    /// Folds one measured start (spawn → ready) into the estimate.
    pub(crate) fn observe_start(&mut self, ms: u64) {
        self.start_time_ms = Some(match self.start_time_ms {
            None => ms,
            Some(prev) => (prev * 3 + ms) / 4,
        });
    }
}

/// The reason's kind, as in its JSON `kind` field.
fn reason_kind(r: &herd_scaler::Reason) -> &'static str {
    use herd_scaler::Reason as R;
    match r {
        R::Metric { .. } => "metric",
        R::Stable { .. } => "stable",
        R::NoMetrics => "no_metrics",
        R::Window { .. } => "window",
        R::Forecast { .. } => "forecast",
        R::Rule { .. } => "rule",
        R::RuleHoldBack { .. } => "rule_hold_back",
        R::Panic { .. } => "panic",
        R::Warmup { .. } => "warmup",
        R::StepLimit { .. } => "step_limit",
        R::Bounds { .. } => "bounds",
        R::Schedule { .. } => "schedule",
        R::IdleToZero { .. } => "idle_to_zero",
        R::ScaleFromZero { .. } => "scale_from_zero",
        R::Manual { .. } => "manual",
        R::Paused => "paused",
    }
}

/// The demand history saved at `path`, if there is a readable one.
fn load_history(path: &std::path::Path) -> Option<herd_scaler::History> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Vec<(i64, f64)>>(&bytes) {
            Ok(minutes) => {
                tracing::info!(path = %path.display(), minutes = minutes.len(), "restored the autoscaler's demand history");
                Some(herd_scaler::History::restore(&minutes))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable demand history");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failed to read the demand history");
            None
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn sample(inst: &Inst, now: Instant, memory_limit: Option<u64>) -> InstanceSample {
    let p = inst.proc.as_ref();
    let window = p.map(|p| p.window).unwrap_or_default();
    InstanceSample {
        id: inst.id.to_string(),
        ready: inst.state == InstanceState::Ready,
        broken: !matches!(inst.state, InstanceState::Ready | InstanceState::Starting),
        age_ms: p.map_or(0, |p| {
            u64::try_from(now.duration_since(p.started).as_millis()).unwrap_or(u64::MAX)
        }),
        in_flight: p.map_or(0.0, |p| p.endpoint.stats.in_flight() as f64),
        rps: p.map_or(0.0, |p| p.rps),
        cpu_percent: p.map_or(0.0, |p| p.cpu_percent),
        rss_bytes: p.map_or(0, |p| p.rss_bytes),
        memory_limit,
        latency_p95_ms: window.latency_p95.map(|d| d.as_secs_f64() * 1000.0),
        error_rate: window.error_rate(),
    }
}

impl AppActor {
    /// One autoscaler tick.
    pub(super) fn scale_tick(&mut self, now: Instant) {
        let memory_limit = self.command().and_then(|c| c.max_memory);
        // Held while scaled to zero, or queued behind `max_conn`: both wait for capacity.
        let queue_depth = self.demand.as_ref().map_or(0, |d| d.held() + d.queued()) as f64;
        let instances: Vec<InstanceSample> = self
            .slots
            .values()
            .map(|s| sample(&s.active, now, memory_limit))
            .collect();
        let current = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let Some(scaler) = self.scaler.as_mut() else {
            return;
        };
        let obs = Observation {
            instances,
            current,
            queue_depth,
            manual: scaler.manual.clone(),
            paused: scaler.paused,
            start_time_ms: scaler.start_time_ms,
        };
        let now_ms = u64::try_from(now.duration_since(scaler.epoch).as_millis()).unwrap_or(0);
        let decision = scaler.engine.tick(now_ms, wall_ms(), &obs);
        scaler.save_history(false);
        let desired = decision.desired;
        if desired != current {
            tracing::info!(app = %self.app.name, from = current, to = desired, explanation = %decision.explanation, "autoscaler decision");
            let mut events = self
                .scaling_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            events.push_back(ScalingEvent {
                seq: EVENT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                at_unix_ms: wall_ms(),
                app: self.app.name.clone(),
                from: current,
                to: desired,
                decision: decision.clone(),
            });
            while events.len() > EVENTS_KEPT {
                events.pop_front();
            }
        }
        if desired != current {
            *scaler
                .decisions
                .entry(reason_kind(&decision.reason))
                .or_default() += 1;
        }
        let candidates = decision.scale_in_candidates.clone();
        scaler.last = Some(decision);
        if desired != current {
            self.apply_scale(desired, &candidates);
        }
    }

    /// Sets the instance count: scale-up adds the lowest free slots; scale-in drains the named
    /// instances first (the idlest), then the highest-numbered.
    pub(super) fn apply_scale(&mut self, desired: u32, scale_in_first: &[String]) {
        self.desired = desired;
        let prefix = format!("{}-", self.app.name);
        for id in scale_in_first {
            if self.slots.len() <= desired as usize {
                break;
            }
            let Some(index) = id.strip_prefix(&prefix).and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(slot) = self.slots.remove(&index) {
                self.retire(slot.active);
                if let Some(next) = slot.next {
                    self.retire(next);
                }
            }
        }
        self.reconcile();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictive_turned_on_by_a_reload_reads_and_keeps_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scaler-history.json");
        let minutes: Vec<(i64, f64)> = (0..30)
            .map(|m| (28_401_120 + m, 3.0)) // Unix minutes from 2024-01-01
            .collect();
        std::fs::write(&path, serde_json::to_vec(&minutes).unwrap()).unwrap();
        let plain = herd_config::Scaling::default();
        let mut s = Scaler::new(&plain, path.clone());
        assert_eq!(s.engine.history().len(), 0);
        let predictive = herd_config::Scaling {
            predictive: Some(herd_config::Predictive {
                mode: herd_config::PredictiveMode::ForecastOnly,
                lead: herd_config::Lead::Auto,
            }),
            ..plain.clone()
        };
        s.reconfigure(&predictive, path.clone());
        assert_eq!(s.engine.history().len(), 30);
        std::fs::remove_file(&path).unwrap();
        // Turned off again: saved one last time.
        s.reconfigure(&plain, path.clone());
        let saved: Vec<(i64, f64)> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(saved.len(), 30);
    }
}
