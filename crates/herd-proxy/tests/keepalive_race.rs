//! Backends that close a connection under a request, over real sockets: a reused keep-alive
//! connection the instance closes as a request goes out (the keep-alive race after the
//! write) gets an idempotent request sent again on a fresh connection, as nginx does for a
//! cached connection; a retry that finds no instance left counts no retry.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herd_core::Rotation as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request head (no body) off `s`; false when the peer closed first.
async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// Resets `s` (SO_LINGER 0): the peer reads ECONNRESET.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// A backend that answers the first request of each connection (keep-alive), then resets the
/// connection as soon as a second request starts to arrive; counts connections.
async fn closes_under_the_second_request() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            c2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !read_head(&mut s).await {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let mut first = [0u8; 1];
                if matches!(s.read(&mut first).await, Ok(1)) {
                    reset(s);
                }
            });
        }
    });
    (addr, conns)
}

/// A backend that resets every connection after reading its request, counting requests.
async fn resets_and_counts() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let seen = Arc::clone(&s2);
            tokio::spawn(async move {
                if read_head(&mut s).await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    reset(s);
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_request_that_breaks_two_instances_is_not_sent_to_a_third() {
    // Four instances that each die under this request (as an app that crashes on one URL):
    // retried once (the first could have died of something else), then given up, so one bad
    // request cannot take the whole fleet down in turn.
    let (gw, _) = common::build(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nretries = 3\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n",
    );
    let mut endpoints = Vec::new();
    let mut seen = Vec::new();
    for i in 0..4u64 {
        let (addr, count) = resets_and_counts().await;
        endpoints.push(common::endpoint(i + 1, &format!("web-{}", i + 1), addr));
        seen.push(count);
    }
    gw.set_endpoints("web", endpoints);
    let (addr, stop, _) = common::serve(&gw).await;
    let mut client = None;
    assert_eq!(status(addr, "GET", &mut client).await, 502);
    let broken: usize = seen.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    assert_eq!(broken, 2, "instances that got the request");
    stop.cancel();
}

/// A backend that resets every connection after reading its request.
async fn resets_every_request() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                if read_head(&mut s).await {
                    reset(s);
                }
            });
        }
    });
    addr
}

async fn status(addr: SocketAddr, method: &str, s: &mut Option<TcpStream>) -> u16 {
    let conn = match s {
        Some(c) => c,
        None => s.insert(TcpStream::connect(addr).await.unwrap()),
    };
    let req = format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let len: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    text[9..12].parse().unwrap()
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_closed_under_it_goes_again_on_a_fresh_one() {
    let (backend, conns) = closes_under_the_second_request().await;
    let gw = common::gateway("", backend).await;
    let mut client = None;
    assert_eq!(status(gw.addr, "GET", &mut client).await, 200);
    // The pooled connection is reused and reset under the request: sent again on a fresh
    // connection to the same (only) instance.
    assert_eq!(status(gw.addr, "GET", &mut client).await, 200);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // Not held against the instance: no passive failure was recorded.
    assert!(!gw.stats.passively_down(std::time::Instant::now()));
    // A POST is never sent twice: the client gets the failure, and it counts against the
    // instance (max_fails 1: marked down).
    assert_eq!(status(gw.addr, "POST", &mut client).await, 502);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    assert!(gw.stats.passively_down(std::time::Instant::now()));
    gw.stop.cancel();
}

#[tokio::test]
async fn a_retry_that_finds_no_instance_left_is_not_counted() {
    let backend = resets_every_request().await;
    let path = std::env::temp_dir().join(format!("herd-no-retry-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let gw = common::gateway(&format!("access_log = \"{}\"", path.display()), backend).await;
    let mut client = None;
    assert_eq!(status(gw.addr, "GET", &mut client).await, 502);
    gw.stop.cancel();
    gw.served.await.unwrap().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["status"], 502, "{text}");
    // One attempt, on the only instance: no retry happened.
    assert_eq!(line["retries"], 0, "{text}");
    assert_eq!(line["upstream"]["instance"], "web-1", "{text}");
    std::fs::remove_file(&path).unwrap();
}
