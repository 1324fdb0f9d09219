//! Acceptance tests of the foundation: real herd, real demo-app processes, real sockets.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Three-ish demo instances with fast health checks and short stop timeouts.
fn web_config(instances: u32, extra_app: &str) -> String {
    let app = demo_app(
        "web",
        instances,
        &format!("kill_timeout = \"2s\"\ndrain_timeout = \"5s\"\n{extra_app}\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1\nfall = 2"),
    );
    base_config("") + &app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_300_gets_evenly_over_three_instances() {
    let herd = Herd::start(&web_config(3, ""));
    herd.wait_ready("web", 3).await;
    let mut hits: HashMap<String, u32> = HashMap::new();
    for _ in 0..300 {
        let (code, body) = get(&herd.url("/")).await.unwrap();
        assert_eq!(code, 200, "{body}");
        *hits.entry(body.trim().to_owned()).or_default() += 1;
    }
    assert_eq!(hits.len(), 3, "{hits:?}");
    for (who, n) in &hits {
        assert!((99..=101).contains(n), "{who} got {n}: {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_gets_its_port_and_its_names() {
    // herd's admin token (read from its environment, as a Kubernetes Secret passes it) is not
    // the apps'; herd's admin API requires it.
    let herd = Herd::start_with_env(
        &web_config(2, ""),
        &[("HERD_ADMIN_TOKEN", "secret-0123456789abcdef")],
    );
    let instances = herd.wait_ready("web", 2).await;
    for inst in &instances {
        let pid = inst["pid"].as_i64().unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env: HashMap<String, String> = environ
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let id = inst["id"].as_str().unwrap();
        let n: u32 = id.rsplit_once('-').unwrap().1.parse().unwrap();
        assert_eq!(env["HERD_APP"], "web");
        assert_eq!(env["HERD_INSTANCE"], id);
        assert_eq!(env["NODE_APP_INSTANCE"], (n - 1).to_string(), "{id}");
        assert_eq!(env["PORT"], inst["port"].as_u64().unwrap().to_string());
        assert!(
            !env.contains_key("HERD_ADMIN_TOKEN"),
            "{id} got the admin token"
        );
    }
    let (code, body) = get(&herd.admin_url("/cluster/status")).await.unwrap();
    assert_eq!(code, 401, "the environment's token is required: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_an_instance_under_load_fails_no_request() {
    let herd = Herd::start(&web_config(3, ""));
    let before = herd.wait_ready("web", 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(
        herd.url("/"),
        4,
        Duration::from_millis(5),
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = before[0]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let after = herd
        .wait_for(
            "web",
            "the killed instance to be restarted and ready",
            Duration::from_secs(15),
            |i| {
                i.len() == 3
                    && i.iter().all(|x| x["state"] == "ready")
                    && !pids(i).contains(&victim)
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "failures: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(
        report.ok > 100,
        "too little load to mean anything: {report:?}"
    );
    let restarted = after.iter().find(|x| x["id"] == before[0]["id"]).unwrap();
    assert_eq!(restarted["restarts"], 1, "{after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_exits_at_once_ends_errored_with_visible_backoff_and_others_serve() {
    let (a, b) = free_range(4);
    let crasher = format!(
        r#"
[[app]]
name = "crasher"
command = ["sh", "-c", "echo boom >&2; exit 3"]
instances = 1
port_range = "{a}-{b}"
max_restarts = 3
restart_delay = "200ms"
"#
    );
    let herd = Herd::start(&format!("{}{crasher}", web_config(1, "")));
    herd.wait_ready("web", 1).await;
    let mut delays_seen = Vec::new();
    let mut restarting_seen = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let inst = herd.instances("crasher").await;
        let i = &inst[0];
        if i["state"] == "restarting" {
            restarting_seen = true;
            assert!(i["next_restart_in_ms"].as_u64().is_some(), "{i}");
        }
        let d = i["restart_delay_ms"].as_u64().unwrap();
        if delays_seen.last() != Some(&d) {
            delays_seen.push(d);
        }
        if i["state"] == "errored" {
            assert_eq!(i["restarts"], 3, "{i}");
            assert!(i["pid"].is_null());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never errored: {inst:#?}\n{}",
            herd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restarting_seen);
    // 200 → 300 → 450 → 675: the backoff grows by half each restart.
    assert!(
        delays_seen.windows(2).all(|w| w[1] > w[0]),
        "{delays_seen:?}"
    );
    assert!(
        delays_seen.contains(&300) && delays_seen.contains(&450),
        "{delays_seen:?}"
    );
    let (code, _) = get(&herd.url("/")).await.unwrap();
    assert_eq!(code, 200, "the other app keeps serving");
    let (code, body) = get(&herd.admin_url("/health")).await.unwrap();
    assert_eq!(
        code, 503,
        "an app without a ready instance makes herd unhealthy: {body}"
    );
    let logs = herd.cli(&["logs", "crasher", "-n", "1"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("crasher-1.err | boom"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_reload_under_load_fails_nothing_and_replaces_every_pid() {
    let herd = Herd::start(&web_config(3, ""));
    let before = herd.wait_ready("web", 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    // 4 clients × one GET per 20 ms ≈ 200 req/s, for 10 s.
    let load = load(
        herd.url("/"),
        4,
        Duration::from_millis(20),
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = herd.cli(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = herd.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    let after = herd.wait_ready("web", 3).await;
    assert_eq!(
        report.failed,
        0,
        "failures: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.ok > 1000, "{report:?}");
    let old = pids(&before);
    assert!(
        pids(&after).iter().all(|p| !old.contains(p)),
        "{before:#?} {after:#?}"
    );
    for p in old {
        assert!(!alive(p), "old instance {p} still running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_one_spare_port_replaces_every_instance_in_turn() {
    // Two instances on three ports: each replacement needs the port its predecessor's old
    // instance frees when it has drained.
    let (a, b) = free_range(3);
    let app = format!(
        "\n[[app]]\nname = \"web\"\ncommand = [\"{{demo}}\"]\ninstances = 2\nport_range = \"{a}-{b}\"\nkill_timeout = \"2s\"\ndrain_timeout = \"5s\"\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1\nfall = 2\n"
    );
    let herd = Herd::start(&(base_config("") + &app));
    let before = herd.wait_ready("web", 2).await;
    let out = herd.cli(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = herd.wait_ready("web", 2).await;
    let old = pids(&before);
    assert!(
        pids(&after).iter().all(|p| !old.contains(p)),
        "{before:#?} {after:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drain_outlives_a_rolling_reload() {
    let herd = Herd::start(&web_config(2, ""));
    let before = herd.wait_ready("web", 2).await;
    switch(&herd, "web-2", "drain").await;
    let out = herd.cli(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = pids(&before);
    let after = herd
        .wait_for("web", "both replaced", Duration::from_secs(20), |i| {
            i.len() == 2 && pids(i).iter().all(|p| !old.contains(p))
        })
        .await;
    let web2 = after.iter().find(|i| i["id"] == "web-2").unwrap();
    assert_eq!(web2["state"], "draining", "{after:#?}");
    for _ in 0..20 {
        let (code, body) = get(&herd.url("/")).await.unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(
            body.contains("web-1"),
            "a drained slot got a request: {body}"
        );
    }
    switch(&herd, "web-2", "ready").await;
    herd.wait_ready("web", 2).await;
}

/// `POST /loadbalancer/instances/{id}/{action}` (drain, ready, maint), which must succeed.
async fn switch(herd: &Herd, id: &str, action: &str) {
    let url = herd.admin_url(&format!("/loadbalancer/instances/{id}/{action}"));
    let (code, body) = request(http::Method::POST, &url, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_in_maintenance_that_restarts_stays_there_unharmed() {
    let herd = Herd::start(&web_config(
        1,
        "ready_timeout = \"1s\"\nrestart_delay = \"100ms\"",
    ));
    let before = herd.wait_ready("web", 1).await;
    switch(&herd, "web-1", "maint").await;
    let old = pids(&before)[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
    let restarted = herd
        .wait_for("web", "the restart", Duration::from_secs(20), |i| {
            pids(i).first().is_some_and(|p| *p != old)
        })
        .await;
    let pid = pids(&restarted)[0];
    // Its checks are paused, so it cannot become ready: ready_timeout (1 s) must not kill it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let now = herd.instances("web").await;
    assert_eq!(pids(&now), vec![pid], "killed in maintenance: {now:#?}");
    assert!(alive(pid));
    // Out of maintenance, it is checked and joins the rotation.
    switch(&herd, "web-1", "ready").await;
    let ready = herd.wait_ready("web", 1).await;
    assert_eq!(pids(&ready), vec![pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_past_max_memory_is_replaced_gracefully() {
    let herd = Herd::start(&web_config(2, "max_memory = \"64MiB\""));
    let before = herd.wait_ready("web", 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(
        herd.url("/"),
        2,
        Duration::from_millis(10),
        Arc::clone(&stop),
    );
    // Over 64 MiB, under the 96 MiB hard ceiling: replaced start-first.
    let (code, body) = get(&herd.url("/alloc?mb=72")).await.unwrap();
    assert_eq!(code, 200);
    let fat = body.split_whitespace().last().unwrap().to_owned();
    let fat_pid = before.iter().find(|i| i["id"] == fat.as_str()).unwrap()["pid"]
        .as_i64()
        .unwrap() as i32;
    let after = herd
        .wait_for(
            "web",
            "the fat instance to be replaced",
            Duration::from_secs(15),
            |i| {
                i.len() == 2
                    && i.iter().all(|x| x["state"] == "ready")
                    && !pids(i).contains(&fat_pid)
            },
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    let replaced = after.iter().find(|i| i["id"] == fat.as_str()).unwrap();
    assert_eq!(replaced["restarts"], 1);
    let why = replaced["last_exit"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("replaced by herd: over max_memory ("),
        "{replaced}"
    );
    assert!(replaced["rss_bytes"].as_u64().unwrap() < 64 * 1024 * 1024);
    assert!(herd.log().contains("over max_memory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_stops_every_child_in_time() {
    let mut herd = Herd::start(&web_config(3, ""));
    let inst = herd.wait_ready("web", 3).await;
    let children = pids(&inst);
    let mut in_flight = Vec::new();
    for _ in 0..9 {
        let url = herd.url("/sleep?ms=700");
        in_flight.push(tokio::spawn(async move { get(&url).await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    herd.signal(Signal::SIGTERM);
    // While it drains, its health endpoint takes the node out of a balancer's rotation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, body) = get(&herd.admin_url("/health")).await.unwrap();
    assert_eq!((code, body.contains("stopping")), (503, true), "{body}");
    for r in in_flight {
        let (code, body) = r.await.unwrap().unwrap();
        assert_eq!(code, 200, "{body}");
    }
    // kill_timeout is 2s: every child is gone within kill_timeout + 1 s.
    while children.iter().any(|p| alive(*p)) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "children still alive: {:?}",
            children.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        herd.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        herd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_past_max_memory_that_is_not_ready_is_killed() {
    // Listens (so it becomes ready), then stops accepting (out of rotation after `fall` failed
    // checks) and leaks: no start-first replacement applies, yet the limit must hold.
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "leak.py",
        "import os, socket, time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(16)\n\
         time.sleep(1.5); s.close()\n\
         hog = []\n\
         for _ in range(60):\n    hog.append(bytearray(b'x' * (8 << 20))); time.sleep(0.2)\n\
         time.sleep(60)\n",
    );
    let (a, b) = free_range(12);
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"leak\"\ncommand = [\"python3\", \"{}\"]\ninstances = 1\n\
             port_range = \"{a}-{b}\"\nmax_memory = \"64MiB\"\nready_timeout = \"60s\"\n\
             [app.health]\ninterval = \"200ms\"\nfastinter = \"100ms\"\nrise = 1\nfall = 1\n",
            script.display()
        );
    let herd = Herd::start(&config);
    let t0 = Instant::now();
    while !herd
        .log()
        .contains("not replaceable start-first; killing it")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never killed:\n{}",
            herd.log()
        );
        for i in herd.instances("leak").await {
            let rss = i["rss_bytes"].as_u64().unwrap_or(0);
            assert!(rss < 200 << 20, "{rss} bytes against a 64 MiB limit: {i}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_instance_leaking_fast_is_killed_at_the_hard_ceiling() {
    // The first process listens at once and leaks; its replacement takes 20 s to listen. The
    // leaking one may not grow past 1.5 x max_memory while the replacement starts.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = write(
        dir.path(),
        "leak.py",
        &format!(
            "import os, socket, time\n\
             m = {marker:?}\n\
             if os.path.exists(m): time.sleep(20)\n\
             open(m, 'w').close()\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(16)\n\
             time.sleep(1.5)\n\
             hog = []\n\
             for _ in range(60):\n    hog.append(bytearray(b'x' * (8 << 20))); time.sleep(0.2)\n\
             time.sleep(60)\n",
            marker = marker.display().to_string()
        ),
    );
    let (a, b) = free_range(12);
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"leak\"\ncommand = [\"python3\", \"{}\"]\ninstances = 1\n\
             port_range = \"{a}-{b}\"\nmax_memory = \"64MiB\"\nready_timeout = \"60s\"\n",
            script.display()
        );
    let herd = Herd::start(&config);
    herd.wait_ready("leak", 1).await;
    let t0 = Instant::now();
    while !herd.log().contains("killing it") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never killed:\n{}",
            herd.log()
        );
        for i in herd.instances("leak").await {
            let rss = i["rss_bytes"].as_u64().unwrap_or(0);
            assert!(rss < 200 << 20, "{rss} bytes against a 64 MiB limit: {i}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        herd.log()
            .contains("instance over max_memory; replacing it"),
        "{}",
        herd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ctrl_c_delivered_twice_still_drains() {
    // The terminal signals the process group, and a wrapper (npm, `timeout`) forwards the
    // same Ctrl-C: two SIGINTs at once are one request to stop gracefully.
    let mut herd = Herd::start(&web_config(1, ""));
    herd.wait_ready("web", 1).await;
    let url = herd.url("/sleep?ms=1000");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    herd.signal(Signal::SIGINT);
    // Apart enough that the kernel does not merge them into one pending signal.
    tokio::time::sleep(Duration::from_millis(50)).await;
    herd.signal(Signal::SIGINT);
    let (code, body) = slow.await.unwrap().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        herd.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        herd.log()
    );
    assert!(herd.log().contains("ignored a signal"), "{}", herd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_kills_what_the_instances_started_too() {
    // A shell that ignores SIGTERM and runs an app that ignores it too, as its child (a
    // grandchild of herd): the drain cannot finish by itself within kill_timeout.
    let (a, b) = free_range(12);
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"sh\"\ncommand = [\"sh\", \"-c\", \"trap '' TERM; exec 2>/dev/null; python3 -m http.server $PORT --bind 127.0.0.1 & wait\"]\n\
             instances = 1\nport_range = \"{a}-{b}\"\nkill_timeout = \"30s\"\n\
             [app.health]\npath = \"/\"\ninterval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1\n"
        );
    let mut herd = Herd::start(&config);
    let leader = pids(&herd.wait_ready("sh", 1).await)[0];
    // Every process of the instance's group (the shell and the app it started).
    let group: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok()
                == Some(nix::unistd::Pid::from_raw(leader))
        })
        .collect();
    assert!(group.len() >= 2, "the shell and its app: {group:?}");
    herd.signal(Signal::SIGINT);
    tokio::time::sleep(Duration::from_millis(600)).await;
    herd.signal(Signal::SIGINT);
    let code = herd.wait_exit(Duration::from_secs(10));
    assert!(
        matches!(code, Some(c) if c != 0),
        "a cut-short stop is not a success: {code:?}"
    );
    let t0 = Instant::now();
    while group.iter().any(|p| alive(*p)) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "orphans: {:?}\n{}",
            group.iter().filter(|p| alive(**p)).collect::<Vec<_>>(),
            herd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_herd_leaves_no_orphan() {
    let herd = Herd::start(&web_config(3, ""));
    let children = pids(&herd.wait_ready("web", 3).await);
    assert_eq!(children.len(), 3);
    let t0 = Instant::now();
    herd.signal(Signal::SIGKILL);
    while children.iter().any(|p| alive(*p)) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "orphans: {:?}",
            children.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_status_and_logs_through_the_cli() {
    let herd = Herd::start(&web_config(1, ""));
    herd.wait_ready("web", 1).await;
    let out = herd.cli(&["scale", "web", "3", "--reason", "test burst"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_ready("web", 3).await;
    let s = herd.status().await;
    assert_eq!(s["apps"][0]["last_scale"]["reason"], "test burst");
    let out = herd.cli(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "web (command): 3 ready / 3 desired",
        "web-1",
        "web-2",
        "web-3",
        "RSS",
        "REQ/S",
    ] {
        assert!(table.contains(needle), "{needle} missing in:\n{table}");
    }
    // PM2's relative counts: +N adds, -N removes (never "set to N").
    let out = herd.cli(&["scale", "web", "+1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_ready("web", 4).await;
    let out = herd.cli(&["scale", "web", "-3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_ready("web", 1).await;
    // A relative count that would go to zero (or below) is refused: `0` is said outright.
    let out = herd.cli(&["scale", "web", "-5"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("herd scale web 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `max`: one per core of the machine herd runs on (resolved there).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cores < 8 {
        let out = herd.cli(&["scale", "web", "max"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        herd.wait_ready("web", cores).await;
        let out = herd.cli(&["scale", "web", "1"]);
        assert!(out.status.success());
        herd.wait_ready("web", 1).await;
    }
    let out = herd.cli(&["scale", "web", "++2"]);
    assert_eq!(out.status.code(), Some(64), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a count"));
    let out = herd.cli(&["logs", "web", "-n", "5"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("web-1.out | demo-app web-1 listening"));
    for count in ["2", "+2"] {
        let out = herd.cli(&["scale", "nope", count]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no app named \"nope\""));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_new_output() {
    let herd = Herd::start(&web_config(1, ""));
    herd.wait_ready("web", 1).await;
    let mut child = std::process::Command::new(herd_bin())
        .args(["logs", "web", "-f", "-n", "0"])
        .env("HERD_ADMIN_URL", format!("http://127.0.0.1:{}", herd.admin))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    herd.cli(&["reload", "web"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("web-1.out | demo-app web-1 listening"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_for_ready_timeout_shows_why_in_its_last_exit() {
    let (a, b) = free_range(4);
    let never_listens = format!(
        "\n[[app]]\nname = \"mute\"\ncommand = [\"sleep\", \"60\"]\nport_range = \"{a}-{b}\"\nready_timeout = \"1s\"\nkill_timeout = \"1s\"\n[app.health]\nfastinter = \"100ms\"\n"
    );
    // An app listening on IPv6 loopback only (Node 17+ with "localhost"): told so.
    let (c, d) = free_range(4);
    let v6_only = format!(
        "\n[[app]]\nname = \"six\"\ncommand = [\"python3\", \"-c\", \"import os, socket, time; s = socket.socket(socket.AF_INET6); s.bind(('::1', int(os.environ['PORT']))); s.listen(); time.sleep(60)\"]\nport_range = \"{c}-{d}\"\nready_timeout = \"1s\"\nkill_timeout = \"1s\"\n[app.health]\nfastinter = \"100ms\"\n"
    );
    let herd = Herd::start(&(web_config(1, "") + &never_listens + &v6_only));
    herd.wait_ready("web", 1).await;
    let last_exit = |app: &'static str| {
        let herd = &herd;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let inst = herd.instances(app).await;
                if let Some(exit) = inst[0]["last_exit"].as_str() {
                    break exit.to_owned();
                }
                assert!(Instant::now() < deadline, "no last_exit: {inst:#?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let exit = last_exit("mute").await;
    assert!(
        exit.contains("killed by herd: not ready within ready_timeout (last check: connect"),
        "{exit}"
    );
    assert!(
        exit.contains("the app must listen on the port in $PORT"),
        "{exit}"
    );
    let exit = last_exit("six").await;
    assert!(
        exit.contains("listens on [::1]:") && exit.contains("(IPv6) only"),
        "{exit}"
    );
    let out = herd.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mute-1 last exit: "), "{text}");
    // The healthy app has none.
    assert!(!text.contains("web-1 last exit"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_onto_a_broken_build_fails_and_keeps_the_old_instances_serving() {
    // The "build" is a marker file in the app's cwd: `crash` makes it exit at start, `hang`
    // makes it never listen.
    let work = tempfile::tempdir().unwrap();
    let script = "if [ -f crash ]; then echo broken build >&2; exit 1; fi; if [ -f hang ]; then exec sleep 60; fi; exec \"$0\"";
    let app = demo_app(
        "web",
        2,
        &format!(
            "command = [\"sh\", \"-c\", {script:?}, \"{{demo}}\"]\ncwd = \"{}\"\nready_timeout = \"1s\"\nkill_timeout = \"1s\"\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1",
            work.path().display()
        ),
    )
    .replacen("command = [\"{demo}\"]\n", "", 1);
    let herd = Herd::start(&(base_config("") + &app));
    let before = pids(&herd.wait_ready("web", 2).await);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(
        herd.url("/"),
        2,
        Duration::from_millis(10),
        Arc::clone(&stop),
    );

    std::fs::write(work.path().join("crash"), "").unwrap();
    let out = herd.cli(&["reload", "web"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web-1") && err.contains("before becoming ready"),
        "{err}"
    );
    // `herd status` says so too (a reload that a config change started has no one to tell).
    let status = herd.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("last rolling reload failed: ") && text.contains("before becoming ready"),
        "{text}"
    );

    std::fs::remove_file(work.path().join("crash")).unwrap();
    std::fs::write(work.path().join("hang"), "").unwrap();
    let out = herd.cli(&["reload", "web"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not ready within ready_timeout (last check: "),
        "{err}"
    );
    assert_eq!(
        pids(&herd.wait_ready("web", 2).await),
        before,
        "the old instances keep serving"
    );

    std::fs::remove_file(work.path().join("hang")).unwrap();
    let out = herd.cli(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    let after = pids(&herd.wait_ready("web", 2).await);
    assert!(after.iter().all(|p| !before.contains(p)));
    let status = herd.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(!text.contains("last rolling reload failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_onto_a_broken_command_puts_the_old_one_back() {
    let herd = Herd::start(&web_config(2, "ready_timeout = \"2s\""));
    herd.wait_ready("web", 2).await;
    herd.reload_with_command("[\"sh\", \"-c\", \"exit 2\"]");
    let mut said = String::new();
    for _ in 0..100 {
        said = String::from_utf8_lossy(&herd.cli(&["status"]).stdout).into_owned();
        if said.contains("last rolling reload failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        said.contains("the previous command, cwd and env stay in force"),
        "{said}"
    );
    // A new instance starts what ran before, not what could not become ready.
    let out = herd.cli(&["scale", "web", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_ready("web", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_set_by_herd_scale_survives_an_unrelated_config_edit() {
    let herd = Herd::start(&web_config(2, ""));
    herd.wait_ready("web", 2).await;
    let out = herd.cli(&["scale", "web", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_ready("web", 1).await;
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let edited = text.replacen("kill_timeout = \"2s\"", "kill_timeout = \"3s\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&herd.config, &edited).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("instances"), "{said}");
    assert!(said.contains("web: kill_timeout updated"), "{said}");
    assert_eq!(herd.status().await["apps"][0]["desired"], 1);
    // A change of `instances` in the file does set the count.
    std::fs::write(
        &herd.config,
        edited.replacen("instances = 2", "instances = 3", 1),
    )
    .unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("instances 1 → 3"), "{said}");
    assert!(!said.contains("instances updated"), "said once: {said}");
    herd.wait_ready("web", 3).await;
    // A rolling-reload change (env) and one applied at once (balance), in one save: both said.
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let both = text.replacen(
        "kill_timeout = \"3s\"",
        "kill_timeout = \"3s\"\nenv = { GREETING = \"hi\" }\nbalance = \"least_conn\"",
        1,
    );
    assert_ne!(both, text);
    std::fs::write(&herd.config, &both).unwrap();
    let out = herd.cli(&["reload", "--config"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("web: env changed; rolling reload started")
            && said.contains("web: balance updated"),
        "{said}"
    );
    herd.wait_ready("web", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_the_group_gets_kill_timeout_after_its_leader_exits() {
    // The leader (a wrapper shell) dies at SIGTERM at once; a worker it started takes a second
    // to finish: it must get that second (kill_timeout), not SIGKILL with the leader.
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("finished");
    let script = format!(
        "\"$0\" & (trap 'sleep 1; echo ok > {}; exit 0' TERM; while :; do sleep 0.1; done) & wait",
        marker.display()
    );
    let app = demo_app(
        "web",
        1,
        &format!(
            "command = [\"sh\", \"-c\", {script:?}, \"{{demo}}\"]\nkill_timeout = \"5s\"\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1"
        ),
    )
    .replacen("command = [\"{demo}\"]\n", "", 1);
    let mut herd = Herd::start(&(base_config("") + &app));
    herd.wait_ready("web", 1).await;
    herd.signal(Signal::SIGTERM);
    assert!(
        herd.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        herd.log()
    );
    assert!(
        marker.exists(),
        "the worker was killed before it could finish; log:\n{}",
        herd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_answers_failing_checks_is_kept_and_comes_back() {
    // A database-backed health check: 503 while `down` exists. The app itself stays up.
    let dir = tempfile::tempdir().unwrap();
    let down = dir.path().join("down");
    let script = write(
        dir.path(),
        "dep.py",
        &format!(
            "import os, http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       code = 503 if os.path.exists({down:?}) else 200\n\
             \x20       self.send_response(code); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n",
            down = down.display().to_string()
        ),
    );
    let (a, b) = free_range(12);
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"dep\"\ncommand = [\"python3\", \"{}\"]\ninstances = 1\n\
             port_range = \"{a}-{b}\"\nready_timeout = \"1s\"\nmax_restarts = 1\n\
             [app.health]\npath = \"/health\"\ninterval = \"200ms\"\nfastinter = \"100ms\"\nrise = 1\nfall = 1\n",
            script.display()
        );
    let herd = Herd::start(&config);
    let ready = herd.wait_ready("dep", 1).await;
    let pid = ready[0]["pid"].clone();
    std::fs::write(&down, "").unwrap();
    // Several ready_timeouts pass: the instance is out of rotation but never killed, and
    // nothing is counted towards max_restarts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now = herd.instances("dep").await;
    assert_eq!(now[0]["pid"], pid, "restarted: {now:?}\n{}", herd.log());
    assert_eq!(now[0]["state"], "down", "{now:?}");
    assert_eq!(get(&herd.url("/")).await.unwrap().0, 503, "out of rotation");
    std::fs::remove_file(&down).unwrap();
    let back = herd.wait_ready("dep", 1).await;
    assert_eq!(back[0]["pid"], pid, "the same process serves again");
    assert_eq!(get(&herd.url("/")).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_in_keeps_serving_instances_and_drops_the_drained_one() {
    let herd = Herd::start(&web_config(3, ""));
    herd.wait_ready("web", 3).await;
    switch(&herd, "web-1", "drain").await;
    let out = herd.cli(&["scale", "web", "1"]);
    assert!(out.status.success(), "{out:?}");
    let t0 = Instant::now();
    loop {
        let left = herd.instances("web").await;
        let ids: Vec<&str> = left
            .iter()
            .filter(|i| i["state"] != "stopped")
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        if ids.len() == 1 {
            assert_ne!(ids[0], "web-1", "kept the drained instance: {left:?}");
            assert_eq!(
                left.iter().find(|i| i["id"] == ids[0]).unwrap()["state"],
                "ready"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&herd.url("/")).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_is_not_blamed_on_the_instances() {
    let herd = Herd::start(&web_config(1, "ready_timeout = \"1s\"\nmax_restarts = 1"));
    let ready = herd.wait_ready("web", 1).await;
    let pid = ready[0]["pid"].clone();
    // Squeeze herd's descriptor table, then fill it with idle client connections.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &herd.pid().to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limited.success());
    let addr = herd
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            idle.push(s);
        }
    }
    // Several ready_timeouts with every check unable to run: nothing is killed or counted.
    // (herd's own APIs cannot take a connection meanwhile either: look once it has room.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(idle);
    let t0 = Instant::now();
    while get(&herd.url("/")).await.map(|r| r.0).unwrap_or(0) != 200 {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", herd.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = herd.instances("web").await;
    assert_eq!(now[0]["pid"], pid, "{now:?}\n{}", herd.log());
    assert_eq!(now[0]["restarts"], 0, "{now:?}");
    assert!(
        herd.log().contains("herd is out of resources"),
        "{}",
        herd.log()
    );
}

/// The soft "Max open files" of a process, from /proc.
fn soft_nofile(pid: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    line.split_whitespace().nth(3).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_keep_the_open_files_limit_herd_started_with() {
    // A soft limit below the hard one (a shell's 1 024 under a container's million), passed
    // on to herd: herd raises its own, and must hand the original to the app.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).unwrap();
    let herd = Herd::start(&web_config(1, ""));
    let inst = herd.wait_ready("web", 1).await;
    let pid = inst[0]["pid"].as_i64().unwrap().to_string();
    assert_eq!(soft_nofile(&pid), soft_nofile("self"));
    if hard > 1024 {
        assert_eq!(
            soft_nofile(&herd.pid().to_string()),
            hard.to_string(),
            "herd raised its own"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_signal_sigint_reaches_an_app_written_for_pm2() {
    // Cleans up on SIGINT only (PM2's signal) and says so in a file.
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("cleaned");
    let script = write(
        dir.path(),
        "pm2.py",
        &format!(
            "import os, signal, sys, http.server\n\
             def bye(*_):\n\
             \x20   open({done:?}, 'w').write('SIGINT')\n\
             \x20   sys.exit(0)\n\
             signal.signal(signal.SIGINT, bye)\n\
             signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n",
            done = done.display().to_string()
        ),
    );
    let (a, b) = free_range(12);
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"pm2\"\ncommand = [\"python3\", \"{}\"]\ninstances = 1\n\
             port_range = \"{a}-{b}\"\nkill_signal = \"sigint\"\nkill_timeout = \"10s\"\n\
             [app.health]\npath = \"/\"\ninterval = \"200ms\"\nfastinter = \"100ms\"\nrise = 1\n",
            script.display()
        );
    let herd = Herd::start(&config);
    herd.wait_ready("pm2", 1).await;
    let out = herd.cli(&["scale", "pm2", "0"]);
    assert!(out.status.success(), "{out:?}");
    let t0 = Instant::now();
    // SIGTERM is ignored: only SIGINT ends it before kill_timeout's SIGKILL. (The file may be
    // seen created before its content is written: wait for the content.)
    while std::fs::read_to_string(&done).unwrap_or_default() != "SIGINT" {
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "no SIGINT seen\n{}",
            herd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_a_spare_port_says_so() {
    // Two ports, the spare one taken by another process.
    let (a, b) = free_range(2);
    let _other = std::net::TcpListener::bind(("0.0.0.0", b)).unwrap();
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"tight\"\ncommand = [\"{{demo}}\"]\ninstances = 1\nport_range = \"{a}-{b}\"\n"
        );
    let herd = Herd::start(&config);
    herd.wait_ready("tight", 1).await;
    let out = herd.cli(&["reload", "tight"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no free port in port_range"), "{text}");
}

/// `herd reload` of every app goes on past an app that fails (as `pm2 reload all`) and says
/// which were reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_every_app_goes_on_past_one_that_fails() {
    let (a, b) = free_range(4);
    let broken = format!(
        "\n[[app]]\nname = \"broken\"\ncommand = [\"sh\", \"-c\", \"exit 1\"]\nmax_restarts = 0\nport_range = \"{a}-{b}\"\n"
    );
    let herd = Herd::start(
        &(base_config("") + &demo_app("first", 1, "") + &broken + &demo_app("last", 1, "")),
    );
    herd.wait_ready("first", 1).await;
    herd.wait_ready("last", 1).await;
    let before = pids(&herd.instances("last").await);
    let out = herd.cli(&["reload"]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("broken") && text.contains("reloaded: first, last"),
        "{text}"
    );
    herd.wait_ready("last", 1).await;
    let after = pids(&herd.instances("last").await);
    assert_ne!(
        before, after,
        "the app after the failed one was reloaded too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_app_runs_without_a_port_and_stays_out_of_the_gateway() {
    // A queue consumer listens on nothing: with worker = true it is ready once running and
    // is never killed for not answering checks (ready_timeout would otherwise kill it).
    let (a, b) = free_range(4);
    let config = base_config("")
        + &demo_app("web", 1, "")
        + &format!(
            "\n[[app]]\nname = \"jobs\"\ncommand = [\"sleep\", \"600\"]\ninstances = 2\nport_range = \"{a}-{b}\"\nworker = true\nready_timeout = \"1s\"\n"
        );
    let herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    let first = herd.wait_ready("jobs", 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = herd.wait_ready("jobs", 2).await;
    for (x, y) in first.iter().zip(&later) {
        assert_eq!(x["pid"], y["pid"], "not restarted: {later:#?}");
        assert_eq!(y["restarts"], 0, "{later:#?}");
    }
    // Requests go to the app that serves (no route: the first app that is not a worker),
    // and the worker's instances are in no rotation.
    let (code, body) = get(&herd.url("/")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, lb) = get(&herd.admin_url("/loadbalancer/status")).await.unwrap();
    assert_eq!(code, 200);
    let lb: serde_json::Value = serde_json::from_str(&lb).unwrap();
    let jobs = lb["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "jobs");
    assert!(
        jobs.is_none_or(|a| a["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["in_rotation"] == false)),
        "{lb:#}"
    );
    // /health counts a worker's running instances as serving.
    let (code, body) = get(&herd.admin_url("/health")).await.unwrap();
    assert_eq!(code, 200, "{body}");
}

/// Pids of running processes whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rfind(')')
                    .is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z'))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_children_that_left_the_group() {
    // The app starts a helper in a session of its own (Node's `detached: true`, `setsid`):
    // a signal to the instance's process group misses it, and it used to outlive every
    // reload and stop (PM2 kills the whole tree).
    let marker = format!("{}.{}", 900 + std::process::id() % 97, std::process::id());
    let argv = ["sleep", marker.as_str()];
    struct Reap(Vec<&'static str>);
    impl Drop for Reap {
        fn drop(&mut self) {
            for p in pids_running(&self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let leaked: &'static str = Box::leak(marker.clone().into_boxed_str());
    let _reap = Reap(vec!["sleep", leaked]);
    let (a, b) = free_range(4);
    let config = base_config("")
        + &format!(
            "\n[[app]]\nname = \"web\"\ncommand = [\"sh\", \"-c\", \"setsid sleep {marker} & exec {{demo}}\"]\nport_range = \"{a}-{b}\"\nkill_timeout = \"1s\"\n"
        );
    let herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    let mut found = Vec::new();
    for _ in 0..40 {
        found = pids_running(&argv);
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found.len(), 1, "the detached helper runs");
    let out = herd.cli(&["scale", "web", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_running(&argv).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the detached helper outlived its instance; log:\n{}",
            herd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
