//! Acceptance of sticky sessions and the load balancer's admin controls with a real herd and
//! three real demo-app instances: a client stays on one instance through its cookie; when that
//! instance is killed (-9) or drained, the next request succeeds on another one and carries a
//! new cookie. `GET /loadbalancer/status` shows states, weights, checks; `maint` and `ready`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::Signal;
use serde_json::Value;

fn config() -> String {
    // A long restart delay keeps the killed instance's id out of rotation while the test looks.
    let app = demo_app(
        "web",
        3,
        "sticky = { cookie = \"HERD_SRV\", ttl = \"1h\" }\nkill_timeout = \"2s\"\ndrain_timeout = \"2s\"\nrestart_delay = \"30s\"\nmax_restart_delay = \"30s\"\n[app.health]\npath = \"/health\"\ninterval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1\nfall = 2",
    );
    base_config("") + &app
}

/// GET `/` with `cookie`: (status, body, the `HERD_SRV=...` pair of a `Set-Cookie`, if any).
async fn hit(herd: &Herd, cookie: Option<&str>) -> (u16, String, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::get(herd.url("/"));
    if let Some(c) = cookie {
        req = req.header(http::header::COOKIE, c);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let status = resp.status().as_u16();
    let set = resp
        .headers()
        .get(http::header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).trim().to_owned(),
        set,
    )
}

/// `hello from web-2` → `web-2`.
fn served_by(body: &str) -> String {
    body.rsplit(' ').next().unwrap().to_owned()
}

async fn lb_instance(herd: &Herd, id: &str) -> Value {
    let (code, body) = get(&herd.admin_url("/loadbalancer/status")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["apps"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {v:#}"))
}

async fn post(herd: &Herd, path: &str) -> (u16, String) {
    request(http::Method::POST, &herd.admin_url(path), Bytes::new())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stays_on_its_instance_and_moves_with_a_new_cookie_when_it_dies_or_drains() {
    let herd = Herd::start(&config());
    let instances = herd.wait_ready("web", 3).await;

    // Pinned: the first answer sets the cookie, the next ones follow it and set nothing.
    let (code, body, set) = hit(&herd, None).await;
    assert_eq!(code, 200, "{body}");
    let cookie = set.expect("the first response sets HERD_SRV");
    assert!(cookie.starts_with("HERD_SRV=web-"), "{cookie}");
    let first = served_by(&body);
    for _ in 0..20 {
        let (code, body, set) = hit(&herd, Some(&cookie)).await;
        assert_eq!((code, served_by(&body)), (200, first.clone()));
        assert_eq!(set, None);
    }

    // kill -9 the pinned instance: the next request succeeds elsewhere, with a new cookie.
    let pid = instances
        .iter()
        .find(|i| i["id"] == first.as_str())
        .and_then(|i| i["pid"].as_i64())
        .unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let (code, body, set) = hit(&herd, Some(&cookie)).await;
    assert_eq!(code, 200, "{body}");
    let second = served_by(&body);
    assert_ne!(second, first);
    let cookie2 = set.expect("re-stuck with a new cookie");
    assert!(
        cookie2.starts_with(&format!("HERD_SRV={second}.")),
        "{cookie2}"
    );
    for _ in 0..10 {
        let (_, body, set) = hit(&herd, Some(&cookie2)).await;
        assert_eq!(served_by(&body), second);
        assert_eq!(set, None);
    }

    // The status page: weights, checks, circuit.
    let s = lb_instance(&herd, &second).await;
    assert_eq!(s["state"], "ready", "{s}");
    assert_eq!(s["weight"], 1.0, "{s}");
    assert_eq!(s["circuit"], "closed", "{s}");
    assert_eq!(s["last_check"]["ok"], true, "{s}");
    assert_eq!(s["last_check"]["detail"], "HTTP 200", "{s}");
    let at = s["last_check"]["at"].as_str().unwrap();
    assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
    assert!(s["requests"].as_u64().unwrap() >= 11, "{s}");

    // Draining the pinned instance moves the client again.
    let (code, body) = post(&herd, &format!("/loadbalancer/instances/{second}/drain")).await;
    assert_eq!(code, 200, "{body}");
    let (code, body, set) = hit(&herd, Some(&cookie2)).await;
    assert_eq!(code, 200, "{body}");
    let third = served_by(&body);
    assert!(third != second && third != first, "{third}");
    assert!(set.is_some());
    assert_eq!(lb_instance(&herd, &second).await["state"], "draining");

    // Maintenance: out of rotation, checks paused; `ready` puts it back.
    let (code, _) = post(&herd, &format!("/loadbalancer/instances/{third}/maint")).await;
    assert_eq!(code, 200);
    let m = lb_instance(&herd, &third).await;
    assert_eq!(m["state"], "maint", "{m}");
    assert_eq!(m["in_rotation"], false, "{m}");
    let (code, body, _) = hit(&herd, None).await;
    assert_eq!(
        code, 503,
        "drained + maint + killed (restart in 30s) leave nothing: {body}"
    );
    // Checks are paused: the last check stays as it was (three intervals later).
    let before = m["last_check"]["at_unix_ms"].clone();
    assert!(before.is_u64(), "{m}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        lb_instance(&herd, &third).await["last_check"]["at_unix_ms"],
        before
    );
    let (code, _) = post(&herd, &format!("/loadbalancer/instances/{third}/ready")).await;
    assert_eq!(code, 200);
    let (code, body, _) = hit(&herd, None).await;
    assert_eq!((code, served_by(&body)), (200, third.clone()));
    // ... and run again once it is back.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lb_instance(&herd, &third).await["last_check"]["at_unix_ms"] == before {
        assert!(
            std::time::Instant::now() < deadline,
            "checks did not resume after ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = post(&herd, "/loadbalancer/instances/web-1/bogus").await;
    assert_eq!(code, 404, "{body}");
}

/// A backend that answers `/health` with 200 and everything else with 502.
async fn failing_backend() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = conn.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    let head = String::from_utf8_lossy(&buf[..have]).into_owned();
                    let Some(end) = head.find("\r\n\r\n") else {
                        continue;
                    };
                    let code = if head.starts_with("GET /health ") {
                        "200 OK"
                    } else {
                        // A gateway failure: what the breaker counts (a 500 is the app's answer).
                        "502 Bad Gateway"
                    };
                    let answer = format!("HTTP/1.1 {code}\r\ncontent-length: 3\r\n\r\nxyz");
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..have, 0);
                    have -= end + 4;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_an_open_circuit() {
    let port = failing_backend().await;
    let config = format!(
        "[gateway]\nlisten = \"{{gateway}}\"\ncircuit_consecutive = 3\ncircuit_open = \"60s\"\n\
         [admin]\nlisten = \"{{admin}}\"\n[logs]\ndir = \"{{logs}}\"\n\
         [[app]]\nname = \"flaky\"\nservers = [\"127.0.0.1:{port}\"]\nmax_fails = 100\nobserve = \"layer7\"\n\
         [app.health]\npath = \"/health\"\ninterval = \"200ms\"\nrise = 1\n"
    );
    let herd = Herd::start(&config);
    let instances = herd.wait_ready("flaky", 1).await;
    let id = instances[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(lb_instance(&herd, &id).await["circuit"], "closed");
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(hit(&herd, None).await.0);
    }
    // Three 502s reach the instance and open its circuit; then nothing is sent to it.
    assert_eq!(codes, [502, 502, 502, 503, 503]);
    let s = lb_instance(&herd, &id).await;
    assert_eq!(s["circuit"], "open", "{s}");
    assert_eq!(s["failures"], 3, "{s}");
}
