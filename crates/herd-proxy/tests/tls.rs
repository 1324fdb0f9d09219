//! TLS termination with real rustls clients: HTTP/2 by ALPN (with WebSockets as its streams)
//! and HTTP/1.1, SNI, certificate reload without dropping connections, and the http→https
//! redirect listener. Certificates are made here with rcgen.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_core::{Endpoint, EndpointStats, Rotation};
use herd_proxy::Gateway;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// A backend answering with the `X-Forwarded-Proto` it received.
async fn backend() -> SocketAddr {
    common::header_backend("x-forwarded-proto").await
}

/// A fresh directory under the system temp dir.
fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "herd-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a self-signed certificate for `host` as `<stem>.pem` / `<stem>.key`; returns its DER.
fn write_cert(dir: &Path, stem: &str, host: &str) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), ck.cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), ck.key_pair.serialize_pem()).unwrap();
    ck.cert.der().clone()
}

struct Running {
    addr: SocketAddr,
    gw: Arc<Gateway>,
    dir: PathBuf,
    stop: CancellationToken,
    localhost: CertificateDer<'static>,
    api: CertificateDer<'static>,
    wild: CertificateDer<'static>,
}

/// A TLS gateway: default certificate for `localhost`, SNI ones for `api.test` and
/// `*.wild.test`.
async fn tls_gateway() -> Running {
    tls_gateway_to(backend().await).await
}

/// [`tls_gateway`] in front of the instance at `backend`.
async fn tls_gateway_to(backend: SocketAddr) -> Running {
    tls_gateway_with(backend, "").await
}

/// [`tls_gateway_to`] with more `[gateway]` keys.
async fn tls_gateway_with(backend: SocketAddr, gateway_keys: &str) -> Running {
    let dir = temp_dir();
    let localhost = write_cert(&dir, "default", "localhost");
    let api = write_cert(&dir, "api", "api.test");
    let wild = write_cert(&dir, "wild", "*.wild.test");
    let text = format!("[gateway]\nlisten = \"127.0.0.1:0\"\n{gateway_keys}\n");
    let text = text
        + "[gateway.tls]\ncert = \"default.pem\"\nkey = \"default.key\"\n\
        [[gateway.tls.sni]]\nhost = \"API.test\"\ncert = \"api.pem\"\nkey = \"api.key\"\n\
        [[gateway.tls.sni]]\nhost = \"*.wild.test\"\ncert = \"wild.pem\"\nkey = \"wild.key\"\n\
        [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\nsticky = true\n";
    let config = herd_config::parse(&text, "test.toml", &dir).unwrap();
    let tls = config.gateway.tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.join("default.pem"));
    assert_eq!(tls.sni[0].host, "api.test");
    let gw = Gateway::new(&config, Arc::default());
    gw.enable_tls(tls).unwrap();
    let ep = Endpoint {
        uid: 1,
        id: Arc::from("web-1"),
        addr: backend,
        stats: Arc::new(EndpointStats::new()),
    };
    gw.set_endpoints("web", vec![ep]);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(Arc::clone(&gw).serve(l, stop.clone()));
    Running {
        addr,
        gw,
        dir,
        stop,
        localhost,
        api,
        wild,
    }
}

/// A TLS connection that trusts `roots`, offering `alpn`, for server name `host`.
async fn connect(
    addr: SocketAddr,
    host: &str,
    roots: &[&CertificateDer<'static>],
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2(tls: TlsStream<TcpStream>) -> H2 {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// GET `/` on an h2 connection: (version, body).
async fn h2_get(send: &mut H2, host: &str) -> (Version, Bytes) {
    let req = Request::get(format!("https://{host}/"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let v = resp.version();
    (v, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn http2_over_tls_by_alpn() {
    let gw = tls_gateway().await;
    let tls = connect(gw.addr, "localhost", &[&gw.localhost], b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(tls).await;
    let (version, proto) = h2_get(&mut send, "localhost").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(proto, "https", "X-Forwarded-Proto at the backend");
    gw.stop.cancel();
}

#[tokio::test]
async fn a_sticky_cookie_over_tls_is_secure_and_followed_over_h2() {
    let gw = tls_gateway().await;
    let tls = connect(gw.addr, "localhost", &[&gw.localhost], b"h2").await;
    let mut send = h2(tls).await;
    let get = |cookie: Option<String>| {
        let mut req = Request::get("https://localhost/");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.body(Empty::new()).unwrap()
    };
    let resp = send.send_request(get(None)).await.unwrap();
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.starts_with("HERD_SRV=web-1.") && set.ends_with("; Secure"),
        "{set}"
    );
    let pair = set.split(';').next().unwrap().to_owned();
    // HTTP/2 may split cookies over several fields; the pin is still read.
    let resp = send
        .send_request(get(Some(format!("a=1; {pair}"))))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "a valid pin is not re-set"
    );
    gw.stop.cancel();
}

#[tokio::test]
async fn websockets_over_http2_over_tls() {
    // Browsers open `wss://` as a stream of their h2 connection when the server allows it.
    let gw = tls_gateway_to(common::ws_echo_backend().await).await;
    let tls = connect(gw.addr, "localhost", &[&gw.localhost], b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = common::h2_for_websockets(tls).await;
    let mut a = common::open_websocket(&mut send, "https://localhost/chat").await;
    let mut b = common::open_websocket(&mut send, "https://localhost/chat").await;
    for i in 0..10 {
        common::echo(&mut a, format!("a{i}")).await;
        common::echo(&mut b, format!("b{i}")).await;
    }
    a.close(None).await.unwrap();
    b.close(None).await.unwrap();
    gw.stop.cancel();
}

#[tokio::test]
async fn http1_over_tls() {
    let gw = tls_gateway().await;
    let tls = connect(gw.addr, "localhost", &[&gw.localhost], b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = Request::get("/")
            .header("host", "localhost")
            .header("x-forwarded-proto", "http")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_11);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "https");
    }
    gw.stop.cancel();
}

#[tokio::test]
async fn an_idle_tls_keep_alive_connection_lasts_until_idle_timeout() {
    // hyper's head-read timer runs between requests; a released TLS connection leaves it, as a
    // plain one does, so `idle_timeout` (nginx's `keepalive_timeout`) is what closes it.
    let gw = tls_gateway_with(
        backend().await,
        "client_header_timeout = \"400ms\"\nidle_timeout = \"2500ms\"",
    )
    .await;
    let mut tls = connect(gw.addr, "localhost", &[&gw.localhost], b"http/1.1").await;
    let get = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for round in 0..3 {
        tls.write_all(get).await.unwrap();
        let head = read_head_and_body(&mut tls).await;
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        assert!(head.ends_with("https"), "round {round}: {head}");
        // Past client_header_timeout, well within idle_timeout.
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    // A head arriving in pieces after a release is still bounded by client_header_timeout.
    tls.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.write_all(b"st: localhost\r\n\r\n").await.unwrap();
    let head = read_head_and_body(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = std::time::Instant::now();
    tls.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        waited < Duration::from_secs(2),
        "a partial head held for {waited:?}"
    );
    // Quiet: closed at idle_timeout, not before.
    let mut quiet = connect(gw.addr, "localhost", &[&gw.localhost], b"http/1.1").await;
    quiet.write_all(get).await.unwrap();
    let head = read_head_and_body(&mut quiet).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), quiet.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        waited >= Duration::from_millis(2000) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );
    gw.stop.cancel();
}

/// Reads one response with a `Content-Length` body; returns the head and body as text.
async fn read_head_and_body(tls: &mut TlsStream<TcpStream>) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_listener_is_refused() {
    let gw = tls_gateway().await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    // As nginx: a 400 that says what happened, not a TLS alert shown as garbage.
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nThe plain HTTP request was sent to the HTTPS port: use https\n"),
        "{text}"
    );
    gw.stop.cancel();
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let gw = tls_gateway().await;
    let both = [&gw.localhost, &gw.api];
    let api = connect(gw.addr, "api.test", &both, b"h2").await;
    assert_eq!(peer_cert(&api), gw.api);
    let default = connect(gw.addr, "localhost", &both, b"h2").await;
    assert_eq!(peer_cert(&default), gw.localhost);
    let wild = connect(gw.addr, "www.wild.test", &[&gw.wild], b"h2").await;
    assert_eq!(peer_cert(&wild), gw.wild);
    let mut h2 = h2(api).await;
    assert_eq!(h2_get(&mut h2, "api.test").await.1, "https");
    gw.stop.cancel();
}

#[tokio::test]
async fn certificate_reload_drops_no_connection() {
    let gw = tls_gateway().await;
    let old = gw.localhost.clone();
    let tls = connect(gw.addr, "localhost", &[&old], b"h2").await;
    let mut send = h2(tls).await;
    h2_get(&mut send, "localhost").await;

    let new = write_cert(&gw.dir, "default", "localhost");
    assert_ne!(new, old);
    gw.gw.reload_tls().unwrap();

    // The open connection keeps its session and goes on serving.
    for _ in 0..3 {
        assert_eq!(h2_get(&mut send, "localhost").await.1, "https");
    }
    // New handshakes get the new certificate.
    let fresh = connect(gw.addr, "localhost", &[&old, &new], b"h2").await;
    assert_eq!(peer_cert(&fresh), new);
    let mut fresh = h2(fresh).await;
    h2_get(&mut fresh, "localhost").await;
    assert_eq!(h2_get(&mut send, "localhost").await.1, "https");

    // A broken file on reload: error naming it, old certificates stay.
    std::fs::write(gw.dir.join("api.key"), "not a key").unwrap();
    let err = gw.gw.reload_tls().unwrap_err().to_string();
    assert!(err.contains("api.key"), "{err}");
    // An encrypted key says so (it used to read "no PEM private key").
    std::fs::write(
        gw.dir.join("api.key"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = gw.gw.reload_tls().unwrap_err().to_string();
    assert!(
        err.contains("encrypted private key") && err.contains("openssl pkey"),
        "{err}"
    );
    let again = connect(gw.addr, "api.test", &[&gw.api], b"h2").await;
    assert_eq!(peer_cert(&again), gw.api);
    gw.stop.cancel();
}

#[tokio::test]
async fn changed_files_are_picked_up_by_the_watcher() {
    let gw = tls_gateway().await;
    let new = write_cert(&gw.dir, "api", "api.test");
    // The watcher looks every 2 s; allow it plenty of rounds on a loaded machine.
    for _ in 0..100 {
        let tls = connect(gw.addr, "api.test", &[&gw.api, &new], b"h2").await;
        if peer_cert(&tls) == new {
            gw.stop.cancel();
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the watcher never reloaded the changed certificate");
}

#[tokio::test]
async fn missing_files_fail_with_the_file_named() {
    let dir = temp_dir();
    write_cert(&dir, "default", "localhost");
    let text = "[gateway.tls]\ncert = \"default.pem\"\nkey = \"nope.key\"\n\
        [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n";
    let config = herd_config::parse(text, "test.toml", &dir).unwrap();
    let gw = Gateway::new(&config, Arc::default());
    let err = gw
        .enable_tls(config.gateway.tls.as_ref().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.key"), "{err}");

    let text = "[gateway.tls]\ncert = \"default.pem\"\n\
        [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n";
    let errors = herd_config::parse(text, "test.toml", &dir).unwrap_err();
    let all = errors.to_string();
    assert!(all.contains("gateway.tls.key"), "{all}");
}

#[tokio::test]
async fn redirect_listener_answers_308() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let settings = herd_proxy::RedirectSettings {
        https_port: 8443,
        client_header_timeout: Duration::from_millis(500),
        drain: Duration::from_secs(1),
    };
    tokio::spawn(herd_proxy::serve_redirect(l, settings, stop.clone()));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /a/b?c=1 HTTP/1.1\r\nHost: example.com:8081\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 308"), "{text}");
    assert!(
        text.contains("location: https://example.com:8443/a/b?c=1\r\n"),
        "{text}"
    );
    // What the gateway refuses is refused here too, rather than redirected to a bad URL.
    for bad in [
        "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n",
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
        "GET / HTTP/1.1\r\nHost: example.com:abc\r\n",
        "GET / HTTP/1.1\r\nHost: example.com:99999\r\n",
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("{bad}Connection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "{bad:?}: {text}");
    }
    // A head that never completes is cut at client_header_timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(9), slow.read_to_end(&mut buf)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "held for {waited:?}");
    stop.cancel();
}
