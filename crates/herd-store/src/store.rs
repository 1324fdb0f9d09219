//! [`Store`]: the backend chosen by configuration, dispatched by enum.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::embedded::EmbeddedStore;
use crate::queue::{QueueStep, StepOutcome};
use crate::redis::RedisStore;
use crate::unreliable::Unreliable;
use crate::{
    Backend, Expect, Gcra, GcraDecision, StoreResult, StoreStatus, Subscription, Txn, TxnOutcome,
    Versioned, Written,
};

/// How to open a store (herd-config maps `[store]` onto this).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOptions {
    /// A redb file on this node.
    Embedded { path: PathBuf },
    /// One Redis (`cluster: false`, exactly one URL) or a Redis Cluster (`cluster: true`, seed
    /// URLs); every call is bounded by `timeout`.
    Redis {
        urls: Vec<String>,
        cluster: bool,
        timeout: Duration,
    },
}

/// A store backend. Cheap to clone: every variant is a handle to shared state.
#[derive(Clone)]
pub enum Store {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
    /// A wrapper that injects failures (fault tests).
    Unreliable(Box<Unreliable>),
}

impl Store {
    /// Opens the store `opts` names.
    ///
    /// # Errors
    /// `StoreError::Backend` when an embedded file cannot be opened; `Invalid` for bad Redis
    /// options; `Unavailable` when Redis cannot be reached.
    pub async fn open(opts: &StoreOptions) -> StoreResult<Store> {
        match opts {
            StoreOptions::Embedded { path } => {
                Ok(Store::Embedded(EmbeddedStore::open(path).await?))
            }
            StoreOptions::Redis {
                urls,
                cluster,
                timeout,
            } => Ok(Store::Redis(
                RedisStore::open(urls, *cluster, *timeout).await?,
            )),
        }
    }

    /// Stops background tasks and ends subscriptions; later calls fail with `Unavailable`.
    pub async fn shutdown(&self) {
        match self {
            Store::Embedded(s) => s.shutdown().await,
            Store::Redis(s) => s.shutdown().await,
            Store::Unreliable(u) => match u.inner() {
                Store::Embedded(s) => s.shutdown().await,
                Store::Redis(s) => s.shutdown().await,
                Store::Unreliable(_) => unreachable!("Unreliable::new flattens nested wrappers"),
            },
        }
    }

    /// The failure knobs, when this store is the `Unreliable` wrapper.
    #[must_use]
    pub fn unreliable(&self) -> Option<&Unreliable> {
        match self {
            Store::Unreliable(u) => Some(u),
            _ => None,
        }
    }
}

/// Forwards a call to the variant; `Unreliable` first decides whether the call fails.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Embedded($s) => $call.await,
            Store::Redis($s) => $call.await,
            Store::Unreliable(u) => {
                u.before_call().await?;
                match u.inner() {
                    Store::Embedded($s) => $call.await,
                    Store::Redis($s) => $call.await,
                    Store::Unreliable(_) => {
                        unreachable!("Unreliable::new flattens nested wrappers")
                    }
                }
            }
        }
    };
}

impl Backend for Store {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        dispatch!(self, s => s.get(key))
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        dispatch!(self, s => s.get_many(keys))
    }
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> StoreResult<Written> {
        dispatch!(self, s => s.put(key, value.clone(), expect, ttl))
    }
    async fn delete(&self, key: &str, expect: Expect) -> StoreResult<bool> {
        dispatch!(self, s => s.delete(key, expect))
    }
    async fn touch(&self, key: &str, ttl: Duration, expect: Expect) -> StoreResult<bool> {
        dispatch!(self, s => s.touch(key, ttl, expect))
    }
    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        dispatch!(self, s => s.incr(key, by, ttl))
    }
    async fn acquire(
        &self,
        key: &str,
        fence_key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        dispatch!(self, s => s.acquire(key, fence_key, value.clone(), ttl))
    }
    async fn zadd(&self, key: &str, members: &[(String, f64)]) -> StoreResult<()> {
        dispatch!(self, s => s.zadd(key, members))
    }
    async fn zrem(&self, key: &str, members: &[String]) -> StoreResult<u64> {
        dispatch!(self, s => s.zrem(key, members))
    }
    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> StoreResult<Vec<(String, f64)>> {
        dispatch!(self, s => s.zrange_by_score(key, min, max, limit))
    }
    async fn zscore(&self, key: &str, member: &str) -> StoreResult<Option<f64>> {
        dispatch!(self, s => s.zscore(key, member))
    }
    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        dispatch!(self, s => s.zcard(key))
    }
    async fn zcount(&self, key: &str, min: f64, max: f64) -> StoreResult<u64> {
        dispatch!(self, s => s.zcount(key, min, max))
    }
    async fn zmove(
        &self,
        src: &str,
        dst: &str,
        max_score: f64,
        count: usize,
        dst_score: f64,
    ) -> StoreResult<Vec<(String, f64)>> {
        dispatch!(self, s => s.zmove(src, dst, max_score, count, dst_score))
    }
    async fn txn(&self, txn: &Txn) -> StoreResult<TxnOutcome> {
        dispatch!(self, s => s.txn(txn))
    }
    async fn queue_step(&self, step: &QueueStep) -> StoreResult<StepOutcome> {
        dispatch!(self, s => s.queue_step(step))
    }
    async fn gcra(&self, key: &str, params: Gcra) -> StoreResult<GcraDecision> {
        dispatch!(self, s => s.gcra(key, params))
    }
    async fn time_ms(&self) -> StoreResult<i64> {
        dispatch!(self, s => s.time_ms())
    }
    async fn publish(&self, channel: &str, message: Bytes) -> StoreResult<()> {
        dispatch!(self, s => s.publish(channel, message.clone()))
    }
    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        dispatch!(self, s => s.subscribe(channel))
    }
    fn status(&self) -> StoreStatus {
        match self {
            Store::Embedded(s) => s.status(),
            Store::Redis(s) => s.status(),
            Store::Unreliable(u) => u.status(),
        }
    }

    fn is_ok(&self) -> bool {
        match self {
            Store::Embedded(s) => s.is_ok(),
            Store::Redis(s) => s.is_ok(),
            Store::Unreliable(u) => u.status().state == "ok",
        }
    }
}

impl std::fmt::Debug for Store {
    /// The backend and where it is (never a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.status();
        f.debug_struct("Store")
            .field("backend", &status.backend)
            .field("target", &status.target)
            .finish()
    }
}
