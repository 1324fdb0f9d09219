//! Operations acceptance: Prometheus exposition parsed by the official parser, every documented
//! admin route answers, config reload (broken and good) under load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn fast_health() -> &'static str {
    "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"50ms\"\nrise = 1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_the_official_prometheus_parser() {
    let herd = Herd::start(&(base_config("") + &demo_app("web", 2, fast_health())));
    herd.wait_ready("web", 2).await;
    for _ in 0..20 {
        assert_eq!(get(&herd.url("/")).await.unwrap().0, 200);
    }
    // A keep-alive client that has gone quiet: parked after `idle_release` (50 ms).
    let gateway = herd.url("/");
    let addr = gateway
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // A request the gateway refuses before any route: counted by its status.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut bad = tokio::net::TcpStream::connect(&addr).await.unwrap();
        bad.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = bad.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, text) = get(&herd.admin_url("/metrics")).await.unwrap();
    assert_eq!(code, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "metrics.txt", &text);
    // prometheus_client (Python) is the reference implementation of the text format's parser.
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
names = {f.name: f for f in text_string_to_metric_families(text)}
need = ["herd_http_requests", "herd_http_request_duration_seconds", "herd_app_instances_desired",
        "herd_instance_resident_memory_bytes", "herd_instance_restarts", "herd_upstream_connect_errors",
        "herd_client_connections", "herd_client_connections_accepted",
        "herd_gateway_thread_connections", "herd_gateway_refused_requests",
        "herd_app_queued_requests", "herd_app_instances_in_rotation"]
missing = [n for n in need if n not in names]
assert not missing, f"missing families: {missing}; have {sorted(names)}"
total = sum(s.value for s in names["herd_http_requests"].samples
            if s.name == "herd_http_requests_total" and s.labels.get("status_class") == "2xx")
assert total >= 20, f"2xx requests counted: {total}"
assert names["herd_http_request_duration_seconds"].type == "histogram"
accepted = [s.value for s in names["herd_client_connections_accepted"].samples
            if s.name == "herd_client_connections_accepted_total"]
assert accepted and accepted[0] >= 2, f"accepted: {accepted}"
conns = {s.labels["state"]: s.value for s in names["herd_client_connections"].samples}
assert conns.get("parked", 0) >= 1, f"the quiet keep-alive client is parked: {conns}"
refused = {s.labels["code"]: s.value for s in names["herd_gateway_refused_requests"].samples
           if s.name == "herd_gateway_refused_requests_total"}
assert refused.get("400", 0) >= 1 and refused.get("404") == 0, f"refused: {refused}"
rotation = {s.labels["app"]: s.value for s in names["herd_app_instances_in_rotation"].samples}
assert rotation == {"web": 2}, f"in rotation: {rotation}"
queued = {s.labels["app"]: s.value for s in names["herd_app_queued_requests"].samples}
assert queued == {"web": 0}, f"queued: {queued}"
per_thread = {s.labels["thread"]: s.value for s in names["herd_gateway_thread_connections"].samples}
assert len(per_thread) >= 1, f"one series per gateway thread: {per_thread}"
assert sum(per_thread.values()) == sum(conns.values()), f"threads {per_thread} vs states {conns}"
print("ok", len(names))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("python3 is required (scripts/test.sh installs prometheus_client)");
    assert!(
        out.status.success(),
        "parser rejected /metrics (run scripts/test.sh to install prometheus_client):\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_admin_route_exists() {
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, fast_health())));
    herd.wait_ready("web", 1).await;
    let (code, body) = get(&herd.admin_url("/openapi.json")).await.unwrap();
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if path.ends_with("/stream") || path.starts_with("/logs") && method == "get" {
                continue; // streaming bodies; covered by their own tests
            }
            let concrete = path
                .replace("{app}", "web")
                .replace("{id}", "web-1")
                .replace("{action}", "ready")
                .replace("{file}", "app.js");
            let url = herd.admin_url(&concrete);
            let (code, body) = match method.as_str() {
                "get" => get(&url).await.unwrap(),
                "post" => {
                    let body = if concrete == "/scaling/manual" {
                        "{\"app\":\"web\",\"instances\":1}"
                    } else if concrete == "/scaling/pause" {
                        "{\"app\":\"web\",\"paused\":false}"
                    } else {
                        ""
                    };
                    request(http::Method::POST, &url, body.into())
                        .await
                        .unwrap()
                }
                m => panic!("unexpected method {m}"),
            };
            assert!(
                !body.contains("no such admin endpoint") && code != 405,
                "{method} {concrete} is documented but answered {code}: {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_serving_and_a_good_one_changes_routing() {
    let apps = demo_app("web", 2, fast_health()) + &demo_app("api", 1, fast_health());
    let herd = Herd::start(&(base_config("") + &apps));
    herd.wait_ready("web", 2).await;
    herd.wait_ready("api", 1).await;
    let original = std::fs::read_to_string(&herd.config).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = load(
        herd.url("/"),
        4,
        Duration::from_millis(10),
        Arc::clone(&stop),
    );

    // A broken file: rejected with its errors, nothing changes.
    std::fs::write(
        &herd.config,
        format!("{original}\n[[route]]\napp = \"nope\"\nbogus = 1\n"),
    )
    .unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("herd.toml:"),
        "errors name the file and line: {body}"
    );
    assert!(herd.log().contains("config reload rejected"));

    // The CLI says the same, and fails.
    let out = herd.cli(&["reload", "--config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("running config stays in force") && err.contains("herd.toml:"),
        "{err}"
    );

    // SIGHUP with the same broken file: logged, still serving.
    herd.signal(nix::sys::signal::Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A good file: /api/ now goes to the api app, everything else stays on web.
    std::fs::write(
        &herd.config,
        format!("{original}\n[[route]]\npath_prefix = \"/api/\"\napp = \"api\"\n[[route]]\napp = \"web\"\n"),
    )
    .unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    // Reloading the same file again through the CLI: valid, nothing changed.
    let out = herd.cli(&["reload", "--config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nothing changed"), "{text}");
    let (code, body) = get(&herd.url("/api/x")).await.unwrap();
    assert_eq!(
        code, 404,
        "demo-app has no /api/x; what matters is which app answered"
    );
    assert!(
        body.contains("on api-1"),
        "/api/ goes to the api app after the reload: {body}"
    );
    let (_, who) = get(&herd.url("/")).await.unwrap();
    assert!(who.starts_with("hello from web-"), "{who}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.ok > 100);
    let (_, perf) = get(&herd.admin_url("/health/performance")).await.unwrap();
    assert!(perf.contains("\"1m\""), "{perf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_all_or_nothing_and_remembers_what_needs_a_restart() {
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, fast_health())));
    herd.wait_ready("web", 1).await;
    let original = std::fs::read_to_string(&herd.config).unwrap();

    // A new app whose log directory cannot be made (a file is in the way), a route to it, and
    // a new count for web: valid, but it cannot all be applied, so none of it is.
    std::fs::write(herd.dir.path().join("logs").join("api"), b"in the way").unwrap();
    let apps = demo_app("api", 1, fast_health());
    let with = |apps: &str| {
        original.replace("instances = 1", "instances = 2")
            + apps
            + "
[[route]]
path_prefix = \"/api/\"\napp = \"api\"\n[[route]]\napp = \"web\"\n"
    };
    let with_api = with(&apps.replace("{demo}", &demo_bin().display().to_string()));
    std::fs::write(&herd.config, &with_api).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("cannot apply") && err.contains("log directory"),
        "{err}"
    );
    let (_, body) = get(&herd.url("/api/x")).await.unwrap();
    assert!(body.contains("on web-"), "routing did not change: {body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(herd.instances("web").await.len(), 1, "web was not scaled");

    // The same with a new app whose program is not there: refused, naming the path.
    std::fs::remove_file(herd.dir.path().join("logs").join("api")).unwrap();
    std::fs::write(&herd.config, with(&apps.replace("{demo}", "./no-such-app"))).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("no-such-app: no such file"), "{err}");
    assert_eq!(herd.instances("web").await.len(), 1, "web was not scaled");

    // A setting read at start: reported, and still pending on the next reload.
    let restart_only = original.replacen("[gateway]\n", "[gateway]\nmax_headers = 200\n", 1);
    std::fs::write(&herd.config, &restart_only).unwrap();
    for _ in 0..2 {
        let out = herd.cli(&["reload", "--config"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("nothing applied live") && said.contains("needs a restart: gateway."),
            "{said}"
        );
    }
    // Back to the running value: nothing to do.
    std::fs::write(&herd.config, &original).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("nothing changed") && !said.contains("needs a restart"),
        "{said}"
    );
}

/// A webhook receiver on 127.0.0.1 that keeps every POSTed body.
async fn webhook_receiver() -> (u16, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            if let Ok(v) = serde_json::from_str(&body[..len]) {
                                sink.lock().unwrap().push(v);
                            }
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_alert_fires_to_a_webhook_and_resolves() {
    let (port, got) = webhook_receiver().await;
    let config = format!(
        "{}{}\n[alerts]\ndefaults = false\n\n[[alert]]\nname = \"slow\"\nmetric = \"latency_p95\"\napp = \"web\"\nwarning = \"150ms\"\nfor = \"1s\"\nwebhooks = [\"http://127.0.0.1:{port}/hook\"]\n",
        base_config(""),
        demo_app("web", 1, fast_health())
    );
    let herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    let wait_for_state = |state: &'static str| {
        let got = Arc::clone(&got);
        async move {
            for _ in 0..200 {
                if got.lock().unwrap().iter().any(|v| v["state"] == state) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no {state} webhook; got {:?}", got.lock().unwrap());
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let slow = load(
        herd.url("/sleep?ms=300"),
        4,
        Duration::from_millis(10),
        Arc::clone(&stop),
    );
    wait_for_state("firing").await;
    let (_, alerts) = get(&herd.admin_url("/alerts")).await.unwrap();
    assert!(alerts.contains("\"firing\":1"), "{alerts}");
    stop.store(true, Ordering::Relaxed);
    slow.await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let fast = load(
        herd.url("/"),
        2,
        Duration::from_millis(10),
        Arc::clone(&stop),
    );
    wait_for_state("resolved").await;
    stop.store(true, Ordering::Relaxed);
    fast.await.unwrap();
    let events = got.lock().unwrap().clone();
    let firing = events.iter().find(|v| v["state"] == "firing").unwrap();
    assert_eq!(firing["alert"], "slow");
    assert_eq!(firing["app"], "web");
    assert_eq!(firing["severity"], "warning");
    assert!(herd.log().contains("slow"), "the alert is logged too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_drain_pages_no_one() {
    // `ready below 1` would fire while the drain empties the fleet, and never resolve.
    let (port, got) = webhook_receiver().await;
    let config = format!(
        "{}{}\n[alerts]\ndefaults = false\n\n[[alert]]\nname = \"no_capacity\"\nmetric = \"ready\"\nbelow = true\ncritical = 1\nwebhooks = [\"http://127.0.0.1:{port}/hook\"]\n",
        base_config(""),
        // An app that takes 3 s to stop after SIGTERM: the fleet is empty meanwhile.
        demo_app(
            "web",
            1,
            &format!(
                "command = [\"sh\", \"-c\", {:?}, \"{{demo}}\"]\nkill_timeout = \"5s\"\n{}",
                "\"$0\" & trap 'sleep 3; exit 0' TERM; wait",
                fast_health()
            )
        )
        .replacen("command = [\"{demo}\"]\n", "", 1)
    );
    let mut herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    herd.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        herd.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        herd.log()
    );
    let events = got.lock().unwrap().clone();
    assert!(
        events.is_empty(),
        "alerts sent during the shutdown: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_of_an_app_removed_by_a_reload_resolve_at_once() {
    let (port, got) = webhook_receiver().await;
    let bad = demo_app("bad", 1, fast_health()).replacen(
        "command = [\"{demo}\"]",
        "command = [\"sleep\", \"1000\"]",
        1,
    );
    let rule = format!("\n[alerts]\ndefaults = false\n\n[[alert]]\nname = \"noready\"\nmetric = \"ready\"\nbelow = true\ncritical = 1\nfor = \"0s\"\nwebhooks = [\"http://127.0.0.1:{port}/hook\"]\n");
    let herd = Herd::start(&format!(
        "{}{}{rule}{bad}",
        base_config(""),
        demo_app("web", 1, fast_health())
    ));
    herd.wait_ready("web", 1).await;
    let seen = |state: &'static str| {
        let got = Arc::clone(&got);
        async move {
            for _ in 0..200 {
                if got
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|v| v["state"] == state && v["app"] == "bad")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no {state} webhook for bad; got {:?}", got.lock().unwrap());
        }
    };
    seen("firing").await;
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let cut = text.find("\n[[app]]\nname = \"bad\"").unwrap();
    std::fs::write(&herd.config, &text[..cut]).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Resolved at the reload, not after 5 minutes without data.
    seen("resolved").await;
    let resolved = got
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["state"] == "resolved")
        .cloned()
        .unwrap();
    assert!(
        resolved["summary"].as_str().unwrap().contains("removed"),
        "{resolved}"
    );
    // Once the app has stopped, `GET /alerts` lists no alert of it.
    for _ in 0..100 {
        let (_, alerts) = get(&herd.admin_url("/alerts")).await.unwrap();
        if !alerts.contains("\"bad\"") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, alerts) = get(&herd.admin_url("/alerts")).await.unwrap();
    panic!("alerts of the removed app are still listed: {alerts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_after_logrotate_renamed_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = format!(
        "[gateway]\nlisten = \"{{gateway}}\"\naccess_log = \"{}\"\n[admin]\nlisten = \"{{admin}}\"\n[logs]\ndir = \"{{logs}}\"\n{}",
        log.display(),
        demo_app("web", 1, fast_health())
    );
    let herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| {
                t.lines()
                    .filter(|l| l.contains("\"/first\"") || l.contains("\"/second\""))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let wait_for = |p: std::path::PathBuf, what: &'static str| async move {
        for _ in 0..100 {
            if lines(&p).iter().any(|l| l.contains(what)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} never logged in {}", p.display());
    };
    get(&herd.url("/first")).await.unwrap();
    wait_for(log.clone(), "/first").await;
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    herd.signal(nix::sys::signal::Signal::SIGUSR1);
    // The reopen is asynchronous: wait for the new file before the next request.
    for _ in 0..100 {
        if log.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    get(&herd.url("/second")).await.unwrap();
    wait_for(log.clone(), "/second").await;
    assert_eq!(
        lines(&rotated).len(),
        1,
        "the rotated file keeps the first line only"
    );
    assert!(herd.log().contains("access log reopened"), "{}", herd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_an_app_a_reload_adds_waits_for_its_first_instance() {
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, fast_health())));
    herd.wait_ready("web", 1).await;
    let original = std::fs::read_to_string(&herd.config).unwrap();
    // The new app's first instance is in rotation only after its first check (500 ms).
    let gamma = demo_app(
        "gamma",
        1,
        "[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"500ms\"\nrise = 1",
    )
    .replace("{demo}", &demo_bin().display().to_string());
    std::fs::write(
        &herd.config,
        format!("{original}\n{gamma}\n[[route]]\npath_prefix = \"/\"\napp = \"gamma\"\n"),
    )
    .unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    // Routed to gamma at once: the request waits for its instance instead of a 503.
    let (code, body) = get(&herd.url("/")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("gamma-1"), "{body}");
}
