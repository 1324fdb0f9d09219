//! The connection state `status()` reports, fed by every call's outcome and a background probe
//! (a small write, so a server that answers but cannot take writes is not `ok`).
//!
//! `ok` after a success; `reconnecting` after a connection failure; `down` once failures have
//! lasted longer than [`DOWN_AFTER`] (or two call timeouts, if longer); `degraded` while the
//! server answers but the probe finds it cannot serve (writes refused: out of memory, a
//! replica, an ACL; on a cluster, slots whose master is unreachable). Only the probe clears
//! `degraded`: a read that succeeds meanwhile says nothing about writes or other slots.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::StoreError;

const DOWN_AFTER: Duration = Duration::from_secs(3);

#[derive(Default)]
pub(super) struct Health {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    failing_since: Option<Instant>,
    last_error: Option<String>,
    /// What the probe found wrong with a server that answered (see the module's doc).
    refused: Option<String>,
}

impl Health {
    /// Records one call's outcome: a connection-level failure makes the store `reconnecting`
    /// (then `down`); an error the server answered that keeps herd from serving (`refused`:
    /// out of memory, read-only, an ACL) makes it `degraded` until the probe succeeds. Other
    /// errors (a wrong type, a bad argument) say nothing about the store.
    pub(super) fn record<T>(&self, result: &Result<T, StoreError>, refused: bool) {
        let mut s = self.inner.lock().unwrap();
        match result {
            Ok(_) => {
                if s.failing_since.take().is_some() {
                    tracing::info!("store connection is back");
                }
                s.last_error = None;
            }
            Err(e) if e.is_retryable() && refused => {
                if s.refused.is_none() {
                    tracing::warn!(error = %e, "the store answers but cannot serve (status: degraded)");
                }
                s.refused = Some(e.to_string());
            }
            Err(e) if e.is_retryable() => {
                if s.failing_since.is_none() {
                    tracing::warn!(error = %e, "store connection failing; reconnecting");
                    s.failing_since = Some(Instant::now());
                }
                s.last_error = Some(e.to_string());
            }
            Err(_) => {}
        }
    }

    /// Records the probe's outcome (see [`Health::record`]); its success is the only thing
    /// that clears `degraded`.
    pub(super) fn record_probe(&self, result: &Result<(), StoreError>, refused: bool) {
        self.record(result, refused);
        if result.is_ok() && self.inner.lock().unwrap().refused.take().is_some() {
            tracing::info!("the store serves again (status: ok)");
        }
    }

    /// `(state, last_error)` for `status()`.
    pub(super) fn state(&self, timeout: Duration) -> (&'static str, Option<String>) {
        self.state_at(Instant::now(), timeout)
    }

    fn state_at(&self, now: Instant, timeout: Duration) -> (&'static str, Option<String>) {
        let s = self.inner.lock().unwrap();
        match s.failing_since {
            None if s.refused.is_some() => ("degraded", s.refused.clone()),
            None => ("ok", None),
            Some(since) if now.saturating_duration_since(since) > DOWN_AFTER.max(timeout * 2) => {
                ("down", s.last_error.clone())
            }
            Some(_) => ("reconnecting", s.last_error.clone()),
        }
    }
}

/// What `CLUSTER INFO` says is wrong: a failed cluster state, or slots whose master this node
/// finds failing or unreachable; `None` when every slot is served.
pub(super) fn failing_slots(info: &str) -> Option<String> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let count = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let (fail, pfail) = (count("cluster_slots_fail"), count("cluster_slots_pfail"));
    let assigned = count("cluster_slots_assigned");
    let state = field("cluster_state").unwrap_or("ok");
    if state != "ok" {
        Some(format!(
            "cluster_state is {state} ({fail} slots failing, {pfail} unreachable, {assigned} of 16384 assigned)"
        ))
    } else if fail + pfail > 0 {
        Some(format!(
            "{} of 16384 slots are on a master that is failing or unreachable \
             (cluster_slots_fail {fail}, cluster_slots_pfail {pfail}): calls for their keys fail",
            fail + pfail
        ))
    } else if assigned < 16384 && assigned > 0 {
        Some(format!(
            "only {assigned} of 16384 slots are assigned: calls for keys in the others fail"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_then_success() {
        let h = Health::default();
        assert_eq!(h.state(Duration::from_secs(1)).0, "ok");
        h.record::<()>(&Err(StoreError::Invalid("x".into())), false);
        assert_eq!(
            h.state(Duration::from_secs(1)).0,
            "ok",
            "bad arguments are not connection trouble"
        );
        h.record::<()>(
            &Err(StoreError::Timeout {
                backend: "redis",
                millis: 5,
            }),
            false,
        );
        let (state, err) = h.state(Duration::from_secs(1));
        assert_eq!(state, "reconnecting");
        assert!(err.unwrap().contains("timed out"));
        assert_eq!(h.state(Duration::ZERO).0, "reconnecting");
        let later = Instant::now() + Duration::from_secs(4);
        assert_eq!(
            h.state_at(later, Duration::from_secs(1)).0,
            "down",
            "failing for 4 s is down"
        );
        assert_eq!(
            h.state_at(later, Duration::from_secs(3)).0,
            "reconnecting",
            "down waits 2 timeouts"
        );
        h.record(&Ok(()), false);
        assert_eq!(h.state(Duration::from_secs(1)), ("ok", None));
    }

    #[test]
    fn cluster_info_with_failing_slots_is_a_problem() {
        let healthy = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n";
        assert_eq!(failing_slots(healthy), None);
        let pfail = healthy.replace("cluster_slots_pfail:0", "cluster_slots_pfail:5461");
        assert!(failing_slots(&pfail)
            .unwrap()
            .starts_with("5461 of 16384 slots"));
        let down = healthy.replace("cluster_state:ok", "cluster_state:fail");
        assert!(failing_slots(&down)
            .unwrap()
            .contains("cluster_state is fail"));
        let partial = healthy.replace("cluster_slots_assigned:16384", "cluster_slots_assigned:100");
        assert!(failing_slots(&partial)
            .unwrap()
            .contains("only 100 of 16384"));
    }

    #[test]
    fn only_the_probe_clears_degraded() {
        let h = Health::default();
        let oom = StoreError::Unavailable {
            backend: "redis",
            reason: "OOM command not allowed".into(),
        };
        h.record_probe(&Err(oom), true);
        let (state, err) = h.state(Duration::from_secs(1));
        assert_eq!(state, "degraded");
        assert!(err.unwrap().contains("OOM"));
        // Reads still work: they do not make the store ok.
        h.record(&Ok(()), false);
        assert_eq!(h.state(Duration::from_secs(1)).0, "degraded");
        // A connection failure meanwhile shows as such, and leaves degraded behind it.
        let gone = StoreError::Timeout {
            backend: "redis",
            millis: 5,
        };
        h.record_probe(&Err(gone), false);
        assert_eq!(h.state(Duration::from_secs(1)).0, "reconnecting");
        h.record(&Ok(()), false);
        assert_eq!(h.state(Duration::from_secs(1)).0, "degraded");
        h.record_probe(&Ok(()), false);
        assert_eq!(h.state(Duration::from_secs(1)), ("ok", None));
    }
}
