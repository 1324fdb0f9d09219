//! Test harness: an embedded store in a fresh directory, the services over it, the HTTP API on
//! 127.0.0.1:0, and a tiny HTTP/1.1 client over a raw TcpStream (one request per connection).

#![allow(dead_code, unreachable_pub)]

pub mod model;
pub mod redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herd_services::http::{router, HttpConfig};
use herd_services::{Clock, Services, ServicesConfig, SystemClock};
use herd_store::{Store, StoreOptions, Unreliable};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789";

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("herd-services-{tag}-{n:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens an embedded store in `dir`, wrapped in `Unreliable` when `unreliable`.
pub async fn open_store(dir: &TempDir, unreliable: bool) -> Arc<Store> {
    let store = Store::open(&StoreOptions::Embedded {
        path: dir.0.join("store.redb"),
    })
    .await
    .unwrap();
    Arc::new(if unreliable {
        Unreliable::wrap(store)
    } else {
        store
    })
}

/// Services over a store, with their own shutdown token (cancelled on drop of `Node`).
pub struct Node {
    pub services: Arc<Services>,
    pub shutdown: CancellationToken,
}

impl Node {
    pub fn start(store: &Arc<Store>, config: ServicesConfig) -> Node {
        Node::with_clock(store, config, Arc::new(SystemClock))
    }

    pub fn with_clock(store: &Arc<Store>, config: ServicesConfig, clock: Arc<dyn Clock>) -> Node {
        let shutdown = CancellationToken::new();
        let services = Services::start(Arc::clone(store), config, clock, shutdown.clone());
        Node { services, shutdown }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The HTTP API of one node on 127.0.0.1:0.
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub node: Node,
    _dir: TempDir,
}

impl Api {
    pub async fn start(unreliable: bool) -> Api {
        Api::start_with(unreliable, ServicesConfig::default(), 1 << 20).await
    }

    pub async fn start_with(unreliable: bool, config: ServicesConfig, max_body: usize) -> Api {
        let dir = TempDir::new("api");
        let store = open_store(&dir, unreliable).await;
        Api::serve(store, config, max_body, dir).await
    }

    /// Serves the API over an already open store (`dir` is kept until the Api drops).
    pub async fn serve(
        store: Arc<Store>,
        config: ServicesConfig,
        max_body: usize,
        dir: TempDir,
    ) -> Api {
        let node = Node::start(&store, config);
        let mut http = HttpConfig::new(TOKEN);
        http.max_body = max_body;
        let app = router(Arc::clone(&node.services), http);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = node.shutdown.clone();
        // The server herd itself runs (connection limits, header timeout, lingering close).
        tokio::spawn(async move {
            herd_services::http::serve_router(listener, app, shutdown)
                .await
                .unwrap();
        });
        Api {
            addr,
            node,
            _dir: dir,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        self.node.services.store()
    }

    /// A request with the token; `body` sent as is.
    pub async fn call(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.raw(
            method,
            path,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            body,
        )
        .await
    }

    pub async fn json(&self, method: &str, path: &str, body: Value) -> Resp {
        self.call(method, path, body.to_string().as_bytes()).await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        request(self.addr, method, path, headers, body).await
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection, bounded by 30 s.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        // The server may answer (413) before reading all of a large body.
        let _ = s.write_all(body).await;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        parse(&raw)
    })
    .await
    .expect("HTTP request timed out")
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..nl])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

/// Polls `check` every 20 ms until it is true or `limit` passes (generous bounds only).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
