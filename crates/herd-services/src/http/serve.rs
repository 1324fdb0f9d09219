//! Serving an API router (the services API, the admin API) with the limits an outside client
//! must not be able to escape, which `axum::serve` does not set: a request head must arrive
//! within [`HEADER_READ_TIMEOUT`] (a slowloris, or a connection that sends nothing, is closed),
//! and at most [`MAX_CONNECTIONS`] connections are open at once (more are closed at accept), so
//! idle connections cannot take every file descriptor of herd. A request body must keep
//! coming: a pause of [`BODY_READ_TIMEOUT`] between two reads fails the request (its handler
//! answers 400) and closes the connection, so a client that sends a head and then stalls its
//! body cannot hold a connection either. A shutdown stops accepting, lets requests in flight
//! finish for at most [`DRAIN`], then closes the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Time allowed for a request head, and between requests on a keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause allowed between two reads of a request body (nginx's
/// `client_body_timeout` is 60 s; these APIs' bodies are at most `max_body_size`, 1 MiB by
/// default, from clients on the same network).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; the next ones are closed as they are accepted. Room for many
/// workers' long polls (a queue's `wait`, a lock's, a fill's) while far below herd's
/// descriptor limit.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a shutdown waits for requests in flight (a dashboard's event stream ends then).
const DRAIN: Duration = Duration::from_secs(5);

/// The limits [`serve_router_with`] applies.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// A request body that fails once no frame has come for `timeout`.
struct PacedBody {
    inner: axum::body::Body,
    timeout: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl PacedBody {
    fn new(inner: axum::body::Body, timeout: Duration) -> Self {
        PacedBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl hyper::body::Body for PacedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match std::future::Future::poll(this.deadline.as_mut(), cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body stalled for {:?}",
                    this.timeout
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` until `shutdown`, with the default [`ApiLimits`].
///
/// # Errors
/// None once listening: accept errors are logged and retried (a full descriptor table
/// recovers by itself once connections close).
pub async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router_with(listener, router, shutdown, ApiLimits::default()).await
}

/// [`serve_router`] with other limits.
///
/// # Errors
/// As [`serve_router`].
pub async fn serve_router_with(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    limits: ApiLimits,
) -> std::io::Result<()> {
    let head = limits.header_read_timeout;
    let body_timeout = limits.body_read_timeout;
    // An idle kept-alive connection is closed once `head` passes without a new request: said
    // in `Keep-Alive: timeout=N` (whole seconds), which Node's http agent and others read to
    // drop the socket first rather than race the close with a new request.
    let keep_alive = (head >= Duration::from_secs(1))
        .then(|| HeaderValue::from_str(&format!("timeout={}", head.as_secs())).ok())
        .flatten();
    let router = router
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move {
                req.map(|body| axum::body::Body::new(PacedBody::new(body, body_timeout)))
            },
        ))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let keep_alive = keep_alive.clone();
                async move {
                    let closing = req
                        .headers()
                        .get(header::CONNECTION)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| {
                            v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
                        });
                    let mut res = next.run(req).await;
                    if let Some(v) = keep_alive.filter(|_| {
                        !closing && res.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS
                    }) {
                        res.headers_mut()
                            .insert(HeaderName::from_static("keep-alive"), v);
                    }
                    res
                }
            },
        ));
    // HTTP/1.1 only: its head timer also bounds an idle kept-alive connection, which an
    // HTTP/2 connection answering pings would not be (no client of these APIs needs h2).
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head);
    let mut last_warned: Option<tokio::time::Instant> = None;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Once a minute at most: a flood must not flood the log too.
            if last_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warned = Some(tokio::time::Instant::now());
                tracing::warn!(
                    max = limits.max_connections,
                    "too many open connections; closing new ones"
                );
            }
            continue;
        };
        // Small JSON answers: send them at once rather than wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (builder, router, shutdown) = (builder.clone(), router.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _slot = slot;
            // The protocol sniffing of `auto` reads the first bytes without a timer: a
            // connection that sends nothing is closed here instead.
            let mut byte = [0u8; 1];
            let first = tokio::time::timeout(head, stream.peek(&mut byte));
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = first => if !matches!(got, Ok(Ok(n)) if n > 0) {
                    return;
                },
            }
            // A 413 answered before the body was read closes with a lingering close, so a
            // client still uploading reads it instead of a reset.
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(herd_core::linger::Lingering::new(stream)),
                TowerToHyperService::new(router),
            );
            tokio::pin!(conn);
            let ended = tokio::select! {
                res = conn.as_mut() => Some(res),
                () = shutdown.cancelled() => None,
            };
            let res = match ended {
                Some(res) => res,
                None => {
                    // Requests in flight finish (at most `DRAIN`); idle connections close.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(DRAIN, conn.as_mut()).await {
                        Ok(res) => res,
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = res {
                tracing::debug!(error = %e, "API connection ended with an error");
            }
        });
    }
    drop(listener);
    tasks.close();
    let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), tasks.wait()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn silent_and_slow_clients_are_closed_and_connections_capped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: axum::body::Bytes| async move { body }),
            );
        let stop = CancellationToken::new();
        let limits = ApiLimits {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            max_connections: 2,
        };
        let served = tokio::spawn(serve_router_with(listener, router, stop.clone(), limits));
        // Sends nothing.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Sends half a head.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A third connection while both are open: over the cap, closed at once.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut third, Duration::from_secs(2)).await,
            "over the cap"
        );
        assert!(
            closed_within(&mut silent, Duration::from_secs(3)).await,
            "silent"
        );
        assert!(
            closed_within(&mut slow, Duration::from_secs(3)).await,
            "slowloris"
        );
        // A head, then a body that stalls: the request fails and the connection closes.
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        assert!(
            closed_within(&mut stalled, Duration::from_secs(8)).await,
            "stalled body"
        );
        // Slots are free again: a real request is served.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("keep-alive:"),
            "no Keep-Alive on a closing answer: {answer}"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_kept_alive_answer_says_when_the_idle_connection_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let limits = ApiLimits {
            header_read_timeout: Duration::from_secs(2),
            ..ApiLimits::default()
        };
        let served = tokio::spawn(serve_router_with(listener, router, stop.clone(), limits));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(answer.contains("keep-alive: timeout=2\r\n"), "{answer}");
        // And it does close then.
        assert!(closed_within(&mut conn, Duration::from_secs(5)).await);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
