//! herd's admin API: its own listener (loopback by default), Bearer-token protected when a
//! token is configured.
//!
//! - `auth`: the token check, applied to every route.
//! - `routes`: `GET /health`, `GET /cluster/status`, `POST /scaling/manual`, `POST /reload`,
//!   `GET /logs/{app}` (tail, optionally followed).
//!
//! The admin API runs on the same runtime as the gateway but never waits on the data plane:
//! every handler reads snapshots the supervisor publishes or sends it a command.

mod auth;
mod metrics;
mod routes;

use std::sync::Arc;

use axum::response::IntoResponse as _;
use herd_fleet::Fleet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub fleet: Arc<Fleet>,
    pub token: Option<Arc<str>>,
    /// Cancelled at shutdown: ends followed log streams so the listener can close.
    pub shutdown: CancellationToken,
}

/// The admin router (exposed for tests).
pub fn router(state: AdminState) -> axum::Router {
    let registry = Arc::new(metrics::registry(Arc::clone(&state.fleet)));
    let scrape = axum::routing::get(move || {
        let registry = Arc::clone(&registry);
        async move {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response(),
                Err(e) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("failed to encode metrics: {e}"),
                )
                    .into_response(),
            }
        }
    });
    routes::router(state.clone())
        .route("/metrics", scrape)
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::require_token,
        ))
}

/// Serves the admin API until `state.shutdown` is cancelled.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    tracing::info!(local = %listener.local_addr()?, auth = state.token.is_some(), "admin API listening");
    let shutdown = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
