//! `[[rate_limit]]`: per-key request rate limits with nginx `limit_req` semantics (leaky bucket
//! at `rate`, `burst`, `nodelay`, `delay`), as validated. `herd-proxy` enforces them; `docs/config.md`
//! has the reference.

use std::time::Duration;

impl RateLimit {
    /// Requests over the rate served without waiting: `burst` with `nodelay`, else `delay`.
    #[must_use]
    pub fn undelayed(&self) -> u32 {
        if self.nodelay {
            self.burst
        } else {
            self.delay
        }
    }
}

/// One `[[rate_limit]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// `name`: unique among `[[rate_limit]]` entries; used in logs and the 429 body.
    pub name: String,
    /// `key`: what one bucket counts.
    pub key: RateKey,
    /// `rate`: requests per second or minute.
    pub rate: Rate,
    /// `burst`, default 0 (nginx): requests over the rate that may wait (or pass at once with
    /// `nodelay`) instead of being rejected.
    pub burst: u32,
    /// `nodelay`, default false (nginx): requests within the burst are served at once.
    pub nodelay: bool,
    /// `delay`, default 0 (nginx `delay=`, two-stage limiting): the first `delay` requests over
    /// the rate are served at once, the rest of the burst is spaced at the rate. `nodelay` is
    /// `delay = burst`; the two are exclusive.
    pub delay: u32,
    /// `app`: only requests routed to this app (index into `Config::apps`); `None` = every app.
    pub app: Option<usize>,
    /// `path_prefix`: only requests whose path starts with this; `None` = every path.
    pub path_prefix: Option<String>,
    /// `route`: only requests matched by the `[[route]]` with this `name`; `None` = every route.
    pub route: Option<String>,
    /// `status`, default 429: the status of rejected requests (nginx `limit_req_status`).
    pub status: u16,
    /// `shared`, default false: the key's state lives in the shared store (`[store]`), so the
    /// limit holds across every herd node using the same Redis. A store that cannot answer
    /// falls back to this node's own count (the gateway keeps serving).
    pub shared: bool,
}

/// `key`: what a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// `"ip"`: the client's address (the TCP peer, or the PROXY protocol header's client; never
    /// `X-Forwarded-For`).
    Ip,
    /// `"header:NAME"`: a request header's value (name stored lowercased). Requests without it
    /// are not counted by this limit (nginx: an empty key is not accounted).
    Header(String),
    /// `"cookie:NAME"`: a cookie's value. Requests without it are not counted.
    Cookie(String),
    /// `"route"`: one bucket for every request through the matched route.
    Route,
}

/// `rate = "10r/s"` or `"600r/m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests (>= 1) ...
    pub requests: u32,
    /// ... per this period (1 s or 1 min).
    pub per: Duration,
}

impl Rate {
    /// The time between two requests at this rate (GCRA's emission interval), at least 1 ns.
    #[must_use]
    pub fn interval(&self) -> Duration {
        (self.per / self.requests.max(1)).max(Duration::from_nanos(1))
    }
}
