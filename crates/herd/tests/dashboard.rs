//! The operator dashboard (`GET /` of the admin listener), for real: herd with demo-app
//! instances, and headless Chromium driven by `tests/browser/dashboard.mjs` (playwright-core on
//! Debian's `/usr/bin/chromium`). The page must load without console errors, show the apps and
//! instance ids, and reflect a scale made with its Scale button; with a token configured it must
//! ask for it. Screenshots are kept in `target/test-artifacts/`.
//!
//! Needs node, chromium and `tests/browser/node_modules`: `scripts/test.sh` installs them. When
//! they are missing these tests fail (saying so) rather than skip.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL_HINT: &str =
    "run scripts/test.sh once: it installs Debian's chromium and `npm ci --prefix tests/browser`";

/// One browser at a time: two Chromiums and two herds on a 2-core machine make timings flaky.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Fails (never skips) when the browser toolchain is missing.
fn require_browser_tools() {
    let node = std::process::Command::new("node").arg("--version").output();
    let version = match node {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => panic!("`node` is not installed or does not run; {INSTALL_HINT}"),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "node {version} is too old for playwright-core (20 or later); {INSTALL_HINT}"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing; {INSTALL_HINT}"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/browser/node_modules/playwright-core is missing; {INSTALL_HINT}"
    );
}

/// Runs `node tests/browser/dashboard.mjs <admin> <shot> [token]`; panics with its output on
/// failure.
async fn run_browser(herd: &Herd, shot: &Path, token: Option<&str>, range: &str) -> String {
    let _ = std::fs::remove_file(shot);
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join("dashboard.mjs"))
        .arg(herd.admin_url(""))
        .arg(shot)
        .current_dir(browser_dir())
        .env("HERD_DASHBOARD_RANGE", range)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.arg(t);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within 180 s"))
        .expect("failed to run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test failed ({}); screenshot (if any): {}\n{text}\nherd log:\n{}",
        out.status,
        shot.display(),
        herd.log()
    );
    let png =
        std::fs::read(shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        shot.display(),
        png.len()
    );
    text
}

/// A plain HTTP/1.1 GET returning (status, lower-cased headers, body), for header checks.
fn raw_get(port: u16, path: &str, extra: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn web(instances: u32, extra: &str) -> String {
    demo_app(
        "web",
        instances,
        &format!(
            "kill_timeout = \"2s\"\ndrain_timeout = \"3s\"\n[app.health]\npath = \"/health\"\n\
             interval = \"500ms\"\nfastinter = \"100ms\"\nrise = 1\nfall = 2\n{extra}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_fleet_and_reflects_a_scale_in_chromium() {
    require_browser_tools();
    let _one = BROWSER.lock().await;
    let herd = Herd::start(
        &(base_config("")
            + &web(
                2,
                "[app.scaling]\nmin = 2\nmax = 5\ntarget = { concurrency = 10 }",
            )),
    );
    herd.wait_ready("web", 2).await;
    // A little traffic, so the charts have something to draw.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(
        herd.url("/sleep?ms=15"),
        2,
        Duration::from_millis(40),
        Arc::clone(&stop),
    );

    let shot = artifacts_dir().join("dashboard.png");
    let out = run_browser(&herd, &shot, None, "").await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(out.contains("web-3 appeared"), "{out}");
    herd.wait_ready("web", 3).await;
    println!("{out}\nscreenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_public_but_its_data_needs_the_token() {
    require_browser_tools();
    let _one = BROWSER.lock().await;
    let token = "dash-s3cret-0123456";
    let herd = Herd::start(&(base_config(&format!("token = \"{token}\"")) + &web(2, "")));
    wait_ready_with_token(&herd, "web", 2, token).await;

    // The page and its assets: no token, the right types, a strict CSP, cacheable by version.
    let (code, h, html) = raw_get(herd.admin, "/", "");
    assert_eq!(code, 200, "{html}");
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    let csp = header(&h, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    let etag = header(&h, "etag").to_owned();
    let (code, _, _) = raw_get(herd.admin, "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(code, 304);
    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let marker = format!("/assets/{file}?v=");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("{file} not in the page"));
        let url = &html[at..at + marker.len() + 16];
        let (code, h, body) = raw_get(herd.admin, url, "");
        assert_eq!(code, 200, "{url}");
        assert_eq!(header(&h, "content-type"), ctype, "{url}");
        assert!(
            header(&h, "cache-control").contains("immutable"),
            "{url}: {h:?}"
        );
        assert!(!body.is_empty());
        let (code, h, _) = raw_get(herd.admin, &format!("/assets/{file}"), "");
        assert_eq!(code, 200);
        assert_eq!(
            header(&h, "cache-control"),
            "no-cache",
            "unversioned asset URL"
        );
    }
    let (code, _, body) = raw_get(herd.admin, "/assets/nope.js", "");
    assert_eq!(code, 404, "{body}");
    // A probe's /health gets the verdict only; everything else still needs the token.
    let (_, _, body) = raw_get(herd.admin, "/health", "");
    assert!(
        body.contains("\"status\"") && !body.contains("\"apps\""),
        "{body}"
    );
    for path in ["/cluster/status", "/metrics", "/telemetry", "/index.html"] {
        let (code, _, body) = raw_get(herd.admin, path, "");
        assert_eq!(code, 401, "{path} without a token: {body}");
    }
    let (code, _, _) = raw_get(
        herd.admin,
        "/cluster/status",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(code, 200);

    // The browser: the token form, then the same checks as without a token (and the 1-minute
    // chart window, for a screenshot where the test's few seconds of traffic are visible).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(
        herd.url("/sleep?ms=15"),
        2,
        Duration::from_millis(40),
        Arc::clone(&stop),
    );
    let shot = artifacts_dir().join("dashboard-token.png");
    let out = run_browser(&herd, &shot, Some(token), "1m").await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(out.contains("chart window: 1m"), "{out}");
    assert!(out.contains("token accepted"), "{out}");
    assert!(out.contains("web-3 appeared"), "{out}");
}

/// `Herd::wait_ready` reads `/cluster/status` without a token; this one sends it.
async fn wait_ready_with_token(herd: &Herd, app: &str, n: usize, token: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, body) = raw_get(
            herd.admin,
            "/cluster/status",
            &format!("Authorization: Bearer {token}\r\n"),
        );
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let ready = v["apps"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == app))
                .and_then(|a| a["instances"].as_array())
                .map_or(0, |i| i.iter().filter(|x| x["state"] == "ready").count());
            if ready == n {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} ready instances of {app} never showed; last: {code} {body}\n{}",
            herd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
