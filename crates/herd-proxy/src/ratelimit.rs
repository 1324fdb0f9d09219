//! `[[rate_limit]]` state: one [`RateLimiter`] per entry, holding each key's GCRA time
//! ([`crate::gcra`] decides) in a sharded map in memory.
//!
//! Memory is bounded: keys whose TAT is in the past carry no state (a new key starts the same
//! way) and are dropped by the gateway's periodic sweep; each limiter holds at most
//! [`MAX_KEYS`]. When a shard is full, a new key first drops the shard's expired keys, then,
//! if none, the key with the oldest TAT, which is the key closest to being forgotten anyway.
//! New keys are never rejected for lack of room, so a flood of keys costs precision, not service.
//!
//! Several limits may apply to one request: each is checked in file order, the first rejection
//! answers, and the longest delay is waited (like nginx, which applies every `limit_req`). As
//! in nginx, a request rejected by one node-local limit is counted by none: the limits are
//! looked at first and recorded only when all admit it. When shared limits apply too, the
//! node-local ones are looked at, then the shared ones are checked in the store, and the local
//! ones are recorded only if the store admitted the request: a request a shared limit rejects
//! uses up none of this node's limits. (Two shared limits are two store calls: a request the
//! second rejects has counted in the first, as two `limit_req` zones on two nginx would.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use herd_config::{RateKey, RateLimit};
use http::{HeaderMap, StatusCode};

use crate::error::ProxyError;
use crate::gcra::{Decision, Gcra};

/// Keys kept per limit at most.
pub(crate) const MAX_KEYS: usize = 100_000;
const SHARDS: usize = 16;

type Shard = Mutex<HashMap<Box<str>, u64>>;

/// One `[[rate_limit]]` and the state of its keys.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    pub(crate) config: RateLimit,
    gcra: Gcra,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Shard]>,
    shard_cap: usize,
}

impl RateLimiter {
    pub(crate) fn new(config: &RateLimit) -> Self {
        Self::with_capacity(config, MAX_KEYS)
    }

    fn with_capacity(config: &RateLimit, max_keys: usize) -> Self {
        RateLimiter {
            gcra: Gcra::new(config.rate.interval(), config.burst, config.undelayed()),
            config: config.clone(),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_cap: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Whether this limit covers a request routed to `app` by `route` (its label) for `path`.
    pub(crate) fn applies(&self, app: usize, route: &str, path: &str) -> bool {
        self.config.app.is_none_or(|a| a == app)
            && self.config.route.as_deref().is_none_or(|r| r == route)
            && self
                .config
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }

    /// The request's key for this limit; `None` when it has none (no such header or cookie),
    /// and then this limit does not count it (nginx: an empty key is not accounted).
    pub(crate) fn key<'a>(
        &self,
        headers: &'a HeaderMap,
        client: IpAddr,
        route: &'a str,
    ) -> Option<Cow<'a, str>> {
        match &self.config.key {
            RateKey::Ip => Some(Cow::Owned(client.to_string())),
            RateKey::Route => Some(Cow::Borrowed(route)),
            RateKey::Header(name) => headers
                .get(name.as_str())
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
                .map(digest),
            RateKey::Cookie(name) => crate::cookie::find(headers, name).map(digest),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, u64>> {
        let i = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What [`RateLimiter::check`] would decide, recording nothing.
    pub(crate) fn peek(&self, key: &str, now: Instant) -> Decision {
        let now = self.nanos(now);
        let mut tat = self.shard(key).get(key).copied().unwrap_or(0);
        self.gcra.check(&mut tat, now)
    }

    /// Decides for one request with `key` at `now`, recording it if admitted.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Decision {
        let now = self.nanos(now);
        let mut map = self.shard(key);
        if let Some(tat) = map.get_mut(key) {
            return self.gcra.check(tat, now);
        }
        let mut tat = 0;
        let decision = self.gcra.check(&mut tat, now);
        if map.len() >= self.shard_cap {
            map.retain(|_, t| *t > now);
        }
        if map.len() >= self.shard_cap {
            let oldest = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(key.into(), tat);
        decision
    }

    /// Gives back the room of a request [`RateLimiter::check`] admitted and another limit
    /// then refused.
    fn refund(&self, key: &str) {
        if let Some(tat) = self.shard(key).get_mut(key) {
            self.gcra.refund(tat);
        }
    }

    /// Drops the keys whose TAT has passed: they hold no state a new key would not have.
    pub(crate) fn sweep(&self, now: Instant) {
        let now = self.nanos(now);
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, t| *t > now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// A cookie's value from the `Cookie` header(s).
/// Shared limits (`shared = true`) that apply to a request, with its key for each: checked in
/// the store by [`check_shared`] once the routing tables are released.
pub(crate) type Pending = Vec<(Arc<RateLimiter>, String)>;

fn rejected(limit: &RateLimiter, key: &str, retry_after: Duration) -> ProxyError {
    // A header or cookie value may be a credential (an API key, a session id): never logged.
    let key = match limit.config.key {
        RateKey::Ip | RateKey::Route => key,
        RateKey::Header(_) | RateKey::Cookie(_) => "(a header or cookie value, not logged)",
    };
    tracing::debug!(limit = %limit.config.name, key = %key, "rate limited");
    ProxyError::RateLimited {
        limit: limit.config.name.clone(),
        retry_after,
        status: StatusCode::from_u16(limit.config.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
    }
}

/// What [`check_all`] decided for a request that no node-local limit rejects.
#[derive(Debug)]
pub(crate) struct Checked {
    /// How long the node-local limits delay the request.
    pub(crate) delay: Duration,
    /// Shared limits still to check in the store ([`check_shared`]).
    pub(crate) shared: Pending,
    /// Node-local limits looked at but not recorded yet, because shared limits apply too:
    /// recorded by [`commit`] once the store admits the request.
    pub(crate) deferred: Pending,
}

/// A header's or cookie's value as a limit's key: 128 bits of its SHA-256, in hex. A key of
/// fixed size whatever a client sends (a 60 KB `X-Api-Key` is 32 bytes in the table), and no
/// API key or session cookie in memory or in a shared store (Redis) as it was sent.
fn digest(value: &[u8]) -> Cow<'static, str> {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let hash = sha2::Sha256::digest(value);
    let mut hex = String::with_capacity(32);
    for b in &hash[..16] {
        let _ = write!(hex, "{b:02x}");
    }
    Cow::Owned(hex)
}

/// Checks every node-local limit that applies to a request. Without shared limits, an
/// admitted request is recorded at once; with them, it is only looked at, and the limits come
/// back in [`Checked::deferred`] to be recorded after the store's answer.
///
/// # Errors
/// [`ProxyError::RateLimited`] for the first limit that rejects the request.
pub(crate) fn check_all(
    limits: &[Arc<RateLimiter>],
    app: usize,
    route: &str,
    path: &str,
    headers: &HeaderMap,
    client: IpAddr,
    now: Instant,
) -> Result<Checked, ProxyError> {
    let mut pending = Vec::new();
    let mut local = Vec::new();
    for limit in limits.iter().filter(|l| l.applies(app, route, path)) {
        let Some(key) = limit.key(headers, client, route) else {
            continue;
        };
        if limit.config.shared {
            pending.push((Arc::clone(limit), key.into_owned()));
        } else {
            local.push((limit, key));
        }
    }
    if local.len() > 1 || (!local.is_empty() && !pending.is_empty()) {
        // First look at every limit: a request one of them rejects is counted by none.
        for (limit, key) in &local {
            if let Decision::Reject { retry_after } = limit.peek(key, now) {
                return Err(rejected(limit, key, retry_after));
            }
        }
    }
    if !pending.is_empty() {
        let deferred = local
            .into_iter()
            .map(|(limit, key)| (Arc::clone(limit), key.into_owned()))
            .collect();
        return Ok(Checked {
            delay: Duration::ZERO,
            shared: pending,
            deferred,
        });
    }
    let delay = record(local.iter().map(|(l, k)| (l.as_ref(), k.as_ref())), now)?;
    Ok(Checked {
        delay,
        shared: pending,
        deferred: Vec::new(),
    })
}

/// Records the node-local limits [`check_all`] deferred, once the store has admitted the
/// request; `Ok` holds how long they delay it.
///
/// # Errors
/// [`ProxyError::RateLimited`] when another request took the room in between.
pub(crate) fn commit(deferred: &Pending, now: Instant) -> Result<Duration, ProxyError> {
    record(deferred.iter().map(|(l, k)| (l.as_ref(), k.as_str())), now)
}

fn record<'a>(
    limits: impl Iterator<Item = (&'a RateLimiter, &'a str)>,
    now: Instant,
) -> Result<Duration, ProxyError> {
    let mut delay = Duration::ZERO;
    let mut counted: Vec<(&RateLimiter, &str)> = Vec::new();
    for (limit, key) in limits {
        match limit.check(key, now) {
            Decision::Allow => {}
            Decision::Delay(d) => delay = delay.max(d),
            Decision::Reject { retry_after } => {
                // Every limit looked at first admitted it, but another gateway thread took
                // this one's room in between: the limits that counted it give it back.
                for (l, k) in counted {
                    l.refund(k);
                }
                return Err(rejected(limit, key, retry_after));
            }
        }
        counted.push((limit, key));
    }
    Ok(delay)
}

/// Checks shared limits in the store (one atomic GCRA step per limit, at the store's clock, so
/// every herd node on the same Redis counts together). When the store cannot answer (or there
/// is none) the limit falls back to this node's own count: serving goes on, less precisely.
///
/// # Errors
/// [`ProxyError::RateLimited`] for the first limit that rejects the request.
/// How long a shared rate limit waits for the store before it counts on this node.
const SHARED_WAIT: Duration = Duration::from_millis(100);

pub(crate) async fn check_shared(
    store: Option<&herd_store::Store>,
    pending: Pending,
) -> Result<Duration, ProxyError> {
    use herd_store::Backend as _;
    let mut delay = Duration::ZERO;
    // Read once per request, not per limit; and one wait for all of a request's limits.
    let status = store.map(herd_store::Backend::status);
    let deadline = tokio::time::Instant::now() + SHARED_WAIT;
    for (limit, key) in pending {
        let params = herd_store::Gcra {
            emission_interval: limit.config.rate.interval(),
            burst_tolerance: limit.config.rate.interval() * limit.config.burst,
        };
        // Its own key space: an app's `POST /v1/ratelimit/{key}` (`herd:{rl:KEY}`) can never
        // name, and so never spend, a zone's bucket.
        let store_key = format!("herd:{{rlz:{}:{key}}}", limit.config.name);
        // A store known to be out (reconnecting, down) is not asked, and one that answers
        // slowly (a hung Redis) is not waited for past `SHARED_WAIT`: the request is counted
        // on this node instead, as documented, rather than paying the store's timeout.
        let decided = match (store, &status) {
            (Some(store), Some(status)) if status.state == "ok" => {
                match tokio::time::timeout_at(deadline, store.gcra(&store_key, params)).await {
                    Ok(decided) => decided,
                    Err(_) => Err(herd_store::StoreError::Unavailable {
                        backend: status.backend,
                        reason: format!("no answer within {SHARED_WAIT:?}"),
                    }),
                }
            }
            (Some(_), Some(status)) => Err(herd_store::StoreError::Unavailable {
                backend: status.backend,
                reason: format!("the store is {}", status.state),
            }),
            _ => Err(herd_store::StoreError::Invalid("no store".into())),
        };
        let decision = match decided {
            // The store says how far ahead of the rate the key is; the first `delay` (or, with
            // `nodelay`, all) requests' worth of that is served at once, as on one node.
            Ok(herd_store::GcraDecision::Allow { delay: ahead }) => {
                let free = limit.config.rate.interval() * limit.config.undelayed();
                match ahead.checked_sub(free) {
                    Some(d) if !d.is_zero() => Decision::Delay(d),
                    _ => Decision::Allow,
                }
            }
            Ok(herd_store::GcraDecision::Deny { retry_after }) => Decision::Reject { retry_after },
            Err(e) => {
                if store.is_some() {
                    tracing::debug!(limit = %limit.config.name, error = %e, "shared rate limit: store unavailable, counting on this node");
                }
                limit.check(&key, Instant::now())
            }
        };
        match decision {
            Decision::Allow => {}
            Decision::Delay(d) => delay = delay.max(d),
            Decision::Reject { retry_after } => return Err(rejected(&limit, &key, retry_after)),
        }
    }
    Ok(delay)
}

/// Builds the limiters for a config, keeping the state of entries that did not change.
pub(crate) fn build(config: &[RateLimit], old: &[Arc<RateLimiter>]) -> Vec<Arc<RateLimiter>> {
    config
        .iter()
        .map(|c| {
            old.iter()
                .find(|o| o.config == *c)
                .map_or_else(|| Arc::new(RateLimiter::new(c)), Arc::clone)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_config::Rate;

    fn limit(key: RateKey, burst: u32) -> RateLimit {
        RateLimit {
            name: "t".into(),
            key,
            rate: Rate {
                requests: 10,
                per: Duration::from_secs(1),
            },
            burst,
            nodelay: false,
            delay: 0,
            app: None,
            path_prefix: None,
            route: None,
            status: 429,
            shared: false,
        }
    }

    #[test]
    fn keys_are_separate_and_expire() {
        let l = RateLimiter::new(&limit(RateKey::Ip, 0));
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Decision::Allow);
        assert_eq!(l.check("b", t0), Decision::Allow);
        assert!(matches!(l.check("a", t0), Decision::Reject { .. }));
        assert_eq!(l.len(), 2);
        l.sweep(t0 + Duration::from_millis(50));
        assert_eq!(l.len(), 2, "TAT still ahead");
        l.sweep(t0 + Duration::from_millis(100));
        assert_eq!(l.len(), 0);
        assert_eq!(
            l.check("a", t0 + Duration::from_millis(100)),
            Decision::Allow
        );
    }

    #[test]
    fn key_count_is_capped() {
        let l = RateLimiter::with_capacity(&limit(RateKey::Ip, 0), 64);
        let t0 = Instant::now();
        for i in 0..10_000 {
            assert_eq!(l.check(&format!("k{i}"), t0), Decision::Allow);
        }
        assert!(l.len() <= 64, "{}", l.len());
    }

    #[test]
    fn extracts_keys() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        h.append(http::header::COOKIE, "a=1; session=s2".parse().unwrap());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let key = |k| {
            RateLimiter::new(&limit(k, 0))
                .key(&h, ip, "route0")
                .map(Cow::into_owned)
        };
        assert_eq!(key(RateKey::Ip).as_deref(), Some("10.0.0.1"));
        assert_eq!(key(RateKey::Route).as_deref(), Some("route0"));
        // Header and cookie values are keyed by a digest: fixed size, never the secret itself.
        let api = key(RateKey::Header("x-api-key".into())).unwrap();
        assert_eq!(api, digest(b"k1"));
        assert_eq!(api.len(), 32);
        assert_ne!(digest(b"k1"), digest(b"k2"));
        assert_eq!(key(RateKey::Header("x-other".into())), None);
        assert_eq!(
            key(RateKey::Cookie("session".into())).as_deref(),
            Some(digest(b"s2").as_ref())
        );
        let huge = vec![b'x'; 60_000];
        assert_eq!(digest(&huge).len(), 32);
        assert_eq!(key(RateKey::Cookie("nope".into())), None);
    }

    #[test]
    fn scope_by_app_route_and_path() {
        let mut c = limit(RateKey::Route, 0);
        c.app = Some(1);
        c.path_prefix = Some("/api/".into());
        let l = RateLimiter::new(&c);
        assert!(l.applies(1, "route0", "/api/x"));
        assert!(!l.applies(0, "route0", "/api/x"));
        assert!(!l.applies(1, "route0", "/web"));
        c.route = Some("canary".into());
        let l = RateLimiter::new(&c);
        assert!(l.applies(1, "canary", "/api/x"));
        assert!(!l.applies(1, "route0", "/api/x"));
    }

    #[test]
    fn check_all_rejects_with_the_limit_status() {
        let mut c = limit(RateKey::Ip, 0);
        c.status = 503;
        let limits = vec![Arc::new(RateLimiter::new(&c))];
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let h = HeaderMap::new();
        let now = Instant::now();
        assert_eq!(
            check_all(&limits, 0, "r", "/", &h, ip, now).unwrap().delay,
            Duration::ZERO
        );
        let err = check_all(&limits, 0, "r", "/", &h, ip, now).unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_request_one_limit_rejects_is_counted_by_none() {
        // Per IP (burst 5) and per API key (burst 0): requests the key limit rejects must not
        // use up the IP's burst.
        let per_ip = Arc::new(RateLimiter::new(&limit(RateKey::Ip, 5)));
        let per_key = Arc::new(RateLimiter::new(&limit(
            RateKey::Header("x-api-key".into()),
            0,
        )));
        let limits = vec![Arc::clone(&per_ip), per_key];
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        let now = Instant::now();
        assert!(check_all(&limits, 0, "r", "/", &h, ip, now).is_ok());
        for _ in 0..20 {
            assert!(check_all(&limits, 0, "r", "/", &h, ip, now).is_err());
        }
        // The IP admitted one request: 1 + burst 5 at once, so five more still pass on it.
        let admitted = (0..10)
            .filter(|_| !matches!(per_ip.check("10.0.0.1", now), Decision::Reject { .. }))
            .count();
        assert_eq!(admitted, 5, "the rejected requests used up the IP's burst");
    }

    #[test]
    fn a_limit_that_fills_between_look_and_record_leaves_the_others_uncounted() {
        // The race of two gateway threads: both zones looked empty, then another request took
        // the per-key zone's room before this one was recorded.
        let per_ip = RateLimiter::new(&limit(RateKey::Ip, 5));
        let per_key = RateLimiter::new(&limit(RateKey::Header("x-api-key".into()), 0));
        let now = Instant::now();
        assert_eq!(per_key.check("k1", now), Decision::Allow);
        for _ in 0..20 {
            let refused = record([(&per_ip, "10.0.0.1"), (&per_key, "k1")].into_iter(), now);
            assert!(refused.is_err());
        }
        let admitted = (0..10)
            .filter(|_| !matches!(per_ip.check("10.0.0.1", now), Decision::Reject { .. }))
            .count();
        assert_eq!(admitted, 6, "refused requests used up the IP's burst");
    }

    #[tokio::test]
    async fn a_request_a_shared_limit_rejects_uses_up_no_local_limit() {
        // Per IP on this node (burst 5) and a shared per-key limit (burst 0), with no store:
        // the shared limit then counts on this node, and rejects every request after the first.
        let per_ip = Arc::new(RateLimiter::new(&limit(RateKey::Ip, 5)));
        let mut shared = limit(RateKey::Header("x-api-key".into()), 0);
        shared.shared = true;
        let limits = vec![Arc::clone(&per_ip), Arc::new(RateLimiter::new(&shared))];
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        let now = Instant::now();
        let mut admitted = 0;
        for _ in 0..20 {
            let checked = check_all(&limits, 0, "r", "/", &h, ip, now).unwrap();
            assert_eq!(checked.shared.len(), 1);
            assert_eq!(
                checked.deferred.len(),
                1,
                "the local limit waits for the store"
            );
            if check_shared(None, checked.shared).await.is_ok() {
                commit(&checked.deferred, now).unwrap();
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1);
        let left = (0..10)
            .filter(|_| !matches!(per_ip.check("10.0.0.1", now), Decision::Reject { .. }))
            .count();
        assert_eq!(
            left, 5,
            "requests the shared limit rejected used up the IP's burst"
        );
    }
}
