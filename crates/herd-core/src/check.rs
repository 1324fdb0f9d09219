//! What the data plane and the admin API share about an instance beyond counters: the last
//! active health check (shown by `GET /loadbalancer/status`), the operator's maintenance mark
//! (HAProxy MAINT: checks paused), and the hook a request's end calls so that requests queued
//! for a server under `max_conn` learn that a slot is free without polling.

use std::time::SystemTime;

use serde::Serialize;

/// The result of the last active health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastCheck {
    /// Unix milliseconds when the probe finished.
    pub at_ms: u64,
    pub ok: bool,
    /// What the probe saw: `"HTTP 200"`, `"connect: Connection refused"`, `"timeout after 1s"`.
    pub detail: String,
}

impl LastCheck {
    /// A check finished now.
    #[must_use]
    pub fn now(ok: bool, detail: String) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        LastCheck { at_ms, ok, detail }
    }
}

/// Told when a request that held an in-flight slot on an instance ends.
pub trait Release: Send + Sync + std::fmt::Debug {
    /// Called once per request, after the in-flight count went down.
    fn released(&self);
}

/// One instance in the gateway's rotation as the load balancer weighs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LbWeight {
    /// The instance id (`web-3`).
    pub instance: String,
    /// Configured `weight`.
    pub weight: u32,
    /// The weight in force now: lower than `weight` during slow start.
    pub effective_weight: f64,
    pub backup: bool,
    /// `max_conn` (0 = unlimited).
    pub max_conn: u32,
}

/// The gateway's view of its rotation, for `GET /loadbalancer/status`.
pub trait LbView: Send + Sync + 'static {
    /// The instances of `app` in rotation with their weights (empty for an unknown app).
    fn lb_weights(&self, app: &str) -> Vec<LbWeight>;
    /// Requests of `app` waiting for a server under its `max_conn`.
    fn queued(&self, app: &str) -> usize;
}
