//! Fill leases over HTTP (`GET /v1/cache/{ns}/{key}?fill=`): concurrent misses of one key make
//! one load, the others wait for its PUT; a lease that runs out or is given up (DELETE) passes
//! to a waiter; a stale value is refreshed by one caller while everyone is served.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use herd_services::cache::{CacheConfig, Strategy};
use herd_services::ServicesConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_misses_make_one_load() {
    let api = Arc::new(Api::start(false).await);
    let (told, mut loader) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for i in 0..20 {
        let (api, told) = (Arc::clone(&api), told.clone());
        readers.push(tokio::spawn(async move {
            let r = api.call("GET", "/v1/cache/pages/home?fill=30s", b"").await;
            if r.header("x-cache-fill") == Some("load") {
                assert_eq!(r.status, 404, "{}", r.text());
                told.send(i).unwrap();
            }
            r
        }));
    }
    // The caller told to load does it (slowly), then stores the value.
    let first = tokio::time::timeout(Duration::from_secs(20), loader.recv())
        .await
        .expect("nobody was told to load")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = api.call("PUT", "/v1/cache/pages/home", b"<html>").await;
    assert_eq!(r.status, 204);
    for (i, reader) in readers.into_iter().enumerate() {
        let r = reader.await.unwrap();
        if i == first {
            continue;
        }
        assert_eq!(r.status, 200, "reader {i}: {}", r.text());
        assert_eq!(r.body, b"<html>");
        assert_eq!(r.header("x-cache-fill"), None, "reader {i} was not to load");
    }
    assert!(
        loader.try_recv().is_err(),
        "a second caller was told to load"
    );
    let s = api.call("GET", "/v1/cache/stats", b"").await.json();
    assert_eq!(s["fill_leases"], 1, "{s}");
    assert!(s["fill_waits"].as_u64().unwrap() <= 19, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_passes_on_when_it_runs_out_or_is_given_up() {
    let api = Arc::new(Api::start(false).await);
    // A loader that vanishes: the next caller waits out its 300 ms, then is told to load.
    let r = api.call("GET", "/v1/cache/pages/a?fill=300ms", b"").await;
    assert_eq!((r.status, r.header("x-cache-fill")), (404, Some("load")));
    let started = Instant::now();
    let r = api.call("GET", "/v1/cache/pages/a?fill=30s", b"").await;
    assert_eq!((r.status, r.header("x-cache-fill")), (404, Some("load")));
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A loader that fails gives up at once with a DELETE: a waiter takes over well before the
    // lease (60 s) would have run out.
    let r = api.call("GET", "/v1/cache/pages/b?fill=60s", b"").await;
    assert_eq!(r.header("x-cache-fill"), Some("load"));
    let waiter = {
        let api = Arc::clone(&api);
        tokio::spawn(async move { api.call("GET", "/v1/cache/pages/b?fill=60s", b"").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        api.call("DELETE", "/v1/cache/pages/b", b"").await.status,
        204,
        "giving a lease up is not an error"
    );
    assert_eq!(
        api.call("DELETE", "/v1/cache/pages/nothing", b"")
            .await
            .status,
        404,
        "neither a key nor a lease"
    );
    let r = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter was not let go by the DELETE")
        .unwrap();
    assert_eq!((r.status, r.header("x-cache-fill")), (404, Some("load")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_served_to_all_and_refreshed_by_one() {
    let cache = CacheConfig {
        namespaces: [(
            "feeds".to_owned(),
            Strategy {
                l1_ttl: Duration::from_secs(60),
                l2_ttl: Duration::from_millis(200),
                refresh_ahead: None,
                grace: Duration::from_secs(120),
            },
        )]
        .into(),
        ..CacheConfig::default()
    };
    let config = ServicesConfig {
        cache,
        ..ServicesConfig::default()
    };
    let api = Api::start_with(false, config, 1 << 20).await;
    assert_eq!(
        api.call("PUT", "/v1/cache/feeds/f", b"v1").await.status,
        204
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past its TTL, within grace: stale.
    let r = api.call("GET", "/v1/cache/feeds/f?fill=30s", b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"v1");
    assert_eq!(r.header("x-cache-freshness"), Some("stale"));
    assert_eq!(r.header("x-cache-fill"), Some("refresh"));
    for _ in 0..3 {
        let r = api.call("GET", "/v1/cache/feeds/f?fill=30s", b"").await;
        assert_eq!((r.status, r.body.as_slice()), (200, b"v1".as_slice()));
        assert_eq!(r.header("x-cache-fill"), None, "one refresher at a time");
    }
    let r = api.call("PUT", "/v1/cache/feeds/f?ttl=1h", b"v2").await;
    assert_eq!(r.status, 204);
    let r = api.call("GET", "/v1/cache/feeds/f?fill=30s", b"").await;
    assert_eq!(r.body, b"v2");
    assert_eq!(r.header("x-cache-freshness"), Some("fresh"));
    assert_eq!(r.header("x-cache-fill"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fill_values_are_400_with_a_hint() {
    let api = Api::start(false).await;
    for q in ["fill=0s", "fill=10m", "fill=soon", "colour=red"] {
        let r = api
            .call("GET", &format!("/v1/cache/pages/x?{q}"), b"")
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.json()["hint"].is_string(), "{q}: {}", r.text());
    }
    // Without the query a miss is a plain 404, no lease taken.
    let r = api.call("GET", "/v1/cache/pages/x", b"").await;
    assert_eq!((r.status, r.header("x-cache-fill")), (404, None));
    let s = api.call("GET", "/v1/cache/stats", b"").await.json();
    assert_eq!(s["fill_leases"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_follow_the_next_lease_when_a_loader_vanishes() {
    let api = Arc::new(Api::start(false).await);
    // The first loader never puts.
    let r = api.call("GET", "/v1/cache/pages/v?fill=600ms", b"").await;
    assert_eq!(r.header("x-cache-fill"), Some("load"));
    let (told, mut loader) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..6 {
        let (api, told) = (Arc::clone(&api), told.clone());
        waiters.push(tokio::spawn(async move {
            let r = api.call("GET", "/v1/cache/pages/v?fill=600ms", b"").await;
            if r.header("x-cache-fill") == Some("load") {
                told.send(i).unwrap();
            }
            r
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Its lease runs out: one waiter is told to load, and it puts.
    let next = tokio::time::timeout(Duration::from_secs(10), loader.recv())
        .await
        .expect("nobody took the lease over")
        .unwrap();
    let r = api.call("PUT", "/v1/cache/pages/v", b"loaded").await;
    assert_eq!(r.status, 204);
    for (i, w) in waiters.into_iter().enumerate() {
        let r = w.await.unwrap();
        if i == next {
            continue;
        }
        assert_eq!((r.status, &r.body[..]), (200, &b"loaded"[..]), "waiter {i}");
    }
    assert!(
        loader.try_recv().is_err(),
        "every waiter was told to load at the first lease's end"
    );
    // One count per call, by its answer: 2 loads (misses), 5 served from the cache.
    let s = api.call("GET", "/v1/cache/stats", b"").await.json();
    assert_eq!(
        (s["l1_misses"].as_u64(), s["l2_misses"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    assert_eq!(s["loads"], 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_never_takes_a_lease() {
    let api = Api::start(false).await;
    let r = api.call("HEAD", "/v1/cache/pages/h?fill=30s", b"").await;
    assert_eq!((r.status, r.header("x-cache-fill")), (404, None));
    let started = Instant::now();
    let r = api.call("GET", "/v1/cache/pages/h?fill=30s", b"").await;
    assert_eq!((r.status, r.header("x-cache-fill")), (404, Some("load")));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited on the HEAD's lease"
    );
}
