//! One route's matchers, compiled once from its `[[route]]` and tried in order of cost
//! (method, host, exact path, prefix, header, WebSocket, then the regex). Nothing here
//! allocates per request.
//!
//! - `host`: exact, or `*.example.com`: exactly one extra leading label (`a.example.com`, not
//!   `example.com`, not `a.b.example.com`), case-insensitive, the request's port ignored.
//! - `path_regex`: searched in the path (not the query), unanchored unless the pattern says
//!   `^`/`$` (as nginx `location ~`). `Regex::is_match` takes its scratch space from a pool
//!   the regex keeps (one per concurrent caller, reused), so steady state allocates nothing.
//! - `websocket`: an HTTP/1.1 `Upgrade` header that lists `websocket` (an HTTP/2 extended
//!   CONNECT has been rewritten into that form before routing, see `extconnect`).

use herd_config::Route;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use regex::Regex;

/// What the matchers read from a request, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// The Host header (or the URI's authority), port included.
    pub(crate) host: Option<&'a str>,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostMatch {
    /// Lowercase host.
    Exact(Box<str>),
    /// `*.example.com` kept as `.example.com`.
    Wildcard(Box<str>),
}

impl HostMatch {
    /// A route's `host`, compared as requests' hosts are (see `strip_port`): an IPv6
    /// literal without brackets, a name without its trailing dot.
    pub(super) fn parse(host: &str) -> Self {
        let host = host.to_ascii_lowercase();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        let host = host.strip_suffix('.').unwrap_or(host);
        match host.strip_prefix('*') {
            Some(suffix) => HostMatch::Wildcard(suffix.into()),
            None => HostMatch::Exact(host.into()),
        }
    }

    /// `host` is the request's host without its port.
    pub(super) fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(want) => host.eq_ignore_ascii_case(want),
            HostMatch::Wildcard(suffix) => {
                // Bytes, not str slicing: a host is not guaranteed to be ASCII here.
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len() && {
                    let (label, tail) = host.split_at(host.len() - suffix.len());
                    tail.eq_ignore_ascii_case(suffix) && !label.contains(&b'.')
                }
            }
        }
    }
}

/// All of a route's matchers; a request must pass every one that is set.
#[derive(Debug, Clone)]
pub(super) struct Matcher {
    host: Option<HostMatch>,
    path: Option<Box<str>>,
    path_prefix: Option<Box<str>>,
    path_regex: Option<Regex>,
    /// Empty: any method.
    methods: Box<[Method]>,
    header: Option<(HeaderName, Option<HeaderValue>)>,
    websocket: bool,
}

impl Matcher {
    /// `Err` names what could not be compiled (validation makes that unreachable).
    pub(super) fn compile(r: &Route) -> Result<Self, String> {
        let path_regex = r
            .path_regex
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| format!("path_regex: {e}"))?;
        let methods = r
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| format!("method {m:?}")))
            .collect::<Result<_, _>>()?;
        let header = r
            .header
            .as_ref()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("header name {:?}", h.name))?;
                let value = h
                    .value
                    .as_deref()
                    .map(HeaderValue::from_str)
                    .transpose()
                    .map_err(|_| format!("header value {:?}", h.value))?;
                Ok::<_, String>((name, value))
            })
            .transpose()?;
        Ok(Matcher {
            host: r.host.as_deref().map(HostMatch::parse),
            path: r.path.as_deref().map(Into::into),
            path_prefix: r.path_prefix.as_deref().map(Into::into),
            path_regex,
            methods,
            header,
            websocket: r.websocket,
        })
    }

    pub(super) fn matches(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty()
            || self.methods.contains(req.method)
            // GET includes HEAD (RFC 9110 9.3.2; nginx's `limit_except GET`).
            || (req.method == Method::HEAD && self.methods.contains(&Method::GET)))
            && self.host.as_ref().is_none_or(|want| {
                req.host
                    .map(super::strip_port)
                    .is_some_and(|h| want.matches(h))
            })
            && self.path.as_deref().is_none_or(|p| req.path == p)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| req.path.starts_with(p))
            && self.header.as_ref().is_none_or(|(name, value)| {
                let mut fields = req.headers.get_all(name).iter();
                match value {
                    None => fields.next().is_some(),
                    Some(want) => fields.any(|v| v == want),
                }
            })
            && (!self.websocket || is_websocket(req.headers))
            && self
                .path_regex
                .as_ref()
                .is_none_or(|re| re.is_match(req.path))
    }
}

/// An HTTP/1.1 upgrade to WebSocket: `Upgrade` lists `websocket` (any case).
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

#[cfg(test)]
mod tests {
    use herd_config::HeaderMatch;
    use proptest::prelude::*;

    use super::*;

    fn view<'a>(
        host: Option<&'a str>,
        method: &'a Method,
        path: &'a str,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            host,
            method,
            path,
            headers,
        }
    }

    fn matcher(r: Route) -> Matcher {
        Matcher::compile(&r).unwrap()
    }

    fn get(m: &Matcher, host: Option<&str>, path: &str) -> bool {
        m.matches(&view(host, &Method::GET, path, &HeaderMap::new()))
    }

    #[test]
    fn wildcard_host_is_one_leading_label() {
        let w = HostMatch::parse("*.Example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("API.EXAMPLE.COM"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches(".example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(!w.matches("a.example.org"));
        let m = matcher(Route {
            host: Some("*.example.com".into()),
            ..Route::default()
        });
        assert!(get(&m, Some("x.example.com:8443"), "/"));
        assert!(!get(&m, None, "/"));
        // Compared as bytes: a multi-byte character at the split point must not panic.
        assert!(!get(&m, Some("aéxample.com"), "/"));
    }

    #[test]
    fn exact_path_and_prefix() {
        let exact = matcher(Route {
            path: Some("/health".into()),
            ..Route::default()
        });
        assert!(get(&exact, None, "/health"));
        assert!(!get(&exact, None, "/health/"));
        assert!(!get(&exact, None, "/healthz"));
        let prefix = matcher(Route {
            path_prefix: Some("/api/".into()),
            ..Route::default()
        });
        assert!(get(&prefix, None, "/api/x"));
        assert!(!get(&prefix, None, "/api"));
    }

    #[test]
    fn regex_is_unanchored_unless_anchored() {
        let anchored = matcher(Route {
            path_regex: Some("^/v[0-9]+/".into()),
            ..Route::default()
        });
        assert!(get(&anchored, None, "/v2/users"));
        assert!(!get(&anchored, None, "/api/v2/users"));
        assert!(!get(&anchored, None, "/vx/"));
        let loose = matcher(Route {
            path_regex: Some(r"\.php$".into()),
            ..Route::default()
        });
        assert!(get(&loose, None, "/a/b/index.php"));
        assert!(!get(&loose, None, "/index.php/x"));
    }

    #[test]
    fn methods() {
        let m = matcher(Route {
            methods: vec!["GET".into(), "POST".into()],
            ..Route::default()
        });
        let h = HeaderMap::new();
        assert!(m.matches(&view(None, &Method::GET, "/", &h)));
        assert!(m.matches(&view(None, &Method::POST, "/", &h)));
        assert!(!m.matches(&view(None, &Method::DELETE, "/", &h)));
        assert!(
            m.matches(&view(None, &Method::HEAD, "/", &h)),
            "GET includes HEAD"
        );
    }

    #[test]
    fn header_present_or_equal() {
        let present = matcher(Route {
            header: Some(HeaderMatch {
                name: "x-canary".into(),
                value: None,
            }),
            ..Route::default()
        });
        let equal = matcher(Route {
            header: Some(HeaderMatch {
                name: "x-canary".into(),
                value: Some("1".into()),
            }),
            ..Route::default()
        });
        let mut h = HeaderMap::new();
        let check = |m: &Matcher, h: &HeaderMap| m.matches(&view(None, &Method::GET, "/", h));
        assert!(!check(&present, &h) && !check(&equal, &h));
        h.append("x-canary", HeaderValue::from_static("0"));
        assert!(check(&present, &h) && !check(&equal, &h));
        h.append("X-Canary", HeaderValue::from_static("1"));
        assert!(check(&present, &h) && check(&equal, &h));
    }

    #[test]
    fn websocket_upgrade() {
        let m = matcher(Route {
            websocket: true,
            ..Route::default()
        });
        let mut h = HeaderMap::new();
        let check = |h: &HeaderMap| m.matches(&view(None, &Method::GET, "/ws", h));
        assert!(!check(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!check(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("foo, WebSocket"));
        assert!(check(&h));
        // websocket = false (the default) does not exclude upgrades.
        assert!(get(&matcher(Route::default()), None, "/"));
    }

    #[test]
    fn every_matcher_must_pass() {
        let m = matcher(Route {
            host: Some("*.example.com".into()),
            path_prefix: Some("/api/".into()),
            path_regex: Some("/v[0-9]+/".into()),
            methods: vec!["POST".into()],
            header: Some(HeaderMatch {
                name: "x-canary".into(),
                value: Some("1".into()),
            }),
            ..Route::default()
        });
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("1"));
        let ok = view(Some("a.example.com"), &Method::POST, "/api/v1/x", &h);
        assert!(m.matches(&ok));
        assert!(!m.matches(&RequestView {
            host: Some("example.com"),
            ..ok
        }));
        assert!(!m.matches(&RequestView {
            method: &Method::GET,
            ..ok
        }));
        assert!(!m.matches(&RequestView {
            path: "/api/x",
            ..ok
        }));
        assert!(!m.matches(&RequestView {
            path: "/v1/x",
            ..ok
        }));
        let empty = HeaderMap::new();
        assert!(!m.matches(&RequestView {
            headers: &empty,
            ..ok
        }));
    }

    proptest! {
        /// `*.SUFFIX` matches HOST exactly when HOST = LABEL + "." + SUFFIX with one non-empty
        /// label (no dot), in any case.
        #[test]
        fn wildcard_matches_exactly_one_extra_label(
            labels in prop::collection::vec("[a-zA-Z0-9-]{0,4}", 0..5),
            suffix in prop::collection::vec("[a-z0-9-]{1,4}", 1..3),
        ) {
            let suffix = suffix.join(".");
            let host = labels.iter().map(String::as_str).chain([suffix.as_str()])
                .collect::<Vec<_>>().join(".");
            let w = HostMatch::parse(&format!("*.{suffix}"));
            let model = labels.len() == 1 && !labels[0].is_empty();
            prop_assert_eq!(w.matches(&host), model, "host {}", host);
            prop_assert_eq!(w.matches(&host.to_ascii_uppercase()), model);
        }
    }
}
