//! Admin API: token, health, errors; gateway errors when nothing can serve.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_configured() {
    let herd =
        Herd::start(&(base_config("token = \"s3cret-token-0123456\"") + &demo_app("web", 1, "")));
    let (code, body) = get(&herd.admin_url("/cluster/status")).await.unwrap();
    assert_eq!(code, 401, "{body}");
    // A probe in front holds no token: it gets the verdict of /health, not the detail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = get(&herd.admin_url("/health")).await.unwrap();
        if code == 200 || std::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ok"}"#));
    // A wrong token is still refused: a probe holding a stale one finds out.
    let (code, _, _) = call(
        http::Method::GET,
        &herd.admin_url("/health"),
        &[("authorization", "Bearer not-the-token-0123456")],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
    let out = herd.cli(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = herd.cli(&["status", "--token", "s3cret-token-0123456"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Beside the project's herd.toml, the CLI finds that herd's admin address and token by
    // itself (not whatever answers on 9090).
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(&herd.config, project.path().join("herd.toml")).unwrap();
    let out = std::process::Command::new(herd_bin())
        .arg("status")
        .current_dir(project.path())
        .env_remove("HERD_ADMIN_URL")
        .env_remove("HERD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("web"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A file that is not TOML any more (a typo just before `herd reload --config`): the CLI
    // says so instead of trying another herd's default address.
    let text = std::fs::read_to_string(project.path().join("herd.toml")).unwrap();
    std::fs::write(
        project.path().join("herd.toml"),
        format!("[gateway\n{text}"),
    )
    .unwrap();
    let out = std::process::Command::new(herd_bin())
        .args(["reload", "--config"])
        .current_dir(project.path())
        .env_remove("HERD_ADMIN_URL")
        .env_remove("HERD_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("herd.toml:1:")
            && err.contains("is not valid TOML")
            && err.contains("--admin"),
        "{err}"
    );
    assert!(
        !herd.log().contains("s3cret-token-0123456"),
        "the token must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_503_when_no_instance_is_ready_and_health_says_why() {
    let dead = free_port();
    let herd = Herd::start(&format!(
        "{}\n[[app]]\nname = \"static\"\nservers = [\"127.0.0.1:{dead}\"]\n",
        base_config("")
    ));
    let (code, body) = get(&herd.url("/")).await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("no ready instance for app static"), "{body}");
    let (code, body) = get(&herd.admin_url("/health")).await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("\"ready\":0"), "{body}");
    let out = herd.cli(&["scale", "static", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("fixed `servers`"));
    // A fixed server has no start-up to wait out: failing its checks, it is down (HAProxy's
    // DOWN), and the status table says why.
    herd.wait_for(
        "static",
        "the dead server to be down",
        std::time::Duration::from_secs(15),
        |i| i.len() == 1 && i[0]["state"] == "down",
    )
    .await;
    let out = herd.cli(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("down"), "{table}");
    assert!(
        table.contains("static-1 down: last health check:"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_scaled_to_zero_by_hand_is_not_healthy() {
    // Without `[app.scaling] min = 0` no request starts an instance: every one gets 503.
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, "")));
    herd.wait_ready("web", 1).await;
    let out = herd.cli(&["scale", "web", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_for(
        "web",
        "scale to 0",
        std::time::Duration::from_secs(15),
        |i| i.is_empty(),
    )
    .await;
    let (code, body) = get(&herd.admin_url("/health")).await.unwrap();
    assert_eq!(code, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_clear_errors() {
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, "")));
    let (code, body) = request(
        http::Method::POST,
        &herd.admin_url("/scaling/manual"),
        "{\"instances\":\"x\"}".into(),
    )
    .await
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("hint"), "{body}");
    let (code, body) = request(
        http::Method::POST,
        &herd.admin_url("/scaling/manual"),
        "{\"app\":\"web\",\"instances\":9999}".into(),
    )
    .await
    .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("port_range"), "{body}");
    let (code, _) = get(&herd.admin_url("/nope")).await.unwrap();
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_drive_the_tokenless_admin_api() {
    let herd = Herd::start(&(base_config("") + &demo_app("web", 1, "")));
    herd.wait_ready("web", 1).await;
    let drain = herd.admin_url("/loadbalancer/instances/web-1/drain");
    // A page on another site posting to 127.0.0.1 (the browser adds its Origin).
    let (code, _, body) = call(
        http::Method::POST,
        &drain,
        &[("origin", "http://evil.example")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    // DNS rebinding: the page's own name resolves to 127.0.0.1 (the browser sends that Host).
    let (code, _, body) = call(
        http::Method::GET,
        &herd.admin_url("/cluster/status"),
        &[("host", "evil.example:9090")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        herd.instances("web").await[0]["state"],
        "ready",
        "nothing drained"
    );
    // The CLI and same-origin requests (the dashboard) pass.
    let port = herd.admin;
    let (code, _, body) = call(
        http::Method::POST,
        &drain,
        &[("origin", &format!("http://127.0.0.1:{port}"))],
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(herd.cli(&["status"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_servers_keeps_those_that_stay_their_ids_and_marks() {
    let ports = [free_port(), free_port(), free_port()];
    /// Killed on drop, also when an assertion fails (a child left running keeps the test's
    /// output open).
    struct Backends(Vec<std::process::Child>);
    impl Drop for Backends {
        fn drop(&mut self) {
            for b in &mut self.0 {
                let _ = b.kill();
                let _ = b.wait();
            }
        }
    }
    let _backends = Backends(
        ports
            .iter()
            .map(|p| {
                std::process::Command::new(demo_bin())
                    .env("PORT", p.to_string())
                    .env("HERD_INSTANCE", format!("s{p}"))
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let app = |ports: &[u16]| {
        let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        format!(
            "\n[[app]]\nname = \"pool\"\nservers = [{}]\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"500ms\"\nrise = 2\n",
            list.join(", ")
        )
    };
    let herd = Herd::start(&(base_config("") + &app(&ports)));
    herd.wait_ready("pool", 3).await;
    let by_id = |list: &[serde_json::Value]| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = list
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_owned(),
                    i["addr"].as_str().unwrap_or("").to_owned(),
                    i["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = by_id(&herd.instances("pool").await);
    let url = herd.admin_url("/loadbalancer/instances/pool-3/maint");
    let (code, body) = request(http::Method::POST, &url, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    // The first server leaves: the other two keep their ids, state and marks, and requests
    // never find the pool empty meanwhile.
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let first = format!("\"127.0.0.1:{}\", ", ports[0]);
    std::fs::write(&herd.config, text.replace(&first, "")).unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..10 {
        assert_eq!(get(&herd.url("/")).await.unwrap().0, 200);
    }
    let after = by_id(&herd.instances("pool").await);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[1], "pool-2 kept: {before:?} {after:?}");
    assert_eq!(after[1].0, "pool-3");
    assert_eq!(after[1].1, before[2].1, "pool-3 names the same server");
    assert_eq!(after[1].2, "maint", "the operator's mark stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_health_checks_to_fixed_servers() {
    let port = free_port();
    struct Backend(std::process::Child);
    impl Drop for Backend {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _backend = Backend(
        std::process::Command::new(demo_bin())
            .env("PORT", port.to_string())
            .spawn()
            .unwrap(),
    );
    let app = |path: &str| {
        format!(
            "\n[[app]]\nname = \"pool\"\nservers = [\"127.0.0.1:{port}\"]\n[app.health]\npath = \"{path}\"\ninterval = \"200ms\"\nfastinter = \"200ms\"\nrise = 1\nfall = 1\n"
        )
    };
    let herd = Herd::start(&(base_config("") + &app("/health")));
    herd.wait_ready("pool", 1).await;
    // A path the server answers 404 on: the server goes down by the new check, without a
    // restart of herd.
    let text = std::fs::read_to_string(&herd.config).unwrap();
    std::fs::write(&herd.config, text.replace("\"/health\"", "\"/missing\"")).unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("health checks updated on every server"),
        "{body}"
    );
    let mut seen = String::new();
    for _ in 0..50 {
        seen = herd.instances("pool").await[0]["state"]
            .as_str()
            .unwrap()
            .to_owned();
        if seen == "down" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "down");
    // And back.
    std::fs::write(&herd.config, text).unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    herd.wait_ready("pool", 1).await;
}
