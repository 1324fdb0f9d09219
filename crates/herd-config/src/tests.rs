//! End-to-end tests of `parse`/`load`: defaults, the example file, and every error case with
//! its line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{load, parse, Backends, Balance, Config, ConfigError, Instances};

const APP: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n";

fn ok(text: &str) -> Config {
    match parse(text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("expected a valid config, got:\n{errs}"),
    }
}

fn errs(text: &str) -> Vec<ConfigError> {
    match parse(text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => panic!("expected errors, got {cfg:#?}"),
        Err(errs) => errs.0,
    }
}

/// The single error in `text`, checked for its line and key.
#[track_caller]
fn one(text: &str, line: usize, key: &str) -> ConfigError {
    let errs = errs(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!((err.line, err.key.as_str()), (line, key), "{err}");
    assert_eq!(err.file, "herd.toml");
    assert!(err.col >= 1, "{err}");
    assert!(err.hint.is_some(), "every error has a hint: {err}");
    err
}

fn command(cfg: &Config, app: usize) -> &crate::Command {
    match &cfg.apps[app].backends {
        Backends::Command(c) => c,
        Backends::Servers(_) => panic!("app {app} is not a command app"),
    }
}

#[test]
fn defaults() {
    let cfg = ok(APP);
    assert_eq!(cfg.gateway.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(cfg.gateway.connect_timeout, Duration::from_secs(5));
    assert_eq!(cfg.gateway.response_timeout, Duration::from_secs(60));
    assert_eq!(cfg.gateway.pool_idle_timeout, Duration::from_secs(4));
    assert_eq!(cfg.gateway.pool_max_idle, 32);
    assert_eq!(cfg.gateway.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(cfg.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(cfg.admin.token, None);
    assert_eq!(cfg.logs.dir, PathBuf::from("/base/.herd/logs"));
    assert_eq!(cfg.logs.max_size, 10 * 1024 * 1024);
    assert_eq!(cfg.logs.max_files, 3);
    assert!(cfg.routes.is_empty());

    let app = &cfg.apps[0];
    assert_eq!(app.name, "web");
    assert_eq!(app.balance, Balance::RoundRobin);
    assert_eq!(app.max_fails, 1);
    assert_eq!(app.fail_timeout, Duration::from_secs(10));
    let h = &app.health;
    assert_eq!(h.path, None);
    assert_eq!(h.interval, Duration::from_secs(2));
    assert_eq!(h.fastinter, Duration::from_millis(250));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!((h.rise, h.fall), (2, 3));

    let c = command(&cfg, 0);
    assert_eq!(c.argv, ["./app"]);
    assert_eq!(c.cwd, PathBuf::from("/base"));
    assert!(c.env.is_empty());
    assert_eq!(c.instances, Instances::Count(1));
    assert_eq!(c.port_range, (20000, 20999));
    assert_eq!(c.max_memory, None);
    assert_eq!(c.kill_timeout, Duration::from_secs(5));
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.ready_timeout, Duration::from_secs(30));
    assert_eq!(c.min_uptime, Duration::from_secs(1));
    assert_eq!(c.max_restarts, 16);
    assert_eq!(c.restart_delay, Duration::from_millis(100));
    assert_eq!(c.max_restart_delay, Duration::from_secs(15));

    // The Default impls agree with what an empty section produces.
    let empty = ok(&format!("[gateway]\n[admin]\n[logs]\n{APP}[app.health]\n"));
    assert_eq!(empty, cfg);
    assert_eq!(cfg.gateway, crate::Gateway::default());
    assert_eq!(cfg.admin, crate::Admin::default());
    assert_eq!(cfg.apps[0].health, crate::Health::default());
}

#[test]
fn full_config() {
    let cfg = ok(r#"
[gateway]
listen = "0.0.0.0:80"
connect_timeout = "1s"
response_timeout = "2m"
pool_idle_timeout = "3s"
pool_max_idle = 0
shutdown_timeout = "1m30s"

[admin]
listen = "[::]:9999"
token = "secret-0123456789"

[logs]
dir = "/var/log/herd"
max_size = "1GiB"
max_files = 7

[[app]]
name = "api"
command = ["node", "server.js", "--flag"]
cwd = "services/api"
instances = "max"
port_range = "3000-3999"
balance = "least_conn"
env = { NODE_ENV = "production", WORKERS = 4, DEBUG = false }
max_memory = "512MiB"
kill_timeout = "2s"
drain_timeout = "10s"
ready_timeout = "1m"
min_uptime = "500ms"
max_restarts = 0
restart_delay = "1s"
max_restart_delay = "1m"
max_fails = 5
fail_timeout = "1s"
health = { path = "/healthz", interval = "1s", fastinter = "100ms", timeout = "500ms", rise = 1, fall = 1 }

[[app]]
name = "old_site"
servers = ["10.0.0.5:80", "[::1]:8080"]

[[route]]
host = "API.Example.com"
path_prefix = "/v1/"
app = "api"

[[route]]
app = "old_site"
"#);
    assert_eq!(cfg.gateway.listen, "0.0.0.0:80".parse().unwrap());
    assert_eq!(cfg.gateway.response_timeout, Duration::from_secs(120));
    assert_eq!(cfg.gateway.pool_max_idle, 0);
    assert_eq!(cfg.gateway.shutdown_timeout, Duration::from_secs(90));
    assert_eq!(cfg.admin.listen, "[::]:9999".parse().unwrap());
    assert_eq!(cfg.admin.token.as_deref(), Some("secret-0123456789"));
    assert_eq!(cfg.logs.dir, PathBuf::from("/var/log/herd"));
    assert_eq!(cfg.logs.max_size, 1 << 30);
    assert_eq!(cfg.logs.max_files, 7);

    let api = command(&cfg, 0);
    assert_eq!(api.argv, ["node", "server.js", "--flag"]);
    assert_eq!(api.cwd, PathBuf::from("/base/services/api"));
    assert_eq!(api.instances, Instances::Max);
    assert_eq!(api.port_range, (3000, 3999));
    assert_eq!(api.env["NODE_ENV"], "production");
    assert_eq!(api.env["WORKERS"], "4");
    assert_eq!(api.env["DEBUG"], "false");
    assert_eq!(api.max_memory, Some(512 << 20));
    assert_eq!(api.ready_timeout, Duration::from_secs(60));
    assert_eq!(api.min_uptime, Duration::from_millis(500));
    assert_eq!(api.max_restarts, 0);
    assert_eq!(cfg.apps[0].balance, Balance::LeastConn);
    assert_eq!(cfg.apps[0].max_fails, 5);
    assert_eq!(cfg.apps[0].health.path.as_deref(), Some("/healthz"));
    assert_eq!(cfg.apps[0].health.fastinter, Duration::from_millis(100));
    assert_eq!((cfg.apps[0].health.rise, cfg.apps[0].health.fall), (1, 1));

    assert_eq!(
        cfg.apps[1].backends,
        Backends::Servers(vec![
            "10.0.0.5:80".parse().unwrap(),
            "[::1]:8080".parse().unwrap()
        ])
    );
    assert_eq!(cfg.routes.len(), 2);
    assert_eq!(cfg.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(cfg.routes[0].path_prefix.as_deref(), Some("/v1/"));
    assert_eq!(cfg.routes[0].app, 0);
    assert_eq!(cfg.routes[1].host, None);
    assert_eq!(cfg.routes[1].app, 1);
}

#[test]
fn example_file_parses() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/herd.toml"
    ));
    let cfg = match load(path) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("examples/herd.toml is invalid:\n{errs}"),
    };
    let web = command(&cfg, 0);
    assert_eq!(web.argv, ["./target/release/demo-app"]);
    assert_eq!(web.instances, Instances::Count(3));
    assert_eq!(cfg.apps[0].health.path.as_deref(), Some("/health"));
    // Relative paths resolve against the file's directory.
    let dir = std::path::absolute(path.parent().unwrap()).unwrap();
    assert_eq!(web.cwd, crate::validate::resolve(&dir, Path::new("..")));
    assert_eq!(
        cfg.logs.dir,
        crate::validate::resolve(&dir, Path::new(".herd/logs"))
    );
    assert!(cfg.logs.dir.is_absolute());
    assert!(!cfg.routes.is_empty());
}

#[test]
fn load_reports_missing_file() {
    let err = load(Path::new("/nonexistent/herd.toml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].file, "/nonexistent/herd.toml");
    assert_eq!(err.0[0].line, 0);
    assert!(err.0[0].message.contains("cannot read"), "{err}");
    assert!(err.0[0].hint.is_some());
}

#[test]
fn relative_paths_resolve_against_base_dir() {
    let cfg = ok(&format!(
        "[logs]\ndir = \"logs\"\n{APP}cwd = \"./app/../app\"\n"
    ));
    assert_eq!(cfg.logs.dir, PathBuf::from("/base/logs"));
    assert_eq!(command(&cfg, 0).cwd, PathBuf::from("/base/app/../app"));
}

// ----- error cases: each asserts line and key ------------------------------------------------

#[test]
fn unknown_key_top_level() {
    let err = one(
        &format!("{APP}[gatway]\nlisten = \"127.0.0.1:1\"\n"),
        4,
        "gatway",
    );
    assert_eq!(err.message, "unknown key \"gatway\"");
    let hint = err.hint.unwrap();
    assert!(hint.contains("did you mean \"gateway\""), "{hint}");
    assert!(
        hint.contains("valid keys here: gateway, admin, logs, app, route"),
        "{hint}"
    );
}

#[test]
fn unknown_key_in_app() {
    let err = one(&format!("{APP}instance = 3\n"), 4, "app[0].instance");
    assert_eq!((err.line, err.col), (4, 1));
    assert!(err.hint.unwrap().contains("did you mean \"instances\""));
}

#[test]
fn every_unknown_key_then_the_rest_of_validation() {
    // A PM2-style app, a misspelt health key in an inline table, an unknown table, and an
    // unrelated bad value in another app: all reported, in file order, at their own positions.
    let text = format!(
        "{APP}max_memory_restart = \"300M\"\nhealth = {{ path = \"/\", intervall = \"2s\" }}\n[app.bogus]\nx = 1\n[[app]]\nname = \"b\"\nservers = [\"10.0.0.1:80\"]\nfail_timeout = \"5x\"\n[[route]]\napp = \"web\"\npath_prefix = \"/\"\nmethod = \"GET\"\n"
    );
    let all = errs(&text);
    let found: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (4, "app[0].max_memory_restart"),
            (5, "app[0].health.intervall"),
            (6, "app[0].bogus"),
            (11, "app[1].fail_timeout"),
            (15, "route[0].method"),
        ],
        "{all:#?}"
    );
    assert!(all[0]
        .hint
        .as_deref()
        .unwrap()
        .starts_with("PM2's \"max_memory_restart\" is \"max_memory\" in herd"));
    assert_eq!(all[1].col, 24);
}

#[test]
fn nginx_and_haproxy_names_point_to_herds() {
    let text = format!(
        "[gateway]\ngzip = true\nlimit_conn = 10\nlimit_req = \"zone=one burst=5\"\nnbthread = 2\n{APP}"
    );
    let all = errs(&text);
    let hints: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.key.as_str(), e.hint.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(hints.len(), 4, "{all:#?}");
    assert!(
        hints[0]
            .1
            .starts_with("nginx's \"gzip\" is \"compress\" in herd"),
        "{hints:?}"
    );
    assert!(
        hints[1]
            .1
            .starts_with("nginx's \"limit_conn\" is \"max_conn_per_ip\""),
        "{hints:?}"
    );
    assert!(hints[2].1.contains("[[rate_limit]] table"), "{hints:?}");
    assert!(
        hints[3]
            .1
            .starts_with("HAProxy's \"nbthread\" is \"threads\""),
        "{hints:?}"
    );
}

#[test]
fn a_bad_value_beside_an_unknown_key_is_reported_too() {
    let text = "[gateway]\nlisten = \"127.0.0.1:99999\"\nworkers = 4\n[[app]]\nname = \"web\"\ncommand = [\"true\"]\ninstances = 0\nmax_memory_restart = \"60M\"\n";
    let all = errs(text);
    let keys: Vec<&str> = all.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "gateway.listen",
            "gateway.workers",
            "app[0].instances",
            "app[0].max_memory_restart"
        ],
        "{all:#?}"
    );
}

#[test]
fn a_table_with_an_unknown_key_is_not_validated_twice() {
    // "comand" is reported once: not also as "needs either command or servers".
    let text = "[[app]]\nname = \"web\"\ncomand = [\"./app\"]\n";
    let all = errs(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(all[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("did you mean \"command\""));
}

#[test]
fn unknown_key_in_health_of_second_app() {
    let text = format!("{APP}[[app]]\nname = \"b\"\nservers = [\"10.0.0.1:80\"]\n[app.health]\nintervall = \"2s\"\n");
    let err = one(&text, 8, "app[1].health.intervall");
    assert!(err.hint.unwrap().contains("did you mean \"interval\""));
    // Inline tables get the same path.
    let text = format!("{APP}health = {{ pth = \"/\" }}\n");
    let err = one(&text, 4, "app[0].health.pth");
    assert!(err.hint.unwrap().contains("did you mean \"path\""));
}

#[test]
fn bad_duration() {
    let text = format!("{APP}[app.health]\ninterval = \"2x\"\n");
    let err = one(&text, 5, "app[0].health.interval");
    assert_eq!(err.col, 12);
    assert_eq!(
        err.to_string(),
        "herd.toml:5:12: app[0].health.interval: invalid duration \"2x\": unknown unit \"x\"\n  hint: use a number with ms, s, m, h or d, e.g. \"2s\""
    );
    let err = one(
        "[gateway]\nconnect_timeout = 5\n[[app]]\nname=\"a\"\ncommand=[\"x\"]\n",
        2,
        "gateway.connect_timeout",
    );
    assert!(err.hint.unwrap().contains("\"5s\""));
    let err = one(
        &format!("{APP}kill_timeout = \"-1s\"\n"),
        4,
        "app[0].kill_timeout",
    );
    assert!(err.message.contains("negative"), "{err}");
}

#[test]
fn zero_where_positive_required() {
    let err = one(
        &format!("{APP}[app.health]\ntimeout = \"0s\"\n"),
        5,
        "app[0].health.timeout",
    );
    assert!(err.message.contains("greater than 0"), "{err}");
}

#[test]
fn bad_size() {
    let err = one(
        &format!("{APP}max_memory = \"12XB\"\n"),
        4,
        "app[0].max_memory",
    );
    assert_eq!(err.message, "invalid size \"12XB\": unknown unit \"XB\"");
    one(
        &format!("[logs]\nmax_size = \"ten\"\n{APP}"),
        2,
        "logs.max_size",
    );
    one(&format!("[logs]\nmax_size = 0\n{APP}"), 2, "logs.max_size");
}

#[test]
fn bad_socket_addresses() {
    let err = one(
        &format!("[gateway]\nlisten = \"localhost:8080\"\n{APP}"),
        2,
        "gateway.listen",
    );
    assert_eq!(err.col, 10);
    assert!(err
        .message
        .contains("invalid socket address \"localhost:8080\""));
    assert!(err.hint.unwrap().contains("127.0.0.1:8080"));
    let err = one(
        &format!("[admin]\nlisten = \":9090\"\n{APP}"),
        2,
        "admin.listen",
    );
    assert!(err.hint.unwrap().contains("127.0.0.1:9090"));
    let err = one(
        &format!("[gateway]\nlisten = 8080\n{APP}"),
        2,
        "gateway.listen",
    );
    assert!(err.hint.unwrap().contains("\"127.0.0.1:8080\""));
    let text = "[[app]]\nname = \"a\"\nservers = [\"10.0.0.1:80\", \"db.local:5432\"]\n";
    one(text, 3, "app[0].servers[1]");
}

#[test]
fn port_range_smaller_than_instances() {
    let text = format!("{APP}instances = 5\nport_range = \"20000-20003\"\n");
    let err = one(&text, 5, "app[0].port_range");
    assert!(err.message.contains("has 4 ports but 5 instances"), "{err}");
    // Without an explicit range the default (1000 ports) is too small: blame instances.
    let err = one(&format!("{APP}instances = 1001\n"), 4, "app[0].instances");
    assert!(err.message.contains("20000-20999"), "{err}");
    one(
        &format!("{APP}port_range = \"9000-8000\"\n"),
        4,
        "app[0].port_range",
    );
    one(
        &format!("{APP}port_range = \"0-10\"\n"),
        4,
        "app[0].port_range",
    );
}

#[test]
fn scaling_max_needs_its_ports() {
    // max 4 on a range of 4 ports: the fourth instance would have no spare for a reload.
    let text = format!(
        "{APP}instances = 2\nport_range = \"20000-20003\"\n[app.scaling]\nmin = 1\nmax = 4\n"
    );
    let err = one(&text, 8, "app[0].scaling.max");
    assert!(err.message.contains("scaling max 4 needs 5 ports"), "{err}");
    assert!(
        err.hint.as_deref().unwrap_or("").contains("at most 3"),
        "{err:?}"
    );
    ok(&format!(
        "{APP}instances = 2\nport_range = \"20000-20003\"\n[app.scaling]\nmin = 1\nmax = 3\n"
    ));
    // A schedule that raises the bounds past the range is caught too.
    let err = one(
        &format!(
            "{APP}instances = 2\nport_range = \"20000-20003\"\n[app.scaling]\nmin = 1\nmax = 3\n[[app.scaling.schedule]]\ncron = \"0 8 * * *\"\nmin = 6\nmax = 6\n"
        ),
        8,
        "app[0].scaling.max",
    );
    assert!(
        err.message
            .contains("a schedule's instance count 6 needs 7 ports"),
        "{err}"
    );
}

#[test]
fn instances_values() {
    let cfg = ok(&format!("{APP}instances = -1\n"));
    assert_eq!(command(&cfg, 0).instances, Instances::MaxMinusOne);
    let cfg = ok(&format!("{APP}instances = \"max\"\n"));
    assert_eq!(command(&cfg, 0).instances, Instances::Max);
    let err = one(&format!("{APP}instances = 0\n"), 4, "app[0].instances");
    assert_eq!(
        err.hint.as_deref(),
        Some("use \"max\" for one instance per CPU core")
    );
    one(&format!("{APP}instances = -2\n"), 4, "app[0].instances");
    one(
        &format!("{APP}instances = \"lots\"\n"),
        4,
        "app[0].instances",
    );
    one(&format!("{APP}instances = 1.5\n"), 4, "app[0].instances");
}

#[test]
fn missing_command_and_servers() {
    let text = format!("{APP}[[app]]\nname = \"api\"\n");
    let err = one(&text, 4, "app[1]");
    assert!(
        err.message.contains("needs either command or servers"),
        "{err}"
    );
}

#[test]
fn both_command_and_servers() {
    let err = one(
        &format!("{APP}servers = [\"10.0.0.1:80\"]\n"),
        4,
        "app[0].servers",
    );
    assert!(err.message.contains("cannot be used together"), "{err}");
}

#[test]
fn empty_command() {
    let err = one(
        "[[app]]\nname = \"web\"\ncommand = []\n",
        3,
        "app[0].command",
    );
    assert_eq!(err.col, 11);
    assert!(err.message.contains("must not be empty"), "{err}");
    one(
        "[[app]]\nname = \"web\"\ncommand = [\"\"]\n",
        3,
        "app[0].command[0]",
    );
    one(
        "[[app]]\nname = \"web\"\ncommand = [\"./a\", 3]\n",
        3,
        "app[0].command[1]",
    );
    let err = one(
        "[[app]]\nname = \"web\"\ncommand = \"./app --port 3\"\n",
        3,
        "app[0].command",
    );
    assert!(err.hint.unwrap().contains("[\"./app\", \"--port\", \"3\"]"));
}

#[test]
fn duplicate_app_names() {
    let text = format!("{APP}[[app]]\nname = \"web\"\nservers = [\"10.0.0.1:80\"]\n");
    let err = one(&text, 5, "app[1].name");
    assert_eq!(
        err.message,
        "duplicate app name \"web\" (first defined on line 2)"
    );
}

#[test]
fn invalid_app_names() {
    let err = one(
        "[[app]]\nname = \"My App\"\ncommand = [\"x\"]\n",
        2,
        "app[0].name",
    );
    assert!(err.hint.unwrap().contains("\"my-app\""));
    one(
        "[[app]]\nname = \"\"\ncommand = [\"x\"]\n",
        2,
        "app[0].name",
    );
    one(
        "[[app]]\nname = \"-x\"\ncommand = [\"x\"]\n",
        2,
        "app[0].name",
    );
    one("[[app]]\ncommand = [\"x\"]\n", 1, "app[0].name");
}

#[test]
fn route_to_unknown_app() {
    let text = format!("{APP}[[app]]\nname = \"api\"\nservers = [\"10.0.0.1:80\"]\n[[route]]\napp = \"web\"\n[[route]]\nhost = \"x.com\"\napp = \"apj\"\n");
    let err = one(&text, 11, "route[1].app");
    assert_eq!(err.message, "route to unknown app \"apj\"");
    assert_eq!(
        err.hint.as_deref(),
        Some("did you mean \"api\"? known apps: web, api")
    );
    one(
        &format!("{APP}[[route]]\nhost = \"x.com\"\n"),
        4,
        "route[0].app",
    );
}

#[test]
fn route_values() {
    one(
        &format!("{APP}[[route]]\npath_prefix = \"api\"\napp = \"web\"\n"),
        5,
        "route[0].path_prefix",
    );
    one(
        &format!("{APP}[[route]]\nhost = \"x.com:8080\"\napp = \"web\"\n"),
        5,
        "route[0].host",
    );
    one(
        &format!("{APP}[[route]]\nhost = \"\"\napp = \"web\"\n"),
        5,
        "route[0].host",
    );
}

#[test]
fn zero_apps() {
    let err = one("[gateway]\nlisten = \"127.0.0.1:8080\"\n", 1, "app");
    assert_eq!(err.message, "at least one [[app]] is required");
    let err = one("", 1, "app");
    assert_eq!(err.col, 1);
}

#[test]
fn admin_token_required_off_loopback() {
    let err = one(
        &format!("[admin]\nlisten = \"0.0.0.0:9090\"\n{APP}"),
        2,
        "admin.token",
    );
    assert!(err.message.contains("not a loopback address"), "{err}");
    assert!(err.hint.unwrap().contains("token"));
    ok(&format!(
        "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"s3cret-0123456789\"\n{APP}"
    ));
    ok(&format!("[admin]\nlisten = \"[::1]:9090\"\n{APP}"));
    one(&format!("[admin]\ntoken = \"\"\n{APP}"), 2, "admin.token");
    let short = one(
        &format!("[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"s3cret\"\n{APP}"),
        3,
        "admin.token",
    );
    assert!(short.message.contains("at least 16"), "{short}");
    // A token no client could present as written: a trailing space, a letter outside ASCII.
    let spaced = one(
        &format!("[admin]\ntoken = \"0123456789abcdef \"\n{APP}"),
        2,
        "admin.token",
    );
    assert!(spaced.message.contains("visible ASCII"), "{spaced}");
    one(
        &format!("[services]\ntoken = \"0123456789abcdéf0\"\n{APP}"),
        2,
        "services.token",
    );
}

#[test]
fn a_pm2_restart_delay_is_told_it_grows_here() {
    let err = one(
        &format!("{APP}restart_delay = 4000\n"),
        4,
        "app[0].restart_delay",
    );
    let hint = err.hint.unwrap();
    assert!(
        hint.contains("\"4000ms\"") && hint.contains("exp_backoff_restart_delay"),
        "{hint}"
    );
}

#[test]
fn an_integer_too_large_for_toml_says_so() {
    let err = one(
        &format!("{APP}instances = 99999999999999999999\n"),
        4,
        "app[0].instances",
    );
    assert!(err.hint.as_deref().unwrap().contains("64-bit"), "{err}");
}

#[test]
fn a_token_of_the_wrong_type_is_not_repeated_in_the_error() {
    for section in ["admin", "services"] {
        let err = one(
            &format!("[{section}]\ntoken = 8231945720193847561\n{APP}"),
            2,
            &format!("{section}.token"),
        );
        assert!(!err.to_string().contains("8231945720193847561"), "{err}");
        assert!(err.message.contains("expected a string"), "{err}");
    }
}

#[test]
fn the_admin_token_may_come_from_herd_s_environment() {
    let env = |t: &str| crate::Env {
        admin_token: Some(t.to_owned()),
    };
    let parse = |text: &str, e: &crate::Env| {
        crate::parse_with(text, "herd.toml", std::path::Path::new("/"), e)
    };
    let open = format!("[admin]\nlisten = \"0.0.0.0:9090\"\n{APP}");
    let cfg = parse(&open, &env("from-the-secret-0123")).unwrap();
    assert_eq!(cfg.admin.token.as_deref(), Some("from-the-secret-0123"));
    // No [admin] table at all: the default address, with the environment's token.
    let cfg = parse(APP, &env("from-the-secret-0123")).unwrap();
    assert_eq!(cfg.admin.token.as_deref(), Some("from-the-secret-0123"));
    // The environment's wins, as for the CLI, which sends it before the file's.
    let cfg = parse(
        &format!("[admin]\ntoken = \"in-the-file-0123456\"\n{APP}"),
        &env("from-the-secret-0123"),
    )
    .unwrap();
    assert_eq!(cfg.admin.token.as_deref(), Some("from-the-secret-0123"));
    // Checked like a token in the file, and named for where it came from (no file position).
    let errs = parse(&open, &env("short")).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    assert_eq!(errs.0[0].key, "HERD_ADMIN_TOKEN", "{errs}");
    assert_eq!(errs.0[0].line, 0, "{errs}");
    assert!(errs.0[0].message.contains("environment"), "{errs}");
    assert!(errs.0[0].message.contains("at least 16"), "{errs}");
    // Without either, as before.
    assert!(parse(&open, &crate::Env::default()).is_err());
    assert_eq!(ok(APP).admin.token, None);
}

#[test]
fn logs_max_files_is_bounded() {
    let err = one(
        &format!("[logs]\nmax_files = 100000000\n{APP}"),
        2,
        "logs.max_files",
    );
    assert!(err.message.contains("at most 1000"), "{err}");
    assert_eq!(
        ok(&format!("[logs]\nmax_files = 1000\n{APP}"))
            .logs
            .max_files,
        1000
    );
}

#[test]
fn admin_and_gateway_on_same_address() {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:8000\"\n[admin]\nlisten = \"127.0.0.1:8000\"\n{APP}"
    );
    one(&text, 4, "admin.listen");
    // Without an [admin] table, on the admin API's default address.
    let err = one(
        &format!("[gateway]\nlisten = \"127.0.0.1:9090\"\n{APP}"),
        2,
        "gateway.listen",
    );
    assert!(err.message.contains("admin API's default"), "{err}");
    // A wildcard gateway takes the port on loopback too.
    let err = one(
        &format!("[gateway]\nlisten = \"0.0.0.0:9090\"\n{APP}"),
        2,
        "gateway.listen",
    );
    assert!(err.message.contains("admin API's default"), "{err}");
    // The services API's default address, taken by the gateway: reported where it was written,
    // with a hint that does not name the same address again.
    let err = one(
        &format!("[gateway]\nlisten = \"127.0.0.1:9091\"\n{APP}"),
        2,
        "gateway.listen",
    );
    assert!(
        err.message.contains("services API's default address"),
        "{err}"
    );
    assert!(err.hint.unwrap().contains("9092"));
    ok(&format!("[gateway]\nlisten = \"0.0.0.0:8080\"\n{APP}"));
    // An [admin] table with a token only: the same, at the gateway's line.
    let err = one(
        &format!(
            "[gateway]\nlisten = \"0.0.0.0:9090\"\n[admin]\ntoken = \"0123456789abcdef\"\n{APP}"
        ),
        2,
        "gateway.listen",
    );
    assert!(err.hint.unwrap().contains("9095"));
}

#[test]
fn bad_balance() {
    let err = one(
        &format!("{APP}balance = \"leastconn\"\n"),
        4,
        "app[0].balance",
    );
    assert_eq!(err.message, "unknown balance \"leastconn\"");
    const ALL: &str = "valid values: \"round_robin\", \"least_conn\", \"random_two\", \"peak_ewma\", \"ip_hash\", \"hash\", \"first\"";
    assert_eq!(
        err.hint.as_deref(),
        Some(format!("did you mean \"least_conn\"? {ALL}").as_str())
    );
    let err = one(&format!("{APP}balance = \"random\"\n"), 4, "app[0].balance");
    assert_eq!(
        err.hint.as_deref(),
        Some(format!("did you mean \"random_two\"? {ALL}").as_str())
    );
    let err = one(
        &format!("{APP}balance = \"fastest\"\n"),
        4,
        "app[0].balance",
    );
    assert_eq!(err.hint.as_deref(), Some(ALL));
}

#[test]
fn balance_algorithms() {
    use crate::HashKey;
    for (name, want) in [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
        ("random_two", Balance::RandomTwo),
        ("peak_ewma", Balance::PeakEwma),
        ("ip_hash", Balance::IpHash),
        ("first", Balance::First),
    ] {
        let cfg = ok(&format!("{APP}balance = \"{name}\"\n"));
        assert_eq!(cfg.apps[0].balance, want);
        assert_eq!(cfg.apps[0].hash_key, None);
        assert_eq!(cfg.apps[0].hash_balance_factor, 125);
    }
    let cfg = ok(&format!(
        "{APP}balance = \"hash\"\nhash_key = \"header:X-User\"\nhash_balance_factor = 0\n"
    ));
    assert_eq!(cfg.apps[0].balance, Balance::Hash);
    assert_eq!(cfg.apps[0].hash_key, Some(HashKey::Header("x-user".into())));
    assert_eq!(cfg.apps[0].hash_balance_factor, 0);
    for (key, want) in [
        ("cookie:sid", HashKey::Cookie("sid".into())),
        ("query:user", HashKey::Query("user".into())),
        ("path", HashKey::Path),
    ] {
        let cfg = ok(&format!("{APP}balance = \"hash\"\nhash_key = \"{key}\"\n"));
        assert_eq!(cfg.apps[0].hash_key, Some(want));
    }
    let cfg = ok(&format!(
        "{APP}balance = \"ip_hash\"\nhash_balance_factor = 200\n"
    ));
    assert_eq!(cfg.apps[0].hash_balance_factor, 200);
}

#[test]
fn bad_hash_keys() {
    let err = one(&format!("{APP}balance = \"hash\"\n"), 4, "app[0].hash_key");
    assert_eq!(err.message, "balance = \"hash\" needs hash_key");
    let err = one(
        &format!("{APP}balance = \"hash\"\nhash_key = \"header\"\n"),
        5,
        "app[0].hash_key",
    );
    assert_eq!(err.message, "invalid hash_key \"header\"");
    let err = one(
        &format!("{APP}balance = \"hash\"\nhash_key = \"body:x\"\n"),
        5,
        "app[0].hash_key",
    );
    assert_eq!(err.message, "unknown hash_key kind \"body\"");
    let err = one(&format!("{APP}hash_key = \"path\"\n"), 4, "app[0].hash_key");
    assert_eq!(err.message, "hash_key only applies with balance = \"hash\"");
    one(
        &format!("{APP}balance = \"hash\"\nhash_key = \"path\"\nhash_balance_factor = 99\n"),
        6,
        "app[0].hash_balance_factor",
    );
    one(
        &format!("{APP}balance = \"hash\"\nhash_key = \"path\"\nhash_balance_factor = -1\n"),
        6,
        "app[0].hash_balance_factor",
    );
    one(
        &format!("{APP}hash_balance_factor = 150\n"),
        4,
        "app[0].hash_balance_factor",
    );
    // A route to the app that hashes uses the app's factor.
    let cfg = ok(&format!(
        "{APP}hash_balance_factor = 150\n[[route]]\napp = \"web\"\nbalance = \"hash\"\nhash_key = \"path\"\n"
    ));
    assert_eq!(cfg.apps[0].hash_balance_factor, 150);
}

#[test]
fn command_only_keys_with_servers() {
    let text = "[[app]]\nname = \"db\"\nservers = [\"10.0.0.1:80\"]\ninstances = 2\nenv = { A = \"b\" }\n[app.health]\nrise = 1\n";
    let errs = errs(text);
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, [(4, "app[0].instances"), (5, "app[0].env")]);
    assert_eq!(
        errs[0].message,
        "instances only applies to apps with a command"
    );
    assert!(errs[0].hint.is_some());
}

#[test]
fn health_values() {
    one(
        &format!("{APP}[app.health]\npath = \"health\"\n"),
        5,
        "app[0].health.path",
    );
    one(
        &format!("{APP}[app.health]\nrise = 0\n"),
        5,
        "app[0].health.rise",
    );
    one(
        &format!("{APP}[app.health]\nfall = -3\n"),
        5,
        "app[0].health.fall",
    );
}

#[test]
fn restart_delays() {
    let err = one(
        &format!("{APP}restart_delay = \"1s\"\nmax_restart_delay = \"500ms\"\n"),
        5,
        "app[0].max_restart_delay",
    );
    assert!(err.message.contains("shorter than restart_delay"), "{err}");
    one(
        &format!("{APP}restart_delay = \"1m\"\n"),
        4,
        "app[0].restart_delay",
    );
}

#[test]
fn env_values() {
    one(&format!("{APP}env = {{ A = [1] }}\n"), 4, "app[0].env.A");
}

#[test]
fn collects_all_errors_in_file_order() {
    let text = r#"[gateway]
listen = "nope"
connect_timeout = "1y"

[[app]]
name = "web"
command = []
balance = "fastest"

[app.health]
interval = "2x"
rise = 0

[[app]]
name = "web"

[[route]]
app = "nothing"
"#;
    let errs = errs(text);
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (2, "gateway.listen"),
            (3, "gateway.connect_timeout"),
            (7, "app[0].command"),
            (8, "app[0].balance"),
            (11, "app[0].health.interval"),
            (12, "app[0].health.rise"),
            (14, "app[1]"),
            (15, "app[1].name"),
            (18, "route[0].app"),
        ]
    );
    let shown = crate::ConfigErrors(errs).to_string();
    assert!(
        shown.starts_with("herd.toml:2:10: gateway.listen: invalid socket address \"nope\""),
        "{shown}"
    );
}

#[test]
fn single_bracket_app_table() {
    let err = one("[app]\nname = \"web\"\ncommand = [\"x\"]\n", 1, "app");
    assert!(err.hint.unwrap().contains("[[app]]"));
}

#[test]
fn wrong_type_from_serde() {
    let err = one(
        &format!("{APP}max_restarts = \"3\"\n"),
        4,
        "app[0].max_restarts",
    );
    assert!(err.message.contains("expected an integer"), "{err}");
}

#[test]
fn toml_syntax_error_has_position_and_key() {
    let err = one(
        &format!("{APP}[[app]]\nname = \"api\ncommand = [\"x\"]\n"),
        5,
        "app[1].name",
    );
    assert!(err.message.contains("invalid basic string"), "{err}");
    let err = one(&format!("{APP}name = \"again\"\n"), 4, "app[0].name");
    assert!(err.message.contains("duplicate key `name`"), "{err}");
}

#[test]
fn scalar_where_table_expected() {
    let err = one(&format!("{APP}health = \"/health\"\n"), 4, "app[0].health");
    assert_eq!(
        err.message,
        "invalid type: string \"/health\", expected a table"
    );
    assert!(err.hint.unwrap().contains("[app.health]"));
}

#[test]
fn gateway_edge_limits() {
    let g = ok(APP).gateway;
    assert_eq!(g.client_header_timeout, Duration::from_secs(30));
    assert_eq!((g.max_connections, g.max_header_size), (0, 64 * 1024));
    assert_eq!((g.max_body_size, g.security_headers), (None, false));
    assert!(!g.proxy_protocol);
    let g = ok(&format!(
        "[gateway]\nclient_header_timeout = \"500ms\"\nmax_connections = 1000\n\
         max_header_size = \"16KiB\"\nmax_body_size = \"10MiB\"\nsecurity_headers = true\n\
         proxy_protocol = true\n{APP}"
    ))
    .gateway;
    assert!(g.proxy_protocol);
    let pp = ok(&format!(
        "[gateway]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\n{APP}"
    ))
    .gateway;
    assert_eq!(
        pp.proxy_protocol_from,
        vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.0.2.7/32".parse().unwrap()
        ]
    );
    let err = one(
        &format!("[gateway]\nproxy_protocol_from = [\"10.0.0.0/8\"]\n{APP}"),
        2,
        "gateway.proxy_protocol_from",
    );
    assert!(err.hint.unwrap().contains("proxy_protocol = true"));
    let err = one(
        &format!(
            "[gateway]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/33\"]\n{APP}"
        ),
        3,
        "gateway.proxy_protocol_from",
    );
    assert!(err.message.contains("not an address or a CIDR"), "{err}");
    assert_eq!(g.client_header_timeout, Duration::from_millis(500));
    assert_eq!((g.max_connections, g.max_header_size), (1000, 16 * 1024));
    assert_eq!(
        (g.max_body_size, g.security_headers),
        (Some(10 << 20), true)
    );
    assert_eq!(
        ok(&format!("[gateway]\nmax_body_size = 0\n{APP}"))
            .gateway
            .max_body_size,
        None,
        "0 = unlimited"
    );
    let err = one(
        &format!("[gateway]\nmax_header_size = \"1KiB\"\n{APP}"),
        2,
        "gateway.max_header_size",
    );
    assert!(err.message.contains("at least 8KiB"), "{err}");
    one(
        &format!("[gateway]\nclient_header_timeout = \"0s\"\n{APP}"),
        2,
        "gateway.client_header_timeout",
    );
    assert_eq!(g.tunnel_idle_timeout, Duration::from_secs(60));
    let t = ok(&format!("[gateway]\ntunnel_idle_timeout = \"5m\"\n{APP}")).gateway;
    assert_eq!(t.tunnel_idle_timeout, Duration::from_secs(300));
    one(
        &format!("[gateway]\ntunnel_idle_timeout = \"0s\"\n{APP}"),
        2,
        "gateway.tunnel_idle_timeout",
    );
    one(
        &format!("[gateway]\nmax_connections = -1\n{APP}"),
        2,
        "gateway.max_connections",
    );
}

#[test]
fn store_and_services_defaults() {
    let cfg = ok("[[app]]\nname = \"web\"\ncommand = [\"x\"]\n");
    assert!(
        matches!(&cfg.store, crate::Store::Embedded { path } if path.ends_with(".herd/store.redb"))
    );
    assert!(cfg.services.enabled);
    assert_eq!(cfg.services.listen.to_string(), "127.0.0.1:9091");
    assert_eq!(cfg.services.session_ttl.as_secs(), 86_400);
    assert_eq!(cfg.services.session_touch_after.as_secs(), 60);
    let every = ok(
        "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[services]\nsession_touch_after = \"0s\"\n",
    );
    assert!(every.services.session_touch_after.is_zero());
    one(
        "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[services]\nsession_touch_after = \"soon\"\n",
        5,
        "services.session_touch_after",
    );
}

#[test]
fn store_redis_and_cache_strategies() {
    let cfg = ok(
        "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\ntimeout = \"250ms\"\n[services]\nlisten = \"127.0.0.1:9555\"\ntoken = \"0123456789abcdef0\"\ncache_memory = \"16MiB\"\n[services.cache.device]\nl1_ttl = \"5m\"\nl2_ttl = \"1h\"\nrefresh_ahead = 0.8\ngrace = \"30s\"\n",
    );
    match &cfg.store {
        crate::Store::Redis { url, timeout, .. } => {
            assert_eq!(url.as_deref(), Some("redis://127.0.0.1:6379"));
            assert_eq!(timeout.as_millis(), 250);
        }
        other => panic!("expected redis, got {other:?}"),
    }
    let device = &cfg.services.cache["device"];
    assert_eq!(device.l2_ttl.as_secs(), 3600);
    assert!((device.refresh_ahead - 0.8).abs() < 1e-9);
    assert_eq!(device.grace.as_secs(), 30);
    assert_eq!(cfg.services.cache_memory, 16 << 20);
}

#[test]
fn store_and_services_errors_point_at_keys() {
    let found = errs(
        "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[store]\nbackend = \"redis\"\nurl = \"http://x\"\n[services]\nlisten = \"0.0.0.0:9091\"\n[services.cache.a]\nrefresh_ahead = 2\ngrace = \"soon\"\n",
    );
    let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"store.url"), "{keys:?}");
    assert!(keys.contains(&"services.token"), "{keys:?}");
    assert!(keys.contains(&"services.cache.a.refresh_ahead"), "{keys:?}");
    assert!(keys.contains(&"services.cache.a.grace"), "{keys:?}");
    let url = found.iter().find(|e| e.key == "store.url").unwrap();
    assert_eq!(url.line, 6);
    assert!(
        !url.to_string().contains("http://x"),
        "URLs may hold passwords: {url}"
    );
    let e = errs(
        "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[services.cache.\"a:b\"]\nl1_ttl = \"1s\"\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].key.as_str(), e[0].line),
        ("services.cache.a:b", 4),
        "{e:?}"
    );
    assert!(e[0].message.contains("can never be used"), "{}", e[0]);
    for bad in ["a:b", "x y", "a/b", "{q}", ""] {
        let e = errs(&format!(
            "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[services.queue.\"{bad}\"]\nconcurrency = 2\n"
        ));
        assert_eq!(e.len(), 1, "{bad:?}: {e:?}");
        assert_eq!(e[0].key, format!("services.queue.{bad}"), "{e:?}");
        assert!(e[0].message.contains("can never be used"), "{}", e[0]);
    }
}

#[test]
fn tls_sni_hosts_exact_and_wildcard() {
    let tls = |hosts: &[&str]| {
        let mut t = String::from("[gateway]\n[gateway.tls]\ncert = \"d.pem\"\nkey = \"d.key\"\n");
        for h in hosts {
            t.push_str(&format!(
                "[[gateway.tls.sni]]\nhost = \"{h}\"\ncert = \"x.pem\"\nkey = \"x.key\"\n"
            ));
        }
        t + "[[app]]\nname = \"web\"\ncommand = [\"x\"]\n"
    };
    let cfg = ok(&tls(&["API.example.com.", "*.Example.com"]));
    let hosts: Vec<&str> = cfg
        .gateway
        .tls
        .as_ref()
        .unwrap()
        .sni
        .iter()
        .map(|s| s.host.as_str())
        .collect();
    assert_eq!(hosts, ["api.example.com", "*.example.com"]);
    for (bad, why) in [
        ("*", "two labels"),
        ("*.com", "two labels"),
        ("a.*.com", "first label"),
        ("*.*.com", "first label"),
        ("api*.example.com", "first label"),
        ("*..com", "empty labels"),
        ("a..b", "empty labels"),
        (" ", "empty"),
        ("127.0.0.1", "never sent as SNI"),
        ("::1", "never sent as SNI"),
        ("[::1]", "never sent as SNI"),
    ] {
        let e = errs(&tls(&[bad]));
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert_eq!(e[0].key, "gateway.tls.sni[0].host", "{bad}");
        assert!(e[0].to_string().contains(why), "{bad}: {}", e[0]);
    }
    let e = errs(&tls(&["a.example.com", "A.example.com"]));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "gateway.tls.sni[1].host");
}

#[test]
fn redirect_listener_needs_its_own_address_and_max_headers_has_bounds() {
    const APP: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n";
    let e = errs(&format!(
        "[gateway]\nlisten = \"127.0.0.1:8443\"\nredirect_http = \"127.0.0.1:8443\"\n{APP}"
    ));
    assert!(
        e.iter().any(|e| e.key == "gateway.redirect_http"
            && e.line == 3
            && e.message.contains("same address as gateway.listen")),
        "{e:?}"
    );
    let e = one(
        &format!("[gateway]\nredirect_http = \"127.0.0.1:8180\"\n{APP}"),
        2,
        "gateway.redirect_http",
    );
    assert!(e.message.contains("no [gateway.tls]"), "{e}");
    let cfg = ok(&format!(
        "[gateway]\nmax_headers = 300\nmerge_slashes = false\n{APP}"
    ));
    assert_eq!(
        (cfg.gateway.max_headers, cfg.gateway.merge_slashes),
        (300, false)
    );
    let cfg = ok(APP);
    assert_eq!(
        (cfg.gateway.max_headers, cfg.gateway.merge_slashes),
        (100, true)
    );
    for bad in ["0", "10001", "-1"] {
        one(
            &format!("[gateway]\nmax_headers = {bad}\n{APP}"),
            2,
            "gateway.max_headers",
        );
    }
}

#[test]
fn a_port_range_may_not_hold_herds_own_listeners() {
    let err = one(
        &format!("[gateway]\nlisten = \"127.0.0.1:31980\"\n{APP}port_range = \"31980-31983\"\n"),
        6,
        "app[0].port_range",
    );
    assert!(
        err.message.contains(
            "holds port 31980, where herd listens itself (gateway.listen = 127.0.0.1:31980)"
        ),
        "{err}"
    );
    // The default range (20000-20999) counts too.
    let err = one(
        &format!("[admin]\nlisten = \"127.0.0.1:20500\"\n{APP}"),
        3,
        "app[0]",
    );
    assert!(
        err.message.contains("(the default) holds port 20500"),
        "{err}"
    );
    // A disabled services API listens nowhere.
    ok(&format!(
        "[services]\nenabled = false\nlisten = \"127.0.0.1:20001\"\n{APP}"
    ));
}

#[test]
fn env_may_not_set_what_herd_sets_for_each_instance() {
    let err = one(
        &format!("{APP}env = {{ PORT = \"3000\" }}\n"),
        4,
        "app[0].env.PORT",
    );
    assert!(err.hint.unwrap().contains("listen on $PORT"));
    one(
        &format!("{APP}env = {{ HERD_INSTANCE = \"x\" }}\n"),
        4,
        "app[0].env.HERD_INSTANCE",
    );
    ok(&format!(
        "{APP}env = {{ NODE_ENV = \"production\", PORTS = \"1\" }}\n"
    ));
    // The services' variables are herd's only while its services API is on.
    let err = one(
        &format!("{APP}env = {{ HERD_SERVICES_URL = \"http://10.0.0.9:9091\" }}\n"),
        4,
        "app[0].env.HERD_SERVICES_URL",
    );
    assert!(err.hint.unwrap().contains("enabled = false"));
    ok(&format!(
        "[services]\nenabled = false\n{APP}env = {{ HERD_SERVICES_URL = \"http://10.0.0.9:9091\" }}\n"
    ));
}

#[test]
fn a_sub_table_above_its_app_gets_a_hint() {
    let all = errs("[app.health]\npath = \"/h\"\n[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n");
    let hint = all[0].hint.as_deref().unwrap_or_default();
    assert!(hint.contains("belongs after its [[app]]"), "{all:#?}");
}

#[test]
fn kill_signal_takes_pm2_s_sigint_and_refuses_the_rest() {
    let cfg = parse(
        "[[app]]\nname = \"web\"\ncommand = [\"x\"]\nkill_signal = \"int\"\n",
        "t.toml",
        Path::new("."),
    )
    .unwrap();
    let Backends::Command(c) = &cfg.apps[0].backends else {
        panic!()
    };
    assert_eq!(c.kill_signal, crate::StopSignal::Int);
    let e = errs("[[app]]\nname = \"web\"\ncommand = [\"x\"]\nkill_signal = \"SIGKILL\"\n");
    assert_eq!(
        (e.len(), e[0].key.as_str(), e[0].line),
        (1, "app[0].kill_signal", 4),
        "{e:?}"
    );
    let e =
        errs("[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\nkill_signal = \"SIGINT\"\n");
    assert_eq!(e.len(), 1, "only with command: {e:?}");
}

#[test]
fn max_memory_without_a_unit_is_named() {
    let err = one(&format!("{APP}max_memory = 512\n"), 4, "app[0].max_memory");
    assert!(err.message.contains("512 bytes"), "{err}");
    assert!(err.hint.unwrap().contains("\"512MiB\""));
    let err = one(&format!("{APP}max_memory = 0\n"), 4, "app[0].max_memory");
    assert!(err.message.contains("greater than 0"), "{err}");
}

#[test]
fn pm2_keys_without_a_key_of_their_own_point_to_herds_way() {
    let all = errs(&format!(
        "{APP}wait_ready = true\nexec_mode = \"cluster\"\nout_file = \"x.log\"\n"
    ));
    let hints: Vec<&str> = all
        .iter()
        .map(|e| e.hint.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(hints.len(), 3, "{all:#?}");
    assert!(
        hints[0].starts_with("PM2's \"wait_ready\": in herd, a health check"),
        "{hints:?}"
    );
    assert!(hints[1].contains("separate processes"), "{hints:?}");
    assert!(hints[2].contains("[logs] dir"), "{hints:?}");
    // A knob herd has no counterpart for reads as such, not as "is not a setting ... in herd".
    let all = errs(&format!("[gateway]\nssl_protocols = \"TLSv1.2\"\n{APP}"));
    let hint = all[0].hint.as_deref().unwrap_or("");
    assert!(
        hint.starts_with("nginx's \"ssl_protocols\": in herd, not a setting"),
        "{hint}"
    );
}
