//! What the engine is told each tick: per-instance samples, the gateway's queue, and the
//! operator's switches. The supervisor and the gateway fill these in; the simulator makes them up.

use serde::{Deserialize, Serialize};

/// One instance as sampled over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSample {
    /// The instance's name, e.g. `web-3`.
    pub id: String,
    /// In the gateway's rotation (passed its health checks).
    pub ready: bool,
    /// Time since the instance was started.
    pub age_ms: u64,
    /// Requests in flight (averaged over the interval).
    pub in_flight: f64,
    /// Requests per second routed to it.
    pub rps: f64,
    /// CPU, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of its process group.
    pub rss_bytes: u64,
    /// The app's `max_memory`, if any (for `memory = "80%"` targets).
    pub memory_limit: Option<u64>,
    /// 95th percentile response time; `None` without enough responses.
    pub latency_p95_ms: Option<f64>,
    /// Failed responses / all responses, 0..=1.
    pub error_rate: f64,
    /// Out of rotation for a reason other than starting up (failed its checks after being
    /// ready, gave up restarting, in maintenance, waiting out a restart backoff): never counted
    /// as warming up, so it cannot hold back a scale-in.
    #[serde(default)]
    pub broken: bool,
}

/// An operator's fixed instance count (`POST /scaling/manual {"instances": 8, "reason": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualOverride {
    /// The count to run; clamped to the app's bounds.
    pub instances: u32,
    /// Why; shown in decisions and status.
    pub reason: String,
}

/// Everything one tick looks at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Every instance that exists, starting ones included.
    pub instances: Vec<InstanceSample>,
    /// Instances that exist, starting ones included (usually `instances.len()`).
    pub current: u32,
    /// Requests the gateway holds for this app while waiting for an instance.
    pub queue_depth: f64,
    /// Set: the engine returns this count (within bounds) and nothing else.
    pub manual: Option<ManualOverride>,
    /// Set: the engine keeps `current` as it is, bounds included.
    pub paused: bool,
    /// The measured time from start to ready of recent instances (for `lead = "auto"`).
    pub start_time_ms: Option<u64>,
}

impl Observation {
    /// Instances in rotation.
    #[must_use]
    pub fn ready(&self) -> u32 {
        u32::try_from(self.instances.iter().filter(|i| i.ready).count()).unwrap_or(u32::MAX)
    }
}
