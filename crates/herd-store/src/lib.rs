//! The shared store under herd's services (sessions, cache, queue, locks, shared rate limits).
//!
//! One trait, [`Backend`], names the primitives the services need and nothing more:
//!
//! - KV with TTL and a version per key for compare-and-swap ([`Backend::get`], [`Backend::put`],
//!   [`Backend::delete`], [`Backend::touch`]);
//! - atomic counters ([`Backend::incr`]) and a fenced set-if-absent for locks ([`Backend::acquire`]);
//! - ordered sets for delayed, prioritised and leased jobs ([`Backend::zadd`] and friends), with one
//!   atomic move between sets ([`Backend::zmove`]) so a job is always in exactly one set;
//! - transactions ([`Backend::txn`]): version checks, then several writes applied together or
//!   not at all (one round trip, one commit);
//! - queue steps ([`Backend::queue_step`]): a job's ack and the lease of the next jobs in one
//!   call, on the job record format of [`queue`] (BullMQ's scripts do the same on Redis);
//! - a GCRA rate-limit step done atomically by the store ([`Backend::gcra`]);
//! - pub/sub for cross-node invalidation ([`Backend::publish`], [`Backend::subscribe`]).
//!
//! Backends: [`Store::Embedded`] (redb, durable, the default) and [`Store::Redis`] (a single Redis or
//! a Redis Cluster). [`Store::Unreliable`] wraps either and injects failures for fault tests.
//! Every backend passes the one conformance suite in `tests/conformance.rs`.
//!
//! **Keys and Redis Cluster.** A key's `{hash tag}` decides its slot. Operations that touch several
//! keys at once ([`Backend::zmove`], [`Backend::acquire`], [`Backend::get_many`],
//! [`Backend::txn`]) require all keys to share one hash tag; the services name their keys `herd:{queue:NAME}:...` so a queue or a
//! session lives in one slot.
//!
//! **Opening.** [`Store::open`] takes [`StoreOptions`]; [`Store`] is cheap to clone (every variant
//! is a shared handle) and [`Store::shutdown`] stops its background tasks and ends subscriptions.
//! Layout: `store` (the enum and its dispatch), `embedded/` and `redis/` (one module tree per
//! backend), `unreliable` (fault injection), `hub` (in-process pub/sub fan-out), `args` (argument
//! checks and the GCRA step every backend shares).
//!
//! **Kinds of value.** A key holds a value, a counter, rate-limit state or an ordered set; a call
//! for another kind fails with [`StoreError::WrongType`] on every backend, and `delete(Any)`
//! removes whatever is there.
//!
//! **Cancellation.** Every call is a future; dropping it cancels the call. A write that was already
//! handed to the store may still commit (the store stays consistent either way: each call is atomic).

use std::time::Duration;

use bytes::Bytes;

mod args;
mod embedded;
mod error;
mod hub;
pub mod queue;
mod redis;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod txn;
mod unreliable;

pub use embedded::{EmbeddedStats, EmbeddedStore};
pub use error::{StoreError, StoreResult};
pub use redis::RedisStore;
pub use store::{Store, StoreOptions};
pub use txn::{Txn, TxnOp, TxnOutcome};
pub use unreliable::Unreliable;

/// A value with the version the store gave it. Versions start at 1 and grow by one per write of
/// the key; a deleted (or expired) key starts again at 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

/// What [`Backend::put`] and [`Backend::delete`] require of the key's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Write only if the key does not exist (or has expired).
    Absent,
    /// Write only if the key exists with exactly this version.
    Version(u64),
}

/// The outcome of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// Written; the key's new version.
    Ok(u64),
    /// The expectation did not hold; the key's current version (`None`: absent).
    Conflict(Option<u64>),
}

/// Parameters of one GCRA step (nginx `limit_req` semantics: `rate`, `burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Time between two requests at the steady rate (1 s / rate).
    pub emission_interval: Duration,
    /// How far ahead of the steady rate a key may be: `burst × emission_interval`.
    pub burst_tolerance: Duration,
}

/// The outcome of a GCRA step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcraDecision {
    /// Allowed; `delay` is how far ahead of the steady rate the key now is (nginx delays by this
    /// much unless `nodelay`).
    Allow { delay: Duration },
    /// Refused; retry after this long.
    Deny { retry_after: Duration },
}

/// Connection state as `GET /store/status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatus {
    /// `embedded`, `redis` or `redis-cluster`.
    pub backend: &'static str,
    /// `ok`, `reconnecting` or `down`.
    pub state: &'static str,
    /// Where the store is: a path or a URL with any password removed.
    pub target: String,
    /// The last error, if the store is not `ok`.
    pub last_error: Option<String>,
}

/// A subscription to one pub/sub channel; ends when the store shuts down.
pub type Subscription = tokio_stream::wrappers::ReceiverStream<Bytes>;

/// The primitives a store backend offers. Each call is atomic on its own.
///
/// All errors are [`StoreError`]; `StoreError::is_retryable` says whether trying again may help
/// (connection lost, timeout) or not (wrong type of value, bad argument).
#[allow(async_fn_in_trait)]
pub trait Backend: Send + Sync {
    /// The value and version of `key`, or `None` when absent or expired.
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>>;
    /// Several keys at once (one round trip). On Redis Cluster the keys share a hash tag.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>>;
    /// Writes `value` if `expect` holds; `ttl: None` keeps no expiry (a rewrite clears an old one).
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> StoreResult<Written>;
    /// Removes `key` if `expect` holds; true when a key was removed.
    async fn delete(&self, key: &str, expect: Expect) -> StoreResult<bool>;
    /// Sets a new TTL on an existing key (rolling sessions, lock renewal) if `expect` holds;
    /// false when absent or the expectation failed. Does not change the version.
    async fn touch(&self, key: &str, ttl: Duration, expect: Expect) -> StoreResult<bool>;
    /// Adds `by` to the counter at `key` (absent = 0) and returns the new value. Counters have
    /// no TTL unless `ttl` is given, which (re)sets it.
    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64>;
    /// Lock acquisition in one atomic step: if `key` is absent, set it to `value` with `ttl`,
    /// add one to the counter `fence_key` and return the counter's new value (the fencing
    /// token, strictly increasing per `fence_key`). `None` when `key` is held, except by
    /// `value` itself: then the holder's fence (a retried call whose answer was lost; callers
    /// give each acquisition a unique value). The lock's
    /// version is that fence, not 1: a version check on it (renew, release) can never match
    /// a later acquisition of the same lock after this one expired.
    async fn acquire(
        &self,
        key: &str,
        fence_key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> StoreResult<Option<u64>>;

    /// Adds or re-scores members of the ordered set at `key`.
    async fn zadd(&self, key: &str, members: &[(String, f64)]) -> StoreResult<()>;
    /// Removes members; returns how many were there.
    async fn zrem(&self, key: &str, members: &[String]) -> StoreResult<u64>;
    /// Members with `min <= score <= max`, lowest score first (ties by member), at most `limit`.
    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> StoreResult<Vec<(String, f64)>>;
    /// The score of one member.
    async fn zscore(&self, key: &str, member: &str) -> StoreResult<Option<f64>>;
    /// The number of members.
    async fn zcard(&self, key: &str) -> StoreResult<u64>;
    /// The number of members with `min <= score <= max`.
    async fn zcount(&self, key: &str, min: f64, max: f64) -> StoreResult<u64>;
    /// Atomically moves up to `count` members with `score <= max_score`, lowest first, from `src`
    /// to `dst`, giving each `dst_score` there; returns the moved members with their old scores.
    async fn zmove(
        &self,
        src: &str,
        dst: &str,
        max_score: f64,
        count: usize,
        dst_score: f64,
    ) -> StoreResult<Vec<(String, f64)>>;

    /// Applies `txn`: if every check holds, every op, atomically; otherwise nothing.
    async fn txn(&self, txn: &Txn) -> StoreResult<TxnOutcome>;

    /// One queue step ([`queue`]): a job's ack, then the lease of the next waiting jobs, as one
    /// atomic call (one round trip, one commit). The store reads and rewrites only the
    /// records' headers.
    async fn queue_step(&self, step: &queue::QueueStep) -> StoreResult<queue::StepOutcome>;

    /// One GCRA step for `key` at the store's own clock; the state expires by itself.
    async fn gcra(&self, key: &str, params: Gcra) -> StoreResult<GcraDecision>;

    /// The store's clock, in milliseconds since the Unix epoch: Redis's `TIME` (one clock for
    /// every herd node sharing it), this machine's for the embedded store. The services read
    /// queue due times and lease deadlines against it, so nodes whose clocks disagree still
    /// agree on when a lease ends.
    async fn time_ms(&self) -> StoreResult<i64>;

    /// Publishes a message to every subscriber of `channel` on every herd node.
    async fn publish(&self, channel: &str, message: Bytes) -> StoreResult<()>;
    /// Subscribes to `channel`. Messages published before the call returns may be missed.
    /// An empty message means the subscription was re-established after its connection was
    /// lost (Redis): messages published meanwhile are gone, and a subscriber that keeps state
    /// from them resynchronises.
    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription>;

    /// What the backend is and how its connection is.
    fn status(&self) -> StoreStatus;

    /// `status().state == "ok"`, without building the status (asked on hot paths).
    fn is_ok(&self) -> bool {
        self.status().state == "ok"
    }
}
