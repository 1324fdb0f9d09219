//! The request target, checked and normalised before routing, so that routes, rate limits and
//! `strip_prefix` see the same host and path the backend will.
//!
//! - **Host** (RFC 9112 §3.2): an HTTP/1.1 request needs exactly one `Host`; a request-target in
//!   absolute form (`GET http://h/p`), and HTTP/2's `:authority`, win over the `Host` header,
//!   which is rewritten to match. A host must be a name, an IPv4 address or a bracketed IPv6
//!   address with an optional port: no user info, path, list or space. Anything else is 400.
//! - **Path** (RFC 3986 §6.2.2, as nginx normalises for `location`): percent-encoded
//!   unreserved characters are decoded (`%7E` → `~`), other escapes are kept (upper-cased), dot
//!   segments are resolved (`/a/./b/../c` → `/a/c`), and with `merge_slashes` (nginx's, on by
//!   default) runs of `/` become one. A path that climbs above the root is 400. The backend is
//!   sent the normalised path; routes and rate limits match it with `%2F` read as `/`
//!   (`herd_config::routing_path`, in the handler).

use http::uri::{Authority, PathAndQuery, Uri};
use http::{header, HeaderValue, Request, Version};

use crate::error::ProxyError;

/// Checks and normalises `req`'s host and path in place.
///
/// # Errors
/// [`ProxyError::BadRequest`] naming what is wrong.
pub(crate) fn normalize<B>(req: &mut Request<B>, merge_slashes: bool) -> Result<(), ProxyError> {
    if req.uri().scheme().is_none()
        && req.uri().authority().is_some()
        && req.method() != http::Method::CONNECT
    {
        // `GET a.example.com HTTP/1.1`: the authority form is for CONNECT only (RFC 9112
        // §3.2.3). Taken as a target, it would route the request to another virtual host than
        // the `Host` every proxy in front of herd saw (nginx answers 400 too).
        return Err(ProxyError::BadRequest {
            reason: "a request target without a path (authority form) is only valid for CONNECT",
        });
    }
    host(req)?;
    let Some(pq) = req.uri().path_and_query() else {
        return Ok(());
    };
    let path = pq.path();
    if path == "*" && req.method() != http::Method::OPTIONS {
        // The asterisk form is for `OPTIONS *` only (RFC 9112 §3.2.4).
        return Err(ProxyError::BadRequest {
            reason: "the request target \"*\" is only valid for OPTIONS",
        });
    }
    if !path.starts_with('/') || !herd_config::path_needs_normalizing(path, merge_slashes) {
        return Ok(());
    }
    let clean = clean_path(path, merge_slashes)?;
    let new_pq = match pq.query() {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    };
    let new_pq = PathAndQuery::try_from(new_pq).map_err(|_| ProxyError::BadRequest {
        reason: "invalid request path",
    })?;
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(new_pq);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest {
        reason: "invalid request target",
    })?;
    Ok(())
}

fn host<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest {
            reason: "more than one Host header",
        });
    }
    if let Some(authority) = req.uri().authority().cloned() {
        // Absolute form (HTTP/1.1) or :authority (HTTP/2): the target names the host.
        check_authority(&authority)?;
        if first
            .as_ref()
            .is_none_or(|h| h.as_bytes() != authority.as_str().as_bytes())
        {
            let value =
                HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest {
                    reason: "invalid host in the request target",
                })?;
            req.headers_mut().insert(header::HOST, value);
        }
        return Ok(());
    }
    match first {
        // Checked in place: no allocation on the common path.
        Some(h) => match h.to_str() {
            Ok(text) if valid_host(text) => Ok(()),
            _ => Err(ProxyError::BadRequest {
                reason: "invalid Host header",
            }),
        },
        None if req.version() == Version::HTTP_11 => Err(ProxyError::BadRequest {
            reason: "an HTTP/1.1 request needs a Host header",
        }),
        // RFC 9110 §7.2: a client sends Host unless `:authority` carries it. Passed on, the
        // backend would see the instance's own address as the host.
        None if req.version() == Version::HTTP_2 => Err(ProxyError::BadRequest {
            reason: "an HTTP/2 request needs an :authority or a Host header",
        }),
        None => Ok(()),
    }
}

/// A host (name, IPv4, `[IPv6]`) and an optional port; no user info.
fn check_authority(a: &Authority) -> Result<(), ProxyError> {
    if valid_host(a.as_str()) {
        Ok(())
    } else {
        Err(ProxyError::BadRequest {
            reason: "invalid Host header",
        })
    }
}

/// `host [":" port]`: a name or IPv4 address (letters, digits, `-`, `.`, `_`) or a bracketed
/// IPv6 address, then a port (0 to 65535, in digits) if there is a colon.
pub(crate) fn valid_host(text: &str) -> bool {
    let (host_ok, rest) = if let Some(v6) = text.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) => (
                !addr.is_empty()
                    && addr
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                rest,
            ),
            None => (false, ""),
        }
    } else {
        let end = text.find(':').unwrap_or(text.len());
        let host = &text[..end];
        (
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
            &text[end..],
        )
    };
    host_ok
        && (rest.is_empty()
            || rest.strip_prefix(':').is_some_and(|p| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
            }))
}

/// Whether the path may change: an escape, a dot segment, or (with `merge`) a `//`.
/// The normal form of an origin-form path (starting with `/`), see `herd_config::normalize_path`.
fn clean_path(path: &str, merge: bool) -> Result<String, ProxyError> {
    herd_config::normalize_path(path, merge).map_err(|reason| ProxyError::BadRequest { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Result<String, ProxyError> {
        let mut req = Request::builder()
            .uri(p)
            .header("host", "example.com")
            .body(())
            .unwrap();
        normalize(&mut req, true)?;
        Ok(req.uri().to_string())
    }

    #[test]
    fn paths_are_normalised_like_nginx() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/e//login", "/e/login"),
            ("/e/./login", "/e/login"),
            ("/e/%6cogin", "/e/login"),
            ("/e/x/../login", "/e/login"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/", "/a/b/"),
            ("/%2e%2e/x", "ERR"),
            ("/a/%2e%2e/x", "/x"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            ("/x?q=/../y", "/x?q=/../y"),
            ("/a/..//b?x", "/b?x"),
            ("/..", "ERR"),
            ("/a/../../b", "ERR"),
            ("/%zz", "ERR"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ] {
            let got = path(raw).unwrap_or_else(|_| "ERR".into());
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn without_merge_slashes_empty_segments_stay() {
        let mut req = Request::builder()
            .uri("/a//b/./c")
            .header("host", "h")
            .body(())
            .unwrap();
        normalize(&mut req, false).unwrap();
        assert_eq!(req.uri(), "/a//b/c");
    }

    #[test]
    fn a_request_must_name_its_host_from_http_1_1_on() {
        let with = |version: Version, host: Option<&str>| {
            let mut req = Request::builder().version(version).uri("/x");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let mut req = req.body(()).unwrap();
            normalize(&mut req, true)
        };
        for version in [Version::HTTP_11, Version::HTTP_2] {
            assert!(
                matches!(with(version, None), Err(ProxyError::BadRequest { .. })),
                "{version:?}"
            );
            assert!(with(version, Some("h.example")).is_ok(), "{version:?}");
        }
        assert!(with(Version::HTTP_10, None).is_ok(), "HTTP/1.0 has no Host");
    }

    #[test]
    fn the_authority_form_is_for_connect_only() {
        let with = |method: &str, target: &str| {
            let mut req = Request::builder()
                .method(method)
                .uri(target)
                .header("host", "public.example.org")
                .body(())
                .unwrap();
            normalize(&mut req, true).map(|()| req)
        };
        for target in ["a.example.com", "a.example.com:80", "x"] {
            assert!(
                matches!(with("GET", target), Err(ProxyError::BadRequest { .. })),
                "{target}"
            );
        }
        // CONNECT goes on (to its own answer, 501); the absolute form still names the host.
        assert!(with("CONNECT", "a.example.com:443").is_ok());
        assert!(with("GET", "http://a.example.com/x").is_ok());
    }

    #[test]
    fn the_asterisk_form_is_for_options_only() {
        let with = |method: &str| {
            let mut req = Request::builder()
                .method(method)
                .uri("*")
                .header("host", "h")
                .body(())
                .unwrap();
            normalize(&mut req, true)
        };
        assert!(with("OPTIONS").is_ok());
        for method in ["GET", "POST", "DELETE"] {
            assert!(
                matches!(with(method), Err(ProxyError::BadRequest { .. })),
                "{method}"
            );
        }
    }

    fn host_of(version: Version, uri: &str, hosts: &[&str]) -> Result<String, ProxyError> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        let mut req = b.body(()).unwrap();
        normalize(&mut req, true)?;
        Ok(req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap().to_owned())
            .unwrap_or_default())
    }

    #[test]
    fn hosts_are_checked_and_the_target_wins() {
        let v11 = Version::HTTP_11;
        assert_eq!(host_of(v11, "/", &["echo.test"]).unwrap(), "echo.test");
        assert_eq!(
            host_of(v11, "/", &["echo.test:8080"]).unwrap(),
            "echo.test:8080"
        );
        assert_eq!(host_of(v11, "/", &["[::1]:8080"]).unwrap(), "[::1]:8080");
        assert_eq!(host_of(v11, "/", &["10.0.0.1"]).unwrap(), "10.0.0.1");
        assert_eq!(
            host_of(v11, "/", &["a.test:65535"]).unwrap(),
            "a.test:65535"
        );
        for bad in [
            &["a@echo.test"][..],
            &["echo.test/../x"],
            &["echo.test, other.com"],
            &["echo.test", "other.com"],
            &["echo.test:"],
            &["echo.test:80x"],
            &["echo.test:99999"],
            &["echo.test:65536"],
            &["[::1]:70000"],
            &[""],
            &[],
        ] {
            assert!(host_of(v11, "/", bad).is_err(), "{bad:?}");
        }
        // HTTP/1.0 may leave Host out.
        assert_eq!(host_of(Version::HTTP_10, "/", &[]).unwrap(), "");
        // Absolute form: the URL's host wins (RFC 9112 §3.2.2).
        assert_eq!(
            host_of(v11, "http://echo.test/h", &["other.com"]).unwrap(),
            "echo.test"
        );
        assert!(host_of(v11, "http://u@echo.test/h", &["echo.test"]).is_err());
    }
}
