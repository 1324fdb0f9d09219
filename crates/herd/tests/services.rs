//! The shared services through a real herd: the variables instances get, sessions shared by
//! instances, the admin's store status, and at-least-once queue delivery across kill -9 of herd
//! on the embedded store. (Redis: `services_redis.rs`.)

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use serde_json::{json, Value};

const TOKEN: &str = "services-test-token-0123456789";

fn config(instances: u32) -> String {
    format!(
        "{}{}\n[services]\nlisten = \"{{services}}\"\ntoken = \"{TOKEN}\"\n",
        base_config(""),
        demo_app("web", instances, "")
    )
}

async fn api(herd: &Herd, method: Method, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_sessions_through_the_services() {
    let herd = Herd::start(&config(2));
    herd.wait_ready("web", 2).await;

    // demo-app's /visits keeps a counter in a herd session: the count goes on whichever
    // instance answers, because the session lives in herd's store.
    let mut cookie = String::new();
    let mut served_by = std::collections::BTreeSet::new();
    for n in 1..=8 {
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("cookie", cookie.as_str())]
        };
        let (code, h, body) = call(Method::GET, &herd.url("/visits"), &headers, "")
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}\n{}", herd.log());
        assert!(body.starts_with(&format!("visit {n} on web-")), "{body}");
        served_by.insert(body.trim().rsplit(' ').next().unwrap().to_owned());
        let set = h["set-cookie"].to_str().unwrap();
        cookie = set.split(';').next().unwrap().to_owned();
    }
    assert_eq!(
        served_by.len(),
        2,
        "round robin spreads the visits: {served_by:?}"
    );

    // The admin API names the store in use.
    let (code, body) = get(&herd.admin_url("/store/status")).await.unwrap();
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["backend"], "embedded", "{status}");
    assert_eq!(status["state"], "ok", "{status}");

    // Store and cache series on /metrics.
    let (code, metrics) = get(&herd.admin_url("/metrics")).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("herd_store_up{backend=\"embedded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herd_cache_lookups_total{level=\"l1\",result=\"miss\"}"),
        "{metrics}"
    );

    // No token, wrong token: 401, and the token is not in herd's log.
    let (code, _, _) = call(Method::GET, &herd.services_url("/v1/cache/stats"), &[], "")
        .await
        .unwrap();
    assert_eq!(code, 401);
    let (code, _, _) = call(
        Method::GET,
        &herd.services_url("/v1/cache/stats"),
        &[("authorization", "Bearer wrong-token-wrong-token")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
    assert!(
        !herd.log().contains(TOKEN),
        "the services token must never be logged"
    );
}

/// 10 000 jobs, four workers, herd killed with SIGKILL three times while they work: every job
/// is processed at least once; duplicates (jobs whose ack was lost with herd) are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_survives_kill_9_of_herd() {
    const JOBS: u64 = 10_000;
    let mut herd = Herd::start(&config(1));
    let base = herd.services_url("");
    let herd_ref = &herd;
    for chunk in 0..(JOBS / 100) {
        let jobs: Vec<Value> = (0..100)
            .map(|k| json!({"name": "crash", "data": {"i": chunk * 100 + k}, "attempts": 50}))
            .collect();
        let (code, body) = api(
            herd_ref,
            Method::POST,
            "/v1/queues/crash/jobs",
            json!({"jobs": jobs}),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let (_, counts) = api(herd_ref, Method::GET, "/v1/queues/crash", Value::Null).await;
    assert_eq!(counts["waiting"], JOBS, "{counts}");

    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (seen, stop, base) = (Arc::clone(&seen), stop.clone(), base.clone());
        workers.push(tokio::spawn(async move {
            let auth = format!("Bearer {TOKEN}");
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
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let deliveries: u64 = seen.values().map(|&n| u64::from(n)).sum();
    let duplicates = deliveries - JOBS;
    eprintln!("queue crash test: {JOBS} jobs, {kills} kill -9 of herd, {deliveries} deliveries, {duplicates} duplicates");
    assert_eq!(
        seen.len() as u64,
        JOBS,
        "every accepted job is processed at least once"
    );
    assert!((0..JOBS).all(|i| seen.contains_key(&i)));
}
