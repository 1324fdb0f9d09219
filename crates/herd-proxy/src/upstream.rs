//! Per-app upstream state: the instances in rotation (atomically swapped, with the round robin
//! schedule and the consistent-hash ring built for them) and the rotation counter and random
//! generator the balancer draws from.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use herd_config::{App, Balance, HashKey};
use herd_core::{Demand, Endpoint};
use http::{HeaderMap, Uri};

use crate::balance::{self, ewma::PeakEwma, key, ring::Ring, swrr, Candidate, Inputs};
use crate::pool::Pool;
use crate::resilience::AppPlane;
use crate::server::GatewaySettings;

/// One instance in rotation with its connection pool.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) endpoint: Endpoint,
    pub(crate) pool: Arc<Pool>,
    /// Peak EWMA of time to response head, for `peak_ewma`.
    pub(crate) ewma: PeakEwma,
}

/// The instances in rotation with what the balancer precomputes over them when they change.
#[derive(Debug, Default)]
pub(crate) struct UpstreamSet {
    upstreams: Vec<Arc<Upstream>>,
    /// One smooth weighted round robin period (all weights 1 for now).
    schedule: Vec<u32>,
    ring: Ring,
}

impl UpstreamSet {
    fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        UpstreamSet {
            schedule: swrr::schedule(&vec![1; upstreams.len()]),
            ring: Ring::new(upstreams.iter().map(|u| &*u.endpoint.id)),
            upstreams,
        }
    }
}

impl Deref for UpstreamSet {
    type Target = [Arc<Upstream>];

    fn deref(&self) -> &Self::Target {
        &self.upstreams
    }
}

#[derive(Debug)]
pub(crate) struct AppUpstreams {
    pub(crate) name: String,
    balance: Balance,
    hash_key: Option<HashKey>,
    hash_balance_factor: u32,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
    rr: AtomicU64,
    /// SplitMix64 state for `random_two`/`peak_ewma`, seeded per process.
    rng: AtomicU64,
    /// Shared with the app's next incarnation after a config reload, so an update from the
    /// supervisor can never land in a table that is being replaced.
    set: Arc<ArcSwap<UpstreamSet>>,
    pub(crate) demand: Arc<Demand>,
    /// For apps that scale to zero: how long and how many requests to hold while the first
    /// instance starts (Knative's activator).
    pub(crate) hold: Option<Hold>,
    /// Protocol, circuit breaker settings, retry budget, 503 page (see `resilience`).
    pub(crate) plane: AppPlane,
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
            Arc::new(ArcSwap::from_pointee(UpstreamSet::default())),
            Arc::new(Demand::default()),
        )
    }

    /// The same app under a new config: the instances in rotation and held requests carry over.
    pub(crate) fn reconfigured(&self, app: &App) -> Self {
        Self::with_state(app, Arc::clone(&self.set), Arc::clone(&self.demand))
    }

    fn with_state(app: &App, set: Arc<ArcSwap<UpstreamSet>>, demand: Arc<Demand>) -> Self {
        AppUpstreams {
            name: app.name.clone(),
            balance: app.balance,
            hash_key: app.hash_key.clone(),
            hash_balance_factor: app.hash_balance_factor,
            max_fails: app.max_fails,
            fail_timeout: app.fail_timeout,
            rr: AtomicU64::new(0),
            rng: AtomicU64::new(RandomState::new().hash_one(&app.name)),
            set,
            demand,
            hold: app.scaling.as_ref().filter(|s| s.min == 0).map(|s| Hold {
                timeout: s.hold_timeout,
                queue: s.hold_queue,
            }),
            plane: AppPlane::new(app, &herd_config::DataPlane::default()),
        }
    }

    pub(crate) fn current(&self) -> Arc<UpstreamSet> {
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
                    ewma: PeakEwma::new(Instant::now()),
                    pool: Arc::new(Pool::new(
                        ep.addr,
                        ep.id.to_string(),
                        settings.pool_max_idle,
                        settings.pool_idle_timeout,
                        settings.connect_timeout,
                        self.plane.protocol,
                    )),
                    endpoint: ep,
                }),
            })
            .collect();
        let arrived = !next.is_empty();
        self.set.store(Arc::new(UpstreamSet::new(next)));
        if arrived {
            self.demand.instances_arrived();
        }
    }

    /// What `ip_hash`/`hash` hash for this request, computed once before the first pick (and
    /// kept across retries); `None` for other algorithms or when the request lacks the key.
    pub(crate) fn affinity(&self, headers: &HeaderMap, uri: &Uri, client: IpAddr) -> Option<u64> {
        match (self.balance, &self.hash_key) {
            (Balance::IpHash, _) => Some(key::ip_hash(client)),
            (Balance::Hash, Some(k)) => key::request_hash(k, headers, uri),
            _ => None,
        }
    }

    /// Picks an instance not in `tried`, honouring passive down marks unless every untried
    /// instance is marked (then the marks are ignored rather than failing the request). An open
    /// circuit is always honoured: failing fast is its point.
    pub(crate) fn pick(
        &self,
        set: &UpstreamSet,
        tried: &[u64],
        now: Instant,
        affinity: Option<u64>,
    ) -> Option<Arc<Upstream>> {
        let input = Inputs {
            rr: self.rr.fetch_add(1, Ordering::Relaxed),
            rand: self.next_random(),
            key: affinity,
            schedule: &set.schedule,
            ring: &set.ring,
            factor: self.hash_balance_factor,
        };
        let ewma = self.balance == Balance::PeakEwma;
        let candidate = |honour_down: bool| {
            move |i: usize| {
                let u: &Upstream = &set[i];
                Candidate {
                    in_flight: u.endpoint.stats.in_flight(),
                    skip: tried.contains(&u.endpoint.uid)
                        || !u
                            .endpoint
                            .stats
                            .circuit_would_admit(now, &self.plane.circuit)
                        || (honour_down && u.endpoint.stats.passively_down(now)),
                    latency_us: if ewma { u.ewma.get(now) } else { 0.0 },
                }
            }
        };
        balance::pick(self.balance, set.len(), &input, candidate(true))
            .or_else(|| balance::pick(self.balance, set.len(), &input, candidate(false)))
            .map(|i| Arc::clone(&set[i]))
    }

    /// SplitMix64 on an atomic counter: lock-free, and each call gets its own word.
    fn next_random(&self) -> u64 {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn sweep(&self, now: Instant) {
        for u in self.set.load().iter() {
            u.pool.sweep(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use herd_core::EndpointStats;
    use http::HeaderMap;

    use super::*;

    fn app(extra: &str) -> (AppUpstreams, GatewaySettings) {
        let text = format!("[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n{extra}\n");
        let cfg = herd_config::parse(&text, "t.toml", std::path::Path::new(".")).unwrap();
        (
            AppUpstreams::new(&cfg.apps[0]),
            GatewaySettings::from(&cfg.gateway),
        )
    }

    fn endpoints(ids: &[u64]) -> Vec<Endpoint> {
        ids.iter()
            .map(|&uid| Endpoint {
                uid,
                id: Arc::from(format!("web-{uid}")),
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                stats: Arc::new(EndpointStats::new()),
            })
            .collect()
    }

    fn user(name: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-user", name.parse().unwrap());
        h
    }

    #[test]
    fn peak_ewma_steers_away_from_a_slow_instance() {
        let (app, settings) = app("balance = \"peak_ewma\"");
        app.replace(endpoints(&[1, 2]), &settings);
        let set = app.current();
        let now = Instant::now();
        set[0].ewma.record(now, Duration::from_millis(500));
        set[1].ewma.record(now, Duration::from_millis(5));
        for _ in 0..50 {
            let up = app.pick(&set, &[], now, None).unwrap();
            assert_eq!(up.endpoint.uid, 2);
        }
    }

    #[test]
    fn hash_keeps_users_when_an_instance_joins_or_leaves_and_retries_move_on() {
        let (app, settings) = app("balance = \"hash\"\nhash_key = \"header:X-User\"");
        let uri = Uri::from_static("/");
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        let place = |app: &AppUpstreams| -> Vec<u64> {
            let set = app.current();
            (0..100)
                .map(|u| {
                    let key = app.affinity(&user(&format!("u{u}")), &uri, ip);
                    assert!(key.is_some());
                    app.pick(&set, &[], now, key).unwrap().endpoint.uid
                })
                .collect()
        };
        app.replace(endpoints(&[1, 2, 3]), &settings);
        let three = place(&app);
        app.replace(endpoints(&[1, 2, 3, 4]), &settings);
        let four = place(&app);
        for (a, b) in three.iter().zip(&four) {
            assert!(
                a == b || *b == 4,
                "a user moved from {a} to {b}, not to the new instance"
            );
        }
        app.replace(endpoints(&[1, 2, 3]), &settings);
        assert_eq!(place(&app), three);

        // A retry never goes back to an instance already tried, and a request with no key is
        // still served.
        let set = app.current();
        let key = app.affinity(&user("u1"), &uri, ip);
        let first = app.pick(&set, &[], now, key).unwrap().endpoint.uid;
        let second = app.pick(&set, &[first], now, key).unwrap().endpoint.uid;
        assert_ne!(first, second);
        assert!(app.pick(&set, &[1, 2, 3], now, key).is_none());
        let no_key = app.affinity(&HeaderMap::new(), &uri, ip);
        assert_eq!(no_key, None);
        assert!(app.pick(&set, &[], now, no_key).is_some());
    }
}
