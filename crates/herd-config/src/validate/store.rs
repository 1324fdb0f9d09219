//! `[store]` and `[services]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::{Spanned, Value};

use super::values::resolve;
use super::Validator;
use crate::defaults as d;
use crate::model::{CacheStrategy, Services, Store};
use crate::raw::{RawCacheStrategy, RawConfig};

impl Validator<'_> {
    pub(super) fn store(&mut self, raw: &RawConfig) -> Store {
        let embedded = |base: &Path| Store::Embedded {
            path: resolve(base, Path::new(d::STORE_PATH)),
        };
        let Some(s) = &raw.store else {
            return embedded(self.base_dir);
        };
        let backend = s
            .backend
            .as_ref()
            .map_or("embedded", |b| b.get_ref().as_str());
        match backend {
            "embedded" => {
                for (key, span) in [
                    ("store.url", s.url.as_ref().map(Spanned::span)),
                    ("store.cluster", s.cluster.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        self.err(
                            &span,
                            key,
                            "only the redis backend takes this key",
                            Some("set backend = \"redis\" or remove the key".into()),
                        );
                    }
                }
                let path = s
                    .path
                    .as_ref()
                    .map_or(d::STORE_PATH, |p| p.get_ref().as_str());
                if path.trim().is_empty() {
                    let span = s.path.as_ref().map_or(0..0, Spanned::span);
                    self.err(
                        &span,
                        "store.path",
                        "path must not be empty",
                        Some(format!(
                            "remove it to use the default \"{}\"",
                            d::STORE_PATH
                        )),
                    );
                }
                Store::Embedded {
                    path: resolve(self.base_dir, Path::new(path)),
                }
            }
            "redis" => self.redis_store(s),
            other => {
                let span = s.backend.as_ref().map_or(0..0, Spanned::span);
                self.err(
                    &span,
                    "store.backend",
                    format!("unknown store backend \"{other}\""),
                    Some("use \"embedded\" (one node, the default) or \"redis\"".into()),
                );
                embedded(self.base_dir)
            }
        }
    }

    fn redis_store(&mut self, s: &crate::raw::RawStore) -> Store {
        if let Some(p) = &s.path {
            self.err(
                &p.span(),
                "store.path",
                "only the embedded backend takes a path",
                Some("remove path, or set backend = \"embedded\"".into()),
            );
        }
        let url = s.url.as_ref().and_then(|u| {
            let ok = self.redis_url(u.get_ref(), &u.span(), "store.url");
            ok.then(|| u.get_ref().clone())
        });
        let mut cluster = Vec::new();
        if let Some(c) = &s.cluster {
            match c.get_ref() {
                Value::Array(items) if !items.is_empty() => {
                    for item in items {
                        match item.as_str() {
                            Some(u) if self.redis_url(u, &c.span(), "store.cluster") => {
                                cluster.push(u.to_owned());
                            }
                            Some(_) => {}
                            None => self.err(
                                &c.span(),
                                "store.cluster",
                                "expected an array of redis:// URLs",
                                Some("cluster = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]".into()),
                            ),
                        }
                    }
                }
                _ => self.err(
                    &c.span(),
                    "store.cluster",
                    "expected a non-empty array of redis:// URLs",
                    Some("cluster = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]".into()),
                ),
            }
        }
        if let Some(c) = &s.cluster {
            if let Some(problem) = cluster_problem(&cluster) {
                self.err(&c.span(), "store.cluster", problem, Some(
                    "list every seed as redis://HOST:PORT (or all as rediss:// for TLS), without a database: a cluster has only database 0".into(),
                ));
            }
        }
        if s.url.is_none() && s.cluster.is_none() {
            let span = s.backend.as_ref().map_or(0..0, Spanned::span);
            self.err(
                &span,
                "store.url",
                "the redis backend needs url (one Redis) or cluster (Redis Cluster seed nodes)",
                Some("add url = \"redis://127.0.0.1:6379\"".into()),
            );
        }
        if let (Some(u), Some(_)) = (&s.url, &s.cluster) {
            self.err(
                &u.span(),
                "store.url",
                "url and cluster are exclusive",
                Some("keep cluster for a Redis Cluster, url for a single Redis".into()),
            );
        }
        let timeout = self.duration(
            s.timeout.as_ref(),
            "store.timeout",
            Duration::from_secs(1),
            true,
        );
        Store::Redis {
            url,
            cluster,
            timeout,
        }
    }

    fn redis_url(&mut self, url: &str, span: &std::ops::Range<usize>, key: &str) -> bool {
        let ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len());
        if !ok {
            // Never echo the URL: it may carry a password.
            self.err(
                span,
                key,
                "not a Redis URL",
                Some("use redis://HOST:PORT[/DB] or rediss:// for TLS".into()),
            );
            return false;
        }
        if let Some(problem) = redis_url_problem(url) {
            self.err(
                span,
                key,
                format!("bad Redis URL: {problem}"),
                Some(
                    "use redis://[:PASSWORD@]HOST[:PORT][/DB], e.g. redis://127.0.0.1:6379/0"
                        .into(),
                ),
            );
            return false;
        }
        true
    }

    pub(super) fn services(&mut self, raw: &RawConfig) -> Services {
        let mut out = Services {
            enabled: true,
            listen: d::SERVICES_LISTEN,
            token: None,
            max_body_size: d::SERVICES_MAX_BODY,
            session_ttl: d::SESSION_TTL,
            rolling_sessions: true,
            session_touch_after: d::SESSION_TOUCH_AFTER,
            cache: BTreeMap::new(),
            cache_memory: d::CACHE_MEMORY,
            job_lease: Duration::from_secs(30),
            max_stalled: 1,
            queues: BTreeMap::new(),
        };
        let Some(s) = &raw.services else {
            return out;
        };
        out.enabled = s.enabled.as_ref().is_none_or(|e| *e.get_ref());
        out.listen = self.addr(s.listen.as_ref(), "services.listen", d::SERVICES_LISTEN);
        if let Some(t) = &s.token {
            out.token = self.token(t, "services.token");
        }
        if s.token.is_none() && !out.listen.ip().is_loopback() {
            let span = s.listen.as_ref().map_or(0..0, Spanned::span);
            self.err(
                &span,
                "services.token",
                format!(
                    "a token is required because services.listen {} is not a loopback address",
                    out.listen
                ),
                Some("set token = \"<long random string>\" in [services] (every herd node sharing the store uses the same)".into()),
            );
        }
        if let Some(v) = &s.max_body_size {
            match self.size(v, "services.max_body_size") {
                Some(0) => self.err(
                    &v.span(),
                    "services.max_body_size",
                    "max_body_size must be greater than 0",
                    Some("e.g. max_body_size = \"1MiB\"".into()),
                ),
                Some(n) => out.max_body_size = n,
                None => {}
            }
        }
        if let Some(v) = &s.cache_memory {
            match self.size(v, "services.cache_memory") {
                Some(0) => self.err(
                    &v.span(),
                    "services.cache_memory",
                    "cache_memory must be greater than 0",
                    Some("e.g. cache_memory = \"64MiB\"".into()),
                ),
                Some(n) => out.cache_memory = n,
                None => {}
            }
        }
        out.session_ttl = self.duration(
            s.session_ttl.as_ref(),
            "services.session_ttl",
            d::SESSION_TTL,
            true,
        );
        out.rolling_sessions = s.rolling_sessions.as_ref().is_none_or(|r| *r.get_ref());
        out.session_touch_after = self.duration(
            s.session_touch_after.as_ref(),
            "services.session_touch_after",
            d::SESSION_TOUCH_AFTER,
            false,
        );
        out.job_lease = self.duration(
            s.job_lease.as_ref(),
            "services.job_lease",
            Duration::from_secs(30),
            true,
        );
        out.max_stalled = self.u32(s.max_stalled.as_ref(), "services.max_stalled", 1, 0);
        for (name, q) in s.queue.iter().flatten() {
            let p = format!("services.queue.{name}");
            // As the services API checks a queue name: limits on a name it refuses would
            // silently apply to nothing.
            if unusable_name(name, &['{', '}', ':', '/']) {
                let span = self.src.find("services.queue", name);
                self.err(
                    &span,
                    &p,
                    format!("queue name {name:?} can never be used: a queue name is 1 to 200 bytes without '{{', '}}', ':', '/', spaces or control characters"),
                    Some("name the queue as the services API calls it, e.g. [services.queue.emails]".into()),
                );
                continue;
            }
            let mut limits = crate::model::QueueLimits::default();
            if let Some(r) = &q.rate {
                match super::rate_limit::parse_rate(r.get_ref()) {
                    Ok(rate) => limits.rate = Some(rate),
                    Err(e) => self.err(
                        &r.span(),
                        &format!("{p}.rate"),
                        e,
                        Some("e.g. rate = \"100r/s\" or \"600r/m\" (jobs reserved, across every node)".into()),
                    ),
                }
            }
            if q.concurrency.is_some() {
                limits.concurrency =
                    Some(self.u32(q.concurrency.as_ref(), &format!("{p}.concurrency"), 1, 1));
            }
            out.queues.insert(name.clone(), limits);
        }
        if let Some(cache) = &s.cache {
            for (name, strategy) in cache {
                let p = format!("services.cache.{name}");
                // As the services API checks a namespace: a name it refuses could never be
                // used, so its strategy would silently apply to nothing.
                if unusable_name(name, &['{', '}', ':']) {
                    let span = self.src.find("services.cache", name);
                    self.err(
                        &span,
                        &p,
                        format!("cache namespace {name:?} can never be used: a namespace is 1 to 200 bytes without '{{', '}}', ':', spaces or control characters"),
                        Some("use letters, digits, '-', '_' or '.', e.g. [services.cache.users]".into()),
                    );
                }
                let st = self.cache_strategy(&p, strategy);
                out.cache.insert(name.clone(), st);
            }
        }
        out
    }

    fn cache_strategy(&mut self, p: &str, r: &RawCacheStrategy) -> CacheStrategy {
        let def = CacheStrategy::default();
        let l1_ttl = self.duration(r.l1_ttl.as_ref(), &format!("{p}.l1_ttl"), def.l1_ttl, true);
        let l2_ttl = self.duration(r.l2_ttl.as_ref(), &format!("{p}.l2_ttl"), def.l2_ttl, true);
        let mut refresh_ahead = def.refresh_ahead;
        if let Some(v) = &r.refresh_ahead {
            match super::scaling::number(v.get_ref()) {
                Some(f) if f > 0.0 && f <= 1.0 => refresh_ahead = f,
                _ => self.err(
                    &v.span(),
                    &format!("{p}.refresh_ahead"),
                    "refresh_ahead must be a fraction of l2_ttl in (0, 1]",
                    Some("e.g. refresh_ahead = 0.8 (refresh in the background after 80 % of the TTL); 1.0 turns it off".into()),
                ),
            }
        }
        let grace = self.duration(r.grace.as_ref(), &format!("{p}.grace"), def.grace, false);
        let l1_max_entries = u64::from(self.u32(
            r.l1_max_entries.as_ref(),
            &format!("{p}.l1_max_entries"),
            10_000,
            1,
        ));
        CacheStrategy {
            l1_ttl,
            l2_ttl,
            refresh_ahead,
            grace,
            l1_max_entries,
        }
    }
}

impl Validator<'_> {
    /// The services API needs its own port.
    pub(super) fn services_listen(
        &mut self,
        raw: &RawConfig,
        services: &Services,
        gateway: &crate::model::Gateway,
        admin: &crate::model::Admin,
    ) {
        if !services.enabled || services.listen.port() == 0 {
            return;
        }
        let given = raw.services.as_ref().and_then(|s| s.listen.as_ref());
        let others = [
            (
                gateway.listen,
                "gateway.listen",
                raw.gateway.as_ref().and_then(|g| g.listen.as_ref()),
            ),
            (
                admin.listen,
                "admin.listen",
                raw.admin.as_ref().and_then(|a| a.listen.as_ref()),
            ),
        ];
        for (other, what, other_val) in others {
            if !super::clash(services.listen, other) {
                continue;
            }
            match given {
                Some(v) => self.err(
                    &v.span(),
                    "services.listen",
                    format!("services.listen {} clashes with {what} {other}", services.listen),
                    Some("give the services API a port of its own, e.g. listen = \"127.0.0.1:9092\"".into()),
                ),
                // Not written: the other key took the services API's default address.
                None => self.err(
                    &other_val.map_or(0..0, Spanned::span),
                    what,
                    format!(
                        "{what} {other} is the services API's default address {}",
                        services.listen
                    ),
                    Some("move it to another port, or the services API: [services] listen = \"127.0.0.1:9092\"".into()),
                ),
            }
        }
    }

    /// An error on `key` for each of `others` that `addr` clashes with (see `clash`).
    fn own_address(
        &mut self,
        span: &std::ops::Range<usize>,
        key: &str,
        addr: std::net::SocketAddr,
        others: &[(std::net::SocketAddr, &str)],
        hint: &str,
    ) {
        for (other, what) in others {
            if super::clash(addr, *other) {
                self.err(
                    span,
                    key,
                    format!("{key} {addr} is the same address as {what}"),
                    Some(hint.into()),
                );
            }
        }
    }
}

impl Validator<'_> {
    /// `[gateway] redirect_http` needs an address of its own.
    pub(super) fn redirect_listen(
        &mut self,
        raw: &RawConfig,
        gateway: &crate::model::Gateway,
        admin: &crate::model::Admin,
        services: &Services,
    ) {
        let Some(redirect) = gateway.redirect_http.filter(|a| a.port() != 0) else {
            return;
        };
        let span = raw
            .gateway
            .as_ref()
            .and_then(|g| g.redirect_http.as_ref())
            .map_or(0..0, Spanned::span);
        let mut others = vec![
            (gateway.listen, "gateway.listen"),
            (admin.listen, "admin.listen"),
        ];
        if services.enabled {
            others.push((services.listen, "services.listen"));
        }
        self.own_address(
            &span,
            "gateway.redirect_http",
            redirect,
            &others,
            "give the redirect listener its own port, e.g. redirect_http = \"0.0.0.0:80\" beside listen = \"0.0.0.0:443\"",
        );
    }

    /// `shared = true` rate limits count in the store, which herd opens with the services.
    pub(super) fn shared_limits_need_the_store(&mut self, raw: &RawConfig, services: &Services) {
        if services.enabled {
            return;
        }
        for (i, r) in raw.rate_limit.iter().enumerate() {
            if let Some(shared) = r.get_ref().shared.as_ref().filter(|s| *s.get_ref()) {
                self.err(
                    &shared.span(),
                    &format!("rate_limit[{i}].shared"),
                    "shared rate limits count in the store, but [services] enabled = false opens none",
                    Some("remove enabled = false from [services], or shared = true from this limit".into()),
                );
            }
        }
    }
}

/// Whether the services API refuses `name` as a queue or cache namespace name: empty, over 200
/// bytes, or with one of `forbidden`, a space or a control character (names become part of a
/// store key's hash tag).
fn unusable_name(name: &str, forbidden: &[char]) -> bool {
    name.is_empty()
        || name.len() > 200
        || name.contains(forbidden)
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What is wrong with a `redis://` or `rediss://` URL's host, port or database, if anything;
/// never quotes the URL (it may carry a password).
/// A database other than 0, or TLS on some seeds only, in a Redis Cluster's seed list.
fn cluster_problem(urls: &[String]) -> Option<&'static str> {
    let db = |url: &str| {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        let db = path.split_once('?').map_or(path, |(d, _)| d);
        db.parse::<u64>().unwrap_or(0)
    };
    if urls.iter().any(|u| db(u) != 0) {
        return Some("a Redis Cluster has only database 0, and a seed names another");
    }
    let tls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
    if tls != 0 && tls != urls.len() {
        return Some("some seeds use rediss:// (TLS) and others redis://: a cluster's nodes speak one or the other");
    }
    None
}

fn redis_url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = authority.split_once('?').map_or(authority, |(a, _)| a);
    let (userinfo, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
    let bytes = userinfo.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Some("the user or password has a '%' that is not followed by two hex digits (write a '%' as %25)");
    }
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => return Some("an IPv6 host lacks its closing ']'"),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Some("no host");
    }
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) || !matches!(port.parse::<u16>(), Ok(1..)) {
            return Some("the port is not a number from 1 to 65535");
        }
    }
    let db = path.split_once('?').map_or(path, |(d, _)| d);
    if !db.is_empty() && !db.bytes().all(|b| b.is_ascii_digit()) {
        return Some("the database after '/' is not a number");
    }
    None
}

#[cfg(test)]
mod url_tests {
    use super::{cluster_problem, redis_url_problem};

    #[test]
    fn cluster_seeds_take_database_0_and_one_scheme() {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            cluster_problem(&list(&["redis://a:1", "redis://b:2/0"])),
            None
        );
        assert_eq!(
            cluster_problem(&list(&["rediss://a:1", "rediss://b:2"])),
            None
        );
        assert!(cluster_problem(&list(&["redis://a:1/2"]))
            .unwrap()
            .contains("database 0"));
        assert!(cluster_problem(&list(&["rediss://a:1", "redis://b:2"]))
            .unwrap()
            .contains("TLS"));
    }

    #[test]
    fn redis_urls_are_checked_without_being_quoted() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1",
            "redis://:secret@host:6379/2",
            "redis://user:p@ss@host:6379",
            "rediss://[::1]:6380/0",
            "redis://h:6379/?protocol=resp3",
            "redis://h:6379/0?protocol=resp3",
            "redis://:p%40ss@h:6379",
        ] {
            assert_eq!(redis_url_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("redis://127.0.0.1:abc", "port"),
            ("redis://127.0.0.1:0", "port"),
            ("redis://127.0.0.1:70000", "port"),
            ("redis://:pw@:6379", "host"),
            ("redis://h:6379/zero", "database"),
            ("redis://[::1:6379", "IPv6"),
            ("redis://:p%ZZ@h:6379", "%25"),
            ("redis://:100%@h:6379", "%25"),
        ] {
            assert!(
                redis_url_problem(bad).is_some_and(|p| p.contains(why)),
                "{bad}"
            );
        }
    }
}
