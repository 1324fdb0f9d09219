//! `[store]` and `[services]`: where shared state lives and how app instances reach the shared
//! services (sessions, cache, queue, locks, rate limits), as validated. `docs/config.md` has the
//! reference.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[store]`: the backend of every shared service.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    /// `backend = "embedded"` (default): a redb file at `path` (default `.herd/store.redb`,
    /// relative to the config file). Durable, single node.
    Embedded {
        /// `path`, resolved against the config file's directory.
        path: PathBuf,
    },
    /// `backend = "redis"`: a single Redis at `url`, or a Redis Cluster from the seed nodes in
    /// `cluster` (then `url` is not used).
    Redis {
        /// `url`, e.g. `redis://127.0.0.1:6379` or `rediss://:password@host:6380/0`.
        url: Option<String>,
        /// `cluster`: seed node URLs of a Redis Cluster.
        cluster: Vec<String>,
        /// `timeout`, default 1 s: the longest a single store call may take.
        timeout: Duration,
    },
}

/// `[services]`: the HTTP/JSON services API for app instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Services {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `listen`, default `127.0.0.1:9091`.
    pub listen: SocketAddr,
    /// `token`: the Bearer token instances present (passed to them as `HERD_SERVICES_TOKEN`).
    /// `None`: herd makes a random one at start. Required when `listen` is not loopback.
    pub token: Option<String>,
    /// `max_body_size`, default 1 MiB: larger request bodies get 413.
    pub max_body_size: u64,
    /// `session_ttl`, default 24 h (connect-redis): sessions created without a `ttl`.
    pub session_ttl: Duration,
    /// `rolling_sessions`, default true (express-session `rolling`): a read renews the TTL.
    pub rolling_sessions: bool,
    /// `session_touch_after`, default 1 m (connect-mongo `touchAfter`): with rolling sessions,
    /// a node renews a session's TTL on a read at most once per this long (and at most once
    /// per tenth of the session's TTL); `0s` renews on every read.
    pub session_touch_after: Duration,
    /// `[services.cache.NAME]`: per-namespace cache strategies; namespaces not named here use
    /// `[services.cache.default]` if present, else the built-in default.
    pub cache: BTreeMap<String, CacheStrategy>,
    /// `cache_memory`, default 64 MiB: the most bytes of keys and values a node keeps in its
    /// in-process cache (L1), all namespaces together (beside the entry count).
    pub cache_memory: u64,
    /// `job_lease`, default 30 s (BullMQ's lock, SQS's visibility timeout): a reserved job's
    /// lease when `reserve` names none.
    pub job_lease: Duration,
    /// `max_stalled`, default 1 (BullMQ `maxStalledCount`): lease expiries a job survives
    /// before it is dead-lettered.
    pub max_stalled: u32,
    /// `[services.queue.NAME]`: per-queue limits.
    pub queues: BTreeMap<String, QueueLimits>,
}

/// `[services.queue.NAME]`: BullMQ's `limiter` and a cluster-wide concurrency cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueLimits {
    /// `rate = "100r/s"`: jobs reserved per second or minute at most, across every node.
    pub rate: Option<crate::Rate>,
    /// `concurrency`: jobs active (reserved, not yet acked or failed) at most, across every node.
    pub concurrency: Option<u32>,
}

/// One cache namespace's strategy (the seed's memoryTTL / sharedTTL / refreshThreshold).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStrategy {
    /// `l1_ttl`, default 5 m: how long an entry stays in a node's memory.
    pub l1_ttl: Duration,
    /// `l2_ttl`, default 1 h: how long an entry lives in the store.
    pub l2_ttl: Duration,
    /// `refresh_ahead`, default 0.8: after this fraction of `l2_ttl` a read still answers the
    /// cached value and refreshes it in the background (stale-while-revalidate); 1.0 = never.
    pub refresh_ahead: f64,
    /// `grace`, default 0: how long past its TTL a value may still be served while one
    /// refresh runs (Varnish grace).
    pub grace: Duration,
    /// `l1_max_entries`, default 10 000: the largest of them sizes the node's one L1.
    pub l1_max_entries: u64,
}

impl Default for CacheStrategy {
    fn default() -> Self {
        CacheStrategy {
            l1_ttl: Duration::from_secs(300),
            l2_ttl: Duration::from_secs(3600),
            refresh_ahead: 0.8,
            grace: Duration::ZERO,
            l1_max_entries: 10_000,
        }
    }
}
