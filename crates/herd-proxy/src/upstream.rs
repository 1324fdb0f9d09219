//! Per-app upstream state: the instances in rotation (atomically swapped, with the round robin
//! schedule and the consistent-hash ring built for them), the rotation counter and random
//! generator the balancer draws from, and what decides who may be picked at all: backups only
//! when no primary is up, `max_conn` (with the app's [`Queue`] behind it), slow start, sticky pins.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use herd_config::{App, Backends, Balance, HashKey, LoadBalancing, ServerParams};
use herd_core::{Demand, Endpoint, InFlightGuard};
use http::{HeaderMap, Uri};

use crate::balance::{self, ewma::PeakEwma, key, ring::Ring, slowstart, swrr, Candidate, Inputs};
use crate::pool::Pool;
use crate::queue::Queue;
use crate::resilience::AppPlane;
use crate::server::GatewaySettings;

/// One instance in rotation with its connection pool.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) endpoint: Endpoint,
    pub(crate) pool: Arc<Pool>,
    /// Peak EWMA of time to response head, for `peak_ewma`.
    pub(crate) ewma: PeakEwma,
    /// `weight`, `backup`, `max_conn` (per server, or the app's).
    pub(crate) params: ServerParams,
    /// When it entered rotation: slow start counts from here (or from a passive mark's end).
    pub(crate) since: Instant,
}

impl Upstream {
    /// Effective weight in `1/SCALE` units at `now` (slow start included).
    pub(crate) fn weight(&self, now: Instant, slow_start: Duration) -> u32 {
        let since = match self.endpoint.stats.down_until() {
            Some(t) if t > self.since && t <= now => t,
            _ => self.since,
        };
        slowstart::effective(self.params.weight, since, now, slow_start)
    }

    /// The order in which groups serve: 0 weighted primaries, 1 weighted backups, 2 primaries
    /// with `weight = 0`, 3 backups with `weight = 0`.
    fn group(&self) -> u8 {
        u8::from(self.params.weight == 0) * 2 + u8::from(self.params.backup)
    }

    fn full(&self) -> bool {
        self.params.max_conn > 0 && self.endpoint.stats.in_flight() >= self.params.max_conn as usize
    }
}

/// The instances in rotation with what the balancer precomputes over them when they change.
#[derive(Debug, Default)]
pub(crate) struct UpstreamSet {
    upstreams: Vec<Arc<Upstream>>,
    /// One smooth weighted round robin period over the configured weights.
    schedule: Vec<u32>,
    ring: Ring,
    /// Configured weights in `1/SCALE` units; empty when all are equal (the common case, which
    /// then costs the balancer nothing).
    weights: Vec<u32>,
}

impl UpstreamSet {
    fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        let weights: Vec<u32> = upstreams.iter().map(|u| u.params.weight).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        UpstreamSet {
            schedule: swrr::schedule(&weights),
            weights: if uniform {
                Vec::new()
            } else {
                weights
                    .iter()
                    .map(|w| w.saturating_mul(slowstart::SCALE))
                    .collect()
            },
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

/// What [`AppUpstreams::acquire`] found.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// An instance, counted in flight from now.
    Up(Arc<Upstream>, InFlightGuard),
    /// Every eligible instance is at its `max_conn`: wait in the queue.
    Full,
    /// Nothing left to try.
    Empty,
}

#[derive(Debug)]
pub(crate) struct AppUpstreams {
    pub(crate) name: String,
    pub(crate) balance: Balance,
    pub(crate) hash_key: Option<HashKey>,
    hash_balance_factor: u32,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
    /// Sticky, weights, backup, `max_conn`, queue, slow start, `observe`.
    pub(crate) lb: LoadBalancing,
    /// `servers = [...]` addresses, to find each one's parameters.
    servers: Vec<SocketAddr>,
    /// Requests waiting for a server under its `max_conn`.
    pub(crate) queue: Arc<Queue>,
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
    /// A supervised app until its first instance is in rotation (herd starting, or an app a
    /// config reload just added, perhaps with a route to it already): requests wait for that
    /// instance instead of a 503, until `ready_timeout` after the app was added (an app that
    /// never starts does not hold every request).
    first_start: Option<Instant>,
    /// An instance of the app has been in rotation (kept across reloads).
    served: Arc<std::sync::atomic::AtomicBool>,
    /// Protocol, circuit breaker settings, retry budget, 503 page (see `resilience`).
    pub(crate) plane: AppPlane,
}

/// Requests that may wait at once for a new app's first instance (as `hold_queue`'s default).
const FIRST_START_QUEUE: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    pub(crate) timeout: Duration,
    pub(crate) queue: usize,
    /// A wait for a new app's first instance, not scale from zero's hold: not demand.
    pub(crate) first: bool,
}

impl AppUpstreams {
    pub(crate) fn new(app: &App) -> Self {
        Self::with_state(
            app,
            Arc::new(ArcSwap::from_pointee(UpstreamSet::default())),
            Arc::new(Demand::default()),
            None,
            Arc::default(),
            match &app.backends {
                Backends::Command(cmd) => Some(Instant::now() + cmd.ready_timeout),
                Backends::Servers(_) => None,
            },
        )
    }

    /// How a request waits when the app has no instance in rotation: scale-from-zero's hold,
    /// or, until the first instance of a supervised app is in rotation, a wait for it.
    pub(crate) fn hold(&self) -> Option<Hold> {
        self.hold.or_else(|| {
            let left = self.first_start?.checked_duration_since(Instant::now())?;
            (!self.served.load(std::sync::atomic::Ordering::Acquire) && !left.is_zero()).then_some(
                Hold {
                    timeout: left,
                    queue: FIRST_START_QUEUE,
                    first: true,
                },
            )
        })
    }

    /// The same app under a new config: the instances in rotation, held and queued requests
    /// carry over.
    pub(crate) fn reconfigured(&self, app: &App) -> Self {
        // One line for the app across reloads: requests in flight release into it, and the
        // ones waiting in it keep their place; only its limits change.
        self.queue.set_limits(app.lb.queue, app.lb.queue_timeout);
        let queue = Some(Arc::clone(&self.queue));
        let next = Self::with_state(
            app,
            Arc::clone(&self.set),
            Arc::clone(&self.demand),
            queue,
            Arc::clone(&self.served),
            self.first_start,
        );
        // New parameters (weights, backup, max_conn) apply to the instances already in rotation.
        let endpoints = self.current().iter().map(|u| u.endpoint.clone()).collect();
        next.rebuild(endpoints, None);
        self.queue.wake();
        next
    }

    fn with_state(
        app: &App,
        set: Arc<ArcSwap<UpstreamSet>>,
        demand: Arc<Demand>,
        queue: Option<Arc<Queue>>,
        served: Arc<std::sync::atomic::AtomicBool>,
        first_start: Option<Instant>,
    ) -> Self {
        AppUpstreams {
            name: app.name.clone(),
            balance: app.balance,
            hash_key: app.hash_key.clone(),
            hash_balance_factor: app.hash_balance_factor,
            max_fails: app.max_fails,
            fail_timeout: app.fail_timeout,
            servers: match &app.backends {
                Backends::Servers(s) => s.clone(),
                Backends::Command(_) => Vec::new(),
            },
            queue: queue.unwrap_or_else(|| {
                Arc::new(Queue::new(
                    app.lb.queue,
                    app.lb.queue_timeout,
                    Arc::clone(&demand),
                ))
            }),
            lb: app.lb.clone(),
            rr: AtomicU64::new(0),
            rng: AtomicU64::new(RandomState::new().hash_one(&app.name)),
            set,
            demand,
            hold: app.scaling.as_ref().filter(|s| s.min == 0).map(|s| Hold {
                timeout: s.hold_timeout,
                queue: s.hold_queue,
                first: false,
            }),
            first_start,
            served,
            plane: AppPlane::new(app, &herd_config::DataPlane::default()),
        }
    }

    pub(crate) fn current(&self) -> Arc<UpstreamSet> {
        self.set.load_full()
    }

    fn params(&self, ep: &Endpoint) -> ServerParams {
        self.lb
            .server(self.servers.iter().position(|a| *a == ep.addr))
    }

    /// Replaces the set, keeping the pools of instances that stay.
    pub(crate) fn replace(&self, endpoints: Vec<Endpoint>, settings: &GatewaySettings) {
        let arrived = !endpoints.is_empty();
        self.rebuild(endpoints, Some(settings));
        if arrived {
            self.served
                .store(true, std::sync::atomic::Ordering::Release);
            self.demand.instances_arrived();
        }
        // A new instance is a free slot for queued requests.
        self.queue.wake();
    }

    /// `settings` is `None` when only parameters change (every endpoint is already there).
    fn rebuild(&self, endpoints: Vec<Endpoint>, settings: Option<&GatewaySettings>) {
        let old = self.set.load();
        let mut by_uid: HashMap<u64, &Arc<Upstream>> =
            old.iter().map(|u| (u.endpoint.uid, u)).collect();
        let next: Vec<Arc<Upstream>> = endpoints
            .into_iter()
            .filter_map(|ep| {
                let params = self.params(&ep);
                match (by_uid.remove(&ep.uid), settings) {
                    (Some(u), _) if u.params == params => Some(Arc::clone(u)),
                    (Some(u), _) => Some(Arc::new(Upstream {
                        endpoint: ep,
                        pool: Arc::clone(&u.pool),
                        ewma: PeakEwma::new(Instant::now()),
                        params,
                        since: u.since,
                    })),
                    (None, Some(settings)) => Some(Arc::new(Upstream {
                        ewma: PeakEwma::new(Instant::now()),
                        pool: Arc::new(Pool::new(
                            ep.addr,
                            ep.id.to_string(),
                            &crate::pool::PoolLimits {
                                max_idle: settings.pool_max_idle,
                                idle_timeout: settings.pool_idle_timeout,
                                connect_timeout: settings.connect_timeout,
                                max_headers: settings.max_headers,
                            },
                            self.plane.protocol,
                            settings.threads,
                        )),
                        endpoint: ep,
                        params,
                        since: Instant::now(),
                    })),
                    (None, None) => None,
                }
            })
            .collect();
        self.set.store(Arc::new(UpstreamSet::new(next)));
    }

    /// What `ip_hash`/`hash` hash for this request, computed once before the first pick (and
    /// kept across retries); `None` for other algorithms or when the request lacks the key.
    pub(crate) fn affinity(
        balance: Balance,
        hash_key: Option<&HashKey>,
        headers: &HeaderMap,
        uri: &Uri,
        client: IpAddr,
    ) -> Option<u64> {
        match (balance, hash_key) {
            (Balance::IpHash, _) => Some(key::ip_hash(client)),
            (Balance::Hash, Some(k)) => key::request_hash(k, headers, uri),
            _ => None,
        }
    }

    /// The instance a sticky cookie names, when it is in rotation, not passively down, not
    /// tried yet for this request and under its `max_conn`; counted in flight.
    pub(crate) fn acquire_pinned(
        &self,
        set: &UpstreamSet,
        id: &str,
        tried: &[u64],
        now: Instant,
    ) -> Option<(Arc<Upstream>, InFlightGuard)> {
        let up = set.iter().find(|u| &*u.endpoint.id == id)?;
        if tried.contains(&up.endpoint.uid)
            || up.endpoint.stats.passively_down(now)
            || !up
                .endpoint
                .stats
                .circuit_would_admit(now, &self.plane.circuit)
        {
            return None;
        }
        let guard = self.start(up)?;
        Some((Arc::clone(up), guard))
    }

    /// Counts a request in flight on `up`, unless it is at its `max_conn`.
    fn start(&self, up: &Upstream) -> Option<InFlightGuard> {
        let stats = &up.endpoint.stats;
        if up.params.max_conn == 0 {
            return Some(stats.start_request());
        }
        let guard = stats.try_start_request(up.params.max_conn as usize)?;
        let queue: Arc<dyn herd_core::Release> = self.queue.clone();
        Some(guard.on_release(queue))
    }

    /// Whether an instance other than those `tried` could take a retry now (not passively down,
    /// circuit admitting), without counting anything.
    pub(crate) fn has_other(&self, set: &UpstreamSet, tried: &[u64], now: Instant) -> bool {
        set.iter().any(|u| {
            !tried.contains(&u.endpoint.uid)
                && !u.endpoint.stats.passively_down(now)
                && u.endpoint
                    .stats
                    .circuit_would_admit(now, &self.plane.circuit)
        })
    }

    /// Picks an instance not in `tried` and counts it in flight. Primaries first; backups only
    /// when no primary with a weight is left (passively down or tried); `weight = 0` servers
    /// last. Passive marks are honoured unless
    /// every untried instance is marked (then they are ignored rather than failing the request).
    /// An open circuit is always honoured: failing fast is its point.
    /// `Full` when every instance of the group that may serve is at its `max_conn`.
    pub(crate) fn acquire(
        &self,
        set: &UpstreamSet,
        tried: &[u64],
        now: Instant,
        algo: Balance,
        affinity: Option<u64>,
    ) -> Acquired {
        let slow = self.lb.slow_start;
        // Weights move only during slow start; otherwise the set's precomputed ones hold.
        let ramped: Vec<u32> = if slow.is_zero() {
            Vec::new()
        } else {
            set.iter().map(|u| u.weight(now, slow)).collect()
        };
        let ramping = set
            .iter()
            .zip(&ramped)
            .any(|(u, &w)| w != u.params.weight.saturating_mul(slowstart::SCALE));
        let weights = if ramping { &ramped } else { &set.weights };
        let input = Inputs {
            rr: self.rr.fetch_add(1, Ordering::Relaxed),
            rand: self.next_random(),
            key: affinity,
            schedule: &set.schedule,
            ring: &set.ring,
            factor: self.hash_balance_factor,
            weights,
            ramping,
        };
        let ewma = algo == Balance::PeakEwma;
        let open = |u: &Upstream, honour_down: bool| {
            let down = honour_down && u.endpoint.stats.passively_down(now);
            !down
                && !tried.contains(&u.endpoint.uid)
                && u.endpoint
                    .stats
                    .circuit_would_admit(now, &self.plane.circuit)
        };
        for honour_down in [true, false] {
            // The group that serves: weighted primaries, then backups, then `weight = 0`
            // servers (HAProxy counts a server without weight as unusable, so its backups
            // take over), each only when every earlier group has none open.
            let Some(group) = set
                .iter()
                .filter(|u| open(u, honour_down))
                .map(|u| u.group())
                .min()
            else {
                continue;
            };
            // A candidate that wins the pick but fills up before it is counted is skipped on
            // the next round; at most one round per instance.
            let mut lost: Vec<u64> = Vec::new();
            for _ in 0..=set.len() {
                let candidate = |i: usize| {
                    let u: &Upstream = &set[i];
                    Candidate {
                        in_flight: u.endpoint.stats.in_flight(),
                        skip: !open(u, honour_down)
                            || u.group() != group
                            || u.full()
                            || lost.contains(&u.endpoint.uid),
                        latency_us: if ewma { u.ewma.get(now) } else { 0.0 },
                    }
                };
                let Some(i) = balance::pick(algo, set.len(), &input, candidate) else {
                    return Acquired::Full;
                };
                match self.start(&set[i]) {
                    Some(guard) => return Acquired::Up(Arc::clone(&set[i]), guard),
                    None => lost.push(set[i].endpoint.uid),
                }
            }
            return Acquired::Full;
        }
        Acquired::Empty
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

    /// The pick alone (the in-flight count it takes is given back at once).
    fn pick(
        app: &AppUpstreams,
        set: &UpstreamSet,
        tried: &[u64],
        now: Instant,
        key: Option<u64>,
    ) -> Option<Arc<Upstream>> {
        match app.acquire(set, tried, now, app.balance, key) {
            Acquired::Up(up, _guard) => Some(up),
            Acquired::Full | Acquired::Empty => None,
        }
    }

    fn affinity(app: &AppUpstreams, h: &HeaderMap, uri: &Uri, ip: IpAddr) -> Option<u64> {
        AppUpstreams::affinity(app.balance, app.hash_key.as_ref(), h, uri, ip)
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
            let up = pick(&app, &set, &[], now, None).unwrap();
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
                    let key = affinity(app, &user(&format!("u{u}")), &uri, ip);
                    assert!(key.is_some());
                    pick(app, &set, &[], now, key).unwrap().endpoint.uid
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
        let key = affinity(&app, &user("u1"), &uri, ip);
        let first = pick(&app, &set, &[], now, key).unwrap().endpoint.uid;
        let second = pick(&app, &set, &[first], now, key).unwrap().endpoint.uid;
        assert_ne!(first, second);
        assert!(pick(&app, &set, &[1, 2, 3], now, key).is_none());
        let no_key = affinity(&app, &HeaderMap::new(), &uri, ip);
        assert_eq!(no_key, None);
        assert!(pick(&app, &set, &[], now, no_key).is_some());
    }

    #[test]
    fn slow_start_ramps_a_new_instance_share() {
        let (app, settings) = app("slow_start = \"30s\"");
        app.replace(endpoints(&[1, 2]), &settings);
        let now = Instant::now();
        let Some(long_ago) = now.checked_sub(Duration::from_secs(60)) else {
            return; // a machine up for less than a minute: nothing to ramp from
        };
        // Instance 1 has served for a minute (full weight); instance 2 has just arrived.
        let old = &app.current()[0];
        let aged = Arc::new(Upstream {
            endpoint: old.endpoint.clone(),
            pool: Arc::clone(&old.pool),
            ewma: PeakEwma::new(now),
            params: old.params,
            since: long_ago,
        });
        let set = UpstreamSet::new(vec![aged, Arc::clone(&app.current()[1])]);
        let share_of_2 = |at: Instant| {
            (0..1700)
                .filter(|_| pick(&app, &set, &[], at, None).unwrap().endpoint.uid == 2)
                .count()
        };
        // Weight 1/16 against 16/16: about 100 of 1700; half-way through, 8/16: about 567.
        let start = share_of_2(set[1].since);
        assert!((30..=200).contains(&start), "{start}");
        let half = share_of_2(set[1].since + Duration::from_secs(15));
        assert!((420..=720).contains(&half), "{half}");
        let done = share_of_2(set[1].since + Duration::from_secs(30));
        assert_eq!(done, 850, "plain round robin once ramped");
    }

    proptest::proptest! {
        /// Against a model of HAProxy's rule: a backup is picked only when no primary with a
        /// weight is left (in rotation, not passively down, not tried), and a `weight = 0`
        /// server only when no server with a weight is; marks are ignored only when every
        /// untried server is marked; nothing is picked twice for a request.
        #[test]
        fn backups_only_when_no_primary_is_left(
            servers in proptest::collection::vec(
                (proptest::bool::ANY, proptest::bool::weighted(0.25), proptest::bool::ANY, proptest::bool::ANY),
                1..7,
            ),
            algo in proptest::sample::select(vec!["round_robin", "least_conn", "random_two", "first", "peak_ewma"]),
        ) {
            let list: Vec<String> = servers
                .iter()
                .enumerate()
                .map(|(i, (backup, zero, _, _))| {
                    let weight = if *zero { 0 } else { i + 1 };
                    format!("{{ addr = \"127.0.0.1:{}\", backup = {backup}, weight = {weight} }}", i + 1)
                })
                .collect();
            let text = format!("[[app]]\nname = \"web\"\nservers = [{}]\nbalance = \"{algo}\"\n", list.join(", "));
            let cfg = herd_config::parse(&text, "t.toml", std::path::Path::new(".")).unwrap();
            let app = AppUpstreams::new(&cfg.apps[0]);
            let now = Instant::now();
            let eps: Vec<Endpoint> = servers
                .iter()
                .enumerate()
                .map(|(i, &(_, _, down, _))| {
                    let stats = Arc::new(EndpointStats::new());
                    if down {
                        stats.record_failure(now, 1, Duration::from_secs(60));
                    }
                    Endpoint {
                        uid: i as u64 + 1,
                        id: Arc::from(format!("web-{}", i + 1)),
                        addr: SocketAddr::from(([127, 0, 0, 1], u16::try_from(i + 1).unwrap())),
                        stats,
                    }
                })
                .collect();
            app.replace(eps, &GatewaySettings::from(&cfg.gateway));
            let tried: Vec<u64> = servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.3)
                .map(|(i, _)| i as u64 + 1)
                .collect();
            let set = app.current();
            let got = pick(&app, &set, &tried, now, None);
            // The model: honouring marks first, the first group with an open server, in
            // HAProxy's order (weighted primaries, weighted backups, then the weight-0 ones).
            let open = |group: (bool, bool), honour_down: bool| {
                servers
                    .iter()
                    .any(|&(b, z, down, t)| (z, b) == group && !t && !(honour_down && down))
            };
            let groups = [(false, false), (false, true), (true, false), (true, true)];
            let want = [true, false]
                .into_iter()
                .find_map(|h| groups.into_iter().find(|&g| open(g, h)).map(|g| (g, h)));
            match (got, want) {
                (None, None) => {}
                (Some(up), Some((group, honour_down))) => {
                    let (b, z, down, t) = servers[usize::try_from(up.endpoint.uid).unwrap() - 1];
                    proptest::prop_assert!(!t, "picked a tried server");
                    proptest::prop_assert_eq!((z, b), group);
                    proptest::prop_assert!(!(honour_down && down));
                }
                (got, want) => proptest::prop_assert!(false, "got {:?}, model {:?}", got.map(|u| u.endpoint.uid), want),
            }
        }
    }
}
