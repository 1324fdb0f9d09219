//! Random identifiers and tokens: 128 bits from the OS-seeded CSPRNG, base64url without padding
//! (22 characters), so they are safe in URLs, cookies and store keys.

use rand::RngCore as _;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh 128-bit random id.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    encode(&bytes)
}

/// base64url without padding.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

/// Whether `s` could be an id from [`random_id`] (cheap check before touching the store).
/// A session id: base64url, from 22 characters (128 bits, the generated ids) to 128 (ids
/// that a caller made, as express-session's 32-character ones).
pub(crate) fn looks_like_id(s: &str) -> bool {
    (22..=128).contains(&s.len()) && s.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 22);
        assert!(looks_like_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!looks_like_id("short"));
        assert!(!looks_like_id("aaaaaaaaaaaaaaaaaaaaa/"));
    }

    #[test]
    fn encodes_like_base64url() {
        assert_eq!(encode(b"\xfb\xff"), "-_8");
        assert_eq!(encode(b"hello"), "aGVsbG8");
    }
}
