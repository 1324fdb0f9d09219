//! Lone UTF-16 surrogates in JSON bodies. JavaScript strings may hold half of a surrogate pair
//! (`'😀'.slice(0, 1)`), and `JSON.stringify` writes it as the escape `"\ud83d"`, which
//! `JSON.parse` reads back. Rust strings are UTF-8 and cannot hold one, so serde refuses the
//! whole body; an express-session store would then fail every save of that session. Each lone
//! surrogate escape becomes `\ufffd` (U+FFFD, the replacement character), as
//! `String.prototype.toWellFormed()` does; well-formed pairs and every other byte stay.

use std::borrow::Cow;

/// `body` with each lone surrogate escape replaced by `\ufffd`; borrowed when there is none.
pub(crate) fn lone_surrogates_replaced(body: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = first_lone(body) else {
        return Cow::Borrowed(body);
    };
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..first]);
    let mut i = first;
    while i < body.len() {
        match escape_at(body, i) {
            Some(Escape::Lone) => {
                out.extend_from_slice(br"\ufffd");
                i += 6;
            }
            Some(Escape::Other(len)) => {
                out.extend_from_slice(&body[i..i + len]);
                i += len;
            }
            None => {
                out.push(body[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

enum Escape {
    /// `\uD800`–`\uDFFF` not part of a high-low pair (6 bytes).
    Lone,
    /// Any other escape, a surrogate pair whole (12 bytes) included: its length.
    Other(usize),
}

/// Where the first lone surrogate escape is.
fn first_lone(body: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < body.len() {
        match escape_at(body, i) {
            Some(Escape::Lone) => return Some(i),
            Some(Escape::Other(len)) => i += len,
            None => i += 1,
        }
    }
    None
}

/// The escape starting at `i`, if `body[i]` is a backslash. A backslash can only appear inside
/// a JSON string, and `\\` is consumed whole, so an escaped backslash followed by `u` is never
/// taken for an escape. A malformed escape is left for the JSON parser to report.
fn escape_at(body: &[u8], i: usize) -> Option<Escape> {
    if body[i] != b'\\' {
        return None;
    }
    if body.get(i + 1) != Some(&b'u') {
        return Some(Escape::Other(2.min(body.len() - i)));
    }
    let Some(unit) = hex4(body, i + 2) else {
        return Some(Escape::Other(2));
    };
    match unit {
        0xD800..=0xDBFF => {
            let low = (body.get(i + 6) == Some(&b'\\') && body.get(i + 7) == Some(&b'u'))
                .then(|| hex4(body, i + 8))
                .flatten();
            match low {
                Some(0xDC00..=0xDFFF) => Some(Escape::Other(12)),
                _ => Some(Escape::Lone),
            }
        }
        0xDC00..=0xDFFF => Some(Escape::Lone),
        _ => Some(Escape::Other(6)),
    }
}

fn hex4(body: &[u8], at: usize) -> Option<u16> {
    let digits = body.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(s: &str) -> String {
        String::from_utf8(lone_surrogates_replaced(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn lone_halves_become_the_replacement_character() {
        assert_eq!(fixed(r#"{"t":"\ud83d"}"#), r#"{"t":"\ufffd"}"#);
        assert_eq!(fixed(r#"{"t":"a\uDE00b"}"#), r#"{"t":"a\ufffdb"}"#);
        assert_eq!(
            fixed(r#"{"t":"\ud83d\ud83d\ude00"}"#),
            r#"{"t":"\ufffd\ud83d\ude00"}"#
        );
        assert_eq!(fixed(r#"{"t":"\ud83d\n"}"#), r#"{"t":"\ufffd\n"}"#);
        assert_eq!(fixed(r#"{"t":"\ud83d"#), r#"{"t":"\ufffd"#);
        let v: serde_json::Value = serde_json::from_str(&fixed(r#"{"t":"x\ud800"}"#)).unwrap();
        assert_eq!(v["t"], "x\u{fffd}");
    }

    #[test]
    fn everything_else_is_left_alone() {
        for s in [
            r#"{"t":"\ud83d\ude00"}"#,
            r#"{"t":"\\ud83d"}"#,
            r#"{"t":"\u00e9\"\\"}"#,
            r#"{"t":"\uZZZZ"}"#,
            r#"{"t":"\ud83"}"#,
            "{\"t\":\"caf\u{e9}\"}",
            r"\",
        ] {
            assert!(
                matches!(lone_surrogates_replaced(s.as_bytes()), Cow::Borrowed(_)),
                "{s}"
            );
        }
    }
}
