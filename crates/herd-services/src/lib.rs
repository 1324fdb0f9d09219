//! herd's shared services over the shared store ([`herd_store::Store`]): sessions, a two-level
//! cache, job queues, locks with fencing tokens and shared rate limits, as a Rust API and as an
//! HTTP API ([`http::router`]).
//!
//! - [`sessions`]: JSON sessions with TTL, versions (CAS), per-field merge, regenerate.
//! - [`cache`]: L1 (moka) + L2 (store), strategies per namespace, refresh-ahead, tags,
//!   coalesced loads, cross-node L1 invalidation over pub/sub.
//! - [`queue`]: BullMQ's feature set with at-least-once delivery (the module docs reason it
//!   through store call by store call).
//! - [`locks`]: fenced locks; [`ratelimit`]: GCRA in the store.
//! - [`http`]: the `/v1/...` API, Bearer-token protected, with its OpenAPI document.
//!
//! Every key starts with `herd:` and carries a hash tag (`{s:ID}`, `{c:NS}`, `{q:NAME}`,
//! `{l:NAME}`, `{rl:KEY}`) so one session, namespace, queue or lock lives in one Redis Cluster
//! slot. Time comes from a [`Clock`] so tests can move it.

pub mod cache;
mod clock;
mod error;
pub mod http;
mod ids;
pub mod locks;
mod object;
pub mod queue;
pub mod ratelimit;
pub mod sessions;

use std::sync::Arc;

use herd_store::Store;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, ManualClock, StoreClock, SystemClock};
pub use error::{ServiceError, ServiceResult};

/// Settings of all services (the integrator fills them from `[services]`).
#[derive(Debug, Clone, Default)]
pub struct ServicesConfig {
    pub sessions: sessions::SessionConfig,
    pub cache: cache::CacheConfig,
    pub queues: queue::QueueConfig,
}

/// All services over one store.
pub struct Services {
    pub sessions: sessions::Sessions,
    pub cache: cache::Cache,
    pub queues: queue::Queues,
    pub locks: locks::Locks,
    pub rate_limits: ratelimit::RateLimits,
    store: Arc<Store>,
    shutdown: CancellationToken,
}

impl Services {
    /// Builds the services and starts their background listeners (cache invalidation), which
    /// stop when `shutdown` is cancelled; [`Services::closed`] waits for them. Call it inside a
    /// Tokio runtime.
    #[must_use]
    pub fn start(
        store: Arc<Store>,
        config: ServicesConfig,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Services> {
        let cache = cache::Cache::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            config.cache,
            shutdown.clone(),
        );
        cache.start_listener();
        Arc::new(Services {
            sessions: sessions::Sessions::new(Arc::clone(&store), config.sessions),
            cache,
            queues: queue::Queues::new(Arc::clone(&store), clock, config.queues, shutdown.clone()),
            locks: locks::Locks::new(Arc::clone(&store), shutdown.clone()),
            rate_limits: ratelimit::RateLimits::new(Arc::clone(&store)),
            store,
            shutdown,
        })
    }

    /// The store under the services.
    #[must_use]
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The token that stops the services' background tasks.
    #[must_use]
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits until every background task has stopped (call after cancelling the token).
    pub async fn closed(&self) {
        self.cache.closed().await;
        self.queues.closed().await;
    }
}
