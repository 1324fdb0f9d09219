//! The conformance cases: each written once against `&Store`, run against every backend.
//!
//! Every case names its keys `herd:{<prefix>-<case>}:<name>` so a case's keys share one hash tag
//! (one Redis Cluster slot) and backends that share a server never see each other's keys.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herd_store::{
    Backend, Expect, Gcra, GcraDecision, Store, StoreError, Txn, TxnOutcome, Unreliable, Written,
};

/// Sleeps used to let TTLs run out: far past the TTLs below, so machine speed never decides.
const TTL: Duration = Duration::from_millis(300);
const PAST_TTL: Duration = Duration::from_millis(1500);

fn k(p: &str, case: &str, name: &str) -> String {
    format!("herd:{{{p}-{case}}}:{name}")
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Runs every case in turn (one server per backend per test binary keeps the suite fast).
pub async fn run_all(store: &Store, p: &str) {
    macro_rules! case {
        ($f:ident) => {{
            eprintln!("[{p}] case {}", stringify!($f));
            $f(store, p).await;
        }};
    }
    case!(versions_and_cas);
    case!(ttl_expiry_and_touch);
    case!(get_many);
    case!(incr_concurrent_and_types);
    case!(acquire_exclusive_and_fenced);
    case!(zsets_order_and_ties);
    case!(zmove_exactly_once);
    case!(txn_all_or_nothing);
    case!(txn_concurrent_cas);
    case!(gcra_allow_deny_retry);
    case!(gcra_concurrent_admits_the_burst_exactly);
    case!(pubsub_delivery);
    case!(store_clock);
    case!(wrong_types);
    case!(bad_arguments);
    case!(unreliable_knobs);
    eprintln!("[{p}] case queue_steps");
    super::queue_cases::queue_steps(store, p).await;
    eprintln!("[{p}] case queue_adds");
    super::queue_cases::queue_adds(store, p).await;
    eprintln!("[{p}] case queue_headers");
    super::queue_cases::queue_headers(store, p).await;
    eprintln!("[{p}] case cancelled_calls");
    super::cancel_cases::cancelled_calls(store, p).await;
}

async fn store_clock(s: &Store, _p: &str) {
    // The servers run on this machine: their clock is this machine's, give or take a round
    // trip; and it moves forward.
    let local = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let first = s.time_ms().await.unwrap();
    assert!((first - local()).abs() < 2_000, "{first} vs {}", local());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = s.time_ms().await.unwrap();
    assert!(second >= first + 15, "{first} then {second}");
}

async fn versions_and_cas(s: &Store, p: &str) {
    let key = k(p, "cas", "a");
    assert_eq!(s.get(&key).await.unwrap(), None);
    assert_eq!(
        s.put(&key, b("v1"), Expect::Any, None).await.unwrap(),
        Written::Ok(1)
    );
    assert_eq!(
        s.put(&key, b("v2"), Expect::Any, None).await.unwrap(),
        Written::Ok(2)
    );
    let got = s.get(&key).await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (b("v2"), 2));
    assert_eq!(
        s.put(&key, b("x"), Expect::Absent, None).await.unwrap(),
        Written::Conflict(Some(2))
    );
    assert_eq!(
        s.put(&key, b("x"), Expect::Version(1), None).await.unwrap(),
        Written::Conflict(Some(2))
    );
    assert_eq!(
        s.put(&key, b("v3"), Expect::Version(2), None)
            .await
            .unwrap(),
        Written::Ok(3)
    );
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, b("v3"));
    assert!(!s.delete(&key, Expect::Version(2)).await.unwrap());
    assert!(!s.delete(&key, Expect::Absent).await.unwrap());
    assert!(s.delete(&key, Expect::Version(3)).await.unwrap());
    assert_eq!(s.get(&key).await.unwrap(), None);
    assert_eq!(
        s.put(&key, b("x"), Expect::Version(1), None).await.unwrap(),
        Written::Conflict(None)
    );
    // A deleted key starts again at version 1.
    assert_eq!(
        s.put(&key, b("again"), Expect::Absent, None).await.unwrap(),
        Written::Ok(1)
    );
    assert!(s.delete(&key, Expect::Any).await.unwrap());
    assert!(!s.delete(&key, Expect::Any).await.unwrap());
    // Binary values survive as they are (Redis stores them behind a version prefix).
    let bin = Bytes::from(vec![0u8, 255, 1, 0, 7]);
    s.put(&key, bin.clone(), Expect::Any, None).await.unwrap();
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, bin);
    s.put(&key, Bytes::new(), Expect::Any, None).await.unwrap();
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, Bytes::new());
}

async fn ttl_expiry_and_touch(s: &Store, p: &str) {
    let expiring = k(p, "ttl", "expiring");
    let touched = k(p, "ttl", "touched");
    let cleared = k(p, "ttl", "cleared");
    let counter = k(p, "ttl", "counter");
    let lock = k(p, "ttl", "lock");
    let fence = k(p, "ttl", "fence");
    s.put(&expiring, b("x"), Expect::Any, Some(TTL))
        .await
        .unwrap();
    assert!(s.get(&expiring).await.unwrap().is_some());
    s.put(&touched, b("x"), Expect::Any, Some(TTL))
        .await
        .unwrap();
    assert!(!s
        .touch(&touched, Duration::from_secs(60), Expect::Version(7))
        .await
        .unwrap());
    assert!(s
        .touch(&touched, Duration::from_secs(60), Expect::Version(1))
        .await
        .unwrap());
    assert!(!s
        .touch(
            &k(p, "ttl", "missing"),
            Duration::from_secs(60),
            Expect::Any
        )
        .await
        .unwrap());
    // A rewrite without TTL clears the old expiry.
    s.put(&cleared, b("x"), Expect::Any, Some(TTL))
        .await
        .unwrap();
    s.put(&cleared, b("y"), Expect::Any, None).await.unwrap();
    assert_eq!(s.incr(&counter, 5, Some(TTL)).await.unwrap(), 5);
    let f1 = s
        .acquire(&lock, &fence, b("me"), TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.acquire(&lock, &fence, b("you"), TTL).await.unwrap(), None);
    // The same call again (its answer lost, the client sends it anew): the same fence.
    assert_eq!(
        s.acquire(&lock, &fence, b("me"), TTL).await.unwrap(),
        Some(f1)
    );

    tokio::time::sleep(PAST_TTL).await;

    assert_eq!(
        s.get(&expiring).await.unwrap(),
        None,
        "expired key must read as absent"
    );
    assert_eq!(
        s.put(&expiring, b("new"), Expect::Absent, None)
            .await
            .unwrap(),
        Written::Ok(1)
    );
    let t = s
        .get(&touched)
        .await
        .unwrap()
        .expect("touch extended the TTL");
    assert_eq!(t.version, 1, "touch keeps the version");
    assert_eq!(s.get(&cleared).await.unwrap().unwrap().version, 2);
    assert_eq!(
        s.incr(&counter, 1, None).await.unwrap(),
        1,
        "an expired counter starts from 0"
    );
    let f2 = s
        .acquire(&lock, &fence, b("you"), TTL)
        .await
        .unwrap()
        .expect("an expired lock is free");
    assert!(f2 > f1);
}

async fn get_many(s: &Store, p: &str) {
    let keys: Vec<String> = ["a", "b", "c"].iter().map(|n| k(p, "many", n)).collect();
    s.put(&keys[0], b("A"), Expect::Any, None).await.unwrap();
    s.put(&keys[2], b("C"), Expect::Any, None).await.unwrap();
    s.put(&keys[2], b("C2"), Expect::Any, None).await.unwrap();
    let got = s.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].as_ref().map(|v| (v.value.clone(), v.version)),
        Some((b("A"), 1))
    );
    assert_eq!(got[1], None);
    assert_eq!(
        got[2].as_ref().map(|v| (v.value.clone(), v.version)),
        Some((b("C2"), 2))
    );
    assert!(s.get_many(&[]).await.unwrap().is_empty());
}

async fn incr_concurrent_and_types(s: &Store, p: &str) {
    let key = k(p, "incr", "n");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.incr(&key, 1, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.incr(&key, 0, None).await.unwrap(), 500);
    assert_eq!(s.incr(&key, -505, None).await.unwrap(), -5);
    let value = k(p, "incr", "value");
    s.put(&value, b("not a number"), Expect::Any, None)
        .await
        .unwrap();
    assert!(matches!(
        s.incr(&value, 1, None).await,
        Err(StoreError::WrongType { .. })
    ));
    assert!(matches!(
        s.get(&key).await,
        Err(StoreError::WrongType { .. })
    ));
    assert!(
        s.delete(&key, Expect::Any).await.unwrap(),
        "delete(Any) removes a counter"
    );
    assert_eq!(s.incr(&key, 2, None).await.unwrap(), 2);
}

async fn acquire_exclusive_and_fenced(s: &Store, p: &str) {
    let lock = k(p, "lock", "l");
    let fence = k(p, "lock", "fence");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (s, lock, fence) = (s.clone(), lock.clone(), fence.clone());
        tasks.push(tokio::spawn(async move {
            s.acquire(
                &lock,
                &fence,
                b(&format!("owner-{i}")),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(f) = t.await.unwrap() {
            winners.push(f);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of 20 concurrent acquirers wins: {winners:?}"
    );
    let holder = s.get(&lock).await.unwrap().unwrap();
    assert!(holder.value.starts_with(b"owner-"));
    // Release by compare-and-delete, re-acquire: fences strictly increase, and the lock's
    // version is its fence, so a stale holder's version check never matches a new holder.
    let mut last = winners[0];
    for _ in 0..5 {
        let held = s.get(&lock).await.unwrap().unwrap();
        assert_eq!(held.version, last, "the lock's version is its fence");
        assert!(!s.delete(&lock, Expect::Version(last - 1)).await.unwrap());
        assert!(s
            .delete(&lock, Expect::Version(held.version))
            .await
            .unwrap());
        let f = s
            .acquire(&lock, &fence, b("again"), Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert!(f > last, "fence {f} after {last}");
        last = f;
    }
}

async fn zsets_order_and_ties(s: &Store, p: &str) {
    let z = k(p, "z", "set");
    let m = |v: &[(&str, f64)]| {
        v.iter()
            .map(|(n, s)| ((*n).to_owned(), *s))
            .collect::<Vec<_>>()
    };
    s.zadd(
        &z,
        &m(&[("b", 2.0), ("a", 2.0), ("c", 1.0), ("e", 3.5), ("d", -1.5)]),
    )
    .await
    .unwrap();
    let all = s
        .zrange_by_score(&z, f64::NEG_INFINITY, f64::INFINITY, 100)
        .await
        .unwrap();
    assert_eq!(
        all,
        m(&[("d", -1.5), ("c", 1.0), ("a", 2.0), ("b", 2.0), ("e", 3.5)])
    );
    assert_eq!(
        s.zrange_by_score(&z, 1.0, 2.0, 100).await.unwrap(),
        m(&[("c", 1.0), ("a", 2.0), ("b", 2.0)])
    );
    assert_eq!(
        s.zrange_by_score(&z, 1.0, 2.0, 2).await.unwrap(),
        m(&[("c", 1.0), ("a", 2.0)])
    );
    assert!(s
        .zrange_by_score(&z, 10.0, 20.0, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.zcard(&z).await.unwrap(), 5);
    assert_eq!(s.zcount(&z, 1.0, 2.0).await.unwrap(), 3);
    assert_eq!(s.zcount(&z, f64::NEG_INFINITY, 0.0).await.unwrap(), 1);
    assert_eq!(s.zcount(&z, 2.0, f64::INFINITY).await.unwrap(), 3);
    assert_eq!(s.zcount(&z, 3.0, 1.0).await.unwrap(), 0);
    assert_eq!(s.zcount(&k(p, "z", "none"), 0.0, 9.0).await.unwrap(), 0);
    assert_eq!(s.zscore(&z, "e").await.unwrap(), Some(3.5));
    assert_eq!(s.zscore(&z, "nope").await.unwrap(), None);
    // Re-scoring moves a member; it is not added twice.
    s.zadd(&z, &m(&[("d", 10.0)])).await.unwrap();
    assert_eq!(s.zcard(&z).await.unwrap(), 5);
    assert_eq!(
        s.zrange_by_score(&z, 5.0, f64::INFINITY, 10).await.unwrap(),
        m(&[("d", 10.0)])
    );
    assert_eq!(
        s.zrem(&z, &["a".into(), "zz".into(), "b".into()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.zcard(&z).await.unwrap(), 3);
    assert_eq!(s.zcard(&k(p, "z", "empty")).await.unwrap(), 0);
    assert!(s
        .zrange_by_score(&k(p, "z", "empty"), 0.0, 1.0, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn zmove_exactly_once(s: &Store, p: &str) {
    let src = k(p, "zmove", "wait");
    let dst = k(p, "zmove", "active");
    let members: Vec<(String, f64)> = (0..200)
        .map(|i| (format!("job-{i:03}"), f64::from(i)))
        .collect();
    s.zadd(&src, &members).await.unwrap();
    // max_score is respected and the lowest go first.
    let first = s.zmove(&src, &dst, 1.0, 10, 1000.0).await.unwrap();
    assert_eq!(
        first,
        vec![("job-000".to_owned(), 0.0), ("job-001".to_owned(), 1.0)]
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, src, dst) = (s.clone(), src.clone(), dst.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.zmove(&src, &dst, f64::INFINITY, 3, 1000.0).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut seen: HashSet<String> = first.into_iter().map(|(m, _)| m).collect();
    for t in tasks {
        for (m, old) in t.await.unwrap() {
            assert_eq!(
                format!("job-{:03}", old as i64),
                m,
                "old score returned with the member"
            );
            assert!(seen.insert(m.clone()), "{m} moved twice");
        }
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(s.zcard(&src).await.unwrap(), 0);
    assert_eq!(s.zcard(&dst).await.unwrap(), 200);
    assert_eq!(s.zscore(&dst, "job-150").await.unwrap(), Some(1000.0));
}

async fn txn_all_or_nothing(s: &Store, p: &str) {
    let rec = k(p, "txn", "rec");
    let (from, to) = (k(p, "txn", "from"), k(p, "txn", "to"));
    s.put(&rec, b("v1"), Expect::Any, None).await.unwrap();
    s.zadd(&from, &[("m#0".into(), 1.0)]).await.unwrap();
    // Checks hold: the record is rewritten and the member moves, together.
    let step = Txn::new()
        .check(&rec, Expect::Version(1))
        .put(&rec, b("v2"), None)
        .zadd(&to, vec![("m#1".into(), 5.0)])
        .zrem(&from, vec!["m#0".into()]);
    assert_eq!(s.txn(&step).await.unwrap(), TxnOutcome::Committed);
    let got = s.get(&rec).await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (b("v2"), 2));
    assert_eq!(s.zscore(&to, "m#1").await.unwrap(), Some(5.0));
    assert_eq!(s.zcard(&from).await.unwrap(), 0);
    // The same step again: its check fails and nothing is written.
    let stale = Txn::new()
        .check(&rec, Expect::Version(1))
        .put(&rec, b("v3"), None)
        .zadd(&from, vec![("late".into(), 1.0)]);
    assert_eq!(
        s.txn(&stale).await.unwrap(),
        TxnOutcome::Conflict {
            check: 0,
            current: Some(2)
        }
    );
    assert_eq!(s.get(&rec).await.unwrap().unwrap().value, b("v2"));
    assert_eq!(
        s.zcard(&from).await.unwrap(),
        0,
        "a refused txn wrote nothing"
    );
    // Absent checks; the second check of two fails.
    let fresh = k(p, "txn", "fresh");
    let create = Txn::new()
        .check(&fresh, Expect::Absent)
        .put(&fresh, b("new"), None);
    assert_eq!(s.txn(&create).await.unwrap(), TxnOutcome::Committed);
    let twice = Txn::new()
        .check(&rec, Expect::Any)
        .check(&fresh, Expect::Absent)
        .delete(&rec);
    assert_eq!(
        s.txn(&twice).await.unwrap(),
        TxnOutcome::Conflict {
            check: 1,
            current: Some(1)
        }
    );
    assert!(s.get(&rec).await.unwrap().is_some());
    // Delete, then a put of the same key starts again at version 1.
    let redo = Txn::new()
        .delete(&fresh)
        .put(&fresh, b("again"), Some(Duration::from_secs(60)));
    assert_eq!(s.txn(&redo).await.unwrap(), TxnOutcome::Committed);
    assert_eq!(s.get(&fresh).await.unwrap().unwrap().version, 1);
    // Wrong types fail before any write: a zadd listed first is not applied.
    let counter = k(p, "txn", "counter");
    s.incr(&counter, 1, None).await.unwrap();
    let bad = Txn::new()
        .zadd(&from, vec![("never".into(), 1.0)])
        .put(&counter, b("x"), None);
    assert!(matches!(
        s.txn(&bad).await,
        Err(StoreError::WrongType { .. })
    ));
    let bad = Txn::new()
        .check(&to, Expect::Any)
        .zadd(&from, vec![("never".into(), 1.0)]);
    assert!(matches!(
        s.txn(&bad).await,
        Err(StoreError::WrongType { .. })
    ));
    let bad = Txn::new()
        .zadd(&from, vec![("never".into(), 1.0)])
        .zrem(&rec, vec!["m".into()]);
    assert!(matches!(
        s.txn(&bad).await,
        Err(StoreError::WrongType { .. })
    ));
    assert_eq!(
        s.zcard(&from).await.unwrap(),
        0,
        "refused txns wrote nothing"
    );
    assert_eq!(s.incr(&counter, 0, None).await.unwrap(), 1);
    // Refused up front: one key as value and set; a bad score.
    let clash = Txn::new()
        .put(&fresh, b("x"), None)
        .zadd(&fresh, vec![("m".into(), 1.0)]);
    assert!(matches!(s.txn(&clash).await, Err(StoreError::Invalid(_))));
    let nan = Txn::new().zadd(&from, vec![("m".into(), f64::NAN)]);
    assert!(matches!(s.txn(&nan).await, Err(StoreError::Invalid(_))));
    // Large member lists in one step.
    let many: Vec<(String, f64)> = (0..1000)
        .map(|i| (format!("m{i:04}"), f64::from(i)))
        .collect();
    let names: Vec<String> = many.iter().take(600).map(|(m, _)| m.clone()).collect();
    let big = Txn::new().zadd(&from, many).zrem(&from, names);
    assert_eq!(s.txn(&big).await.unwrap(), TxnOutcome::Committed);
    assert_eq!(s.zcard(&from).await.unwrap(), 400);
    assert_eq!(s.txn(&Txn::new()).await.unwrap(), TxnOutcome::Committed);
}

/// Read, then write under a version check, from many tasks: no increment is lost and every
/// committed step's member lands.
async fn txn_concurrent_cas(s: &Store, p: &str) {
    let rec = k(p, "txncas", "n");
    let set = k(p, "txncas", "done");
    s.put(&rec, b("0"), Expect::Any, None).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..10 {
        let (s, rec, set) = (s.clone(), rec.clone(), set.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                loop {
                    let cur = s.get(&rec).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    let step = Txn::new()
                        .check(&rec, Expect::Version(cur.version))
                        .put(&rec, b(&(n + 1).to_string()), None)
                        .zadd(&set, vec![(format!("{t}-{i}"), 0.0)]);
                    if s.txn(&step).await.unwrap() == TxnOutcome::Committed {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = s.get(&rec).await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (b("200"), 201));
    assert_eq!(s.zcard(&set).await.unwrap(), 200);
}

async fn gcra_allow_deny_retry(s: &Store, p: &str) {
    let key = k(p, "gcra", "client");
    // 1 r/s with burst 2: three requests pass at once, the fourth waits. Intervals are seconds
    // long so how fast this machine runs the calls cannot change the outcome.
    let params = Gcra {
        emission_interval: Duration::from_secs(1),
        burst_tolerance: Duration::from_secs(2),
    };
    let mut delays = Vec::new();
    for _ in 0..3 {
        match s.gcra(&key, params).await.unwrap() {
            GcraDecision::Allow { delay } => delays.push(delay),
            d => panic!("expected allow, got {d:?}"),
        }
    }
    assert_eq!(delays[0], Duration::ZERO);
    assert!(
        delays[1] > Duration::from_millis(500) && delays[1] <= Duration::from_secs(1),
        "{delays:?}"
    );
    assert!(
        delays[2] > Duration::from_millis(1500) && delays[2] <= Duration::from_secs(2),
        "{delays:?}"
    );
    match s.gcra(&key, params).await.unwrap() {
        GcraDecision::Deny { retry_after } => {
            assert!(
                retry_after > Duration::from_millis(500) && retry_after <= Duration::from_secs(1),
                "{retry_after:?}"
            );
        }
        d => panic!("expected deny, got {d:?}"),
    }
    // Another key is not limited by this one.
    assert!(matches!(
        s.gcra(&k(p, "gcra", "other"), params).await.unwrap(),
        GcraDecision::Allow { .. }
    ));
}

/// Forty calls at once on one key (on Redis, forty scripts in flight on the shared
/// connection; across herd nodes, the gateway's `shared = true` zones): a non-atomic
/// read-then-write would admit more than the burst.
async fn gcra_concurrent_admits_the_burst_exactly(s: &Store, p: &str) {
    let key = k(p, "gcra", "burst");
    // 1 r/min with burst 9: ten pass, and the minute-long interval keeps any call from
    // freeing a slot however slowly this machine runs them.
    let params = Gcra {
        emission_interval: Duration::from_secs(60),
        burst_tolerance: Duration::from_secs(60 * 9),
    };
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(
            async move { s.gcra(&key, params).await.unwrap() },
        ));
    }
    let mut allowed = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), GcraDecision::Allow { .. }) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "burst 9 admits ten requests at once, no more");
}

async fn pubsub_delivery(s: &Store, p: &str) {
    let ch = k(p, "pubsub", "invalidate");
    let mut a = s.subscribe(&ch).await.unwrap();
    let mut b2 = s.subscribe(&ch).await.unwrap();
    let mut other = s.subscribe(&k(p, "pubsub", "other")).await.unwrap();
    for i in 0..3 {
        s.publish(&ch, b(&format!("m{i}"))).await.unwrap();
    }
    for sub in [&mut a, &mut b2] {
        for i in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("message within 10 s");
            assert_eq!(got, Some(b(&format!("m{i}"))));
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.next())
            .await
            .is_err(),
        "other channel got nothing"
    );
}

async fn wrong_types(s: &Store, p: &str) {
    let wrong = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::WrongType { .. })), "{r:?}")
    };
    let value = k(p, "types", "value");
    let set = k(p, "types", "set");
    s.put(&value, b("v"), Expect::Any, None).await.unwrap();
    s.zadd(&set, &[("m".into(), 1.0)]).await.unwrap();
    wrong(s.zadd(&value, &[("m".into(), 1.0)]).await);
    wrong(s.zcard(&value).await.map(drop));
    wrong(s.zrange_by_score(&value, 0.0, 1.0, 10).await.map(drop));
    wrong(s.zmove(&set, &value, 10.0, 1, 1.0).await.map(drop));
    assert_eq!(
        s.zcard(&set).await.unwrap(),
        1,
        "a refused zmove moved nothing"
    );
    wrong(s.put(&set, b("v"), Expect::Any, None).await.map(drop));
    wrong(s.get(&set).await.map(drop));
    wrong(s.incr(&set, 1, None).await.map(drop));
    assert_eq!(
        s.acquire(&set, &k(p, "types", "fence"), b("x"), TTL)
            .await
            .unwrap(),
        None,
        "a key holding anything is held"
    );
    // delete(Any) removes whatever the key holds.
    assert!(s.delete(&set, Expect::Any).await.unwrap());
    assert_eq!(s.zcard(&set).await.unwrap(), 0);
    assert_eq!(
        s.put(&set, b("now a value"), Expect::Absent, None)
            .await
            .unwrap(),
        Written::Ok(1)
    );
}

async fn bad_arguments(s: &Store, p: &str) {
    let key = k(p, "bad", "k");
    assert!(matches!(
        s.put(&key, b("x"), Expect::Any, Some(Duration::ZERO)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.zadd(&key, &[("m".into(), f64::NAN)]).await,
        Err(StoreError::Invalid(_))
    ));
    let zero = Gcra {
        emission_interval: Duration::ZERO,
        burst_tolerance: Duration::ZERO,
    };
    assert!(matches!(
        s.gcra(&key, zero).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn unreliable_knobs(s: &Store, p: &str) {
    let key = k(p, "unreliable", "k");
    let u = Unreliable::wrap(s.clone());
    let knobs = u.unreliable().unwrap();
    u.put(&key, b("x"), Expect::Any, None).await.unwrap();
    knobs.fail_next(2);
    assert!(matches!(u.get(&key).await, Err(StoreError::Injected(_))));
    assert!(matches!(u.get(&key).await, Err(StoreError::Injected(_))));
    assert!(u.get(&key).await.unwrap().is_some());
    knobs.set_down(true);
    let err = u.get(&key).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert_eq!(u.status().state, "down");
    knobs.set_down(false);
    assert_eq!(u.status().state, "ok");
    // A seeded probability fails the same calls every run, and about as often as asked.
    let run = |seed| {
        let u = Unreliable::wrap(s.clone());
        let key = key.clone();
        async move {
            u.unreliable().unwrap().fail_with_probability(0.3, seed);
            let mut pattern = Vec::new();
            for _ in 0..100 {
                pattern.push(u.get(&key).await.is_err());
            }
            pattern
        }
    };
    let (x, y) = (run(7).await, run(7).await);
    assert_eq!(x, y, "same seed, same failures");
    let fails = x.iter().filter(|f| **f).count();
    assert!(
        (10..=60).contains(&fails),
        "{fails} of 100 failed at p = 0.3"
    );
    // Latency is added (a lower bound only: never assert how fast a machine is).
    knobs.set_latency(Duration::from_millis(50));
    let t = std::time::Instant::now();
    u.get(&key).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(knobs.injected(), 3);
}
