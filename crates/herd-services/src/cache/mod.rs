//! Two-level cache: L1 in process (moka: TinyLFU admission, per-entry expiry) in front of L2 in
//! the shared store, with per-namespace strategies, refresh-ahead, tags, coalesced loads and
//! cross-node L1 invalidation.
//!
//! - `freshness`: the pure fresh / refresh-ahead / stale / expired decision.
//! - `entry`: the cached value with its times and tags; its L2 encoding.
//! - `invalidate`: delete by key, prefix or tag on L2 and every node's L1 (pub/sub).
//! - `fill`: fill leases, coalescing the loads of callers that load values themselves (HTTP).
//! - `idle`: drops the index sets of namespaces whose values have all expired.
//! - this module: get / put / delete / get-or-load and stats.
//!
//! Store keys (one hash tag per namespace, so a namespace lives in one Redis Cluster slot):
//! `herd:{c:NS}:k:KEY` the value; `herd:{c:NS}:keys` an ordered set of the namespace's keys
//! scored by expiry (for prefix invalidation: the store has no key scan); `herd:{c:NS}:tag:TAG`
//! the keys written with a tag, scored by expiry (a tag invalidation removes only the keys whose
//! value still carries the tag); `herd:{c:NS}:tags` the tags, each scored by the latest expiry of
//! its keys, so the set of a tag whose keys all expired is dropped. A node's L1 can hold a value another node just replaced for at most
//! the time the invalidation message takes; if the message is lost (store down), for at most
//! `l1_ttl`.

mod entry;
mod fill;
pub mod freshness;
mod idle;
mod invalidate;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herd_store::{Backend as _, Store, Txn};
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::clock::{millis, Clock};
use crate::error::{ServiceError, ServiceResult};
use entry::Entry;
pub use fill::{Leased, MAX_LEASE};
pub use freshness::Freshness;

/// How one namespace caches (the seed's `memoryTTL` / `redisTTL` / `refreshThreshold`).
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    /// How long a node keeps a value in memory.
    pub l1_ttl: Duration,
    /// A value's lifetime in the store (the default `ttl` of a put).
    pub l2_ttl: Duration,
    /// Fraction of the TTL after which a read refreshes the value in the background.
    pub refresh_ahead: Option<f64>,
    /// How long past its TTL a value may still be served while it is refreshed.
    pub grace: Duration,
}

impl Default for Strategy {
    /// The seed's `device` strategy: 300 s in memory, 3600 s shared, refresh at 80 %.
    fn default() -> Self {
        Strategy {
            l1_ttl: Duration::from_secs(300),
            l2_ttl: Duration::from_secs(3600),
            refresh_ahead: Some(0.8),
            grace: Duration::ZERO,
        }
    }
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Entries kept in memory per node (moka evicts by TinyLFU past this).
    pub l1_capacity: u64,
    /// Bytes of keys and values kept in memory per node, at most (also evicted by TinyLFU).
    pub l1_max_bytes: u64,
    /// The strategy of namespaces not named in `namespaces`.
    pub default: Strategy,
    pub namespaces: HashMap<String, Strategy>,
    /// How often a node looks for namespaces whose values it wrote have all expired, to drop
    /// their index entries (see `idle`).
    pub idle_sweep_every: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_capacity: 10_000,
            l1_max_bytes: 64 << 20,
            default: Strategy::default(),
            namespaces: HashMap::new(),
            idle_sweep_every: Duration::from_secs(60),
        }
    }
}

/// Which level answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    L1,
    L2,
}

/// A cache hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub value: Bytes,
    pub level: Level,
    pub freshness: Freshness,
    pub tags: Vec<String>,
    /// The Content-Type given when the value was stored.
    pub content_type: Option<String>,
}

/// Options of [`Cache::put_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Lifetime in L2 (default: the namespace's `l2_ttl`).
    pub ttl: Option<Duration>,
    /// Tags for [`Cache::invalidate_tag`].
    pub tags: Vec<String>,
    /// Returned with the value (the HTTP API answers it as Content-Type).
    pub content_type: Option<String>,
}

/// Counters since start (`GET /v1/cache/stats`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub l1_hits: u64,
    pub l1_misses: u64,
    pub l2_hits: u64,
    pub l2_misses: u64,
    /// Loader calls (get-or-load misses and background refreshes), and `get_or_lease`
    /// callers told to load or refresh.
    pub loads: u64,
    /// Refreshes started (refresh-ahead and stale): background ones of `get_or_load`, and
    /// `get_or_lease` callers told to refresh.
    pub refreshes: u64,
    /// Keys invalidated (deletes, prefix and tag invalidations, including from other nodes).
    pub invalidations: u64,
    /// Fill leases given (`get_or_lease` callers told to load or refresh a value).
    pub fill_leases: u64,
    /// `get_or_lease` reads answered after waiting for another caller's fill (loads saved).
    pub fill_waits: u64,
    /// L2 reads that failed (answered from L1 when it could).
    pub l2_errors: u64,
    /// Entries in this node's L1.
    pub l1_entries: u64,
    /// Their weight (see [`CacheConfig::l1_max_bytes`]): one unit per
    /// `l1_max_bytes / l1_capacity` bytes of an entry, rounded up; at most `l1_capacity`.
    pub l1_weight: u64,
    /// The bytes that weight stands for (each entry rounded up to a whole unit), at most
    /// about `l1_max_bytes` (`[services] cache_memory`).
    pub l1_bytes: u64,
    /// Why reads skip L1 (not subscribed to other nodes' invalidations, so a copy could be
    /// stale): they go to L2, and take L1 only when L2 fails. `None`: L1 serves.
    pub l1_bypassed: Option<String>,
}

/// The bytes one unit of L1 weight stands for: the byte budget's share of one entry.
fn l1_unit(config: &CacheConfig) -> u64 {
    (config.l1_max_bytes / config.l1_capacity.max(1)).max(1)
}

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l1_misses: AtomicU64,
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    loads: AtomicU64,
    refreshes: AtomicU64,
    invalidations: AtomicU64,
    fill_leases: AtomicU64,
    fill_waits: AtomicU64,
    l2_errors: AtomicU64,
}

type Loaded = Result<Bytes, String>;

pub(crate) struct Inner {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    config: CacheConfig,
    l1: moka::future::Cache<String, Arc<Entry>>,
    counters: Counters,
    /// One cell per key being loaded: concurrent get-or-loads of a key await the same load.
    inflight: Mutex<HashMap<String, Arc<OnceCell<Loaded>>>>,
    /// Fill leases of `get_or_lease` callers, ended by a put or delete of their key.
    fills: fill::Fills,
    /// This node's id in invalidation messages (a node ignores its own).
    node: String,
    /// Bumped by every write and invalidation this node sees, per bucket of keys (prefix and
    /// tag invalidations bump all). A read from L2 fills L1 only if its key's bucket did not
    /// move during the read: otherwise the value read may be one a concurrent write just
    /// replaced, and caching it would undo that write's invalidation for `l1_ttl`.
    epochs: Epochs,
    /// Subscribed to other nodes' invalidations: L1 can be trusted. While not (the store's
    /// pub/sub is refused or reconnecting), a read goes to L2 first and takes an L1 copy only
    /// when L2 fails (a store outage: L1 keeps serving). Cleared L1 follows a new subscription.
    coherent: std::sync::atomic::AtomicBool,
    /// Why L1 is bypassed (the subscription's error), for the stats.
    incoherent_reason: Mutex<Option<String>>,
    /// Namespaces this node wrote, until their values have all expired.
    idle: idle::Idle,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// The cache service (cheap to clone).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// Write counters per bucket of keys (see `Inner::epochs`).
pub(crate) struct Epochs([AtomicU64; 64]);

impl Default for Epochs {
    fn default() -> Self {
        Epochs(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Epochs {
    fn bucket(&self, k1: &str) -> &AtomicU64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k1.hash(&mut h);
        &self.0[(h.finish() % 64) as usize]
    }
    fn read(&self, k1: &str) -> u64 {
        self.bucket(k1).load(Ordering::SeqCst)
    }
    /// The bucket's new epoch.
    pub(crate) fn bump(&self, k1: &str) -> u64 {
        self.bucket(k1).fetch_add(1, Ordering::SeqCst) + 1
    }
    pub(crate) fn bump_all(&self) {
        for e in &self.0 {
            e.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Removes up to `count` members of `set` scored at most `max` (expired entries), atomically
/// against a put that re-scores one of them meanwhile: the store moves them to a scratch set
/// (`zmove`, one atomic step), which is then emptied of what was moved. A read-then-remove
/// would drop the entry of a key written again between the two. Failures only leave entries
/// for a later put. Answers how many were moved (`None`: the store failed).
async fn prune_upto(
    store: &herd_store::Store,
    ns: &str,
    set: &str,
    max: f64,
    count: usize,
) -> Option<usize> {
    let scratch = format!("herd:{{c:{ns}}}:pruned");
    let moved = store.zmove(set, &scratch, max, count, 0.0).await.ok()?;
    let n = moved.len();
    if n > 0 {
        let members: Vec<String> = moved.into_iter().map(|(m, _)| m).collect();
        store.zrem(&scratch, &members).await.ok()?;
    }
    Some(n)
}

pub(crate) fn l1_key(ns: &str, key: &str) -> String {
    format!("{ns}\u{0}{key}")
}

fn l2_key(ns: &str, key: &str) -> String {
    format!("herd:{{c:{ns}}}:k:{key}")
}

fn index_key(ns: &str) -> String {
    format!("herd:{{c:{ns}}}:keys")
}

fn tag_key(ns: &str, tag: &str) -> String {
    format!("herd:{{c:{ns}}}:tag:{tag}")
}

/// The namespace's tags, each scored by the latest expiry of its keys.
fn tags_key(ns: &str) -> String {
    format!("herd:{{c:{ns}}}:tags")
}

/// Namespaces become part of a hash tag: braces would break the tag, and empty names or
/// NULs would make keys ambiguous.
fn check_names(ns: &str, key: &str) -> ServiceResult<()> {
    if ns.is_empty()
        || ns.len() > 200
        || ns.contains(['{', '}', ':'])
        || ns.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ServiceError::invalid(
            "cache namespace",
            format!(
                "{} is empty, too long, or contains '{{', '}}', ':', a space or a control character",
                crate::error::quoted(ns)
            ),
            "use letters, digits, '-', '_' or '.' for namespaces",
        ));
    }
    let why = if key.is_empty() {
        "is empty".to_owned()
    } else if key.len() > 1024 {
        format!("is {} bytes long, over 1024", key.len())
    } else if key.contains('\0') {
        "contains NUL".to_owned()
    } else {
        return Ok(());
    };
    Err(ServiceError::invalid(
        "cache key",
        format!("{} {why}", crate::error::quoted(key)),
        "use 1 to 1024 bytes without NUL, e.g. user:42",
    ))
}

/// A tag as put and invalidate take it: the same rules on both sides, so a tag that could
/// never have been set is an error to invalidate, not a quiet `removed: 0`.
fn check_tag(tag: &str) -> ServiceResult<()> {
    let why = if tag.is_empty() {
        "is empty"
    } else if tag.contains(['{', '}', '\0', ',']) {
        "contains '{', '}', ',' or NUL"
    } else if tag.trim() != tag {
        "starts or ends with a space (tags are trimmed when set)"
    } else {
        return Ok(());
    };
    Err(ServiceError::invalid(
        "cache tag",
        format!("{} {why}", crate::error::quoted(tag)),
        "use tags like user:42",
    ))
}

impl Cache {
    pub(crate) fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        config: CacheConfig,
        shutdown: CancellationToken,
    ) -> Self {
        // One weight bounds both the count and the bytes: an entry weighs 1 per `unit` bytes
        // (at least 1), the capacity is `l1_capacity`, and `unit` is the byte budget's share
        // of one entry. So at most `l1_capacity` entries and about `l1_max_bytes` bytes.
        let unit = l1_unit(&config);
        let l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_capacity)
            .weigher(move |key: &String, e: &Arc<Entry>| {
                let bytes = u64::try_from(key.len() + e.approx_size()).unwrap_or(u64::MAX);
                u32::try_from(bytes.div_ceil(unit))
                    .unwrap_or(u32::MAX)
                    .max(1)
            })
            .expire_after(entry::L1Expiry)
            .build();
        Cache {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                l1,
                counters: Counters::default(),
                inflight: Mutex::new(HashMap::new()),
                fills: fill::Fills::default(),
                node: crate::ids::random_id(),
                epochs: Epochs::default(),
                coherent: std::sync::atomic::AtomicBool::new(false),
                incoherent_reason: Mutex::new(Some("not subscribed to invalidations yet".into())),
                idle: idle::Idle::default(),
                tasks: TaskTracker::new(),
                shutdown,
            }),
        }
    }

    /// The strategy a namespace uses.
    #[must_use]
    pub fn strategy(&self, ns: &str) -> &Strategy {
        self.inner
            .config
            .namespaces
            .get(ns)
            .unwrap_or(&self.inner.config.default)
    }

    fn classify(&self, ns: &str, e: &Entry) -> Freshness {
        let s = self.strategy(ns);
        freshness::freshness(
            e.stored_at_ms,
            e.ttl_ms,
            s.refresh_ahead,
            millis(s.grace),
            self.inner.clock.now_ms(),
        )
    }

    /// How long L1 may keep `e`: the namespace's `l1_ttl`, but never past ttl + grace.
    fn l1_for(&self, ns: &str, e: &Entry) -> Duration {
        let s = self.strategy(ns);
        let end = e
            .stored_at_ms
            .saturating_add(e.ttl_ms)
            .saturating_add(millis(s.grace));
        let left = u64::try_from(end.saturating_sub(self.inner.clock.now_ms())).unwrap_or(0);
        s.l1_ttl.min(Duration::from_millis(left))
    }

    /// Whether L1 copies may be served before asking L2: subscribed to other nodes'
    /// invalidations, and the store `ok` (a store that is `degraded`, say a Redis user that
    /// lost its pub/sub channels, may keep a subscription that hears nothing).
    fn l1_trusted(&self) -> bool {
        self.inner.coherent.load(Ordering::Acquire) && self.inner.store.is_ok()
    }

    /// Whether the store's connection is failing (`reconnecting` or `down`), as opposed to
    /// `ok` or `degraded` (answering, but refusing writes): then no L2 read is worth waiting
    /// for.
    fn store_out(&self) -> bool {
        matches!(self.inner.store.status().state, "reconnecting" | "down")
    }

    /// Reads a value: L1, then L2 (which fills L1). A miss is `Ok(None)`. When L2 fails and L1
    /// has no copy the store error comes back; an L1 copy is served even with L2 down.
    ///
    /// # Errors
    /// `Invalid` names, store errors on an L1 miss.
    pub async fn get(&self, ns: &str, key: &str) -> ServiceResult<Option<Hit>> {
        self.read(ns, key, true).await
    }

    /// Counts one call's outcome in the hit and miss counters: a hit at its level, or a miss
    /// of both (for calls that read more than once, such as `get_or_lease`).
    pub(crate) fn count_outcome(&self, hit: Option<&Hit>) {
        let c = &self.inner.counters;
        match hit.map(|h| h.level) {
            Some(Level::L1) => {
                c.l1_hits.fetch_add(1, Ordering::Relaxed);
            }
            Some(Level::L2) => {
                c.l1_misses.fetch_add(1, Ordering::Relaxed);
                c.l2_hits.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                c.l1_misses.fetch_add(1, Ordering::Relaxed);
                c.l2_misses.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// [`Cache::get`], counting hits and misses only with `count`.
    pub(crate) async fn read(
        &self,
        ns: &str,
        key: &str,
        count: bool,
    ) -> ServiceResult<Option<Hit>> {
        check_names(ns, key)?;
        let c = &self.inner.counters;
        let tally = |n: &AtomicU64| {
            if count {
                n.fetch_add(1, Ordering::Relaxed);
            }
        };
        let k1 = l1_key(ns, key);
        let coherent = self.l1_trusted();
        let l1_copy = || async {
            let e = self.inner.l1.get(&k1).await?;
            let f = self.classify(ns, &e);
            if f == Freshness::Expired {
                self.inner.l1.invalidate(&k1).await;
                return None;
            }
            Some(Hit {
                value: e.value.clone(),
                level: Level::L1,
                freshness: f,
                tags: e.tags.clone(),
                content_type: e.content_type.clone(),
            })
        };
        // Trusted, or the store known to be out (its connection failing: `reconnecting`,
        // `down`): L1 answers at once. Asking a hung Redis first would make every read wait
        // the store's timeout before L1 served it.
        if coherent || self.store_out() {
            if let Some(hit) = l1_copy().await {
                tally(&c.l1_hits);
                return Ok(Some(hit));
            }
        }
        let epoch = self.inner.epochs.read(&k1);
        let found = match self.inner.store.get(&l2_key(ns, key)).await {
            Ok(found) => found,
            Err(e) => {
                c.l2_errors.fetch_add(1, Ordering::Relaxed);
                // Not subscribed and the store failing: an outage, in which L1 serves.
                if !coherent {
                    if let Some(hit) = l1_copy().await {
                        tally(&c.l1_hits);
                        return Ok(Some(hit));
                    }
                }
                tally(&c.l1_misses);
                return Err(e.into());
            }
        };
        tally(&c.l1_misses);
        let Some(mut e) = found.and_then(|v| Entry::decode(&v.value)) else {
            tally(&c.l2_misses);
            return Ok(None);
        };
        let f = self.classify(ns, &e);
        if f == Freshness::Expired {
            tally(&c.l2_misses);
            return Ok(None);
        }
        tally(&c.l2_hits);
        e.l1_for = self.l1_for(ns, &e);
        let hit = Hit {
            value: e.value.clone(),
            level: Level::L2,
            freshness: f,
            tags: e.tags.clone(),
            content_type: e.content_type.clone(),
        };
        if self.inner.epochs.read(&k1) == epoch {
            self.inner.l1.insert(k1.clone(), Arc::new(e)).await;
            // An invalidation between the check and the insert bumped the epoch first:
            // the copy just put back is stale.
            if self.inner.epochs.read(&k1) != epoch {
                self.inner.l1.invalidate(&k1).await;
            }
        }
        Ok(Some(hit))
    }

    /// Stores a value in L2 and this node's L1, and tells other nodes to drop their L1 copy.
    /// `ttl` defaults to the namespace's `l2_ttl`.
    ///
    /// # Errors
    /// `Invalid` names or TTL, store errors.
    pub async fn put(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        tags: Vec<String>,
    ) -> ServiceResult<()> {
        let opts = PutOptions {
            ttl,
            tags,
            content_type: None,
        };
        self.put_with(ns, key, value, opts).await
    }

    /// [`Cache::put`] with every option, including the value's Content-Type.
    ///
    /// # Errors
    /// `Invalid` names, TTL or tags; store errors.
    pub async fn put_with(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        opts: PutOptions,
    ) -> ServiceResult<()> {
        let stored = self.store_value(ns, key, value, opts).await;
        // Stored or not, the fill lease on the key ends: its waiters read again.
        self.inner.fills.release(ns, key);
        stored
    }

    async fn store_value(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        opts: PutOptions,
    ) -> ServiceResult<()> {
        let PutOptions {
            ttl,
            tags,
            content_type,
        } = opts;
        check_names(ns, key)?;
        for tag in &tags {
            check_tag(tag)?;
        }
        let s = self.strategy(ns).clone();
        let ttl = ttl.unwrap_or(s.l2_ttl);
        if ttl < Duration::from_millis(1) {
            return Err(ServiceError::invalid(
                "ttl",
                "a cache TTL must be at least 1ms",
                "pass e.g. ?ttl=30s",
            ));
        }
        let now = self.inner.clock.now_ms();
        let mut e = Entry {
            value,
            stored_at_ms: now,
            ttl_ms: millis(ttl),
            tags,
            content_type,
            l1_for: Duration::ZERO,
        };
        let expires = now.saturating_add(e.ttl_ms).saturating_add(millis(s.grace));
        let store = &self.inner.store;
        #[allow(clippy::cast_precision_loss)]
        let score = expires as f64;
        // This node's copy goes into L1 only if no invalidation of the key (another node's
        // write, a delete) reached this node from just before the L2 write until the insert:
        // otherwise it could be older than L2 and served for `l1_ttl`.
        let k1 = l1_key(ns, key);
        let before = self.inner.epochs.read(&k1);
        // The value and its index entries (prefix index, each tag's set) in one transaction:
        // a delete or an invalidation interleaving with this put can never leave the value
        // live in L2 but missing from the index that prefix and tag invalidation read.
        let member = || vec![(key.to_owned(), score)];
        let mut txn = Txn::new().zadd(index_key(ns), member());
        for tag in &e.tags {
            txn = txn.zadd(tag_key(ns, tag), member());
        }
        txn = txn.put(
            l2_key(ns, key),
            e.encode(),
            Some(ttl.saturating_add(s.grace)),
        );
        store.txn(&txn).await?;
        self.inner.idle.note(ns, expires);
        let mine = self.inner.epochs.bump(&k1);
        for tag in &e.tags {
            // The tag's latest expiry: once it passes, every key of the tag has expired and
            // the tag's set is dropped (`prune_tags`), even if the tag is never written again.
            // Bookkeeping only: the value is in L2 already, so a failure here must not skip
            // dropping the old L1 copies below (here and on the other nodes).
            let noted = match store.zscore(&tags_key(ns), tag).await {
                Ok(latest) if latest.is_none_or(|l| l < score) => store
                    .zadd(&tags_key(ns), &[(tag.clone(), score)])
                    .await
                    .map(|_| ()),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(err) = noted {
                tracing::warn!(namespace = ns, error = %err, "cache: failed to note a tag's expiry; its set is pruned later");
            }
        }
        self.prune_index(ns, now).await;
        self.prune_tags(ns, &e.tags, now).await;
        let announced = invalidate::announce(&self.inner, ns, invalidate::Op::Key, key).await;
        e.l1_for = self.l1_for(ns, &e);
        if mine == before + 1 && self.inner.epochs.read(&k1) == mine {
            self.inner.l1.insert(k1.clone(), Arc::new(e)).await;
            if self.inner.epochs.read(&k1) != mine {
                self.inner.l1.invalidate(&k1).await;
            }
        } else {
            self.inner.l1.invalidate(&k1).await;
        }
        announced
    }

    /// Drops index entries of keys that expired by themselves (bounded work per put).
    async fn prune_index(&self, ns: &str, now: i64) {
        #[allow(clippy::cast_precision_loss)]
        let now = now as f64;
        let _ = prune_upto(&self.inner.store, ns, &index_key(ns), now, 100).await;
    }

    /// Drops expired memberships of the tags just written, and the sets of tags whose keys
    /// have all expired (bounded work per put; failures only leave entries for a later put).
    async fn prune_tags(&self, ns: &str, tags: &[String], now: i64) {
        /// Expired tags dropped per put.
        const TAGS_PER_PUT: usize = 10;
        #[allow(clippy::cast_precision_loss)]
        let now = now as f64;
        let store = &self.inner.store;
        let expired_members = |tag: String| async move {
            let _ = prune_upto(store, ns, &tag_key(ns, &tag), now, 1000).await;
        };
        for tag in tags {
            expired_members(tag.clone()).await;
        }
        let Ok(done) = store
            .zrange_by_score(&tags_key(ns), f64::NEG_INFINITY, now, TAGS_PER_PUT)
            .await
        else {
            return;
        };
        for (tag, _) in done {
            expired_members(tag.clone()).await;
            // Written again meanwhile: its new expiry keeps it.
            if let Ok(Some(latest)) = store.zscore(&tags_key(ns), &tag).await {
                if latest < now {
                    let _ = store.zrem(&tags_key(ns), &[tag]).await;
                }
            }
        }
    }

    /// Removes a key from L2 and every node's L1. True when L2 had it, or when this ended a
    /// fill lease on it (a loader that failed gives its lease up with a delete).
    ///
    /// # Errors
    /// `Invalid` names, store errors.
    pub async fn delete(&self, ns: &str, key: &str) -> ServiceResult<bool> {
        check_names(ns, key)?;
        let n = invalidate::delete_keys(&self.inner, ns, &[key.to_owned()]).await;
        let gave_up = self.inner.fills.release(ns, key);
        let n = n?;
        invalidate::announce(&self.inner, ns, invalidate::Op::Key, key).await?;
        Ok(n > 0 || gave_up)
    }

    /// Removes every key of `ns` starting with `prefix`; returns how many L2 held.
    ///
    /// # Errors
    /// Store errors.
    pub async fn invalidate_prefix(&self, ns: &str, prefix: &str) -> ServiceResult<u64> {
        check_names(ns, "-")?;
        invalidate::by_prefix(&self.inner, ns, prefix).await
    }

    /// Removes every key of `ns` tagged `tag`; returns how many L2 held.
    ///
    /// # Errors
    /// Store errors.
    pub async fn invalidate_tag(&self, ns: &str, tag: &str) -> ServiceResult<u64> {
        check_names(ns, "-")?;
        check_tag(tag)?;
        invalidate::by_tag(&self.inner, ns, tag).await
    }

    /// Reads a value, loading it on a miss. Concurrent calls for one key run one loader and
    /// share its result. A value due for refresh (refresh-ahead or stale within grace) is
    /// served at once while one background load replaces it. When L2 is down the loaded value
    /// is still returned (and kept in L1).
    ///
    /// # Errors
    /// `Load` when the loader fails; `Invalid` names.
    pub async fn get_or_load<F, Fut>(&self, ns: &str, key: &str, loader: F) -> ServiceResult<Bytes>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        let loader = Arc::new(loader);
        match self.get(ns, key).await {
            Ok(Some(hit)) => {
                if hit.freshness.wants_refresh() {
                    self.refresh_in_background(ns, key, Arc::clone(&loader));
                }
                return Ok(hit.value);
            }
            Ok(None) => {}
            Err(e @ ServiceError::Invalid { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(ns, error = %e, "cache L2 read failed; loading from the origin")
            }
        }
        self.load_coalesced(ns, key, loader, true).await
    }

    fn refresh_in_background<F, Fut>(&self, ns: &str, key: &str, loader: Arc<F>)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        let k1 = l1_key(ns, key);
        if self.inner.inflight.lock().unwrap().contains_key(&k1) {
            return; // a load for this key is already running
        }
        self.inner
            .counters
            .refreshes
            .fetch_add(1, Ordering::Relaxed);
        let cache = self.clone();
        let (ns, key) = (ns.to_owned(), key.to_owned());
        let shutdown = self.inner.shutdown.clone();
        let span = tracing::info_span!("cache_refresh", ns = %ns);
        self.inner.tasks.spawn(
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    r = cache.load_coalesced(&ns, &key, loader, false) => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "background cache refresh failed; the old value stays until it expires");
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    async fn load_coalesced<F, Fut>(
        &self,
        ns: &str,
        key: &str,
        loader: Arc<F>,
        recheck: bool,
    ) -> ServiceResult<Bytes>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        let k1 = l1_key(ns, key);
        let cell = Arc::clone(
            self.inner
                .inflight
                .lock()
                .unwrap()
                .entry(k1.clone())
                .or_default(),
        );
        // Takes the entry out however this call ends: a cancelled caller (a client gone, a
        // timeout) or a panicking loader would otherwise leave it behind for good, and
        // refresh-ahead would then never run for the key.
        let leave = Leave {
            inflight: &self.inner.inflight,
            key: &k1,
            cell: Some(cell),
        };
        let result = leave
            .cell()
            .get_or_init(|| async {
                // A caller that arrives just after another load finished finds its value.
                if recheck {
                    if let Ok(Some(hit)) = self.get(ns, key).await {
                        if hit.freshness == Freshness::Fresh {
                            return Ok(hit.value);
                        }
                    }
                }
                self.inner.counters.loads.fetch_add(1, Ordering::Relaxed);
                let value = loader().await?;
                if let Err(e) = self.put(ns, key, value.clone(), None, Vec::new()).await {
                    tracing::warn!(ns, error = %e, "failed to store a loaded cache value in L2");
                    let strategy = self.strategy(ns);
                    let e = Entry {
                        value: value.clone(),
                        stored_at_ms: self.inner.clock.now_ms(),
                        ttl_ms: millis(strategy.l2_ttl),
                        tags: Vec::new(),
                        content_type: None,
                        l1_for: strategy.l1_ttl,
                    };
                    self.inner.l1.insert(k1.clone(), Arc::new(e)).await;
                }
                Ok(value)
            })
            .await
            .clone();
        result.map_err(|reason| ServiceError::Load {
            key: key.to_owned(),
            reason,
        })
    }

    /// [`Cache::stats`] after applying L1's pending evictions, so its L1 figures are exact.
    pub async fn stats_exact(&self) -> CacheStats {
        self.inner.l1.run_pending_tasks().await;
        self.stats()
    }

    /// Counters since start (L1's entry count and weight as moka last settled them).
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            l1_hits: get(&c.l1_hits),
            l1_misses: get(&c.l1_misses),
            l2_hits: get(&c.l2_hits),
            l2_misses: get(&c.l2_misses),
            loads: get(&c.loads),
            refreshes: get(&c.refreshes),
            invalidations: get(&c.invalidations),
            fill_leases: get(&c.fill_leases),
            fill_waits: get(&c.fill_waits),
            l2_errors: get(&c.l2_errors),
            l1_entries: self.inner.l1.entry_count(),
            l1_weight: self.inner.l1.weighted_size(),
            l1_bytes: self
                .inner
                .l1
                .weighted_size()
                .saturating_mul(l1_unit(&self.inner.config)),
            l1_bypassed: if !self.inner.coherent.load(Ordering::Acquire) {
                self.inner.incoherent_reason.lock().unwrap().clone()
            } else {
                let status = self.inner.store.status();
                (status.state != "ok").then(|| {
                    format!(
                        "the store is {}: {}",
                        status.state,
                        status.last_error.as_deref().unwrap_or("no detail")
                    )
                })
            },
        }
    }

    /// Starts listening for other nodes' invalidations, and sweeping idle namespaces (until
    /// shutdown).
    pub(crate) fn start_listener(&self) {
        invalidate::spawn_listener(Arc::clone(&self.inner));
        idle::spawn_sweeper(Arc::clone(&self.inner));
    }

    /// Waits for background refreshes and the listener to stop (after shutdown is cancelled).
    pub(crate) async fn closed(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}
/// Removes a coalesced load's entry from `inflight` when a caller of it goes: at once when the
/// load is done (every caller has its result), or when the last caller waiting on an unfinished
/// load is dropped (nobody is left to finish it).
struct Leave<'a> {
    inflight: &'a std::sync::Mutex<HashMap<String, Arc<OnceCell<Loaded>>>>,
    key: &'a str,
    /// This caller's reference, given up under the map's lock, so that the count of
    /// references the last one reads is exact (two callers leaving at once both see it).
    cell: Option<Arc<OnceCell<Loaded>>>,
}

impl Leave<'_> {
    fn cell(&self) -> &OnceCell<Loaded> {
        self.cell
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(cell) = self.cell.take() else { return };
        let ours = inflight
            .get(self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &cell));
        // The map's reference and this caller's: nobody else waits on it.
        if ours && (cell.initialized() || Arc::strong_count(&cell) <= 2) {
            inflight.remove(self.key);
        }
        drop(cell); // still under the lock
    }
}
