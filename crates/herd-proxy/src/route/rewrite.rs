//! What a route changes on the way through: request and response headers (`remove` first,
//! then `add`, which replaces), the path prefix sent upstream, and its timeout and retry
//! overrides. Compiled once with the route; shared with requests in flight through an `Arc`.

use std::time::Duration;

use herd_config::{HeaderRewrite, Route};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;

#[derive(Debug, Clone, Default)]
struct Rewrite {
    remove: Box<[HeaderName]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl Rewrite {
    fn compile(r: &HeaderRewrite) -> Result<Self, String> {
        let name =
            |n: &str| HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("header {n:?}"));
        Ok(Rewrite {
            remove: r.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            add: r
                .add
                .iter()
                .map(|(n, v)| {
                    let v = HeaderValue::from_str(v).map_err(|_| format!("value {v:?}"))?;
                    Ok((name(n)?, v))
                })
                .collect::<Result<_, String>>()?,
        })
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.add {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// A route's rewrites and overrides.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoutePolicy {
    request: Rewrite,
    response: Rewrite,
    /// Without a trailing `/`.
    strip_prefix: Option<Box<str>>,
    /// Overrides `[gateway] response_timeout`.
    pub(crate) response_timeout: Option<Duration>,
    /// Overrides `[gateway] connect_timeout` (new backend connections for this route).
    pub(crate) connect_timeout: Option<Duration>,
    /// Overrides `[gateway] retries` (`Some(0)`: a request that reached a backend is not sent
    /// again).
    pub(crate) retries: Option<u32>,
    pub(crate) retry_on: Option<herd_config::RetryOn>,
    pub(crate) total_timeout: Option<Option<Duration>>,
    pub(crate) compress: Option<bool>,
    /// `balance`/`hash_key`/`sticky` overriding the app's.
    pub(crate) overrides: herd_config::RouteBalance,
}

impl RoutePolicy {
    pub(super) fn compile(r: &Route) -> Result<Self, String> {
        Ok(RoutePolicy {
            request: Rewrite::compile(&r.request_headers)?,
            response: Rewrite::compile(&r.response_headers)?,
            strip_prefix: r
                .strip_prefix
                .as_deref()
                .map(|p| p.trim_end_matches('/').into()),
            response_timeout: r.response_timeout,
            connect_timeout: r.connect_timeout,
            retries: r.retries,
            retry_on: r.data_plane.retry_on,
            total_timeout: r.data_plane.total_timeout,
            compress: r.data_plane.compress,
            overrides: r.overrides.clone(),
        })
    }

    /// Applies `request_headers` to the request going upstream.
    pub(crate) fn rewrite_request(&self, headers: &mut HeaderMap) {
        self.request.apply(headers);
    }

    /// Applies `response_headers` to a backend's response.
    pub(crate) fn rewrite_response(&self, headers: &mut HeaderMap) {
        self.response.apply(headers);
    }

    /// The origin-form URI to send upstream once `strip_prefix` is removed, keeping the query;
    /// `None` when nothing changes. `routed` is the path the route matched when it differs from
    /// `uri`'s (its `%2F` read as `/`): where only that one starts with the prefix
    /// (`/api%2Fv1` for `/api`), its remainder is sent (`/v1`), as nginx's `proxy_pass` with a
    /// URI sends the decoded path.
    pub(crate) fn upstream_uri(&self, uri: &Uri, routed: Option<&str>) -> Option<Uri> {
        let prefix = self.strip_prefix.as_deref()?;
        let rest = strip(prefix, uri.path()).or_else(|| strip(prefix, routed?))?;
        let rebuilt = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        Uri::try_from(rebuilt).ok()
    }
}

/// `path` without `prefix` when the prefix ends at a segment boundary (`/api` strips `/api`
/// and `/api/x`, never `/apix`); an emptied path becomes `/`.
fn strip<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else {
        rest.starts_with('/').then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(r: Route) -> RoutePolicy {
        RoutePolicy::compile(&r).unwrap()
    }

    #[test]
    fn strip_prefix_keeps_the_query_and_segment_boundaries() {
        let p = policy(Route {
            strip_prefix: Some("/api".into()),
            ..Route::default()
        });
        let up = |s: &'static str| {
            p.upstream_uri(&Uri::from_static(s), None)
                .map(|u| u.to_string())
        };
        assert_eq!(
            up("/api/users?id=1&x=%20"),
            Some("/users?id=1&x=%20".into())
        );
        assert_eq!(up("/api/users"), Some("/users".into()));
        assert_eq!(up("/api"), Some("/".into()));
        assert_eq!(up("/api?q=1"), Some("/?q=1".into()));
        assert_eq!(up("/apix/users"), None);
        let routed = |s: &'static str, r: &str| {
            p.upstream_uri(&Uri::from_static(s), Some(r))
                .map(|u| u.to_string())
        };
        assert_eq!(routed("/api%2Fv1?q", "/api/v1"), Some("/v1?q".into()));
        assert_eq!(
            routed("/api/a%2Fb", "/api/a/b"),
            Some("/a%2Fb".into()),
            "escapes after the prefix stay"
        );
        assert_eq!(routed("/apix%2Fv1", "/apix/v1"), None);
        assert_eq!(up("/other"), None);
        assert!(policy(Route::default())
            .upstream_uri(&Uri::from_static("/api/x"), None)
            .is_none());
    }

    #[test]
    fn headers_are_removed_then_added() {
        let p = policy(Route {
            request_headers: HeaderRewrite {
                add: vec![("x-from".into(), "herd".into())],
                remove: vec!["x-debug".into(), "x-from".into()],
            },
            response_headers: HeaderRewrite {
                add: Vec::new(),
                remove: vec!["server".into()],
            },
            ..Route::default()
        });
        let mut h = HeaderMap::new();
        h.append("x-debug", HeaderValue::from_static("1"));
        h.append("x-debug", HeaderValue::from_static("2"));
        h.append("x-from", HeaderValue::from_static("client"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("server", HeaderValue::from_static("node"));
        p.rewrite_request(&mut h);
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h.get_all("x-from").iter().collect::<Vec<_>>(), ["herd"]);
        assert!(h.contains_key("server"));
        p.rewrite_response(&mut h);
        assert!(!h.contains_key("server"));
        assert!(h.contains_key("x-keep"));
    }
}
