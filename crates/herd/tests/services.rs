//! The shared services through a real herd: the variables instances get, sessions shared by
//! instances, the admin's store status, and at-least-once queue delivery across kill -9 of herd
//! on the embedded store. (Redis: `services_redis.rs`.)

mod common;

use common::*;
use http::Method;
use serde_json::Value;

const TOKEN: &str = "services-test-token-0123456789";

fn config(instances: u32) -> String {
    format!(
        "{}{}\n[services]\nlisten = \"{{services}}\"\ntoken = \"{TOKEN}\"\n",
        base_config(""),
        demo_app("web", instances, "")
    )
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
    let mut herd = Herd::start(&config(1));
    crash::run(&mut herd, TOKEN, "embedded").await;
}
