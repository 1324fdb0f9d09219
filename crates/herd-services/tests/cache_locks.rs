//! Cache and locks against the embedded store: coalesced loads, refresh-ahead, invalidation
//! across two nodes over pub/sub, L2 fallback, fences under contention.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use herd_services::cache::{CacheConfig, Level, Strategy};
use herd_services::{ManualClock, ServiceError, ServicesConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_get_or_load_runs_one_loader() {
    let dir = TempDir::new("coalesce");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let loads = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let services = Arc::clone(&node.services);
        let loads = Arc::clone(&loads);
        tasks.push(tokio::spawn(async move {
            services
                .cache
                .get_or_load("users", "u1", move || {
                    let loads = Arc::clone(&loads);
                    async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // Long enough that every caller arrives while it runs.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(Bytes::from_static(b"ada"))
                    }
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Bytes::from_static(b"ada"));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(node.services.cache.stats_exact().await.loads, 1);
    // A failing loader is an error, and the next call tries again.
    let err = node
        .services
        .cache
        .get_or_load("users", "u2", || async { Err("origin down".to_owned()) })
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Load { .. }), "{err}");
}

/// L2 for 100 s, refreshed in the background from 80 % of that, no grace.
fn refresh_at_80_percent() -> Strategy {
    Strategy {
        l1_ttl: Duration::from_secs(300),
        l2_ttl: Duration::from_secs(100),
        refresh_ahead: Some(0.8),
        grace: Duration::ZERO,
    }
}

/// A node on a manual clock whose namespace `ns` uses `strategy`, and a loader that answers
/// "v0", "v1", ... (counting its calls in the returned counter).
async fn node_with_strategy(
    dir: &TempDir,
    ns: &str,
    strategy: Strategy,
) -> (
    Node,
    Arc<ManualClock>,
    Arc<AtomicU32>,
    impl Fn() -> std::future::Ready<Result<Bytes, String>> + Clone,
) {
    let store = open_store(dir, false).await;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mut cache = CacheConfig::default();
    cache.namespaces.insert(ns.into(), strategy);
    let node = Node::with_clock(
        &store,
        ServicesConfig {
            cache,
            ..ServicesConfig::default()
        },
        clock.clone(),
    );
    let version = Arc::new(AtomicU32::new(0));
    let loader = {
        let version = Arc::clone(&version);
        move || {
            let v = version.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Bytes::from(format!("v{v}"))))
        }
    };
    (node, clock, version, loader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_serves_the_old_value_and_reloads_in_the_background() {
    let dir = TempDir::new("dev");
    let (node, clock, version, loader) =
        node_with_strategy(&dir, "dev", refresh_at_80_percent()).await;
    let c = &node.services.cache;
    assert_eq!(
        c.get_or_load("dev", "d1", loader.clone()).await.unwrap(),
        "v0"
    );
    clock.advance(Duration::from_secs(50));
    assert_eq!(
        c.get_or_load("dev", "d1", loader.clone()).await.unwrap(),
        "v0"
    );
    assert_eq!(version.load(Ordering::SeqCst), 1, "fresh: no reload");
    clock.advance(Duration::from_secs(31)); // 81 % of the TTL
    assert_eq!(
        c.get_or_load("dev", "d1", loader.clone()).await.unwrap(),
        "v0",
        "served at once"
    );
    let refreshed = eventually(Duration::from_secs(10), || async {
        c.get("dev", "d1")
            .await
            .unwrap()
            .is_some_and(|h| h.value == "v1")
    })
    .await;
    assert!(refreshed, "background refresh replaced the value");
    assert_eq!(c.stats_exact().await.refreshes, 1);
    clock.advance(Duration::from_secs(101));
    assert!(c.get("dev", "d1").await.unwrap().is_none(), "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_serves_an_expired_value_while_one_reload_runs() {
    let dir = TempDir::new("pages");
    let (node, clock, version, loader) = node_with_strategy(
        &dir,
        "pages",
        Strategy {
            l1_ttl: Duration::from_secs(300),
            l2_ttl: Duration::from_secs(100),
            refresh_ahead: None,
            grace: Duration::from_secs(60),
        },
    )
    .await;
    let c = &node.services.cache;
    assert_eq!(
        c.get_or_load("pages", "p", loader.clone()).await.unwrap(),
        "v0"
    );
    clock.advance(Duration::from_secs(99));
    assert_eq!(
        c.get_or_load("pages", "p", loader.clone()).await.unwrap(),
        "v0"
    );
    assert_eq!(
        version.load(Ordering::SeqCst),
        1,
        "no refresh_ahead: no reload before the TTL"
    );
    clock.advance(Duration::from_secs(30)); // 29 s past the TTL, within the 60 s grace
    assert_eq!(
        c.get_or_load("pages", "p", loader.clone()).await.unwrap(),
        "v0",
        "the stale value is answered at once"
    );
    let reloaded = eventually(Duration::from_secs(10), || async {
        c.get("pages", "p")
            .await
            .unwrap()
            .is_some_and(|h| h.value == "v1")
    })
    .await;
    assert!(reloaded, "one background reload replaced it");
    // Past TTL + grace of the new value: a miss, loaded in line.
    clock.advance(Duration::from_secs(161));
    assert!(
        c.get("pages", "p").await.unwrap().is_none(),
        "expired past grace"
    );
    assert_eq!(
        c.get_or_load("pages", "p", loader.clone()).await.unwrap(),
        "v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_holds_at_most_its_byte_budget() {
    let dir = TempDir::new("l1bytes");
    let store = open_store(&dir, false).await;
    // 100 entries or 20 000 bytes: a 2 KiB value weighs about a tenth of the budget.
    let cache = CacheConfig {
        l1_capacity: 100,
        l1_max_bytes: 20_000,
        ..CacheConfig::default()
    };
    let node = Node::start(
        &store,
        ServicesConfig {
            cache,
            ..ServicesConfig::default()
        },
    );
    let c = &node.services.cache;
    let big = Bytes::from(vec![b'x'; 2048]);
    for i in 0..50 {
        c.put("big", &format!("k{i}"), big.clone(), None, vec![])
            .await
            .unwrap();
    }
    // 50 values of 2 KiB are 100 KiB: the byte budget keeps about 9 of them.
    let s = c.stats_exact().await;
    assert!(s.l1_entries <= 10 && s.l1_weight <= 100, "{s:?}");
    // Small values: the count bound applies.
    for i in 0..300 {
        c.put(
            "small",
            &format!("k{i}"),
            Bytes::from_static(b"v"),
            None,
            vec![],
        )
        .await
        .unwrap();
    }
    let s = c.stats_exact().await;
    assert!(s.l1_weight <= 100 && s.l1_entries <= 100, "{s:?}");
    // Every value is still there, from L2.
    let hit = c.get("big", "k0").await.unwrap().unwrap();
    assert_eq!(hit.value.len(), 2048);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_reaches_the_other_node_l1() {
    let dir = TempDir::new("twonodes");
    let store = open_store(&dir, false).await;
    let a = Node::start(&store, ServicesConfig::default());
    let b = Node::start(&store, ServicesConfig::default());
    // Let both listeners subscribe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.services
        .cache
        .put(
            "cfg",
            "flags",
            Bytes::from_static(b"old"),
            None,
            vec!["t".into()],
        )
        .await
        .unwrap();
    let hit = b.services.cache.get("cfg", "flags").await.unwrap().unwrap();
    assert_eq!((hit.value.as_ref(), hit.level), (&b"old"[..], Level::L2));
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.services
                .cache
                .get("cfg", "flags")
                .await
                .unwrap()
                .is_some_and(|h| h.level == Level::L1)
        })
        .await,
        "b fills its memory once no invalidation races its read"
    );

    a.services
        .cache
        .put(
            "cfg",
            "flags",
            Bytes::from_static(b"new"),
            None,
            vec!["t".into()],
        )
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(10), || async {
        b.services
            .cache
            .get("cfg", "flags")
            .await
            .unwrap()
            .is_some_and(|h| h.value == "new")
    })
    .await;
    assert!(seen, "b's L1 copy was dropped by a's invalidation");

    // Tag invalidation on a empties b's memory too.
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.services
                .cache
                .get("cfg", "flags")
                .await
                .unwrap()
                .is_some_and(|h| h.level == Level::L1)
        })
        .await,
        "b fills its memory once no invalidation races its read"
    );
    assert_eq!(
        a.services.cache.invalidate_tag("cfg", "t").await.unwrap(),
        1
    );
    let gone = eventually(Duration::from_secs(10), || async {
        b.services
            .cache
            .get("cfg", "flags")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert!(gone);
    assert!(b.services.cache.stats_exact().await.invalidations >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_load_still_answers_when_the_store_is_down() {
    let dir = TempDir::new("down");
    let store = open_store(&dir, true).await;
    let node = Node::start(&store, ServicesConfig::default());
    store.unreliable().unwrap().set_down(true);
    let v = node
        .services
        .cache
        .get_or_load("ns", "k", || async { Ok(Bytes::from_static(b"origin")) })
        .await
        .unwrap();
    assert_eq!(v, "origin");
    let hit = node.services.cache.get("ns", "k").await.unwrap().unwrap();
    assert_eq!(hit.level, Level::L1);
    assert!(node.services.cache.stats_exact().await.l2_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_strictly_increase_under_contention() {
    let dir = TempDir::new("locks");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let holders = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let services = Arc::clone(&node.services);
        let holders = Arc::clone(&holders);
        tasks.push(tokio::spawn(async move {
            let mut fences = Vec::new();
            for _ in 0..5 {
                let lease = services
                    .locks
                    .acquire("hot", Duration::from_secs(30), Duration::from_secs(60))
                    .await
                    .unwrap();
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                services.locks.release("hot", &lease.token).await.unwrap();
                fences.push(lease.fence);
            }
            fences
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let fences = t.await.unwrap();
        assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
        all.extend(fences);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40, "every acquisition got its own fence");
    let err = node
        .services
        .locks
        .release("hot", "not-mine")
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NotHolder { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_removes_only_values_that_still_carry_it_and_expired_tags_are_dropped() {
    use herd_store::Backend as _;
    let dir = TempDir::new("tags");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let node = Node::with_clock(&store, ServicesConfig::default(), clock.clone());
    let c = &node.services.cache;
    let tag = |s: &str| vec![s.to_owned()];
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());

    // Written again without the tag, or deleted and written again: the tag no longer reaches
    // it. Still tagged: removed.
    c.put("ns", "k", v("1"), None, tag("t")).await.unwrap();
    c.put("ns", "k", v("2"), None, vec![]).await.unwrap();
    c.put("ns", "d", v("1"), None, tag("t")).await.unwrap();
    assert!(c.delete("ns", "d").await.unwrap());
    c.put("ns", "d", v("2"), None, vec![]).await.unwrap();
    c.put("ns", "x", v("1"), None, tag("t")).await.unwrap();
    assert_eq!(c.invalidate_tag("ns", "t").await.unwrap(), 1);
    assert_eq!(c.get("ns", "k").await.unwrap().unwrap().value, "2");
    assert_eq!(c.get("ns", "d").await.unwrap().unwrap().value, "2");
    assert!(c.get("ns", "x").await.unwrap().is_none());
    assert_eq!(store.zcard("herd:{c:ns}:tag:t").await.unwrap(), 0);

    // A tag per user, each written once: once their keys expire, later puts drop the tags'
    // sets (ten per put) and their entries in the namespace's tag list.
    for i in 0..30 {
        let key = format!("s{i}");
        let ttl = Some(Duration::from_secs(1));
        c.put("ns", &key, v("v"), ttl, tag(&format!("user{i}")))
            .await
            .unwrap();
    }
    let listed = |i: u32| {
        let store = Arc::clone(&store);
        async move {
            store
                .zscore("herd:{c:ns}:tags", &format!("user{i}"))
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(listed(7).await);
    clock.advance(Duration::from_secs(3600));
    for i in 0..3 {
        c.put("ns", &format!("later{i}"), v("v"), None, vec![])
            .await
            .unwrap();
    }
    for i in 0..30 {
        let set = format!("herd:{{c:ns}}:tag:user{i}");
        assert_eq!(store.zcard(&set).await.unwrap(), 0, "{set}");
        assert!(!listed(i).await, "user{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_caller_left_does_not_block_refresh_ahead_for_good() {
    let dir = TempDir::new("dev");
    let (node, clock, _version, loader) =
        node_with_strategy(&dir, "dev", refresh_at_80_percent()).await;
    let c = &node.services.cache;
    // A caller gives up on a load that hangs (a client gone, a timeout around the call).
    let hang = || async {
        std::future::pending::<()>().await;
        Ok(bytes::Bytes::new())
    };
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), c.get_or_load("dev", "d1", hang)).await;
    assert!(gave_up.is_err());
    // The key gets a value another way; near its expiry, a read must start a refresh.
    c.put(
        "dev",
        "d1",
        bytes::Bytes::from_static(b"v0"),
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(81));
    assert_eq!(
        c.get_or_load("dev", "d1", loader.clone()).await.unwrap(),
        "v0"
    );
    let refreshed = eventually(Duration::from_secs(10), || async {
        c.stats_exact().await.refreshes == 1
    })
    .await;
    assert!(
        refreshed,
        "refresh-ahead never ran for a key whose earlier caller left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_ends_at_shutdown() {
    let dir = TempDir::new("locks");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let held = node
        .services
        .locks
        .acquire("busy", Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    let services = Arc::clone(&node.services);
    let waiter = tokio::spawn(async move {
        services
            .locks
            .acquire("busy", Duration::from_secs(60), Duration::from_secs(60))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.shutdown.cancel();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the wait went on past the shutdown")
        .unwrap();
    assert!(
        matches!(&got, Err(e) if e.status() == 503),
        "{:?}",
        got.map(|l| l.fence)
    );
    // Said as what it is: this node stopping, not a store outage.
    let hint = got
        .as_ref()
        .err()
        .map(ServiceError::hint)
        .unwrap_or_default();
    assert!(
        hint.starts_with("nothing was done; retry on another node"),
        "{hint}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_wait_ends_at_shutdown() {
    let dir = TempDir::new("fill");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let c = &node.services.cache;
    // The first caller holds the key's fill lease; the second waits for its put.
    let first = c
        .get_or_lease("pages", "home", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(first, herd_services::cache::Leased::Load));
    let services = Arc::clone(&node.services);
    let second = tokio::spawn(async move {
        services
            .cache
            .get_or_lease("pages", "home", Duration::from_secs(60))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.shutdown.cancel();
    let got = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the fill wait went on past the shutdown")
        .unwrap()
        .unwrap();
    assert!(matches!(got, herd_services::cache::Leased::Load));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_another_node_ends_this_node_s_fill_wait() {
    let dir = TempDir::new("fillx");
    let store = open_store(&dir, false).await;
    let a = Node::start(&store, ServicesConfig::default());
    let b = Node::start(&store, ServicesConfig::default());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B's own loader takes the lease and never puts; a second caller on B waits for it.
    let first = b
        .services
        .cache
        .get_or_lease("pages", "x", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(first, herd_services::cache::Leased::Load));
    let services = Arc::clone(&b.services);
    let waiter = tokio::spawn(async move {
        services
            .cache
            .get_or_lease("pages", "x", Duration::from_secs(30))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A stores the value: B's waiter reads it now, not at the end of B's 30 s lease.
    a.services
        .cache
        .put("pages", "x", Bytes::from_static(b"from a"), None, vec![])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter sat out the lease")
        .unwrap()
        .unwrap();
    match got {
        herd_services::cache::Leased::Hit(hit) => assert_eq!(hit.value.as_ref(), b"from a"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_nobody_writes_any_more_leaves_no_index_behind() {
    use herd_store::Backend as _;
    let dir = TempDir::new("idle");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let config = ServicesConfig {
        cache: CacheConfig {
            idle_sweep_every: Duration::from_millis(50),
            ..CacheConfig::default()
        },
        ..ServicesConfig::default()
    };
    let node = Node::with_clock(&store, config, clock.clone());
    let c = &node.services.cache;
    let v = Bytes::from_static(b"v");
    for i in 0..30 {
        let tags = vec![format!("t{}", i % 3)];
        c.put(
            "quiet",
            &format!("k{i}"),
            v.clone(),
            Some(Duration::from_secs(1)),
            tags,
        )
        .await
        .unwrap();
    }
    c.put(
        "busy",
        "k",
        v.clone(),
        Some(Duration::from_secs(7200)),
        vec![],
    )
    .await
    .unwrap();
    let card = |set: &'static str| {
        let store = Arc::clone(&store);
        async move { store.zcard(set).await.unwrap() }
    };
    // Not expired yet: the sweeper leaves the index alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(card("herd:{c:quiet}:keys").await, 30);
    assert_eq!(card("herd:{c:quiet}:tags").await, 3);

    // Every value of "quiet" expired and nobody writes there again: its sets go.
    clock.advance(Duration::from_secs(3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = card("herd:{c:quiet}:keys").await
            + card("herd:{c:quiet}:tags").await
            + card("herd:{c:quiet}:tag:t0").await
            + card("herd:{c:quiet}:tag:t1").await
            + card("herd:{c:quiet}:tag:t2").await;
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} index entries of an idle namespace left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        card("herd:{c:busy}:keys").await,
        1,
        "a live value stays indexed"
    );
}

/// `l1_ttl` bounds how long a node keeps its own copy: past it the read goes to L2 (and fills
/// L1 again); a namespace with a long `l1_ttl`, read after the same wait, still answers from L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_keeps_a_copy_for_the_namespace_s_l1_ttl() {
    let dir = TempDir::new("l1-ttl");
    let store = open_store(&dir, false).await;
    let strategy = |l1_ttl| Strategy {
        l1_ttl,
        l2_ttl: Duration::from_secs(3600),
        refresh_ahead: None,
        grace: Duration::ZERO,
    };
    let mut cache = CacheConfig::default();
    cache
        .namespaces
        .insert("short".into(), strategy(Duration::from_secs(1)));
    cache
        .namespaces
        .insert("long".into(), strategy(Duration::from_secs(3600)));
    let node = Node::start(
        &store,
        ServicesConfig {
            cache,
            ..ServicesConfig::default()
        },
    );
    let c = &node.services.cache;
    for ns in ["short", "long"] {
        c.put(ns, "k", Bytes::from_static(b"v"), None, Vec::new())
            .await
            .unwrap();
    }
    // Past the short l1_ttl (both reads happen after the same wait).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let level = |ns: &'static str| async move { c.get(ns, "k").await.unwrap().unwrap().level };
    assert_eq!(level("long").await, Level::L1);
    assert_eq!(
        level("short").await,
        Level::L2,
        "L1 dropped it after l1_ttl"
    );
    assert_eq!(
        level("short").await,
        Level::L1,
        "the L2 read filled L1 again"
    );
}
