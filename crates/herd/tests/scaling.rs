//! Autoscaler acceptance: real herd, real demo-app instances, real load on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn ready_count(instances: &[serde_json::Value]) -> usize {
    instances.iter().filter(|i| i["state"] == "ready").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_target_scales_out_within_seconds_and_back_in() {
    let app = demo_app(
        "web",
        1,
        "kill_timeout = \"2s\"\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1\n\
         [app.scaling]\nmin = 1\nmax = 6\ntarget = { concurrency = 4 }\nscale_down = { window = \"5s\" }",
    );
    let herd = Herd::start(&(base_config("") + &app));
    herd.wait_ready("web", 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let load = load(
        herd.url("/sleep?ms=50"),
        24,
        Duration::from_millis(1),
        Arc::clone(&stop),
    );
    let mut scaled_out_after = None;
    while t0.elapsed() < Duration::from_secs(8) {
        if ready_count(&herd.instances("web").await) >= 4 {
            scaled_out_after = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = scaled_out_after.unwrap_or_else(|| {
        panic!(
            "never reached 4 ready instances: {:#?}\n{}",
            futures_instances(&herd),
            herd.log()
        )
    });
    assert!(
        after <= Duration::from_secs(5),
        "4 ready instances only after {after:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );

    let t1 = Instant::now();
    herd.wait_for("web", "scale-in back to 1", Duration::from_secs(20), |i| {
        i.len() == 1
    })
    .await;
    eprintln!(
        "scale-out to 4 ready: {after:?}; back to 1: {:?}",
        t1.elapsed()
    );

    let (code, body) = get(&herd.admin_url("/scaling/status")).await.unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let st = &v["apps"][0]["status"];
    assert_eq!(v["apps"][0]["enabled"], true);
    assert!(
        st["last"]["explanation"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{st}"
    );
    let (_, body) = get(&herd.admin_url("/scaling/events?app=web"))
        .await
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = ev["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["to"].as_u64() > e["from"].as_u64()),
        "{ev}"
    );
    assert!(
        events.iter().any(|e| e["to"].as_u64() < e["from"].as_u64()),
        "{ev}"
    );
    for e in events {
        assert!(!e["decision"]["explanation"]
            .as_str()
            .unwrap_or("")
            .is_empty());
    }
    let (_, metrics) = get(&herd.admin_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("herd_app_instances_desired{app=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herd_scaling_decisions_total{app=\"web\""),
        "{metrics}"
    );
}

fn futures_instances(herd: &Herd) -> String {
    herd.log()
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_to_zero_the_first_request_is_held_and_answered() {
    let app = demo_app(
        "web",
        1,
        "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1\n\
         [app.scaling]\nmin = 0\nmax = 2\ntarget = { concurrency = 10 }\nidle_to_zero = \"1s\"\nscale_down = { window = \"1s\" }",
    );
    let herd = Herd::start(&(base_config("") + &app));
    herd.wait_for(
        "web",
        "scale to zero after idling",
        Duration::from_secs(20),
        |i| i.is_empty(),
    )
    .await;
    // At zero on purpose is healthy: the next request starts an instance.
    let (code, health) = get(&herd.admin_url("/health")).await.unwrap();
    assert_eq!(code, 200, "{health}");
    let t0 = Instant::now();
    let (code, body) = get(&herd.url("/")).await.unwrap();
    assert_eq!(code, 200, "{body}\n{}", herd.log());
    assert!(body.starts_with("hello from web-"), "{body}");
    eprintln!("cold start served in {:?}", t0.elapsed());
    let (_, ev) = get(&herd.admin_url("/scaling/events?app=web"))
        .await
        .unwrap();
    assert!(ev.contains("scale_from_zero"), "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_turned_on_by_a_reload_runs() {
    let health =
        "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1\n";
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, health)));
    herd.wait_ready("web", 1).await;
    let mut text = std::fs::read_to_string(&herd.config).unwrap();
    text.push_str(
        "[app.scaling]\nmin = 0\nmax = 2\ntarget = { concurrency = 10 }\nidle_to_zero = \"1s\"\nscale_down = { window = \"1s\" }\n",
    );
    std::fs::write(&herd.config, text).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("autoscaling on"), "{said}");
    // Its decisions run from now on (the app idles, so it goes to zero).
    herd.wait_for(
        "web",
        "scale to zero after the reload",
        Duration::from_secs(20),
        |i| i.is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_override_and_pause_switch() {
    let app = demo_app(
        "web",
        1,
        "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1\n\
         [app.scaling]\nmin = 1\nmax = 4\ntarget = { concurrency = 10 }\nscale_down = { window = \"1s\" }",
    );
    let herd = Herd::start(&(base_config("") + &app));
    herd.wait_ready("web", 1).await;
    let out = herd.cli(&["scale", "web", "3", "--reason", "launch day"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_ready("web", 3).await;
    // Beyond max: the answer says the count in force, not the one asked for.
    let out = herd.cli(&["scale", "web", "9"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("scaling to 4 instance(s) (asked for 9"),
        "{said}"
    );
    let (_, ev) = get(&herd.admin_url("/scaling/events?app=web"))
        .await
        .unwrap();
    assert!(ev.contains("manual override to 9, held at 4"), "{ev}");
    herd.wait_ready("web", 4).await;
    let out = herd.cli(&["scale", "web", "3", "--reason", "launch day"]);
    assert!(out.status.success());
    herd.wait_for("web", "back to 3", Duration::from_secs(20), |i| {
        i.len() == 3
    })
    .await;
    // The override holds although there is no load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(herd.instances("web").await.len(), 3);
    let (_, st) = get(&herd.admin_url("/scaling/status")).await.unwrap();
    assert!(st.contains("launch day"), "{st}");
    // Pause, clear the override: the count stays while paused.
    let pause_url = herd.admin_url("/scaling/pause");
    let pause = |p: bool| {
        let url = pause_url.clone();
        async move {
            request(
                http::Method::POST,
                &url,
                format!("{{\"app\":\"web\",\"paused\":{p}}}").into(),
            )
            .await
        }
    };
    let (code, _) = request(
        http::Method::POST,
        &pause_url,
        "{\"app\":\"web\",\"paused\":true,\"reason\":\"freeze for the audit\"}".into(),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let (_, st) = get(&herd.admin_url("/scaling/status")).await.unwrap();
    assert!(
        st.contains("\"pause_reason\":\"freeze for the audit\""),
        "{st}"
    );
    let (code, _) = request(
        http::Method::POST,
        &herd.admin_url("/scaling/manual"),
        "{\"app\":\"web\",\"clear\":true}".into(),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(herd.instances("web").await.len(), 3, "paused: no scale-in");
    assert_eq!(pause(false).await.unwrap().0, 200);
    herd.wait_for(
        "web",
        "scale-in after resume",
        Duration::from_secs(15),
        |i| i.len() == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_past_hold_timeout_gets_503_with_retry_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = demo_app(
        "web",
        1,
        "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1\n\
         [app.scaling]\nmin = 0\nmax = 1\ntarget = { concurrency = 10 }\nidle_to_zero = \"1s\"\nscale_down = { window = \"1s\" }\nhold_timeout = \"500ms\"",
    );
    let herd = Herd::start(&(base_config("") + &app));
    herd.wait_for("web", "scale to zero", Duration::from_secs(20), |i| {
        i.is_empty()
    })
    .await;
    // At zero, the app's next start never listens: the held request times out.
    herd.reload_with_command("[\"sleep\", \"60\"]");
    let url = herd.url("/");
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer after hold_timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_down_window_holds_the_count_herd_started_with() {
    // Started with 3 and no traffic: the metrics ask for 1 at once, but a scale-down waits a
    // whole window from the start too.
    let app = demo_app(
        "web",
        3,
        "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1\n\
         [app.scaling]\nmin = 1\nmax = 4\ntarget = { concurrency = 5 }\nscale_down = { window = \"4s\" }\nwarmup = \"0s\"",
    );
    let herd = Herd::start(&(base_config("") + &app));
    herd.wait_ready("web", 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        herd.status().await["apps"][0]["desired"],
        3,
        "cut before the window"
    );
    herd.wait_for(
        "web",
        "the scale-in after the window",
        Duration::from_secs(20),
        |i| i.len() == 1,
    )
    .await;
}
