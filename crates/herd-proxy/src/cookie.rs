//! Reading and removing one cookie in a request's `Cookie` header(s), on bytes: a header with a
//! byte outside ASCII (which hyper accepts) or a space around `=` (which Node's and Python's
//! parsers accept) still yields its cookies, so no key, pin or strip is lost to the client's
//! spelling.

use http::{header, HeaderMap, HeaderValue};

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`), trimmed, if present
/// and not empty.
pub(crate) fn in_header<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name)
            .then(|| pair[eq + 1..].trim_ascii())
            .filter(|v| !v.is_empty())
    })
}

/// The value of cookie `name` in the request's `Cookie` header(s) (the first one found).
pub(crate) fn find<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|v| in_header(v.as_bytes(), name.as_bytes()))
}

/// Removes every `name=...` pair from the `Cookie` header(s); a header left with no pair goes.
/// Headers without the cookie are not touched (no allocation on that path).
pub(crate) fn strip(headers: &mut HeaderMap, name: &str) {
    let named = |pair: &[u8]| {
        pair.iter()
            .position(|b| *b == b'=')
            .is_some_and(|eq| pair[..eq].trim_ascii() == name.as_bytes())
    };
    let any = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b';').any(named));
    if !any {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let rest: Vec<&[u8]> = v
                .as_bytes()
                .split(|b| *b == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|pair| !pair.is_empty() && !named(pair))
                .collect();
            (!rest.is_empty()).then(|| HeaderValue::from_bytes(&rest.join(&b"; "[..])).ok())?
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn spaces_around_the_name_and_bytes_outside_ascii_do_not_hide_a_cookie() {
        let h = headers(&[b"session =abc"]);
        assert_eq!(find(&h, "session"), Some(&b"abc"[..]));
        let h = headers(&[b"session=abc; z=\x80"]);
        assert_eq!(find(&h, "session"), Some(&b"abc"[..]));
        let h = headers(&[b"a=1", b"session=  x ; b=2"]);
        assert_eq!(find(&h, "session"), Some(&b"x"[..]));
        assert_eq!(find(&h, "sess"), None);
        let h = headers(&[b"session="]);
        assert_eq!(find(&h, "session"), None);
    }

    #[test]
    fn strip_removes_every_spelling_and_keeps_the_rest() {
        let mut h = headers(&[b"a=1; HERD_SRV =x; z=\x80", b"HERD_SRV=y"]);
        strip(&mut h, "HERD_SRV");
        let left: Vec<&[u8]> = h
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(left, vec![&b"a=1; z=\x80"[..]]);
        let mut h = headers(&[b"a=1"]);
        strip(&mut h, "HERD_SRV");
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1");
    }
}
