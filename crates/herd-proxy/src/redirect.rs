//! `[gateway] redirect_http`: a plain-HTTP listener that answers every request with
//! `308 Permanent Redirect` to the same host and path over https (308 keeps the method and body,
//! unlike 301). It never touches a backend.

use std::convert::Infallible;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::body::ProxyBody;

/// How the redirect listener serves.
#[derive(Debug, Clone, Copy)]
pub struct RedirectSettings {
    /// The gateway's TLS port; it is added to the `Location` unless it is 443.
    pub https_port: u16,
    /// `[gateway] client_header_timeout`: a request head must arrive within it, and an idle
    /// keep-alive connection is closed after it.
    pub client_header_timeout: Duration,
    /// How long a shutdown waits for open connections (`[gateway] shutdown_timeout`).
    pub drain: Duration,
}

/// Serves redirects until `shutdown`, then waits up to `settings.drain` for open connections.
///
/// # Errors
/// Only if reading the listener's local address fails; accept errors are logged and retried.
pub async fn serve_redirect(
    listener: TcpListener,
    settings: RedirectSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, "http→https redirect listening");
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.client_header_timeout);
    let https_port = settings.https_port;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a redirect connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service =
            service_fn(move |req| async move { Ok::<_, Infallible>(redirect(&req, https_port)) });
        let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "redirect connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("redirect_conn", %peer)),
        );
    }
    drop(listener);
    let _ = tokio::time::timeout(settings.drain, graceful.shutdown()).await;
    Ok(())
}

/// The 308 for one request: `https://<host without port>[:https_port]<path?query>`.
fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<ProxyBody> {
    location(req, https_port).map_or_else(
        || {
            let mut resp = Response::new(ProxyBody::text("herd: missing or invalid Host\n"));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        },
        |loc| {
            let mut resp = Response::new(ProxyBody::text(bytes::Bytes::new()));
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, loc);
            resp
        },
    )
}

/// `None` (a 400, as the gateway answers) for a request without exactly one valid Host (or an
/// absolute target's host), or whose target is not a path (`OPTIONS *`).
fn location(req: &Request<Incoming>, https_port: u16) -> Option<HeaderValue> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return None;
    }
    let authority: http::uri::Authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => first?.to_str().ok()?.parse().ok()?,
    };
    if !crate::target::valid_host(authority.as_str()) {
        return None;
    }
    let host = authority.host();
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if !path.starts_with('/') {
        return None;
    }
    let loc = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    HeaderValue::from_str(&loc).ok()
}
