//! Load-balancing knobs beyond the algorithm: sticky sessions, per-server weight / backup /
//! `max_conn` with the queue in front of full servers, slow start and passive layer-7
//! observation. Names and defaults from HAProxy (`cookie`, `weight`, `backup`, `maxconn`,
//! `timeout queue`, `slowstart`, `observe layer7`).

use std::time::Duration;

use super::{Balance, HashKey};

/// `sticky = { cookie = "HERD_SRV", ttl = "1h" }`: pin a client to the instance that served
/// it with a signed cookie (HAProxy `cookie SRV insert indirect httponly` + `option redispatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// `cookie`, default `HERD_SRV`: the cookie's name.
    pub cookie: String,
    /// `ttl`, default 1h: how long a cookie pins its client (`Max-Age`, and checked on the signed
    /// expiry inside the value).
    pub ttl: Duration,
}

/// Per-server parameters: `{ addr = "10.0.0.6:80", weight = 3, backup = true, max_conn = 100 }`
/// for a fixed server, or the app-level `weight`/`max_conn` for every supervised instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerParams {
    /// `weight`, default 1 (0..=256, as HAProxy): share of requests relative to the others.
    pub weight: u32,
    /// `backup`, default false: receives traffic only when no non-backup server is up.
    pub backup: bool,
    /// `max_conn`, default 0 (unlimited): requests in flight at most; more wait in the queue.
    pub max_conn: u32,
}

impl Default for ServerParams {
    fn default() -> Self {
        ServerParams {
            weight: 1,
            backup: false,
            max_conn: 0,
        }
    }
}

/// The app's load-balancing settings besides `balance`/`hash_key`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancing {
    /// `sticky`: cookie-based session affinity; `None` = off.
    pub sticky: Option<Sticky>,
    /// App-level `weight`/`max_conn` (supervised apps: every instance).
    pub defaults: ServerParams,
    /// Per server, parallel to `Backends::Servers` (empty for supervised apps).
    pub servers: Vec<ServerParams>,
    /// `queue`, default 1024: requests waiting at most for a server under its `max_conn`; more get 503.
    pub queue: usize,
    /// `queue_timeout`, default 5s (HAProxy `timeout queue`): longest wait in the queue; then 503.
    pub queue_timeout: Duration,
    /// `slow_start`, default 0 (off; HAProxy `slowstart`): an instance that becomes ready, or
    /// recovers from a passive mark, ramps its weight linearly from ~0 to full over this.
    pub slow_start: Duration,
    /// `observe = "layer7"` (default) or `"layer4"`: whether 5xx responses count toward
    /// `max_fails` (connect errors, resets and response timeouts always count).
    pub observe_layer7: bool,
}

impl Default for LoadBalancing {
    fn default() -> Self {
        LoadBalancing {
            sticky: None,
            defaults: ServerParams::default(),
            servers: Vec::new(),
            queue: 1024,
            queue_timeout: Duration::from_secs(5),
            slow_start: Duration::ZERO,
            observe_layer7: false,
        }
    }
}

impl LoadBalancing {
    /// The parameters of server `i` (fixed servers), else the app-level ones.
    #[must_use]
    pub fn server(&self, i: Option<usize>) -> ServerParams {
        i.and_then(|i| self.servers.get(i).copied())
            .unwrap_or(self.defaults)
    }
}

/// `[[route]]` overrides of the app's balancing: `balance` (+ `hash_key`) and `sticky`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteBalance {
    /// `balance` (with `hash_key` when it is `"hash"`); `None` = the app's.
    pub balance: Option<(Balance, Option<HashKey>)>,
    /// `sticky`: `None` = the app's; `Some(None)` = `sticky = false` (off for this route).
    pub sticky: Option<Option<Sticky>>,
}
