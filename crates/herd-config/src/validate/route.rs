//! Validation of a `[[route]]`'s matchers beyond `host`/`path_prefix` (`path`, `path_regex`,
//! `methods`, `header`, `websocket`), its overrides (`request_headers`, `response_headers`,
//! `strip_prefix`, `response_timeout`, `retries`) and its `name`.

use std::collections::HashMap;
use std::ops::Range;

use toml::{Spanned, Value};

use super::Validator;
use crate::defaults as d;
use crate::model::{HeaderMatch, HeaderRewrite, Route};
use crate::raw::{RawConfig, RawHeaderRewrite, RawRoute};

const HEADER_HINT: &str =
    "header names are tokens (letters, digits, `-`, ...), e.g. \"X-Canary\"; values are printable ASCII";
/// Headers that carry HTTP/1 framing or connection state: herd manages them itself.
const RESERVED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl Validator<'_> {
    /// Everything in a route but `host`, `path_prefix` and `app` (left at their defaults).
    /// Errors are reported; the caller drops the route when the error count grew.
    pub(super) fn route_rest(&mut self, p: &str, r: &RawRoute) -> Route {
        let name = r.name.as_ref().and_then(|n| self.route_name(p, n));
        let path = r
            .path
            .as_ref()
            .and_then(|s| self.route_path(&format!("{p}.path"), s, "/health"));
        let path_regex = r.path_regex.as_ref().and_then(|s| {
            let key = format!("{p}.path_regex");
            match regex::Regex::new(s.get_ref()) {
                Ok(_) => Some(s.get_ref().clone()),
                Err(e) => {
                    self.err(
                        &s.span(),
                        &key,
                        format!("invalid regular expression: {e}"),
                        Some("Rust regex syntax, searched in the path (not the query); anchor with ^ and $, e.g. path_regex = \"^/v[0-9]+/\"".into()),
                    );
                    None
                }
            }
        });
        let methods = r
            .methods
            .as_ref()
            .map(|v| self.methods(&format!("{p}.methods"), v))
            .unwrap_or_default();
        let header = r
            .header
            .as_ref()
            .and_then(|h| self.header_match(&format!("{p}.header"), h));
        let request_headers = r
            .request_headers
            .as_ref()
            .map(|h| self.header_rewrite(&format!("{p}.request_headers"), h.get_ref()))
            .unwrap_or_default();
        let response_headers = r
            .response_headers
            .as_ref()
            .map(|h| self.header_rewrite(&format!("{p}.response_headers"), h.get_ref()))
            .unwrap_or_default();
        let strip_prefix = r.strip_prefix.as_ref().and_then(|s| {
            let key = format!("{p}.strip_prefix");
            let prefix = self.route_path(&key, s, "/api")?;
            let trimmed = prefix.trim_end_matches('/');
            if trimmed.is_empty() {
                self.err(
                    &s.span(),
                    &key,
                    "strip_prefix \"/\" would strip nothing",
                    Some(
                        "name the leading path segment(s) to remove, e.g. strip_prefix = \"/api\""
                            .into(),
                    ),
                );
                return None;
            }
            Some(trimmed.to_owned())
        });
        let response_timeout = r.response_timeout.as_ref().map(|v| {
            self.duration(
                Some(v),
                &format!("{p}.response_timeout"),
                d::RESPONSE_TIMEOUT,
                true,
            )
        });
        let connect_timeout = r.connect_timeout.as_ref().map(|v| {
            self.duration(
                Some(v),
                &format!("{p}.connect_timeout"),
                d::CONNECT_TIMEOUT,
                true,
            )
        });
        let (retries, data_plane) = self.route_data_plane(p, r);
        Route {
            name,
            path,
            path_regex,
            methods,
            header,
            websocket: r.websocket.as_ref().is_some_and(|b| *b.get_ref()),
            request_headers,
            response_headers,
            strip_prefix,
            response_timeout,
            connect_timeout,
            retries,
            data_plane,
            overrides: self.route_overrides(p, r),
            ..Route::default()
        }
    }

    /// Matchers that contradict each other (the route could never match) and a `strip_prefix`
    /// that no path the route matches starts with: each is a mistake, never what was meant.
    pub(super) fn route_reachable(
        &mut self,
        p: &str,
        r: &RawRoute,
        path_prefix: Option<&str>,
        route: &Route,
    ) {
        if let (Some(path), Some(prefix), Some(raw)) = (&route.path, path_prefix, &r.path) {
            if !path.starts_with(prefix) {
                self.err(
                    &raw.span(),
                    &format!("{p}.path"),
                    format!("path \"{path}\" does not start with path_prefix \"{prefix}\": the route can never match"),
                    Some("keep one of them: path matches one path exactly, path_prefix every path under it".into()),
                );
                return;
            }
        }
        if let (Some(path), Some(re), Some(raw)) = (&route.path, &route.path_regex, &r.path_regex) {
            if regex::Regex::new(re).is_ok_and(|re| !re.is_match(path)) {
                self.err(
                    &raw.span(),
                    &format!("{p}.path_regex"),
                    format!("path_regex \"{re}\" does not match path \"{path}\": the route can never match"),
                    Some("keep one of them: path matches one path exactly, path_regex a pattern".into()),
                );
                return;
            }
        }
        let (Some(strip), Some(raw)) = (&route.strip_prefix, &r.strip_prefix) else {
            return;
        };
        // The paths the route matches start with `path` or `path_prefix`; strip_prefix only
        // removes a whole leading segment run (see herd-proxy's rewrite).
        let (matched, what) = match (&route.path, path_prefix) {
            (Some(path), _) => (path.as_str(), "path"),
            (None, Some(prefix)) => (prefix, "path_prefix"),
            (None, None) => return,
        };
        let may_apply = if matched.len() >= strip.len() {
            matched.starts_with(strip.as_str())
                && (matched.len() == strip.len() || matched.as_bytes()[strip.len()] == b'/')
        } else {
            // A prefix shorter than strip_prefix matches some paths that start with it.
            what == "path_prefix" && strip.starts_with(matched)
        };
        if !may_apply {
            self.err(
                &raw.span(),
                &format!("{p}.strip_prefix"),
                format!("strip_prefix \"{strip}\" never applies: the route's {what} \"{matched}\" does not start with it at a segment boundary, so nothing would be stripped"),
                Some(format!("strip a leading part of the {what}, e.g. strip_prefix = \"{}\"", example_strip(matched))),
            );
        }
    }

    /// A route that matches every request (no host, path, method, header or WebSocket
    /// condition) leaves every route after it unreachable: first match wins.
    pub(super) fn routes_after_a_catch_all(&mut self, raw: &RawConfig, routes: &[Route]) {
        let catch_all = |r: &Route| {
            r.host.is_none()
                && r.path.is_none()
                && r.path_prefix.as_deref().is_none_or(|p| p == "/")
                && r.path_regex.is_none()
                && r.methods.is_empty()
                && r.header.is_none()
                && !r.websocket
        };
        // `routes` holds the valid routes only: line them up with the raw ones by position
        // only when none was dropped.
        if routes.len() != raw.route.len() {
            return;
        }
        if let Some(first) = routes.iter().position(catch_all) {
            for (j, r) in raw.route.iter().enumerate().skip(first + 1) {
                self.err(
                    &r.span(),
                    &format!("route[{j}]"),
                    format!("this route can never match: route[{first}] above it matches every request, and the first route that matches wins"),
                    Some(format!("move the catch-all route[{first}] to the end, or give it a condition")),
                );
            }
            return;
        }
        // A route every request of which an earlier one takes (nginx users write `location
        // /api` before `location /api/v1`: nginx picks the longest prefix, herd the first).
        for (j, later) in routes.iter().enumerate() {
            if let Some(i) = routes[..j]
                .iter()
                .position(|earlier| covers(earlier, later))
            {
                self.err(
                    &raw.route[j].span(),
                    &format!("route[{j}]"),
                    format!("this route can never match: route[{i}] above it matches every request it would, and the first route that matches wins (nginx picks the longest prefix; herd goes in file order)"),
                    Some(format!("put route[{j}] before route[{i}]: the more specific routes first")),
                );
            }
        }
    }

    /// Route names must be unique: they are statistics labels.
    pub(super) fn route_names(&mut self, raw: &RawConfig) {
        let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
        for (i, r) in raw.route.iter().enumerate() {
            let Some(n) = &r.get_ref().name else { continue };
            if let Some(first) = seen.get(n.get_ref().as_str()) {
                let (line, _) = self.src.locate(first.start);
                self.err(
                    &n.span(),
                    &format!("route[{i}].name"),
                    format!("duplicate route name \"{}\"", n.get_ref()),
                    Some(format!(
                        "the first one is on line {line}; give each [[route]] its own name"
                    )),
                );
            } else {
                seen.insert(n.get_ref(), n.span());
            }
        }
    }

    fn route_name(&mut self, p: &str, n: &Spanned<String>) -> Option<String> {
        let s = n.get_ref();
        let generated = s
            .strip_prefix("route")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
        let problem = if s.is_empty() || s.len() > 64 {
            Some("must be 1 to 64 characters")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            Some("may only hold lowercase letters, digits, `-` and `_`")
        } else if generated || s == "default" {
            Some("is reserved for routes without a name")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.err(
                &n.span(),
                &format!("{p}.name"),
                format!("invalid route name \"{s}\": {problem}"),
                Some("e.g. name = \"api-v2\"; it labels the route's statistics".into()),
            );
            return None;
        }
        Some(s.clone())
    }

    /// A path that must start with `/` and hold no query.
    fn route_path(&mut self, key: &str, s: &Spanned<String>, example: &str) -> Option<String> {
        let v = s.get_ref();
        let problem = if !v.starts_with('/') {
            Some("must start with '/'")
        } else if v.contains(['?', '#']) || v.contains(char::is_whitespace) {
            Some("must be a path only, without query, fragment or spaces")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.err(
                &s.span(),
                key,
                format!("invalid path \"{v}\": {problem}"),
                Some(format!("e.g. {example}")),
            );
            return None;
        }
        Some(v.clone())
    }

    fn methods(&mut self, key: &str, v: &Spanned<Value>) -> Vec<String> {
        let hint = || Some("e.g. methods = [\"GET\", \"POST\"]".to_owned());
        let Value::Array(items) = v.get_ref() else {
            self.err(
                &v.span(),
                key,
                format!(
                    "expected an array of method names, found {}",
                    v.get_ref().type_str()
                ),
                hint(),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str() {
                Some(m) if !m.is_empty() && m.bytes().all(is_token) => {
                    let m = m.to_ascii_uppercase();
                    // Extension methods (WebDAV's, PURGE) are allowed; one a letter or two
                    // away from a standard method is a typo that would never match.
                    if !STANDARD_METHODS.contains(&m.as_str()) {
                        if let Some(meant) = crate::error::closest(&m, STANDARD_METHODS) {
                            self.err(
                                &v.span(),
                                key,
                                format!("unknown method \"{m}\""),
                                Some(format!("did you mean \"{meant}\"?")),
                            );
                            continue;
                        }
                    }
                    out.push(m);
                }
                _ => self.err(&v.span(), key, format!("invalid method {item}"), hint()),
            }
        }
        if items.is_empty() {
            self.err(
                &v.span(),
                key,
                "methods must not be empty",
                Some(
                    "remove it to match every method, or list some, e.g. methods = [\"GET\"]"
                        .into(),
                ),
            );
        }
        out
    }

    fn header_match(
        &mut self,
        key: &str,
        h: &Spanned<crate::raw::RawHeaderMatch>,
    ) -> Option<HeaderMatch> {
        let r = h.get_ref();
        let Some(name) = &r.name else {
            self.err(
                &h.span(),
                &format!("{key}.name"),
                "missing name",
                Some("e.g. header = { name = \"X-Canary\", value = \"1\" } (without value: the header is present)".into()),
            );
            return None;
        };
        let name = self.header_name(&format!("{key}.name"), name.get_ref(), &name.span())?;
        let value = match &r.value {
            None => None,
            Some(v) => Some(self.header_value(&format!("{key}.value"), v.get_ref(), &v.span())?),
        };
        Some(HeaderMatch { name, value })
    }

    fn header_rewrite(&mut self, key: &str, r: &RawHeaderRewrite) -> HeaderRewrite {
        let mut out = HeaderRewrite::default();
        for (name, value) in r.add.iter().flatten() {
            let k = format!("{key}.add.{name}");
            let Some(Value::String(s)) = Some(value.get_ref()) else {
                self.err(
                    &value.span(),
                    &k,
                    format!(
                        "expected a string value, found {}",
                        value.get_ref().type_str()
                    ),
                    Some("e.g. add = { \"X-From\" = \"herd\" }".into()),
                );
                continue;
            };
            let name = self.rewritable(&k, name, &value.span());
            let value = self.header_value(&k, s, &value.span());
            if let (Some(n), Some(v)) = (name, value) {
                out.add.push((n, v));
            }
        }
        if let Some(v) = &r.remove {
            let k = format!("{key}.remove");
            match v.get_ref() {
                Value::Array(items) => {
                    for item in items {
                        match item.as_str() {
                            Some(s) if s.eq_ignore_ascii_case("host") => self.err(
                                &v.span(),
                                &k,
                                "header \"host\" cannot be removed: HTTP/1.1 requires it",
                                Some("set another value instead: add = { \"Host\" = \"backend.internal\" }".into()),
                            ),
                            Some(s) => {
                                if let Some(n) = self.rewritable(&k, s, &v.span()) {
                                    out.remove.push(n);
                                }
                            }
                            None => self.err(
                                &v.span(),
                                &k,
                                format!("expected header names, found {}", item.type_str()),
                                Some("e.g. remove = [\"X-Debug\"]".into()),
                            ),
                        }
                    }
                }
                other => self.err(
                    &v.span(),
                    &k,
                    format!(
                        "expected an array of header names, found {}",
                        other.type_str()
                    ),
                    Some("e.g. remove = [\"X-Debug\"]".into()),
                ),
            }
        }
        out
    }

    /// A header name that a route may set or remove (not one herd manages for framing).
    fn rewritable(&mut self, key: &str, name: &str, span: &Range<usize>) -> Option<String> {
        let name = self.header_name(key, name, span)?;
        if RESERVED.contains(&name.as_str()) {
            self.err(
                span,
                key,
                format!("header \"{name}\" cannot be rewritten"),
                Some("herd manages connection and framing headers (Connection, Upgrade, Content-Length, Transfer-Encoding, ...) itself".into()),
            );
            return None;
        }
        Some(name)
    }

    fn header_name(&mut self, key: &str, name: &str, span: &Range<usize>) -> Option<String> {
        if name.is_empty() || !name.bytes().all(is_token) {
            self.err(
                span,
                key,
                format!("invalid header name {name:?}"),
                Some(HEADER_HINT.into()),
            );
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    fn header_value(&mut self, key: &str, value: &str, span: &Range<usize>) -> Option<String> {
        if !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            self.err(
                span,
                key,
                format!("invalid header value {value:?}"),
                Some(HEADER_HINT.into()),
            );
            return None;
        }
        Some(value.to_owned())
    }
}

/// RFC 9110 `tchar`.
/// The methods of RFC 9110 and PATCH (RFC 5789), for spotting typos.
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The first segment of a path, as an example of a `strip_prefix` (`/api/v1/` → `/api`).
fn example_strip(path: &str) -> String {
    match path.trim_start_matches('/').split('/').next() {
        Some(first) if !first.is_empty() => format!("/{first}"),
        _ => "/api".to_owned(),
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a `host` with a `*` is not a wildcard herd supports, if so.
pub(super) fn wildcard_problem(host: &str) -> Option<&'static str> {
    if !host.contains('*') {
        return None;
    }
    match host.strip_prefix("*.") {
        Some(rest) if !rest.is_empty() && !rest.contains('*') && !rest.starts_with('.') => None,
        _ => Some("a wildcard must be one whole leading label, as in \"*.example.com\""),
    }
}

/// Whether every request `later` matches is matched by `earlier` too: each condition of
/// `earlier` is implied by one of `later` (the same host, header and methods or fewer, a
/// path inside its prefix). A regex on `earlier` is never taken to cover anything.
fn covers(earlier: &Route, later: &Route) -> bool {
    if earlier.path_regex.is_some() {
        return false;
    }
    let host = earlier.host.is_none() || earlier.host == later.host;
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    let header = earlier.header.is_none() || earlier.header == later.header;
    let websocket = !earlier.websocket || later.websocket;
    let path = match (&earlier.path, &earlier.path_prefix) {
        (Some(exact), _) => later.path.as_ref() == Some(exact),
        (None, Some(prefix)) => {
            later
                .path
                .as_ref()
                .is_some_and(|p| p.starts_with(prefix.as_str()))
                || (later.path.is_none()
                    && later
                        .path_prefix
                        .as_ref()
                        .is_some_and(|p| p.starts_with(prefix.as_str())))
        }
        (None, None) => true,
    };
    host && methods && header && websocket && path
}
