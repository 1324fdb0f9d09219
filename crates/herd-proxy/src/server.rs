//! The gateway's listener: accepts connections (within `max_connections` and
//! `max_conn_per_ip`) and hands each to its task (`client_conn`), which serves HTTP/1.1 and h2c
//! (prior knowledge) with hyper, or with `[gateway.tls]` terminates TLS first (HTTP/2 by ALPN or
//! HTTP/1.1; the handshake bounded by `client_header_timeout`; the framing guard wraps the
//! decrypted stream). Shuts down gracefully: stop accepting, let in-flight requests finish
//! (bounded by `shutdown_timeout`), close parked keep-alive connections at once, then close.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use herd_config::Config;
use herd_core::{Endpoint, Rotation, StatsRegistry};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::access_log::AccessLogger;
use crate::body::ProxyBody;
use crate::client_conn;
use crate::connlimit::ConnCounts;
use crate::framing;
use crate::handler;
use crate::idle;
use crate::parking::Parking;
use crate::ratelimit::{self, RateLimiter};
use crate::resilience::AppPlane;
use crate::route::RouteTable;
use crate::tls::{ClientTls, TlsCerts, TlsError};
use crate::tunnel::Tunnels;
use crate::upstream::AppUpstreams;

/// Gateway-wide timeouts and pool sizes (from `[gateway]`).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub shutdown_timeout: Duration,
    /// HTTP/1 request heads must arrive within this (slowloris). Read when serving starts.
    pub client_header_timeout: Duration,
    /// Open client connections at most (0: unlimited). Read when serving starts.
    pub max_connections: usize,
    /// Largest request head in bytes (431 over it). Read when serving starts.
    pub max_header_size: usize,
    /// Largest request body in bytes (413 over it).
    pub max_body_size: Option<u64>,
    /// Add `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy` when missing.
    pub security_headers: bool,
    /// Open client connections per client IP; 0 = unlimited.
    pub max_conn_per_ip: u32,
    /// An upgraded connection with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// A client connection with no request in flight and no byte read for this long is closed.
    /// Read when serving starts.
    pub idle_timeout: Duration,
    /// An HTTP/1 keep-alive connection (plain TCP) quiet this long between requests gives back
    /// hyper's state and waits on the bare socket (`None`: never).
    pub idle_release: Option<Duration>,
    /// The whole exchange, response body included (routes may override).
    pub total_timeout: Option<Duration>,
    /// Retries for a request that reached a backend (routes may override).
    pub retries: u32,
    pub retry_on: herd_config::RetryOn,
    /// `compress`, `compress_types`, `compress_min_size`.
    pub compress: Arc<herd_config::Compress>,
}

impl From<&herd_config::Gateway> for GatewaySettings {
    fn from(g: &herd_config::Gateway) -> Self {
        GatewaySettings {
            connect_timeout: g.connect_timeout,
            response_timeout: g.response_timeout,
            pool_idle_timeout: g.pool_idle_timeout,
            pool_max_idle: g.pool_max_idle,
            shutdown_timeout: g.shutdown_timeout,
            client_header_timeout: g.client_header_timeout,
            max_connections: g.max_connections,
            max_header_size: usize::try_from(g.max_header_size).unwrap_or(usize::MAX),
            max_body_size: g.max_body_size,
            security_headers: g.security_headers,
            max_conn_per_ip: g.max_conn_per_ip,
            tunnel_idle_timeout: g.tunnel_idle_timeout,
            idle_timeout: g.data_plane.idle_timeout,
            idle_release: g.data_plane.idle_release,
            total_timeout: g.data_plane.total_timeout,
            retries: g.data_plane.retries,
            retry_on: g.data_plane.retry_on,
            compress: Arc::new(g.data_plane.compress.clone()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) routes: RouteTable,
    pub(crate) apps: Vec<Arc<AppUpstreams>>,
    /// `[[rate_limit]]` in file order; unchanged entries keep their state across reloads.
    pub(crate) limits: Vec<Arc<RateLimiter>>,
    by_name: HashMap<String, usize>,
    /// Signs sticky-session cookies; kept across reloads unless `sticky_secret` changes.
    pub(crate) sticky_key: Arc<crate::sticky::StickyKey>,
    sticky_secret: Option<String>,
}

impl Tables {
    /// Compiles routes and apps; apps that exist in `old` keep their instances and held requests.
    fn build(config: &Config, stats: &StatsRegistry, old: Option<&Tables>) -> Tables {
        let apps: Vec<Arc<AppUpstreams>> = config
            .apps
            .iter()
            .map(|a| {
                let previous = old.and_then(|t| t.by_name.get(&a.name).map(|&i| &t.apps[i]));
                let mut up = match previous {
                    Some(p) => p.reconfigured(a),
                    None => AppUpstreams::new(a),
                };
                up.plane = AppPlane::new(a, &config.gateway.data_plane);
                Arc::new(up)
            })
            .collect();
        let names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
        let by_name = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Tables {
            routes: RouteTable::compile(&config.routes, &names, stats),
            apps,
            limits: ratelimit::build(&config.rate_limits, old.map_or(&[], |t| &t.limits)),
            by_name,
            sticky_key: match old {
                Some(t) if t.sticky_secret == config.gateway.sticky_secret => {
                    Arc::clone(&t.sticky_key)
                }
                _ => Arc::new(crate::sticky::StickyKey::new(
                    config.gateway.sticky_secret.as_deref(),
                )),
            },
            sticky_secret: config.gateway.sticky_secret.clone(),
        }
    }
}

/// The reverse proxy. Cheap to share (`Arc`); the supervisor feeds it through [`Rotation`].
#[derive(Debug)]
pub struct Gateway {
    settings: ArcSwap<GatewaySettings>,
    tables: ArcSwap<Tables>,
    stats: Arc<StatsRegistry>,
    conns: Arc<ConnCounts>,
    /// Upgraded connections (WebSocket): they outlive the client connection's hyper task.
    pub(crate) tunnels: Tunnels,
    /// Set by [`Gateway::enable_tls`] before serving: the listener then speaks TLS only.
    tls: OnceLock<Arc<TlsCerts>>,
    /// The shared store for `shared = true` rate limits (set once at start).
    shared_store: OnceLock<Arc<herd_store::Store>>,
    /// `[gateway] access_log`, fixed at start (its writer runs while the gateway serves).
    pub(crate) access_log: Option<Arc<AccessLogger>>,
}

impl Gateway {
    /// Builds the gateway for a validated config. No instance is in rotation until the
    /// supervisor publishes some. Request statistics go to `stats`.
    #[must_use]
    pub fn new(config: &Config, stats: Arc<StatsRegistry>) -> Arc<Self> {
        Arc::new(Gateway {
            settings: ArcSwap::from_pointee(GatewaySettings::from(&config.gateway)),
            tables: ArcSwap::from_pointee(Tables::build(config, &stats, None)),
            stats,
            conns: Arc::default(),
            tunnels: Tunnels::default(),
            tls: OnceLock::new(),
            shared_store: OnceLock::new(),
            access_log: config
                .gateway
                .data_plane
                .access_log
                .as_ref()
                .map(AccessLogger::new),
        })
    }

    /// Access log lines dropped so far because the writer was behind (0 without a log).
    #[must_use]
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.as_ref().map_or(0, |l| l.dropped())
    }

    /// Gives `shared = true` rate limits the store they count in (Redis across herd nodes).
    /// Without one they count on this node only.
    pub fn set_shared_store(&self, store: Arc<herd_store::Store>) {
        let _ = self.shared_store.set(store);
    }

    pub(crate) fn shared_store(&self) -> Option<&herd_store::Store> {
        self.shared_store.get().map(AsRef::as_ref)
    }

    /// Loads the `[gateway.tls]` certificates; [`Gateway::serve`] then terminates TLS. Call it
    /// once, before serving (a second call changes nothing).
    ///
    /// # Errors
    /// A certificate or key that cannot be loaded; the error names the file.
    pub fn enable_tls(&self, tls: &herd_config::Tls) -> Result<(), TlsError> {
        let certs = TlsCerts::load(tls)?;
        let _ = self.tls.set(certs);
        Ok(())
    }

    /// Reads the certificate files again (SIGHUP) and swaps them in for new handshakes; open
    /// connections are untouched. Without TLS, does nothing.
    ///
    /// # Errors
    /// A file that fails to load; the certificates in force stay.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match self.tls.get() {
            Some(certs) => certs.reload(),
            None => Ok(()),
        }
    }

    /// Applies a new config atomically: routes, apps, balancing, timeouts. Requests in flight
    /// finish under the tables they started with; instances in rotation stay. The listen address
    /// cannot change without a restart (the caller reports that).
    pub fn reconfigure(&self, config: &Config) {
        let old = self.tables.load_full();
        self.tables
            .store(Arc::new(Tables::build(config, &self.stats, Some(&old))));
        self.settings
            .store(Arc::new(GatewaySettings::from(&config.gateway)));
    }

    pub(crate) fn tables(&self) -> Guard<Arc<Tables>> {
        self.tables.load()
    }

    pub(crate) fn settings(&self) -> Guard<Arc<GatewaySettings>> {
        self.settings.load()
    }

    /// Serves until `shutdown` is cancelled, then drains connections for at most
    /// `shutdown_timeout`.
    ///
    /// # Errors
    /// Only if reading the listener's local address fails; accept errors are logged and retried.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        tracing::info!(%local, "gateway listening");
        // Every client connection's task; shutdown waits for them (bounded by
        // `shutdown_timeout`).
        let conns = TaskTracker::new();
        let settings = self.settings().as_ref().clone();
        let acceptor = match self.tls.get() {
            Some(certs) => Some(certs.acceptor().map_err(std::io::Error::other)?),
            None => None,
        };
        // Connections may be released (`idle_release`, plain HTTP): then they are watched (and
        // closed at idle_timeout or shutdown) by one task.
        let releasing = settings.idle_release.is_some() && acceptor.is_none();
        let parking = if releasing {
            Some(Parking::new(Arc::clone(&self.stats.connections))?)
        } else {
            None
        };
        let cert_watcher = self.tls.get().map(|certs| {
            tokio::spawn(
                Arc::clone(certs)
                    .watch(shutdown.clone())
                    .instrument(tracing::debug_span!("tls_cert_watcher")),
            )
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper closes HTTP/1 connections that do not send a whole request head within
        // `client_header_timeout` (slowloris), and answers 431 to a head larger than its read
        // buffer (at least 8 KiB, which validation enforces).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.client_header_timeout)
            .max_buf_size(settings.max_header_size);
        builder
            .http2()
            .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX));
        // Cancelled when `shutdown_timeout` runs out: the connections still open are dropped.
        let hard_stop = CancellationToken::new();
        let shared = Arc::new(client_conn::Shared {
            builder,
            acceptor: acceptor.clone(),
            max_header_size: settings.max_header_size,
            handshake_timeout: settings.client_header_timeout,
            idle_timeout: settings.idle_timeout,
            idle_release: settings.idle_release,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
            parking: parking.clone(),
        });
        let spawner = Arc::new(Spawner {
            gw: Arc::clone(&self),
            shared,
            conns: conns.clone(),
            https: acceptor.is_some(),
            releasing,
        });
        let parked = parking.map(|parking| {
            let spawner = Arc::clone(&spawner);
            tokio::spawn(
                parking
                    .run(shutdown.clone(), move |stream, keep| {
                        spawner.spawn(stream, keep);
                    })
                    .instrument(tracing::debug_span!("parked_conns")),
            )
        });
        // `max_connections`: when all permits are out, stop accepting until a connection
        // closes; new clients wait in the kernel's listen backlog meanwhile.
        let slots = (settings.max_connections > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_connections)));
        let sweeper = tokio::spawn(
            sweep_pools(Arc::clone(&self), shutdown.clone())
                .instrument(tracing::debug_span!("pool_sweeper")),
        );
        // Stopped after the connections drained, so their last lines are written.
        let log_stop = CancellationToken::new();
        let log_writer = self.access_log.as_ref().map(|log| {
            tokio::spawn(
                Arc::clone(log)
                    .run(log_stop.clone())
                    .instrument(tracing::debug_span!("access_log")),
            )
        });
        loop {
            let slot = match &slots {
                Some(slots) => tokio::select! {
                    () = shutdown.cancelled() => break,
                    permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                },
                None => None,
            };
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "failed to accept a gateway connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let max_conn = self.settings().max_conn_per_ip;
            let conn_guard = (max_conn > 0).then(|| self.conns.try_acquire(peer.ip(), max_conn));
            let over_limit = matches!(conn_guard, Some(None));
            if over_limit {
                tracing::debug!(%peer, max_conn, "connection over max_conn_per_ip");
            }
            let keep = client_conn::Keep {
                peer,
                _slot: slot,
                _conn_guard: conn_guard.flatten(),
                _open: self.stats.connections.opened(),
                over_limit,
            };
            spawner.spawn(stream, keep);
        }
        drop(listener);
        // The parked connections' watcher ends at once on shutdown (closing them); awaited
        // first, so that it resumes no connection into the tracker once that is closed.
        if let Some(parked) = parked {
            let _ = parked.await;
        }
        tracing::info!("gateway stopped accepting; draining client connections");
        let shutdown_timeout = self.settings().shutdown_timeout;
        // Upgraded connections (tunnels) left hyper's watch at the `101`; they are waited for
        // within the same deadline.
        conns.close();
        let drain = async {
            conns.wait().await;
            self.tunnels.drain().await;
        };
        if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
            tracing::warn!(timeout = ?shutdown_timeout, "client connections still open after shutdown_timeout; closing them");
            hard_stop.cancel();
            self.tunnels.close_all();
        }
        let _ = sweeper.await;
        log_stop.cancel();
        if let Some(w) = log_writer {
            let _ = w.await;
        }
        if let Some(w) = cert_watcher {
            let _ = w.await;
        }
        Ok(())
    }

    /// Address-independent view used by tests and the admin API: the instance ids in rotation.
    #[must_use]
    pub fn in_rotation(&self, app: &str) -> Vec<String> {
        let tables = self.tables.load();
        tables
            .by_name
            .get(app)
            .map(|&i| {
                tables.apps[i]
                    .current()
                    .iter()
                    .map(|u| u.endpoint.id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Starts connection tasks: for each accepted connection, and again for each parked one
/// whose next request arrives.
struct Spawner {
    gw: Arc<Gateway>,
    shared: Arc<client_conn::Shared>,
    conns: TaskTracker,
    https: bool,
    /// Connections may be released (`idle_release`, plain HTTP): they track response bodies.
    releasing: bool,
}

impl Spawner {
    fn spawn(&self, stream: tokio::net::TcpStream, keep: client_conn::Keep) {
        let (gw, https, releasing) = (Arc::clone(&self.gw), self.https, self.releasing);
        let (peer, over_limit) = (keep.peer, keep.over_limit);
        let activity = idle::Activity::new();
        let in_service = Arc::clone(&activity);
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let gw = Arc::clone(&gw);
            if https {
                req.extensions_mut().insert(ClientTls);
            }
            if req.version() == http::Version::HTTP_2 {
                in_service.saw_h2();
            }
            let busy = in_service.begin();
            let activity = Arc::clone(&in_service);
            let version = req.version();
            let track = releasing && version < http::Version::HTTP_2;
            async move {
                let _busy = busy;
                let resp = if over_limit {
                    handler::too_many_connections(version)
                } else {
                    handler::serve(gw, req, peer).await
                };
                if !track {
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                // hyper closes after this response: not a connection to release.
                let close = version < http::Version::HTTP_11
                    || resp
                        .headers()
                        .get(http::header::CONNECTION)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
                if close {
                    activity.closing();
                }
                Ok(resp.map(|body| ProxyBody::wrap(activity.answering(body))))
            }
        });
        let verdict = Arc::new(framing::Verdict::default());
        let conn = client_conn::Conn {
            shared: Arc::clone(&self.shared),
            service: framing::Guarded::new(Arc::clone(&verdict), service),
            activity,
            verdict,
            keep,
        };
        self.conns.spawn(
            conn.run(stream)
                .instrument(tracing::debug_span!("client_conn", %peer)),
        );
    }
}

async fn sweep_pools(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let period = gw
        .settings()
        .pool_idle_timeout
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = Instant::now();
                let tables = gw.tables.load();
                for app in &tables.apps {
                    app.sweep(now);
                }
                // Rate-limit keys whose time has passed hold no state: bounded memory.
                for limit in &tables.limits {
                    limit.sweep(now);
                }
            }
        }
    }
}

impl herd_core::LbView for Gateway {
    fn lb_weights(&self, app: &str) -> Vec<herd_core::LbWeight> {
        let tables = self.tables.load();
        let Some(&i) = tables.by_name.get(app) else {
            return Vec::new();
        };
        let app = &tables.apps[i];
        let now = Instant::now();
        app.current()
            .iter()
            .map(|u| herd_core::LbWeight {
                instance: u.endpoint.id.to_string(),
                weight: u.params.weight,
                effective_weight: f64::from(u.weight(now, app.lb.slow_start))
                    / f64::from(crate::balance::slowstart::SCALE),
                backup: u.params.backup,
                max_conn: u.params.max_conn,
            })
            .collect()
    }

    fn queued(&self, app: &str) -> usize {
        let tables = self.tables.load();
        tables
            .by_name
            .get(app)
            .map_or(0, |&i| tables.apps[i].queue.len())
    }
}

impl Rotation for Gateway {
    fn set_endpoints(&self, app: &str, endpoints: Vec<Endpoint>) {
        let tables = self.tables.load();
        match tables.by_name.get(app) {
            Some(&i) => tables.apps[i].replace(endpoints, &self.settings()),
            None => tracing::warn!(app, "rotation update for an unknown app ignored"),
        }
    }

    fn demand(&self, app: &str) -> Option<Arc<herd_core::Demand>> {
        let tables = self.tables.load();
        let i = *tables.by_name.get(app)?;
        Some(Arc::clone(&tables.apps[i].demand))
    }
}
