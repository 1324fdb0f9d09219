//! The connection state `status()` reports, fed by every call's outcome and a background probe
//! (a small write, so a server that answers but cannot take writes is not `ok`).
//!
//! `ok` after a success; `reconnecting` after a connection failure; `down` once failures have
//! lasted longer than [`DOWN_AFTER`] (or two call timeouts, if longer).

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
}

impl Health {
    /// Records one call's outcome; only connection-level failures change the state.
    pub(super) fn record<T>(&self, result: &Result<T, StoreError>) {
        let mut s = self.inner.lock().unwrap();
        match result {
            Ok(_) => {
                if s.failing_since.take().is_some() {
                    tracing::info!("store connection is back");
                }
                s.last_error = None;
            }
            Err(e) if e.is_retryable() => {
                if s.failing_since.is_none() {
                    tracing::warn!(error = %e, "store connection failing; reconnecting");
                    s.failing_since = Some(Instant::now());
                }
                s.last_error = Some(e.to_string());
            }
            // A wrong type or a bad argument says nothing about the connection.
            Err(_) => {}
        }
    }

    /// `(state, last_error)` for `status()`.
    pub(super) fn state(&self, timeout: Duration) -> (&'static str, Option<String>) {
        self.state_at(Instant::now(), timeout)
    }

    fn state_at(&self, now: Instant, timeout: Duration) -> (&'static str, Option<String>) {
        let s = self.inner.lock().unwrap();
        match s.failing_since {
            None => ("ok", None),
            Some(since) if now.saturating_duration_since(since) > DOWN_AFTER.max(timeout * 2) => {
                ("down", s.last_error.clone())
            }
            Some(_) => ("reconnecting", s.last_error.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_then_success() {
        let h = Health::default();
        assert_eq!(h.state(Duration::from_secs(1)).0, "ok");
        h.record::<()>(&Err(StoreError::Invalid("x".into())));
        assert_eq!(
            h.state(Duration::from_secs(1)).0,
            "ok",
            "bad arguments are not connection trouble"
        );
        h.record::<()>(&Err(StoreError::Timeout {
            backend: "redis",
            millis: 5,
        }));
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
        h.record(&Ok(()));
        assert_eq!(h.state(Duration::from_secs(1)), ("ok", None));
    }
}
