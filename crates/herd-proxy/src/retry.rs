//! When a request may be sent again, and how many retries an app can afford.
//!
//! A request that never reached a backend (connect failure, pooled connection found closed) is
//! always tried on another instance: it cost the backend nothing. One that did reach a backend
//! is retried only when it is idempotent and bodiless (so herd can rebuild it), the outcome is
//! in `retry_on`, the route's `retries` count is not spent, another instance is left, and the
//! app's [`RetryBudget`] allows it.
//!
//! The budget follows Finagle's `RetryBudget`: over a sliding window of [`WINDOW_SECS`] seconds,
//! retries may number at most `ratio` × requests plus a floor of `retry_budget_min_per_s` per
//! second (default 10, so a quiet app can still retry; 0 makes the ratio a strict cap). It is a
//! pure struct over whole seconds.

use herd_config::RetryOn;
use http::Method;

/// One request's retry allowance: the route's `retries` (else the gateway's) and `retry_on`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Retries left for a request that reached a backend.
    pub(crate) left: u32,
    pub(crate) on: RetryOn,
}

/// Length of the budget's sliding window.
pub(crate) const WINDOW_SECS: u64 = 10;

/// Idempotent methods (RFC 9110 §9.2.2): sending one twice has the effect of sending it once.
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The second this bucket counts (buckets of older seconds are stale).
    sec: u64,
    requests: u64,
    retries: u64,
}

/// Requests and retries per second over the last [`WINDOW_SECS`] seconds.
#[derive(Debug, Clone)]
pub(crate) struct RetryBudget {
    ratio: f64,
    /// Retries always allowed per second, whatever the ratio (Finagle's `minRetriesPerSec`).
    min_per_sec: u64,
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_sec: u32) -> Self {
        RetryBudget {
            ratio,
            min_per_sec: u64::from(min_per_sec),
            buckets: [Bucket::default(); WINDOW_SECS as usize],
        }
    }

    fn bucket(&mut self, sec: u64) -> &mut Bucket {
        let b = &mut self.buckets[usize::try_from(sec % WINDOW_SECS).unwrap_or(0)];
        if b.sec != sec {
            *b = Bucket {
                sec,
                requests: 0,
                retries: 0,
            };
        }
        b
    }

    /// Counts a request (its first attempt) at second `sec`.
    pub(crate) fn deposit(&mut self, sec: u64) {
        self.bucket(sec).requests += 1;
    }

    /// Takes one retry at second `sec` if the window allows it.
    pub(crate) fn withdraw(&mut self, sec: u64) -> bool {
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            if b.sec + WINDOW_SECS > sec && b.sec <= sec {
                requests += b.requests;
                retries += b.retries;
            }
        }
        // Counts stay far below 2^52, where f64 is exact.
        #[allow(clippy::cast_precision_loss)]
        let allowed = (self.min_per_sec * WINDOW_SECS) as f64 + self.ratio * requests as f64;
        #[allow(clippy::cast_precision_loss)]
        let ok = (retries + 1) as f64 <= allowed;
        if ok {
            self.bucket(sec).retries += 1;
        }
        ok
    }

    /// Gives back a retry taken at second `sec` that did not happen (no instance to send it
    /// to).
    pub(crate) fn refund(&mut self, sec: u64) {
        let b = self.bucket(sec);
        b.retries = b.retries.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_quiet_app_gets_the_floor_and_a_busy_one_its_ratio() {
        let mut b = RetryBudget::new(0.2, 10);
        let floor = 10 * WINDOW_SECS;
        for _ in 0..floor {
            assert!(b.withdraw(5));
        }
        assert!(!b.withdraw(5), "over the floor with no requests");
        let mut b = RetryBudget::new(0.2, 10);
        for _ in 0..1000 {
            b.deposit(5);
        }
        let mut n = 0;
        while b.withdraw(5) {
            n += 1;
        }
        assert_eq!(n, floor + 200);
        // The window slides: ten seconds later the old requests and retries are gone.
        assert!(b.withdraw(15));
        let mut n = 1;
        while b.withdraw(15) {
            n += 1;
        }
        assert_eq!(n, floor);
    }

    #[test]
    fn a_refunded_retry_can_be_taken_again() {
        let mut b = RetryBudget::new(0.2, 1);
        let floor = WINDOW_SECS;
        for _ in 0..floor {
            assert!(b.withdraw(5));
        }
        assert!(!b.withdraw(5));
        b.refund(5);
        assert!(b.withdraw(5));
        assert!(!b.withdraw(5));
    }

    #[test]
    fn without_a_floor_the_ratio_is_a_strict_cap() {
        let mut b = RetryBudget::new(0.2, 0);
        assert!(!b.withdraw(1), "no requests, no retries");
        for _ in 0..4 {
            b.deposit(1);
        }
        assert!(!b.withdraw(1), "4 requests allow 0.8 retries");
        b.deposit(2);
        assert!(b.withdraw(2), "5 requests allow one");
        assert!(!b.withdraw(2));
        for _ in 0..1000 {
            b.deposit(3);
        }
        let mut n = 0;
        while b.withdraw(3) {
            n += 1;
        }
        assert_eq!(n, 201 - 1, "20 % of 1005 requests, one already taken");
    }

    #[test]
    fn only_idempotent_methods() {
        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
    }

    proptest! {
        /// Against a model that keeps every event: retries granted in any window never exceed
        /// the floor plus ratio × requests in that window.
        #[test]
        fn never_grants_more_than_the_window_allows(
            events in proptest::collection::vec((0..3u64, any::<bool>()), 1..400),
            ratio in 0.0..1.0f64,
            min in 0..20u32,
        ) {
            let mut b = RetryBudget::new(ratio, min);
            let mut sec = 0u64;
            let mut log: Vec<(u64, bool)> = Vec::new(); // (sec, is_retry) granted events
            for (step, is_request) in events {
                sec += step;
                if is_request {
                    b.deposit(sec);
                    log.push((sec, false));
                } else {
                    let in_window = |e: &&(u64, bool)| e.0 + WINDOW_SECS > sec;
                    let requests = log.iter().filter(in_window).filter(|e| !e.1).count() as f64;
                    let retries = log.iter().filter(in_window).filter(|e| e.1).count() as f64;
                    let allowed = (u64::from(min) * WINDOW_SECS) as f64 + ratio * requests;
                    let granted = b.withdraw(sec);
                    prop_assert_eq!(granted, retries + 1.0 <= allowed);
                    if granted {
                        log.push((sec, true));
                    }
                }
            }
        }
    }
}
