//! Several herd nodes on one Redis: they see each other's sessions, locks and rate limits; and
//! what happens while Redis is down (services 503 with the reason, the gateway keeps proxying,
//! L1 keeps serving, automatic reconnection, `/store/status`, a node started meanwhile).

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Method;
use serde_json::{json, Value};

const TOKEN: &str = "redis-test-token-0123456789abcdef";

fn config(redis: &Redis, extra: &str) -> String {
    format!(
        "{}{}\n{extra}\n[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"500ms\"\n[services]\nlisten = \"{{services}}\"\ntoken = \"{TOKEN}\"\n",
        base_config(""),
        demo_app("web", 1, ""),
        redis.url()
    )
}

async fn api(herd: &Herd, method: Method, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    match call(
        method,
        &herd.services_url(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
    {
        Ok((code, _, text)) => (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ),
        Err(e) => (0, Value::String(e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_herds_share_sessions_locks_and_rate_limits() {
    let redis = Redis::start();
    // 1 request a minute with a burst of 2: three requests in all, across both nodes.
    let limit = "[[rate_limit]]\nname = \"everyone\"\nkey = \"route\"\nrate = \"1r/m\"\nburst = 2\nnodelay = true\nshared = true\n";
    let a = Herd::start(&config(&redis, limit));
    let b = Herd::start(&config(&redis, limit));
    a.wait_ready("web", 1).await;
    b.wait_ready("web", 1).await;

    // Sessions: written on A, read and merged on B, read back on A.
    let (code, created) = api(
        &a,
        Method::POST,
        "/v1/sessions",
        json!({"data": {"user": "ada"}, "ttl": "1h"}),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (code, seen) = api(&b, Method::GET, &format!("/v1/sessions/{id}"), Value::Null).await;
    assert_eq!(
        (code, &seen["data"]["user"]),
        (200, &json!("ada")),
        "{seen}"
    );
    let (code, _) = api(
        &b,
        Method::PATCH,
        &format!("/v1/sessions/{id}"),
        json!({"data": {"cart": 3}}),
    )
    .await;
    assert_eq!(code, 200);
    let (_, back) = api(&a, Method::GET, &format!("/v1/sessions/{id}"), Value::Null).await;
    assert_eq!(back["data"], json!({"user": "ada", "cart": 3}), "{back}");

    // Locks: held on A, refused on B, then B gets it with a larger fence.
    let (code, la) = api(&a, Method::POST, "/v1/locks/report", json!({"ttl": "10s"})).await;
    assert_eq!(code, 200, "{la}");
    let (code, busy) = api(&b, Method::POST, "/v1/locks/report", json!({"ttl": "10s"})).await;
    assert!(
        code == 409 || code == 423,
        "B must not get a held lock: {code} {busy}"
    );
    let (code, _) = api(
        &a,
        Method::DELETE,
        "/v1/locks/report",
        json!({"token": la["token"]}),
    )
    .await;
    assert!((200..300).contains(&code), "release: {code}");
    let (code, lb) = api(&b, Method::POST, "/v1/locks/report", json!({"ttl": "10s"})).await;
    assert_eq!(code, 200, "{lb}");
    assert!(
        lb["fence"].as_u64().unwrap() > la["fence"].as_u64().unwrap(),
        "{la} {lb}"
    );

    // An app's own counters never reach a zone's bucket, whatever their key (the zone's store
    // key was once `herd:{rl:zone:NAME:KEY}`, which `/v1/ratelimit/zone:NAME:KEY` named).
    for _ in 0..5 {
        let (code, v) = api(
            &a,
            Method::POST,
            "/v1/ratelimit/zone:everyone:default",
            json!({"rate": "1r/m"}),
        )
        .await;
        assert_eq!(code, 200, "{v}");
    }
    // The gateway's shared rate limit counts requests to both nodes together.
    let mut allowed = 0;
    let mut limited = 0;
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (code, headers, _) = call(Method::GET, &node.url("/"), &[], "").await.unwrap();
        match code {
            200 => allowed += 1,
            429 => {
                assert!(headers.contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((allowed, limited), (3, 3), "1 + burst 2 across both nodes");

    // The services' own rate-limit counters are shared too.
    let mut verdicts = Vec::new();
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (code, v) = api(
            node,
            Method::POST,
            "/v1/ratelimit/tenant-7",
            json!({"rate": "1r/m", "burst": 1}),
        )
        .await;
        assert_eq!(code, 200, "{v}");
        verdicts.push(v["allowed"].as_bool().unwrap());
    }
    assert_eq!(verdicts, [true, true, false, false]);
}

/// A node whose Redis user loses its pub/sub channels (an ACL change; Redis 7 gives new users
/// none, which herd refuses at start) never hears other nodes' writes again: its subscription
/// is refused without the client library saying so. The store turns `degraded`, the node stops
/// serving L1 copies, and its own writes, which it cannot announce, are not reported as done
/// everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_pubsub_serves_no_stale_l1() {
    let redis = Redis::start();
    let acl = |rules: &[&str]| {
        let mut args = vec!["ACL", "SETUSER", "app"];
        args.extend_from_slice(rules);
        let reply = redis.cli(&args);
        assert!(reply.contains("OK"), "{reply}");
    };
    acl(&["on", ">app-pw", "~*", "allchannels", "+@all"]);
    let a = Herd::start(&config(&redis, ""));
    let user_url = redis.url().replace("redis://", "redis://app:app-pw@");
    let deaf = Herd::start(&config(&redis, "").replace(&redis.url(), &user_url));
    a.wait_ready("web", 1).await;
    deaf.wait_ready("web", 1).await;
    let cache_put = |herd: &Herd, v: &'static str| {
        let url = herd.services_url("/v1/cache/pages/home");
        let auth = format!("Bearer {TOKEN}");
        async move {
            call(Method::PUT, &url, &[("authorization", &auth)], v)
                .await
                .unwrap()
        }
    };
    let cache_get = |herd: &Herd| {
        let url = herd.services_url("/v1/cache/pages/home");
        let auth = format!("Bearer {TOKEN}");
        async move {
            call(Method::GET, &url, &[("authorization", &auth)], "")
                .await
                .unwrap()
        }
    };
    assert_eq!(cache_put(&a, "v1").await.0, 204);
    for _ in 0..2 {
        let (code, _, body) = cache_get(&deaf).await;
        assert_eq!((code, body.as_str()), (200, "v1"));
    }
    acl(&["resetchannels"]);
    // The probe finds out within a second or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(&deaf.admin_url("/store/status")).await.unwrap();
        let status: Value = serde_json::from_str(&text).unwrap();
        if status["state"] == "degraded" {
            assert!(
                status["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("pub/sub channels"),
                "{status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache_put(&a, "v2").await.0, 204);
    let (code, headers, body) = cache_get(&deaf).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "v2"),
        "stale L1 served: {headers:?}"
    );
    let (_, stats) = api(&deaf, Method::GET, "/v1/cache/stats", Value::Null).await;
    assert!(
        stats["l1_bypassed"]
            .as_str()
            .is_some_and(|r| r.contains("degraded")),
        "{stats}"
    );
    // Its own write lands, but other nodes cannot be told: not a silent success.
    let (code, _, body) = cache_put(&deaf, "v3").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("could not be told"), "{body}");
    let (_, _, body) = cache_get(&deaf).await;
    assert_eq!(body, "v3", "the store has it");
    // (A keeps its own L1 copy of v2 until l1_ttl: what the 503 warned of.)
    // The node whose user kept its channels keeps its L1.
    let (_, stats) = api(&a, Method::GET, "/v1/cache/stats", Value::Null).await;
    assert!(stats["l1_bypassed"].is_null(), "{stats}");
}

/// Caches `pages/home` (`{"html": "<h1>hi</h1>"}`, TTL 1 h) in L2 and the node's L1.
async fn cache_home(herd: &Herd) {
    let (code, _) = api(
        herd,
        Method::PUT,
        "/v1/cache/pages/home?ttl=1h",
        json!({"html": "<h1>hi</h1>"}),
    )
    .await;
    assert!((200..300).contains(&code), "cache put: {code}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_and_recovers() {
    let mut redis = Redis::start();
    // A rate limit counted in Redis: without Redis it counts on this node, and proxying goes on.
    let limit = "[[rate_limit]]\nname = \"shared\"\nkey = \"ip\"\nrate = \"1r/m\"\nburst = 3\nnodelay = true\nshared = true\n";
    let herd = Herd::start(&config(&redis, limit));
    herd.wait_ready("web", 1).await;
    let burst = |herd: &Herd| {
        let url = herd.url("/");
        async move {
            let mut codes = Vec::new();
            for _ in 0..20 {
                codes.push(call(Method::GET, &url, &[], "").await.unwrap().0);
            }
            codes
        }
    };
    let codes = burst(&herd).await;
    assert!(codes.contains(&200) && codes.contains(&429), "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    cache_home(&herd).await;
    let (code, _) = api(&herd, Method::GET, "/v1/cache/pages/home", Value::Null).await;
    assert_eq!(code, 200, "fills L1");

    redis.kill();
    // Services that need the store: 503 with the reason.
    let (code, body) = api(&herd, Method::POST, "/v1/sessions", json!({"data": {}})).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a reason: {body}"
    );
    // L1 keeps serving what it holds; the gateway keeps proxying.
    let (code, cached) = api(&herd, Method::GET, "/v1/cache/pages/home", Value::Null).await;
    assert_eq!(code, 200, "{cached}");
    // This node's own count has not been used yet: the first requests pass, then 429 again.
    let codes = burst(&herd).await;
    assert_eq!(codes[..4], [200, 200, 200, 200], "{codes:?}");
    assert!(
        codes.contains(&429),
        "still limited, on this node: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    let (_, status) = get(&herd.admin_url("/store/status")).await.unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["backend"], "redis");
    assert_ne!(status["state"], "ok", "{status}");
    assert!(!status.to_string().contains(TOKEN));
    // A node started while Redis is down comes up: it proxies, and its services say why not.
    let late = Herd::start(&config(&redis, ""));
    late.wait_ready("web", 1).await;
    assert_eq!(
        call(Method::GET, &late.url("/"), &[], "").await.unwrap().0,
        200
    );
    let (code, body) = api(&late, Method::POST, "/v1/sessions", json!({"data": {}})).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not connected")),
        "{body}"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = api(
            &herd,
            Method::POST,
            "/v1/sessions",
            json!({"data": {"back": true}}),
        )
        .await;
        if code == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, status) = get(&herd.admin_url("/store/status")).await.unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "ok", "{status}");
    // The late node connects by itself and sees what the first one wrote.
    loop {
        let (code, body) = api(&late, Method::POST, "/v1/sessions", json!({"data": {}})).await;
        if code == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node started without Redis never connected: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A hung Redis (SIGSTOP: connections stay open, nothing answers): once herd knows its store
/// is out, L1 copies are served at once, not after a store timeout per read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_l1_reads_no_timeout() {
    let redis = Redis::start();
    // A long store timeout, so that a read that waited for Redis stands out.
    let conf = config(&redis, "").replace("timeout = \"500ms\"", "timeout = \"4s\"");
    assert!(conf.contains("timeout = \"4s\""));
    let herd = Herd::start(&conf);
    cache_home(&herd).await;
    redis.freeze(true);
    // The store's probe (or a call) runs into the timeout and says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = get(&herd.admin_url("/store/status")).await.unwrap();
        let status: Value = serde_json::from_str(&status).unwrap();
        if status["state"] == "reconnecting" || status["state"] == "down" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a hung Redis still reads as {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    for _ in 0..5 {
        let (code, cached) = api(&herd, Method::GET, "/v1/cache/pages/home", Value::Null).await;
        assert_eq!(code, 200, "{cached}");
        assert_eq!(cached["html"], "<h1>hi</h1>");
    }
    // Five reads that each waited for the hung store would take 5 x 4 s.
    let took = started.elapsed();
    redis.freeze(false);
    assert!(
        took < Duration::from_secs(4),
        "five L1 reads took {took:?}: they waited for the hung store"
    );
}

/// The queue's crash test on Redis: herd (a node) SIGKILLed three times; the jobs live in Redis,
/// leases run out and re-deliver what the killed node had handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_survives_kill_9_of_a_herd_node() {
    let redis = Redis::start();
    let mut herd = Herd::start(&config(&redis, ""));
    crash::run(&mut herd, TOKEN, "redis").await;
}

/// A `redis-server` that only speaks TLS (`--port 0 --tls-port`), with a self-signed certificate
/// for 127.0.0.1; killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key-file")
            .arg(dir.path().join("key.pem"))
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server with TLS did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsRedis { child, port, dir }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_speak_tls_and_verify_the_server() {
    let redis = TlsRedis::start();
    let config = |url: &str| {
        format!(
            "{}\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:9\"]\n[store]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout = \"500ms\"\n[services]\nlisten = \"{{services}}\"\ntoken = \"{TOKEN}\"\n",
            base_config(""),
        )
    };
    // The server's certificate is trusted through SSL_CERT_FILE (the system store otherwise).
    let ca = redis.dir.path().join("cert.pem");
    let herd = Herd::start_with_env(
        &config(&format!("rediss://127.0.0.1:{}", redis.port)),
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let (code, body) = api(
        &herd,
        Method::POST,
        "/v1/sessions",
        json!({"data": {"user": "tls"}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (code, body) = api(
        &herd,
        Method::GET,
        &format!("/v1/sessions/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (code, &body["data"]["user"]),
        (200, &json!("tls")),
        "{body}"
    );
    let (_, status) = get(&herd.admin_url("/store/status")).await.unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "ok", "{status}");

    // Without trusting that certificate the handshake fails: herd refuses to start and says why.
    let dir = tempfile::tempdir().unwrap();
    let text = config(&format!("rediss://127.0.0.1:{}", redis.port))
        .replace("{gateway}", &format!("127.0.0.1:{}", free_port()))
        .replace("{admin}", &format!("127.0.0.1:{}", free_port()))
        .replace("{services}", &format!("127.0.0.1:{}", free_port()))
        .replace("{logs}", &dir.path().join("logs").display().to_string());
    let path = dir.path().join("herd.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(herd_bin())
        .args(["up", "-c"])
        .arg(&path)
        .env_remove("SSL_CERT_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("herd kept running with an untrusted Redis certificate");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("failed to open the store"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}
