//! The normal form of a request path, as the gateway matches it (RFC 3986 §6.2.2, as nginx
//! normalises for `location`): percent-encoded unreserved characters are decoded (`%7E` → `~`),
//! other escapes are upper-cased, dot segments are resolved (`/a/./b/../c` → `/a/c`), and with
//! `merge_slashes` runs of `/` become one. It lives here so the config can refuse a route path
//! that no normalised request path could match.

use std::borrow::Cow;

/// Whether `path` may differ from its normal form (a cheap test before [`normalize_path`]).
#[must_use]
pub fn path_needs_normalizing(path: &str, merge_slashes: bool) -> bool {
    let b = path.as_bytes();
    b.iter().enumerate().any(|(i, &c)| match c {
        b'%' => true,
        b'.' => i > 0 && b[i - 1] == b'/',
        b'/' => merge_slashes && b.get(i + 1) == Some(&b'/'),
        _ => false,
    })
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The normal form of an origin-form path (starting with `/`).
///
/// # Errors
/// Why the path cannot be a request path: a bad percent-escape, an escape that decodes to
/// something that is not UTF-8, or dot segments climbing above the root.
pub fn normalize_path(path: &str, merge_slashes: bool) -> Result<String, &'static str> {
    // 1. Decode unreserved escapes, upper-case the others.
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("invalid percent-escape in the path");
            };
            let c = hi * 16 + lo;
            if unreserved(c) {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(b[i + 1].to_ascii_uppercase());
                decoded.push(b[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    // 2. Segments: drop "." (and, merging, empty ones), pop on "..".
    let text = String::from_utf8(decoded).map_err(|_| "invalid request path")?;
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = text.get(1..).unwrap_or("").split('/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err("the request path climbs above the root (\"/..\")");
                }
            }
            "" if merge_slashes || n == last => {}
            s => out.push(s),
        }
    }
    let mut clean = String::with_capacity(text.len());
    for s in &out {
        clean.push('/');
        clean.push_str(s);
    }
    if trailing || clean.is_empty() {
        clean.push('/');
    }
    Ok(clean)
}

/// The path as routes and rate limits match it: the normal form with `%2F` also read as `/`
/// (nginx matches `location`s on the decoded path, and so do the apps behind herd that decode
/// the path: a `/api%2Fadmin` must not slip past a rule for `/api/admin`). The backend is still
/// sent the normal form, escapes kept. `path` must already be in normal form; borrowed when it
/// holds no `%2F`.
///
/// # Errors
/// The decoded path climbs above the root (`/a%2F..%2F..`).
pub fn routing_path(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, &'static str> {
    if !path.contains("%2F") {
        return Ok(Cow::Borrowed(path));
    }
    normalize_path(&path.replace("%2F", "/"), merge_slashes).map(Cow::Owned)
}

/// [`normalize_path`], then [`routing_path`].
fn routing_form(path: &str, merge_slashes: bool) -> Result<String, &'static str> {
    let clean = normalize_path(path, merge_slashes)?;
    Ok(routing_path(&clean, merge_slashes)?.into_owned())
}

/// For a route's exact `path`: its normal form when that differs (no request can match it as
/// written), `None` when it is fine or cannot be a request path at all (`Err` of
/// [`normalize_path`], reported on its own).
pub(crate) fn exact_unmatchable(
    path: &str,
    merge_slashes: bool,
) -> Option<Result<String, &'static str>> {
    if !path_needs_normalizing(path, merge_slashes) {
        return None;
    }
    match routing_form(path, merge_slashes) {
        Ok(clean) if clean == path => None,
        other => Some(other),
    }
}

/// For a `path_prefix`: whether some normalised request path starts with it. A prefix is cut
/// anywhere (`/a%7` may go on as `/a%7F`), so it is tried with a few endings; it is unmatchable
/// when none of them survives normalisation with the prefix intact. Returns the normal form of
/// the prefix as a suggestion.
pub(crate) fn prefix_unmatchable(prefix: &str, merge_slashes: bool) -> Option<String> {
    if !path_needs_normalizing(prefix, merge_slashes) {
        return None;
    }
    let reachable = ["x", "0", "00", "F", ""].iter().any(|end| {
        routing_form(&format!("{prefix}{end}"), merge_slashes)
            .is_ok_and(|clean| clean.starts_with(prefix))
    });
    if reachable {
        return None;
    }
    Some(
        routing_form(&format!("{prefix}x"), merge_slashes).map_or_else(
            |_| "/".to_owned(),
            |clean| clean.strip_suffix('x').unwrap_or(&clean).to_owned(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_no_request_can_start_with() {
        for (prefix, merge, suggestion) in [
            ("/%7Euser/", true, Some("/~user/")),
            ("/a//b", true, Some("/a/b")),
            ("/a/./b", true, Some("/a/b")),
            ("/a/../b", true, Some("/b")),
            ("/a/%2fb", true, Some("/a/b")),
            ("/a%2F", true, Some("/a/")),
            ("/a/%2Fb", true, Some("/a/b")),
        ] {
            assert_eq!(
                prefix_unmatchable(prefix, merge).as_deref(),
                suggestion,
                "{prefix}"
            );
        }
        for fine in [
            "/",
            "/api/",
            "/a/.",
            "/a/..",
            "/a/.well-known",
            "/a%7",
            "/a%",
            "/a%2",
            "/x/",
        ] {
            assert_eq!(prefix_unmatchable(fine, true), None, "{fine}");
        }
        assert_eq!(prefix_unmatchable("/a//b", false), None, "no merging");
    }

    #[test]
    fn routes_read_an_escaped_slash_as_a_slash() {
        assert_eq!(routing_path("/a/b", true), Ok(Cow::Borrowed("/a/b")));
        assert_eq!(routing_path("/api%2Fadmin", true).unwrap(), "/api/admin");
        assert_eq!(routing_path("/a%2F%2Fb", true).unwrap(), "/a/b");
        assert_eq!(routing_path("/a%2F%2Fb", false).unwrap(), "/a//b");
        assert_eq!(routing_path("/a/x%2F..%2Fb", true).unwrap(), "/a/b");
        assert_eq!(
            routing_path("/a%252F", true).unwrap(),
            "/a%252F",
            "no double decoding"
        );
        assert!(routing_path("/a%2F..%2F..%2Fetc", true).is_err());
    }

    #[test]
    fn exact_paths_must_be_in_normal_form() {
        assert_eq!(
            exact_unmatchable("/a/./b", true),
            Some(Ok("/a/b".to_owned()))
        );
        assert_eq!(exact_unmatchable("/%7E", true), Some(Ok("/~".to_owned())));
        assert!(matches!(exact_unmatchable("/../x", true), Some(Err(_))));
        assert!(matches!(exact_unmatchable("/a%zz", true), Some(Err(_))));
        assert_eq!(exact_unmatchable("/a/b", true), None);
        assert_eq!(exact_unmatchable("/a%2F", true), Some(Ok("/a/".to_owned())));
        assert_eq!(
            exact_unmatchable("/a%2F", false),
            Some(Ok("/a/".to_owned()))
        );
        assert_eq!(exact_unmatchable("/a%20b", true), None);
        assert_eq!(exact_unmatchable("/a//b", false), None);
    }
}
