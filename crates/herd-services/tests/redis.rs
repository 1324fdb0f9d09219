//! The services on Redis: a real redis-server (and a 3-master cluster, which checks that every
//! multi-key call stays within one hash tag), with two herd nodes holding separate connections.

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::model::{op, run_case};
use common::redis::{cluster_store, server, store, RedisCluster};
use common::*;
use herd_services::cache::Level;
use herd_services::queue::NewJob;
use herd_services::ServicesConfig;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

fn model_on(store: &Arc<herd_store::Store>, rt: &tokio::runtime::Runtime, cases: u32, tag: &str) {
    let n = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let queue = format!(
                "{tag}-{}-{}",
                std::process::id(),
                n.fetch_add(1, Ordering::SeqCst)
            );
            rt.block_on(run_case(store, &queue, ops))
        })
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn queue_agrees_with_the_model_on_redis_and_on_a_cluster() {
    let rt = runtime();
    let dir = TempDir::new("redis-model");
    let server = server(&dir);
    let store = rt.block_on(store(&server));
    model_on(&store, &rt, 24, "single");
    let cluster = RedisCluster::start();
    let store = rt.block_on(cluster_store(&cluster));
    model_on(&store, &rt, 8, "cluster");
}

/// One scenario for every service, run on one Redis and on a cluster.
async fn two_nodes(a_store: Arc<herd_store::Store>, b_store: Arc<herd_store::Store>) {
    let a = Node::start(&a_store, ServicesConfig::default());
    let b = Node::start(&b_store, ServicesConfig::default());
    tokio::time::sleep(Duration::from_millis(300)).await; // listeners subscribe

    // Sessions: concurrent merges from both nodes all survive.
    let s = a
        .services
        .sessions
        .create(serde_json::Map::new(), None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 {
            Arc::clone(&a.services)
        } else {
            Arc::clone(&b.services)
        };
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut f = serde_json::Map::new();
            f.insert(format!("f{i}"), json!(i));
            node.sessions.patch(&id, f, None, None).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = b.services.sessions.get(&s.id).await.unwrap();
    assert_eq!(got.data.len(), 20, "{:?}", got.data);
    let regen = b.services.sessions.regenerate(&s.id).await.unwrap();
    assert!(a.services.sessions.get(&s.id).await.is_err());
    assert_eq!(
        a.services.sessions.get(&regen.id).await.unwrap().data.len(),
        20
    );

    // Cache: b's L1 copy is dropped when a writes; tags and prefixes work across nodes.
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
    assert_eq!(
        b.services
            .cache
            .get("cfg", "flags")
            .await
            .unwrap()
            .unwrap()
            .level,
        Level::L2
    );
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
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.services
                .cache
                .get("cfg", "flags")
                .await
                .unwrap()
                .is_some_and(|h| h.value == "new")
        })
        .await,
        "invalidation reached b"
    );
    assert_eq!(
        a.services
            .cache
            .invalidate_prefix("cfg", "fl")
            .await
            .unwrap(),
        1
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.services
                .cache
                .get("cfg", "flags")
                .await
                .unwrap()
                .is_none()
        })
        .await
    );

    // Coalescing on one node.
    let loads = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let svc = Arc::clone(&a.services);
        let loads = Arc::clone(&loads);
        tasks.push(tokio::spawn(async move {
            svc.cache
                .get_or_load("ns", "slow", move || {
                    let loads = Arc::clone(&loads);
                    async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(Bytes::from_static(b"v"))
                    }
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // Queue: a long-poll on b wakes for an add on a.
    let waiter = {
        let svc = Arc::clone(&b.services);
        tokio::spawn(async move {
            svc.queues
                .reserve("work", 1, None, Duration::from_secs(20))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.services
        .queues
        .add("work", NewJob::new("wake", json!(1)))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    a.services
        .queues
        .ack("work", &got[0].id, &got[0].lease_token, None)
        .await
        .unwrap();
    assert_eq!(b.services.queues.counts("work").await.unwrap().completed, 1);

    // Locks: fences strictly increase with both nodes contending.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let svc = if i % 2 == 0 {
            Arc::clone(&a.services)
        } else {
            Arc::clone(&b.services)
        };
        tasks.push(tokio::spawn(async move {
            let mut fences = Vec::new();
            for _ in 0..4 {
                let l = svc
                    .locks
                    .acquire("hot", Duration::from_secs(30), Duration::from_secs(60))
                    .await
                    .unwrap();
                fences.push(l.fence);
                svc.locks.release("hot", &l.token).await.unwrap();
            }
            fences
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let f = t.await.unwrap();
        assert!(f.windows(2).all(|w| w[0] < w[1]), "{f:?}");
        all.extend(f);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 24);

    // Shared rate limit: both nodes count against one budget.
    let rate = herd_services::ratelimit::Rate::parse("1r/m").unwrap();
    assert!(
        a.services
            .rate_limits
            .check("k", rate, 1)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        b.services
            .rate_limits
            .check("k", rate, 1)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !a.services
            .rate_limits
            .check("k", rate, 1)
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_redis() {
    let dir = TempDir::new("redis-two");
    let server = server(&dir);
    two_nodes(store(&server).await, store(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_queue_table_holds_to_the_cap_another_node_set() {
    use herd_services::queue::{QueueConfig, QueueSettings};
    let dir = TempDir::new("redis-shared-cap");
    let server = server(&dir);
    let mut capped = QueueConfig::default();
    capped.queues.insert(
        "capped".into(),
        QueueSettings {
            concurrency: Some(1),
            ..QueueSettings::default()
        },
    );
    let a = Node::start(
        &store(&server).await,
        ServicesConfig {
            queues: capped,
            ..ServicesConfig::default()
        },
    );
    let b = Node::start(&store(&server).await, ServicesConfig::default());
    for i in 0..3 {
        a.services
            .queues
            .add("capped", NewJob::new("j", json!(i)))
            .await
            .unwrap();
    }
    // a shares its table at start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lease = Some(Duration::from_secs(30));
    let first = a
        .services
        .queues
        .reserve("capped", 1, lease, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // b has no [services.queue.capped]: it holds to a's cap all the same.
    let more = b
        .services
        .queues
        .reserve("capped", 2, lease, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(more.len(), 0, "b went past the cap of 1");
    // A slot freed on a is one b may take.
    a.services
        .queues
        .ack("capped", &first[0].id, &first[0].lease_token, None)
        .await
        .unwrap();
    let next = b
        .services
        .queues
        .reserve("capped", 2, lease, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
}

/// A clock `ahead_ms` ahead of this machine's, moving with it.
struct Skewed(i64);

impl herd_services::Clock for Skewed {
    fn now_ms(&self) -> i64 {
        herd_services::SystemClock.now_ms() + self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_ahead_does_not_steal_leased_jobs() {
    use herd_services::{Clock as _, StoreClock};
    let dir = TempDir::new("redis-skew");
    let server = server(&dir);
    let (a_store, b_store) = (store(&server).await, store(&server).await);
    // Node b's machine clock is 60 s ahead. On its own clock, the lease node a took (30 s)
    // has run out, and b would deliver the job again at once.
    let run = |skewed: Arc<dyn herd_services::Clock>, queue: &'static str| {
        let (a_store, b_store) = (Arc::clone(&a_store), Arc::clone(&b_store));
        async move {
            let a = Node::start(&a_store, ServicesConfig::default());
            let b = Node::with_clock(&b_store, ServicesConfig::default(), skewed);
            a.services
                .queues
                .add(queue, NewJob::new("one", json!(1)))
                .await
                .unwrap();
            let got = a
                .services
                .queues
                .reserve(queue, 1, Some(Duration::from_secs(30)), Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(got.len(), 1);
            b.services
                .queues
                .reserve(queue, 1, Some(Duration::from_secs(30)), Duration::ZERO)
                .await
                .unwrap()
                .len()
        }
    };
    // The failure this guards against, on the machine's clock alone:
    assert_eq!(run(Arc::new(Skewed(60_000)), "skew-raw").await, 1);
    // On the store's clock, b sees the lease still running.
    let clock = Arc::new(StoreClock::on(Arc::new(Skewed(60_000))));
    let offset = clock.sync(&*b_store).await.unwrap().unwrap();
    assert!((-61_000..=-59_000).contains(&offset), "{offset}");
    let real = herd_services::SystemClock.now_ms();
    assert!((clock.now_ms() - real).abs() < 1_000);
    assert_eq!(run(clock, "skew-synced").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_redis_cluster() {
    let cluster = RedisCluster::start();
    two_nodes(cluster_store(&cluster).await, cluster_store(&cluster).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_and_the_cache_answers_from_memory() {
    let dir = TempDir::new("redis-down");
    let mut server = server(&dir);
    let store = store(&server).await;
    let api = Api::serve(
        store,
        ServicesConfig::default(),
        1 << 20,
        TempDir::new("unused"),
    )
    .await;
    let r = api
        .json("POST", "/v1/sessions", json!({"data": {"a": 1}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    api.call("PUT", "/v1/cache/ns/hot", b"warm").await;
    server.kill();
    let r = api.call("GET", &format!("/v1/sessions/{id}"), b"").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["hint"].as_str().unwrap().contains("retry"));
    let r = api.call("GET", "/v1/cache/ns/hot", b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"warm"[..]));
}
