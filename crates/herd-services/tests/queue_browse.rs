//! Looking into a queue and taking jobs out of it, on the embedded store with a manual clock:
//! the jobs of each state in order with paging, removing one job (never a leased one),
//! draining waiting and delayed jobs, and reading schedules.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use herd_services::queue::{NewJob, QueueConfig, Repeat, State};
use herd_services::{ManualClock, ServiceError, ServicesConfig};
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

async fn setup() -> (TempDir, Node, Arc<ManualClock>) {
    let dir = TempDir::new("queue-browse");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(
        &store,
        ServicesConfig {
            queues: QueueConfig::default(),
            ..ServicesConfig::default()
        },
        clock.clone(),
    );
    (dir, node, clock)
}

fn job(name: &str) -> NewJob {
    NewJob::new(name, json!({}))
}

fn names(jobs: &[herd_services::queue::JobRecord]) -> Vec<&str> {
    jobs.iter().map(|j| j.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_state_lists_in_the_queues_order_with_paging() {
    let (_d, node, _clock) = setup().await;
    let q = &node.services.queues;
    for (name, priority, delay) in [
        ("late-2", 0, 20),
        ("plain-1", 0, 0),
        ("prio-3", 3, 0),
        ("late-1", 0, 10),
        ("prio-1", 1, 0),
        ("plain-2", 0, 0),
    ] {
        let mut j = job(name);
        j.priority = priority;
        j.delay = Duration::from_secs(delay);
        q.add("b", j).await.unwrap();
    }
    let waiting = q.list("b", "waiting", 0, 100).await.unwrap();
    // The order reserve takes them in: no priority first, then by priority.
    assert_eq!(names(&waiting), ["plain-1", "plain-2", "prio-1", "prio-3"]);
    assert_eq!(
        names(&q.list("b", "waiting", 1, 2).await.unwrap()),
        ["plain-2", "prio-1"]
    );
    assert!(q.list("b", "waiting", 4, 10).await.unwrap().is_empty());
    assert_eq!(
        names(&q.list("b", "delayed", 0, 100).await.unwrap()),
        ["late-1", "late-2"]
    );

    let got = q.reserve("b", 2, None, Duration::ZERO).await.unwrap();
    let active = q.list("b", "active", 0, 100).await.unwrap();
    assert_eq!(names(&active), ["plain-1", "plain-2"]);
    assert!(active.iter().all(|j| j.state == State::Active));
    q.ack("b", &got[0].id, &got[0].lease_token, Some(json!(7)))
        .await
        .unwrap();
    q.fail("b", &got[1].id, &got[1].lease_token, "boom", false)
        .await
        .unwrap();
    let done = q.list("b", "completed", 0, 100).await.unwrap();
    assert_eq!(names(&done), ["plain-1"]);
    assert_eq!(done[0].result, Some(json!(7)));
    let failed = q.list("b", "failed", 0, 100).await.unwrap();
    assert_eq!(names(&failed), ["plain-2"]);
    assert_eq!(failed[0].failed_reason.as_deref(), Some("boom"));

    let e = q.list("b", "stalled", 0, 10).await.unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.hint().contains("waiting, delayed"), "{}", e.hint());
    let e = q.list("b", "waiting", 9_990, 11).await.unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_removed_in_any_state_but_active_and_its_id_is_free_again() {
    let (_d, node, clock) = setup().await;
    let q = &node.services.queues;
    let mut a = job("a");
    a.job_id = Some("order-1".into());
    q.add("r", a.clone()).await.unwrap();
    q.remove("r", "order-1").await.unwrap();
    assert_eq!(q.counts("r").await.unwrap().waiting, 0);
    assert!(matches!(
        q.remove("r", "order-1").await,
        Err(ServiceError::NotFound { .. })
    ));
    // The id is free: the same add enqueues again instead of deduplicating.
    assert_eq!(q.add("r", a).await.unwrap(), "order-1");
    assert_eq!(q.counts("r").await.unwrap().waiting, 1);

    // Leased: refused, and left as it is.
    let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
    let e = q.remove("r", "order-1").await.unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("leased"), "{e}");
    assert_eq!(q.counts("r").await.unwrap().active, 1);
    q.ack("r", "order-1", &got[0].lease_token, None)
        .await
        .unwrap();
    // Completed, delayed, paused and dead-lettered jobs go.
    q.remove("r", "order-1").await.unwrap();
    let mut later = job("later");
    later.delay = Duration::from_secs(60);
    let delayed = q.add("r", later).await.unwrap();
    q.remove("r", &delayed).await.unwrap();
    q.pause("r").await.unwrap();
    let held = q.add("r", job("held")).await.unwrap();
    q.remove("r", &held).await.unwrap();
    q.resume("r").await.unwrap();
    q.add("r", job("doomed")).await.unwrap();
    let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
    q.fail("r", &got[0].id, &got[0].lease_token, "no", false)
        .await
        .unwrap();
    q.remove("r", &got[0].id).await.unwrap();
    // Active with its lease expired (stalled, nobody recovered it yet): it goes, and its
    // worker's late ack finds no job.
    let stalled = q.add("r", job("stalled")).await.unwrap();
    let got = q
        .reserve("r", 1, Some(Duration::from_secs(5)), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(q.remove("r", &stalled).await.unwrap_err().status(), 409);
    clock.advance(Duration::from_secs(6));
    q.remove("r", &stalled).await.unwrap();
    assert!(matches!(
        q.ack("r", &stalled, &got[0].lease_token, None).await,
        Err(ServiceError::NotFound { .. })
    ));
    let c = q.counts("r").await.unwrap();
    assert_eq!(
        (
            c.waiting,
            c.delayed,
            c.active,
            c.completed,
            c.failed,
            c.paused
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert!(q
        .reserve("r", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_removes_waiting_and_optionally_delayed_jobs_only() {
    let (_d, node, clock) = setup().await;
    let q = &node.services.queues;
    q.add("d", job("running")).await.unwrap();
    // A lease that outlives the clock's jumps below, so it is never re-delivered here.
    let lease = Some(Duration::from_secs(3600));
    let running = q.reserve("d", 1, lease, Duration::ZERO).await.unwrap();
    // More than one drain page (200) of waiting jobs, some prioritised.
    let mut bulk = Vec::new();
    for i in 0..450 {
        let mut j = job(&format!("w{i}"));
        j.priority = i % 3;
        bulk.push(j);
    }
    q.add_bulk("d", bulk).await.unwrap();
    let mut later = job("later");
    later.delay = Duration::from_secs(30);
    q.add("d", later.clone()).await.unwrap();
    q.add("d", later).await.unwrap();
    q.pause("d").await.unwrap();

    let drained = q.drain("d", false).await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (450, 0));
    let c = q.counts("d").await.unwrap();
    assert_eq!((c.paused, c.delayed, c.active), (0, 2, 1));
    let drained = q.drain("d", true).await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (0, 2));
    q.resume("d").await.unwrap();
    clock.advance(Duration::from_secs(60));
    assert!(q
        .reserve("d", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    // The leased job was not touched.
    q.ack("d", &running[0].id, &running[0].lease_token, None)
        .await
        .unwrap();
    assert_eq!(q.counts("d").await.unwrap().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_read_back_by_next_firing() {
    let (_d, node, _clock) = setup().await;
    let q = &node.services.queues;
    let spec = |n: &str| serde_json::from_value(json!({ "name": n })).unwrap();
    q.set_schedule(
        "s",
        "hourly",
        Repeat::Every(Duration::from_secs(3600)),
        spec("h"),
    )
    .await
    .unwrap();
    q.set_schedule(
        "s",
        "minutely",
        Repeat::Every(Duration::from_secs(60)),
        spec("m"),
    )
    .await
    .unwrap();
    let all = q.schedules("s").await.unwrap();
    let got: Vec<(&str, i64)> = all.iter().map(|s| (s.name.as_str(), s.next_ms)).collect();
    assert_eq!(got, [("minutely", T0 + 60_000), ("hourly", T0 + 3_600_000)]);
    let one = q.schedule("s", "hourly").await.unwrap();
    assert_eq!(one.every_ms, Some(3_600_000));
    assert_eq!(one.job.name, "h");
    assert!(matches!(
        q.schedule("s", "nope").await,
        Err(ServiceError::NotFound { .. })
    ));
    q.delete_schedule("s", "hourly").await.unwrap();
    assert_eq!(q.schedules("s").await.unwrap().len(), 1);
}
