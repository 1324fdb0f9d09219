//! `[[route]]` end to end: matchers (method, header, regex, wildcard host, WebSocket) send
//! requests to different backends; a route rewrites headers both ways, strips a path prefix
//! (keeping the query) and overrides the response timeout and retries.

mod common;

use common::endpoint;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_core::Rotation;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A backend that answers `{"name", "uri", "headers"}` as JSON with `X-Debug` and
/// `Server` response headers; `…/slow` waits 2 s, `…/close` drops the connection. Returns the
/// address and a count of requests received.
async fn backend(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let hits = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let path = req.uri().path();
                        if path.ends_with("/slow") {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        } else if path.ends_with("/close") {
                            return Err("closing");
                        }
                        let headers: serde_json::Map<String, serde_json::Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                            .collect();
                        let body = serde_json::json!({
                            "name": name,
                            "uri": req.uri().to_string(),
                            "headers": headers,
                        });
                        let mut resp = Response::new(Full::new(Bytes::from(
                            serde_json::to_vec(&body).unwrap(),
                        )));
                        resp.headers_mut()
                            .insert("x-debug", "backend".parse().unwrap());
                        resp.headers_mut().insert("server", "node".parse().unwrap());
                        Ok::<_, &str>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    stats: Arc<herd_core::StatsRegistry>,
    hits: Vec<Arc<AtomicUsize>>,
}

/// A gateway with apps `a`, `b` and `c` (two instances each) and the given routes.
async fn gateway(routes: &str) -> Running {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\
         [[app]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\
         [[app]]\nname = \"b\"\nservers = [\"127.0.0.1:1\"]\n\
         [[app]]\nname = \"c\"\nservers = [\"127.0.0.1:1\"]\n{routes}\n"
    );
    let (gw, stats) = common::build(&text);
    let mut hits = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let (one, h1) = backend(name).await;
        let (two, h2) = backend(name).await;
        let uid = 10 * i as u64;
        gw.set_endpoints(
            name,
            vec![
                endpoint(uid + 1, &format!("{name}-1"), one),
                endpoint(uid + 2, &format!("{name}-2"), two),
            ],
        );
        hits.extend([h1, h2]);
    }
    let (addr, stop, _) = common::serve(&gw).await;
    Running {
        addr,
        stop,
        stats,
        hits,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn backend(&self) -> &str {
        self.body["name"].as_str().unwrap_or("-")
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    }
}

#[tokio::test]
async fn method_header_regex_host_and_websocket_pick_the_backend() {
    let gw = gateway(
        r#"
[[route]]
name = "canary"
header = { name = "X-Canary", value = "1" }
app = "b"

[[route]]
methods = ["POST", "PUT"]
app = "c"

[[route]]
path_regex = "^/v[0-9]+/"
app = "b"

[[route]]
host = "*.example.com"
path = "/exact"
app = "c"

[[route]]
websocket = true
app = "c"

[[route]]
app = "a"
"#,
    )
    .await;
    assert_eq!(send(gw.addr, "GET", "/x", &[]).await.backend(), "a");
    assert_eq!(
        send(gw.addr, "GET", "/x", &[("x-canary", "1")])
            .await
            .backend(),
        "b"
    );
    assert_eq!(
        send(gw.addr, "GET", "/x", &[("x-canary", "0")])
            .await
            .backend(),
        "a"
    );
    assert_eq!(send(gw.addr, "POST", "/x", &[]).await.backend(), "c");
    assert_eq!(send(gw.addr, "PUT", "/x", &[]).await.backend(), "c");
    assert_eq!(send(gw.addr, "DELETE", "/x", &[]).await.backend(), "a");
    assert_eq!(
        send(gw.addr, "GET", "/v2/users?x=1", &[]).await.backend(),
        "b"
    );
    assert_eq!(
        send(gw.addr, "GET", "/api/v2/users", &[]).await.backend(),
        "a"
    );
    assert_eq!(
        send(gw.addr, "GET", "/exact", &[("host", "shop.example.com")])
            .await
            .backend(),
        "c"
    );
    assert_eq!(
        send(gw.addr, "GET", "/exact", &[("host", "example.com")])
            .await
            .backend(),
        "a"
    );
    assert_eq!(
        send(gw.addr, "GET", "/exact/", &[("host", "shop.example.com")])
            .await
            .backend(),
        "a"
    );
    assert_eq!(
        send(
            gw.addr,
            "GET",
            "/chat",
            &[("connection", "upgrade"), ("upgrade", "websocket")]
        )
        .await
        .backend(),
        "c"
    );
    // A named route is labelled by its name; the others by their position.
    let labels: Vec<String> = gw
        .stats
        .all()
        .iter()
        .filter(|s| s.counters().responses() > 0)
        .map(|s| format!("{}/{}", s.app, s.route))
        .collect();
    for want in ["b/canary", "c/route1", "b/route2", "c/route3", "a/route5"] {
        assert!(labels.iter().any(|l| l == want), "{want} not in {labels:?}");
    }
    gw.stop.cancel();
}

#[tokio::test]
async fn headers_are_rewritten_both_ways_and_the_prefix_is_stripped() {
    let gw = gateway(
        r#"
[[route]]
path_prefix = "/api/"
strip_prefix = "/api"
request_headers = { add = { "X-From" = "herd" }, remove = ["X-Debug"] }
response_headers = { add = { "X-Served-By" = "herd" }, remove = ["X-Debug", "Server"] }
app = "b"

[[route]]
app = "a"
"#,
    )
    .await;
    let headers = [("x-debug", "1"), ("x-from", "client"), ("x-keep", "yes")];
    let r = send(gw.addr, "GET", "/api/users?id=7&q=a%20b", &headers).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "b");
    assert_eq!(r.body["uri"], "/users?id=7&q=a%20b");
    let sent = &r.body["headers"];
    assert_eq!(sent["x-from"], "herd");
    assert_eq!(sent["x-keep"], "yes");
    assert!(sent.get("x-debug").is_none(), "{sent}");
    assert!(!r.headers.contains_key("x-debug"), "{:?}", r.headers);
    assert!(!r.headers.contains_key("server"));
    assert_eq!(r.headers["x-served-by"], "herd");

    // Other routes are untouched.
    let r = send(gw.addr, "GET", "/users?id=7", &headers).await;
    assert_eq!(r.backend(), "a");
    assert_eq!(r.body["uri"], "/users?id=7");
    assert_eq!(r.body["headers"]["x-debug"], "1");
    assert_eq!(r.headers["x-debug"], "backend");
    assert!(!r.headers.contains_key("x-served-by"));
    gw.stop.cancel();
}

#[tokio::test]
async fn a_route_overrides_the_response_timeout_and_retries() {
    let gw = gateway(
        r#"
[[route]]
path = "/slow"
response_timeout = "100ms"
app = "a"

[[route]]
path = "/close"
retries = false
retry_on = ["reset"]
app = "b"

[[route]]
app = "c"
retry_on = ["reset"]
"#,
    )
    .await;
    let started = std::time::Instant::now();
    let r = send(gw.addr, "GET", "/slow", &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(1));

    // `retries = false`: one instance of b sees the request, and the client gets 502.
    let r = send(gw.addr, "GET", "/close", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let count = |i: usize| gw.hits[i].load(Ordering::SeqCst);
    assert_eq!(count(2) + count(3), 1);
    // `retry_on = ["reset"]` and the default count: a bodiless GET whose connection broke is
    // tried on the other instance.
    let r = send(gw.addr, "GET", "/retry/close", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(count(4) + count(5), 2);
    // Other paths on the same routes are served.
    assert_eq!(send(gw.addr, "GET", "/fast", &[]).await.backend(), "c");
    gw.stop.cancel();
}

#[tokio::test]
async fn a_rate_limit_scoped_to_a_named_route() {
    let gw = gateway(
        r#"
[[route]]
name = "limited"
path_prefix = "/limited/"
app = "b"

[[route]]
app = "a"

[[rate_limit]]
name = "one-a-minute"
key = "ip"
rate = "1r/m"
route = "limited"

[[rate_limit]]
name = "login"
key = "ip"
rate = "1r/m"
path_prefix = "/login/"
"#,
    )
    .await;
    assert_eq!(send(gw.addr, "GET", "/limited/x", &[]).await.status, 200);
    let r = send(gw.addr, "GET", "/limited/x", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // An escaped slash does not slip past a path's limit.
    assert_eq!(send(gw.addr, "GET", "/login/x", &[]).await.status, 200);
    let r = send(gw.addr, "GET", "/login%2Fx", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..3 {
        assert_eq!(send(gw.addr, "GET", "/other", &[]).await.backend(), "a");
    }
    gw.stop.cancel();
}

/// One raw HTTP/1.1 exchange; the status code and the body.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn hosts_are_checked_and_paths_normalised_before_routing() {
    let gw = gateway(
        r#"
[[route]]
host = "echo.test"
app = "a"

[[route]]
path_prefix = "/api/"
strip_prefix = "/api"
app = "c"

[[route]]
app = "b"
"#,
    )
    .await;
    let before: usize = gw.hits.iter().map(|h| h.load(Ordering::SeqCst)).sum();
    for (what, head) in [
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: echo.test\r\nHost: other.com\r\nConnection: close\r\n\r\n",
        ),
        ("no Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
        (
            "user info",
            "GET / HTTP/1.1\r\nHost: a@echo.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "a list",
            "GET / HTTP/1.1\r\nHost: echo.test, other.com\r\nConnection: close\r\n\r\n",
        ),
        (
            "above the root",
            "GET /api/../../etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
        (
            "above the root, by escaped slashes",
            "GET /api%2F..%2F..%2Fetc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let (status, _) = raw(gw.addr, head).await;
        assert_eq!(status, 400, "{what}");
    }
    let after: usize = gw.hits.iter().map(|h| h.load(Ordering::SeqCst)).sum();
    assert_eq!(before, after, "no refused request reached a backend");
    // Absolute form: the URL's host routes, and the backend sees it as Host.
    let (status, body) = raw(
        gw.addr,
        "GET http://echo.test/h HTTP/1.1\r\nHost: other.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["name"], "a");
    assert_eq!(body["headers"]["host"], "echo.test");
    // Paths are normalised before routing and stripping; the backend gets the clean path.
    for (path, app, uri) in [
        (
            "/api//v1/./users/%7Ejohn?x=/../y",
            "c",
            "/v1/users/~john?x=/../y",
        ),
        ("/x/../api/v1", "c", "/v1"),
        ("/api/x/../../etc", "b", "/etc"),
        // Routes read %2F as '/' (as nginx's location does, and as apps that decode the path
        // will): `/api%2Fv1` cannot slip past a rule for `/api/`.
        ("/api%2Fv1", "c", "/v1"),
        ("/api/a%2fb", "c", "/a%2Fb"),
        ("/x%2F..%2Fapi%2Fv1", "c", "/v1"),
    ] {
        let r = send(gw.addr, "GET", path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            (r.backend(), r.body["uri"].as_str().unwrap()),
            (app, uri),
            "{path}"
        );
    }
    gw.stop.cancel();
}
