//! The routing table: `[[route]]` rules compiled once, matched per request without allocation.
//!
//! `matcher` holds a rule's matchers (host, path, regex, method, header, WebSocket), `rewrite`
//! what the rule changes on the way through (headers, path prefix, timeout, retries).

use std::sync::Arc;

use herd_config::Route;
use herd_core::{RouteStats, StatsRegistry};

mod matcher;
mod rewrite;

pub(crate) use matcher::RequestView;
pub(crate) use rewrite::RoutePolicy;

use matcher::Matcher;

#[derive(Debug, Clone)]
struct Rule {
    /// `None` for the fallback (matches everything).
    matcher: Option<Matcher>,
    app: usize,
    stats: Arc<RouteStats>,
    policy: Arc<RoutePolicy>,
}

/// The outcome of a match: the app, the counters and the policy of the route that matched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matched<'a> {
    pub(crate) app: usize,
    pub(crate) stats: &'a Arc<RouteStats>,
    pub(crate) policy: &'a Arc<RoutePolicy>,
}

/// The app requests go to when the config has no `[[route]]`: the first that is not a worker
/// (`None` when every app is one: nothing here serves HTTP).
pub(crate) fn default_app(config: &herd_config::Config) -> Option<usize> {
    config.apps.iter().position(|a| !a.is_worker())
}

/// First match wins; with no rules every request goes to the first app that is not a worker
/// (route label `default`).
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    rules: Vec<Rule>,
    fallback: Option<Rule>,
}

impl RouteTable {
    /// `app_names[i]` names app `i` (for the statistics labels). A route is labelled by its
    /// `name`, else `route<N>` (its position in the file). Without routes every request goes
    /// to app `default_app` (the first that is not a worker).
    pub(crate) fn compile(
        routes: &[Route],
        app_names: &[String],
        default_app: Option<usize>,
        stats: &StatsRegistry,
    ) -> Self {
        let name = |i: usize| app_names.get(i).map_or("", String::as_str);
        let fallback = default_app
            .filter(|_| routes.is_empty())
            .map(|default_app| Rule {
                matcher: None,
                app: default_app,
                stats: stats.entry(name(default_app), "default"),
                policy: Arc::default(),
            });
        let rules = routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let label = r.name.clone().unwrap_or_else(|| format!("route{i}"));
                // Validation compiled the same rules, so this only fails on a config that did
                // not come through it; such a rule is left out rather than failing the table.
                let compiled = Matcher::compile(r)
                    .and_then(|m| Ok((m, RoutePolicy::compile(r)?)));
                match compiled {
                    Ok((matcher, policy)) => Some(Rule {
                        matcher: Some(matcher),
                        app: r.app,
                        stats: stats.entry(name(r.app), &label),
                        policy: Arc::new(policy),
                    }),
                    Err(e) => {
                        tracing::error!(route = %label, error = %e, "route left out: it does not compile");
                        None
                    }
                }
            })
            .collect();
        RouteTable { rules, fallback }
    }

    /// The statistics entries this table counts into.
    pub(crate) fn stats(&self) -> impl Iterator<Item = &Arc<RouteStats>> {
        self.rules.iter().chain(&self.fallback).map(|r| &r.stats)
    }

    /// No rule and no default app: every app is a worker, and no request can be served.
    pub(crate) fn serves_nothing(&self) -> bool {
        self.rules.is_empty() && self.fallback.is_none()
    }

    /// The route for a request, or `None` when rules exist and none matches.
    pub(crate) fn find(&self, req: &RequestView<'_>) -> Option<Matched<'_>> {
        let matched = match &self.fallback {
            Some(f) => f,
            None => self
                .rules
                .iter()
                .find(|r| r.matcher.as_ref().is_none_or(|m| m.matches(req)))?,
        };
        Some(Matched {
            app: matched.app,
            stats: &matched.stats,
            policy: &matched.policy,
        })
    }
}

/// The host a route compares: without the port, and without the one trailing dot of a fully
/// qualified name (`api.example.com.` is `api.example.com`, as nginx's `server_name` and herd's
/// SNI lookup read it).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: "[::1]:8080"
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>, app: usize) -> Route {
        Route {
            host: host.map(str::to_owned),
            path_prefix: prefix.map(str::to_owned),
            app,
            ..Route::default()
        }
    }

    fn compile(routes: &[Route]) -> RouteTable {
        let names: Vec<String> = ["web", "api", "static"].map(String::from).to_vec();
        RouteTable::compile(routes, &names, Some(0), &StatsRegistry::default())
    }

    fn find<'a>(t: &'a RouteTable, host: Option<&str>, path: &str) -> Option<Matched<'a>> {
        t.find(&RequestView {
            host,
            method: &Method::GET,
            path,
            headers: &HeaderMap::new(),
        })
    }

    fn app_of(t: &RouteTable, host: Option<&str>, path: &str) -> Option<usize> {
        find(t, host, path).map(|m| m.app)
    }

    #[test]
    fn no_rules_routes_to_first_app() {
        let t = compile(&[]);
        assert_eq!(app_of(&t, None, "/x"), Some(0));
        assert_eq!(find(&t, None, "/").unwrap().stats.route, "default");
        assert!(!t.serves_nothing());
        // Every app a worker: no default app, and the handler says so (503) at once.
        let names: Vec<String> = vec!["jobs".into()];
        let t = RouteTable::compile(&[], &names, None, &StatsRegistry::default());
        assert!(t.serves_nothing());
        assert!(find(&t, None, "/").is_none());
    }

    #[test]
    fn first_match_wins_host_and_prefix() {
        let t = compile(&[
            route(Some("api.example.com"), Some("/api/"), 1),
            route(None, Some("/static/"), 2),
            route(None, None, 0),
        ]);
        assert_eq!(app_of(&t, Some("API.example.com:8080"), "/api/v1"), Some(1));
        assert_eq!(app_of(&t, Some("other"), "/api/v1"), Some(0));
        assert_eq!(app_of(&t, None, "/static/a.css"), Some(2));
        assert_eq!(app_of(&t, Some("api.example.com"), "/"), Some(0));
        // A fully qualified name (trailing dot) is the same host.
        assert_eq!(app_of(&t, Some("api.example.com."), "/api/v1"), Some(1));
        assert_eq!(app_of(&t, Some("api.example.com.:443"), "/api/v1"), Some(1));
        let m = find(&t, None, "/static/x").unwrap();
        assert_eq!(
            (m.stats.app.as_str(), m.stats.route.as_str()),
            ("static", "route1")
        );
    }

    #[test]
    fn named_routes_label_their_statistics() {
        let t = compile(&[
            Route {
                name: Some("api-v2".into()),
                path_prefix: Some("/v2/".into()),
                app: 1,
                ..Route::default()
            },
            route(None, None, 0),
        ]);
        assert_eq!(find(&t, None, "/v2/x").unwrap().stats.route, "api-v2");
        assert_eq!(find(&t, None, "/").unwrap().stats.route, "route1");
    }

    #[test]
    fn a_rule_that_does_not_compile_is_left_out() {
        let t = compile(&[
            Route {
                path_regex: Some("(".into()),
                app: 1,
                ..Route::default()
            },
            route(None, None, 0),
        ]);
        assert_eq!(app_of(&t, None, "/"), Some(0));
    }

    #[test]
    fn a_bracketed_ipv6_or_dotted_route_host_matches() {
        let t = compile(&[
            route(Some("[::1]"), None, 1),
            route(Some("b.example."), None, 2),
        ]);
        assert_eq!(app_of(&t, Some("[::1]:8080"), "/"), Some(1));
        assert_eq!(app_of(&t, Some("b.example"), "/"), Some(2));
    }

    #[test]
    fn unmatched_is_none() {
        let t = compile(&[route(Some("a"), None, 0)]);
        assert_eq!(app_of(&t, Some("b"), "/"), None);
        assert_eq!(app_of(&t, None, "/"), None);
    }

    #[test]
    fn strips_ports_and_ipv6() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("a.b.:80"), "a.b");
        assert_eq!(strip_port("a.b."), "a.b");
    }
}
