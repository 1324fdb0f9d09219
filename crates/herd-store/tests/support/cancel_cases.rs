//! Cancellation: a caller cancels a call by dropping its future (a timeout, a `select!`, a
//! client that went away). A cancelled write may or may not have been applied (a Redis command
//! may already be on the wire, an embedded write already queued for the next commit), but never
//! in part, and the store goes on answering.

use std::future::Future;
use std::pin::pin;

use bytes::Bytes;
use herd_store::{Backend, Expect, Store, Txn, TxnOutcome};

fn k(p: &str, name: &str) -> String {
    format!("herd:{{{p}-cancel}}:{name}")
}

/// Runs `fut` to the end when `cancel` is false; otherwise polls it once (and, for odd `i`,
/// lets the runtime run other tasks first, so the call gets further) and drops it.
async fn maybe_cancel<F: Future>(fut: F, cancel: bool, i: u64) -> Option<F::Output> {
    if !cancel {
        return Some(fut.await);
    }
    let mut fut = pin!(fut);
    if i % 2 == 1 {
        tokio::task::yield_now().await;
    }
    match futures_util::poll!(fut.as_mut()) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

pub async fn cancelled_calls(s: &Store, p: &str) {
    let counter = k(p, "n");
    let total = 200u64;
    let (mut finished, mut cancelled) = (0u64, 0u64);
    for i in 0..total {
        match maybe_cancel(s.incr(&counter, 1, None), i % 3 != 0, i).await {
            Some(r) => {
                r.unwrap();
                finished += 1;
            }
            None => cancelled += 1,
        }
    }
    assert!(
        cancelled > 0,
        "no call was cancelled: the case tests nothing"
    );
    // Later calls see every cancelled increment that was applied, whole (one connection or one
    // writer, in order).
    let n = u64::try_from(s.incr(&counter, 0, None).await.unwrap()).unwrap();
    assert!(
        (finished..=total).contains(&n),
        "{finished} <= {n} <= {total}"
    );

    // A cancelled transaction is all or nothing.
    let pairs = 60u64;
    let mut committed = 0;
    for i in 0..pairs {
        let txn = Txn::new()
            .put(k(p, &format!("a{i}")), Bytes::from(format!("v{i}")), None)
            .put(k(p, &format!("b{i}")), Bytes::from(format!("v{i}")), None);
        if let Some(r) = maybe_cancel(s.txn(&txn), i % 3 != 0, i).await {
            assert_eq!(r.unwrap(), TxnOutcome::Committed);
            committed += 1;
        }
    }
    // A write after them is a barrier: what was queued before it is applied by now.
    s.incr(&k(p, "barrier"), 1, None).await.unwrap();
    let mut present = 0;
    for i in 0..pairs {
        // One snapshot (embedded) or one MGET (Redis) per pair.
        let keys = [k(p, &format!("a{i}")), k(p, &format!("b{i}"))];
        let got = s.get_many(&keys).await.unwrap();
        assert_eq!(
            got[0].is_some(),
            got[1].is_some(),
            "pair {i}: half a transaction"
        );
        if let (Some(a), Some(b)) = (&got[0], &got[1]) {
            assert_eq!(a.value, b.value);
            present += 1;
        }
    }
    assert!(present >= committed, "{present} >= {committed}");

    // The store still answers normally.
    let key = k(p, "after");
    s.put(&key, Bytes::from_static(b"ok"), Expect::Absent, None)
        .await
        .unwrap();
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, "ok");
}
