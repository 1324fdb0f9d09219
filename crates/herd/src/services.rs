//! The shared store and the services API for app instances: opened before the supervisor
//! starts (so instances get `HERD_SERVICES_URL` and `HERD_SERVICES_TOKEN`), closed after the
//! instances have drained (they may use the services while they finish).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herd_config::{Config, Store as StoreConfig};
use herd_services::{http::HttpConfig, Clock, Services, ServicesConfig, StoreClock, SystemClock};
use herd_store::{Backend as _, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running store and services API.
pub(crate) struct Running {
    pub(crate) services: Arc<Services>,
    pub(crate) store: Arc<Store>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Variables every instance gets.
    pub(crate) env: Vec<(String, String)>,
}

fn store_options(config: &StoreConfig) -> StoreOptions {
    match config {
        StoreConfig::Embedded { path } => StoreOptions::Embedded { path: path.clone() },
        StoreConfig::Redis {
            url,
            cluster,
            timeout,
        } => StoreOptions::Redis {
            urls: if cluster.is_empty() {
                url.iter().cloned().collect()
            } else {
                cluster.clone()
            },
            cluster: !cluster.is_empty(),
            timeout: *timeout,
        },
    }
}

fn services_config(config: &Config) -> ServicesConfig {
    let s = &config.services;
    let mut out = ServicesConfig::default();
    out.sessions.default_ttl = s.session_ttl;
    out.sessions.rolling = s.rolling_sessions;
    out.sessions.touch_after = s.session_touch_after;
    out.sessions.max_bytes = usize::try_from(s.max_body_size).unwrap_or(usize::MAX);
    let strategy = |c: &herd_config::CacheStrategy| herd_services::cache::Strategy {
        l1_ttl: c.l1_ttl,
        l2_ttl: c.l2_ttl,
        refresh_ahead: (c.refresh_ahead < 1.0).then_some(c.refresh_ahead),
        grace: c.grace,
    };
    if let Some(d) = s.cache.get("default") {
        out.cache.default = strategy(d);
    }
    out.queues.default_lease = s.job_lease;
    out.queues.max_stalled = s.max_stalled;
    out.queues.queues = s
        .queues
        .iter()
        .map(|(name, q)| {
            let settings = herd_services::queue::QueueSettings {
                limiter: q.rate.map(|r| herd_services::queue::Limiter {
                    max: r.requests,
                    duration: r.per,
                }),
                concurrency: q.concurrency,
            };
            (name.clone(), settings)
        })
        .collect();
    out.cache.l1_capacity = s
        .cache
        .values()
        .map(|c| c.l1_max_entries)
        .max()
        .unwrap_or(10_000);
    out.cache.l1_max_bytes = s.cache_memory;
    out.cache.namespaces = s
        .cache
        .iter()
        .filter(|(name, _)| name.as_str() != "default")
        .map(|(name, c)| (name.clone(), strategy(c)))
        .collect::<HashMap<_, _>>();
    out
}

/// A random token for a herd started without `[services] token`.
fn random_token() -> String {
    use rand::Rng as _;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the store and starts serving the services API; `None` when `[services] enabled = false`.
///
/// # Errors
/// The listen address is taken, or the store cannot be opened (a locked or corrupt embedded
/// file, a bad Redis URL, refused credentials). A Redis outage, at start or later, is not
/// fatal: the services answer 503 with the reason and the store connects by itself.
pub(crate) async fn start(config: &Config, quick: bool) -> anyhow::Result<Option<Running>> {
    let s = &config.services;
    if !s.enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(s.listen).await.map_err(|e| {
        let origin = crate::listen::Origin::new("services.listen", Some("--services"), quick);
        crate::listen::error(s.listen, origin, &e)
    })?;
    let addr = listener.local_addr().context("services listener address")?;
    if let StoreConfig::Embedded { path } = &config.store {
        if let Some(dir) = path.parent() {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(dir)
            .with_context(|| {
                format!("failed to create {} for the embedded store", dir.display())
            })?;
        }
    }
    let store = Arc::new(
        Store::open(&store_options(&config.store))
            .await
            .context("failed to open the store ([store])")?,
    );
    let status = store.status();
    tracing::info!(backend = status.backend, target = %status.target, state = status.state, "store open");
    let stop = CancellationToken::new();
    let clock: Arc<dyn Clock> = if matches!(config.store, StoreConfig::Redis { .. }) {
        let clock = Arc::new(StoreClock::new());
        sync_clock(&clock, &store, true).await;
        tokio::spawn(keep_clock_synced(
            Arc::clone(&clock),
            Arc::clone(&store),
            stop.child_token(),
        ));
        clock
    } else {
        Arc::new(SystemClock)
    };
    let services = Services::start(
        Arc::clone(&store),
        services_config(config),
        clock,
        stop.child_token(),
    );
    let token = s.token.clone().unwrap_or_else(random_token);
    let mut http = HttpConfig::new(token.as_str());
    http.max_body = usize::try_from(s.max_body_size).unwrap_or(usize::MAX);
    let router = herd_services::http::router(Arc::clone(&services), http);
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let serve = herd_services::http::serve_router(listener, router, stop);
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "services API failed");
            }
        }
    });
    tracing::info!(%addr, "services API listening");
    Ok(Some(Running {
        env: vec![
            (
                "HERD_SERVICES_URL".to_owned(),
                format!("http://{}", herd_config::dialable(addr)),
            ),
            ("HERD_SERVICES_TOKEN".to_owned(), token),
        ],
        services,
        store,
        stop,
        task,
    }))
}

/// How often a node re-reads the shared store's clock.
const CLOCK_SYNC_EVERY: Duration = Duration::from_secs(30);

/// An offset past this is worth telling the operator about.
const CLOCK_SKEW_WARNING_MS: i64 = 1000;

/// Sets `clock` to the store's time; says so when this machine's clock is far off (at start,
/// or when the offset moved by more than the warning threshold since the last sync).
async fn sync_clock(clock: &StoreClock, store: &Store, first: bool) {
    let before = clock.offset_ms();
    match clock.sync(store).await {
        Ok(Some(offset)) => {
            let moved = (offset - before).abs() > CLOCK_SKEW_WARNING_MS;
            if offset.abs() > CLOCK_SKEW_WARNING_MS && (first || moved) {
                let way = if offset > 0 { "behind" } else { "ahead of" };
                tracing::warn!(offset_ms = offset,
                    "this machine's clock is {} ms {way} the store's (Redis TIME); herd's queue and cache read the store's time, but check NTP on this machine",
                    offset.abs());
            }
        }
        Ok(None) => tracing::debug!("store clock sync skipped: the round trip was too slow"),
        Err(e) => tracing::debug!(error = %e, "store clock sync failed; keeping the last offset"),
    }
}

async fn keep_clock_synced(clock: Arc<StoreClock>, store: Arc<Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CLOCK_SYNC_EVERY) => sync_clock(&clock, &store, false).await,
        }
    }
}

impl Running {
    /// Stops the API (in-flight calls finish, bounded), the services' background tasks, then
    /// the store.
    pub(crate) async fn shutdown(self, deadline: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::warn!(?deadline, "services API calls still running at shutdown");
        }
        let _ = tokio::time::timeout(deadline, self.services.closed()).await;
        self.store.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_services::cache::Strategy;
    use herd_services::queue::{Limiter, QueueSettings};

    fn mapped(services: &str) -> ServicesConfig {
        let text =
            format!("{services}\n[[app]]\nname = \"web\"\ncommand = [\"node\", \"server.js\"]\n");
        let config = herd_config::parse(&text, "herd.toml", std::path::Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}"));
        services_config(&config)
    }

    #[test]
    fn herd_s_defaults_reach_the_services() {
        let out = mapped("");
        // herd's documented defaults, which differ from the library's in places.
        assert!(out.sessions.rolling, "rolling_sessions defaults to true");
        assert_eq!(out.sessions.default_ttl, Duration::from_secs(86_400));
        assert_eq!(out.sessions.touch_after, Duration::from_secs(60));
        assert_eq!(out.sessions.max_bytes, 1024 * 1024);
        assert_eq!(out.queues.default_lease, Duration::from_secs(30));
        assert_eq!(out.queues.max_stalled, 1);
        assert_eq!(out.cache.l1_capacity, 10_000);
        assert_eq!(out.cache.l1_max_bytes, 64 * 1024 * 1024);
        let default = &out.cache.default;
        assert_eq!(default.l1_ttl, Duration::from_secs(300));
        assert_eq!(default.l2_ttl, Duration::from_secs(3600));
        assert_eq!(default.refresh_ahead, Some(0.8));
        assert_eq!(default.grace, Duration::ZERO);
        assert!(out.cache.namespaces.is_empty() && out.queues.queues.is_empty());
    }

    #[test]
    fn every_services_key_of_herd_toml_reaches_the_services() {
        let out = mapped(
            r#"[services]
session_ttl = "2h"
rolling_sessions = false
session_touch_after = "10s"
max_body_size = "2MiB"
cache_memory = "8MiB"
job_lease = "45s"
max_stalled = 3
[services.cache.default]
l1_ttl = "20s"
[services.cache.pages]
l1_ttl = "7s"
l2_ttl = "30m"
refresh_ahead = 1.0
grace = "1m"
l1_max_entries = 500
[services.cache.big]
l1_max_entries = 20000
[services.queue.emails]
rate = "10r/s"
concurrency = 4
"#,
        );
        assert!(!out.sessions.rolling);
        assert_eq!(out.sessions.default_ttl, Duration::from_secs(7200));
        assert_eq!(out.sessions.touch_after, Duration::from_secs(10));
        assert_eq!(out.sessions.max_bytes, 2 * 1024 * 1024);
        assert_eq!(out.cache.l1_max_bytes, 8 * 1024 * 1024);
        assert_eq!(out.queues.default_lease, Duration::from_secs(45));
        assert_eq!(out.queues.max_stalled, 3);
        assert_eq!(out.cache.default.l1_ttl, Duration::from_secs(20));
        assert_eq!(
            out.cache.namespaces["pages"],
            Strategy {
                l1_ttl: Duration::from_secs(7),
                l2_ttl: Duration::from_secs(1800),
                // 1.0 turns refresh-ahead off.
                refresh_ahead: None,
                grace: Duration::from_secs(60),
            }
        );
        assert!(!out.cache.namespaces.contains_key("default"));
        assert_eq!(out.cache.l1_capacity, 20_000, "the largest l1_max_entries");
        assert_eq!(
            out.queues.queues["emails"],
            QueueSettings {
                limiter: Some(Limiter {
                    max: 10,
                    duration: Duration::from_secs(1),
                }),
                concurrency: Some(4),
            }
        );
    }
}
