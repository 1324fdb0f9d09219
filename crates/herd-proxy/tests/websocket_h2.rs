//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) with a real h2 client: streams of one
//! connection become WebSockets to an HTTP/1.1 backend, the backend's handshake is checked, a
//! tunnel keeps its connection from closing as idle, and a plain CONNECT is refused.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use common::{
    echo, extended_connect, gateway, h2_for_websockets, open_websocket, ws_echo_backend, H2Ws, H2,
};

/// An h2c (prior knowledge) connection to the gateway, ready for extended CONNECT.
async fn h2(addr: SocketAddr) -> H2 {
    h2_for_websockets(TcpStream::connect(addr).await.unwrap()).await
}

fn connect_request(addr: SocketAddr, protocol: Option<&'static str>) -> Request<Empty<Bytes>> {
    extended_connect(&format!("http://{addr}/chat"), protocol)
}

/// Opens a WebSocket as a stream of `send`'s connection.
async fn open(send: &mut H2, addr: SocketAddr) -> H2Ws {
    open_websocket(send, &format!("http://{addr}/chat")).await
}

#[tokio::test]
async fn fifty_websockets_share_one_h2_connection() {
    // Only WebSockets are routed: the streams must match `websocket = true`.
    let only_ws = "[[route]]\nwebsocket = true\napp = \"web\"\n";
    let gw = gateway(only_ws, ws_echo_backend().await).await;
    let mut send = h2(gw.addr).await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(open(&mut send, gw.addr).await);
    }
    assert_eq!(gw.stats.in_flight(), 50, "each stream is one tunnel");
    for round in 0..20 {
        for (i, ws) in sockets.iter_mut().enumerate() {
            echo(ws, format!("stream {i} round {round}")).await;
        }
    }
    // An ordinary request still goes through on the same connection meanwhile.
    send.ready().await.unwrap();
    let get = Request::builder()
        .uri(format!("http://{}/", gw.addr))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    let plain = send.send_request(get).await.unwrap();
    assert_ne!(
        plain.status(),
        StatusCode::OK,
        "the echo backend wants a handshake"
    );
    for mut ws in sockets {
        ws.close(None).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .expect("every tunnel closed");
    gw.stop.cancel();
}

#[tokio::test]
async fn a_tunnel_keeps_its_h2_connection_past_the_idle_timeout() {
    let gw = gateway(
        "idle_timeout = \"300ms\"\ntunnel_idle_timeout = \"30s\"",
        ws_echo_backend().await,
    )
    .await;
    let mut send = h2(gw.addr).await;
    let mut ws = open(&mut send, gw.addr).await;
    echo(&mut ws, "before".into()).await;
    // Four connection idle timeouts without a byte: the connection stays for its tunnel.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    echo(&mut ws, "after".into()).await;
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
    // With no tunnel left, the connection is closed as idle again.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if send.ready().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    gw.stop.cancel();
}

/// A backend that switches protocols with a `Sec-WebSocket-Accept` for some other key, or (with
/// `plain`) ignores the upgrade and answers 200.
async fn wrong_accept_backend() -> SocketAddr {
    odd_backend(false).await
}

async fn odd_backend(plain: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    if plain {
                        let ok = Response::new(Full::new(Bytes::from_static(b"plain")));
                        return Ok::<_, std::convert::Infallible>(ok);
                    }
                    let resp = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "websocket")
                        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
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

#[tokio::test]
async fn a_wrong_handshake_answer_is_a_502_and_plain_connect_a_501() {
    let gw = gateway("", wrong_accept_backend().await).await;
    let mut send = h2(gw.addr).await;
    let resp = send
        .send_request(connect_request(gw.addr, Some("websocket")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        // The reason (a wrong Sec-WebSocket-Accept) is logged, not shown to the client.
        String::from_utf8_lossy(&body).contains("bad gateway"),
        "{body:?}"
    );

    send.ready().await.unwrap();
    let mut plain = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(gw.addr.to_string())
        .body(Empty::new())
        .unwrap();
    plain.headers_mut().clear();
    let resp = send.send_request(plain).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
    gw.stop.cancel();
}

#[tokio::test]
async fn a_backend_that_ignores_the_upgrade_is_a_502_not_an_open_tunnel() {
    let gw = gateway("", odd_backend(true).await).await;
    let mut send = h2(gw.addr).await;
    let resp = send
        .send_request(connect_request(gw.addr, Some("websocket")))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_GATEWAY,
        "a 200 would mean: tunnel open"
    );
    // The instance answered (an ordinary page where no WebSocket is served): not its
    // failure. Counted as one, a dozen such requests took the only instance out of service
    // (passive health and the circuit breaker) for every client.
    for _ in 0..12 {
        send.ready().await.unwrap();
        let resp = send
            .send_request(connect_request(gw.addr, Some("websocket")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    }
    send.ready().await.unwrap();
    let get = Request::builder()
        .uri(format!("http://{}/", gw.addr))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(get).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the instance is still in service"
    );
    gw.stop.cancel();
}

#[tokio::test]
async fn each_h2_tunnel_counts_under_max_conn_per_ip() {
    // The h2 connection is one; its first WebSocket a second; a third is refused.
    let gw = gateway("max_conn_per_ip = 2", ws_echo_backend().await).await;
    let mut send = h2(gw.addr).await;
    let mut first = open(&mut send, gw.addr).await;
    send.ready().await.unwrap();
    let refused = send
        .send_request(connect_request(gw.addr, Some("websocket")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    echo(&mut first, "still open".into()).await;
    first.close(None).await.unwrap();
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), gw.stats.wait_idle())
        .await
        .unwrap();
    // Closed: its count is free again.
    let mut again = None;
    for _ in 0..100 {
        send.ready().await.unwrap();
        let resp = send
            .send_request(connect_request(gw.addr, Some("websocket")))
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            again = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the closed tunnel still counts");
    gw.stop.cancel();
}

#[tokio::test]
async fn an_extended_connect_for_h2c_is_refused() {
    let gw = gateway("", ws_echo_backend().await).await;
    let mut send = h2(gw.addr).await;
    let resp = send
        .send_request(connect_request(gw.addr, Some("h2c")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    gw.stop.cancel();
}
