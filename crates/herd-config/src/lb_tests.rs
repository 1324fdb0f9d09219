//! The load-balancing keys end to end: sticky (app, route, `[gateway] sticky_secret`), server
//! tables, weight/max_conn/queue/slow_start/observe, route overrides, downinter and
//! expect_status; each error with its line and key.

use std::path::Path;
use std::time::Duration;

use crate::{parse, Backends, Balance, Config, ConfigError, HashKey, ServerParams, Sticky};

fn ok(text: &str) -> Config {
    match parse(text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("expected a valid config, got:\n{errs}"),
    }
}

/// The single error in `text`, checked for its line and key, with a hint.
#[track_caller]
fn one(text: &str, line: usize, key: &str) -> ConfigError {
    let errs = match parse(text, "herd.toml", Path::new("/base")) {
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
[gateway]
sticky_secret = "0123456789abcdef0123"

[[app]]
name = "web"
command = ["./app"]
weight = 2
max_conn = 10
queue = 5
queue_timeout = "2s"
slow_start = "30s"
observe = "layer7"
sticky = { cookie = "SRV", ttl = "10m" }
[app.health]
path = "/health"
downinter = "10s"
expect_status = [204, "300-302"]

[[app]]
name = "api"
servers = ["127.0.0.1:7001", { addr = "127.0.0.1:7002", weight = 3, backup = true, max_conn = 100 }]
max_conn = 7
sticky = true

[[route]]
path_prefix = "/u"
balance = "hash"
hash_key = "header:X-User"
sticky = false
app = "api"

[[route]]
app = "web"
"#);
    assert_eq!(
        cfg.gateway.sticky_secret.as_deref(),
        Some("0123456789abcdef0123")
    );
    let web = &cfg.apps[0].lb;
    assert_eq!(
        web.defaults,
        ServerParams {
            weight: 2,
            backup: false,
            max_conn: 10
        }
    );
    assert_eq!((web.queue, web.queue_timeout), (5, Duration::from_secs(2)));
    assert_eq!(web.slow_start, Duration::from_secs(30));
    assert!(web.observe_layer7);
    assert_eq!(
        web.sticky,
        Some(Sticky {
            cookie: "SRV".into(),
            ttl: Duration::from_secs(600)
        })
    );
    let h = &cfg.apps[0].health;
    assert_eq!(h.downinter, Some(Duration::from_secs(10)));
    assert_eq!(h.expect_status, vec![(204, 204), (300, 302)]);

    let api = &cfg.apps[1];
    assert!(matches!(&api.backends, Backends::Servers(s) if s.len() == 2));
    assert_eq!(
        api.lb.servers,
        vec![
            ServerParams {
                weight: 1,
                backup: false,
                max_conn: 7
            },
            ServerParams {
                weight: 3,
                backup: true,
                max_conn: 100
            },
        ]
    );
    assert_eq!(
        api.lb.sticky.as_ref().map(|s| s.cookie.as_str()),
        Some("HERD_SRV")
    );
    assert!(
        !api.lb.observe_layer7,
        "layer4 is the default: a 5xx is no failure"
    );

    let r = &cfg.routes[0].overrides;
    assert_eq!(
        r.balance,
        Some((Balance::Hash, Some(HashKey::Header("x-user".into()))))
    );
    assert_eq!(r.sticky, Some(None));
    assert_eq!(cfg.routes[1].overrides, crate::RouteBalance::default());
}

#[test]
fn defaults() {
    let cfg = ok("[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n");
    let lb = &cfg.apps[0].lb;
    assert_eq!(*lb, crate::LoadBalancing::default());
    assert_eq!((lb.queue, lb.queue_timeout), (1024, Duration::from_secs(5)));
    assert_eq!(cfg.apps[0].health.expect_status, vec![(200, 399)]);
    assert_eq!(cfg.apps[0].health.downinter, None);
    assert_eq!(cfg.gateway.sticky_secret, None);
}

const WEB: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n";

#[test]
fn errors_name_the_key_and_line() {
    one(&format!("{WEB}weight = 300\n"), 4, "app[0].weight");
    one(&format!("{WEB}queue = 0\n"), 4, "app[0].queue");
    one(&format!("{WEB}observe = \"layer3\"\n"), 4, "app[0].observe");
    one(&format!("{WEB}sticky = \"yes\"\n"), 4, "app[0].sticky");
    one(
        &format!("{WEB}sticky = {{ cookie = \"a b\" }}\n"),
        4,
        "app[0].sticky.cookie",
    );
    one(
        &format!("{WEB}sticky = {{ name = \"x\" }}\n"),
        4,
        "app[0].sticky.name",
    );
    one(
        &format!("{WEB}sticky = {{ ttl = \"0s\" }}\n"),
        4,
        "app[0].sticky.ttl",
    );
    one(
        &format!("[gateway]\nsticky_secret = \"short\"\n{WEB}"),
        2,
        "gateway.sticky_secret",
    );
    one(
        "[[app]]\nname = \"api\"\nservers = [{ addr = \"127.0.0.1:1\", wieght = 2 }]\n",
        3,
        "app[0].servers[0].wieght",
    );
    one(
        "[[app]]\nname = \"api\"\nservers = [{ weight = 2 }]\n",
        3,
        "app[0].servers[0]",
    );
    one(
        "[[app]]\nname = \"api\"\nservers = [{ addr = \"127.0.0.1:1\", backup = 1 }]\n",
        3,
        "app[0].servers[0].backup",
    );
    one(
        &format!("{WEB}[app.health]\nexpect_status = \"2xx\"\n"),
        5,
        "app[0].health.expect_status",
    );
    one(
        &format!("{WEB}[[route]]\nhash_key = \"path\"\napp = \"web\"\n"),
        5,
        "route[0].hash_key",
    );
    one(
        &format!("{WEB}[[route]]\nbalance = \"hash\"\napp = \"web\"\n"),
        5,
        "route[0].hash_key",
    );
}

#[test]
fn two_apps_cannot_pin_with_one_cookie() {
    const APPS: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\nsticky = true\n\n[[app]]\nname = \"api\"\ncommand = [\"./app\"]\n";
    // Both on every host: /api to one, the rest to the other.
    let text = format!("{APPS}sticky = true\n[[route]]\npath_prefix = \"/api\"\napp = \"api\"\n[[route]]\napp = \"web\"\n");
    let err = one(&text, 9, "app[1].sticky");
    assert!(
        err.message
            .contains("\"HERD_SRV\" is already app \"web\"'s on the same host"),
        "{err}"
    );
    assert!(err.hint.unwrap().contains("HERD_SRV_api"));
    ok(&format!("{APPS}sticky = {{ cookie = \"HERD_SRV_api\" }}\n[[route]]\npath_prefix = \"/api\"\napp = \"api\"\n[[route]]\napp = \"web\"\n"));
    // Apps on different hosts may share the name: a cookie goes back only to its host.
    ok(&format!("{APPS}sticky = true\n[[route]]\nhost = \"api.example.com\"\napp = \"api\"\n[[route]]\nhost = \"www.example.com\"\napp = \"web\"\n"));
    // A wildcard covers the name under it.
    one(
        &format!("{APPS}sticky = true\n[[route]]\nhost = \"*.example.com\"\napp = \"api\"\n[[route]]\nhost = \"www.example.com\"\napp = \"web\"\n"),
        9,
        "app[1].sticky",
    );
    // With no routes only the first app is reached: the second's cookie meets no one.
    ok(&format!("{APPS}sticky = true\n"));
    // A route's own sticky pins for its app.
    let err = one(
        &format!("{APPS}[[route]]\npath_prefix = \"/api\"\napp = \"api\"\nsticky = true\n[[route]]\napp = \"web\"\n"),
        12,
        "route[0].sticky",
    );
    assert!(err.message.contains("already app \"web\"'s"), "{err}");
}
