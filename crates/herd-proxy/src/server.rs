//! The [`Gateway`]: its settings and routing tables (swapped atomically on reload), the
//! rotation the supervisor feeds, and the load-balancer view the admin API reads. Serving it
//! (accept loops, connections, graceful shutdown) is in `serving` and `shard`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use herd_config::Config;
use herd_core::{Endpoint, Rotation, StatsRegistry};

use crate::access_log::AccessLogger;
use crate::connlimit::ConnCounts;
use crate::ratelimit::{self, RateLimiter};
use crate::resilience::AppPlane;
use crate::route::RouteTable;
use crate::tls::{TlsCerts, TlsError};
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
    /// The longest pause between two reads of a request body (408 past it).
    pub client_body_timeout: Duration,
    /// Open client connections at most (0: unlimited). Read when serving starts.
    pub max_connections: usize,
    /// Largest request head in bytes (431 over it). Read when serving starts.
    pub max_header_size: usize,
    /// Largest request body in bytes (413 over it).
    pub max_body_size: Option<u64>,
    /// Add `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy` when missing.
    pub security_headers: bool,
    /// Merge runs of `/` in request paths before routing.
    pub merge_slashes: bool,
    /// Header fields in an HTTP/1 request or backend response. Read when serving starts (requests)
    /// or a backend connection opens (responses).
    pub max_headers: usize,
    /// Connections start with a PROXY protocol header. Read when serving starts.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: the peers allowed to connect (empty: any). Read when serving
    /// starts.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
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
    /// Shards of the data plane (`threads`, default one per core); pools keep one idle list
    /// per shard.
    pub threads: usize,
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
            client_body_timeout: g.client_body_timeout,
            max_connections: g.max_connections,
            max_header_size: usize::try_from(g.max_header_size).unwrap_or(usize::MAX),
            max_body_size: g.max_body_size,
            security_headers: g.security_headers,
            merge_slashes: g.merge_slashes,
            max_headers: g.max_headers,
            proxy_protocol: g.proxy_protocol,
            proxy_protocol_from: g.proxy_protocol_from.clone(),
            max_conn_per_ip: g.max_conn_per_ip,
            tunnel_idle_timeout: g.tunnel_idle_timeout,
            idle_timeout: g.data_plane.idle_timeout,
            idle_release: g.data_plane.idle_release,
            total_timeout: g.data_plane.total_timeout,
            retries: g.data_plane.retries,
            retry_on: g.data_plane.retry_on,
            compress: Arc::new(g.data_plane.compress.clone()),
            threads: g.data_plane.threads.unwrap_or_else(default_threads),
        }
    }
}

/// One shard per core the process may use (cgroup quotas included), as tokio's default.
#[must_use]
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
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
            routes: RouteTable::compile(
                &config.routes,
                &names,
                crate::route::default_app(config),
                stats,
            ),
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
    pub(crate) stats: Arc<StatsRegistry>,
    pub(crate) conns: Arc<ConnCounts>,
    /// Upgraded connections (WebSocket): they outlive the client connection's hyper task.
    pub(crate) tunnels: Tunnels,
    /// Set by [`Gateway::enable_tls`] before serving: the listener then speaks TLS only.
    pub(crate) tls: OnceLock<Arc<TlsCerts>>,
    /// The shared store for `shared = true` rate limits (set once at start).
    shared_store: OnceLock<Arc<herd_store::Store>>,
    /// The runtime `serve`/`serve_threads` was called on (the control plane's): store calls
    /// from the gateway threads run there, so the store's connections and the tasks their
    /// reconnects spawn never live on a gateway thread.
    pub(crate) control: OnceLock<tokio::runtime::Handle>,
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
            control: OnceLock::new(),
            access_log: config
                .gateway
                .data_plane
                .access_log
                .as_ref()
                .map(AccessLogger::new),
        })
    }

    /// Reopens the access log file by its path (SIGUSR1, a config reload), so that lines go
    /// to a new file once logrotate has renamed the old one (nginx's `-s reopen`).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
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

    pub(crate) fn shared_store(&self) -> Option<Arc<herd_store::Store>> {
        self.shared_store.get().cloned()
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

    /// Reads the certificate files in force again without swapping them in (`None` without
    /// TLS): a config reload does this first, so a bad file refuses it before anything changes.
    ///
    /// # Errors
    /// A file that fails to load.
    pub fn read_tls(&self) -> Result<Option<crate::tls::StagedCerts>, TlsError> {
        self.tls.get().map(|certs| certs.read()).transpose()
    }

    /// Reads the certificates a new `[gateway.tls]` table names (see
    /// [`crate::tls::TlsCerts::read_config`]); `None` when the gateway has no TLS listener.
    ///
    /// # Errors
    /// A file that cannot be loaded; nothing changes.
    pub fn read_tls_config(
        &self,
        config: &herd_config::Tls,
    ) -> Result<Option<crate::tls::StagedCerts>, TlsError> {
        self.tls
            .get()
            .map(|certs| certs.read_config(config))
            .transpose()
    }

    /// Swaps in certificates [`Gateway::read_tls`] read, for new handshakes.
    pub fn install_tls(&self, staged: crate::tls::StagedCerts) {
        if let Some(certs) = self.tls.get() {
            certs.install(staged);
        }
    }

    /// Applies a new config atomically: routes, apps, balancing, timeouts. Requests in flight
    /// finish under the tables they started with; instances in rotation stay. The listen address
    /// cannot change without a restart (the caller reports that).
    pub fn reconfigure(&self, config: &Config) {
        let old = self.tables.load_full();
        let new = Arc::new(Tables::build(config, &self.stats, Some(&old)));
        self.stats.retain(new.routes.stats());
        self.tables.store(new);
        let mut settings = GatewaySettings::from(&config.gateway);
        // Fixed at start: the shards run, and pools are sized by their number (a change is
        // reported as needing a restart).
        settings.threads = self.settings().threads;
        self.settings.store(Arc::new(settings));
    }

    pub(crate) fn tables(&self) -> Guard<Arc<Tables>> {
        self.tables.load()
    }

    pub(crate) fn settings(&self) -> Guard<Arc<GatewaySettings>> {
        self.settings.load()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(threads: usize) -> Config {
        let text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nthreads = {threads}\n\
             [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n"
        );
        herd_config::parse(&text, "test.toml", std::path::Path::new(".")).unwrap()
    }

    #[test]
    fn threads_stay_as_started_across_reloads() {
        let gw = Gateway::new(&config(2), Arc::default());
        assert_eq!(gw.settings().threads, 2);
        // The shards already run: pools created after a reload must still have one idle list
        // per running shard.
        gw.reconfigure(&config(4));
        assert_eq!(gw.settings().threads, 2);
        gw.reconfigure(&config(1));
        assert_eq!(gw.settings().threads, 2);
    }
}
