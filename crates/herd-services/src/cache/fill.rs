//! Fill leases: request coalescing for callers that load values themselves (the HTTP API's
//! clients), like Varnish's waiting list or memcached's leases.
//!
//! On a miss, the first caller of a key gets the lease: it loads the value and stores it (a
//! put). Callers that miss the same key meanwhile wait for that put instead of loading too,
//! up to the lease's length; if the lease ends without a put (the loader failed or went away)
//! the next waiter gets it. A value due for refresh is served to everyone, and one caller gets
//! the lease to refresh it. Leases are per node: with several herd nodes, at most one load per
//! key and node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::atomic::Ordering;

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
    /// its whole `lease` for someone else's load.
    Load,
}

impl Cache {
    /// Reads a value, and on a miss coordinates who loads it (see the module's docs): the
    /// caller that gets [`Leased::Load`] or [`Leased::Refresh`] should put the value within
    /// `lease`; a caller that misses while another holds the lease waits for its put (at most
    /// `lease`) and gets the value. For callers that cannot hand a loader to
    /// [`Cache::get_or_load`], such as HTTP clients.
    ///
    /// # Errors
    /// `Invalid` names or a `lease` of zero or over [`MAX_LEASE`]; store errors on an L1 miss.
    pub async fn get_or_lease(
        &self,
        ns: &str,
        key: &str,
        lease: Duration,
    ) -> ServiceResult<Leased> {
        if lease.is_zero() || lease > MAX_LEASE {
            return Err(ServiceError::invalid(
                "fill",
                format!("{} ms is not between 1 ms and 5 min", lease.as_millis()),
                "pass how long loading the value may take, e.g. ?fill=5s",
            ));
        }
        let fills = &self.inner.fills;
        let counters = &self.inner.counters;
        let k1 = l1_key(ns, key);
        let deadline = Instant::now() + lease;
        let mut waited = false;
        loop {
            if let Some(hit) = self.get(ns, key).await? {
                if hit.freshness.wants_refresh() && fills.claim(&k1, lease).is_ok() {
                    counters.fill_leases.fetch_add(1, Ordering::Relaxed);
                    return Ok(Leased::Refresh(hit));
                }
                if waited {
                    counters.fill_waits.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(Leased::Hit(hit));
            }
            match fills.claim(&k1, lease) {
                Ok(()) => {
                    counters.fill_leases.fetch_add(1, Ordering::Relaxed);
                    return Ok(Leased::Load);
                }
                Err(_) if Instant::now() >= deadline => return Ok(Leased::Load),
                Err(wait) => {
                    waited = true;
                    let _ = tokio::time::timeout_at(deadline, wait.finished()).await;
                }
            }
        }
    }
}

/// Past this many leases, a claim first drops the ones that ran out.
const SWEEP_AT: usize = 1024;

/// One key's lease: its end, and a signal sent when the key is stored (or the lease given
/// back).
struct Lease {
    until: Instant,
    done: watch::Sender<bool>,
}

/// The leases of one node.
#[derive(Default)]
pub(super) struct Fills {
    leases: Mutex<HashMap<String, Lease>>,
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
    /// Takes the lease on `k1` for `lease` when nobody holds a live one: `Ok(())`. Otherwise
    /// `Err` with what to wait on.
    pub(crate) fn claim(&self, k1: &str, lease: Duration) -> Result<(), Wait> {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap();
        if let Some(l) = leases.get(k1).filter(|l| l.until > now) {
            return Err(Wait {
                until: l.until,
                done: l.done.subscribe(),
            });
        }
        if leases.len() >= SWEEP_AT {
            // Leases whose holders went away without a put: bounded memory.
            leases.retain(|_, l| l.until > now);
        }
        let (done, _) = watch::channel(false);
        leases.insert(
            k1.to_owned(),
            Lease {
                until: now + lease,
                done,
            },
        );
        Ok(())
    }

    /// The key was stored or deleted (a loader that failed may delete the key to give up at
    /// once): its lease (if any) ends and its waiters read again.
    pub(crate) fn release(&self, k1: &str) {
        let lease = self.leases.lock().unwrap().remove(k1);
        if let Some(l) = lease {
            l.done.send_replace(true);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.leases.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_lease_per_key_until_released_or_expired() {
        let f = std::sync::Arc::new(Fills::default());
        assert!(f.claim("a", Duration::from_secs(5)).is_ok());
        assert!(
            f.claim("b", Duration::from_secs(5)).is_ok(),
            "keys are independent"
        );
        let Err(wait) = f.claim("a", Duration::from_secs(5)) else {
            panic!("a second caller got the lease");
        };
        let waiter = tokio::spawn(wait.finished());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        f.release("a");
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("release wakes the waiter")
            .unwrap();
        assert!(
            f.claim("a", Duration::from_secs(5)).is_ok(),
            "released: free"
        );

        // `b`'s holder vanishes: its waiter is let go at the lease's end, then may claim.
        let Err(wait) = f.claim("b", Duration::from_secs(5)) else {
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
            f.claim("b", Duration::from_secs(5)).is_ok(),
            "expired: free"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_leases_do_not_pile_up() {
        let f = Fills::default();
        for i in 0..SWEEP_AT {
            assert!(f.claim(&format!("k{i}"), Duration::from_secs(1)).is_ok());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(f.claim("fresh", Duration::from_secs(1)).is_ok());
        assert_eq!(f.len(), 1, "the run-out leases were dropped");
    }
}
