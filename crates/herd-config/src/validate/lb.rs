//! Validation of the load-balancing keys beyond `balance`: `sticky` (app, route),
//! `[gateway] sticky_secret`, `weight`/`backup`/`max_conn` (app and per server), `queue`,
//! `queue_timeout`, `slow_start`, `observe`, the route's `balance`/`hash_key` override, and the
//! health check's `expect_status`.

use std::ops::Range;
use std::time::Duration;

use toml::{Spanned, Value};

use super::Validator;
use crate::model::{LoadBalancing, RouteBalance, ServerParams, Sticky};
use crate::raw::{Int, RawApp, RawRoute, Str, Val};

const STICKY_HINT: &str =
    "e.g. sticky = { cookie = \"HERD_SRV\", ttl = \"1h\" } (or sticky = true for these defaults)";
const DEFAULT_COOKIE: &str = "HERD_SRV";
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// HAProxy's largest server weight.
const MAX_WEIGHT: i64 = 256;

impl Validator<'_> {
    /// App-level `weight` and `max_conn`: every supervised instance's, and the default of
    /// servers that do not set their own.
    pub(super) fn server_defaults(&mut self, p: &str, a: &RawApp) -> ServerParams {
        ServerParams {
            weight: self.weight(a.weight.as_ref(), &format!("{p}.weight")),
            backup: false,
            max_conn: self.u32(a.max_conn.as_ref(), &format!("{p}.max_conn"), 0, 0),
        }
    }

    pub(super) fn load_balancing(
        &mut self,
        p: &str,
        a: &RawApp,
        defaults: ServerParams,
        servers: Vec<ServerParams>,
    ) -> LoadBalancing {
        let d = LoadBalancing::default();
        let observe_layer7 = match &a.observe {
            None => d.observe_layer7,
            Some(o) => match o.get_ref().as_str() {
                "layer7" => true,
                "layer4" => false,
                other => {
                    self.err(
                        &o.span(),
                        &format!("{p}.observe"),
                        format!("unknown observe \"{other}\""),
                        Some("\"layer7\" (5xx responses count as failures) or \"layer4\" (only connect errors, resets and timeouts)".into()),
                    );
                    d.observe_layer7
                }
            },
        };
        let queue = match &a.queue {
            None => d.queue,
            Some(q) if *q.get_ref() >= 1 => self.usize(Some(q), &format!("{p}.queue"), d.queue),
            Some(q) => {
                self.err(
                    &q.span(),
                    &format!("{p}.queue"),
                    format!("queue must be at least 1, got {}", q.get_ref()),
                    Some(
                        "requests that may wait for a server under max_conn, e.g. queue = 1024"
                            .into(),
                    ),
                );
                d.queue
            }
        };
        LoadBalancing {
            sticky: a.sticky.as_ref().and_then(|s| self.sticky(p, s)),
            defaults,
            servers,
            queue,
            queue_timeout: self.duration(
                a.queue_timeout.as_ref(),
                &format!("{p}.queue_timeout"),
                d.queue_timeout,
                true,
            ),
            slow_start: self.duration(
                a.slow_start.as_ref(),
                &format!("{p}.slow_start"),
                d.slow_start,
                false,
            ),
            observe_layer7,
        }
    }

    fn weight(&mut self, v: Option<&Int>, key: &str) -> u32 {
        match v {
            None => 1,
            Some(w) if (0..=MAX_WEIGHT).contains(w.get_ref()) => {
                u32::try_from(*w.get_ref()).unwrap_or(1)
            }
            Some(w) => {
                self.err(
                    &w.span(),
                    key,
                    format!("weight must be between 0 and {MAX_WEIGHT}, got {}", w.get_ref()),
                    Some("a share relative to the other servers, e.g. weight = 3; 0 = only when nothing else can serve".into()),
                );
                1
            }
        }
    }

    /// One `{ addr = "...", weight = 3, backup = true, max_conn = 100 }` entry of `servers`.
    pub(super) fn server_table<'v>(
        &mut self,
        span: &Range<usize>,
        key: &str,
        t: &'v toml::Table,
        defaults: ServerParams,
    ) -> Option<(&'v Value, ServerParams)> {
        let mut params = defaults;
        let mut addr = None;
        for (k, v) in t {
            let int = |v: &Value| v.as_integer();
            match (k.as_str(), v) {
                ("addr", v) => addr = Some(v),
                ("weight", v) if int(v).is_some_and(|w| (0..=MAX_WEIGHT).contains(&w)) => {
                    params.weight = int(v).and_then(|w| u32::try_from(w).ok()).unwrap_or(1);
                }
                ("max_conn", v) if int(v).is_some_and(|m| (0..=i64::from(u32::MAX)).contains(&m)) => {
                    params.max_conn = int(v).and_then(|m| u32::try_from(m).ok()).unwrap_or(0);
                }
                ("backup", Value::Boolean(b)) => params.backup = *b,
                ("weight" | "max_conn" | "backup", v) => self.err(
                    span,
                    &format!("{key}.{k}"),
                    format!("invalid {k} {v}"),
                    Some("weight is an integer 0-256, max_conn an integer ≥ 0 (0 = unlimited), backup true or false".into()),
                ),
                (other, _) => self.err(
                    span,
                    &format!("{key}.{other}"),
                    format!("unknown server key \"{other}\""),
                    Some("a server table takes addr, weight, backup and max_conn".into()),
                ),
            }
        }
        if addr.is_none() {
            self.err(
                span,
                key,
                "server table without addr",
                Some("e.g. { addr = \"10.0.0.6:80\", weight = 3 }".into()),
            );
        }
        addr.map(|a| (a, params))
    }

    /// Two apps may not pin with one cookie name where a browser can reach both: each app's
    /// answer would overwrite the other's cookie (`Path=/`, no `Domain`, so per host), and every
    /// request that switches app would be redispatched. Apps routed by different hosts may share
    /// one. A route's own `sticky` pins for the route's app, on the route's host.
    pub(super) fn sticky_cookies_apart(
        &mut self,
        raw: &crate::raw::RawConfig,
        apps: &[crate::App],
        routes: &[crate::Route],
    ) {
        // Routes that failed validation are left out of `routes`: positions then differ, and
        // the file is refused anyway.
        if routes.len() != raw.route.len() {
            return;
        }
        let mut users: Vec<(&str, &str, Reach, String, Range<usize>)> = Vec::new();
        for (i, (app, raw_app)) in apps.iter().zip(&raw.app).enumerate() {
            if let (Some(sticky), Some(v)) = (&app.lb.sticky, &raw_app.get_ref().sticky) {
                let Some(reach) = app_reach(i, routes) else {
                    continue; // no request can reach it
                };
                users.push((
                    &sticky.cookie,
                    &app.name,
                    reach,
                    format!("app[{i}].sticky"),
                    v.span(),
                ));
            }
        }
        for (i, (route, raw_route)) in routes.iter().zip(&raw.route).enumerate() {
            let (Some(Some(sticky)), Some(v), Some(app)) = (
                &route.overrides.sticky,
                &raw_route.get_ref().sticky,
                apps.get(route.app),
            ) else {
                continue;
            };
            users.push((
                &sticky.cookie,
                &app.name,
                route_reach(route),
                format!("route[{i}].sticky"),
                v.span(),
            ));
        }
        for (n, (cookie, app, reach, key, span)) in users.iter().enumerate() {
            let clash = users[..n]
                .iter()
                .find(|(c, a, r, _, _)| c == cookie && a != app && reach.meets(r));
            if let Some((_, first, _, _, _)) = clash {
                self.err(
                    span,
                    key,
                    format!("sticky cookie \"{cookie}\" is already app \"{first}\"'s on the same host"),
                    Some(format!(
                        "give each sticky app its own cookie, e.g. sticky = {{ cookie = \"HERD_SRV_{app}\" }}"
                    )),
                );
            }
        }
    }

    /// `sticky = { cookie, ttl }`, or `true` for the defaults, `false` for none.
    fn sticky(&mut self, p: &str, v: &Val) -> Option<Sticky> {
        let key = format!("{p}.sticky");
        let span = v.span();
        let table = match v.get_ref() {
            Value::Boolean(false) => return None,
            Value::Boolean(true) => {
                return Some(Sticky {
                    cookie: DEFAULT_COOKIE.into(),
                    ttl: DEFAULT_TTL,
                })
            }
            Value::Table(t) => t,
            other => {
                self.err(
                    &span,
                    &key,
                    format!("expected a table or a boolean, found {}", other.type_str()),
                    Some(STICKY_HINT.into()),
                );
                return None;
            }
        };
        let mut sticky = Sticky {
            cookie: DEFAULT_COOKIE.into(),
            ttl: DEFAULT_TTL,
        };
        for (k, val) in table {
            match (k.as_str(), val) {
                ("cookie", Value::String(c)) if cookie_name(c) => sticky.cookie.clone_from(c),
                ("cookie", other) => self.err(
                    &span,
                    &format!("{key}.cookie"),
                    format!("invalid cookie name {other}"),
                    Some("letters, digits and !#$%&'*+-.^_`|~, e.g. cookie = \"HERD_SRV\"".into()),
                ),
                ("ttl", val) => {
                    let spanned = Spanned::new(span.clone(), val.clone());
                    sticky.ttl =
                        self.duration(Some(&spanned), &format!("{key}.ttl"), DEFAULT_TTL, true);
                }
                (other, _) => self.err(
                    &span,
                    &format!("{key}.{other}"),
                    format!("unknown sticky key \"{other}\""),
                    Some(STICKY_HINT.into()),
                ),
            }
        }
        Some(sticky)
    }

    pub(super) fn sticky_secret(&mut self, s: &Str) -> Option<String> {
        if s.get_ref().len() < 16 {
            self.err(
                &s.span(),
                "gateway.sticky_secret",
                "sticky_secret must be at least 16 characters",
                Some("use a long random string, e.g. the output of `openssl rand -hex 32`".into()),
            );
            return None;
        }
        Some(s.get_ref().clone())
    }

    /// A route's `balance`/`hash_key`/`sticky`.
    pub(super) fn route_overrides(&mut self, p: &str, r: &RawRoute) -> RouteBalance {
        // A `hash_key` alone is reported by `balance_with_key` (it needs `balance = "hash"`).
        let balance = (r.balance.is_some() || r.hash_key.is_some())
            .then(|| self.balance_with_key(p, r.balance.as_ref(), r.hash_key.as_ref()));
        RouteBalance {
            balance,
            sticky: r.sticky.as_ref().map(|s| self.sticky(p, s)),
        }
    }

    /// `expect_status = "200-399"`, `200`, or a list of them.
    pub(super) fn expect_status(&mut self, p: &str, v: Option<&Val>) -> Vec<(u16, u16)> {
        let Some(v) = v else {
            return vec![(200, 399)];
        };
        let key = format!("{p}.expect_status");
        let items: Vec<&Value> = match v.get_ref() {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        for item in items {
            match status_range(item) {
                Some(r) => out.push(r),
                None => self.err(
                    &v.span(),
                    &key,
                    format!("invalid status {item}"),
                    Some("a status 100-599 or a range, e.g. expect_status = \"200-399\" or [200, 204]".into()),
                ),
            }
        }
        if out.is_empty() {
            out.push((200, 399));
        }
        out
    }
}

/// `200`, `"200"` or `"200-399"`.
fn status_range(v: &Value) -> Option<(u16, u16)> {
    let valid = |n: u16| (100..=599).contains(&n).then_some(n);
    match v {
        Value::Integer(n) => u16::try_from(*n).ok().and_then(valid).map(|n| (n, n)),
        Value::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a = valid(a.trim().parse().ok()?)?;
            let b = valid(b.trim().parse().ok()?)?;
            (a <= b).then_some((a, b))
        }
        _ => None,
    }
}

/// RFC 6265 cookie-name: an RFC 9110 token.
fn cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The hosts a browser reaches an app (or a route) on: any, or some exact names and
/// one-label wildcards.
enum Reach {
    Any,
    Hosts(Vec<String>),
}

impl Reach {
    fn meets(&self, other: &Reach) -> bool {
        match (self, other) {
            (Reach::Any, _) | (_, Reach::Any) => true,
            (Reach::Hosts(a), Reach::Hosts(b)) => {
                a.iter().any(|x| b.iter().any(|y| hosts_meet(x, y)))
            }
        }
    }
}

/// A route's `host`, as the router compares it (lowercase, no trailing dot).
fn route_reach(route: &crate::Route) -> Reach {
    match &route.host {
        None => Reach::Any,
        Some(h) => {
            let h = h.to_ascii_lowercase();
            Reach::Hosts(vec![h.strip_suffix('.').unwrap_or(&h).to_owned()])
        }
    }
}

/// Where app `i` can be reached: with no routes only app 0 is (everywhere); with routes, on
/// the hosts of the routes to it (`None`: no route leads to it).
fn app_reach(i: usize, routes: &[crate::Route]) -> Option<Reach> {
    if routes.is_empty() {
        return (i == 0).then_some(Reach::Any);
    }
    let mut hosts = Vec::new();
    for r in routes.iter().filter(|r| r.app == i) {
        match route_reach(r) {
            Reach::Any => return Some(Reach::Any),
            Reach::Hosts(h) => hosts.extend(h),
        }
    }
    (!hosts.is_empty()).then_some(Reach::Hosts(hosts))
}

/// Whether some host name matches both (exact names, or `*.x` wildcards on one label).
fn hosts_meet(a: &str, b: &str) -> bool {
    let under = |wild: &str, name: &str| {
        wild.strip_prefix('*').is_some_and(|suffix| {
            name.len() > suffix.len()
                && name.ends_with(suffix)
                && !name[..name.len() - suffix.len()].contains('.')
        })
    };
    a == b || under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(status_range(&Value::Integer(204)), Some((204, 204)));
        assert_eq!(
            status_range(&Value::String("200-399".into())),
            Some((200, 399))
        );
        assert_eq!(status_range(&Value::String("399-200".into())), None);
        assert_eq!(status_range(&Value::String("2xx".into())), None);
        assert_eq!(status_range(&Value::Integer(700)), None);
    }
}
