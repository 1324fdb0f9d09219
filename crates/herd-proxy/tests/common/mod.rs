//! Shared pieces of the gateway's integration tests: a gateway built from a config text and
//! served on 127.0.0.1, and endpoints to put in rotation.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use herd_core::{Endpoint, EndpointStats, Rotation, StatsRegistry};
use herd_proxy::Gateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A gateway for `text` (a whole herd.toml), not yet serving.
pub fn build(text: &str) -> (Arc<Gateway>, Arc<StatsRegistry>) {
    let config = herd_config::parse(text, "test.toml", std::path::Path::new(".")).unwrap();
    let stats = Arc::new(StatsRegistry::default());
    (Gateway::new(&config, Arc::clone(&stats)), stats)
}

/// Serves `gw` on a fresh loopback port until the token is cancelled.
pub async fn serve(
    gw: &Arc<Gateway>,
) -> (
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(Arc::clone(gw).serve(l, stop.clone()));
    (addr, stop, served)
}

/// An instance at `addr` with fresh counters.
pub fn endpoint(uid: u64, id: &str, addr: SocketAddr) -> Endpoint {
    endpoint_with(uid, id, addr, Arc::new(EndpointStats::new()))
}

/// An instance at `addr` whose counters the test keeps.
pub fn endpoint_with(uid: u64, id: &str, addr: SocketAddr, stats: Arc<EndpointStats>) -> Endpoint {
    Endpoint {
        uid,
        id: Arc::from(id),
        addr,
        stats,
    }
}

/// A WebSocket backend that echoes every data message.
pub async fn ws_echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `text` on a WebSocket and expects it back within 10 s.
pub async fn echo<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text.clone())).await.unwrap();
    match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(got)))) => assert_eq!(got.as_str(), text),
        other => panic!("no echo of {text}: {other:?}"),
    }
}

/// An HTTP/2 client connection to the gateway.
pub type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;
/// A WebSocket that is a stream of an HTTP/2 connection.
pub type H2Ws =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// An HTTP/2 connection over `io` (h2c, or TLS that chose `h2`), once the gateway's SETTINGS
/// said it takes extended CONNECT (RFC 8441).
pub async fn h2_for_websockets<T>(io: T) -> H2
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::time::Duration;
    let (send, mut conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    // Drives the connection and reports the peer's SETTINGS_ENABLE_CONNECT_PROTOCOL.
    let (tx, mut enabled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // hyper applies the peer's SETTINGS in a task of its own: look every 10 ms.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = &mut conn => return,
                _ = tick.tick() => {
                    let now = conn.is_extended_connect_protocol_enabled();
                    tx.send_if_modified(|v| std::mem::replace(v, now) != now);
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), enabled.wait_for(|on| *on))
        .await
        .expect("the gateway did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL")
        .unwrap();
    send
}

/// An extended CONNECT for `uri` with `:protocol` (none: a plain CONNECT's shape).
pub fn extended_connect(
    uri: &str,
    protocol: Option<&'static str>,
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .version(http::Version::HTTP_2)
        .uri(uri)
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    if let Some(p) = protocol {
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static(p));
    }
    req
}

/// Opens a WebSocket to `uri` as a stream of `send`'s connection.
pub async fn open_websocket(send: &mut H2, uri: &str) -> H2Ws {
    use tokio_tungstenite::tungstenite::protocol::Role;
    send.ready().await.unwrap();
    let resp = send
        .send_request(extended_connect(uri, Some("websocket")))
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK, "{resp:?}");
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    let io = hyper::upgrade::on(resp).await.unwrap();
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(io),
        Role::Client,
        None,
    )
    .await
}

/// A backend answering each request with the value of its request header `name` (empty when
/// absent).
pub async fn header_backend(name: &'static str) -> SocketAddr {
    use http_body_util::Full;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let value = req
                            .headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        let body = Full::new(bytes::Bytes::from(value));
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A gateway serving one app, `web`, whose one instance is `backend`.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
    pub stats: Arc<EndpointStats>,
}

/// `extra` goes into `[gateway]`.
pub async fn gateway(extra: &str, backend: SocketAddr) -> Running {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n"
    );
    let (gw, _) = build(&text);
    let stats = Arc::new(EndpointStats::new());
    gw.set_endpoints(
        "web",
        vec![endpoint_with(1, "web-1", backend, Arc::clone(&stats))],
    );
    let (addr, stop, served) = serve(&gw).await;
    Running {
        addr,
        stop,
        served,
        stats,
    }
}
