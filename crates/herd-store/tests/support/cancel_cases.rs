//! Cancellation: a caller cancels a call by dropping its future (a timeout, a `select!`, a
//! client that went away). A cancelled write may or may not have been applied (a Redis command
//! may already be on the wire, an embedded write already queued for the next commit), but never
//! in part, and the store goes on answering.

use std::time::Duration;

use bytes::Bytes;
use herd_store::{Backend, Store, Txn, TxnOutcome};

fn k(p: &str, name: &str) -> String {
    format!("herd:{{{p}-cancel}}:{name}")
}

/// Cut after the first poll (zero) or after a few microseconds: some calls finish, some don't.
fn budget(i: u64) -> Duration {
    Duration::from_micros((i % 5) * 30)
}

pub async fn cancelled_calls(s: &Store, p: &str) {
    let counter = k(p, "n");
    let total = 200u64;
    let mut finished = 0u64;
    for i in 0..total {
        if let Ok(r) = tokio::time::timeout(budget(i), s.incr(&counter, 1, None)).await {
            r.unwrap();
            finished += 1;
        }
    }
    assert!(
        finished < total,
        "no call was cancelled: the case tests nothing"
    );
    // Later calls see every cancelled increment that was applied, whole.
    let n = u64::try_from(s.incr(&counter, 0, None).await.unwrap()).unwrap();
    assert!(
        (finished..=total).contains(&n),
        "{finished} <= {n} <= {total}"
    );

    // A cancelled transaction is all or nothing.
    let pairs = 50u64;
    let mut committed = 0;
    for i in 0..pairs {
        let txn = Txn::new()
            .put(k(p, &format!("a{i}")), Bytes::from(format!("v{i}")), None)
            .put(k(p, &format!("b{i}")), Bytes::from(format!("v{i}")), None);
        if let Ok(r) = tokio::time::timeout(budget(i), s.txn(&txn)).await {
            assert_eq!(r.unwrap(), TxnOutcome::Committed);
            committed += 1;
        }
    }
    let mut present = 0;
    for i in 0..pairs {
        let a = s.get(&k(p, &format!("a{i}"))).await.unwrap();
        let b = s.get(&k(p, &format!("b{i}"))).await.unwrap();
        assert_eq!(a.is_some(), b.is_some(), "pair {i}: half a transaction");
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(a.value, b.value);
            present += 1;
        }
    }
    assert!(present >= committed, "{present} >= {committed}");

    // The store still answers normally.
    let key = k(p, "after");
    s.put(
        &key,
        Bytes::from_static(b"ok"),
        herd_store::Expect::Absent,
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, "ok");
}
