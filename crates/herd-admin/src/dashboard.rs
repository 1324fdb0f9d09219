//! The operator dashboard: `GET /` and `GET /assets/{file}` of the admin listener.
//!
//! The page is static (HTML, one script, one stylesheet, an icon) and embedded in the binary,
//! so running herd needs no build step and no files next to it. It carries no data: the script
//! reads the admin API like any client (with the Bearer token the operator types in, when herd
//! has one), which is why these two routes are the only ones `auth` lets through without a
//! token.
//!
//! Caching: the page is `no-cache` (revalidated each load through its `ETag`); it names each
//! asset with `?v=<hash of its content>`, and an asset requested with its current hash is
//! `immutable` for a year. A new binary with changed assets gives new URLs, so a browser never
//! mixes an old script with a new page.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// Scripts and styles only from this origin, no inline code, no `eval`; API calls only to this
/// origin; not framable.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// Hex FNV-1a of `body`: the `?v=` of its URL and its `ETag`.
    version: &'static str,
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {{
        const BODY: &str = include_str!(concat!("../assets/", $name));
        const HEX: [u8; 16] = hex(fnv1a(BODY.as_bytes()));
        const VERSION: &str = match std::str::from_utf8(&HEX) {
            Ok(s) => s,
            Err(_) => panic!("hex digits are ASCII"),
        };
        Asset {
            name: $name,
            content_type: $ct,
            body: BODY,
            version: VERSION,
        }
    }};
}

static ASSETS: [Asset; 3] = [
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

const INDEX_TEMPLATE: &str = include_str!("../assets/index.html");

/// The page with each `{{v:NAME}}` replaced by that asset's version, and its `ETag`.
static INDEX: LazyLock<(String, String)> = LazyLock::new(|| {
    let mut html = INDEX_TEMPLATE.to_owned();
    for a in &ASSETS {
        html = html.replace(&format!("{{{{v:{}}}}}", a.name), a.version);
    }
    let etag = format!(
        "\"{}\"",
        std::str::from_utf8(&hex(fnv1a(html.as_bytes()))).unwrap_or("0")
    );
    (html, etag)
});

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const fn hex(mut v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let mut i = 16;
    while i > 0 {
        i -= 1;
        out[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
    out
}

/// The dashboard's routes (stateless; merged into the admin router).
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

/// Headers every dashboard answer carries.
fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn not_modified(req: &HeaderMap, etag: &str) -> bool {
    req.get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn answer(
    req: &HeaderMap,
    content_type: &'static str,
    cache: &'static str,
    etag: &str,
    body: &'static str,
) -> Response {
    let mut h = HeaderMap::new();
    security_headers(&mut h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if not_modified(req, etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (h, body).into_response()
}

async fn index(req: HeaderMap) -> Response {
    let (html, etag) = &*INDEX;
    answer(
        &req,
        "text/html; charset=utf-8",
        "no-cache",
        etag,
        html.as_str(),
    )
}

#[derive(Deserialize)]
struct AssetQuery {
    v: Option<String>,
}

async fn asset(
    Path(file): Path<String>,
    axum::extract::Query(q): axum::extract::Query<AssetQuery>,
    req: HeaderMap,
) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == file) else {
        let mut h = HeaderMap::new();
        security_headers(&mut h);
        return (
            StatusCode::NOT_FOUND,
            h,
            axum::Json(serde_json::json!({
                "error": format!("no dashboard asset named {file:?}"),
                "hint": format!("one of: {}", ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")),
            })),
        )
            .into_response();
    };
    // Only the URL the page names (the current content's hash) may be cached for good.
    let cache = if q.v.as_deref() == Some(a.version) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    answer(
        &req,
        a.content_type,
        cache,
        &format!("\"{}\"", a.version),
        a.body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_by_version_and_has_no_inline_code() {
        let (html, etag) = &*INDEX;
        assert!(!html.contains("{{"), "unreplaced placeholder in index.html");
        for a in &ASSETS {
            assert_eq!(a.version.len(), 16);
            assert!(
                html.contains(&format!("/assets/{}?v={}", a.name, a.version)),
                "{} not referenced",
                a.name
            );
        }
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        // The CSP allows no inline script, style or event handler: keep the page free of them.
        for bad in [
            "<script>",
            "<style",
            " style=",
            " onclick=",
            " onload=",
            "javascript:",
        ] {
            assert!(!html.contains(bad), "index.html contains {bad:?}");
        }
    }

    #[test]
    fn etags_match_lists_and_wildcards() {
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, "\"a\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"b\", \"a\""),
        );
        assert!(not_modified(&h, "\"a\""));
        assert!(!not_modified(&h, "\"c\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, "\"c\""));
    }

    #[test]
    fn fnv1a_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(&hex(0xaf63_dc4c_8601_ec8c), b"af63dc4c8601ec8c");
    }
}
