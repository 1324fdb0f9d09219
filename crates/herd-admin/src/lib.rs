//! herd's admin API: its own listener (loopback by default), Bearer-token protected when a
//! token is configured.
//!
//! - `auth`: the token check, applied to every route but the dashboard's page and assets.
//! - `dashboard`: `GET /` and `GET /assets/{file}`, the operator dashboard embedded in the binary.
//! - `routes`: `GET /health`, `GET /cluster/status`, `POST /scaling/manual`, `POST /reload`,
//!   `GET /logs/{app}` (tail, optionally followed).
//!
//! The admin API runs on the same runtime as the gateway but never waits on the data plane:
//! every handler reads snapshots the supervisor publishes or sends it a command.

mod auth;
mod dashboard;
mod errors;
mod metrics;
mod observe;
mod routes;
pub mod telemetry;

use std::sync::Arc;

use axum::response::IntoResponse as _;
use herd_fleet::Fleet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub fleet: Arc<Fleet>,
    /// The gateway's request counters (per app and route).
    pub stats: Arc<herd_core::StatsRegistry>,
    pub telemetry: Arc<telemetry::Telemetry>,
    /// Alert rules and their state (`GET /alerts`).
    pub alerts: Arc<std::sync::Mutex<herd_alerts::AlertEngine>>,
    /// Re-reads and applies the config file (`POST /config/reload`, SIGHUP); `None` in quick
    /// mode, where there is no file.
    pub reload: Option<Arc<dyn ConfigReloader>>,
    /// The shared services and their store (`GET /store/status`, store metrics); `None` when
    /// `[services] enabled = false`.
    pub services: Option<Arc<herd_services::Services>>,
    pub token: Option<Arc<str>>,
    /// The gateway's weights and queues for `GET /loadbalancer/status`; `None` shows the
    /// configured-less view (weight 1).
    pub lb: Option<Arc<dyn herd_core::LbView>>,
    /// Cancelled at shutdown: ends followed log streams so the listener can close.
    pub shutdown: CancellationToken,
    /// Cancelled when herd's shutdown begins (the gateway stops taking connections): `/health`
    /// answers 503 `stopping` from then on, while the API itself still serves.
    pub stopping: CancellationToken,
}

/// Applies a new config file; errors come back as readable lines (file:line:col key: message).
pub trait ConfigReloader: Send + Sync + 'static {
    /// # Errors
    /// Every problem found; the running config stays in force.
    fn reload(&self) -> ReloadFuture<'_>;
}

/// The future a [`ConfigReloader`] returns.
pub type ReloadFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ReloadReport, Vec<String>>> + Send + 'a>,
>;

/// What a successful reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub changes: Vec<String>,
    /// Settings that only take effect after a restart (e.g. a listen address).
    pub needs_restart: Vec<String>,
}

/// The admin router (exposed for tests).
pub fn router(state: AdminState) -> axum::Router {
    let registry = Arc::new(metrics::registry(
        Arc::clone(&state.fleet),
        Arc::clone(&state.stats),
        state.services.clone(),
        state.lb.clone(),
    ));
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
        .merge(observe::router(state.clone()))
        .route("/metrics", scrape)
        .merge(dashboard::router())
        .layer(axum::middleware::map_response(errors::json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(errors::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::same_origin,
        ))
}

/// Serves the admin API until `state.shutdown` is cancelled.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    tracing::info!(local = %listener.local_addr()?, auth = state.token.is_some(), "admin API listening");
    let shutdown = state.shutdown.clone();
    // A head read timeout and a connection cap: the admin port may face the network (with a
    // token), and idle connections must not take herd's file descriptors.
    herd_services::http::serve_router(listener, router(state), shutdown).await
}
