//! Fill leases: request coalescing for callers that load values themselves (the HTTP API's
//! clients), like Varnish's waiting list or memcached's leases.
//!
//! On a miss, the first caller of a key gets the lease: it loads the value and stores it (a
//! put). Callers that miss the same key meanwhile wait for that put instead of loading too,
//! up to the lease's length; if the lease ends without a put (the loader failed or went away)
//! the next waiter gets it and the others wait for that one, for at most [`MAX_FOLLOWED`]
//! leases in all. A value due for refresh is served to everyone, and one caller gets
//! the lease to refresh it. Leases are per node: with several herd nodes, at most one load per
//! key and node. A node keeps at most [`MAX_LEASES`] live leases (past it, callers load without
//! one); leases that ran out are swept as the map doubles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{l1_key, Cache, Hit};
use crate::error::{ServiceError, ServiceResult};

/// The longest lease a caller may take.
pub const MAX_LEASE: Duration = Duration::from_secs(300);

/// What [`Cache::get_or_lease`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Leased {
    /// A value; nothing to do.
    Hit(Hit),
    /// A value due for refresh (refresh-ahead, or stale within grace), and this caller holds
    /// the lease: load the value again and put it. Other callers get `Hit` meanwhile.
    Refresh(Hit),
    /// A miss, and this caller holds the lease: load the value and put it. Callers that miss
    /// meanwhile wait for that put. Also answered, without the lease, to a caller that waited
    /// its whole `lease` on a holder, or on three holders in turn, for someone else's load.
    Load,
}

impl Cache {
    /// Reads a value, and on a miss coordinates who loads it (see the module's docs): the
    /// caller that gets [`Leased::Load`] or [`Leased::Refresh`] should put the value within
    /// `lease`; a caller that misses while another holds the lease waits for its put (at most
    /// `lease` per holder, following up to three holders in turn: three times `lease` in all)
    /// and gets the value. For callers that cannot hand a loader to [`Cache::get_or_load`],
    /// such as HTTP clients.
    ///
    /// # Errors
    /// `Invalid` names or a `lease` of zero or over [`MAX_LEASE`]; store errors on an L1 miss.
    pub async fn get_or_lease(
        &self,
        ns: &str,
        key: &str,
        lease: Duration,
    ) -> ServiceResult<Leased> {
        if lease < Duration::from_millis(1) || lease > MAX_LEASE {
            return Err(ServiceError::invalid(
                "fill",
                format!("{lease:?} is not between 1ms and 5m"),
                "pass how long loading the value may take, e.g. ?fill=5s",
            ));
        }
        let fills = &self.inner.fills;
        let counters = &self.inner.counters;
        let k1 = l1_key(ns, key);
        let mut waited = false;
        // The lease waited on last (its end), and how many leases were waited on.
        let mut seen: Option<Instant> = None;
        let mut followed = 0;
        let mut granted = false;
        // One call counts once in the hit and miss counters, by what it was answered (a
        // waiter served the loader's value is a hit), however often it read meanwhile.
        let leased = loop {
            if let Some(hit) = self.read(ns, key, false).await? {
                if hit.freshness.wants_refresh()
                    && matches!(fills.claim(&k1, lease), Claim::Granted)
                {
                    counters.fill_leases.fetch_add(1, Ordering::Relaxed);
                    counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    counters.loads.fetch_add(1, Ordering::Relaxed);
                    break Leased::Refresh(hit);
                }
                if waited {
                    counters.fill_waits.fetch_add(1, Ordering::Relaxed);
                }
                break Leased::Hit(hit);
            }
            match fills.claim(&k1, lease) {
                Claim::Granted => {
                    // A put may have landed between the read and the claim: read once more
                    // rather than have the value loaded twice.
                    if let Ok(Some(hit)) = self.read(ns, key, false).await {
                        fills.release(ns, key);
                        break Leased::Hit(hit);
                    }
                    counters.fill_leases.fetch_add(1, Ordering::Relaxed);
                    counters.loads.fetch_add(1, Ordering::Relaxed);
                    granted = true;
                    break Leased::Load;
                }
                // Too many leases on this node: load without one (no coalescing, no waiting).
                Claim::Full => break Leased::Load,
                // This caller waited its own `lease` on this holder, which has not put yet.
                Claim::Wait(wait) if seen == Some(wait.until) => break Leased::Load,
                // A holder that failed hands the lease to the next waiter and the others go
                // on waiting for that one (nginx's proxy_cache_lock, Varnish's waiting list
                // keep coalescing too), but not for ever.
                Claim::Wait(_) if followed >= MAX_FOLLOWED => break Leased::Load,
                Claim::Wait(wait) => {
                    waited = true;
                    followed += 1;
                    seen = Some(wait.until);
                    let until = wait.until.min(Instant::now() + lease);
                    tokio::select! {
                        _ = tokio::time::timeout_at(until, wait.finished()) => {}
                        // Shutting down: the caller loads the value itself rather than hold
                        // the shutdown for the rest of its wait.
                        () = self.inner.shutdown.cancelled() => break Leased::Load,
                    }
                }
            }
        };
        self.count_outcome(match &leased {
            Leased::Hit(hit) | Leased::Refresh(hit) => Some(hit),
            Leased::Load => None,
        });
        if matches!(leased, Leased::Load) && !granted {
            // Told to load without the lease (the node's leases are full, or it waited its
            // own `lease` out): a load all the same.
            counters.loads.fetch_add(1, Ordering::Relaxed);
        }
        Ok(leased)
    }
}

/// How many leases in a row a waiter waits on (each holder's, at most the waiter's own
/// `lease`) before it loads the value itself.
const MAX_FOLLOWED: u32 = 3;

/// The fewest leases at which a claim first drops the ones that ran out; after a sweep the
/// next one waits until the map has doubled (amortised O(1) per claim).
const SWEEP_AT: usize = 1024;
/// The most leases one node keeps; past it, callers load without one.
const MAX_LEASES: usize = 100_000;

/// The outcome of [`Fills::claim`].
pub(crate) enum Claim {
    /// This caller holds the lease.
    Granted,
    /// Another caller holds it: wait for its put.
    Wait(Wait),
    /// The node holds [`MAX_LEASES`] live leases: load without one.
    Full,
}

/// One key's lease: its end, and a signal sent when the key is stored (or the lease given
/// back).
struct Lease {
    until: Instant,
    done: watch::Sender<bool>,
}

/// The leases of one node.
#[derive(Default)]
pub(super) struct Fills {
    state: Mutex<State>,
    /// The map's size, readable without the lock: a put with no lease anywhere (the common
    /// case) costs one atomic load.
    held: AtomicUsize,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, Lease>,
    /// The map's size at which the next claim sweeps (at least [`SWEEP_AT`]).
    sweep_at: usize,
    /// When the map is at [`MAX_LEASES`]: no sweep before this.
    next_full: Option<Instant>,
}

/// What a caller that may not take the lease waits on.
pub(crate) struct Wait {
    until: Instant,
    done: watch::Receiver<bool>,
}

impl Wait {
    /// Resolves when the key was stored, the lease was given back, or the lease ran out.
    pub(crate) async fn finished(mut self) {
        let _ = tokio::time::timeout_at(self.until, self.done.wait_for(|d| *d)).await;
    }
}

impl Fills {
    /// Takes the lease on `k1` for `lease` when nobody holds a live one.
    pub(crate) fn claim(&self, k1: &str, lease: Duration) -> Claim {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        if let Some(l) = state.leases.get(k1).filter(|l| l.until > now) {
            return Claim::Wait(Wait {
                until: l.until,
                done: l.done.subscribe(),
            });
        }
        let len = state.leases.len();
        // At the cap, sweep at most once a second (a cap full of live leases is not swept
        // again on every claim).
        if len >= state.sweep_at.max(SWEEP_AT)
            && (len < MAX_LEASES || state.next_full.is_none_or(|at| now >= at))
        {
            // Leases whose holders went away without a put: bounded memory.
            state.leases.retain(|_, l| l.until > now);
            self.held.store(state.leases.len(), Ordering::Relaxed);
            state.sweep_at = (state.leases.len() * 2).min(MAX_LEASES);
            state.next_full = Some(now + Duration::from_secs(1));
        }
        if state.leases.len() >= MAX_LEASES {
            return Claim::Full;
        }
        let (done, _) = watch::channel(false);
        state.leases.insert(
            k1.to_owned(),
            Lease {
                until: now + lease,
                done,
            },
        );
        self.held.store(state.leases.len(), Ordering::Relaxed);
        Claim::Granted
    }

    /// `key` of `ns` was stored or deleted (a loader that failed may delete the key to give
    /// up at once): its lease (if any) ends and its waiters read again.
    /// Returns whether a lease ended.
    pub(crate) fn release(&self, ns: &str, key: &str) -> bool {
        if self.held.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let lease = {
            let mut state = self.state.lock().unwrap();
            let lease = state.leases.remove(&l1_key(ns, key));
            self.held.store(state.leases.len(), Ordering::Relaxed);
            lease
        };
        match lease {
            Some(l) => {
                l.done.send_replace(true);
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(key: &str) -> String {
        l1_key("t", key)
    }

    #[tokio::test(start_paused = true)]
    async fn one_lease_per_key_until_released_or_expired() {
        let f = std::sync::Arc::new(Fills::default());
        assert!(matches!(
            f.claim(&k("a"), Duration::from_secs(5)),
            Claim::Granted
        ));
        assert!(
            matches!(f.claim(&k("b"), Duration::from_secs(5)), Claim::Granted),
            "keys are independent"
        );
        let Claim::Wait(wait) = f.claim(&k("a"), Duration::from_secs(5)) else {
            panic!("a second caller got the lease");
        };
        let waiter = tokio::spawn(wait.finished());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        f.release("t", "a");
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("release wakes the waiter")
            .unwrap();
        assert!(
            matches!(f.claim(&k("a"), Duration::from_secs(5)), Claim::Granted),
            "released: free"
        );

        // `b`'s holder vanishes: its waiter is let go at the lease's end, then may claim.
        let Claim::Wait(wait) = f.claim(&k("b"), Duration::from_secs(5)) else {
            panic!()
        };
        let started = Instant::now();
        wait.finished().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(3900) && waited <= Duration::from_millis(4100),
            "{waited:?}"
        );
        assert!(
            matches!(f.claim(&k("b"), Duration::from_secs(5)), Claim::Granted),
            "expired: free"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_leases_do_not_pile_up() {
        let f = Fills::default();
        for i in 0..SWEEP_AT {
            assert!(matches!(
                f.claim(&k(&format!("k{i}")), Duration::from_secs(1)),
                Claim::Granted
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(matches!(
            f.claim(&k("fresh"), Duration::from_secs(1)),
            Claim::Granted
        ));
        assert_eq!(f.len(), 1, "the run-out leases were dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn live_leases_are_capped() {
        let f = Fills::default();
        for i in 0..MAX_LEASES {
            assert!(matches!(
                f.claim(&k(&format!("k{i}")), Duration::from_secs(60)),
                Claim::Granted
            ));
        }
        assert!(matches!(
            f.claim(&k("one more"), Duration::from_secs(60)),
            Claim::Full
        ));
        f.release("t", "k0");
        assert!(matches!(
            f.claim(&k("one more"), Duration::from_secs(60)),
            Claim::Granted
        ));
        // Once they run out, the full map is swept and takes new leases again.
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(matches!(
            f.claim(&k("after"), Duration::from_secs(60)),
            Claim::Granted
        ));
        assert_eq!(f.len(), 1);
    }
}
