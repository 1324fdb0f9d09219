//! Opening the Redis connection (single server or cluster) and running one command on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};
use tokio_util::sync::CancellationToken;

use super::codec::redact;
use crate::{StoreError, StoreResult};

/// The socket options of every connection to Redis. A Redis host that vanishes without a reset
/// (a lost VM, a moved address, a firewall dropping idle flows) would otherwise keep its dead
/// connection for the kernel's ~15 minutes of retransmissions: the client reconnects only once
/// the socket fails, and a timeout alone does not fail it. `TCP_USER_TIMEOUT` fails it once
/// data stays unacknowledged that long, keepalive probes find an idle one dead. No Nagle delay
/// either: every command is a small write waiting for its answer.
pub(super) fn tcp_settings(timeout: Duration) -> redis::io::tcp::TcpSettings {
    let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let settings = redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    // TCP_USER_TIMEOUT is Linux's (keepalive alone elsewhere).
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout((timeout * 4).max(Duration::from_secs(5)));
    #[cfg(not(target_os = "linux"))]
    let _ = timeout;
    settings
}

/// A client for one URL with [`tcp_settings`].
pub(super) fn client(url: &str, timeout: Duration) -> RedisResult<redis::Client> {
    use redis::IntoConnectionInfo as _;
    let info = url
        .into_connection_info()?
        .set_tcp_settings(tcp_settings(timeout));
    redis::Client::open(info)
}

/// The connection to Redis, cheap to clone. It may not be there yet: a Redis that cannot be
/// reached when herd starts is connected in the background ([`Conn::later`]), and until then
/// every call fails at once with the reason.
#[derive(Clone)]
pub(super) struct Conn(Arc<Slot>);

struct Slot {
    link: OnceLock<Link>,
    /// Why there is no link yet (the last connection attempt's error).
    waiting: Mutex<String>,
}

/// The multiplexed connection; both kinds reconnect by themselves once they have connected.
enum Link {
    Single(Arc<Single>),
    Cluster(ClusterConnection),
}

/// The channel the checks publish to (nobody listens): a user allowed herd's channels
/// (`&herd:*`) may publish there.
pub(super) const PROBE_CHANNEL: &str = "herd:probe";

/// What a Redis user without pub/sub channels is told.
pub(super) const NO_CHANNELS: &str = "the Redis user may not use pub/sub channels, which herd \
    needs (cache invalidation across nodes, queue and lock wake-ups); Redis 7 gives new ACL users \
    none: grant them with ACL SETUSER <user> allchannels (or &herd:*)";

/// The first wait between two attempts of a connection made in the background; it doubles up
/// to [`LATER_MAX`].
const LATER_FIRST: Duration = Duration::from_millis(250);
const LATER_MAX: Duration = Duration::from_secs(5);

/// How soon after one replacement of a single server's connection manager the next may start.
const REPLACE_EVERY: Duration = Duration::from_secs(1);

/// A single server's connection manager, replaced when it is stuck. redis-rs reconnects after
/// an I/O error, but a reconnect that fails its `AUTH` (the password changed, then changed
/// back) leaves the manager answering that failure to every call for good: herd then builds a
/// new manager, at most once per [`REPLACE_EVERY`], until one connects.
pub(super) struct Single {
    current: Mutex<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    replacing: AtomicBool,
    last_try: Mutex<Option<Instant>>,
}

impl Single {
    fn manager(&self) -> ConnectionManager {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a call: a refused login means the manager will not recover by itself.
    fn after<T>(self: &Arc<Self>, result: &RedisResult<T>) {
        let Err(e) = result else { return };
        if e.kind() != redis::ErrorKind::AuthenticationFailed {
            return;
        }
        {
            let mut last = self
                .last_try
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < REPLACE_EVERY) {
                return;
            }
            if self.replacing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match ConnectionManager::new_with_config(this.client.clone(), this.config.clone()).await
            {
                Ok(m) => {
                    *this
                        .current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = m;
                    tracing::info!("store connection replaced after a refused login");
                }
                Err(e) => tracing::debug!(error = %e, "store connection still refused"),
            }
            this.replacing.store(false, Ordering::Release);
        });
    }
}

impl Conn {
    fn ready(link: Link) -> Conn {
        let slot = Slot {
            link: OnceLock::new(),
            waiting: Mutex::new(String::new()),
        };
        let _ = slot.link.set(link);
        Conn(Arc::new(slot))
    }

    /// Connects; fails within about `timeout` when the server cannot be reached.
    pub(super) async fn open(
        urls: &[String],
        cluster: bool,
        timeout: Duration,
    ) -> StoreResult<Conn> {
        Link::open(urls, cluster, timeout).await.map(Conn::ready)
    }

    /// A connection made in the background: `first_error` says why the first attempt failed;
    /// attempts go on (backing off up to 5 s) until one succeeds or `cancel` fires.
    pub(super) fn later(
        urls: Vec<String>,
        cluster: bool,
        timeout: Duration,
        first_error: String,
        cancel: CancellationToken,
    ) -> Conn {
        let conn = Conn(Arc::new(Slot {
            link: OnceLock::new(),
            waiting: Mutex::new(first_error),
        }));
        let slot = Arc::clone(&conn.0);
        tokio::spawn(async move {
            let mut wait = LATER_FIRST;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let attempt = tokio::select! {
                    () = cancel.cancelled() => return,
                    a = Link::open(&urls, cluster, timeout) => a,
                };
                match attempt {
                    Ok(link) => {
                        let _ = slot.link.set(link);
                        tracing::info!("store connected");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "store still not connected; retrying");
                        let why = match e {
                            StoreError::Unavailable { reason, .. } => reason,
                            other => other.to_string(),
                        };
                        *slot
                            .waiting
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = why;
                    }
                }
                wait = (wait * 2).min(LATER_MAX);
            }
        });
        conn
    }

    pub(super) fn is_connected(&self) -> bool {
        self.0.link.get().is_some()
    }

    fn link(&self) -> RedisResult<&Link> {
        self.0.link.get().ok_or_else(|| {
            let why = self
                .0
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            redis::RedisError::from((redis::ErrorKind::Io, "not connected yet", why))
        })
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self.link()? {
            Link::Single(s) => {
                let result = cmd.query_async(&mut s.manager()).await;
                s.after(&result);
                result
            }
            Link::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    pub(super) async fn eval<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self.link()? {
            Link::Single(s) => {
                let result = inv.invoke_async(&mut s.manager()).await;
                s.after(&result);
                result
            }
            Link::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }
}

impl Link {
    async fn open(urls: &[String], cluster: bool, timeout: Duration) -> StoreResult<Link> {
        let backend = if cluster { "redis-cluster" } else { "redis" };
        let targets = urls
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(", ");
        let unreachable = |e: String| StoreError::Unavailable {
            backend,
            reason: format!("failed to connect to {targets}: {e} (is Redis running there?)"),
        };
        // Refused credentials or an untrusted certificate are configuration errors, not an
        // outage: waiting would not fix them.
        let refused = |e: redis::RedisError| {
            let text = e.to_string();
            if e.kind() == redis::ErrorKind::InvalidClientConfig {
                StoreError::Invalid(e.detail().unwrap_or("bad Redis settings").to_owned())
            } else if e.kind() == redis::ErrorKind::AuthenticationFailed {
                StoreError::Invalid(format!("Redis at {targets} refused the credentials: {e}; check the password in the URL"))
            } else if text.contains("certificate") {
                StoreError::Invalid(format!(
                    "failed to connect to {targets}: {text} (rediss:// checks the server against \
                     the system's trust store; for a private CA point SSL_CERT_FILE at its PEM file)"
                ))
            } else if text.contains("NOAUTH") {
                StoreError::Invalid(format!(
                    "Redis at {targets} wants a password and the URL has none: \
                     redis://:PASSWORD@host:port (or redis://USER:PASSWORD@host:port with ACL users)"
                ))
            } else if text.contains("DB index is out of range") {
                StoreError::Invalid(format!(
                    "Redis at {targets} has no such database ({text}); a Redis has 16 (0 to 15) \
                     unless its `databases` setting says otherwise"
                ))
            } else if text.contains("cluster support disabled") {
                StoreError::Invalid(format!(
                    "{targets} is not a Redis Cluster (cluster support disabled); for a single \
                     Redis set [store] url instead of cluster"
                ))
            } else if e.kind() == redis::ErrorKind::Parse {
                StoreError::Unavailable {
                    backend,
                    reason: format!(
                        "the server at {targets} does not answer in the Redis protocol ({}); \
                         check the host and port: is it Redis?",
                        text.lines().next().unwrap_or("").trim()
                    ),
                }
            } else {
                unreachable(text)
            }
        };
        let connecting = async {
            if cluster {
                let client = ClusterClientBuilder::new(urls.to_vec())
                    .tcp_settings(tcp_settings(timeout))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Few, short retries: a call must come back within its timeout, and the
                    // caller (or the next call) tries again anyway.
                    .retries(2)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| bad_url(&targets, &e))?;
                client
                    .get_async_connection()
                    .await
                    .map(Link::Cluster)
                    .map_err(refused)
            } else {
                let [url] = urls else {
                    return Err(StoreError::Invalid(format!(
                        "a single Redis takes one URL, got {} ({targets}); for a Redis Cluster set cluster = true",
                        urls.len()
                    )));
                };
                let client = client(url, timeout).map_err(|e| bad_url(&targets, &e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // One quick retry per reconnect: while Redis is down every call fails fast
                    // (and triggers the next reconnect) instead of queueing behind a long backoff.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(|m| {
                        Link::Single(Arc::new(Single {
                            current: Mutex::new(m),
                            client,
                            config,
                            replacing: AtomicBool::new(false),
                            last_try: Mutex::new(None),
                        }))
                    })
                    .map_err(refused)
            }
        };
        let checked = async {
            let link = connecting.await?;
            link.check(cluster, &targets).await.map_err(refused)?;
            Ok(link)
        };
        tokio::time::timeout(timeout * 2, checked)
            .await
            .map_err(|_| unreachable("timed out".into()))?
    }

    /// What the connection alone does not reveal: a password the server wants (the connect
    /// sends none when the URL has none), a user without pub/sub channels (Redis 7's default
    /// for new ACL users: the server refuses SUBSCRIBE, which redis-rs does not report, so a
    /// PUBLISH asks instead), a single-server URL naming a cluster node.
    async fn check(&self, cluster: bool, targets: &str) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        let publish = redis::cmd("PUBLISH").arg(PROBE_CHANNEL).arg("").to_owned();
        let no_channels = |e: redis::RedisError| {
            if e.code() == Some("NOPERM") {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "no channels",
                    format!("{NO_CHANNELS} ({targets}: {e})"),
                ))
            } else {
                e
            }
        };
        match self {
            Link::Single(s) => {
                let mut m = s.manager();
                ping.query_async::<()>(&mut m).await?;
                publish
                    .query_async::<()>(&mut m)
                    .await
                    .map_err(no_channels)?;
                let info = redis::cmd("CLUSTER").arg("INFO").to_owned();
                if info.query_async::<String>(&mut m).await.is_ok() && !cluster {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "a cluster node",
                        format!(
                            "{targets} is a node of a Redis Cluster: list the cluster's nodes in \
                             [store] cluster = [...] instead of url"
                        ),
                    )));
                }
                Ok(())
            }
            Link::Cluster(c) => {
                ping.query_async::<()>(&mut c.clone()).await?;
                publish
                    .query_async::<()>(&mut c.clone())
                    .await
                    .map_err(no_channels)
            }
        }
    }
}

fn bad_url(targets: &str, e: &redis::RedisError) -> StoreError {
    StoreError::Invalid(format!(
        "bad Redis URL in {targets}: {e}; expected redis://[:password@]host:port[/db]"
    ))
}
