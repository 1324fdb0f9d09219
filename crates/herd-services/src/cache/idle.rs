//! Index sets of namespaces that went idle. A put prunes the entries of expired keys from the
//! namespace's index and tag sets (bounded work per put), so in a namespace that stops being
//! written the last entries would stay for good: the store keeps ordered sets without a TTL.
//! Each node remembers when the values it wrote last expire, per namespace; once that time has
//! passed, its sweeper empties the namespace's expired index entries and tag sets (an empty
//! set is no key at all on Redis). Sets a node left behind when it stopped before its values
//! expired are pruned by the next put in the namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herd_store::Backend as _;
use tracing::Instrument as _;

use super::{index_key, prune_upto, tag_key, tags_key, Inner};

/// Namespaces a node remembers at most; past it, new ones are left to later puts.
const MAX_NAMESPACES: usize = 10_000;
/// Members pruned per step, and steps per set and sweep.
const BATCH: usize = 1000;
const MAX_STEPS: usize = 100;

/// Per namespace, the latest expiry (ms) of a value this node wrote.
#[derive(Default)]
pub(super) struct Idle(Mutex<HashMap<String, i64>>);

impl Idle {
    pub(super) fn note(&self, ns: &str, expires: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(latest) = map.get_mut(ns) {
            *latest = (*latest).max(expires);
        } else if map.len() < MAX_NAMESPACES {
            map.insert(ns.to_owned(), expires);
        }
    }

    fn due(&self, now: i64) -> Vec<String> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|&(_, &latest)| latest < now)
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// Forgets `ns` unless a put noted a later expiry while it was swept.
    fn swept(&self, ns: &str, now: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(ns).is_some_and(|&latest| latest < now) {
            map.remove(ns);
        }
    }
}

/// Sweeps idle namespaces every `CacheConfig::idle_sweep_every`, until shutdown.
pub(super) fn spawn_sweeper(inner: Arc<Inner>) {
    let shutdown = inner.shutdown.clone();
    let tasks = inner.tasks.clone();
    let every = inner.config.idle_sweep_every;
    tasks.spawn(
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = inner.clock.now_ms();
                for ns in inner.idle.due(now) {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    if sweep(&inner, &ns, now).await {
                        inner.idle.swept(&ns, now);
                    }
                }
            }
        }
        .instrument(tracing::debug_span!("cache_idle_sweeper")),
    );
}

/// Prunes every expired entry of `ns`'s index and tag sets; false when the store failed (the
/// namespace is tried again on the next tick).
async fn sweep(inner: &Inner, ns: &str, now: i64) -> bool {
    #[allow(clippy::cast_precision_loss)]
    let upto = now as f64;
    let store = &inner.store;
    // False when the store failed or the steps ran out with more left: the namespace is
    // swept again on the next tick.
    let drain = |set: String| async move {
        for _ in 0..MAX_STEPS {
            match prune_upto(store, ns, &set, upto, BATCH).await {
                Some(n) if n < BATCH => return true,
                Some(_) => {}
                None => return false,
            }
        }
        false
    };
    let mut ok = drain(index_key(ns)).await;
    let mut finished = false;
    for _ in 0..MAX_STEPS {
        let Ok(done) = store
            .zrange_by_score(&tags_key(ns), f64::NEG_INFINITY, upto, BATCH)
            .await
        else {
            return false;
        };
        let last = done.len() < BATCH;
        for (tag, _) in done {
            ok &= drain(tag_key(ns, &tag)).await;
            // Written again meanwhile: its new expiry keeps it.
            match store.zscore(&tags_key(ns), &tag).await {
                Ok(Some(latest)) if latest < upto => {
                    ok &= store.zrem(&tags_key(ns), &[tag]).await.is_ok();
                }
                Ok(_) => {}
                Err(_) => ok = false,
            }
        }
        if last || !ok {
            finished = last;
            break;
        }
    }
    ok && finished
}
