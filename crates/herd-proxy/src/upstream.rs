//! Per-app upstream state: the instances in rotation (atomically swapped) and the rotation counter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use herd_config::{App, Balance};
use herd_core::{Demand, Endpoint};

use crate::balance::{self, Candidate};
use crate::pool::Pool;
use crate::server::GatewaySettings;

/// One instance in rotation with its connection pool.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) endpoint: Endpoint,
    pub(crate) pool: Arc<Pool>,
}

#[derive(Debug)]
pub(crate) struct AppUpstreams {
    pub(crate) name: String,
    balance: Balance,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
    rr: AtomicU64,
    /// Shared with the app's next incarnation after a config reload, so an update from the
    /// supervisor can never land in a table that is being replaced.
    set: Arc<ArcSwap<Vec<Arc<Upstream>>>>,
    pub(crate) demand: Arc<Demand>,
    /// For apps that scale to zero: how long and how many requests to hold while the first
    /// instance starts (Knative's activator).
    pub(crate) hold: Option<Hold>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    pub(crate) timeout: Duration,
    pub(crate) queue: usize,
}

impl AppUpstreams {
    pub(crate) fn new(app: &App) -> Self {
        Self::with_state(
            app,
            Arc::new(ArcSwap::from_pointee(Vec::new())),
            Arc::new(Demand::default()),
        )
    }

    /// The same app under a new config: the instances in rotation and held requests carry over.
    pub(crate) fn reconfigured(&self, app: &App) -> Self {
        Self::with_state(app, Arc::clone(&self.set), Arc::clone(&self.demand))
    }

    fn with_state(app: &App, set: Arc<ArcSwap<Vec<Arc<Upstream>>>>, demand: Arc<Demand>) -> Self {
        AppUpstreams {
            name: app.name.clone(),
            balance: app.balance,
            max_fails: app.max_fails,
            fail_timeout: app.fail_timeout,
            rr: AtomicU64::new(0),
            set,
            demand,
            hold: app.scaling.as_ref().filter(|s| s.min == 0).map(|s| Hold {
                timeout: s.hold_timeout,
                queue: s.hold_queue,
            }),
        }
    }

    pub(crate) fn current(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.set.load_full()
    }

    /// Replaces the set, keeping the pools of instances that stay.
    pub(crate) fn replace(&self, endpoints: Vec<Endpoint>, settings: &GatewaySettings) {
        let old = self.set.load();
        let mut by_uid: HashMap<u64, &Arc<Upstream>> =
            old.iter().map(|u| (u.endpoint.uid, u)).collect();
        let next: Vec<Arc<Upstream>> = endpoints
            .into_iter()
            .map(|ep| match by_uid.remove(&ep.uid) {
                Some(u) => Arc::clone(u),
                None => Arc::new(Upstream {
                    pool: Arc::new(Pool::new(
                        ep.addr,
                        ep.id.to_string(),
                        settings.pool_max_idle,
                        settings.pool_idle_timeout,
                        settings.connect_timeout,
                    )),
                    endpoint: ep,
                }),
            })
            .collect();
        let arrived = !next.is_empty();
        self.set.store(Arc::new(next));
        if arrived {
            self.demand.instances_arrived();
        }
    }

    /// Picks an instance not in `tried`, honouring passive down marks unless every untried
    /// instance is marked (then the marks are ignored rather than failing the request).
    pub(crate) fn pick(
        &self,
        set: &[Arc<Upstream>],
        tried: &[u64],
        now: Instant,
    ) -> Option<Arc<Upstream>> {
        let rr = self.rr.fetch_add(1, Ordering::Relaxed);
        let candidate = |honour_down: bool| {
            move |i: usize| {
                let u: &Upstream = &set[i];
                Candidate {
                    in_flight: u.endpoint.stats.in_flight(),
                    skip: tried.contains(&u.endpoint.uid)
                        || (honour_down && u.endpoint.stats.passively_down(now)),
                }
            }
        };
        balance::pick(self.balance, set.len(), rr, candidate(true))
            .or_else(|| balance::pick(self.balance, set.len(), rr, candidate(false)))
            .map(|i| Arc::clone(&set[i]))
    }

    pub(crate) fn sweep(&self, now: Instant) {
        for u in self.set.load().iter() {
            u.pool.sweep(now);
        }
    }
}
