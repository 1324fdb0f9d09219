//! Queue behaviour against the embedded store with a manual clock: priority, delay, dedupe,
//! retry with backoff, dead letters, stalled re-delivery, pause, rate limit, concurrency cap,
//! repeatable jobs, long-poll wake-up, and a restart that loses no job.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use herd_services::queue::{
    Backoff, BackoffKind, Keep, Limiter, NewJob, QueueConfig, QueueSettings, Repeat, State,
};
use herd_services::{ManualClock, ServiceError, ServicesConfig};
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

async fn setup(config: QueueConfig) -> (TempDir, Node, Arc<ManualClock>) {
    let dir = TempDir::new("queue");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(
        &store,
        ServicesConfig {
            queues: config,
            ..ServicesConfig::default()
        },
        clock.clone(),
    );
    (dir, node, clock)
}

fn job(name: &str) -> NewJob {
    NewJob::new(name, json!({}))
}

/// Adds `j` to `queue` (nothing else waiting there), leases it and fails it for good: a dead
/// letter, unless its `remove_on_fail` removes it. Returns its id.
async fn dead_letter(q: &herd_services::queue::Queues, queue: &str, j: NewJob) -> String {
    let id = q.add(queue, j).await.unwrap();
    let got = q.reserve(queue, 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].id, id);
    q.fail(queue, &id, &got[0].lease_token, "boom", false)
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_keeps_its_last_ten_errors_each_bounded() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut j = job("flaky");
    j.attempts = 15;
    let id = q.add("e", j).await.unwrap();
    for n in 1..=12 {
        let got = q.reserve("e", 1, None, Duration::ZERO).await.unwrap();
        let error = if n == 12 {
            format!("{}é", "x".repeat(20_000))
        } else {
            format!("error {n}")
        };
        q.fail("e", &id, &got[0].lease_token, &error, true)
            .await
            .unwrap();
    }
    let rec = q.get("e", &id).await.unwrap();
    assert_eq!(rec.errors.len(), 10);
    assert_eq!(rec.errors[0], "error 3", "the oldest go first");
    let last = rec.errors.last().unwrap();
    assert!(
        last.len() < 16 * 1024 + 64 && last.ends_with("(20002 bytes, cut)"),
        "{}",
        &last[last.len() - 40..]
    );
    assert_eq!(rec.failed_reason.as_ref(), Some(last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_then_order_of_adding_and_delay() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut later = job("delayed");
    later.delay = Duration::from_secs(10);
    q.add("p", later).await.unwrap();
    q.add("p", job("none-1")).await.unwrap();
    let mut low = job("prio-5");
    low.priority = 5;
    q.add("p", low).await.unwrap();
    let mut high = job("prio-1");
    high.priority = 1;
    q.add("p", high).await.unwrap();
    q.add("p", job("none-2")).await.unwrap();
    let got = q.reserve("p", 10, None, Duration::ZERO).await.unwrap();
    let names: Vec<&str> = got.iter().map(|j| j.name.as_str()).collect();
    // BullMQ: a job without a priority comes before every prioritised one.
    assert_eq!(names, ["none-1", "none-2", "prio-1", "prio-5"]);
    assert_eq!(q.counts("p").await.unwrap().delayed, 1);
    clock.advance(Duration::from_secs(10));
    let got = q.reserve("p", 10, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "delayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_without_a_lease_takes_the_configured_default() {
    let (_d, node, clock) = setup(QueueConfig {
        default_lease: Duration::from_secs(3),
        ..QueueConfig::default()
    })
    .await;
    let q = &node.services.queues;
    let id = q.add("x", job("a")).await.unwrap();
    let got = q.reserve("x", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].lease_until_ms, T0 + 3_000);
    clock.advance(Duration::from_secs(2));
    let until = q.extend("x", &id, &got[0].lease_token, None).await.unwrap();
    assert_eq!(until, T0 + 5_000, "job_lease from now, not 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_and_delayed_jobs_join_the_end_of_the_line() {
    // BullMQ appends a retried job, and a delayed one that comes due, to the wait list: a
    // job failing every time cannot hold the head of the queue for all its attempts.
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut poison = job("poison");
    poison.attempts = 3;
    q.add("r", poison).await.unwrap();
    q.add("r", job("b")).await.unwrap();
    q.add("r", job("c")).await.unwrap();
    let mut order = Vec::new();
    loop {
        let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
        let Some(j) = got.first() else { break };
        order.push(format!("{}#{}", j.name, j.attempt));
        if j.name == "poison" {
            q.fail("r", &j.id, &j.lease_token, "boom", true)
                .await
                .unwrap();
        } else {
            q.ack("r", &j.id, &j.lease_token, None).await.unwrap();
        }
    }
    assert_eq!(order, ["poison#1", "b#1", "c#1", "poison#2", "poison#3"]);

    let mut d = job("d");
    d.delay = Duration::from_secs(5);
    q.add("r", d).await.unwrap();
    q.add("r", job("w0")).await.unwrap();
    q.add("r", job("w1")).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let got = q.reserve("r", 3, None, Duration::ZERO).await.unwrap();
    let names: Vec<&str> = got.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["w0", "w1", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifo_jobs_go_ahead_of_the_others_newest_first() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let lifo = |name: &str| NewJob {
        lifo: true,
        ..job(name)
    };
    q.add("l", job("fifo-1")).await.unwrap();
    q.add("l", lifo("lifo-1")).await.unwrap();
    let mut high = job("prio-1");
    high.priority = 1;
    q.add("l", high).await.unwrap();
    q.add("l", lifo("lifo-2")).await.unwrap();
    q.add("l", job("fifo-2")).await.unwrap();
    let mut later = lifo("lifo-delayed");
    later.delay = Duration::from_secs(10);
    q.add("l", later).await.unwrap();
    let c = q.counts("l").await.unwrap();
    assert_eq!((c.waiting, c.prioritized, c.delayed), (5, 1, 1));
    let got = q.reserve("l", 10, None, Duration::ZERO).await.unwrap();
    let names: Vec<&str> = got.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["lifo-2", "lifo-1", "fifo-1", "fifo-2", "prio-1"]);
    // A delayed lifo job is still lifo once due: ahead of a plain job added before.
    q.add("l", job("fifo-3")).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let got = q.reserve("l", 10, None, Duration::ZERO).await.unwrap();
    let names: Vec<&str> = got.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["lifo-delayed", "fifo-3"]);
    let mut both = lifo("x");
    both.priority = 2;
    let e = q.add("l", both).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::Invalid { what, .. } if what == "lifo"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_by_job_id() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut a = job("a");
    a.job_id = Some("order-7".into());
    assert_eq!(q.add("d", a.clone()).await.unwrap(), "order-7");
    assert_eq!(q.add("d", a.clone()).await.unwrap(), "order-7");
    assert_eq!(q.counts("d").await.unwrap().waiting, 1);
    let got = q.reserve("d", 5, None, Duration::ZERO).await.unwrap();
    q.ack("d", "order-7", &got[0].lease_token, None)
        .await
        .unwrap();
    // Still deduped while the completed record is kept.
    assert_eq!(q.add("d", a).await.unwrap(), "order-7");
    assert_eq!(q.counts("d").await.unwrap().waiting, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_exponential_backoff_then_dead_letter() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut j = job("flaky");
    j.attempts = 3;
    j.backoff = Some(Backoff {
        kind: BackoffKind::Exponential,
        delay_ms: 1000,
        jitter: 0.0,
    });
    let id = q.add("r", j).await.unwrap();
    for (attempt, wait_ms) in [(1u32, 1000u64), (2, 2000)] {
        let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].attempt, attempt);
        let failed = q
            .fail("r", &id, &got[0].lease_token, "boom", true)
            .await
            .unwrap();
        assert_eq!(failed.state, State::Waiting);
        assert_eq!(failed.status(), "delayed", "retried after a backoff");
        assert_eq!(q.get("r", &id).await.unwrap().status(q.now_ms()), "delayed");
        clock.advance(Duration::from_millis(wait_ms - 1));
        assert!(
            q.reserve("r", 1, None, Duration::ZERO)
                .await
                .unwrap()
                .is_empty(),
            "backoff {wait_ms} ms not over"
        );
        clock.advance(Duration::from_millis(1));
    }
    let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].attempt, 3);
    // The old token no longer works.
    let err = q.ack("r", &id, "stale", None).await.unwrap_err();
    assert!(matches!(err, ServiceError::WrongLease { .. }), "{err}");
    assert_eq!(
        q.fail("r", &id, &got[0].lease_token, "boom", true)
            .await
            .unwrap()
            .state,
        State::Failed
    );
    let dead = q.dead_letters("r", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].errors.len(), 3);
    q.retry_dead("r", &id).await.unwrap();
    let again = q.get("r", &id).await.unwrap();
    assert_eq!(again.state, State::Waiting);
    assert_eq!(again.failed_reason, None, "a retried job is not failed");
    assert_eq!(again.errors.len(), 3, "its errors stay as history");
    let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(
        got[0].attempt, 1,
        "retry from the dead-letter set resets attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_redelivered_then_dead_lettered() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let id = q.add("s", job("slow")).await.unwrap();
    let first = q
        .reserve("s", 1, Some(Duration::from_secs(5)), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // Extending keeps it leased past the first deadline.
    q.extend(
        "s",
        &id,
        &first[0].lease_token,
        Some(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(6));
    assert!(q
        .reserve("s", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    clock.advance(Duration::from_secs(5));
    let second = q
        .reserve("s", 1, Some(Duration::from_secs(5)), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "stalled job re-delivered");
    assert_eq!(second[0].attempt, 2);
    let err = q
        .ack("s", &id, &first[0].lease_token, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::WrongLease { .. }));
    // A second stall exceeds max_stalled (1): dead-lettered.
    clock.advance(Duration::from_secs(6));
    assert!(q
        .reserve("s", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let rec = q.get("s", &id).await.unwrap();
    assert_eq!(rec.state, State::Failed);
    assert!(rec.failed_reason.unwrap().contains("stalled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_does_not_count_against_attempts() {
    // BullMQ counts failures in `attemptsMade`, not stalls: attempts 2, one stall, then two
    // failures before the job is dead.
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut j = job("flaky");
    j.attempts = 2;
    let id = q.add("sa", j).await.unwrap();
    let lease = Some(Duration::from_secs(5));
    let first = q.reserve("sa", 1, lease, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    clock.advance(Duration::from_secs(6));
    let second = q.reserve("sa", 1, lease, Duration::ZERO).await.unwrap();
    assert_eq!((second.len(), second[0].attempt), (1, 2), "re-delivered");
    let failed = q
        .fail("sa", &id, &second[0].lease_token, "boom", true)
        .await
        .unwrap();
    assert_eq!(failed.state, State::Waiting, "one failure of two: retried");
    let third = q.reserve("sa", 1, lease, Duration::ZERO).await.unwrap();
    assert_eq!((third.len(), third[0].attempt), (1, 3));
    let failed = q
        .fail("sa", &id, &third[0].lease_token, "boom", true)
        .await
        .unwrap();
    assert_eq!(failed.state, State::Failed, "two failures of two: dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_job_with_remove_on_fail_goes_alone() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let kept = dead_letter(q, "sr", job("kept")).await;
    let mut j = job("gone");
    j.keep_failed = Keep::NONE;
    let id = q.add("sr", j).await.unwrap();
    // Two lease expiries: past max_stalled (1), dead-lettered, which removes it.
    for _ in 0..2 {
        let got = q
            .reserve("sr", 1, Some(Duration::from_secs(5)), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        clock.advance(Duration::from_secs(6));
    }
    assert!(q
        .reserve("sr", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    assert!(q.get("sr", &id).await.is_err(), "the stalled job is gone");
    assert!(
        q.get("sr", &kept).await.is_ok(),
        "the other dead letter stays"
    );
    let c = q.counts("sr").await.unwrap();
    assert_eq!((c.active, c.failed), (0, 1), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_that_died_before_writing_its_records_loses_nothing() {
    let dir = TempDir::new("restart");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(&store, ServicesConfig::default(), clock.clone());
    let q = &node.services.queues;
    q.add("c", job("precious")).await.unwrap();
    // The crash window: a reserve moved the member to `active` (one atomic call) and died
    // before writing the record. Do exactly that call by hand.
    let moved = herd_store::Backend::zmove(
        store.as_ref(),
        "herd:{q:c}:waiting",
        "herd:{q:c}:active",
        f64::INFINITY,
        1,
        (T0 + 30_000) as f64,
    )
    .await
    .unwrap();
    assert_eq!(moved.len(), 1);
    assert!(q
        .reserve("c", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    clock.advance(Duration::from_secs(31));
    let got = q.reserve("c", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "the job comes back after the dead reserve's lease"
    );
    assert_eq!(got[0].name, "precious");
    assert_eq!(got[0].attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_jobs_and_resume_releases_them() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    q.pause("z").await.unwrap();
    q.add("z", job("a")).await.unwrap();
    let c = q.counts("z").await.unwrap();
    assert_eq!((c.waiting, c.paused, c.is_paused), (0, 1, true));
    assert!(q
        .reserve("z", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    q.resume("z").await.unwrap();
    assert_eq!(
        q.reserve("z", 1, None, Duration::ZERO).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_concurrency_cap() {
    let mut config = QueueConfig::default();
    config.queues.insert(
        "limited".into(),
        QueueSettings {
            limiter: Some(Limiter {
                max: 3,
                duration: Duration::from_secs(60),
            }),
            concurrency: None,
        },
    );
    config.queues.insert(
        "capped".into(),
        QueueSettings {
            limiter: None,
            concurrency: Some(2),
        },
    );
    let (_d, node, _clock) = setup(config).await;
    let q = &node.services.queues;
    for name in ["limited", "capped"] {
        q.add_bulk(name, (0..5).map(|i| job(&format!("j{i}"))).collect())
            .await
            .unwrap();
    }
    let got = q.reserve("limited", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 3, "3 per minute");
    assert!(q
        .reserve("limited", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    let got = q.reserve("capped", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2, "2 active at most");
    assert!(q
        .reserve("capped", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    q.ack("capped", &got[0].id, &got[0].lease_token, None)
        .await
        .unwrap();
    assert_eq!(
        q.reserve("capped", 5, None, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// BullMQ's `limiter {max: 3, duration: 1s}`: 3 jobs in a window, then none until it closes
/// (a token bucket would hand out one more every third of a second: up to 2 × max − 1 in the
/// first second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_a_window_of_max_jobs() {
    let mut config = QueueConfig::default();
    config.queues.insert(
        "win".into(),
        QueueSettings {
            limiter: Some(Limiter {
                max: 3,
                duration: Duration::from_secs(1),
            }),
            concurrency: None,
        },
    );
    let (_d, node, clock) = setup(config).await;
    let q = &node.services.queues;
    q.add_bulk("win", (0..20).map(|i| job(&format!("j{i}"))).collect())
        .await
        .unwrap();
    let mut per_window = Vec::new();
    for _ in 0..3 {
        let mut got = 0;
        // Ten reserves spread over the window: only the first 3 jobs come out.
        for _ in 0..10 {
            got += q
                .reserve("win", 5, None, Duration::ZERO)
                .await
                .unwrap()
                .len();
            clock.advance(Duration::from_millis(99));
        }
        per_window.push(got);
        clock.advance(Duration::from_millis(20));
    }
    assert_eq!(per_window, [3, 3, 3]);
}

/// A reserve that finds fewer jobs waiting than its window allows takes only those from the
/// window: the rest is left for the next reserve in the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_counts_only_jobs_handed_out() {
    let mut config = QueueConfig::default();
    config.queues.insert(
        "few".into(),
        QueueSettings {
            limiter: Some(Limiter {
                max: 5,
                duration: Duration::from_secs(60),
            }),
            concurrency: None,
        },
    );
    let (_d, node, _clock) = setup(config).await;
    let q = &node.services.queues;
    for round in 0..5 {
        q.add("few", job(&format!("j{round}"))).await.unwrap();
        let got = q.reserve("few", 5, None, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}");
    }
    q.add("few", job("over")).await.unwrap();
    assert!(q
        .reserve("few", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_and_reserve_hands_out_the_next_job_and_deletes_with_remove_on_complete() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    for name in ["a", "b", "c"] {
        let mut j = job(name);
        j.keep_completed = Keep::NONE;
        q.add("n", j).await.unwrap();
    }
    let mut got = q.reserve("n", 1, None, Duration::ZERO).await.unwrap();
    let mut names = Vec::new();
    while let Some(j) = got.pop() {
        names.push(j.name.clone());
        got = q
            .ack_and_reserve("n", &j.id, &j.lease_token, None, 1, None)
            .await
            .unwrap();
        assert!(matches!(
            q.get("n", &j.id).await,
            Err(ServiceError::NotFound { .. })
        ));
    }
    assert_eq!(names, ["a", "b", "c"]);
    let c = q.counts("n").await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed), (0, 0, 0), "{c:?}");
    // Invalid reserve arguments are refused before the ack.
    q.add("n", job("d")).await.unwrap();
    let d = q
        .reserve("n", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        q.ack_and_reserve("n", &d.id, &d.lease_token, None, 0, None)
            .await,
        Err(ServiceError::Invalid { .. })
    ));
    assert_eq!(q.get("n", &d.id).await.unwrap().state, State::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_that_died_after_deleting_the_record_leaves_nothing_behind() {
    let dir = TempDir::new("ack-crash");
    let store = open_store(&dir, false).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(&store, ServicesConfig::default(), clock.clone());
    let q = &node.services.queues;
    let mut j = job("once");
    j.keep_completed = Keep::NONE;
    j.job_id = Some("once".into());
    q.add("r", j.clone()).await.unwrap();
    let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    // The crash window: the ack deleted the record (its commit point) and died before
    // removing the member from `active`. Do exactly that call by hand.
    assert!(herd_store::Backend::delete(
        store.as_ref(),
        "herd:{q:r}:job:once",
        herd_store::Expect::Any
    )
    .await
    .unwrap());
    assert_eq!(q.counts("r").await.unwrap().active, 1);
    clock.advance(Duration::from_secs(31));
    assert!(q
        .reserve("r", 1, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        q.counts("r").await.unwrap().active,
        0,
        "stalled recovery drops the orphaned member"
    );
    // Again, but the same job_id is added before recovery drops the orphan (which has the
    // new record's member name): the new job is delivered exactly once.
    q.add("r", j.clone()).await.unwrap();
    let got = q.reserve("r", 1, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(herd_store::Backend::delete(
        store.as_ref(),
        "herd:{q:r}:job:once",
        herd_store::Expect::Any
    )
    .await
    .unwrap());
    q.add("r", j).await.unwrap();
    clock.advance(Duration::from_secs(31));
    let again = q.reserve("r", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].attempt, 1);
    q.ack("r", &again[0].id, &again[0].lease_token, None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(31));
    assert!(q
        .reserve("r", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let c = q.counts("r").await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed), (0, 0, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_on_complete_keeps_the_last_n() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    for i in 0..4 {
        let mut j = job(&format!("j{i}"));
        j.keep_completed = Keep::count(2);
        q.add("k", j).await.unwrap();
    }
    for j in q.reserve("k", 4, None, Duration::ZERO).await.unwrap() {
        q.ack("k", &j.id, &j.lease_token, Some(json!(1)))
            .await
            .unwrap();
    }
    assert_eq!(q.counts("k").await.unwrap().completed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_on_complete_by_age_keeps_jobs_finished_within_it() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    // BullMQ `removeOnComplete: {age: 10}`: each ack drops completed jobs older than 10 s.
    let by_age = Keep {
        count: None,
        age_ms: Some(10_000),
    };
    for i in 0..3 {
        let mut j = job(&format!("a{i}"));
        j.keep_completed = by_age;
        q.add("age", j).await.unwrap();
    }
    let mut leased = q.reserve("age", 3, None, Duration::ZERO).await.unwrap();
    leased.sort_by(|a, b| a.name.cmp(&b.name));
    let mut acked = Vec::new();
    for j in leased {
        q.ack("age", &j.id, &j.lease_token, None).await.unwrap();
        acked.push(j.id);
        clock.advance(Duration::from_secs(6));
    }
    // Acks at 0 s, 6 s and 12 s: at a2's ack a0 was 12 s old (removed), a1 6 s old (kept).
    let kept: Vec<String> = q
        .list("age", "completed", 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(kept, acked[1..].to_vec());
    // A job with a count and an age: both bounds hold.
    for i in 0..3 {
        let mut j = job(&format!("b{i}"));
        j.keep_completed = Keep {
            count: Some(1),
            age_ms: Some(60_000),
        };
        q.add("both", j).await.unwrap();
    }
    for j in q.reserve("both", 3, None, Duration::ZERO).await.unwrap() {
        q.ack("both", &j.id, &j.lease_token, None).await.unwrap();
    }
    assert_eq!(q.counts("both").await.unwrap().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_on_fail_by_age_keeps_recent_dead_letters() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    for i in 0..2 {
        let mut j = job(&format!("d{i}"));
        j.keep_failed = Keep {
            count: None,
            age_ms: Some(5_000),
        };
        q.add("fage", j).await.unwrap();
    }
    let leased = q.reserve("fage", 2, None, Duration::ZERO).await.unwrap();
    q.fail("fage", &leased[0].id, &leased[0].lease_token, "boom", false)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(6));
    q.fail("fage", &leased[1].id, &leased[1].lease_token, "boom", false)
        .await
        .unwrap();
    let dead: Vec<String> = q
        .dead_letters("fage", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(dead, vec![leased[1].id.clone()], "the older one went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_on_fail_keeps_the_last_n_dead_letters_and_zero_keeps_none() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut j = job(&format!("f{i}"));
        j.keep_failed = Keep::count(2);
        ids.push(q.add("rf", j).await.unwrap());
    }
    let mut leased = q.reserve("rf", 4, None, Duration::ZERO).await.unwrap();
    // Fail them from f3 down to f0, a second apart: the last two failed are f1 and f0.
    leased.sort_by(|a, b| b.name.cmp(&a.name));
    for j in leased {
        clock.advance(Duration::from_secs(1));
        let state = q
            .fail("rf", &j.id, &j.lease_token, "boom", false)
            .await
            .unwrap()
            .state;
        assert_eq!(state, State::Failed);
    }
    assert_eq!(q.counts("rf").await.unwrap().failed, 2);
    let kept: Vec<String> = q
        .dead_letters("rf", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let mut kept = kept;
    kept.sort();
    let mut want = ids[..2].to_vec();
    want.sort();
    assert_eq!(kept, want, "the last two failed (f1, f0) stay");

    // remove_on_fail = true (keep 0): the dead-lettered job is deleted at once, and only it:
    // a job kept by its own options stays (BullMQ removes only the failing job).
    let kept = dead_letter(q, "rf0", job("kept")).await;
    let mut j = job("gone");
    j.keep_failed = Keep::NONE;
    let id = dead_letter(q, "rf0", j).await;
    assert_eq!(q.counts("rf0").await.unwrap().failed, 1);
    assert!(q.get("rf0", &id).await.is_err(), "the record is gone");
    assert!(
        q.get("rf0", &kept).await.is_ok(),
        "the other dead letter stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_every_adds_one_job_per_firing() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let spec = serde_json::from_value(json!({"name": "tick"})).unwrap();
    let info = q
        .set_schedule(
            "rep",
            "ticker",
            Repeat::Every(Duration::from_secs(60)),
            spec,
        )
        .await
        .unwrap();
    assert_eq!(info.next_ms, T0 + 60_000);
    assert!(q
        .reserve("rep", 5, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    clock.advance(Duration::from_secs(60));
    let got = q.reserve("rep", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, format!("repeat:ticker:{}", T0 + 60_000));
    q.ack("rep", &got[0].id, &got[0].lease_token, None)
        .await
        .unwrap();
    // Ten missed firings add one job, not ten, and the next stays on the minute grid from
    // when the schedule was set (a late run does not push later firings back).
    clock.advance(Duration::from_secs(605));
    let got = q.reserve("rep", 20, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        q.schedule("rep", "ticker").await.unwrap().next_ms,
        T0 + 720_000
    );
    q.ack("rep", &got[0].id, &got[0].lease_token, None)
        .await
        .unwrap();
    q.delete_schedule("rep", "ticker").await.unwrap();
    clock.advance(Duration::from_secs(600));
    assert!(q
        .reserve("rep", 20, None, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

/// Workers that upsert their schedule at every start do not push its firing back: the same
/// interval set again keeps the next firing; a new interval starts a new grid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_the_same_schedule_again_keeps_its_next_firing() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let every = |s| Repeat::Every(Duration::from_secs(s));
    let spec = |name: &str| serde_json::from_value(json!({ "name": name })).unwrap();
    q.set_schedule("up", "s", every(3), spec("a"))
        .await
        .unwrap();
    for _ in 0..4 {
        clock.advance(Duration::from_secs(2));
        let again = q
            .set_schedule("up", "s", every(3), spec("b"))
            .await
            .unwrap();
        assert_eq!(again.next_ms, T0 + 3_000, "kept");
    }
    // Overdue by now (the clock is 5 s past the firing): the upserts did not drop it.
    let got = q.reserve("up", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "b", "the job template is the latest one");
    let changed = q
        .set_schedule("up", "s", every(10), spec("b"))
        .await
        .unwrap();
    assert_eq!(
        changed.next_ms,
        T0 + 8_000 + 10_000,
        "a new interval counts from now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_name_leaves_room_for_its_job_ids() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let spec = || serde_json::from_value(json!({"name": "tick"})).unwrap();
    let every = Repeat::Every(Duration::from_secs(1));
    let err = q
        .set_schedule("long", &"a".repeat(161), every.clone(), spec())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("over 160"), "{err}");
    let longest = "b".repeat(160);
    q.set_schedule("long", &longest, every, spec())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let got = q.reserve("long", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1, "the longest name still fires");
    assert!(got[0].id.starts_with(&format!("repeat:{longest}:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_an_add_from_another_node() {
    let dir = TempDir::new("poll");
    let store = open_store(&dir, false).await;
    let a = Node::start(&store, ServicesConfig::default());
    let b = Node::start(&store, ServicesConfig::default());
    let waiter = {
        let services = Arc::clone(&a.services);
        tokio::spawn(async move {
            services
                .queues
                .reserve("lp", 1, None, Duration::from_secs(20))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.services.queues.add("lp", job("wake")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("reserve should return once the job is added")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "wake");
    // With nothing to get, a short wait returns empty.
    assert!(a
        .services
        .queues
        .reserve("lp", 1, None, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_when_a_delayed_job_comes_due() {
    // The wait used to re-check once a second, so a job delayed 100 ms came after ~1 s.
    let dir = TempDir::new("polldue");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let q = &node.services.queues;
    let mut soon = job("soon");
    soon.delay = Duration::from_millis(100);
    q.add("due", soon).await.unwrap();
    let started = std::time::Instant::now();
    let got = q
        .reserve("due", 1, None, Duration::from_secs(20))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(got.len(), 1);
    assert!(
        took >= Duration::from_millis(100),
        "served before due: {took:?}"
    );
    assert!(
        took < Duration::from_millis(900),
        "a long-poll should wake when the job is due, not at its next 1 s re-check: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_on_a_capped_queue_wakes_when_a_slot_frees() {
    let mut config = QueueConfig::default();
    config.queues.insert(
        "cap".into(),
        QueueSettings {
            limiter: None,
            concurrency: Some(1),
        },
    );
    let dir = TempDir::new("pollcap");
    let store = open_store(&dir, false).await;
    let node = Node::start(
        &store,
        ServicesConfig {
            queues: config,
            ..ServicesConfig::default()
        },
    );
    let q = Arc::clone(&node.services);
    q.queues
        .add_bulk("cap", vec![job("first"), job("second")])
        .await
        .unwrap();
    let held = q
        .queues
        .reserve("cap", 1, None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let started = std::time::Instant::now();
    let waiter = {
        let q = Arc::clone(&q);
        tokio::spawn(async move {
            let got = q
                .queues
                .reserve("cap", 1, None, Duration::from_secs(20))
                .await
                .unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.queues
        .ack("cap", &held[0].id, &held[0].lease_token, None)
        .await
        .unwrap();
    let (got, took) = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "second");
    // Its own re-check comes a second after it started waiting.
    assert!(
        took < Duration::from_millis(900),
        "the ack should wake the waiter, not its 1 s re-check: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedule_fires_in_its_zone() {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let repeat =
        herd_services::queue::Queues::parse_repeat(None, Some("30 9 * * *"), Some("Asia/Kolkata"))
            .unwrap();
    let spec = serde_json::from_value(json!({"name": "poll", "priority": 1})).unwrap();
    let info = q
        .set_schedule("cron", "poller", repeat, spec)
        .await
        .unwrap();
    // 09:30 in Kolkata (UTC+5:30, no daylight saving) is 04:00 UTC, within a day of T0 (read
    // in UTC it would be 09:30).
    const DAY: i64 = 86_400_000;
    assert_eq!(info.next_ms.rem_euclid(DAY), 4 * 3_600_000, "{info:?}");
    assert!(info.next_ms > T0 && info.next_ms <= T0 + DAY, "{info:?}");
    clock.advance(Duration::from_millis(
        u64::try_from(info.next_ms - T0).unwrap(),
    ));
    let got = q.reserve("cron", 5, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_long_polls_and_background_tasks() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let waiter = {
        let services = Arc::clone(&node.services);
        tokio::spawn(async move {
            services
                .queues
                .reserve("idle", 1, None, Duration::from_secs(120))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.shutdown.cancel();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("a long-poll ends at shutdown")
        .unwrap();
    assert!(got.is_empty());
    tokio::time::timeout(Duration::from_secs(10), node.services.closed())
        .await
        .expect("background tasks stop at shutdown");
}

/// Acks `names`' jobs (all leased) in one batch; each keeps what `keeps` says.
async fn batch_ack_keeping(queue: &str, prior: &[&str], batch: &[(&str, Keep)]) -> Vec<String> {
    let (_d, node, clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    for name in prior {
        q.add(queue, job(name)).await.unwrap();
        let got = q.reserve(queue, 1, None, Duration::ZERO).await.unwrap();
        q.ack(queue, &got[0].id, &got[0].lease_token, None)
            .await
            .unwrap();
        clock.advance(Duration::from_millis(5));
    }
    for (name, keep) in batch {
        let mut j = job(name);
        j.keep_completed = *keep;
        q.add(queue, j).await.unwrap();
    }
    let got = q.reserve(queue, 100, None, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), batch.len());
    let acks = got
        .iter()
        .map(|r| herd_services::queue::AckRequest {
            id: r.id.clone(),
            lease_token: r.lease_token.clone(),
            result: None,
        })
        .collect();
    for r in q.ack_many(queue, acks).await.unwrap() {
        r.unwrap();
    }
    let mut names: Vec<String> = q
        .list(queue, "completed", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_ack_trims_completed_jobs_as_acks_one_by_one_would() {
    // As BullMQ, each job's `remove_on_complete` trims when that job completes: the jobs
    // acked after it in the batch are not its to remove.
    let got = batch_ack_keeping(
        "t1",
        &[],
        &[("a", Keep::count(1)), ("b", Keep::ALL), ("c", Keep::ALL)],
    )
    .await;
    assert_eq!(got, ["a", "b", "c"]);
    // p, then p q, then p q r trimmed to q r, then q r s.
    let two = Keep::count(2);
    let got = batch_ack_keeping(
        "t2",
        &[],
        &[("p", two), ("q", two), ("r", two), ("s", Keep::ALL)],
    )
    .await;
    assert_eq!(got, ["q", "r", "s"]);
    // Jobs completed before the batch are the oldest: x y k trimmed to k, then k m.
    let got = batch_ack_keeping(
        "t3",
        &["x", "y"],
        &[("k", Keep::count(1)), ("m", Keep::ALL)],
    )
    .await;
    assert_eq!(got, ["k", "m"]);
    // A count reaching into the batch: x y k m, trimmed to 1 at m.
    let got = batch_ack_keeping(
        "t4",
        &["x", "y"],
        &[("k", Keep::ALL), ("m", Keep::count(1))],
    )
    .await;
    assert_eq!(got, ["m"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_error_names_the_state_the_job_is_in() {
    let (_d, node, _clock) = setup(QueueConfig::default()).await;
    let q = &node.services.queues;
    let mut j = job("r");
    j.attempts = 3;
    j.backoff = Some(Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 3000,
        jitter: 0.0,
    });
    q.add("st", j).await.unwrap();
    let got = q.reserve("st", 1, None, Duration::ZERO).await.unwrap();
    q.fail("st", &got[0].id, &got[0].lease_token, "boom", true)
        .await
        .unwrap();
    let err = q
        .fail("st", &got[0].id, &got[0].lease_token, "boom", true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::WrongLease {
                state: "delayed",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.hint().contains("waits for a retry"), "{}", err.hint());

    q.add("st2", job("once")).await.unwrap();
    let got = q.reserve("st2", 1, None, Duration::ZERO).await.unwrap();
    q.ack("st2", &got[0].id, &got[0].lease_token, None)
        .await
        .unwrap();
    let err = q
        .ack("st2", &got[0].id, &got[0].lease_token, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::WrongLease {
                state: "completed",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.hint().contains("acked already"), "{}", err.hint());
}

/// A store that fails one call in ten (the failure-injecting wrapper): every job an add
/// accepted is processed at least once, and the queue ends with each completed exactly once
/// in its counts. A failed reserve or ack may have done its work before the error (a later
/// call of the same step failed): such jobs come back when their lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_store_failures_lose_no_accepted_job() {
    let dir = TempDir::new("queue-faults");
    let store = open_store(&dir, true).await;
    let clock = Arc::new(ManualClock::new(T0));
    let node = Node::with_clock(
        &store,
        ServicesConfig {
            // Leases lost to failed acks run out again and again: never dead-letter for it.
            queues: QueueConfig {
                max_stalled: 1000,
                ..QueueConfig::default()
            },
            ..ServicesConfig::default()
        },
        clock.clone(),
    );
    let q = &node.services.queues;
    let faults = store.unreliable().unwrap();
    faults.fail_with_probability(0.1, 7);
    let mut accepted = std::collections::HashSet::new();
    let mut attempts = 0;
    while accepted.len() < 200 {
        attempts += 1;
        let i = attempts;
        if let Ok(id) = q.add("f", NewJob::new("j", json!({ "i": i }))).await {
            accepted.insert(id);
        }
    }
    assert!(attempts > 200, "some adds failed: the knob works");
    let mut processed = std::collections::HashMap::<String, u32>::new();
    for _round in 0..500 {
        if let Ok(jobs) = q
            .reserve("f", 50, Some(Duration::from_secs(10)), Duration::ZERO)
            .await
        {
            for j in jobs {
                *processed.entry(j.id.clone()).or_default() += 1;
                let _ = q.ack("f", &j.id, &j.lease_token, None).await;
            }
        }
        let counts = q.counts("f").await;
        if matches!(&counts, Ok(c) if c.completed == 200 && c.active == 0 && c.waiting == 0) {
            break;
        }
        // Leases whose ack failed run out; the next reserve hands their jobs out again.
        clock.advance(Duration::from_secs(11));
    }
    faults.fail_with_probability(0.0, 0);
    assert!(faults.injected() > 20, "{}", faults.injected());
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !processed.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "accepted, never processed: {missing:?}");
    let counts = q.counts("f").await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.active,
            counts.waiting,
            counts.delayed,
            counts.failed
        ),
        (200, 0, 0, 0, 0),
        "{counts:?}"
    );
    // Adds that failed added nothing (the failure came before the store was asked).
    assert_eq!(processed.len(), 200);
}
