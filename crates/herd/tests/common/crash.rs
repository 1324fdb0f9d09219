//! The queue's crash test, shared by the embedded and Redis runs: 10 000 jobs, four workers,
//! herd SIGKILLed three times while they work; every job must be processed at least once, and
//! the duplicates (jobs whose ack died with herd, re-delivered when their lease ran out) are
//! counted and printed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use super::{call, Herd};

async fn api(herd: &Herd, token: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (code, _, text) = call(
        method,
        &herd.services_url(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
    .unwrap_or((0, http::HeaderMap::new(), String::new()));
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn run(herd: &mut Herd, token: &'static str, store: &str) {
    const JOBS: u64 = 10_000;
    let base = herd.services_url("");
    let herd_ref: &Herd = herd;
    for chunk in 0..(JOBS / 100) {
        let jobs: Vec<Value> = (0..100)
            .map(|k| json!({"name": "crash", "data": {"i": chunk * 100 + k}, "attempts": 50}))
            .collect();
        let (code, body) = api(
            herd_ref,
            token,
            Method::POST,
            "/v1/queues/crash/jobs",
            json!({"jobs": jobs}),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let (_, counts) = api(
        herd_ref,
        token,
        Method::GET,
        "/v1/queues/crash",
        Value::Null,
    )
    .await;
    assert_eq!(counts["waiting"], JOBS, "{counts}");

    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (seen, stop, base) = (Arc::clone(&seen), stop.clone(), base.clone());
        workers.push(tokio::spawn(async move {
            let auth = format!("Bearer {token}");
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            while !stop.is_cancelled() {
                let reserve = json!({"max": 20, "lease": "3s", "wait": "1s"}).to_string();
                let got = call(
                    Method::POST,
                    &format!("{base}/v1/queues/crash/reserve"),
                    &headers,
                    reserve,
                )
                .await;
                let jobs = match got {
                    Ok((200, _, text)) => serde_json::from_str::<Value>(&text).unwrap()["jobs"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                    _ => {
                        // herd is down (killed): try again shortly.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                for job in jobs {
                    let i = job["data"]["i"].as_u64().unwrap();
                    *seen.lock().unwrap().entry(i).or_default() += 1;
                    let id = job["id"].as_str().unwrap();
                    let ack = json!({"lease_token": job["lease_token"]}).to_string();
                    // An ack lost with herd makes the job come back: at least once.
                    let _ = call(
                        Method::POST,
                        &format!("{base}/v1/queues/crash/jobs/{id}/ack"),
                        &headers,
                        ack,
                    )
                    .await;
                }
            }
        }));
    }

    let processed = |seen: &Mutex<HashMap<u64, u32>>| seen.lock().unwrap().len() as u64;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    for threshold in [JOBS / 6, JOBS / 3, JOBS / 2] {
        while processed(&seen) < threshold {
            assert!(
                Instant::now() < deadline,
                "stuck at {} processed\n{}",
                processed(&seen),
                herd.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::task::block_in_place(|| herd.kill9_and_restart());
        kills += 1;
    }
    while processed(&seen) < JOBS {
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} jobs processed after {kills} kills\n{}",
            processed(&seen),
            herd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len() as u64,
            JOBS,
            "every accepted job is processed at least once"
        );
        assert!((0..JOBS).all(|i| seen.contains_key(&i)));
    }
    // The workers go on until the queue is done: nothing left waiting, delayed or leased.
    // Deliveries whose ack was lost with a killed herd come back when their 3 s lease runs out
    // (the queue moves them back when a worker reserves), and are processed again.
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let (_, counts) = api(herd, token, Method::GET, "/v1/queues/crash", Value::Null).await;
        if counts["active"] == 0 && counts["waiting"] == 0 && counts["delayed"] == 0 {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "jobs left over after every job was processed: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A job whose delivery was lost to two kills in a row has stalled twice: past
    // `max_stalled` (1) it is dead-lettered (failed), as in BullMQ. Every other job completed.
    let (completed, failed) = (
        counts["completed"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
    );
    assert_eq!(completed + failed, JOBS, "{counts}");
    assert_eq!(counts["paused"], 0, "{counts}");
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let (deliveries, twice) = {
        let seen = seen.lock().unwrap();
        let deliveries: u64 = seen.values().map(|&n| u64::from(n)).sum();
        (deliveries, seen.values().filter(|&&n| n > 1).count())
    };
    let duplicates = deliveries - JOBS;
    let report = format!(
        "queue crash test ({store}): {JOBS} jobs, {kills} kill -9 of herd while 4 workers \
         processed them: every job processed, {deliveries} deliveries, {duplicates} duplicates \
         ({twice} jobs delivered more than once: their ack was lost with herd or came after \
         their lease ran out); {completed} completed, {failed} dead-lettered after stalling twice\n"
    );
    eprint!("{report}");
    std::fs::write(
        super::artifacts_dir().join(format!("queue-crash-{store}.txt")),
        report,
    )
    .unwrap();
}
