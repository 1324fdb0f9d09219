//! The gateway against in-process backends on 127.0.0.1: headers, streaming, retries, errors, h2c.

mod common;

use common::endpoint;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_core::Rotation;
use herd_proxy::Gateway;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A backend: `/headers` → request headers as JSON, `/echo` → body, `/slow` → 2 s delay,
/// `/close` → drops the connection without answering, else its name.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let resp = match path.as_str() {
                        "/headers" => {
                            let map: serde_json::Map<String, serde_json::Value> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                .collect();
                            Response::new(Full::new(Bytes::from(serde_json::to_vec(&map).unwrap())))
                        }
                        "/echo" => {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            Response::new(Full::new(body))
                        }
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            Response::new(Full::new(Bytes::from_static(b"late")))
                        }
                        "/close" => return Err("closing"),
                        _ => Response::new(Full::new(Bytes::from(name))),
                    };
                    Ok::<_, &str>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// An address that refuses connections for as long as the returned socket lives: bound, never
/// listening, so no other test's listener can take the port meanwhile.
fn dead_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

struct Running {
    addr: SocketAddr,
    gw: Arc<Gateway>,
    stop: CancellationToken,
    stats: Arc<herd_core::StatsRegistry>,
}

async fn gateway(extra: &str) -> Running {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n"
    );
    let (gw, stats) = common::build(&text);
    let (addr, stop, _) = common::serve(&gw).await;
    Running {
        addr,
        gw,
        stop,
        stats,
    }
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (parts, body) = req.into_parts();
    let mut req = Request::from_parts(parts, body);
    let uri = format!("http://{addr}{}", req.uri().path_and_query().unwrap());
    *req.uri_mut() = uri.parse().unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn forwards_headers_and_strips_hop_by_hop() {
    let gw = gateway("").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let req = Request::get("/headers")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-forwarded-proto", "https")
        .header("keep-alive", "timeout=5")
        .header("x-app", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = send(gw.addr, req).await;
    assert_eq!(status, 200);
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], h["host"]);
    assert_eq!(h["x-app"], "kept");
    assert!(
        h.get("x-private").is_none() && h.get("keep-alive").is_none(),
        "{h}"
    );
    gw.stop.cancel();
}

#[tokio::test]
async fn streams_large_bodies_both_ways() {
    let gw = gateway("").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let payload: Bytes = (0..8 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let req = Request::post("/echo")
        .body(Full::new(payload.clone()))
        .unwrap();
    let (status, body) = send(gw.addr, req).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), payload.len());
    assert!(body == payload);
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_another_instance_even_with_a_body() {
    let gw = gateway("").await;
    let live = backend("live").await;
    let (dead, _dead) = dead_addr();
    gw.gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", dead), endpoint(2, "web-2", live)],
    );
    for i in 0..20 {
        let req = Request::post("/echo")
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .unwrap();
        let (status, body) = send(gw.addr, req).await;
        assert_eq!(status, 200);
        assert_eq!(body, format!("body {i}"));
    }
    let (status, body) = send(gw.addr, get("/")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"live"[..]));
}

#[tokio::test]
async fn nothing_to_serve_is_503_and_a_dead_only_set_is_502() {
    let gw = gateway("").await;
    let (status, body) = send(gw.addr, get("/")).await;
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("no ready instance for app web"));
    let (dead, _dead) = dead_addr();
    gw.gw.set_endpoints("web", vec![endpoint(1, "web-1", dead)]);
    let (status, body) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("bad gateway"), "{text}");
    // The instance's name and the OS error are logged, never shown to the client.
    assert!(
        !text.contains("web-1") && !text.contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_backend_is_504_after_response_timeout() {
    let gw = gateway("response_timeout = \"300ms\"").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let (status, body) = send(gw.addr, get("/slow")).await;
    assert_eq!(status, 504);
    assert!(String::from_utf8_lossy(&body).contains("gateway timeout"));
}

#[tokio::test]
async fn a_post_whose_connection_breaks_after_sending_is_not_replayed() {
    let gw = gateway("retry_on = [\"connect-failure\", \"reset\"]").await;
    let a = endpoint(1, "web-1", backend("a").await);
    let b = endpoint(2, "web-2", backend("b").await);
    let (sa, sb) = (Arc::clone(&a.stats), Arc::clone(&b.stats));
    gw.gw.set_endpoints("web", vec![a, b]);
    let req = Request::post("/close")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let (status, _) = send(gw.addr, req).await;
    assert_eq!(status, 502);
    assert_eq!(
        sa.requests() + sb.requests(),
        1,
        "a POST that reached a backend is sent once"
    );
    // A GET breaking the same way is safe to replay (`retry_on` has "reset"), on the other
    // instance.
    let (status, _) = send(gw.addr, get("/close")).await;
    assert_eq!(status, 502);
    assert_eq!(sa.requests() + sb.requests(), 3);
}

#[tokio::test]
async fn with_retry_on_connect_failure_alone_a_broken_get_is_not_resent() {
    let gw = gateway("retry_on = [\"connect-failure\"]").await;
    let a = endpoint(1, "web-1", backend("a").await);
    let b = endpoint(2, "web-2", backend("b").await);
    let (sa, sb) = (Arc::clone(&a.stats), Arc::clone(&b.stats));
    gw.gw.set_endpoints("web", vec![a, b]);
    let (status, _) = send(gw.addr, get("/close")).await;
    assert_eq!(status, 502);
    assert_eq!(
        sa.requests() + sb.requests(),
        1,
        "only connect failures are retried"
    );
}

#[tokio::test]
async fn by_default_a_get_whose_backend_broke_goes_to_another_instance() {
    let gw = gateway("").await;
    let a = endpoint(1, "web-1", backend("a").await);
    let b = endpoint(2, "web-2", backend("b").await);
    let (sa, sb) = (Arc::clone(&a.stats), Arc::clone(&b.stats));
    gw.gw.set_endpoints("web", vec![a, b]);
    let (status, _) = send(gw.addr, get("/close")).await;
    assert_eq!(status, 502, "both instances break the connection");
    assert_eq!(
        sa.requests() + sb.requests(),
        2,
        "retry_on defaults to connect-failure and reset (nginx proxy_next_upstream error)"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let gw = gateway("").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(
            Request::get(format!("http://{}/", gw.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");
}

#[tokio::test]
async fn in_flight_count_lasts_until_the_body_is_sent() {
    let gw = gateway("").await;
    let ep = endpoint(1, "web-1", backend("a").await);
    let stats = Arc::clone(&ep.stats);
    gw.gw.set_endpoints("web", vec![ep]);
    let (status, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(2), stats.wait_idle())
        .await
        .unwrap();
    assert_eq!(stats.requests(), 1);
}

#[tokio::test]
async fn pooling_can_be_turned_off() {
    let gw = gateway("pool_max_idle = 0").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    for _ in 0..5 {
        let (status, body) = send(gw.addr, get("/")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
    }
}

#[tokio::test]
async fn unrouted_requests_are_404() {
    let gw = gateway("[[route]]\nhost = \"only.example\"\napp = \"web\"").await;
    let (status, body) = send(gw.addr, get("/")).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("no route matches"));
}

// ----- rate limits and connection limits ------------------------------------------------------

/// Status, `Retry-After` and body of one request through a shared client.
async fn send_with_retry_after(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, Option<u64>, String) {
    let resp = client
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Sends `n` requests at once; returns what came back and how long it took.
async fn burst(gw: &Running, n: usize) -> (Vec<(StatusCode, Option<u64>, String)>, Duration) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, addr) = (client.clone(), gw.addr);
        set.spawn(async move { send_with_retry_after(&client, addr, "/").await });
    }
    let results = set.join_all().await;
    (results, started.elapsed())
}

const PER_IP: &str = "[[rate_limit]]\nname = \"per-ip\"\nkey = \"ip\"\n";

#[tokio::test]
async fn a_burst_over_the_rate_gets_429_with_retry_after() {
    let gw = gateway(&format!("{PER_IP}rate = \"5r/s\"\nburst = 0\n")).await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let (results, elapsed) = burst(&gw, 20).await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    // At 5r/s with no burst, at most one request per 200 ms (+1 for the window's edges) passes:
    // with 20 sent, some are rejected unless sending took over 3.6 s.
    let most = 2 + (elapsed.as_secs_f64() * 5.0).ceil() as usize;
    assert!(ok >= 1 && ok <= most, "{ok} admitted in {elapsed:?}");
    for (status, retry_after, body) in results.iter().filter(|r| r.0 != StatusCode::OK) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
        assert!(body.contains("rate limit per-ip exceeded"), "{body}");
    }
    let counted: u64 = gw
        .stats
        .all()
        .iter()
        .map(|s| s.counters().rate_limited)
        .sum();
    assert_eq!(
        counted,
        (results.len() - ok) as u64,
        "rejections are counted"
    );
    gw.stop.cancel();
}

#[tokio::test]
async fn requests_paced_at_the_rate_all_pass() {
    let gw = gateway(&format!("{PER_IP}rate = \"5r/s\"\n")).await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    for _ in 0..5 {
        // 250 ms apart is slower than 5r/s however fast the machine is.
        let (status, _) = send(gw.addr, get("/")).await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gw.stop.cancel();
}

#[tokio::test]
async fn nodelay_admits_the_burst_at_once_then_rejects() {
    // 1r/m: nothing refills during the test.
    let gw = gateway(&format!(
        "{PER_IP}rate = \"1r/m\"\nburst = 5\nnodelay = true\n"
    ))
    .await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let (results, _) = burst(&gw, 10).await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!(ok, 6, "1 + burst admitted: {results:?}");
    for (_, retry_after, _) in results.iter().filter(|r| r.0 != StatusCode::OK) {
        assert!(
            retry_after.is_some_and(|s| (1..=60).contains(&s)),
            "{retry_after:?}"
        );
    }
    gw.stop.cancel();
}

#[tokio::test]
async fn a_burst_without_nodelay_is_delayed_to_the_rate() {
    let gw = gateway(&format!("{PER_IP}rate = \"5r/s\"\nburst = 2\n")).await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let (results, elapsed) = burst(&gw, 3).await;
    assert!(results.iter().all(|r| r.0 == StatusCode::OK), "{results:?}");
    // The third waits for its slot two intervals (400 ms) after the first.
    assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
    gw.stop.cancel();
}

/// An embedded store in a fresh temp dir named after `name` (the dir, to remove after).
async fn temp_store(name: &str) -> (std::path::PathBuf, herd_store::Store) {
    let dir = std::env::temp_dir().join(format!("herd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = herd_store::Store::open(&herd_store::StoreOptions::Embedded {
        path: dir.join("store.redb"),
    })
    .await
    .unwrap();
    (dir, store)
}

/// nginx `delay=`: the first `delay` requests over the rate pass at once, the rest of the burst
/// waits for its slot; the same on one node and counted in a store (`shared = true`).
#[tokio::test]
async fn delay_serves_the_first_excess_requests_at_once() {
    let (dir, store) = temp_store("delay").await;
    let store = Arc::new(store);
    for shared in [false, true] {
        // 1r/m: nothing refills during the test, so a delayed request would wait a minute.
        let gw = gateway(&format!(
            "{PER_IP}rate = \"1r/m\"\nburst = 4\ndelay = 2\nshared = {shared}\n"
        ))
        .await;
        gw.gw.set_shared_store(Arc::clone(&store));
        gw.gw
            .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
        let (results, elapsed) = burst(&gw, 3).await;
        assert!(results.iter().all(|r| r.0 == StatusCode::OK), "{results:?}");
        assert!(
            elapsed < Duration::from_secs(30),
            "1 + delay waited: {elapsed:?}"
        );
        // The fourth is within the burst but past `delay`: it waits for its slot.
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let addr = gw.addr;
        let fourth = tokio::spawn(async move { send_with_retry_after(&client, addr, "/").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !fourth.is_finished(),
            "shared = {shared}: the fourth was not delayed"
        );
        fourth.abort();
        gw.stop.cancel();
    }
    store.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A shared limit whose store hangs (a stopped Redis) counts on this node at once rather than
/// adding the store's timeout to every request it covers.
#[tokio::test]
async fn a_shared_limit_does_not_wait_for_a_hung_store() {
    let (dir, store) = temp_store("hung").await;
    let store = Arc::new(herd_store::Unreliable::wrap(store));
    store
        .unreliable()
        .unwrap()
        .set_latency(Duration::from_secs(5));
    let gw = gateway(&format!(
        "{PER_IP}rate = \"100r/s\"\nburst = 100\nshared = true\n"
    ))
    .await;
    gw.gw.set_shared_store(Arc::clone(&store));
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let started = std::time::Instant::now();
    let (results, _) = burst(&gw, 3).await;
    assert!(results.iter().all(|r| r.0 == StatusCode::OK), "{results:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited for the hung store: {:?}",
        started.elapsed()
    );
    gw.stop.cancel();
    store.unreliable().unwrap().set_latency(Duration::ZERO);
    store.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends a raw HTTP/1.1 GET on `stream` and reads until the server closes or 2 s pass.
async fn raw_get(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn connections_over_max_conn_per_ip_get_503_and_are_closed() {
    let gw = gateway("max_conn_per_ip = 2").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let held = [
        tokio::net::TcpStream::connect(gw.addr).await.unwrap(),
        tokio::net::TcpStream::connect(gw.addr).await.unwrap(),
    ];
    let mut extra = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let answer = raw_get(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("too many connections"), "{answer}");

    // Once one closes, a new connection is served (the count drops when the server sees it).
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let answer = raw_get(&mut s).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop.cancel();
}

#[tokio::test]
async fn an_h2_connection_over_max_conn_per_ip_gets_503_then_goaway() {
    let gw = gateway("max_conn_per_ip = 1").await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", backend("a").await)]);
    let held = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(format!("http://{}/", gw.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The server ends the connection (GOAWAY, then close) instead of refusing every stream
    // for as long as the client keeps it busy.
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the over-limit HTTP/2 connection was not closed")
        .unwrap()
        .ok();
    drop(held);
    gw.stop.cancel();
}

#[tokio::test]
async fn hash_on_a_header_sends_the_same_user_to_the_same_backend() {
    let text = "[gateway]\nlisten = \"127.0.0.1:0\"\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_key = \"header:X-User\"\n";
    let config = herd_config::parse(text, "test.toml", std::path::Path::new(".")).unwrap();
    let gw = Gateway::new(&config, Arc::new(herd_core::StatsRegistry::default()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(Arc::clone(&gw).serve(l, stop.clone()));
    let eps = vec![
        endpoint(1, "web-1", backend("a").await),
        endpoint(2, "web-2", backend("b").await),
        endpoint(3, "web-3", backend("c").await),
    ];
    let stats: Vec<_> = eps.iter().map(|e| Arc::clone(&e.stats)).collect();
    gw.set_endpoints("web", eps);

    let mut seen = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let req = Request::get("/")
                .header("x-user", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let (status, body) = send(addr, req).await;
            assert_eq!(status, 200);
            let first = seen.entry(user).or_insert_with(|| body.clone());
            assert_eq!(*first, body, "user-{user} moved in round {round}");
            // One request at a time: the bounded-load cap never has a reason to move a user.
            for s in &stats {
                tokio::time::timeout(Duration::from_secs(2), s.wait_idle())
                    .await
                    .unwrap();
            }
        }
    }
    let backends: std::collections::HashSet<_> = seen.values().collect();
    assert!(
        backends.len() >= 2,
        "20 users all on one backend: {backends:?}"
    );
    // Without the header the request is still served (round robin).
    let (status, _) = send(addr, get("/")).await;
    assert_eq!(status, 200);
    stop.cancel();
}
