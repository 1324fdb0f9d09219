//! The telemetry sampler: once a second it turns the gateway's cumulative request counters and
//! the supervisor's snapshot into one [`Sample`] per app (rates and quantiles over that second),
//! keeps 15 minutes of them, and broadcasts each tick to live subscribers (the dashboard's
//! stream). `GET /health/performance` aggregates the per-second histograms over 1 and 5 minutes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_core::telemetry::{AppSample, Sample};
use herd_core::{RouteCounters, StatsRegistry};
use herd_fleet::{AppStatus, Fleet, ScalingEvent};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Seconds of history kept (15 minutes).
pub const HISTORY: usize = 900;

/// What the live stream sends each second.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub sample: Arc<Sample>,
    /// Same shape as `GET /cluster/status`.
    pub cluster: serde_json::Value,
    /// Scaling events recorded since the previous tick.
    pub scaling_events: Vec<ScalingEvent>,
}

struct Entry {
    sample: Arc<Sample>,
    /// Per app: the request counters of that second (for 1 m / 5 m quantiles).
    deltas: HashMap<String, RouteCounters>,
    /// How long the entry covers: about 1 s, more after a stalled tick.
    seconds: f64,
}

/// Shared by the sampler task and the handlers.
pub struct Telemetry {
    entries: Mutex<VecDeque<Entry>>,
    ticks: broadcast::Sender<Arc<Tick>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// Quantiles and rates over a window, for `GET /health/performance`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WindowFigures {
    pub requests: u64,
    pub rps: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn ms(q: Option<f64>) -> Option<f64> {
    q.map(|s| (s * 1e6).round() / 1e3)
}

fn figures(c: &RouteCounters, seconds: f64) -> WindowFigures {
    let n = c.responses();
    WindowFigures {
        requests: n,
        rps: if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        },
        error_rate: if n == 0 {
            0.0
        } else {
            c.by_class[4] as f64 / n as f64
        },
        p50_ms: ms(c.quantile(0.50)),
        p95_ms: ms(c.quantile(0.95)),
        p99_ms: ms(c.quantile(0.99)),
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Every route entry's counters, by entry (the `Arc` keeps the entry, hence its address, alive
/// until the next snapshot replaces this one).
type Snapshot = HashMap<usize, (Arc<herd_core::RouteStats>, RouteCounters)>;

fn snapshot(stats: &StatsRegistry) -> Snapshot {
    stats
        .all()
        .into_iter()
        .map(|r| {
            let c = r.counters();
            (Arc::as_ptr(&r) as usize, (r, c))
        })
        .collect()
}

/// What each app's routes counted since `prev`, entry by entry: a route a reload removed is
/// left out (its counts would otherwise come off the app's sum and hide new ones), a new one
/// counts from zero.
fn deltas_per_app(current: &Snapshot, prev: &Snapshot) -> HashMap<String, RouteCounters> {
    let mut out: HashMap<String, RouteCounters> = HashMap::new();
    for (key, (r, c)) in current {
        let d = match prev.get(key) {
            Some((_, p)) => c.delta(p),
            None => c.clone(),
        };
        out.entry(r.app.clone()).or_default().add(&d);
    }
    out
}

fn app_sample(app: &AppStatus, delta: &RouteCounters, seconds: f64) -> AppSample {
    let f = figures(delta, seconds);
    let n = app.instances.len();
    let rss: u64 = app.instances.iter().map(|i| i.rss_bytes).sum();
    AppSample {
        app: app.name.clone(),
        rps: f.rps,
        error_rate: (f.requests > 0).then_some(f.error_rate),
        p50_ms: f.p50_ms,
        p95_ms: f.p95_ms,
        p99_ms: f.p99_ms,
        in_flight: app.instances.iter().map(|i| i.in_flight as u64).sum(),
        ready: u32::try_from(app.ready).unwrap_or(u32::MAX),
        desired: app.desired,
        instances: u32::try_from(n).unwrap_or(u32::MAX),
        cpu_percent: if n == 0 {
            0.0
        } else {
            app.instances.iter().map(|i| i.cpu_percent).sum::<f64>() / n as f64
        },
        memory_percent: app
            .max_memory
            .filter(|_| n > 0)
            .map(|limit| (rss as f64 / n as f64) / limit.max(1) as f64 * 100.0),
        rss_bytes: rss,
    }
}

impl Telemetry {
    /// Starts the sampler; it stops when `shutdown` is cancelled.
    pub fn start(
        fleet: Arc<Fleet>,
        stats: Arc<StatsRegistry>,
        shutdown: CancellationToken,
        on_sample: Box<dyn Fn(&Sample) + Send + Sync>,
    ) -> (Arc<Telemetry>, tokio::task::JoinHandle<()>) {
        let (ticks, _) = broadcast::channel(16);
        let t = Arc::new(Telemetry {
            entries: Mutex::new(VecDeque::with_capacity(HISTORY)),
            ticks,
        });
        let me = Arc::clone(&t);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut prev = snapshot(&stats);
                let mut prev_at = Instant::now();
                // Events are streamed by their sequence number, not their time: two apps can
                // stamp the same millisecond, and the wall clock can step back.
                let mut last_event = fleet
                    .scaling_events(None)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| e.seq)
                    .max()
                    .unwrap_or(0);
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let now = Instant::now();
                    let seconds = now.duration_since(prev_at).as_secs_f64();
                    let current = snapshot(&stats);
                    let apps = fleet.status();
                    let mut by_app = deltas_per_app(&current, &prev);
                    let mut deltas = HashMap::new();
                    let samples = apps
                        .iter()
                        .map(|a| {
                            let d = by_app.remove(&a.name).unwrap_or_default();
                            let s = app_sample(a, &d, seconds);
                            deltas.insert(a.name.clone(), d);
                            s
                        })
                        .collect();
                    let sample = Arc::new(Sample {
                        at_unix_ms: wall_ms(),
                        apps: samples,
                    });
                    on_sample(&sample);
                    let mut events: Vec<ScalingEvent> = fleet
                        .scaling_events(None)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|e| e.seq > last_event)
                        .collect();
                    events.sort_by_key(|e| e.seq);
                    if let Some(e) = events.last() {
                        last_event = e.seq;
                    }
                    {
                        let mut entries = me
                            .entries
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if entries.len() == HISTORY {
                            entries.pop_front();
                        }
                        entries.push_back(Entry {
                            sample: Arc::clone(&sample),
                            deltas,
                            seconds,
                        });
                    }
                    if me.ticks.receiver_count() > 0 {
                        let _ = me.ticks.send(Arc::new(Tick {
                            sample,
                            cluster: serde_json::json!({ "apps": apps }),
                            scaling_events: events,
                        }));
                    }
                    prev = current;
                    prev_at = now;
                }
            },
            tracing::info_span!("telemetry"),
        ));
        (t, task)
    }

    /// Samples of the last `seconds` seconds, oldest first.
    #[must_use]
    pub fn history(&self, seconds: usize) -> Vec<Arc<Sample>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let skip = entries.len().saturating_sub(seconds);
        entries
            .iter()
            .skip(skip)
            .map(|e| Arc::clone(&e.sample))
            .collect()
    }

    /// The newest sample.
    #[must_use]
    pub fn latest(&self) -> Option<Arc<Sample>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.back().map(|e| Arc::clone(&e.sample))
    }

    /// Per app: figures over the last `seconds` seconds (fewer right after start).
    #[must_use]
    pub fn window(&self, seconds: usize) -> Vec<(String, WindowFigures)> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let skip = entries.len().saturating_sub(seconds);
        // The time the entries really cover (a tick delayed by a stall covers more than 1 s).
        let covered: f64 = entries.iter().skip(skip).map(|e| e.seconds).sum();
        let mut sums: Vec<(String, RouteCounters)> = Vec::new();
        for e in entries.iter().skip(skip) {
            for (app, d) in &e.deltas {
                match sums.iter_mut().find(|(a, _)| a == app) {
                    Some((_, c)) => c.add(d),
                    None => sums.push((app.clone(), d.clone())),
                }
            }
        }
        sums.sort_by(|a, b| a.0.cmp(&b.0));
        sums.into_iter()
            .map(|(app, c)| (app, figures(&c, covered)))
            .collect()
    }

    /// Live ticks, one per second.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tick>> {
        self.ticks.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_removed_by_a_reload_does_not_hide_the_new_counts() {
        let reg = StatsRegistry::default();
        let kept = reg.entry("web", "default");
        let gone = reg.entry("web", "old");
        for _ in 0..1000 {
            gone.record(200, Duration::from_millis(1));
        }
        let prev = snapshot(&reg);
        reg.retain([&kept]);
        for _ in 0..15 {
            kept.record(500, Duration::from_millis(1));
        }
        for _ in 0..5 {
            kept.record(200, Duration::from_millis(1));
        }
        let fresh = reg.entry("web", "new");
        fresh.record(200, Duration::from_millis(1));
        let d = deltas_per_app(&snapshot(&reg), &prev);
        let web = &d["web"];
        assert_eq!(web.responses(), 21, "{web:?}");
        assert_eq!(web.by_class[4], 15, "{web:?}");
    }
}
