//! What `hash` and `ip_hash` hash, read from the request without allocating.

use std::net::IpAddr;

use herd_config::HashKey;
use http::{header, HeaderMap, Uri};

use super::ring;

/// The hash of the request's key, or `None` when the request does not carry it (then the
/// gateway falls back to round robin, as HAProxy does for a missing header or parameter).
pub(crate) fn request_hash(key: &HashKey, headers: &HeaderMap, uri: &Uri) -> Option<u64> {
    value(key, headers, uri).map(ring::hash)
}

/// The hash of a client address (all 4 or 16 bytes).
pub(crate) fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => ring::hash(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ring::hash(&v4.octets()),
            None => ring::hash(&v6.octets()),
        },
    }
}

fn value<'a>(key: &HashKey, headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a [u8]> {
    match key {
        // Stored lowercased by the config, so the lookup does not allocate.
        HashKey::Header(name) => headers
            .get(name.as_str())
            .map(http::HeaderValue::as_bytes)
            .filter(|v| !v.is_empty()),
        HashKey::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|v| crate::cookie::in_header(v.as_bytes(), name.as_bytes())),
        HashKey::Query(name) => uri.query().and_then(|q| query(q, name)),
        HashKey::Path => Some(uri.path().as_bytes()),
    }
}

/// The raw value of query parameter `name` (first occurrence, not percent-decoded).
fn query<'a>(q: &'a str, name: &str) -> Option<&'a [u8]> {
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name && !v.is_empty()).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, hdrs: &[(&str, &str)]) -> (HeaderMap, Uri) {
        let mut h = HeaderMap::new();
        for (k, v) in hdrs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (h, uri.parse().unwrap())
    }

    #[test]
    fn extracts_each_kind() {
        let (h, u) = req(
            "/a/b?x=1&user=42&y",
            &[
                ("X-User", "alice"),
                ("cookie", "a=1; sid=s3"),
                ("cookie", "c=2"),
            ],
        );
        let v = |k: HashKey| value(&k, &h, &u).map(<[u8]>::to_vec);
        assert_eq!(v(HashKey::Header("x-user".into())), Some(b"alice".to_vec()));
        assert_eq!(v(HashKey::Header("x-none".into())), None);
        assert_eq!(v(HashKey::Cookie("sid".into())), Some(b"s3".to_vec()));
        assert_eq!(v(HashKey::Cookie("c".into())), Some(b"2".to_vec()));
        assert_eq!(v(HashKey::Cookie("s".into())), None);
        assert_eq!(v(HashKey::Query("user".into())), Some(b"42".to_vec()));
        assert_eq!(v(HashKey::Query("y".into())), None);
        assert_eq!(v(HashKey::Query("z".into())), None);
        assert_eq!(v(HashKey::Path), Some(b"/a/b".to_vec()));
    }

    #[test]
    fn hashes_are_stable_across_processes() {
        // Pinned: a change here remaps every user of every `hash` app on upgrade.
        assert_eq!(ring::hash(b"alice"), 3_801_284_110_789_125_021);
        assert_ne!(ring::hash(b"alice"), ring::hash(b"bob"));
        assert_eq!(
            ip_hash("::ffff:10.0.0.1".parse().unwrap()),
            ip_hash("10.0.0.1".parse().unwrap())
        );
    }
}
