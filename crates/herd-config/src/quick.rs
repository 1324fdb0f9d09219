//! Quick mode: the config for `herd up -i N --port P --admin ADDR --name NAME -- CMD...`,
//! built without a file and validated through the same path as a file.

use std::net::SocketAddr;
use std::path::Path;

use toml::{Spanned, Value};

use crate::error::{ConfigErrors, Source};
use crate::model::{Config, Instances};
use crate::raw::{RawAdmin, RawApp, RawConfig, RawGateway};
use crate::validate::validate;

/// The `file` reported in quick-mode errors.
const QUICK_FILE: &str = "command line";

/// What quick mode takes from the command line.
#[derive(Debug, Clone)]
pub struct Quick {
    /// The app's program and arguments.
    pub argv: Vec<String>,
    /// `-i/--instances`.
    pub instances: Instances,
    /// `--port`: the gateway listens on `127.0.0.1:port`.
    pub port: u16,
    /// `--admin`.
    pub admin: SocketAddr,
    /// `--services`.
    pub services: SocketAddr,
    /// `--name`.
    pub name: String,
    /// `--port-range`, as in a file (`"20000-20999"`); `None` for the default.
    pub port_range: Option<String>,
    /// `--worker`: the app serves no requests (`worker = true`).
    pub worker: bool,
}

impl Quick {
    /// `herd up -- argv...` with every flag at its default.
    #[must_use]
    pub fn new(argv: Vec<String>, name: &str) -> Quick {
        Quick {
            argv,
            instances: Instances::Count(1),
            port: 8080,
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            services: SocketAddr::from(([127, 0, 0, 1], 9091)),
            name: name.to_owned(),
            port_range: None,
            worker: false,
        }
    }
}

/// Builds the config for the no-file CLI mode: the gateway listens on `127.0.0.1:port`, one app
/// named `name` runs `argv` (`instances` of it, in `base_dir`), and everything else takes its
/// default (TCP health check, round robin, logs in `base_dir/.herd/logs`).
///
/// Errors carry the file `command line`, no line/column, and the CLI flag as the key
/// (`--name`, `--instances`, `--port`, `--admin`, `--port-range`, `command`).
///
/// # Errors
/// The same validation errors as a config file would get, e.g. an invalid name, an empty
/// command, or a non-loopback `--admin` address (which needs a token, so a config file).
pub fn quick(q: Quick, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let Quick {
        argv,
        instances,
        port,
        admin,
        services,
        name,
        port_range,
        worker,
    } = q;
    let instances = match instances {
        Instances::Count(n) => Value::Integer(i64::from(n)),
        Instances::Max => Value::String("max".to_owned()),
        Instances::MaxMinusOne => Value::Integer(-1),
    };
    let raw = RawConfig {
        gateway: Some(RawGateway {
            listen: Some(synthetic(Value::String(format!("127.0.0.1:{port}")))),
            ..RawGateway::default()
        }),
        admin: Some(RawAdmin {
            listen: Some(synthetic(Value::String(admin.to_string()))),
            token: None,
        }),
        logs: None,
        services: Some(crate::raw::RawServices {
            listen: Some(synthetic(Value::String(services.to_string()))),
            ..crate::raw::RawServices::default()
        }),
        app: vec![synthetic(RawApp {
            name: Some(synthetic(name)),
            command: Some(synthetic(Value::Array(
                argv.into_iter().map(Value::String).collect(),
            ))),
            instances: Some(synthetic(instances)),
            port_range: port_range.map(|r| synthetic(Value::String(r))),
            worker: worker.then(|| synthetic(true)),
            ..RawApp::default()
        })],
        ..RawConfig::default()
    };
    validate(
        &raw,
        &Source::synthetic(QUICK_FILE),
        base_dir,
        &crate::Env::from_process(),
    )
    .map_err(|mut errors| {
        for err in &mut errors.0 {
            err.key = cli_flag(&err.key).to_owned();
            if let Some(hint) = &mut err.hint {
                *hint = cli_hint(hint, &err.key);
            }
        }
        errors
    })
}

fn synthetic<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// A hint written for a config file, in the command line's terms: `port_range = "A-B"` is
/// `--port-range A-B`, `name = "x"` is `--name x`, `instances` is `-i`.
fn cli_hint(hint: &str, flag: &str) -> String {
    let mut out = hint.to_owned();
    // A listener's `listen = "IP:PORT"` is the flag the error is about (`--admin`, ...).
    let listen = if flag.starts_with("--") {
        flag
    } else {
        "--admin"
    };
    for (key, flag) in [
        ("port_range", "--port-range"),
        ("name", "--name"),
        ("listen", listen),
    ] {
        let prefix = format!("{key} = \"");
        while let Some(at) = out.find(&prefix) {
            let value_at = at + prefix.len();
            let Some(len) = out[value_at..].find('"') else {
                break;
            };
            let value = out[value_at..value_at + len].to_owned();
            out.replace_range(at..value_at + len + 1, &format!("{flag} {value}"));
        }
    }
    out.replace("lower instances", "lower -i")
        .replace("widen port_range", "widen --port-range")
}

/// Maps a config key to the CLI flag it came from in quick mode.
fn cli_flag(key: &str) -> &str {
    if key.starts_with("gateway.") {
        "--port"
    } else if key.starts_with("admin.") {
        "--admin"
    } else if key.starts_with("services.") {
        "--services"
    } else if key == "app[0].name" {
        "--name"
    } else if key == "app[0].port_range" {
        "--port-range"
    } else if key == "app[0].instances" {
        "--instances"
    } else if key.starts_with("app[0].command") {
        "command"
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backends, Balance};
    use std::path::PathBuf;

    #[test]
    fn hints_speak_the_command_line() {
        assert_eq!(
            cli_hint(
                "widen port_range, e.g. port_range = \"31510-32510\", or lower instances",
                "--port-range"
            ),
            "widen --port-range, e.g. --port-range 31510-32510, or lower -i"
        );
        assert_eq!(
            cli_hint("e.g. name = \"bad-name\"", "--name"),
            "e.g. --name bad-name"
        );
        assert_eq!(
            cli_hint("e.g. listen = \"127.0.0.1:9095\"", "--admin"),
            "e.g. --admin 127.0.0.1:9095"
        );
    }

    #[test]
    fn builds_a_default_config() {
        let cfg = quick(
            Quick {
                instances: Instances::Count(4),
                port: 3000,
                ..Quick::new(vec!["node".into(), "server.js".into()], "web")
            },
            Path::new("/srv/app"),
        )
        .unwrap();
        assert_eq!(cfg.gateway.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(cfg.admin.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(cfg.admin.token, None);
        assert_eq!(cfg.logs.dir, PathBuf::from("/srv/app/.herd/logs"));
        assert!(cfg.routes.is_empty());
        assert_eq!(cfg.apps.len(), 1);
        let app = &cfg.apps[0];
        assert_eq!(app.name, "web");
        assert_eq!(app.balance, Balance::RoundRobin);
        assert_eq!(app.health.path, None, "quick mode uses a TCP check");
        let Backends::Command(cmd) = &app.backends else {
            panic!("expected a command app");
        };
        assert_eq!(cmd.argv, ["node", "server.js"]);
        assert_eq!(cmd.instances, Instances::Count(4));
        assert_eq!(cmd.cwd, PathBuf::from("/srv/app"));
        assert_eq!(cmd.port_range, (20000, 20999));
    }

    #[test]
    fn max_instances() {
        let cfg = quick(
            Quick {
                instances: Instances::Max,
                port_range: Some("41000-41099".into()),
                ..Quick::new(vec!["./app".into()], "web")
            },
            Path::new("."),
        )
        .unwrap();
        let Backends::Command(cmd) = &cfg.apps[0].backends else {
            panic!("expected a command app");
        };
        assert_eq!(cmd.instances, Instances::Max);
        assert_eq!(cmd.port_range, (41000, 41099));
    }

    #[test]
    fn reports_cli_flags() {
        let errs = quick(
            Quick {
                instances: Instances::Count(0),
                admin: "0.0.0.0:9090".parse().unwrap(),
                port_range: Some("9-x".into()),
                ..Quick::new(vec![], "My App")
            },
            Path::new("."),
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"--name"), "{errs}");
        assert!(keys.contains(&"--instances"), "{errs}");
        assert!(keys.contains(&"--admin"), "{errs}");
        assert!(keys.contains(&"--port-range"), "{errs}");
        assert!(keys.contains(&"command"), "{errs}");
        for err in &errs.0 {
            assert_eq!(
                (err.file.as_str(), err.line, err.col),
                ("command line", 0, 0)
            );
        }
        assert!(errs.to_string().starts_with("command line: "), "{errs}");
    }
}
