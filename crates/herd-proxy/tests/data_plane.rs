//! The data plane against in-process backends on 127.0.0.1: retries on a status to another
//! instance, the circuit breaker and the 503 page, compression, h2c backends, the access log,
//! `total_timeout` and `idle_timeout`.

mod common;

use common::{endpoint, endpoint_with};

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_core::{EndpointStats, Rotation};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// What a backend saw: requests, connections, the HTTP version of the last request.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    conns: AtomicUsize,
    h2: AtomicUsize,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// `/status/<code>`, `/text/<n>` (text/plain, n bytes), `/png/<n>`, `/encoded`, `/slowhead`
/// (10 s), `/slowbody` (head now, body in 10 s), `/version`; `fail_all` answers 503 to anything.
fn respond(
    name: &'static str,
    path: &str,
    version: http::Version,
    fail_all: bool,
) -> Response<Body> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (what, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if fail_all {
        let mut r = Response::new(full(name));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    }
    match what {
        "status" => {
            let mut r = Response::new(full(name));
            *r.status_mut() = StatusCode::from_u16(arg.parse().unwrap()).unwrap();
            r
        }
        "text" | "png" => {
            let n: usize = arg.parse().unwrap();
            let body: String = (0..n).map(|i| (b'a' + (i % 7) as u8) as char).collect();
            Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    if what == "text" {
                        "text/plain; charset=utf-8"
                    } else {
                        "image/png"
                    },
                )
                .header(header::CONTENT_LENGTH, n)
                .header(header::ACCEPT_RANGES, "bytes")
                .header(header::ETAG, "\"v1\"")
                .body(full(body))
                .unwrap()
        }
        "encoded" => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(full(vec![b'x'; 4096]))
            .unwrap(),
        "trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
            let frames = futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(
                    b"hello hello hello hello hello hello hello hello hello hello hello",
                ))),
                Ok(Frame::trailers(trailers)),
            ]);
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .header(header::TRAILER, "x-checksum")
                .body(StreamBody::new(frames).boxed())
                .unwrap()
        }
        "slowbody" => {
            let frames = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"late")))
            });
            Response::new(StreamBody::new(frames).boxed())
        }
        "version" => Response::new(full(format!("{version:?}"))),
        _ => Response::new(full(name)),
    }
}

/// An HTTP/1.1 backend, or an HTTP/2-only one (prior knowledge) with `h2`.
async fn backend(name: &'static str, h2: bool, fail_all: bool) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            s2.conns.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&s2);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        if req.version() == http::Version::HTTP_2 {
                            seen.h2.fetch_add(1, Ordering::SeqCst);
                        }
                        if req.uri().path() == "/slowhead" {
                            tokio::time::sleep(Duration::from_secs(10)).await;
                        }
                        let (path, version) = (req.uri().path().to_owned(), req.version());
                        if path == "/drain" {
                            // Reads the whole upload before answering.
                            let _ = req.into_body().collect().await;
                        }
                        Ok::<_, std::convert::Infallible>(respond(name, &path, version, fail_all))
                    }
                });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                }
            });
        }
    });
    (addr, seen)
}

/// The access log at `path`: its text, and each line parsed.
fn logged(path: &std::path::Path) -> (String, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines)
}

async fn gateway(
    gateway: &str,
    app: &str,
) -> (
    Arc<herd_proxy::Gateway>,
    SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n{gateway}\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n{app}\n"
    );
    let (gw, _) = common::build(&text);
    let (addr, stop, served) = common::serve(&gw).await;
    (gw, addr, stop, served)
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
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
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn a_503_is_retried_on_another_instance_only_for_idempotent_requests() {
    let (gw, addr, stop, _) = gateway("retry_on = [\"503\"]", "").await;
    let (a, sa) = backend("a", false, false).await;
    let (b, sb) = backend("b", false, false).await;
    gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", a), endpoint(2, "web-2", b)],
    );
    let total = || sa.requests.load(Ordering::SeqCst) + sb.requests.load(Ordering::SeqCst);
    let r = send(addr, "GET", "/status/503", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        total(),
        2,
        "tried once on each instance, never twice on one"
    );
    assert_eq!(sa.requests.load(Ordering::SeqCst), 1);
    let r = send(addr, "POST", "/status/503", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(total(), 3, "a POST is not sent again");
    // A 502 is not in retry_on.
    send(addr, "GET", "/status/502", &[]).await;
    assert_eq!(total(), 4);
    stop.cancel();
}

#[tokio::test]
async fn a_response_timeout_is_retried_only_when_retry_on_has_timeout() {
    let (gw, addr, stop, _) = gateway(
        "response_timeout = \"200ms\"",
        "[[route]]\npath_prefix = \"/retry/\"\nstrip_prefix = \"/retry\"\nretry_on = [\"timeout\"]\napp = \"web\"\n[[route]]\napp = \"web\"",
    )
    .await;
    let (a, sa) = backend("a", false, false).await;
    let (b, sb) = backend("b", false, false).await;
    gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", a), endpoint(2, "web-2", b)],
    );
    let total = || sa.requests.load(Ordering::SeqCst) + sb.requests.load(Ordering::SeqCst);
    assert_eq!(send(addr, "GET", "/slowhead", &[]).await.status, 504);
    assert_eq!(total(), 1, "not in the default retry_on");
    assert_eq!(send(addr, "GET", "/retry/slowhead", &[]).await.status, 504);
    assert_eq!(total(), 3, "tried on the other instance too");
    stop.cancel();
}

#[tokio::test]
async fn the_circuit_opens_on_a_failing_instance_and_the_503_page_is_served() {
    let dir = std::env::temp_dir().join(format!("herd-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("busy.html");
    std::fs::write(&page, "<h1>busy</h1>").unwrap();
    let (gw, addr, stop, _) = gateway(
        &format!(
            "circuit_consecutive = 3\ncircuit_open = \"60s\"\nerror_page_503 = \"{}\"",
            page.display()
        ),
        "max_fails = 1000",
    )
    .await;
    let (bad, sbad) = backend("bad", false, true).await;
    let (good, sgood) = backend("good", false, false).await;
    let bad_stats = Arc::new(EndpointStats::new());
    gw.set_endpoints(
        "web",
        vec![
            endpoint_with(1, "web-1", bad, Arc::clone(&bad_stats)),
            endpoint(2, "web-2", good),
        ],
    );
    assert_eq!(bad_stats.circuit(), "closed");
    // A 500 is the app's answer about one request, not a gateway failure: however many, the
    // circuit stays closed (a few calls to one broken URL opened every healthy instance's).
    let good_stats = Arc::new(EndpointStats::new());
    gw.set_endpoints(
        "web",
        vec![endpoint_with(2, "web-2", good, Arc::clone(&good_stats))],
    );
    for _ in 0..10 {
        assert_eq!(send(addr, "GET", "/status/500", &[]).await.status, 500);
    }
    assert_eq!(good_stats.circuit(), "closed");
    let served = sgood.requests.load(Ordering::SeqCst);
    gw.set_endpoints(
        "web",
        vec![
            endpoint_with(1, "web-1", bad, Arc::clone(&bad_stats)),
            endpoint_with(2, "web-2", good, Arc::clone(&good_stats)),
        ],
    );
    for _ in 0..20 {
        send(addr, "GET", "/", &[]).await;
    }
    assert_eq!(
        sbad.requests.load(Ordering::SeqCst),
        3,
        "open after 3 failures"
    );
    assert_eq!(sgood.requests.load(Ordering::SeqCst) - served, 17);
    assert_eq!(bad_stats.circuit(), "open");
    // Nothing else to serve: the configured page, fast, without touching the open instance.
    gw.set_endpoints(
        "web",
        vec![endpoint_with(1, "web-1", bad, Arc::clone(&bad_stats))],
    );
    let r = send(addr, "GET", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(&r.body[..], b"<h1>busy</h1>");
    assert_eq!(sbad.requests.load(Ordering::SeqCst), 3);
    stop.cancel();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn responses_are_compressed_by_accept_encoding() {
    let (gw, addr, stop, _) = gateway(
        "compress = true",
        "[[route]]\npath_prefix = \"/plain/\"\nstrip_prefix = \"/plain\"\ncompress = false\napp = \"web\"\n[[route]]\napp = \"web\"",
    )
    .await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    let original: String = (0..8192).map(|i| (b'a' + (i % 7) as u8) as char).collect();

    let r = send(addr, "GET", "/text/8192", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(r.headers[header::VARY], "Accept-Encoding");
    assert_eq!(r.headers[header::ETAG], "W/\"v1\"");
    assert!(!r.headers.contains_key(header::CONTENT_LENGTH));
    assert!(
        !r.headers.contains_key(header::ACCEPT_RANGES),
        "ranges of the plain bytes offered on compressed ones"
    );
    let mut out = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, original);
    assert!(r.body.len() < 8192);

    let r = send(
        addr,
        "GET",
        "/text/8192",
        &[("accept-encoding", "gzip;q=0.5, br")],
    )
    .await;
    assert_eq!(r.headers[header::CONTENT_ENCODING], "br");
    let mut out = String::new();
    brotli::Decompressor::new(&r.body[..], 4096)
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, original);

    let plain = |r: &Answer| !r.headers.contains_key(header::CONTENT_ENCODING);
    let ae = [("accept-encoding", "gzip, br")];
    let small = send(addr, "GET", "/text/100", &ae).await;
    assert!(
        plain(&small) && small.body.len() == 100,
        "under compress_min_size"
    );
    assert!(
        plain(&send(addr, "GET", "/png/8192", &ae).await),
        "not a compressible type"
    );
    assert!(plain(&send(addr, "HEAD", "/text/8192", &ae).await), "HEAD");
    let identity = send(addr, "GET", "/text/8192", &[]).await;
    assert!(plain(&identity), "no Accept-Encoding");
    // Uncompressed only because of this request's Accept-Encoding: a shared cache must not
    // serve it to a client that accepts gzip, nor the gzip to one that does not.
    assert_eq!(identity.headers[header::VARY], "Accept-Encoding");
    assert!(
        !small.headers.contains_key(header::VARY),
        "never compressed"
    );
    assert!(
        plain(&send(addr, "GET", "/plain/text/8192", &ae).await),
        "route compress = false"
    );
    let enc = send(addr, "GET", "/encoded", &ae).await;
    assert_eq!(enc.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(enc.body.len(), 4096, "already encoded: passed through");
    stop.cancel();
}

#[tokio::test]
async fn an_h2c_app_multiplexes_one_http2_connection_per_instance() {
    let (gw, addr, stop, _) = gateway("", "protocol = \"h2c\"").await;
    let (a, seen) = backend("a", true, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        set.spawn(async move { send(addr, "GET", "/version", &[]).await });
    }
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"HTTP/2.0");
    }
    assert_eq!(seen.h2.load(Ordering::SeqCst), 20, "the backend saw HTTP/2");
    assert_eq!(
        seen.conns.load(Ordering::SeqCst),
        1,
        "one connection, multiplexed"
    );
    stop.cancel();
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_without_secrets() {
    let path = std::env::temp_dir().join(format!("herd-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (gw, addr, stop, served) =
        gateway(&format!("access_log = \"{}\"", path.display()), "").await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(7, "web-7", a)]);
    let r = send(
        addr,
        "GET",
        "/text/10?token=secret-q",
        &[
            ("authorization", "Bearer secret-a"),
            ("cookie", "sid=secret-c"),
            ("user-agent", "test-agent"),
            ("x-request-id", "req-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    stop.cancel();
    served.await.unwrap().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/text/10");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_sent"], 10);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["upstream"]["instance"], "web-7");
    assert_eq!(v["upstream"]["addr"], a.to_string());
    assert_eq!(v["route"], "default");
    assert_eq!(v["retries"], 0);
    assert_eq!(v["tls"], false);
    assert_eq!(v["http"], "HTTP/1.1");
    assert_eq!(v["user_agent"], "test-agent");
    assert_eq!(v["body_error"], serde_json::Value::Null);
    assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(v["upstream_time_ms"].as_f64().is_some());
    // Milliseconds to the microsecond, without float noise (`3.2364569999999997`).
    for field in ["duration_ms", "upstream_time_ms"] {
        let text = v[field].to_string();
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{field}: {text}");
    }
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(gw.access_log_dropped(), 0);
    std::fs::remove_file(&path).unwrap();
}

/// An instance that dies mid-body: the client's 200 is cut, and the access log says so.
#[tokio::test]
async fn a_response_cut_mid_body_is_logged_as_such() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = std::env::temp_dir().join(format!("herd-access-cut-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (gw, addr, stop, served) =
        gateway(&format!("access_log = \"{}\"", path.display()), "").await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        // Dropped here: the connection closes 90 bytes short.
    });
    gw.set_endpoints("web", vec![endpoint(1, "web-1", backend)]);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(
            Request::builder()
                .uri(format!("http://{addr}/cut"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.into_body().collect().await.is_err(),
        "the client sees the cut"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.cancel();
    served.await.unwrap().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["bytes_sent"].as_u64()),
        (Some(200), Some(10))
    );
    assert!(
        v["body_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn the_access_log_names_the_failed_instance_and_logs_abandoned_requests_as_499() {
    let path = std::env::temp_dir().join(format!("herd-access-499-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (gw, addr, stop, served) = gateway(
        &format!(
            "access_log = \"{}\"\nresponse_timeout = \"300ms\"",
            path.display()
        ),
        "",
    )
    .await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(7, "web-7", a)]);
    // A 504: the line says which instance did not answer.
    assert_eq!(send(addr, "GET", "/slowhead", &[]).await.status, 504);
    // A client that gives up before the head: 499, as nginx logs it.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slowhead HTTP/1.1\r\nHost: x\r\nX-Request-Id: gave-up\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A client that closes its connection mid-upload: 499 too, not a 400 nobody reads.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /drain HTTP/1.1\r\nHost: x\r\nX-Request-Id: left-mid-upload\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 5000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    served.await.unwrap().unwrap();
    let (text, lines) = logged(&path);
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[2]["request_id"], "left-mid-upload", "{text}");
    assert_eq!(lines[2]["status"], 499, "{text}");
    assert_eq!(lines[0]["status"], 504);
    assert_eq!(lines[0]["upstream"]["instance"], "web-7", "{text}");
    assert!(
        lines[0]["upstream_time_ms"].as_f64().unwrap() >= 250.0,
        "{text}"
    );
    assert_eq!(lines[1]["status"], 499, "{text}");
    assert_eq!(lines[1]["request_id"], "gave-up");
    // As nginx's `$upstream_addr` for a 499: the instance the request was waiting on.
    assert_eq!(lines[1]["upstream"]["instance"], "web-7", "{text}");
    assert_eq!(
        lines[1]["upstream_time_ms"],
        serde_json::Value::Null,
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_response_cut_on_the_client_side_is_logged_as_cut() {
    let path =
        std::env::temp_dir().join(format!("herd-access-client-cut-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (gw, addr, stop, served) = gateway(
        &format!(
            "access_log = \"{}\"\nidle_timeout = \"300ms\"",
            path.display()
        ),
        "",
    )
    .await;
    // herd's own answer to a HEAD (hyper never reads its body): not cut.
    assert_eq!(send(addr, "HEAD", "/", &[]).await.status, 503);
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    // A HEAD answer and a whole body: not cut.
    assert_eq!(send(addr, "HEAD", "/text/10", &[]).await.status, 200);
    assert_eq!(send(addr, "GET", "/text/10", &[]).await.status, 200);
    // A head, then no byte for idle_timeout: the connection closes under the body.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{addr}/slowbody").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
    assert!(matches!(body, Ok(Err(_))), "cut at idle_timeout: {body:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    served.await.unwrap().unwrap();
    let (text, lines) = logged(&path);
    assert_eq!(lines.len(), 4, "{text}");
    for line in &lines[..3] {
        assert_eq!(line["body_error"], serde_json::Value::Null, "{text}");
    }
    assert_eq!(lines[3]["status"], 200, "{text}");
    assert!(
        lines[3]["body_error"]
            .as_str()
            .is_some_and(|e| e.contains("idle_timeout")),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn trailers_reach_a_client_that_takes_them() {
    let path =
        std::env::temp_dir().join(format!("herd-access-trailers-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (gw, addr, stop, served) = gateway(
        &format!(
            "compress = true\ncompress_min_size = 0\naccess_log = \"{}\"",
            path.display()
        ),
        "",
    )
    .await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    let raw = |head: &'static [u8]| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).to_ascii_lowercase()
    };
    // HTTP/1.1 with `TE: trailers`: the announced trailer follows the last chunk.
    let answer =
        raw(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
            .await;
    assert!(answer.contains("trailer: x-checksum"), "{answer}");
    assert!(answer.contains("0\r\nx-checksum: abc123\r\n"), "{answer}");
    // Without it, none (RFC 9110: a client that did not ask may not understand them).
    let answer = raw(b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(!answer.contains("abc123"), "{answer}");
    assert!(!answer.contains("trailer:"), "none announced: {answer}");
    // Compressed: the encoder passes data only, so the announcement goes too.
    let answer = raw(
        b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("content-encoding: gzip"), "{answer}");
    assert!(!answer.contains("trailer:"), "{answer}");
    stop.cancel();
    served.await.unwrap().unwrap();
    // Trailers end the body: none of these was cut.
    let (text, lines) = logged(&path);
    assert_eq!(lines.len(), 3, "{text}");
    for v in &lines {
        assert_eq!(v["body_error"], serde_json::Value::Null, "{text}");
    }
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_429_line_names_the_limit_that_refused_it() {
    let path = std::env::temp_dir().join(format!("herd-access-429-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (gw, addr, stop, served) = gateway(
        &format!("access_log = \"{}\"", path.display()),
        "[[rate_limit]]\nname = \"one-a-minute\"\nkey = \"ip\"\nrate = \"1r/m\"\n",
    )
    .await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    assert_eq!(send(addr, "GET", "/text/1", &[]).await.status, 200);
    assert_eq!(send(addr, "GET", "/text/1", &[]).await.status, 429);
    stop.cancel();
    served.await.unwrap().unwrap();
    let (text, lines) = logged(&path);
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["rate_limit"], serde_json::Value::Null, "{text}");
    assert_eq!(lines[1]["status"], 429, "{text}");
    assert_eq!(lines[1]["rate_limit"], "one-a-minute", "{text}");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn total_timeout_bounds_the_head_and_the_body() {
    let (gw, addr, stop, _) = gateway("total_timeout = \"300ms\"", "").await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    let started = Instant::now();
    let r = send(addr, "GET", "/slowhead", &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    // The backend would answer after 10 s.
    assert!(started.elapsed() < Duration::from_secs(8));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let started = Instant::now();
    let resp = client
        .get(format!("http://{addr}/slowbody").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the head made it in time");
    assert!(
        resp.into_body().collect().await.is_err(),
        "the body was cut"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    stop.cancel();
}

#[tokio::test]
async fn a_route_turns_the_total_timeout_off() {
    let (gw, addr, stop, _) = gateway(
        "total_timeout = \"300ms\"",
        "[[route]]\npath_prefix = \"/slowbody\"\napp = \"web\"\ntotal_timeout = \"off\"\n[[route]]\napp = \"web\"",
    )
    .await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{addr}/slowbody").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The gateway's 300 ms would have cut the body by now; the route's "off" lets it stream.
    let body = tokio::time::timeout(Duration::from_millis(1500), resp.into_body().collect()).await;
    assert!(
        body.is_err(),
        "the body ended (cut?) within 1.5 s: {body:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (gw, addr, stop, _) = gateway("idle_timeout = \"200ms\"", "").await;
    let (a, _) = backend("a", false, false).await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", a)]);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read the answer, then wait for the close (client_header_timeout is 30 s, so only
    // idle_timeout can close it within the bound).
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "still open after 10 s");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    stop.cancel();
}

/// An HTTP/2-only backend on `l` whose connections all drop when `stop` is cancelled.
async fn h2_backend_on(
    l: TcpListener,
    stop: tokio_util::sync::CancellationToken,
    conns: Arc<AtomicUsize>,
) {
    loop {
        let (s, _) = tokio::select! {
            a = l.accept() => a.unwrap(),
            () = stop.cancelled() => return,
        };
        conns.fetch_add(1, Ordering::SeqCst);
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, std::convert::Infallible>(Response::new(full(format!(
                    "{:?}",
                    req.version()
                ))))
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

#[tokio::test]
async fn an_h2c_connection_that_breaks_is_dialled_again() {
    let (gw, addr, stop, _) = gateway("", "protocol = \"h2c\"").await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    let first = tokio_util::sync::CancellationToken::new();
    let conns = Arc::new(AtomicUsize::new(0));
    let serving = tokio::spawn(h2_backend_on(l, first.clone(), Arc::clone(&conns)));
    gw.set_endpoints("web", vec![endpoint(1, "web-1", backend)]);
    assert_eq!(&send(addr, "GET", "/", &[]).await.body[..], b"HTTP/2.0");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // The backend goes away with its connection and comes back on the same port.
    first.cancel();
    serving.await.unwrap();
    let l = TcpListener::bind(backend).await.unwrap();
    let second = tokio_util::sync::CancellationToken::new();
    let conns2 = Arc::new(AtomicUsize::new(0));
    tokio::spawn(h2_backend_on(l, second.clone(), Arc::clone(&conns2)));
    // A request racing the close may fail (502); herd then dials anew. Bounded attempts.
    let mut ok = false;
    for _ in 0..20 {
        let r = send(addr, "GET", "/", &[]).await;
        if r.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "no request succeeded after the backend came back");
    assert_eq!(conns2.load(Ordering::SeqCst), 1, "one new connection");
    for _ in 0..5 {
        assert_eq!(send(addr, "GET", "/", &[]).await.status, 200);
    }
    assert_eq!(conns2.load(Ordering::SeqCst), 1, "and it is reused");
    second.cancel();
    stop.cancel();
}

/// A listener that never accepts, with its accept queue filled: a new connect to it gets no
/// SYN-ACK (Linux drops SYNs while the queue is full) and hangs. Keep the returned values alive.
async fn stalled_listener() -> (
    SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    // Fill the queue: once a connect times out, the next one will too.
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => filling.push(s),
            _ => break,
        }
    }
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await
        .is_err(),
        "the accept queue of the stalled listener is not full"
    );
    (addr, listener, filling)
}

#[tokio::test]
async fn a_connect_that_hangs_is_cut_at_connect_timeout_and_moved_on() {
    let (stalled, _keep, _filling) = stalled_listener().await;
    // max_fails high: the hanging instance stays in rotation, so every other request meets it.
    let (gw, addr, stop, _) = gateway("connect_timeout = \"300ms\"", "max_fails = 100").await;
    let (good, sgood) = backend("good", false, false).await;
    gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", stalled), endpoint(2, "web-2", good)],
    );
    // Round robin reaches the hanging instance every other request: each such request waits
    // connect_timeout, then goes to the other instance.
    let all = Instant::now();
    for _ in 0..4 {
        let started = Instant::now();
        let r = send(addr, "GET", "/", &[]).await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"good"[..]));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(sgood.requests.load(Ordering::SeqCst), 4);
    assert!(
        all.elapsed() >= Duration::from_millis(600),
        "two of them waited connect_timeout: {:?}",
        all.elapsed()
    );
    // With only the hanging instance left, the client gets a 502 after about connect_timeout.
    gw.set_endpoints("web", vec![endpoint(1, "web-1", stalled)]);
    let started = Instant::now();
    let r = send(addr, "GET", "/", &[]).await;
    let took = started.elapsed();
    assert!(
        r.status == StatusCode::BAD_GATEWAY || r.status == StatusCode::GATEWAY_TIMEOUT,
        "{}",
        r.status
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_route_overrides_connect_timeout() {
    let (stalled, _keep, _filling) = stalled_listener().await;
    let (gw, addr, stop, _) = gateway(
        "connect_timeout = \"30s\"",
        "max_fails = 100\n[[route]]\npath_prefix = \"/fast/\"\nconnect_timeout = \"300ms\"\napp = \"web\"\n[[route]]\napp = \"web\"",
    )
    .await;
    gw.set_endpoints("web", vec![endpoint(1, "web-1", stalled)]);
    // The route's 300 ms, not the gateway's 30 s.
    let started = Instant::now();
    let r = send(addr, "GET", "/fast/x", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // Elsewhere the gateway's 30 s applies: still waiting after the route's bound.
    let other = tokio::time::timeout(Duration::from_secs(2), send(addr, "GET", "/slow", &[])).await;
    assert!(
        other.is_err(),
        "the gateway's connect_timeout governs other routes"
    );
    stop.cancel();
}

/// An HTTP/2-only backend (prior knowledge) that answers each request with its body, read
/// whole first.
async fn h2_echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(full(body)))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_h2c_instance_is_not_blamed_for_a_client_body_that_fails() {
    let (gw, addr, stop, _) = gateway("max_body_size = 10", "protocol = \"h2c\"").await;
    let stats = Arc::new(EndpointStats::new());
    gw.set_endpoints(
        "web",
        vec![endpoint_with(
            1,
            "web-1",
            h2_echo_backend().await,
            Arc::clone(&stats),
        )],
    );
    // Over the limit with no length up front: the body is cut on its way to the instance,
    // which HTTP/2 reports as a reset stream (not hyper's "user" error, as HTTP/1 does).
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
              8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // A client that breaks its upload off.
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stats.failures(),
        0,
        "the clients' fault, not the instance's"
    );
    let ok = send(addr, "GET", "/", &[]).await;
    assert_eq!(ok.status, 200, "the instance is still in service");
    stop.cancel();
}

/// An HTTP/1.0 instance (Python's `http.server`) does not make herd answer its HTTP/1.1
/// clients in HTTP/1.0 (which would end keep-alive and make bodies close-delimited).
#[tokio::test]
async fn an_http_1_0_instance_is_answered_in_http_1_1() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let gw = common::gateway("", backend).await;
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    gw.stop.cancel();
}
