//! The routing table: `[[route]]` rules compiled once, matched per request without allocation.

use std::sync::Arc;

use herd_config::Route;
use herd_core::{RouteStats, StatsRegistry};

#[derive(Debug, Clone)]
struct Rule {
    /// Lowercase host without port.
    host: Option<String>,
    path_prefix: Option<String>,
    app: usize,
    stats: Arc<RouteStats>,
}

/// The outcome of a match: the app and the counters of the route that matched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matched<'a> {
    pub(crate) app: usize,
    pub(crate) stats: &'a Arc<RouteStats>,
}

/// First match wins; with no rules every request goes to app 0 (route label `default`).
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    rules: Vec<Rule>,
    fallback: Option<Rule>,
}

impl RouteTable {
    /// `app_names[i]` names app `i` (for the statistics labels).
    pub(crate) fn compile(routes: &[Route], app_names: &[String], stats: &StatsRegistry) -> Self {
        let name = |i: usize| app_names.get(i).map_or("", String::as_str);
        let fallback = routes.is_empty().then(|| Rule {
            host: None,
            path_prefix: None,
            app: 0,
            stats: stats.entry(name(0), "default"),
        });
        RouteTable {
            rules: routes
                .iter()
                .enumerate()
                .map(|(i, r)| Rule {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.clone(),
                    app: r.app,
                    stats: stats.entry(name(r.app), &format!("route{i}")),
                })
                .collect(),
            fallback,
        }
    }

    /// The app for a request, or `None` when rules exist and none matches.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<Matched<'_>> {
        let matched = match &self.fallback {
            Some(f) => f,
            None => {
                let host = host.map(strip_port);
                self.rules.iter().find(|r| {
                    r.host
                        .as_deref()
                        .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                        && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
                })?
            }
        };
        Some(Matched {
            app: matched.app,
            stats: &matched.stats,
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: "[::1]:8080"
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>, app: usize) -> Route {
        Route {
            host: host.map(str::to_owned),
            path_prefix: prefix.map(str::to_owned),
            app,
        }
    }

    fn compile(routes: &[Route]) -> RouteTable {
        let names: Vec<String> = ["web", "api", "static"].map(String::from).to_vec();
        RouteTable::compile(routes, &names, &StatsRegistry::default())
    }

    fn app_of(t: &RouteTable, host: Option<&str>, path: &str) -> Option<usize> {
        t.find(host, path).map(|m| m.app)
    }

    #[test]
    fn no_rules_routes_to_first_app() {
        let t = compile(&[]);
        assert_eq!(app_of(&t, None, "/x"), Some(0));
        assert_eq!(t.find(None, "/").unwrap().stats.route, "default");
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
        let m = t.find(None, "/static/x").unwrap();
        assert_eq!(
            (m.stats.app.as_str(), m.stats.route.as_str()),
            ("static", "route1")
        );
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
    }
}
