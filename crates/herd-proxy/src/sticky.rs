//! Sticky sessions: a signed cookie that pins a client to the instance that served it
//! (HAProxy `cookie SRV insert indirect httponly` with `option redispatch`).
//!
//! The value is `<instance id>.<expiry, unix seconds>.<HMAC-SHA256 of "id.expiry", hex>`. The
//! signature stops a client from choosing its instance (spreading load by hand, or aiming at
//! one), the expiry bounds how long a copied cookie pins. Verification is a pure function of
//! the value, the key and `now`. The key is random per herd process unless `[gateway]
//! sticky_secret` is set, which several herd nodes behind one address must share.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key cookies are signed with.
#[derive(Clone)]
pub(crate) struct StickyKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log the key.
        f.write_str("StickyKey(..)")
    }
}

/// A cookie that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// The instance id it names (`web-3`).
    pub(crate) id: String,
    /// Unix seconds after which it no longer pins.
    pub(crate) expires: u64,
}

impl StickyKey {
    /// From `[gateway] sticky_secret`, or 32 random bytes for this process.
    pub(crate) fn new(secret: Option<&str>) -> Self {
        let key = match secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        StickyKey { key }
    }

    fn mac(&self, id: &str, expires: u64) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The cookie value pinning `id` until `expires` (unix seconds).
    pub(crate) fn sign(&self, id: &str, expires: u64) -> String {
        let tag = self.mac(id, expires).finalize().into_bytes();
        let mut out = format!("{id}.{expires}.");
        for b in tag {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The instance a cookie value pins at `now` (unix seconds): `None` when it is malformed,
    /// forged (signature compared in constant time) or expired.
    pub(crate) fn verify(&self, value: &str, now: u64) -> Option<Pinned> {
        let mut parts = value.rsplitn(3, '.');
        let sig = parts.next()?;
        let expires: u64 = parts.next()?.parse().ok()?;
        let id = parts.next()?;
        if id.is_empty() || expires <= now || sig.len() != 64 {
            return None;
        }
        let sig = decode_hex(sig)?;
        self.mac(id, expires).verify_slice(&sig).ok()?;
        Some(Pinned {
            id: id.to_owned(),
            expires,
        })
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(*p.get(1)?)?))
        .collect()
}

/// The value of cookie `name` in the request's `Cookie` header(s), if any (quotes removed).
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    crate::cookie::find(headers, name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| v.trim_matches('"'))
}

pub(crate) use crate::cookie::strip;

/// Removes a response's `Set-Cookie` fields that set cookie `name` (the name is matched
/// exactly, as cookie names are case-sensitive), keeping every other `Set-Cookie`.
pub(crate) fn strip_set_cookie(headers: &mut HeaderMap, name: &str) {
    let sets = |v: &HeaderValue| {
        v.as_bytes()
            .split(|&b| b == b'=')
            .next()
            .is_some_and(|n| n.trim_ascii() == name.as_bytes())
    };
    if !headers.get_all(http::header::SET_COOKIE).iter().any(sets) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter(|v| !sets(v))
        .cloned()
        .collect();
    headers.remove(http::header::SET_COOKIE);
    for v in kept {
        headers.append(http::header::SET_COOKIE, v);
    }
}

/// `Set-Cookie` pinning the client for `ttl`: `Path=/; HttpOnly; SameSite=Lax; Max-Age=ttl`,
/// plus `Secure` when the client came over TLS (HAProxy `cookie ... secure`).
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    ttl: Duration,
    secure: bool,
) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        ttl.as_secs().max(1)
    ))
    .ok()
}

/// Whether a response should carry a fresh cookie: the request had none that pinned the
/// instance that served it, or it is past half its life (a client that keeps coming back stays
/// pinned beyond one `ttl`).
pub(crate) fn needs_cookie(pinned: Option<&Pinned>, served: &str, now: u64, ttl: Duration) -> bool {
    match pinned {
        Some(p) if p.id == served => p.expires.saturating_sub(now) < ttl.as_secs() / 2,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signs_and_verifies_until_expiry() {
        let k = StickyKey::new(Some("0123456789abcdef"));
        let v = k.sign("web-2", 1_000);
        assert!(v.starts_with("web-2.1000."));
        let p = k.verify(&v, 999).unwrap();
        assert_eq!(p.id, "web-2");
        assert_eq!(p.expires, 1_000);
        assert_eq!(k.verify(&v, 1_000), None, "expired at its expiry");
    }

    #[test]
    fn rejects_tampering_and_other_keys() {
        let k = StickyKey::new(Some("0123456789abcdef"));
        let v = k.sign("web-2", 1_000);
        // Another instance, a later expiry, or a flipped signature digit: all refused.
        assert_eq!(k.verify(&v.replacen("web-2", "web-3", 1), 0), None);
        assert_eq!(k.verify(&v.replacen(".1000.", ".9000.", 1), 0), None);
        let mut flipped = v.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify(std::str::from_utf8(&flipped).unwrap(), 0), None);
        assert_eq!(
            StickyKey::new(Some("another-secret-16")).verify(&v, 0),
            None
        );
        assert_eq!(StickyKey::new(None).verify(&v, 0), None);
        for junk in ["", "web-2", "web-2.1000", "web-2.x.00", ".1000.", "a.b.c.d"] {
            assert_eq!(k.verify(junk, 0), None, "{junk:?}");
        }
    }

    #[test]
    fn reads_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; HERD_SRV=x.1.ff"),
        );
        h.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "HERD_SRV"), Some("x.1.ff"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "HERD"), None);
    }

    #[test]
    fn an_apps_cookie_of_the_sticky_name_is_removed_and_the_others_kept() {
        let mut h = HeaderMap::new();
        for v in [
            "a=1; Path=/",
            "HERD_SRV=evil; Path=/",
            "herd_srv=other",
            "b=2",
        ] {
            h.append(http::header::SET_COOKIE, HeaderValue::from_static(v));
        }
        strip_set_cookie(&mut h, "HERD_SRV");
        let left: Vec<_> = h
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1; Path=/", "herd_srv=other", "b=2"]);
    }

    #[test]
    fn strips_only_the_sticky_cookie() {
        let strip_from = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(http::header::COOKIE, HeaderValue::from_str(v).unwrap());
            }
            strip(&mut h, "HERD_SRV");
            h.get_all(http::header::COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(strip_from(&["a=1; HERD_SRV=web-0.9.ab; b=2"]), ["a=1; b=2"]);
        assert!(strip_from(&["HERD_SRV=web-0.9.ab"]).is_empty());
        assert_eq!(strip_from(&["HERD_SRV=x", "sid=7"]), ["sid=7"]);
        // Untouched without it, a look-alike name included.
        assert_eq!(strip_from(&["HERD_SRVX=1;  a=2"]), ["HERD_SRVX=1;  a=2"]);
    }

    #[test]
    fn refreshes_past_half_life_or_when_moved() {
        let ttl = Duration::from_secs(100);
        let p = Pinned {
            id: "web-1".into(),
            expires: 200,
        };
        assert!(!needs_cookie(Some(&p), "web-1", 110, ttl));
        assert!(needs_cookie(Some(&p), "web-1", 160, ttl));
        assert!(needs_cookie(Some(&p), "web-2", 110, ttl));
        assert!(needs_cookie(None, "web-1", 110, ttl));
        let c = set_cookie("HERD_SRV", "v", ttl, false).unwrap();
        assert_eq!(c, "HERD_SRV=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=100");
        let c = set_cookie("HERD_SRV", "v", ttl, true).unwrap();
        assert_eq!(
            c,
            "HERD_SRV=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=100; Secure"
        );
    }

    proptest! {
        /// Any change to a signed value (one byte replaced) is refused, except by chance none.
        #[test]
        fn any_single_byte_change_is_refused(id in "[a-z][a-z0-9-]{0,20}", exp in 1u64..u64::MAX,
                                             pos in any::<prop::sample::Index>(), b in 0x21u8..0x7f) {
            let k = StickyKey::new(Some("proptest-secret-key"));
            let v = k.sign(&id, exp);
            prop_assert!(k.verify(&v, 0).is_some());
            let mut bytes = v.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != b);
            bytes[i] = b;
            let changed = String::from_utf8(bytes).unwrap();
            // A hex digit's case does not change the bytes it decodes to.
            prop_assume!(!changed.eq_ignore_ascii_case(&v));
            prop_assert_eq!(k.verify(&changed, 0), None);
        }
    }
}
