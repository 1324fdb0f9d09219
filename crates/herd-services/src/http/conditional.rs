//! Conditional requests on sessions (RFC 9110 §13): `If-Match` for compare-and-swap writes,
//! `If-None-Match: *` for create-only writes and `If-None-Match` on reads (304). A session's
//! ETag is its version as a quoted decimal (`"3"`).

use axum::http::{header, HeaderMap, StatusCode};

use super::ApiError;
use crate::ServiceError;

/// What `If-Match` asks of the session's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfMatch {
    /// No `If-Match`: any state (a missing session is 404).
    Absent,
    /// `If-Match: *`: the session must exist (412 if not).
    Exists,
    /// `If-Match: "3"`: the session must be at this version (412 if not, or missing).
    Version(u64),
}

impl IfMatch {
    /// The version a compare-and-swap is made at, if any.
    pub(super) fn version(self) -> Option<u64> {
        match self {
            IfMatch::Version(v) => Some(v),
            _ => None,
        }
    }

    /// A precondition on a session that turned out missing fails (412), as RFC 9110 says,
    /// rather than answering 404.
    pub(super) fn missing_fails<T>(self, result: Result<T, ServiceError>) -> Result<T, ApiError> {
        match result {
            Err(ServiceError::NotFound { what }) if self != IfMatch::Absent => {
                Err(failed(format!("{what} not found, so If-Match cannot hold")))
            }
            other => other.map_err(ApiError::from),
        }
    }
}

fn failed(error: String) -> ApiError {
    ApiError::Plain {
        status: StatusCode::PRECONDITION_FAILED,
        error,
        hint: "read the session again (GET), then retry with If-Match set to its ETag".into(),
    }
}

/// The tags of an `If-Match`/`If-None-Match` list, each with whether it is weak; `None` for a
/// malformed list.
fn tags(text: &str) -> Option<Vec<(bool, &str)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (tag, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            // A bare version (`If-Match: 3`), taken for convenience; nothing else unquoted.
            let end = after.find(',').unwrap_or(after.len());
            let bare = after[..end].trim();
            if weak || bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (bare, &after[end..])
        };
        out.push((weak, tag));
        rest = after.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return None;
            }
        } else if !rest.is_empty() {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The version an ETag's opaque part names: a decimal without leading zeros, as herd writes it.
fn version_of(tag: &str) -> Option<u64> {
    let canonical = tag == "0" || (!tag.starts_with('0') && !tag.is_empty());
    canonical.then(|| tag.parse().ok()).flatten()
}

/// Parses `If-Match`. A weak tag, or one that names no version herd could have written
/// (`"01"`, `"abc"`), never matches (412: RFC 9110 compares strongly); a list of several
/// versions is refused, since a write is made at one version.
pub(super) fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(IfMatch::Absent);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(IfMatch::Exists);
    }
    let Some(list) = tags(text) else {
        return Err(ApiError::bad(
            format!("invalid If-Match header {text:?}: expected an ETag such as \"3\" or *"),
            "send the ETag of your last read as it came, e.g. If-Match: \"3\"",
        ));
    };
    let [(weak, tag)] = list[..] else {
        return Err(ApiError::bad(
            format!(
                "If-Match {text:?} lists {} ETags; herd takes one",
                list.len()
            ),
            "send the ETag of your last read only: a write is made at one version",
        ));
    };
    if weak {
        return Err(failed(format!(
            "If-Match {text:?} is a weak ETag, which never matches (RFC 9110 §13.1.1)"
        )));
    }
    version_of(tag).map(IfMatch::Version).ok_or_else(|| {
        failed(format!(
            "If-Match {text:?} names no version of this session (herd's ETags are \"1\", \"2\", ...)"
        ))
    })
}

/// `If-None-Match` on a write: only `*` (create-only) is meaningful; `true` when given.
pub(super) fn create_only(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(v) = headers.get(header::IF_NONE_MATCH) else {
        return Ok(false);
    };
    if v.to_str().unwrap_or("").trim() == "*" {
        return Ok(true);
    }
    Err(ApiError::bad(
        "a write takes If-None-Match: * only (create the session if the id is free)",
        "leave If-None-Match out to replace the session, or send * to create it",
    ))
}

/// `If-None-Match` where it means nothing herd could honour (a merge, a delete, a regenerate,
/// a touch): refused, never ignored (RFC 9110 §13.2.1 asks a server to evaluate it).
pub(super) fn refuse_if_none_match(headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return Err(ApiError::bad(
            format!("{what} takes no If-None-Match (only GET and a create-only PUT do)"),
            "use If-Match: \"<version>\" to make it conditional, or If-Match: * to require that the session exists",
        ));
    }
    Ok(())
}

/// `If-None-Match` on a read: whether the session's current ETag is listed (or `*`), so the
/// answer is 304. Weak comparison, as RFC 9110 §13.1.2 says; a malformed header is ignored
/// (the full answer is always correct).
pub(super) fn not_modified(headers: &HeaderMap, version: u64) -> bool {
    let Some(text) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let text = text.trim();
    text == "*"
        || tags(text)
            .is_some_and(|list| list.iter().any(|(_, tag)| version_of(tag) == Some(version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, v.parse().unwrap());
        h
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), IfMatch::Absent);
        for (v, want) in [
            ("\"3\"", IfMatch::Version(3)),
            ("5", IfMatch::Version(5)),
            ("*", IfMatch::Exists),
            (" \"0\" ", IfMatch::Version(0)),
        ] {
            assert_eq!(if_match(&with(header::IF_MATCH, v)).unwrap(), want, "{v}");
        }
        for (v, status) in [
            ("\"x\"", 412),
            ("\"01\"", 412),
            ("W/\"4\"", 412),
            ("\"1\", \"2\"", 400),
            ("abc", 400),
            ("\"3", 400),
            ("\"3\",", 400),
        ] {
            let e = if_match(&with(header::IF_MATCH, v)).unwrap_err();
            let got = axum::response::IntoResponse::into_response(e).status();
            assert_eq!(got.as_u16(), status, "{v}");
        }
    }

    #[test]
    fn if_none_match_on_reads_compares_weakly() {
        for (v, hit) in [
            ("\"3\"", true),
            ("W/\"3\"", true),
            ("\"1\", \"3\"", true),
            ("*", true),
            ("\"03\"", false),
            ("\"4\"", false),
            ("garbage", false),
        ] {
            assert_eq!(not_modified(&with(header::IF_NONE_MATCH, v), 3), hit, "{v}");
        }
        assert!(!not_modified(&HeaderMap::new(), 3));
    }

    proptest::proptest! {
        #[test]
        fn conditions_never_panic(s in "[ -~]{0,24}") {
            if let Ok(v) = s.parse::<axum::http::HeaderValue>() {
                let mut h = HeaderMap::new();
                h.insert(header::IF_MATCH, v.clone());
                h.insert(header::IF_NONE_MATCH, v);
                let _ = if_match(&h);
                let _ = create_only(&h);
                let _ = not_modified(&h, 7);
            }
        }
    }
}
