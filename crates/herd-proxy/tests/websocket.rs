//! Upgraded connections through the gateway: WebSocket echo (one client, 1000 at once), the
//! idle timeout, the in-flight count, a tunnel whose bytes look like smuggled HTTP, and an
//! upgrade the backend refuses.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// A plain HTTP/1.1 backend: `Upgrade: echo` switches to a raw byte echo; anything else gets
/// 200 "plain".
async fn raw_echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    // `h2c` too: such a backend (hypercorn, say) would switch if asked.
                    if req
                        .headers()
                        .get("upgrade")
                        .is_some_and(|v| v == "echo" || v == "h2c")
                    {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let io = TokioIo::new(on.await.unwrap());
                            let (mut r, mut w) = tokio::io::split(io);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        });
                        let resp = Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header("connection", "upgrade")
                            .header("upgrade", "echo")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        return Ok::<_, std::convert::Infallible>(resp);
                    }
                    Ok(Response::new(Full::new(Bytes::from_static(b"plain"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

use common::{echo, gateway, ws_echo_backend};

async fn connect(addr: SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/chat"), tcp)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(resp.headers().contains_key("x-request-id"));
    ws
}

#[tokio::test]
async fn one_client_echoes_100_messages_counted_in_flight() {
    let gw = gateway("", ws_echo_backend().await).await;
    let mut ws = connect(gw.addr).await;
    assert_eq!(
        gw.stats.in_flight(),
        1,
        "the tunnel is one request in flight"
    );
    for i in 0..100 {
        // Text that would be a smuggling attempt if it were read as HTTP.
        echo(&mut ws, format!("POST /{i} HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")).await;
    }
    assert_eq!(gw.stats.in_flight(), 1);
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .expect("in-flight back to 0 once the tunnel closed");
    assert_eq!(gw.stats.in_flight(), 0);
}

#[tokio::test]
async fn idle_tunnel_is_closed_and_an_active_one_is_not() {
    let gw = gateway("tunnel_idle_timeout = \"300ms\"", ws_echo_backend().await).await;
    let mut ws = connect(gw.addr).await;
    // Active for 1.5 s (five idle timeouts), one message every 100 ms: kept open.
    for i in 0..15 {
        echo(&mut ws, format!("tick {i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Silent: closed after ~300 ms.
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the idle tunnel was not closed");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tunnel_counts_under_max_conn_per_ip_until_it_closes() {
    let gw = gateway("max_conn_per_ip = 1", ws_echo_backend().await).await;
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "hello".to_owned()).await;
    // The WebSocket is this client's one connection: a second one is refused.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let second = client
        .get(format!("http://{}/", gw.addr).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Closed: the slot is free again.
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .expect("the tunnel ended");
    let mut freed = false;
    for _ in 0..100 {
        let fresh =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let r = fresh
            .get(format!("http://{}/", gw.addr).parse().unwrap())
            .await
            .unwrap();
        if r.status() != StatusCode::SERVICE_UNAVAILABLE {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the closed tunnel still holds the client's slot");
    gw.stop.cancel();
}

/// Reads a response head from a raw socket.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed mid-head: {head:?}"
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn any_upgrade_is_a_tunnel_and_its_bytes_are_not_read_as_http() {
    let gw = gateway("", raw_echo_backend().await).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    // Bytes that the framing guard would refuse as smuggling, then a bad chunk: echoed as is.
    let smuggle: &[u8] =
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    for _ in 0..3 {
        s.write_all(smuggle).await.unwrap();
        let mut back = vec![0u8; smuggle.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, smuggle);
    }
    assert_eq!(gw.stats.in_flight(), 1);
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refused_upgrade_is_an_ordinary_response() {
    let gw = gateway("", raw_echo_backend().await).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: other\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 5];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"plain");
    }
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_after_shutdown_timeout() {
    let gw = gateway("shutdown_timeout = \"300ms\"", ws_echo_backend().await).await;
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "before".into()).await;
    gw.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), gw.served)
        .await
        .expect("gateway stopped within its shutdown_timeout")
        .unwrap()
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the tunnel was closed");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
}

/// Acceptance: 1000 WebSocket connections at once, each echoing a message every 100 ms for
/// 10 s; every message comes back, in order, and no connection drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_websockets_for_ten_seconds() {
    const CLIENTS: usize = 1000;
    const ROUNDS: usize = 100;
    let gw = gateway("", ws_echo_backend().await).await;
    let addr = gw.addr;
    let mut clients = Vec::with_capacity(CLIENTS);
    let ready = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    for c in 0..CLIENTS {
        let ready = Arc::clone(&ready);
        clients.push(tokio::spawn(async move {
            let mut ws = connect(addr).await;
            ready.wait().await;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for n in 0..ROUNDS {
                tick.tick().await;
                echo(&mut ws, format!("client {c} message {n}")).await;
            }
            ws.close(None).await.unwrap();
            ROUNDS
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .expect("1000 WebSockets opened");
    assert_eq!(gw.stats.in_flight(), CLIENTS);
    let mut echoed = 0;
    for c in clients {
        echoed += tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients finish")
            .expect("no lost or reordered message, no dropped connection");
    }
    assert_eq!(echoed, CLIENTS * ROUNDS);
    tokio::time::timeout(Duration::from_secs(10), gw.stats.wait_idle())
        .await
        .expect("every tunnel closed");
}

#[tokio::test]
async fn a_tunnel_is_logged_when_it_closes_with_its_length_and_bytes() {
    let path = std::env::temp_dir().join(format!("herd-tunnel-log-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let gw = gateway(
        &format!("access_log = \"{}\"", path.display()),
        raw_echo_backend().await,
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let chunk = vec![b'x'; 10_000];
    for _ in 0..3 {
        s.write_all(&chunk).await.unwrap();
        let mut back = vec![0u8; chunk.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        before.is_empty(),
        "logged before the tunnel closed: {before}"
    );
    drop(s);
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&path).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["status"], 101, "{line}");
    assert!(v["bytes_sent"].as_u64().unwrap() >= 30_000, "{line}");
    assert!(v["duration_ms"].as_f64().unwrap() >= 300.0, "{line}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn an_upgrade_to_h2c_is_never_tunnelled() {
    let gw = gateway("", raw_echo_backend().await).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    // An ordinary request: the backend never saw the Upgrade (a tunnel of HTTP/2 would carry
    // requests past routing and rate limits).
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 5];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"plain");
}
