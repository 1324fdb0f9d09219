//! Jobs whose records an older herd wrote (the whole record as one JSON object) are still
//! reserved and acked: the queue steps leave them to the general path, which rewrites each in
//! the current format. And a record nothing can read does not stop the queue.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use herd_services::queue::{JobRecord, Keep, NewJob, State};
use herd_services::{ManualClock, ServicesConfig};
use herd_store::{Backend as _, Expect};
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

fn old_record(id: &str, state: State, generation: u64) -> JobRecord {
    JobRecord {
        id: id.into(),
        name: format!("{id}-name"),
        data: json!({"from": "an older herd"}),
        attempts: 1,
        backoff: None,
        priority: 0,
        seq: 1,
        keep_completed: Keep::ALL,
        keep_failed: Keep::ALL,
        lifo: false,
        state,
        generation,
        added_ms: T0 - 1000,
        due_ms: T0 - 1000,
        attempt: 0,
        stalled: 0,
        lease_token: None,
        lease_until_ms: 0,
        finished_ms: None,
        failed_reason: None,
        errors: vec![],
        result: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_an_older_herd_are_reserved_and_acked() {
    let dir = TempDir::new("upgrade");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(&store, ServicesConfig::default(), clock.clone());
    let q = &node.services.queues;
    let key = |id: &str| format!("herd:{{q:u}}:job:{id}");
    let put = |rec: JobRecord| {
        let store = Arc::clone(&store);
        async move {
            let raw = Bytes::from(serde_json::to_vec(&rec).unwrap());
            store
                .put(&key(&rec.id), raw, Expect::Absent, None)
                .await
                .unwrap();
        }
    };
    // A waiting job and a leased one, as an older herd left them.
    let waiting = old_record("old-w", State::Waiting, 0);
    let score = waiting.waiting_score();
    put(waiting).await;
    store
        .zadd("herd:{q:u}:waiting", &[("old-w#0".into(), score)])
        .await
        .unwrap();
    let mut active = old_record("old-a", State::Active, 2);
    active.attempt = 1;
    active.lease_token = Some("tok-old".into());
    active.lease_until_ms = T0 + 30_000;
    put(active).await;
    store
        .zadd(
            "herd:{q:u}:active",
            &[("old-a#2".into(), (T0 + 30_000) as f64)],
        )
        .await
        .unwrap();

    // The leased one's ack: a wrong token is refused, the right one completes it.
    let err = q.ack("u", "old-a", "nope", None).await.unwrap_err();
    assert!(err.to_string().contains("lease"), "{err}");
    q.ack("u", "old-a", "tok-old", Some(json!({"r": 1})))
        .await
        .unwrap();
    let done = q.get("u", "old-a").await.unwrap();
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.result, Some(json!({"r": 1})));
    assert_eq!(done.name, "old-a-name");
    let raw = store.get(&key("old-a")).await.unwrap().unwrap().value;
    assert!(raw.starts_with(b"J1 "), "rewritten in the current format");

    // The waiting one is reserved (through the path that sorts out what a step cannot
    // lease), then acked with the next job leased in the same call.
    let got = q.reserve("u", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].id.as_str(), got[0].attempt), ("old-w", 1));
    assert_eq!(got[0].data, json!({"from": "an older herd"}));
    q.add("u", NewJob::new("new", json!(1))).await.unwrap();
    let next = q
        .ack_and_reserve("u", "old-w", &got[0].lease_token, None, 1, None)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].name, "new");
    let counts = q.counts("u").await.unwrap();
    assert_eq!((counts.completed, counts.active, counts.waiting), (2, 1, 0));
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_does_not_stop_stalled_recovery() {
    let dir = TempDir::new("unreadable");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(&store, ServicesConfig::default(), clock.clone());
    let q = &node.services.queues;
    // A leased job whose body no herd can read, its lease run out first in `active`.
    let raw = Bytes::from_static(b"J1 a 0 1 0 1 0 1000 - - tok\nnot json\n");
    store
        .put("herd:{q:s}:job:broken", raw, Expect::Absent, None)
        .await
        .unwrap();
    store
        .zadd("herd:{q:s}:active", &[("broken#0".into(), 1000.0)])
        .await
        .unwrap();
    // And a healthy job whose worker died.
    q.add("s", NewJob::new("healthy", json!(1))).await.unwrap();
    let first = q.reserve("s", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(first[0].name, "healthy");
    clock.advance(Duration::from_secs(31));
    let again = q.reserve("s", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!((again[0].name.as_str(), again[0].attempt), ("healthy", 2));
    let counts = q.counts("s").await.unwrap();
    assert_eq!(counts.active, 1, "the unreadable one left `active`");
    assert!(
        store.get("herd:{q:s}:job:broken").await.unwrap().is_some(),
        "its record stays for inspection"
    );
    drop(node);
}
