//! Tests of the data-plane keys: `[gateway]` timeouts, retries, circuit breaker, error page,
//! compression, access log and threads; `protocol` and `error_page_503` per app; route overrides.

use std::path::Path;
use std::time::Duration;

use crate::{parse, AccessLogTarget, Config, ConfigErrors, Protocol, RetryOn};

fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse(text, "herd.toml", dir)
}

const APP: &str = "[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:7001\"]\n";

#[test]
fn defaults_match_the_docs() {
    let cfg = parse_in(Path::new("/base"), APP).unwrap();
    let d = &cfg.gateway.data_plane;
    assert_eq!(d.idle_timeout, Duration::from_secs(75));
    assert_eq!(d.idle_release, Some(Duration::from_millis(50)));
    assert_eq!(d.total_timeout, None);
    assert_eq!(d.retries, 3);
    assert_eq!(d.retry_on, RetryOn::default());
    assert!((d.retry_budget - 0.2).abs() < f64::EPSILON);
    assert_eq!(d.retry_budget_min_per_s, 10);
    assert_eq!(
        (
            d.circuit.consecutive,
            d.circuit.min_requests,
            d.circuit.half_open
        ),
        (5, 20, 1)
    );
    assert_eq!(d.circuit.open, Duration::from_secs(10));
    assert!(!d.compress.enabled && d.compress.min_size == 1024);
    assert!(d.compress.types.contains(&"text/*".to_owned()));
    assert_eq!(d.access_log, None);
    assert_eq!(d.threads, None);
    assert_eq!(cfg.apps[0].protocol, Protocol::Http1);
}

#[test]
fn idle_release_can_be_off() {
    let cfg = parse_in(
        Path::new("/base"),
        &format!("[gateway]\nidle_release = \"off\"\n{APP}"),
    )
    .unwrap();
    assert_eq!(cfg.gateway.data_plane.idle_release, None);
}

#[test]
fn every_key_is_read() {
    let dir = std::env::temp_dir().join(format!("herd-dp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("busy.html"), "<h1>busy</h1>").unwrap();
    std::fs::write(dir.join("api.json"), "{\"error\":\"busy\"}").unwrap();
    let cfg = parse_in(
        &dir,
        r#"[gateway]
idle_timeout = "5s"
idle_release = "200ms"
total_timeout = "30s"
retries = 2
retry_on = ["connect-failure", "503", "reset", "timeout"]
retry_budget = 0.1
retry_budget_min_per_s = 0
circuit_consecutive = 3
circuit_error_rate = 0.25
circuit_min_requests = 8
circuit_window = "5s"
circuit_open = "2s"
circuit_half_open = 2
error_page_503 = "busy.html"
compress = true
compress_types = ["text/html", "Application/JSON", "application/*+json", "*/*"]
compress_min_size = "2KiB"
access_log = "access.log"
access_log_format = "json"
threads = 4
[[app]]
name = "web"
servers = ["127.0.0.1:7001"]
protocol = "h2c"
error_page_503 = "api.json"
[[route]]
path_prefix = "/api"
app = "web"
retries = 1
retry_on = ["504"]
total_timeout = "off"
compress = false
[[route]]
app = "web"
retries = true
"#,
    )
    .unwrap();
    let d = &cfg.gateway.data_plane;
    assert_eq!(d.idle_timeout, Duration::from_secs(5));
    assert_eq!(d.idle_release, Some(Duration::from_millis(200)));
    assert_eq!(d.total_timeout, Some(Duration::from_secs(30)));
    assert_eq!(d.retry_budget_min_per_s, 0);
    assert_eq!(d.retries, 2);
    assert!(d.retry_on.status_503 && d.retry_on.reset && d.retry_on.timeout);
    assert!(!d.retry_on.status_502 && !d.retry_on.status_504);
    assert_eq!(d.circuit.consecutive, 3);
    assert_eq!(d.circuit.window, Duration::from_secs(5));
    assert_eq!(d.circuit.half_open, 2);
    let page = d.error_page_503.as_ref().unwrap();
    assert_eq!(page.body, b"<h1>busy</h1>");
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert_eq!(
        d.compress.types,
        ["text/html", "application/json", "application/*+json", "*"]
    );
    assert_eq!(d.compress.min_size, 2048);
    assert_eq!(
        d.access_log.as_ref().unwrap().target,
        AccessLogTarget::File(dir.join("access.log"))
    );
    assert_eq!(d.threads, Some(4));
    assert_eq!(cfg.apps[0].protocol, Protocol::H2c);
    assert_eq!(
        cfg.apps[0].error_page_503.as_ref().unwrap().content_type,
        "application/json"
    );
    let r = &cfg.routes[0];
    assert_eq!(r.retries, Some(1));
    assert!(r.data_plane.retry_on.unwrap().status_504);
    assert_eq!(
        r.data_plane.total_timeout,
        Some(None),
        "\"off\" turns it off"
    );
    assert_eq!(cfg.routes[1].data_plane.total_timeout, None, "not given");
    assert_eq!(r.data_plane.compress, Some(false));
    assert_eq!(cfg.routes[1].retries, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_values_are_located_errors() {
    let cases = [
        ("[gateway]\nretry_on = [\"500\"]\n", 2, "gateway.retry_on"),
        ("[gateway]\nretry_budget = 1.5\n", 2, "gateway.retry_budget"),
        (
            "[gateway]\nretry_budget_min_per_s = -1\n",
            2,
            "gateway.retry_budget_min_per_s",
        ),
        ("[gateway]\nthreads = 0\n", 2, "gateway.threads"),
        ("[gateway]\nthreads = 5000\n", 2, "gateway.threads"),
        (
            "[gateway]\nidle_release = \"soon\"\n",
            2,
            "gateway.idle_release",
        ),
        (
            "[gateway]\nidle_timeout = \"0s\"\n",
            2,
            "gateway.idle_timeout",
        ),
        (
            "[gateway]\ncircuit_half_open = 0\n",
            2,
            "gateway.circuit_half_open",
        ),
        ("[gateway]\nretry_on = [\"500\"]\n", 2, "gateway.retry_on"),
        (
            "[gateway]\ncompress_types = [\"json\"]\n",
            2,
            "gateway.compress_types",
        ),
        (
            "[gateway]\ncompress_types = [\"application/*json\"]\n",
            2,
            "gateway.compress_types",
        ),
        (
            "[gateway]\ncompress_types = [\"*/json\"]\n",
            2,
            "gateway.compress_types",
        ),
        (
            "[gateway]\naccess_log_format = \"clf\"\n",
            2,
            "gateway.access_log_format",
        ),
        (
            "[gateway]\nerror_page_503 = \"missing.html\"\n",
            2,
            "gateway.error_page_503",
        ),
        (
            "[gateway]\nerror_page_503 = \"page.bin\"\n",
            2,
            "gateway.error_page_503",
        ),
    ];
    for (gateway, line, key) in cases {
        let errs = parse_in(Path::new("/nonexistent"), &format!("{gateway}{APP}")).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{gateway}: {errs}");
        let e = &errs.0[0];
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.col >= 1 && e.hint.is_some(), "{e}");
    }
    let errs = parse_in(
        Path::new("/base"),
        &format!("{APP}protocol = \"h3\"\n[[route]]\napp = \"web\"\nretries = -1\n"),
    )
    .unwrap_err();
    let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["app[0].protocol", "route[0].retries"], "{errs}");
    assert!(errs.to_string().contains("missing.html") || !errs.to_string().is_empty());
}

#[test]
fn haproxy_retry_on_names_are_accepted() {
    let text = "[gateway]\nretry_on = [\"conn-failure\", \"empty-response\", \"response-timeout\"]\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:7001\"]\n";
    let cfg = crate::parse(text, "t.toml", std::path::Path::new(".")).unwrap();
    let on = cfg.gateway.data_plane.retry_on;
    assert!(on.reset && on.timeout && !on.status_503);
}
