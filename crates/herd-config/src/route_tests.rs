//! End-to-end tests of `[[route]]`: every matcher and override, and each error with its line,
//! key and hint.

use std::path::Path;
use std::time::Duration;

use crate::{parse, Config, ConfigError, HeaderMatch, HeaderRewrite, Route};

/// Apps `web` (line 1-3) and `api` (lines 4-6); routes start on line 7.
const APPS: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n\
                    [[app]]\nname = \"api\"\nservers = [\"127.0.0.1:7001\"]\n";

fn ok(text: &str) -> Config {
    match parse(&format!("{APPS}{text}"), "herd.toml", Path::new("/base")) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("expected a valid config, got:\n{errs}"),
    }
}

/// The single error in `text`, checked for its line, key and hint.
#[track_caller]
fn one(text: &str, line: usize, key: &str) -> ConfigError {
    let errs = match parse(&format!("{APPS}{text}"), "herd.toml", Path::new("/base")) {
        Ok(cfg) => panic!("expected errors, got {cfg:#?}"),
        Err(errs) => errs.0,
    };
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!((err.line, err.key.as_str()), (line, key), "{err}");
    assert!(err.col >= 1 && err.hint.is_some(), "{err}");
    err
}

#[test]
fn every_key() {
    let cfg = ok(r#"
[[route]]
name = "api-v2"
host = "*.Example.com"
path_prefix = "/api/"
path_regex = "^/api/v[0-9]+/"
methods = ["get", "POST"]
header = { name = "X-Canary", value = "1" }
websocket = true
strip_prefix = "/api/"
request_headers = { add = { "X-From" = "herd" }, remove = ["X-Debug"] }
response_headers = { add = { "X-Served-By" = "herd" }, remove = ["Server"] }
response_timeout = "5s"
connect_timeout = "250ms"
retries = false
app = "api"

[[route]]
path = "/health"
header = { name = "x-probe" }
app = "web"
"#);
    assert_eq!(
        cfg.routes[0],
        Route {
            name: Some("api-v2".into()),
            host: Some("*.example.com".into()),
            path_prefix: Some("/api/".into()),
            path: None,
            path_regex: Some("^/api/v[0-9]+/".into()),
            methods: vec!["GET".into(), "POST".into()],
            header: Some(HeaderMatch {
                name: "x-canary".into(),
                value: Some("1".into())
            }),
            websocket: true,
            app: 1,
            request_headers: HeaderRewrite {
                add: vec![("x-from".into(), "herd".into())],
                remove: vec!["x-debug".into()],
            },
            response_headers: HeaderRewrite {
                add: vec![("x-served-by".into(), "herd".into())],
                remove: vec!["server".into()],
            },
            strip_prefix: Some("/api".into()),
            response_timeout: Some(Duration::from_secs(5)),
            connect_timeout: Some(Duration::from_millis(250)),
            retries: Some(0),
            data_plane: crate::model::RouteDataPlane::default(),
            overrides: crate::RouteBalance::default(),
        }
    );
    let second = &cfg.routes[1];
    assert_eq!(second.path.as_deref(), Some("/health"));
    assert_eq!(second.header.as_ref().unwrap().value, None);
    assert!(second.retries.is_none() && second.name.is_none() && second.response_timeout.is_none());
}

#[test]
fn invalid_regex_names_line_column_and_the_regex_error() {
    let err = one(
        "[[route]]\napp = \"web\"\npath_regex = \"^/v[0-9+/\"\n",
        9,
        "route[0].path_regex",
    );
    assert_eq!(err.col, 14);
    assert!(
        err.message.starts_with("invalid regular expression"),
        "{err}"
    );
    assert!(err.message.contains("unclosed character class"), "{err}");
}

#[test]
fn wildcard_hosts_are_one_leading_label() {
    for bad in ["*example.com", "a.*.com", "*.", "*.*.com", "**.a.com"] {
        let err = one(
            &format!("[[route]]\nhost = \"{bad}\"\napp = \"web\"\n"),
            8,
            "route[0].host",
        );
        assert!(err.message.contains("wildcard"), "{err}");
    }
}

#[test]
fn nginx_host_forms_herd_does_not_take_are_named() {
    let err = one(
        "[[route]]\nhost = \".example.com\"\napp = \"web\"\n",
        8,
        "route[0].host",
    );
    assert!(err.message.contains("*.example.com"), "{err}");
    let err = one(
        "[[route]]\nhost = \"~^www\\\\d+\\\\.example\\\\.net$\"\napp = \"web\"\n",
        8,
        "route[0].host",
    );
    assert!(err.message.contains("regular expression"), "{err}");
}

#[test]
fn paths_no_normalised_request_can_match_are_refused() {
    let err = one(
        "[[route]]\npath_prefix = \"/%7Euser/\"\napp = \"web\"\n",
        8,
        "route[0].path_prefix",
    );
    assert!(
        err.hint.as_deref().unwrap().contains("\"/~user/\""),
        "{err}"
    );
    let err = one(
        "[[route]]\npath_prefix = \"/static//img\"\napp = \"web\"\n",
        8,
        "route[0].path_prefix",
    );
    assert!(
        err.hint
            .as_deref()
            .unwrap()
            .contains("merge_slashes = false"),
        "{err}"
    );
    ok("[gateway]\nmerge_slashes = false\n[[route]]\npath_prefix = \"/static//img\"\napp = \"web\"\n");
    let err = one(
        "[[route]]\npath = \"/a/../b\"\napp = \"web\"\n",
        8,
        "route[0].path",
    );
    assert!(err.hint.as_deref().unwrap().contains("\"/b\""), "{err}");
    one(
        "[[route]]\npath = \"/../b\"\napp = \"web\"\n",
        8,
        "route[0].path",
    );
    one(
        "[[rate_limit]]\nname = \"r\"\nkey = \"ip\"\nrate = \"1r/s\"\npath_prefix = \"/a/./b\"\n",
        11,
        "rate_limit[0].path_prefix",
    );
    // Routes read %2F as '/'.
    let err = one(
        "[[route]]\npath_prefix = \"/api%2Fadmin\"\napp = \"web\"\n",
        8,
        "route[0].path_prefix",
    );
    assert_eq!(
        err.hint.as_deref(),
        Some("write path_prefix = \"/api/admin\""),
        "{err}"
    );
    // Prefixes that requests can still start with.
    ok("[[route]]\npath_prefix = \"/.well-known/\"\napp = \"web\"\n[[route]]\npath_prefix = \"/a%20\"\napp = \"web\"\n");
}

#[test]
fn matcher_and_override_errors() {
    let route = |body: &str| format!("[[route]]\napp = \"web\"\n{body}\n");
    one(&route("path = \"health\""), 9, "route[0].path");
    one(&route("path = \"/a?b=1\""), 9, "route[0].path");
    one(&route("methods = \"GET\""), 9, "route[0].methods");
    one(&route("methods = []"), 9, "route[0].methods");
    one(&route("methods = [\"G T\"]"), 9, "route[0].methods");
    one(
        &route("header = { value = \"1\" }"),
        9,
        "route[0].header.name",
    );
    one(
        &route("header = { name = \"X Y\" }"),
        9,
        "route[0].header.name",
    );
    one(
        &route("header = { name = \"x\", value = \"a\\nb\" }"),
        9,
        "route[0].header.value",
    );
    one(
        &route("request_headers = { add = { \"X-A\" = 1 } }"),
        9,
        "route[0].request_headers.add.X-A",
    );
    let err = one(
        &route("response_headers = { remove = [\"Content-Length\"] }"),
        9,
        "route[0].response_headers.remove",
    );
    assert!(err.message.contains("cannot be rewritten"), "{err}");
    one(
        &route("request_headers = { remove = [\"Host\"] }"),
        9,
        "route[0].request_headers.remove",
    );
    one(&route("strip_prefix = \"/\""), 9, "route[0].strip_prefix");
    one(
        &route("response_timeout = \"0s\""),
        9,
        "route[0].response_timeout",
    );
    one(
        &route("connect_timeout = \"soon\""),
        9,
        "route[0].connect_timeout",
    );
    one(&route("name = \"Bad Name\""), 9, "route[0].name");
    one(&route("name = \"route3\""), 9, "route[0].name");
    let err = one(
        "[[route]]\nname = \"x\"\npath = \"/x\"\napp = \"web\"\n[[route]]\nname = \"x\"\napp = \"api\"\n",
        12,
        "route[1].name",
    );
    assert!(err.hint.unwrap().contains("line 8"));
}

#[test]
fn unknown_keys_in_route_tables_are_rejected() {
    let errs = parse(
        &format!("{APPS}[[route]]\napp = \"web\"\nheader = {{ name = \"x\", val = \"1\" }}\n"),
        "herd.toml",
        Path::new("/base"),
    )
    .unwrap_err();
    assert!(errs.to_string().contains("val"), "{errs}");
}

#[test]
fn a_rate_limit_can_name_a_route() {
    let cfg = ok("[[route]]\nname = \"canary\"\napp = \"api\"\n\
                  [[rate_limit]]\nname = \"c\"\nkey = \"ip\"\nrate = \"1r/s\"\nroute = \"canary\"\n");
    assert_eq!(cfg.rate_limits[0].route.as_deref(), Some("canary"));
    let err = one(
        "[[route]]\nname = \"canary\"\napp = \"api\"\n\
         [[rate_limit]]\nname = \"c\"\nkey = \"ip\"\nrate = \"1r/s\"\nroute = \"canry\"\n",
        14,
        "rate_limit[0].route",
    );
    assert!(err.hint.unwrap().contains("did you mean \"canary\""));
}

#[test]
fn matchers_that_can_never_match_and_strips_that_never_apply_are_refused() {
    let route = |body: &str| format!("[[route]]\napp = \"web\"\n{body}\n");
    let e = one(
        &route("path_prefix = \"/api/\"\npath = \"/health\""),
        10,
        "route[0].path",
    );
    assert!(e.message.contains("can never match"), "{e}");
    let e = one(
        &route("path = \"/health\"\npath_regex = \"^/api\""),
        10,
        "route[0].path_regex",
    );
    assert!(e.message.contains("can never match"), "{e}");
    for (matcher, strip) in [
        ("path_prefix = \"/api/\"", "/v1"),
        ("path_prefix = \"/apix\"", "/api"),
        ("path = \"/health\"", "/healthz"),
        ("path = \"/apix/a\"", "/api"),
    ] {
        let e = one(
            &route(&format!("{matcher}\nstrip_prefix = \"{strip}\"")),
            10,
            "route[0].strip_prefix",
        );
        assert!(e.message.contains("never applies"), "{matcher}: {e}");
    }
    let e = one(&route("methods = [\"GETT\"]"), 9, "route[0].methods");
    assert_eq!(e.hint.as_deref(), Some("did you mean \"GET\"?"));
    // Each is reported, not only the first.
    let errs = parse(
        &format!(
            "{APPS}{}",
            route("methods = [\"GETT\"]\npath_prefix = \"/api/\"\nstrip_prefix = \"/v1\"")
        ),
        "herd.toml",
        Path::new("/base"),
    )
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["route[0].methods", "route[0].strip_prefix"]);

    // What is consistent stays accepted: an exact path under its prefix, a strip that
    // applies to some or all matched paths, extension methods.
    let cfg = ok(&route(
        "path_prefix = \"/api\"\npath = \"/api/v1/users\"\npath_regex = \"users$\"\nstrip_prefix = \"/api/v1\"",
    ));
    assert_eq!(cfg.routes[0].strip_prefix.as_deref(), Some("/api/v1"));
    ok(&route("path_prefix = \"/a\"\nstrip_prefix = \"/api\""));
    ok(&route("path_prefix = \"/api/\"\nstrip_prefix = \"/api/\""));
    ok(&route("methods = [\"PURGE\", \"PROPFIND\", \"mkcol\"]"));
}

#[test]
fn a_route_after_a_catch_all_is_refused() {
    let text = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n[[route]]\napp = \"web\"\n[[route]]\npath_prefix = \"/api\"\napp = \"web\"\n";
    let errs = match crate::parse(text, "herd.toml", std::path::Path::new("/base")) {
        Ok(_) => panic!("accepted a route after a catch-all"),
        Err(e) => e.0,
    };
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].key, "route[1]");
    assert!(
        errs[0]
            .message
            .contains("route[0] above it matches every request"),
        "{}",
        errs[0]
    );
    // A route an earlier one takes every request of (nginx's longest prefix, herd's order).
    let base = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n";
    let shadowed = |routes: &str| -> Vec<String> {
        match crate::parse(
            &format!("{base}{routes}"),
            "herd.toml",
            std::path::Path::new("/base"),
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| e.key).collect(),
        }
    };
    let r = |body: &str| format!("[[route]]\n{body}\napp = \"web\"\n");
    assert_eq!(
        shadowed(
            &(r("path_prefix = \"/api\"")
                + &r("path_prefix = \"/api/v1\"")
                + &r("path = \"/api/x\""))
        ),
        ["route[1]", "route[2]"]
    );
    assert_eq!(
        shadowed(
            &(r("host = \"a.example\"\npath_prefix = \"/\"")
                + &r("host = \"a.example\"\npath_prefix = \"/x\"\nmethods = [\"POST\"]"))
        ),
        ["route[1]"]
    );
    // Narrower first, or conditions the earlier route has and the later lacks: fine.
    for fine in [
        r("path_prefix = \"/api/v1\"") + &r("path_prefix = \"/api\""),
        r("host = \"a.example\"\npath_prefix = \"/api\"") + &r("path_prefix = \"/api/v1\""),
        r("methods = [\"GET\"]\npath_prefix = \"/api\"") + &r("path_prefix = \"/api/v1\""),
        r("path_regex = \"^/api\"") + &r("path_prefix = \"/api/v1\""),
        r("path_prefix = \"/api\"\nwebsocket = true") + &r("path_prefix = \"/api/v1\""),
    ] {
        assert_eq!(shadowed(&fine), Vec::<String>::new(), "{fine}");
    }
    // The catch-all last is the usual layout.
    let ok = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n[[route]]\npath_prefix = \"/api\"\napp = \"web\"\n[[route]]\napp = \"web\"\n";
    crate::parse(ok, "herd.toml", std::path::Path::new("/base")).unwrap();
}

#[test]
fn worker_apps_have_no_checks_and_take_no_routes() {
    let base = "[[app]]\nname = \"web\"\ncommand = [\"./web\"]\n[[app]]\nname = \"jobs\"\ncommand = [\"./jobs\"]\nworker = true\n";
    let cfg = parse(base, "herd.toml", Path::new("/base")).unwrap();
    assert!(!cfg.apps[0].is_worker());
    assert!(cfg.apps[1].is_worker());
    let e = parse(
        &format!("{base}[[route]]\npath_prefix = \"/jobs\"\napp = \"jobs\"\n"),
        "herd.toml",
        Path::new("/base"),
    )
    .unwrap_err();
    assert!(
        e.0.iter()
            .any(|e| e.key == "route[0].app" && e.message.contains("worker app")),
        "{e}"
    );
    let e = parse(
        &format!("{base}[app.health]\npath = \"/health\"\n"),
        "herd.toml",
        Path::new("/base"),
    )
    .unwrap_err();
    assert!(e.0.iter().any(|e| e.key == "app[1].health"), "{e}");
    let e = parse(
        "[[app]]\nname = \"s\"\nservers = [\"127.0.0.1:80\"]\nworker = true\n",
        "herd.toml",
        Path::new("/base"),
    )
    .unwrap_err();
    assert!(e.0.iter().any(|e| e.key == "app[0].worker"), "{e}");
}
