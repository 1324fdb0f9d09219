//! The routing table: `[[route]]` rules compiled once, matched per request without allocation.

use herd_config::Route;

#[derive(Debug, Clone)]
struct Rule {
    /// Lowercase host without port.
    host: Option<String>,
    path_prefix: Option<String>,
    app: usize,
}

/// First match wins; with no rules every request goes to app 0.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    rules: Vec<Rule>,
}

impl RouteTable {
    pub(crate) fn compile(routes: &[Route]) -> Self {
        RouteTable {
            rules: routes
                .iter()
                .map(|r| Rule {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.clone(),
                    app: r.app,
                })
                .collect(),
        }
    }

    /// The app index for a request, or `None` when rules exist and none matches.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if self.rules.is_empty() {
            return Some(0);
        }
        let host = host.map(strip_port);
        self.rules
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                    && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map(|r| r.app)
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

    #[test]
    fn no_rules_routes_to_first_app() {
        let t = RouteTable::compile(&[]);
        assert_eq!(t.find(None, "/x"), Some(0));
    }

    #[test]
    fn first_match_wins_host_and_prefix() {
        let t = RouteTable::compile(&[
            route(Some("api.example.com"), Some("/api/"), 1),
            route(None, Some("/static/"), 2),
            route(None, None, 0),
        ]);
        assert_eq!(t.find(Some("API.example.com:8080"), "/api/v1"), Some(1));
        assert_eq!(t.find(Some("other"), "/api/v1"), Some(0));
        assert_eq!(t.find(None, "/static/a.css"), Some(2));
        assert_eq!(t.find(Some("api.example.com"), "/"), Some(0));
    }

    #[test]
    fn unmatched_is_none() {
        let t = RouteTable::compile(&[route(Some("a"), None, 0)]);
        assert_eq!(t.find(Some("b"), "/"), None);
        assert_eq!(t.find(None, "/"), None);
    }

    #[test]
    fn strips_ports_and_ipv6() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
