//! What the supervisor shows: a snapshot each app actor republishes after every change, turned
//! into the admin API's JSON by [`crate::Fleet::status`].

use std::sync::Arc;
use std::time::Instant;

use herd_core::{EndpointStats, InstanceState};
use serde::Serialize;

/// One instance as the admin API and `herd status` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceStatus {
    pub id: String,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// For `servers = [...]` apps: the address herd proxies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    pub state: InstanceState,
    pub uptime_s: f64,
    pub restarts: u32,
    pub rss_bytes: u64,
    pub cpu_percent: f64,
    pub in_flight: usize,
    pub requests_total: u64,
    /// Failed attempts (connect errors, resets, timeouts) seen by the gateway.
    pub failures: u64,
    /// Passively out of the pick after recent failures (nginx `max_fails`/`fail_timeout`).
    pub passively_down: bool,
    /// The gateway's circuit breaker for this instance: `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    pub rps: f64,
    /// While `restarting`: milliseconds until the next start.
    pub next_restart_in_ms: Option<u64>,
    /// The backoff the next unexpected exit would wait.
    pub restart_delay_ms: u64,
    /// The last active health check (none yet, or paused in maintenance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<herd_core::LastCheck>,
    /// How the instance's last process ended: `exit status: 3 after 0.2s`, `signal: 9 (SIGKILL)
    /// after 30s, killed by herd: not ready within ready_timeout (last check: connect: …)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AppStatus {
    pub name: String,
    /// `command` (herd supervises processes) or `servers` (fixed backends).
    pub kind: &'static str,
    pub desired: u32,
    pub ready: usize,
    /// Ready instances the gateway can send requests to now: not passively down and whose
    /// circuit is not open (when every ready one is passively down, the gateway still uses
    /// them, so they count then).
    pub serving: usize,
    pub instances: Vec<InstanceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale: Option<ScaleRecord>,
    pub reloading: bool,
    /// `[app.scaling] min = 0`: with no instance, the next request starts one (so none ready
    /// is not a fault).
    pub scale_from_zero: bool,
    /// How the last rolling reload ended (`complete`, or `failed: ` and why): a reload that a
    /// config change started runs after the config reload has answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<String>,
    /// The app's `max_memory` in bytes, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
}

/// The autoscaler of one app, for `GET /scaling/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingView {
    /// The count the supervisor is converging to.
    pub desired: u32,
    /// Instances that exist (starting ones included).
    pub current: u32,
    pub manual: Option<herd_scaler::ManualOverride>,
    pub paused: bool,
    /// Why it was paused (the pause's `reason`), while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    /// Smoothed spawn → ready time of recent instances.
    pub start_time_ms: Option<u64>,
    pub interval_ms: u64,
    /// The last decision: the input that won and why (bounds, panic and forecast inside).
    pub last: Option<herd_scaler::Decision>,
    /// Decisions that changed the count, by reason kind.
    pub decisions: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScaleRecord {
    pub instances: u32,
    pub reason: String,
}

/// The actor-side snapshot (times as `Instant`s, live counters by reference).
#[derive(Debug, Clone)]
pub(crate) struct InstanceView {
    pub(crate) id: Arc<str>,
    pub(crate) pid: Option<u32>,
    pub(crate) port: Option<u16>,
    pub(crate) addr: Option<String>,
    pub(crate) state: InstanceState,
    pub(crate) started: Option<Instant>,
    pub(crate) restarts: u32,
    pub(crate) restart_at: Option<Instant>,
    pub(crate) restart_delay_ms: u64,
    pub(crate) rss_bytes: u64,
    pub(crate) cpu_percent: f64,
    pub(crate) rps: f64,
    pub(crate) stats: Option<Arc<EndpointStats>>,
    pub(crate) last_exit: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct AppView {
    pub(crate) name: String,
    pub(crate) supervised: bool,
    pub(crate) desired: u32,
    pub(crate) instances: Vec<InstanceView>,
    pub(crate) last_scale: Option<ScaleRecord>,
    pub(crate) reloading: bool,
    pub(crate) scale_from_zero: bool,
    pub(crate) last_reload: Option<String>,
    pub(crate) scaling: Option<ScalingView>,
    pub(crate) max_memory: Option<u64>,
}

impl AppView {
    pub(crate) fn render(&self, now: Instant) -> AppStatus {
        let instances: Vec<InstanceStatus> = self
            .instances
            .iter()
            .map(|i| InstanceStatus {
                id: i.id.to_string(),
                pid: i.pid,
                port: i.port,
                addr: i.addr.clone(),
                state: i.state,
                uptime_s: i
                    .started
                    .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64()),
                restarts: i.restarts,
                rss_bytes: i.rss_bytes,
                cpu_percent: i.cpu_percent,
                in_flight: i.stats.as_ref().map_or(0, |s| s.in_flight()),
                requests_total: i.stats.as_ref().map_or(0, |s| s.requests()),
                failures: i.stats.as_ref().map_or(0, |s| s.failures()),
                passively_down: i.stats.as_ref().is_some_and(|s| s.passively_down(now)),
                circuit: i
                    .stats
                    .as_ref()
                    .map_or("closed", |s| s.circuit_state(now).as_str()),
                rps: i.rps,
                next_restart_in_ms: i.restart_at.map(|t| {
                    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
                }),
                restart_delay_ms: i.restart_delay_ms,
                last_check: i.stats.as_ref().and_then(|s| s.last_check()),
                last_exit: i.last_exit.clone(),
            })
            .collect();
        AppStatus {
            name: self.name.clone(),
            kind: if self.supervised {
                "command"
            } else {
                "servers"
            },
            desired: self.desired,
            ready: instances
                .iter()
                .filter(|i| i.state == InstanceState::Ready)
                .count(),
            serving: serving(&instances),
            instances,
            last_scale: self.last_scale.clone(),
            last_reload: self.last_reload.clone(),
            reloading: self.reloading,
            scale_from_zero: self.scale_from_zero,
            max_memory: self.max_memory,
        }
    }
}

/// See [`AppStatus::serving`].
fn serving(instances: &[InstanceStatus]) -> usize {
    let ready = || {
        instances
            .iter()
            .filter(|i| i.state == InstanceState::Ready && i.circuit != "open")
    };
    match ready().filter(|i| !i.passively_down).count() {
        0 => ready().count(),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(state: InstanceState, passively_down: bool, circuit: &'static str) -> InstanceStatus {
        InstanceStatus {
            id: "web-1".into(),
            pid: None,
            port: None,
            addr: None,
            state,
            uptime_s: 0.0,
            restarts: 0,
            rss_bytes: 0,
            cpu_percent: 0.0,
            in_flight: 0,
            requests_total: 0,
            failures: 0,
            passively_down,
            circuit,
            rps: 0.0,
            next_restart_in_ms: None,
            restart_delay_ms: 0,
            last_check: None,
            last_exit: None,
        }
    }

    #[test]
    fn serving_counts_what_the_gateway_can_pick() {
        use InstanceState::{Ready, Starting};
        let ok = inst(Ready, false, "closed");
        let ejected = inst(Ready, true, "closed");
        let open = inst(Ready, false, "open");
        let probing = inst(Ready, false, "half_open");
        assert_eq!(serving(&[ok.clone(), ejected.clone(), open.clone()]), 1);
        // Every ready one passively down: the gateway uses them all the same.
        assert_eq!(serving(&[ejected.clone(), ejected.clone()]), 2);
        assert_eq!(serving(&[open.clone(), inst(Starting, false, "closed")]), 0);
        assert_eq!(serving(&[open, probing]), 1);
    }
}
