//! The gateway on several shard threads (`serve_threads`, as `herd up` runs it): requests on
//! many connections, keep-alive reuse within a shard, graceful drain and the hard stop.

mod common;

use common::endpoint;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_core::Rotation;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A backend that counts the connections it accepted; `/slow` answers after `slow`.
async fn backend(slow: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(slow).await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    backend_conns: Arc<AtomicUsize>,
}

/// A gateway on `threads` shard threads in front of one backend.
async fn gateway(threads: usize, extra: &str, slow: Duration) -> Running {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nthreads = {threads}\n{extra}\n\
         [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n"
    );
    let (gw, _) = common::build(&text);
    let (backend, backend_conns) = backend(slow).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", backend)]);
    let listeners = herd_proxy::shard::bind("127.0.0.1:0".parse().unwrap(), threads).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(gw.serve_threads(listeners, stop.clone()));
    Running {
        addr,
        stop,
        served,
        backend_conns,
    }
}

/// One request on a connection of its own.
async fn get_fresh(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// A `/slow` request, started and under way at the backend (its connection accepted).
async fn slow_request(gw: &Running) -> tokio::task::JoinHandle<Result<(u16, Bytes), String>> {
    let slow = tokio::spawn(get_fresh(gw.addr, "/slow"));
    while gw.backend_conns.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    slow
}

#[tokio::test]
async fn many_connections_across_shards_all_answered() {
    let gw = gateway(2, "", Duration::ZERO).await;
    let results = futures_util::future::join_all((0..64).map(|_| get_fresh(gw.addr, "/"))).await;
    for r in results {
        assert_eq!(r.unwrap(), (200, Bytes::from("ok")));
    }
    gw.stop.cancel();
    gw.served.await.unwrap().unwrap();
    // Stopped: the port no longer accepts.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}

#[tokio::test]
async fn a_keep_alive_client_reuses_one_backend_connection() {
    let gw = gateway(2, "", Duration::ZERO).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for _ in 0..20 {
        let resp = client
            .get(format!("http://{}/", gw.addr).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    // One client connection lives on one shard, and that shard's pool keeps its backend
    // connection between requests.
    assert_eq!(gw.backend_conns.load(Ordering::SeqCst), 1);
    gw.stop.cancel();
    gw.served.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let gw = gateway(2, "shutdown_timeout = \"10s\"", Duration::from_millis(300)).await;
    let slow = slow_request(&gw).await;
    gw.stop.cancel();
    assert_eq!(slow.await.unwrap().unwrap(), (200, Bytes::from("ok")));
    gw.served.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_timeout_closes_what_is_left() {
    let gw = gateway(2, "shutdown_timeout = \"200ms\"", Duration::from_secs(30)).await;
    let slow = slow_request(&gw).await;
    gw.stop.cancel();
    // The gateway returns after its deadline, long before the backend would answer, and the
    // client's connection is closed without a response.
    tokio::time::timeout(Duration::from_secs(20), gw.served)
        .await
        .expect("the hard stop ends serving")
        .unwrap()
        .unwrap();
    assert!(slow.await.unwrap().is_err());
}
