//! The rate limiter's decision, pure: GCRA (generic cell rate algorithm), which is nginx
//! `limit_req`'s leaky bucket written with one number per key, the theoretical arrival time
//! (TAT) of the next request that would conform exactly to the rate.
//!
//! With emission interval `T = 1/rate` and tolerance `τ = burst × T`, a request at `now` waits
//! `w = max(TAT, now) − now` (nginx's `excess / rate`). `w > τ` (nginx: `excess > burst`)
//! rejects it without changing the state; otherwise it is admitted, `TAT = max(TAT, now) + T`,
//! and it is delayed by `w − delay × T` (nginx's `delay=`; `nodelay` is `delay = burst`), or
//! not at all when that is not positive. Times are nanoseconds on the caller's clock.

use std::time::Duration;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Serve it now.
    Allow,
    /// Serve it after this wait (its slot at the rate; at most `burst / rate`).
    Delay(Duration),
    /// Over the burst: refuse it; a request after `retry_after` would be admitted.
    Reject { retry_after: Duration },
}

/// One limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    interval: u64,
    tolerance: u64,
    /// The part of a request's wait that is not waited (`delay × T`).
    free: u64,
}

impl Gcra {
    /// `undelayed`: requests over the rate served at once (nginx `delay`; `burst` for
    /// `nodelay`).
    pub(crate) fn new(interval: Duration, burst: u32, undelayed: u32) -> Self {
        let interval = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
            free: interval.saturating_mul(u64::from(undelayed)),
        }
    }

    /// Decides for a request at `now` against the key's `tat` (0 for a key not seen yet),
    /// which is advanced when the request is admitted.
    pub(crate) fn check(&self, tat: &mut u64, now: u64) -> Decision {
        let start = (*tat).max(now);
        let wait = start - now;
        if wait > self.tolerance {
            return Decision::Reject {
                retry_after: Duration::from_nanos(wait - self.tolerance),
            };
        }
        *tat = start.saturating_add(self.interval);
        if wait <= self.free {
            Decision::Allow
        } else {
            Decision::Delay(Duration::from_nanos(wait - self.free))
        }
    }

    /// Gives back one admitted request's room (a request another limit then refused): the
    /// TAT moves back one interval. A TAT at or before `now` means the same as the one the
    /// request found, since a request only ever counts from `max(TAT, now)`.
    pub(crate) fn refund(&self, tat: &mut u64) {
        *tat = tat.saturating_sub(self.interval);
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_zero_admits_one_per_interval() {
        let g = Gcra::new(Duration::from_millis(200), 0, 0);
        let mut tat = 0;
        assert_eq!(g.check(&mut tat, 1000 * MS), Decision::Allow);
        assert_eq!(
            g.check(&mut tat, 1050 * MS),
            Decision::Reject {
                retry_after: Duration::from_millis(150)
            }
        );
        assert_eq!(g.check(&mut tat, 1200 * MS), Decision::Allow);
    }

    #[test]
    fn burst_delays_or_passes_with_nodelay() {
        let g = Gcra::new(Duration::from_millis(100), 2, 0);
        let mut tat = 0;
        let got: Vec<_> = (0..4).map(|_| g.check(&mut tat, 10 * MS)).collect();
        assert_eq!(
            got,
            [
                Decision::Allow,
                Decision::Delay(Duration::from_millis(100)),
                Decision::Delay(Duration::from_millis(200)),
                Decision::Reject {
                    retry_after: Duration::from_millis(100)
                },
            ]
        );
        let g = Gcra::new(Duration::from_millis(100), 5, 5);
        let mut tat = 0;
        let admitted = (0..10)
            .filter(|_| g.check(&mut tat, 10 * MS) == Decision::Allow)
            .count();
        assert_eq!(admitted, 6, "nodelay admits 1 + burst at once");
    }

    #[test]
    fn delay_serves_the_first_excess_requests_at_once_then_spaces_the_rest() {
        // nginx's `burst=5 delay=2` at 10r/s: 1 + 2 at once, 3 spaced, then rejected.
        let g = Gcra::new(Duration::from_millis(100), 5, 2);
        let mut tat = 0;
        let got: Vec<_> = (0..7).map(|_| g.check(&mut tat, 10 * MS)).collect();
        assert_eq!(
            got,
            [
                Decision::Allow,
                Decision::Allow,
                Decision::Allow,
                Decision::Delay(Duration::from_millis(100)),
                Decision::Delay(Duration::from_millis(200)),
                Decision::Delay(Duration::from_millis(300)),
                Decision::Reject {
                    retry_after: Duration::from_millis(100)
                },
            ]
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    /// nginx's `ngx_http_limit_req_lookup`, in nanoseconds: `excess` is the backlog of work.
    #[derive(Default)]
    struct Nginx {
        seen: bool,
        excess: u64,
        last: u64,
    }

    impl Nginx {
        fn check(&mut self, t: u64, interval: u64, burst: u64, delay: u64) -> Decision {
            let excess = if self.seen {
                (self.excess + interval).saturating_sub(t - self.last)
            } else {
                0
            };
            if excess > burst * interval {
                return Decision::Reject {
                    retry_after: Duration::from_nanos(excess - burst * interval),
                };
            }
            (self.seen, self.excess, self.last) = (true, excess, t);
            // `ngx_http_limit_req_account`: `nodelay` is `delay = burst`.
            if excess <= delay * interval {
                Decision::Allow
            } else {
                Decision::Delay(Duration::from_nanos(excess - delay * interval))
            }
        }
    }

    proptest! {
        #[test]
        fn matches_nginx_and_bounds_hold(
            interval_ms in 1u64..500,
            burst in 0u32..8,
            nodelay: bool,
            delay in 0u32..8,
            gaps in prop::collection::vec(0u64..300, 1..200),
        ) {
            let interval = interval_ms * MS;
            let undelayed = if nodelay { burst } else { delay.min(burst) };
            let g = Gcra::new(Duration::from_nanos(interval), burst, undelayed);
            let mut model = Nginx::default();
            let mut tat = 0;
            let mut now = 5_000 * MS;
            // (arrival, served at) of admitted requests.
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for gap in gaps {
                now += gap * MS;
                let d = g.check(&mut tat, now);
                prop_assert_eq!(d, model.check(now, interval, u64::from(burst), u64::from(undelayed)));
                match d {
                    Decision::Allow => admitted.push((now, now)),
                    Decision::Delay(w) => {
                        prop_assert!(!nodelay, "nodelay never delays");
                        prop_assert!(
                            w.as_nanos() <= u128::from(burst - undelayed) * u128::from(interval)
                        );
                        admitted.push((now, now + u64::try_from(w.as_nanos()).unwrap()));
                    }
                    Decision::Reject { retry_after } => {
                        // Retrying exactly then is admitted.
                        let at = now + u64::try_from(retry_after.as_nanos()).unwrap();
                        let mut probe = tat;
                        let retried = g.check(&mut probe, at);
                        prop_assert!(!matches!(retried, Decision::Reject { .. }), "{:?}", retried);
                    }
                }
            }
            // Admitted in any window [a, a + W]: at most W / T + burst + 1.
            for (i, &(a, _)) in admitted.iter().enumerate() {
                for (j, &(b, _)) in admitted.iter().enumerate().skip(i) {
                    let n = u64::try_from(j - i + 1).unwrap();
                    prop_assert!((n - 1) * interval <= (b - a) + u64::from(burst) * interval);
                }
            }
            // With every excess request delayed, requests are served spaced at least T apart.
            if undelayed == 0 {
                for w in admitted.windows(2) {
                    prop_assert!(w[1].1 >= w[0].1 + interval);
                }
            }
        }
    }
}
