//! Bearer tokens, as the admin and services APIs check them.

/// The credentials of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1), surrounding spaces are ignored.
#[must_use]
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares a presented credential `guess` with the `secret` in time that depends only on the
/// guess's length: neither where the two differ nor the secret's length shows (a token check
/// must not tell how much of a guess was right, nor how long the token is).
#[must_use]
pub fn constant_time_eq(guess: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return guess.is_empty();
    }
    let mut diff = usize::from(guess.len() != secret.len());
    for (i, x) in guess.iter().enumerate() {
        diff |= usize::from(x ^ secret[i % secret.len()]);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(
            !constant_time_eq(b"abcabc", b"abc"),
            "a repeat of the secret"
        );
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"a", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
