//! Load balancing end to end against in-process backends on 127.0.0.1: weights, backups,
//! `max_conn` with its queue (FIFO, `queue_timeout`, `queue` bound), sticky-session cookies
//! with redispatch, passive layer-7 observation, and per-route balance/sticky overrides.

mod common;

use common::endpoint;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_core::Rotation;
use herd_proxy::Gateway;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A backend answering its name; `/slow` takes 300 ms, `/long` 30 s, `/fail` is a 500,
/// `/unavailable` a 503.
/// Counts the requests it has now and the most it ever had at once.
struct Backend {
    addr: SocketAddr,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

async fn backend(name: &'static str) -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (now2, peak2) = (Arc::clone(&now), Arc::clone(&peak));
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (now, peak) = (Arc::clone(&now2), Arc::clone(&peak2));
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
                    async move {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        let mut resp = Response::new(Full::new(Bytes::from(name)));
                        match req.uri().path() {
                            "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                            "/long" => tokio::time::sleep(Duration::from_secs(30)).await,
                            "/fail" => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
                            "/unavailable" => *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE,
                            _ => {}
                        }
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Backend { addr, now, peak }
}

struct Running {
    addr: SocketAddr,
    gw: Arc<Gateway>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn gateway(text: &str) -> Running {
    let text = format!("[gateway]\nlisten = \"127.0.0.1:0\"\n{text}");
    let (gw, _) = common::build(&text);
    let (addr, stop, _) = common::serve(&gw).await;
    Running { addr, gw, stop }
}

/// Status, body and `Set-Cookie` of one request carrying `cookie` (if any).
async fn send(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), cookie)
}

async fn count(addr: SocketAddr, path: &str, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, body, _) = send(addr, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        *seen.entry(body).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn weights_share_requests_in_proportion() {
    let (a, b) = (backend("a").await, backend("b").await);
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [{{ addr = \"{}\", weight = 3 }}, \"{}\"]\n",
        a.addr, b.addr
    ))
    .await;
    gw.gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", a.addr), endpoint(2, "web-2", b.addr)],
    );
    let seen = count(gw.addr, "/", 400).await;
    // Smooth weighted round robin is exact over whole periods; leave room anyway.
    let a_share = seen.get("a").copied().unwrap_or(0);
    assert!((280..=320).contains(&a_share), "{seen:?}");
    assert_eq!(a_share + seen.get("b").copied().unwrap_or(0), 400);
}

#[tokio::test]
async fn backups_serve_only_when_no_primary_is_up() {
    let (a, b) = (backend("a").await, backend("b").await);
    // Bound but never listening: connections are refused, and no other test's listener can
    // take the port meanwhile (a dropped listener's port could be reused and answer).
    let dead_socket = tokio::net::TcpSocket::new_v4().unwrap();
    dead_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = dead_socket.local_addr().unwrap();
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [\"{}\", \"{dead}\", {{ addr = \"{}\", backup = true }}]\n",
        a.addr, b.addr
    ))
    .await;
    let (ea, ed, eb) = (
        endpoint(1, "web-1", a.addr),
        endpoint(2, "web-2", dead),
        endpoint(3, "web-3", b.addr),
    );
    gw.gw.set_endpoints("web", vec![ea.clone(), eb.clone()]);
    assert_eq!(
        count(gw.addr, "/", 20).await,
        HashMap::from([("a".into(), 20)])
    );
    // The primary leaves rotation (failed checks, drained): the backup takes over.
    gw.gw.set_endpoints("web", vec![eb.clone()]);
    assert_eq!(
        count(gw.addr, "/", 5).await,
        HashMap::from([("b".into(), 5)])
    );
    // A primary that is in rotation but refuses connections is marked down passively; its
    // requests go to the backup, never to an error.
    gw.gw.set_endpoints("web", vec![ed, eb]);
    assert_eq!(
        count(gw.addr, "/", 5).await,
        HashMap::from([("b".into(), 5)])
    );
}

#[tokio::test]
async fn max_conn_serializes_requests_through_the_queue() {
    let a = backend("a").await;
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [{{ addr = \"{}\", max_conn = 1 }}]\n",
        a.addr
    ))
    .await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", a.addr)]);
    let addr = gw.addr;
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { send(addr, "/slow", &[]).await.0 }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        a.peak.load(Ordering::SeqCst),
        1,
        "max_conn = 1 was exceeded"
    );
}

/// Waits (bounded) until `cond` holds; the test's ordering comes from this, not from sleeps.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn queue_timeout_and_a_full_queue_are_503() {
    use herd_core::LbView as _;
    let a = backend("a").await;
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [{{ addr = \"{}\", max_conn = 1 }}]\nqueue = 1\nqueue_timeout = \"1s\"\n",
        a.addr
    ))
    .await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", a.addr)]);
    let addr = gw.addr;
    // Holds the only slot for 30 s (longer than the test).
    let long = tokio::spawn(async move { send(addr, "/long", &[]).await.0 });
    until("the long request at the backend", || {
        a.now.load(Ordering::SeqCst) == 1
    })
    .await;
    // Waits in the queue (its one place), then gives up after queue_timeout.
    let queued = tokio::spawn(async move { send(addr, "/", &[]).await });
    until("a request in the queue", || gw.gw.queued("web") == 1).await;
    // The queue is full: refused at once.
    let (status, body, _) = send(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("queue is full"), "{body}");
    let (status, body, _) = queued.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("queue_timeout"), "{body}");
    assert_eq!(gw.gw.queued("web"), 0);
    long.abort();
}

#[tokio::test]
async fn a_status_retry_with_no_free_instance_returns_the_answer_it_has() {
    use herd_core::LbView as _;
    let (a, b) = (backend("a").await, backend("b").await);
    let gw = gateway(&format!(
        "retry_on = [\"503\"]\n[[app]]\nname = \"web\"\nservers = [{{ addr = \"{}\", max_conn = 1 }}, {{ addr = \"{}\", max_conn = 1 }}]\nqueue_timeout = \"3s\"\n",
        a.addr, b.addr
    ))
    .await;
    gw.gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", a.addr), endpoint(2, "web-2", b.addr)],
    );
    let addr = gw.addr;
    // One instance is busy for longer than the test; the request goes to the other, which
    // answers 503. A retry would need the busy one: rather than wait in the queue (and end
    // with the queue's own 503), the client gets the backend's answer at once.
    let long = tokio::spawn(async move { send(addr, "/long", &[]).await.0 });
    until("the long request at a backend", || {
        a.now.load(Ordering::SeqCst) + b.now.load(Ordering::SeqCst) == 1
    })
    .await;
    let busy = if a.now.load(Ordering::SeqCst) == 1 {
        "a"
    } else {
        "b"
    };
    let started = std::time::Instant::now();
    let (status, body, _) = send(addr, "/unavailable", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ne!(body, busy, "answered by the free instance");
    assert!(
        body == "a" || body == "b",
        "the backend's own answer: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no wait for the busy instance"
    );
    assert_eq!(gw.gw.queued("web"), 0);
    long.abort();
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

#[tokio::test]
async fn sticky_cookie_pins_and_redispatches_when_the_instance_goes() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [\"{}\", \"{}\", \"{}\"]\nsticky = {{ cookie = \"SRV\", ttl = \"1h\" }}\n",
        a.addr, b.addr, c.addr
    ))
    .await;
    let eps = vec![
        endpoint(1, "web-1", a.addr),
        endpoint(2, "web-2", b.addr),
        endpoint(3, "web-3", c.addr),
    ];
    gw.gw.set_endpoints("web", eps.clone());
    let (status, first, set) = send(gw.addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let set = set.expect("a first response sets the cookie");
    assert!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Lax")
            && set.contains("Max-Age=3600")
            && set.contains("Path=/"),
        "{set}"
    );
    let cookie = cookie_value(&set).to_owned();
    for _ in 0..10 {
        let (status, body, again) = send(gw.addr, "/", &[("cookie", &cookie)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, first.as_str()));
        assert_eq!(again, None, "a valid cookie is not set again");
    }
    // A forged cookie (another instance, same signature) is ignored and replaced.
    let forged = cookie.replacen("web-", "web-9", 1);
    let (status, _, replaced) = send(gw.addr, "/", &[("cookie", &forged)]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(replaced.is_some());
    // The pinned instance leaves rotation: the next request is served elsewhere, with a new cookie.
    let pinned: usize = match first.as_str() {
        "a" => 0,
        "b" => 1,
        _ => 2,
    };
    let rest: Vec<_> = eps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != pinned)
        .map(|(_, e)| e.clone())
        .collect();
    gw.gw.set_endpoints("web", rest);
    let (status, moved, set) = send(gw.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(moved, first);
    let new_cookie = cookie_value(&set.expect("re-stuck with a new cookie")).to_owned();
    assert_ne!(new_cookie, cookie);
    for _ in 0..5 {
        let (_, body, _) = send(gw.addr, "/", &[("cookie", &new_cookie)]).await;
        assert_eq!(body, moved);
    }
}

#[tokio::test]
async fn the_app_sees_the_clients_cookies_without_the_sticky_one() {
    let echo = common::header_backend("cookie").await;
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [\"{echo}\"]\nsticky = {{ cookie = \"SRV\" }}\n"
    ))
    .await;
    gw.gw.set_endpoints("web", vec![endpoint(1, "web-1", echo)]);
    let (status, body, set) = send(gw.addr, "/", &[("cookie", "a=1")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a=1"));
    let sticky = cookie_value(&set.expect("the cookie is set")).to_owned();
    let (status, body, again) =
        send(gw.addr, "/", &[("cookie", &format!("a=1; {sticky}; b=2"))]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a=1; b=2"));
    assert_eq!(again, None, "still pinned by the cookie herd read");
    let (_, body, _) = send(gw.addr, "/", &[("cookie", &sticky)]).await;
    assert_eq!(
        body, "",
        "a Cookie header holding only the sticky cookie goes"
    );
}

#[tokio::test]
async fn a_5xx_marks_the_instance_down_with_observe_layer7() {
    let (a, b) = (backend("a").await, backend("b").await);
    let text = |observe: &str| {
        format!(
            "[[app]]\nname = \"web\"\nservers = [\"{}\", \"{}\"]\nbalance = \"first\"\nfail_timeout = \"30s\"\n{observe}",
            a.addr, b.addr
        )
    };
    let gw = gateway(&text("observe = \"layer7\"\n")).await;
    gw.gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", a.addr), endpoint(2, "web-2", b.addr)],
    );
    // `first` sends everything to `a` until it is marked down.
    let (status, _, _) = send(gw.addr, "/fail", &[]).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the 5xx itself is passed on"
    );
    assert_eq!(
        count(gw.addr, "/", 5).await,
        HashMap::from([("b".into(), 5)])
    );

    // The default (layer4, as nginx) and `max_fails = 0` (passive health off): a 5xx is
    // passed on and takes nobody out.
    for extra in ["", "observe = \"layer7\"\nmax_fails = 0\n"] {
        let gw = gateway(&text(extra)).await;
        gw.gw.set_endpoints(
            "web",
            vec![endpoint(1, "web-1", a.addr), endpoint(2, "web-2", b.addr)],
        );
        for _ in 0..3 {
            let _ = send(gw.addr, "/fail", &[]).await;
        }
        assert_eq!(
            count(gw.addr, "/", 5).await,
            HashMap::from([("a".into(), 5)]),
            "{extra}"
        );
    }
}

#[tokio::test]
async fn a_route_overrides_balance_and_sticky() {
    let (a, b) = (backend("a").await, backend("b").await);
    let gw = gateway(&format!(
        r#"[[app]]
name = "web"
servers = ["{}", "{}"]
sticky = true

[[route]]
path_prefix = "/user"
balance = "hash"
hash_key = "header:X-User"
sticky = false
app = "web"

[[route]]
app = "web"
"#,
        a.addr, b.addr
    ))
    .await;
    gw.gw.set_endpoints(
        "web",
        vec![endpoint(1, "web-1", a.addr), endpoint(2, "web-2", b.addr)],
    );
    // The app's round robin and cookie on the catch-all route.
    let (_, _, set) = send(gw.addr, "/", &[]).await;
    assert!(set.unwrap().starts_with("HERD_SRV=web-"));
    let spread = count(gw.addr, "/", 10).await;
    assert_eq!(spread.len(), 2, "{spread:?}");
    // The /user route hashes the header and sets no cookie.
    for user in ["alice", "bob", "carol"] {
        let (_, first, set) = send(gw.addr, "/user", &[("x-user", user)]).await;
        assert_eq!(set, None);
        for _ in 0..5 {
            let (_, body, _) = send(gw.addr, "/user", &[("x-user", user)]).await;
            assert_eq!(body, first);
        }
    }
}

#[tokio::test]
async fn the_503_page_answers_a_full_queue_and_a_queue_timeout() {
    use herd_core::LbView as _;
    let page = std::env::temp_dir().join(format!("herd-queue-page-{}.html", std::process::id()));
    std::fs::write(&page, "<h1>busy, come back soon</h1>").unwrap();
    let a = backend("a").await;
    let gw = gateway(&format!(
        "[[app]]\nname = \"web\"\nservers = [{{ addr = \"{}\", max_conn = 1 }}]\nqueue = 1\nqueue_timeout = \"500ms\"\nerror_page_503 = \"{}\"\n",
        a.addr,
        page.display()
    ))
    .await;
    gw.gw
        .set_endpoints("web", vec![endpoint(1, "web-1", a.addr)]);
    let addr = gw.addr;
    let long = tokio::spawn(async move { send(addr, "/long", &[]).await.0 });
    until("the long request at the backend", || {
        a.now.load(Ordering::SeqCst) == 1
    })
    .await;
    let queued = tokio::spawn(async move { send(addr, "/", &[]).await });
    until("a request in the queue", || gw.gw.queued("web") == 1).await;
    let (status, body, _) = send(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "<h1>busy, come back soon</h1>");
    let (status, body, _) = queued.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "<h1>busy, come back soon</h1>");
    long.abort();
    std::fs::remove_file(&page).unwrap();
}
