//! Invalidation: delete keys from L2 and this node's L1, and tell every other node to drop
//! its L1 copies over the store's pub/sub (channel `herd:cache:invalidate`).
//!
//! A message is `{"node": ID, "ns": NS, "op": "key"|"prefix"|"tag", "arg": ...}`; a node skips
//! its own. Losing a message (store down) leaves a stale L1 copy for at most the namespace's
//! `l1_ttl`, the bound the seed's design had for every write.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use herd_store::{Backend as _, Expect, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use super::{index_key, l1_key, l2_key, tag_key, Entry, Inner};
use crate::error::ServiceResult;

pub(crate) const CHANNEL: &str = "herd:cache:invalidate";

/// The most keys one prefix or tag invalidation removes (the index is read in one call).
const MAX_KEYS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Key,
    Prefix,
    Tag,
}

#[derive(Serialize, Deserialize)]
struct Message {
    node: String,
    ns: String,
    op: Op,
    arg: String,
}

/// Publishes an invalidation. A failure is the caller's error (the write itself is done):
/// other nodes keep their L1 copies, up to the namespace's `l1_ttl`, so the client hears of
/// it and can retry (every write and invalidation is idempotent).
pub(super) async fn announce(inner: &Inner, ns: &str, op: Op, arg: &str) -> ServiceResult<()> {
    let msg = Message {
        node: inner.node.clone(),
        ns: ns.to_owned(),
        op,
        arg: arg.to_owned(),
    };
    let body = Bytes::from(serde_json::to_vec(&msg).unwrap_or_default());
    let Err(e) = inner.store.publish(CHANNEL, body).await else {
        return Ok(());
    };
    tracing::warn!(ns, error = %e, "failed to publish a cache invalidation; other nodes keep their copy until its l1_ttl");
    let told = "done in the store and on this node, but other herd nodes could not be told to \
                drop their L1 copies; they may serve the old value for up to the namespace's \
                l1_ttl: retry once the cause is fixed";
    Err(match e {
        herd_store::StoreError::Unavailable { backend, reason } => {
            herd_store::StoreError::Unavailable {
                backend,
                reason: format!("{reason} ({told})"),
            }
        }
        other => other,
    }
    .into())
}

/// Drops L1 entries of `ns` matching `op`/`arg` on this node; returns how many.
async fn drop_local(inner: &Inner, ns: &str, op: Op, arg: &str) -> u64 {
    match op {
        Op::Key => {
            inner.epochs.bump(&l1_key(ns, arg));
        }
        Op::Prefix | Op::Tag => inner.epochs.bump_all(),
    }
    let mut doomed = Vec::new();
    match op {
        Op::Key => doomed.push(l1_key(ns, arg)),
        Op::Prefix | Op::Tag => {
            let ns_prefix = l1_key(ns, "");
            for (k, e) in &inner.l1 {
                let Some(key) = k.strip_prefix(&ns_prefix) else {
                    continue;
                };
                let hit = match op {
                    Op::Prefix => key.starts_with(arg),
                    _ => e.tags.iter().any(|t| t == arg),
                };
                if hit {
                    doomed.push(k.as_ref().clone());
                }
            }
        }
    }
    let mut n = 0;
    for k in doomed {
        if inner.l1.remove(&k).await.is_some() {
            n += 1;
        }
    }
    n
}

/// Deletes `keys` of `ns` from L2, the index and this node's L1; returns how many L2 held.
pub(super) async fn delete_keys(inner: &Inner, ns: &str, keys: &[String]) -> ServiceResult<u64> {
    // Each key at the version it has now (one read for all), following a put that changes it.
    let l2: Vec<String> = keys.iter().map(|k| l2_key(ns, k)).collect();
    let found = inner.store.get_many(&l2).await?;
    let keys: Vec<(String, Expect)> = keys
        .iter()
        .zip(found)
        .map(|(k, v)| {
            (
                k.clone(),
                v.map_or(Expect::Absent, |v| Expect::Version(v.version)),
            )
        })
        .collect();
    Ok(delete_expecting(inner, ns, &keys, None, true).await?.len() as u64)
}

/// Deletes each key of `ns` whose L2 value is as `expect` says (`Absent`: only a stale index
/// entry to drop), from L2, the index and this node's L1; returns the keys L2 held and deleted.
/// With `follow`, a key that changed meanwhile is deleted at its new version; without, it stays,
/// in L2 and in the index. With `tag_set`, a deleted key also leaves that tag's set. The value
/// and its index entries go in one transaction (as a put writes them), so no interleaving with
/// a put of the same key can leave a live value missing from the index.
async fn delete_expecting(
    inner: &Inner,
    ns: &str,
    keys: &[(String, Expect)],
    tag_set: Option<&str>,
    follow: bool,
) -> ServiceResult<Vec<String>> {
    let mut deleted = Vec::new();
    for chunk in keys.chunks(DELETE_BATCH) {
        // The whole chunk in one transaction when nothing changed since it was read (one
        // commit instead of one per key); key by key, following changes, when something did.
        if chunk.len() > 1 && delete_batch(inner, ns, chunk, tag_set).await? {
            deleted.extend(
                chunk
                    .iter()
                    .filter(|(_, at)| *at != Expect::Absent)
                    .map(|(k, _)| k.clone()),
            );
        } else {
            for (key, expect) in chunk {
                if delete_one(inner, ns, key, *expect, tag_set, follow).await? {
                    deleted.push(key.clone());
                }
            }
        }
        for (key, _) in chunk {
            inner.epochs.bump(&l1_key(ns, key));
            inner.l1.invalidate(&l1_key(ns, key)).await;
        }
    }
    inner
        .counters
        .invalidations
        .fetch_add(keys.len() as u64, Ordering::Relaxed);
    Ok(deleted)
}

/// Keys deleted per transaction by an invalidation.
const DELETE_BATCH: usize = 200;

/// Deletes every key of `chunk` as read, in one transaction; `false` (nothing done) when any
/// of them changed since.
async fn delete_batch(
    inner: &Inner,
    ns: &str,
    chunk: &[(String, Expect)],
    tag_set: Option<&str>,
) -> ServiceResult<bool> {
    let mut txn = Txn::new();
    let mut tagged = Vec::new();
    for (key, at) in chunk {
        let l2 = l2_key(ns, key);
        txn = txn.check(&l2, *at);
        if *at != Expect::Absent {
            txn = txn.delete(&l2);
            tagged.push(key.clone());
        }
    }
    if let (Some(tk), false) = (tag_set, tagged.is_empty()) {
        txn = txn.zrem(tk, tagged);
    }
    let all = chunk.iter().map(|(k, _)| k.clone()).collect();
    Ok(matches!(
        inner.store.txn(&txn.zrem(index_key(ns), all)).await?,
        TxnOutcome::Committed
    ))
}

/// Deletes one key as [`delete_expecting`] says; whether L2 held it and it was deleted.
async fn delete_one(
    inner: &Inner,
    ns: &str,
    key: &str,
    expect: Expect,
    tag_set: Option<&str>,
    follow: bool,
) -> ServiceResult<bool> {
    /// Tries per key when puts keep changing it (then it is left as the last put wrote it).
    const TRIES: u32 = 8;
    let l2 = l2_key(ns, key);
    let unindex = || vec![key.to_owned()];
    let mut at = expect;
    for _ in 0..TRIES {
        let mut txn = Txn::new().check(&l2, at);
        if at != Expect::Absent {
            txn = txn.delete(&l2);
            if let Some(tk) = tag_set {
                txn = txn.zrem(tk, unindex());
            }
        }
        match inner.store.txn(&txn.zrem(index_key(ns), unindex())).await? {
            TxnOutcome::Committed => return Ok(at != Expect::Absent),
            TxnOutcome::Conflict { current, .. } if follow => {
                at = current.map_or(Expect::Absent, Expect::Version);
            }
            // Changed since its version was read: it stays.
            TxnOutcome::Conflict { .. } => return Ok(false),
        }
    }
    Ok(false)
}

pub(super) async fn by_prefix(inner: &Inner, ns: &str, prefix: &str) -> ServiceResult<u64> {
    let members = inner
        .store
        .zrange_by_score(&index_key(ns), f64::NEG_INFINITY, f64::INFINITY, MAX_KEYS)
        .await?;
    let keys: Vec<String> = members
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m.starts_with(prefix))
        .collect();
    drop_local(inner, ns, Op::Prefix, prefix).await;
    let n = delete_keys(inner, ns, &keys).await?;
    announce(inner, ns, Op::Prefix, prefix).await?;
    Ok(n)
}

/// Keys read per `get_many` when checking a tag's keys.
const TAG_CHECK_BATCH: usize = 500;

pub(super) async fn by_tag(inner: &Inner, ns: &str, tag: &str) -> ServiceResult<u64> {
    let tk = tag_key(ns, tag);
    let members = inner
        .store
        .zrange_by_score(&tk, f64::NEG_INFINITY, f64::INFINITY, MAX_KEYS)
        .await?;
    // A membership can outlive the tagging: the key expired, was deleted, or was written again
    // without this tag. Only keys whose value still carries the tag are removed (each only if
    // it is still that value), and the memberships of the others are dropped.
    #[allow(clippy::cast_precision_loss)]
    let now = inner.clock.now_ms() as f64;
    // Each key with the state of its value as read: the membership is dropped (and a tagged
    // value deleted) only while the value is still as read, so a put that tags the key again
    // meanwhile keeps its membership.
    let mut stale: Vec<(String, Expect)> = Vec::new();
    let mut tagged: Vec<(String, Expect)> = Vec::new();
    let (live, expired): (Vec<_>, Vec<_>) = members.into_iter().partition(|(_, s)| *s >= now);
    stale.extend(expired.into_iter().map(|(m, _)| (m, Expect::Absent)));
    for chunk in live.chunks(TAG_CHECK_BATCH) {
        let l2: Vec<String> = chunk.iter().map(|(k, _)| l2_key(ns, k)).collect();
        let values = inner.store.get_many(&l2).await?;
        for ((key, _), value) in chunk.iter().zip(values) {
            match value {
                Some(v)
                    if Entry::decode(&v.value).is_some_and(|e| e.tags.iter().any(|t| t == tag)) =>
                {
                    tagged.push((key.clone(), Expect::Version(v.version)));
                }
                Some(v) => stale.push((key.clone(), Expect::Version(v.version))),
                None => stale.push((key.clone(), Expect::Absent)),
            }
        }
    }
    drop_local(inner, ns, Op::Tag, tag).await;
    let n = delete_expecting(inner, ns, &tagged, Some(&tk), false)
        .await?
        .len() as u64;
    // Stale memberships: dropped a chunk per transaction, or key by key when a value changed.
    for chunk in stale.chunks(DELETE_BATCH) {
        let drop = |keys: &[(String, Expect)]| {
            let mut txn = Txn::new();
            for (key, expect) in keys {
                txn = txn.check(l2_key(ns, key), *expect);
            }
            txn.zrem(&tk, keys.iter().map(|(k, _)| k.clone()).collect())
        };
        if chunk.len() > 1 && matches!(inner.store.txn(&drop(chunk)).await?, TxnOutcome::Committed)
        {
            continue;
        }
        for one in chunk {
            inner.store.txn(&drop(std::slice::from_ref(one))).await?;
        }
    }
    announce(inner, ns, Op::Tag, tag).await?;
    Ok(n)
}

/// Applies other nodes' invalidations to this node's L1 until shutdown. A lost subscription
/// (store restart) is re-established after a pause.
pub(super) fn spawn_listener(inner: Arc<Inner>) {
    let shutdown = inner.shutdown.clone();
    let tasks = inner.tasks.clone();
    tasks.spawn(
        async move {
            // Failed attempts in a row: the first is logged, then one a minute.
            let mut failed = 0u64;
            let mut lost = false;
            let incoherent = |reason: String| {
                inner.coherent.store(false, Ordering::Release);
                *inner.incoherent_reason.lock().unwrap() = Some(reason);
            };
            loop {
                let sub = tokio::select! {
                    () = shutdown.cancelled() => return,
                    s = inner.store.subscribe(CHANNEL) => s,
                };
                match sub {
                    Ok(mut stream) => {
                        if failed > 0 {
                            tracing::info!("subscribed to cache invalidations again");
                        }
                        if lost {
                            // Whatever was published while not subscribed is gone.
                            apply(&inner, &Bytes::new()).await;
                        }
                        *inner.incoherent_reason.lock().unwrap() = None;
                        inner.coherent.store(true, Ordering::Release);
                        failed = 0;
                        loop {
                            let msg = tokio::select! {
                                () = shutdown.cancelled() => return,
                                m = stream.next() => m,
                            };
                            let Some(raw) = msg else { break };
                            apply(&inner, &raw).await;
                        }
                        lost = true;
                        incoherent("the subscription to invalidations was lost; subscribing again".into());
                    }
                    Err(e) => {
                        incoherent(format!("not subscribed to other nodes' invalidations: {e}"));
                        if failed.is_multiple_of(60) {
                            tracing::warn!(error = %e, attempts = failed + 1, "failed to subscribe to cache invalidations (other nodes' writes would not reach this node's L1): reads go to the store, L1 only serves while the store fails; retrying every second");
                        } else {
                            tracing::debug!(error = %e, "still failing to subscribe to cache invalidations");
                        }
                        failed += 1;
                        // Even the first attempt: another node may have invalidated meanwhile.
                        lost = true;
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        .instrument(tracing::info_span!("cache_invalidation_listener")),
    );
}

async fn apply(inner: &Inner, raw: &Bytes) {
    if raw.is_empty() {
        // The store's pub/sub reconnected: invalidations sent meanwhile were lost, so no L1
        // entry can be trusted any more (it would be served stale for up to `l1_ttl`).
        inner.epochs.bump_all();
        inner.l1.invalidate_all();
        tracing::info!(
            "cache invalidations may have been missed while the store's pub/sub reconnected; L1 cleared"
        );
        return;
    }
    let Ok(msg) = serde_json::from_slice::<Message>(raw) else {
        tracing::debug!("ignoring a malformed cache invalidation message");
        return;
    };
    if msg.node == inner.node {
        return;
    }
    let n = drop_local(inner, &msg.ns, msg.op, &msg.arg).await;
    inner.counters.invalidations.fetch_add(n, Ordering::Relaxed);
    if matches!(msg.op, Op::Key) {
        // Another node stored (or deleted) the key: this node's callers waiting for their own
        // loader read again now (and find the other node's value in L2) instead of waiting
        // out the lease. The local loader's put, if it comes, just stores again.
        inner.fills.release(&msg.ns, &msg.arg);
    }
}
