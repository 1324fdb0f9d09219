//! The gateway as the edge, over raw sockets: request smuggling, slowloris, connection and size
//! limits, request ids, security headers. Every smuggling attempt must get 400 from herd and
//! never reach the (counting) backend.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_core::{EndpointStats, Rotation};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that counts the requests it sees. `/headers` answers with the request's headers
/// (one `name: value` per line), `/echo` with the body, `/xfo` sets its own `X-Frame-Options`.
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let mut resp = match req.uri().path() {
                            "/headers" => {
                                let text: String = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
                                    .collect();
                                Response::new(Full::new(Bytes::from(text)))
                            }
                            "/echo" => {
                                let body = req.into_body().collect().await?.to_bytes();
                                Response::new(Full::new(body))
                            }
                            _ => Response::new(Full::new(Bytes::from_static(b"ok"))),
                        };
                        resp.headers_mut()
                            .insert("x-frame-options", http::HeaderValue::from_static("DENY"));
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Running {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    instance: Arc<EndpointStats>,
    stats: Arc<herd_core::StatsRegistry>,
    _stop: tokio_util::sync::DropGuard,
}

async fn gateway(extra: &str) -> Running {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n"
    );
    let (gw, stats) = common::build(&text);
    let (backend, seen) = counting_backend().await;
    let instance = Arc::new(EndpointStats::new());
    gw.set_endpoints(
        "web",
        vec![common::endpoint_with(
            1,
            "web-1",
            backend,
            Arc::clone(&instance),
        )],
    );
    let (addr, stop, _) = common::serve(&gw).await;
    Running {
        addr,
        seen,
        instance,
        stats,
        _stop: stop.drop_guard(),
    }
}

/// The gateway's parked (released) and open client connections, once they settle on `want`
/// (at most 5 s; the counts move when the gateway's tasks get to them).
async fn settle_connections(stats: &herd_core::StatsRegistry, want: (u64, u64)) {
    let read = || {
        let c = &stats.connections;
        (
            c.parked.load(std::sync::atomic::Ordering::Relaxed),
            c.open.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while read() != want {
        assert!(
            Instant::now() < deadline,
            "connections (parked, open): {:?}, want {want:?}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A keep-alive client that got one answer, then went quiet until the gateway parked it.
async fn parked_client(addr: SocketAddr, stats: &herd_core::StatsRegistry) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut carry = Vec::new();
    s.write_all(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s, &mut carry).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle_connections(stats, (1, 1)).await; // released, parked
    (s, carry)
}

/// Sends `bytes`, then reads until the gateway closes the connection (at most 5 s).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "connection not closed; got {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn smuggling_attempts_get_400_and_never_reach_a_backend() {
    let gw = gateway("").await;
    let cases: &[(&str, &str)] = &[
        // hyper alone: accepted (Content-Length dropped, connection closed after) → herd: 400.
        (
            "CL then TE",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE then CL",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ),
        // hyper alone: accepted (one kept) → herd: 400.
        (
            "equal duplicate CL",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ),
        // hyper alone: 400.
        (
            "differing duplicate CL",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        ("CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"),
        ("signed CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
        ),
        (
            "space before colon",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
        ),
        (
            "TE not ending in chunked",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE on HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        // hyper alone: the head is forwarded, then the body fails → herd: 400 when the bad
        // chunk arrives with the head.
        (
            "non-hex chunk size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "overflowing chunk size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n",
        ),
        (
            "chunk data longer than its size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxx\r\n0\r\n\r\n",
        ),
    ];
    for (name, raw) in cases {
        let answer = exchange(gw.addr, raw.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
            "{name}: {answer:?}"
        );
        assert_eq!(
            gw.seen.load(Ordering::SeqCst),
            0,
            "{name} reached the backend"
        );
    }
    // A smuggled request after a clean one on the same connection: the first is served, the
    // second refused, and the bytes hidden in its body never become a request.
    let answer = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
          POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 400").count(), 1, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "{answer}");
    assert_eq!(gw.seen.load(Ordering::SeqCst), 1);
    // Nor does an upgrade request (herd strips `Upgrade`, so the connection stays HTTP/1) open
    // the way for a smuggled one after it.
    let answer = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
          POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 400").count(), 1, "{answer}");
    assert_eq!(gw.seen.load(Ordering::SeqCst), 2, "{answer}");
    // A transfer coding herd would drop on the way (the body would reach the app still
    // gzipped, unlabelled): 501, as nginx answers, and the connection closes.
    let answer = exchange(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("Content-Encoding"), "{answer}");
    assert_eq!(gw.seen.load(Ordering::SeqCst), 2, "{answer}");
}

#[tokio::test]
async fn a_bad_chunk_after_the_head_was_forwarded_is_400_and_not_the_instances_fault() {
    let gw = gateway("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    // Wait until the head is at the backend, then break the chunked framing.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.seen.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "head never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.write_all(b"zz\r\n").await.unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(gw.instance.failures(), 0);
}

#[tokio::test]
async fn a_slow_upload_is_not_a_slow_backend() {
    // 30 bytes over ~1.5 s, against a response_timeout of 500 ms: the timer starts once the
    // body is all sent, so the answer is the backend's echo.
    let gw = gateway("response_timeout = \"500ms\"\nclient_body_timeout = \"5s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..5 {
        s.write_all(b"abcdef").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&"abcdef".repeat(5)), "{answer}");
    assert_eq!(gw.instance.failures(), 0);
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_is_not_the_instances_fault() {
    let gw = gateway("response_timeout = \"500ms\"\nclient_body_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let start = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("client_body_timeout"), "{answer}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(gw.instance.failures(), 0);
    assert!(!gw.instance.passively_down(Instant::now()));
}

/// A backend that, like Node's `server.setTimeout(300)`, closes a connection on which nothing
/// arrived for 300 ms, and answers `ok` to a bodiless request.
async fn impatient_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf));
                    match read.await {
                        Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
                        _ => return, // idle, or closed: drop the connection
                    }
                    let text = String::from_utf8_lossy(&data);
                    if text.starts_with("GET") && text.contains("\r\n\r\n") {
                        data.clear();
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_instance_that_gives_up_on_a_stalled_upload_is_not_blamed() {
    // Stalled uploads that the instance's own idle timeout cuts must not take it out of
    // rotation, nor open its circuit: a few clients could otherwise take a whole app down.
    let text = "[gateway]\nlisten = \"127.0.0.1:0\"\ncircuit_consecutive = 2\n\
        [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n";
    let (gw, _stats) = common::build(text);
    let instance = Arc::new(EndpointStats::new());
    let backend = impatient_backend().await;
    gw.set_endpoints(
        "web",
        vec![common::endpoint_with(
            1,
            "web-1",
            backend,
            Arc::clone(&instance),
        )],
    );
    let (addr, stop, _) = common::serve(&gw).await;
    let _stop = stop.drop_guard();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await
            .unwrap();
        stalled.push(s);
    }
    for mut s in stalled {
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains("request body"), "{answer}");
    }
    assert_eq!(instance.failures(), 0);
    assert!(!instance.passively_down(Instant::now()));
    let answer = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "still in rotation: {answer}"
    );
}

#[tokio::test]
async fn clean_chunked_and_pipelined_requests_still_pass() {
    let gw = gateway("").await;
    let answer = exchange(
        gw.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nworld\
          GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3, "{answer}");
    assert!(
        answer.contains("hello") && answer.contains("world"),
        "{answer}"
    );
    assert_eq!(gw.seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_slowloris_client_is_closed_after_client_header_timeout() {
    let gw = gateway("client_header_timeout = \"500ms\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // Trickle a header line every 100 ms, never finishing the head.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let answer = read_to_close(&mut s).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    assert!(!answer.contains("200"), "{answer}");
    assert_eq!(gw.seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_client_header_timeout() {
    // With `idle_release` off, hyper keeps the connection and its head-read timer runs.
    let gw = gateway("client_header_timeout = \"500ms\"\nidle_release = \"off\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The timer for the next head starts as soon as the previous response is written.
    let started = Instant::now();
    let answer = read_to_close(&mut s).await;
    assert!(answer.is_empty(), "{answer}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_client_header_timeout() {
    // With the default idle_release and an idle_timeout far away: the header timeout closes it.
    let gw = gateway("client_header_timeout = \"500ms\"\nidle_timeout = \"60s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut s).await;
    assert!(answer.is_empty(), "{answer}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(30),
        "closed after {elapsed:?}"
    );
}

/// Reads one response with a `Content-Length` body; returns its head and body. Bytes read past
/// it (a pipelined response) stay in `data` for the next call.
async fn read_response(s: &mut TcpStream, data: &mut Vec<u8>) -> (String, String) {
    let mut buf = [0u8; 65536];
    let mut need: Option<usize> = None;
    loop {
        if need.is_none() {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                need = Some(end + 4 + len);
            }
        }
        if let Some(total) = need {
            if data.len() >= total {
                let end = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let body = String::from_utf8_lossy(&data[end + 4..total]).into_owned();
                data.drain(..total);
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_released_keep_alive_connection_serves_its_next_requests() {
    // `idle_release` (default 50 ms) hands a quiet connection to the bare socket; the client
    // cannot tell: the next requests on the same socket are served as before.
    let gw = gateway("idle_timeout = \"2s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut carry = Vec::new();
    for round in 0..3 {
        s.write_all(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut s, &mut carry).await;
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        // Well past the release: parked, not held by hyper.
        tokio::time::sleep(Duration::from_millis(300)).await;
        settle_connections(&gw.stats, (1, 1)).await;
    }
    // A request arriving in pieces across the release, and two pipelined ones.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"ngth: 4\r\n\r\nbo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"dy").await.unwrap();
    let (head, body) = read_response(&mut s, &mut carry).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "body");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..2 {
        let (head, _) = read_response(&mut s, &mut carry).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // Released or not, `idle_timeout` closes a connection that stays quiet.
    let started = Instant::now();
    let answer = read_to_close(&mut s).await;
    assert!(answer.is_empty(), "{answer}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "closed after {elapsed:?}"
    );
    assert!(gw.seen.load(std::sync::atomic::Ordering::SeqCst) >= 6);
}

#[tokio::test]
async fn a_released_connection_keeps_its_per_ip_count_until_its_client_closes_it() {
    let gw = gateway("max_conn_per_ip = 1\nidle_timeout = \"10s\"").await;
    let (s, _) = parked_client(gw.addr, &gw.stats).await;
    let mut other = TcpStream::connect(gw.addr).await.unwrap();
    other
        .write_all(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut other).await;
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "parked still counts: {answer}"
    );
    // The client closes its parked connection: the gateway notices and frees the count.
    drop(other);
    settle_connections(&gw.stats, (1, 1)).await;
    drop(s);
    settle_connections(&gw.stats, (0, 0)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(gw.addr).await.unwrap();
        c.write_all(b"GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut c).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_released_connections_at_once() {
    let text = "[gateway]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n";
    let (gw, stats) = common::build(text);
    let (backend, _) = counting_backend().await;
    gw.set_endpoints(
        "web",
        vec![common::endpoint_with(
            1,
            "web-1",
            backend,
            Arc::new(EndpointStats::new()),
        )],
    );
    let (addr, stop, served) = common::serve(&gw).await;
    let (mut s, _) = parked_client(addr, &stats).await;
    let started = Instant::now();
    stop.cancel();
    let answer = read_to_close(&mut s).await;
    assert!(answer.is_empty(), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns without waiting for shutdown_timeout")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_not_released_and_its_pipelined_request_is_answered() {
    let gw = gateway("max_body_size = \"8MiB\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut carry = Vec::new();
    // A 4 MiB echo: more than the socket buffers hold, so hyper's writes stall while the
    // client reads nothing.
    let body = vec![b'x'; 4 << 20];
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // quiet, but not idle
    s.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (head, echoed) = read_response(&mut s, &mut carry).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echoed.len(), body.len());
    let (head, _) = read_response(&mut s, &mut carry).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the pipelined request is answered: {head}"
    );
}

#[tokio::test]
async fn smuggling_after_a_release_is_still_refused() {
    let gw = gateway("").await;
    let (mut s, _) = parked_client(gw.addr, &gw.stats).await;
    let seen = gw.seen.load(std::sync::atomic::Ordering::SeqCst);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        gw.seen.load(std::sync::atomic::Ordering::SeqCst),
        seen,
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn max_connections_holds_new_clients_until_one_closes() {
    let gw = gateway("max_connections = 1").await;
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The second connection completes in the kernel's backlog but is not served...
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "served while the limit was reached");
    // ...until the first one closes.
    drop(first);
    let answer = read_to_close(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let gw = gateway("max_header_size = \"8KiB\"").await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let answer = exchange(gw.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4 * 1024)
    );
    let answer = exchange(gw.addr, fits.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(gw.seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bodies_over_max_body_size_get_413() {
    let gw = gateway("max_body_size = 10").await;
    let answer = exchange(
        gw.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        gw.seen.load(Ordering::SeqCst),
        0,
        "refused before forwarding"
    );
    // Chunked: no length up front, so the body is cut when it passes the limit.
    let answer = exchange(
        gw.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        gw.instance.failures(),
        0,
        "the client's fault, not the instance's"
    );
    let answer = exchange(
        gw.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhelloworld",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("helloworld"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_client_still_uploading_reads_the_413_instead_of_a_reset() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Without `Expect: 100-continue` the client goes on sending after herd answered; herd
    // closes with a lingering close (nginx's), so the upload completes and the 413 is read.
    let gw = gateway("max_body_size = 1024").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let size = 16 << 20;
    let head = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; size])
        .await
        .expect("the upload is not reset");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(gw.seen.load(Ordering::SeqCst), 0);
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn request_ids_are_generated_or_passed_on_both_ways() {
    let gw = gateway("").await;
    let answer = exchange(
        gw.addr,
        b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let id = header(&answer, "x-request-id").expect("response id");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        answer.contains(&format!("x-request-id: {id}\n")),
        "{answer}"
    );

    let answer = exchange(
        gw.addr,
        b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(header(&answer, "x-request-id"), Some("trace-42"));
    assert!(answer.contains("x-request-id: trace-42\n"), "{answer}");

    let long = format!(
        "GET /headers HTTP/1.1\r\nHost: x\r\nX-Request-Id: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(129)
    );
    let answer = exchange(gw.addr, long.as_bytes()).await;
    assert_eq!(header(&answer, "x-request-id").map(str::len), Some(32));
}

#[tokio::test]
async fn security_headers_fill_in_what_the_backend_left_out() {
    let plain = gateway("").await;
    let answer = exchange(
        plain.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(header(&answer, "x-content-type-options"), None);

    let gw = gateway("security_headers = true").await;
    let answer = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&answer, "x-frame-options"),
        Some("DENY"),
        "the backend's wins"
    );
    assert_eq!(
        header(&answer, "referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
}

#[tokio::test]
async fn refused_framing_is_logged_with_a_request_id() {
    let dir = std::env::temp_dir().join(format!("herd-refused-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let gw = gateway(&format!("access_log = {:?}", log.display().to_string())).await;
    let answer = exchange(
        gw.addr,
        b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id: "),
        "{answer}"
    );
    // The writer is a task of its own: wait for the line (at most 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("/smuggle")) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for the refusal: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 400, "{line}");
    assert!(v["upstream"].is_null(), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_bad_gateway() {
    // A backend that switches protocols whatever it is asked.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let gw = common::gateway("", backend).await;
    let answer = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    gw.stop.cancel();
}

#[tokio::test]
async fn an_http2_request_with_two_content_lengths_is_refused() {
    let (backend, seen) = counting_backend().await;
    let gw = common::gateway("", backend).await;
    let io = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{}/echo", gw.addr))
        .header("content-length", "3")
        .header("content-length", "3")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    // The gateway answers 400, or resets the stream; the backend never sees the request.
    if let Ok(resp) = send.send_request(req).await {
        assert_eq!(resp.status(), 400);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    gw.stop.cancel();
}

#[tokio::test]
async fn an_http_1_0_request_without_host_reaches_the_instance_with_one() {
    let gw = gateway("").await;
    let answer = exchange(gw.addr, b"GET /headers HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    // herd speaks HTTP/1.1 upstream, where a request without Host is a 400.
    let host = answer
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no Host reached the instance: {answer}"));
    assert!(host.starts_with("127.0.0.1:"), "{answer}");
}
