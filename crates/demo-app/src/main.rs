//! `demo-app`: the app herd's README, tests and benchmarks run behind the gateway.
//!
//! Reads `PORT` (default 3000) and `HERD_INSTANCE`, and serves:
//! - `GET /` → `hello from <instance>`; `GET /health` → `ok`
//! - `GET /work?ms=N` burns CPU for N ms; `GET /sleep?ms=N` waits N ms
//! - `GET /alloc?mb=N` allocates and touches N MiB that stay allocated (grows RSS)
//! - `GET /bytes/{n}` → n bytes (at most 16 MiB) from a static buffer, for large-body benchmarks
//! - `POST /echo` returns the request body; `GET /ws` is a WebSocket echo
//! - `GET /visits` counts visits in a herd session (the shared services, `visits`)
//! - `GET /version` → the HTTP version the request came in (`HTTP/1.1`, or `HTTP/2.0` over h2c:
//!   the listener also speaks HTTP/2 with prior knowledge)
//! - anything else: 404 `no route <path> on <instance>`
//!
//! Exits cleanly on SIGTERM/SIGINT after finishing in-flight requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

mod visits;

static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Largest body `GET /bytes/{n}` serves.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Zeroes in .bss: `/bytes/{n}` answers a slice of it without allocating or copying, so the
/// backend costs next to nothing per byte and a benchmark measures the proxy in front of it.
static ZEROES: [u8; MAX_BYTES] = [0; MAX_BYTES];

#[derive(Deserialize)]
struct Ms {
    ms: Option<u64>,
}

#[derive(Deserialize)]
struct Mb {
    mb: Option<usize>,
}

fn instance() -> String {
    std::env::var("HERD_INSTANCE").unwrap_or_else(|_| "demo".to_owned())
}

async fn work(Query(q): Query<Ms>) -> String {
    let ms = q.ms.unwrap_or(10).min(60_000);
    let spun = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_millis(ms);
        let mut x: u64 = 0;
        while Instant::now() < end {
            for i in 0..10_000u64 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
            }
        }
        x
    })
    .await
    .unwrap_or(0);
    format!("worked {ms}ms ({spun:x}) on {}\n", instance())
}

async fn sleep(Query(q): Query<Ms>) -> String {
    let ms = q.ms.unwrap_or(100).min(600_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms}ms on {}\n", instance())
}

async fn alloc(Query(q): Query<Mb>) -> String {
    let mb = q.mb.unwrap_or(10).min(16 * 1024);
    // Touch every page so the memory counts in RSS.
    let block = vec![1u8; mb * 1024 * 1024];
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.push(block);
    let total: usize = held.iter().map(Vec::len).sum();
    format!("holding {} MiB on {}\n", total / (1024 * 1024), instance())
}

async fn bytes(Path(n): Path<usize>) -> Response {
    if n > MAX_BYTES {
        let msg = format!("n must be at most {MAX_BYTES} (got {n})\n");
        return (axum::http::StatusCode::BAD_REQUEST, msg).into_response();
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Bytes::from_static(&ZEROES[..n]),
    )
        .into_response()
}

async fn ws(up: WebSocketUpgrade) -> Response {
    up.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if socket.send(msg).await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("failed to install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

const USAGE: &str = "demo-app: the small HTTP app herd's README, tests and benchmarks run

usage: demo-app            (no arguments; herd starts it with PORT set)

environment:
  PORT            port to listen on, on 127.0.0.1 (default 3000)
  HERD_INSTANCE   name shown in answers (default \"demo\")

routes:
  GET /                hello from <instance>
  GET /health          ok
  GET /work?ms=N       burn CPU for N ms
  GET /sleep?ms=N      wait N ms
  GET /alloc?mb=N      allocate and keep N MiB
  GET /bytes/N         N bytes (at most 16 MiB)
  POST /echo           the request body
  GET /ws              WebSocket echo
  GET /visits          visits counted in a herd session
  GET /version         the request's HTTP version
";

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return;
        }
        Some(other) => {
            eprintln!("demo-app: unexpected argument {other:?}; it takes none (set PORT instead)\n\n{USAGE}");
            std::process::exit(64);
        }
    }
    let port: u16 = match std::env::var("PORT").map(|p| p.parse()) {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => {
            eprintln!("demo-app: PORT must be a number between 1 and 65535");
            std::process::exit(64);
        }
        Err(_) => 3000,
    };
    let app = Router::new()
        .route(
            "/",
            get(|| async { format!("hello from {}\n", instance()) }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route("/work", get(work))
        .route("/sleep", get(sleep))
        .route("/alloc", get(alloc))
        .route("/bytes/{n}", get(bytes))
        .route("/echo", post(|body: axum::body::Bytes| async move { body }))
        .route("/ws", get(ws))
        .route("/visits", get(visits::visits))
        .route(
            "/version",
            get(|v: axum::http::Version| async move { format!("{v:?}") }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            // Says which instance answered, so routing can be checked from outside.
            (
                axum::http::StatusCode::NOT_FOUND,
                format!("no route {} on {}\n", uri.path(), instance()),
            )
        });
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-app: failed to listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("demo-app {} listening on 127.0.0.1:{port}", instance());
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        eprintln!("demo-app: server error: {e}");
        std::process::exit(1);
    }
    println!("demo-app {} stopped", instance());
}
