//! One conformance suite, run against every backend (see `support/cases.rs`), plus the
//! backend-specific durability and failure tests.

mod support;

use std::time::Duration;

use bytes::Bytes;
use herd_store::{Backend, Expect, Store, StoreOptions};

async fn embedded(dir: &std::path::Path) -> Store {
    Store::open(&StoreOptions::Embedded {
        path: dir.join("store.redb"),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    support::cases::run_all(&store, "emb").await;
    assert_eq!(store.status().state, "ok");
    store.shutdown().await;
    assert!(store.get("k").await.is_err(), "calls after shutdown fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    store
        .put("herd:a", Bytes::from_static(b"1"), Expect::Any, None)
        .await
        .unwrap();
    store
        .put("herd:a", Bytes::from_static(b"2"), Expect::Any, None)
        .await
        .unwrap();
    store.incr("herd:n", 41, None).await.unwrap();
    store.zadd("herd:z", &[("m".into(), 2.5)]).await.unwrap();
    let mut sub = store.subscribe("ch").await.unwrap();
    store.shutdown().await;
    assert_eq!(
        futures_util::StreamExt::next(&mut sub).await,
        None,
        "shutdown ends subscriptions"
    );
    drop(store);

    let store = embedded(dir.path()).await;
    let a = store.get("herd:a").await.unwrap().unwrap();
    assert_eq!((a.value.as_ref(), a.version), (&b"2"[..], 2));
    assert_eq!(store.incr("herd:n", 1, None).await.unwrap(), 42);
    assert_eq!(store.zscore("herd:z", "m").await.unwrap(), Some(2.5));
    // Dropped without shutdown: a reopen in this process still works (it waits for the close).
    drop(store);
    let store = embedded(dir.path()).await;
    assert!(store.get("herd:a").await.unwrap().is_some());
    store.shutdown().await;
}

/// The child side of `embedded_survives_kill9`: writes keys one by one, printing each key
/// after its write returned, until killed.
#[tokio::test]
async fn embedded_kill9_child() {
    let Ok(path) = std::env::var("HERD_STORE_KILL9_PATH") else {
        return; // only meaningful when started by embedded_survives_kill9
    };
    let store = Store::open(&StoreOptions::Embedded { path: path.into() })
        .await
        .unwrap();
    for i in 0u64.. {
        store
            .put(
                &format!("k{i}"),
                Bytes::from(i.to_string()),
                Expect::Absent,
                None,
            )
            .await
            .unwrap();
        println!("acked {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_kill9() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded_kill9_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HERD_STORE_KILL9_PATH", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u64 = n.parse().unwrap();
            acked = Some(n);
            if n >= 300 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    let acked = acked.expect("the child acknowledged writes");
    let store = embedded(dir.path()).await;
    for i in 0..=acked {
        let v = store.get(&format!("k{i}")).await.unwrap();
        assert_eq!(
            v.map(|v| v.value),
            Some(Bytes::from(i.to_string())),
            "acknowledged write k{i} lost"
        );
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_expired_keys_stay_absent_while_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    store
        .put(
            "herd:gone",
            Bytes::from_static(b"x"),
            Expect::Any,
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    // Let the once-a-second sweeper run a few rounds over the key (its removal itself is checked
    // in the unit test `sweep_removes_only_entries_still_due`): the key must stay absent and be
    // creatable again as a fresh key.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(store.get("herd:gone").await.unwrap(), None);
    assert_eq!(
        store
            .put("herd:gone", Bytes::new(), Expect::Absent, None)
            .await
            .unwrap(),
        herd_store::Written::Ok(1)
    );
    store.shutdown().await;
}
