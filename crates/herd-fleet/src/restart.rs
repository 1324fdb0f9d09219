//! PM2's restart policy as a pure state machine: exponential backoff (×1.5, capped), reset after
//! a stable run, and `errored` after too many consecutive unstable exits.

use std::time::Duration;

/// After this much uptime an exit no longer continues the backoff sequence (PM2: 30 s).
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// An exit sooner than this after start is unstable.
    pub min_uptime: Duration,
    /// Consecutive unstable exits tolerated; the next one gives up. `0`: no restart at all,
    /// however long the run was (PM2's `autorestart: false`).
    pub max_restarts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

/// What to do after an unexpected exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Restart { after: Duration },
    GiveUp,
}

/// Restart bookkeeping of one instance lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartTracker {
    /// Consecutive exits with uptime below `min_uptime`.
    pub unstable: u32,
    /// Total restarts after unexpected exits (shown to users).
    pub restarts: u32,
    /// The delay the next restart will wait.
    pub next_delay: Duration,
}

impl RestartTracker {
    #[must_use]
    pub fn new(policy: &RestartPolicy) -> Self {
        RestartTracker {
            unstable: 0,
            restarts: 0,
            next_delay: policy.initial_delay,
        }
    }

    /// Decides after an unexpected exit that happened `uptime` after the start.
    pub fn on_exit(&mut self, policy: &RestartPolicy, uptime: Duration) -> Verdict {
        if uptime >= STABLE_AFTER {
            self.next_delay = policy.initial_delay;
        }
        if uptime < policy.min_uptime {
            self.unstable += 1;
        } else {
            self.unstable = 0;
        }
        if self.unstable > policy.max_restarts || policy.max_restarts == 0 {
            return Verdict::GiveUp;
        }
        let after = self.next_delay.min(policy.max_delay);
        self.next_delay = policy.max_delay.min(self.next_delay.mul_f64(1.5));
        self.restarts += 1;
        Verdict::Restart { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn max_restarts_zero_never_restarts() {
        let never = RestartPolicy {
            max_restarts: 0,
            ..pm2()
        };
        for uptime in [
            Duration::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(3600),
        ] {
            let mut t = RestartTracker::new(&never);
            assert_eq!(t.on_exit(&never, uptime), Verdict::GiveUp, "{uptime:?}");
            assert_eq!(t.restarts, 0);
        }
    }

    fn pm2() -> RestartPolicy {
        RestartPolicy {
            min_uptime: Duration::from_secs(1),
            max_restarts: 16,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(15),
        }
    }

    #[test]
    fn backoff_grows_by_half_and_caps() {
        let p = pm2();
        let mut t = RestartTracker::new(&p);
        let mut delays = vec![];
        for _ in 0..16 {
            match t.on_exit(&p, Duration::from_millis(10)) {
                Verdict::Restart { after } => delays.push(after.as_millis()),
                Verdict::GiveUp => panic!("gave up too early"),
            }
        }
        assert_eq!(&delays[..4], &[100, 150, 225, 337]);
        assert_eq!(*delays.last().unwrap(), 15_000);
        assert_eq!(t.on_exit(&p, Duration::from_millis(10)), Verdict::GiveUp);
        assert_eq!(t.restarts, 16);
    }

    #[test]
    fn stable_run_resets_backoff_and_unstable_count() {
        let p = pm2();
        let mut t = RestartTracker::new(&p);
        for _ in 0..5 {
            t.on_exit(&p, Duration::from_millis(10));
        }
        assert_eq!(
            t.on_exit(&p, Duration::from_secs(31)),
            Verdict::Restart {
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(t.unstable, 0);
    }

    proptest! {
        #[test]
        fn delay_stays_within_bounds_and_gives_up_only_after_max(
            uptimes in proptest::collection::vec(0u64..40_000, 1..60),
            max_restarts in 0u32..20,
        ) {
            let p = RestartPolicy { max_restarts, ..pm2() };
            let mut t = RestartTracker::new(&p);
            let mut unstable_run = 0;
            for ms in uptimes {
                let up = Duration::from_millis(ms);
                unstable_run = if up < p.min_uptime { unstable_run + 1 } else { 0 };
                match t.on_exit(&p, up) {
                    Verdict::Restart { after } => {
                        prop_assert!(after >= p.initial_delay && after <= p.max_delay);
                        prop_assert!(unstable_run <= max_restarts && max_restarts > 0);
                    }
                    Verdict::GiveUp => {
                        // `0` gives up at the first exit, stable or not.
                        prop_assert!(unstable_run > max_restarts || max_restarts == 0);
                        break;
                    }
                }
            }
        }
    }
}
