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
    let Store::Embedded(e) = &store else {
        unreachable!()
    };
    let stats = e.stats();
    assert!(stats.ops > 500 && stats.batches <= stats.ops, "{stats:?}");
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
#[ignore = "the child process of embedded_survives_kill9, which runs it with --ignored"]
async fn embedded_kill9_child() {
    let path = std::env::var("HERD_STORE_KILL9_PATH")
        .expect("run by embedded_survives_kill9, which sets HERD_STORE_KILL9_PATH");
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
            "--ignored",
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

/// The call timeout the Redis tests use: short enough that a dead server is noticed quickly,
/// long enough for a loaded CI machine.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

async fn redis(urls: Vec<String>, cluster: bool) -> Store {
    Store::open(&StoreOptions::Redis {
        urls,
        cluster,
        timeout: REDIS_TIMEOUT,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::RedisServer::start(dir.path(), support::free_port(), false);
    let store = redis(vec![server.url()], false).await;
    support::cases::run_all(&store, "single").await;
    let status = store.status();
    assert_eq!((status.backend, status.state), ("redis", "ok"));
    store.shutdown().await;
    assert!(store.get("k").await.is_err(), "calls after shutdown fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_conformance() {
    let cluster = support::RedisCluster::start();
    let store = redis(cluster.urls(), true).await;
    support::cases::run_all(&store, "cluster").await;
    // Keys of one call in different slots are refused with a hint, before reaching Redis.
    let err = store
        .zmove("herd:{a}:wait", "herd:{b}:active", 1.0, 1, 1.0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, herd_store::StoreError::Invalid(m) if m.contains("hash tag")),
        "{err}"
    );
    let err = store
        .get_many(&["herd:{a}:x".into(), "herd:{b}:y".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, herd_store::StoreError::Invalid(_)));
    let err = store
        .acquire(
            "herd:{a}:lock",
            "herd:{b}:fence",
            Bytes::new(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, herd_store::StoreError::Invalid(_)));
    assert_eq!(store.status().backend, "redis-cluster");
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_kill_and_restart() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let mut server = support::RedisServer::start_with(
        dir.path(),
        support::free_port(),
        false,
        &["--requirepass", "not-shown"],
    );
    let store = redis(
        vec![format!("redis://:not-shown@127.0.0.1:{}", server.port)],
        false,
    )
    .await;
    assert!(
        !store.status().target.contains("not-shown"),
        "no password in status"
    );
    store
        .put("herd:k", Bytes::from_static(b"v"), Expect::Any, None)
        .await
        .unwrap();
    let mut sub = store.subscribe("herd:ch").await.unwrap();

    server.kill();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let err = store.get("herd:k").await.unwrap_err();
        eprintln!("while down: {err} after {:?}", started.elapsed());
        assert!(err.is_retryable(), "{err:?}");
        assert!(
            started.elapsed() < REDIS_TIMEOUT * 2 + Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
    assert_ne!(store.status().state, "ok");
    assert!(store.status().last_error.is_some());

    server.restart();
    // Reconnection happens in the background: poll with a generous deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store
        .put("herd:k2", Bytes::from_static(b"v"), Expect::Any, None)
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "store did not recover within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.get("herd:k").await.unwrap(),
        None,
        "the restarted server kept nothing (no persistence)"
    );
    // A background ping that failed just before the restart may land after the put: poll.
    while store.status().state != "ok" {
        assert!(
            std::time::Instant::now() < deadline,
            "status did not return to ok: {:?}",
            store.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The subscriber reconnects and subscribes again, then tells its subscribers of the gap
    // (an empty message): keep publishing until a message arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut gap = false;
    loop {
        store
            .publish("herd:ch", Bytes::from_static(b"after"))
            .await
            .unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            if got.as_ref().is_some_and(Bytes::is_empty) {
                gap = true;
                continue;
            }
            assert_eq!(got, Some(Bytes::from_static(b"after")));
            assert!(gap, "the gap is announced before the next message");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscription did not come back within 20 s"
        );
    }
    store.shutdown().await;
    assert_eq!(sub.next().await, None, "shutdown ends subscriptions");
}

#[tokio::test]
async fn redis_open_errors_are_clear() {
    let port = support::free_port(); // nothing listens there
    let opts = StoreOptions::Redis {
        urls: vec![format!("redis://127.0.0.1:{port}")],
        cluster: false,
        timeout: REDIS_TIMEOUT,
    };
    // No server is not a configuration error: the store opens without it, every call fails
    // at once with the reason, and it connects once Redis is there.
    let store = Store::open(&opts).await.expect("opens without a server");
    let err = store.get("herd:k").await.unwrap_err();
    assert!(
        matches!(err, herd_store::StoreError::Unavailable { .. })
            && err.to_string().contains(&port.to_string()),
        "{err}"
    );
    assert_ne!(store.status().state, "ok");
    assert!(
        store
            .status()
            .last_error
            .unwrap()
            .contains(&port.to_string()),
        "status names the target that failed"
    );
    let dir = tempfile::tempdir().unwrap();
    let _late = support::RedisServer::start(dir.path(), port, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store
        .put("herd:k", Bytes::from_static(b"v"), Expect::Any, None)
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection within 20 s of the server starting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.get("herd:k").await.unwrap().unwrap().value,
        Bytes::from_static(b"v")
    );
    while store.status().state != "ok" {
        assert!(std::time::Instant::now() < deadline, "{:?}", store.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Subscriptions work on a store that connected late.
    let mut sub = loop {
        // The subscriber connection has its own backoff: it may come a moment later.
        match store.subscribe("herd:late").await {
            Ok(sub) => break sub,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    store
        .publish("herd:late", Bytes::from_static(b"m"))
        .await
        .unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut sub),
    )
    .await
    .unwrap();
    assert_eq!(got.unwrap(), Bytes::from_static(b"m"));
    store.shutdown().await;

    // A wrong password is a configuration error, not an outage.
    let dir = tempfile::tempdir().unwrap();
    let server = support::RedisServer::start_with(
        dir.path(),
        support::free_port(),
        false,
        &["--requirepass", "right"],
    );
    let opts = StoreOptions::Redis {
        urls: vec![format!("redis://:wrong@127.0.0.1:{}", server.port)],
        cluster: false,
        timeout: REDIS_TIMEOUT,
    };
    let err = Store::open(&opts)
        .await
        .expect_err("wrong password, no store");
    assert!(
        matches!(&err, herd_store::StoreError::Invalid(m) if m.contains("password") && !m.contains("wrong@")),
        "{err}"
    );
    // No password where one is needed, a database the server lacks, a cluster node given as a
    // single Redis, a single Redis given as a cluster: configuration errors too.
    let invalid = |urls: Vec<String>, cluster: bool, wants: &'static str| async move {
        let opts = StoreOptions::Redis {
            urls,
            cluster,
            timeout: REDIS_TIMEOUT,
        };
        let err = Store::open(&opts).await.expect_err("refused at open");
        assert!(
            matches!(&err, herd_store::StoreError::Invalid(m) if m.contains(wants)),
            "{err}"
        );
    };
    invalid(
        vec![format!("redis://127.0.0.1:{}", server.port)],
        false,
        "wants a password",
    )
    .await;
    invalid(
        vec![format!("redis://:right@127.0.0.1:{}/99", server.port)],
        false,
        "no such database",
    )
    .await;
    invalid(
        vec![format!("redis://:right@127.0.0.1:{}", server.port)],
        true,
        "not a Redis Cluster",
    )
    .await;
    let reply = support::cli(
        server.port,
        &[
            "-a",
            "right",
            "ACL",
            "SETUSER",
            "nosub",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "+@all",
        ],
    );
    assert!(reply.contains("OK"), "{reply}");
    invalid(
        vec![format!("redis://nosub:pw@127.0.0.1:{}", server.port)],
        false,
        "may not use pub/sub channels",
    )
    .await;
    let node_dir = tempfile::tempdir().unwrap();
    let node = support::RedisServer::start(node_dir.path(), support::free_port(), true);
    invalid(vec![node.url()], false, "node of a Redis Cluster").await;
    let opts = StoreOptions::Redis {
        urls: vec!["http://x".into()],
        cluster: false,
        timeout: REDIS_TIMEOUT,
    };
    assert!(matches!(
        Store::open(&opts).await.err().unwrap(),
        herd_store::StoreError::Invalid(_)
    ));
    let opts = StoreOptions::Redis {
        urls: vec![],
        cluster: false,
        timeout: REDIS_TIMEOUT,
    };
    assert!(matches!(
        Store::open(&opts).await.err().unwrap(),
        herd_store::StoreError::Invalid(_)
    ));
}

/// A server that answers but refuses writes is not `ok`: the status probe is a write.
#[tokio::test]
async fn redis_refusing_writes_is_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::RedisServer::start(dir.path(), support::free_port(), false);
    let store = redis(vec![server.url()], false).await;
    let wait_for = |want_ok: bool| {
        let store = store.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while (store.status().state == "ok") != want_ok {
                assert!(std::time::Instant::now() < deadline, "{:?}", store.status());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            store.status()
        }
    };
    wait_for(true).await;
    support::cli(server.port, &["CONFIG", "SET", "maxmemory", "1"]);
    let status = wait_for(false).await;
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("OOM"),
        "{status:?}"
    );
    // Reads still succeed meanwhile: they do not make it ok (only the probe does).
    for _ in 0..20 {
        store.get("herd:k").await.unwrap();
        assert_eq!(store.status().state, "degraded", "{:?}", store.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::cli(server.port, &["CONFIG", "SET", "maxmemory", "0"]);
    wait_for(true).await;
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_node_kill_and_restart() {
    let mut cluster = support::RedisCluster::start();
    let store = redis(cluster.urls(), true).await;
    // Twenty hash tags spread over the three masters' slots.
    let keys: Vec<String> = (0..20).map(|i| format!("herd:{{t{i}}}:k")).collect();
    for k in &keys {
        store
            .put(k, Bytes::from_static(b"v"), Expect::Any, None)
            .await
            .unwrap();
    }

    // nodes[1] serves slots 5461-10922; the probe's key (herd:{probe}, slot 5258) lives on
    // nodes[0]: the status tells of the dead master's slots all the same (CLUSTER INFO's
    // cluster_slots_pfail), once the survivors notice.
    cluster.nodes[1].kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.status().state == "ok" {
        assert!(
            std::time::Instant::now() < deadline,
            "a dead master is not reported: {:?}",
            store.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut failed = 0;
    for k in &keys {
        let started = std::time::Instant::now();
        match store
            .put(k, Bytes::from_static(b"v"), Expect::Any, None)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                failed += 1;
            }
        }
        assert!(
            started.elapsed() < REDIS_TIMEOUT * 2 + Duration::from_millis(500),
            "a call took {:?}",
            started.elapsed()
        );
    }
    assert!(failed > 0, "keys on the dead master must fail");

    cluster.nodes[1].restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    for k in &keys {
        while store
            .put(k, Bytes::from_static(b"v"), Expect::Any, None)
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "cluster did not recover within 40 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::RedisServer::start(dir.path(), support::free_port(), false);
    let store = redis(vec![server.url()], false).await;
    store
        .put("herd:k", Bytes::from_static(b"v"), Expect::Any, None)
        .await
        .unwrap();
    server.freeze(true);
    let started = std::time::Instant::now();
    let err = store.get("herd:k").await.unwrap_err();
    let took = started.elapsed();
    server.freeze(false);
    assert!(
        matches!(
            err,
            herd_store::StoreError::Timeout { .. } | herd_store::StoreError::Unavailable { .. }
        ),
        "{err:?}"
    );
    assert!(
        took < REDIS_TIMEOUT * 2 + Duration::from_millis(500),
        "took {took:?}"
    );
    // Thawed, the same store works again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.get("herd:k").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "store did not recover within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gives_back_channels_nobody_listens_to() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::RedisServer::start(dir.path(), support::free_port(), false);
    let store = redis(vec![server.url()], false).await;
    let channel = "herd:{l:order-123}:released";
    let sub = store.subscribe(channel).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let numsub = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let (_, n): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(numsub(&mut conn).await, 1);
    drop(sub);
    // Given back at the subscriber's next check (every 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while numsub(&mut conn).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still subscribed on the server 15 s after the last listener left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And taken again when someone listens again.
    let mut again = store.subscribe(channel).await.unwrap();
    store
        .publish(channel, Bytes::from_static(b"m"))
        .await
        .unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut again),
    )
    .await
    .unwrap();
    assert_eq!(got, Some(Bytes::from_static(b"m")));
    store.shutdown().await;
}
