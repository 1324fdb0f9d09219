//! Validation of one `[[app]]`: name, backends (`command` or `servers`), supervision settings
//! and `[app.health]`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use toml::{Spanned, Value};

use super::values::{fmt_duration, parse_addr, resolve};
use super::Validator;
use crate::defaults as d;
use crate::model::{App, Backends, Command, Health, Instances, ServerParams};
use crate::raw::{RawApp, RawHealth, Val};
use crate::units::{instances_from_int, parse_port_range};

impl Validator<'_> {
    /// `kill_signal`: a name, with or without `SIG`, any case.
    fn kill_signal(&mut self, v: Option<&crate::raw::Str>, key: &str) -> crate::StopSignal {
        let Some(v) = v else {
            return crate::StopSignal::default();
        };
        let name = v.get_ref().trim().to_ascii_uppercase();
        let name = if name.starts_with("SIG") {
            name
        } else {
            format!("SIG{name}")
        };
        if let Some((sig, _)) = crate::StopSignal::ALL.iter().find(|(_, n)| *n == name) {
            return *sig;
        }
        let names: Vec<&str> = crate::StopSignal::ALL.iter().map(|(_, n)| *n).collect();
        self.err(
            &v.span(),
            key,
            format!("unknown kill_signal {:?}", v.get_ref()),
            Some(format!(
                "one of {} (PM2 apps listen for SIGINT: kill_signal = \"SIGINT\")",
                names.join(", ")
            )),
        );
        crate::StopSignal::default()
    }

    pub(super) fn app(
        &mut self,
        i: usize,
        app: &Spanned<RawApp>,
        names: &mut HashMap<String, (usize, Range<usize>)>,
    ) -> App {
        let p = format!("app[{i}]");
        let span = app.span();
        let a = app.get_ref();
        let name = self.app_name(i, &p, &span, a, names);

        let mut server_params = Vec::new();
        let server_defaults = self.server_defaults(&p, a);
        let backends = match (&a.command, &a.servers) {
            (Some(command), Some(servers)) => {
                self.err(
                    &servers.span(),
                    &format!("{p}.servers"),
                    "command and servers cannot be used together",
                    Some("herd either runs `command` itself or proxies to existing `servers`; pick one (use two apps for both)".into()),
                );
                self.command(&p, command, a)
            }
            (Some(command), None) => self.command(&p, command, a),
            (None, Some(servers)) => {
                for (key, key_span) in a.command_only_keys() {
                    self.err(
                        &key_span,
                        &format!("{p}.{key}"),
                        format!("{key} only applies to apps with a command"),
                        Some(format!(
                            "this app uses `servers`, which herd does not start; remove `{key}`"
                        )),
                    );
                }
                let (backends, params) = self.servers(&p, servers, server_defaults);
                server_params = params;
                backends
            }
            (None, None) => {
                self.err(
                    &span,
                    &p,
                    format!("app \"{name}\" needs either command or servers"),
                    Some("add command = [\"./your-app\"] for herd to run it, or servers = [\"10.0.0.5:80\"] to proxy to servers that already run".into()),
                );
                Backends::Servers(Vec::new())
            }
        };

        let (balance, hash_key, hash_balance_factor) = self.balancing(&p, a);
        let (protocol, error_page_503) = self.app_data_plane(&p, a);

        let worker = a.worker.as_ref().filter(|w| *w.get_ref());
        let health = match (&a.health, worker) {
            (Some(h), Some(_)) => {
                self.err(
                    &h.span(),
                    &format!("{p}.health"),
                    "a worker app has no health checks",
                    Some("worker = true means the instances serve no requests: herd counts one ready once it runs (restarts and max_memory still apply); remove [app.health], or worker if the app listens on PORT".into()),
                );
                Health::default()
            }
            (Some(h), None) => self.health(&format!("{p}.health"), h.get_ref()),
            (None, _) => Health::default(),
        };

        let max_memory = match &backends {
            Backends::Command(c) => c.max_memory,
            Backends::Servers(_) => None,
        };
        let scaling = a
            .scaling
            .as_ref()
            .map(|s| self.scaling(&format!("{p}.scaling"), s, max_memory));
        if let (Some(sc), Backends::Command(c), Some(raw)) = (&scaling, &backends, &a.scaling) {
            // The autoscaler runs up to `max` instances, each on a port of the range, with one
            // spare for a reload's start-first replacement (as `instances` is checked).
            let available = u32::from(c.port_range.1 - c.port_range.0) + 1;
            // A schedule raises the bounds while it is in force: its `min`/`max` count too.
            let peak = sc
                .schedules
                .iter()
                .flat_map(|s| [s.min, s.max])
                .flatten()
                .fold(sc.max, u32::max);
            if peak >= available {
                let span = raw
                    .get_ref()
                    .max
                    .as_ref()
                    .map_or_else(|| raw.span(), Spanned::span);
                self.err(
                    &span,
                    &format!("{p}.scaling.max"),
                    format!(
                        "{} {peak} needs {} ports (one each, plus one spare for rolling reloads) but port range {}-{} has {available}",
                        if peak > sc.max { "a schedule's instance count" } else { "scaling max" },
                        u64::from(peak) + 1,
                        c.port_range.0,
                        c.port_range.1,
                    ),
                    Some(if available >= 2 {
                        format!(
                            "keep scaling max and every schedule's min and max at most {}, or widen port_range",
                            available - 1
                        )
                    } else {
                        "widen port_range".to_owned()
                    }),
                );
            }
        }

        App {
            name,
            backends,
            balance,
            hash_key,
            hash_balance_factor,
            health,
            scaling,
            protocol,
            error_page_503,
            lb: self.load_balancing(&p, a, server_defaults, server_params),
            max_fails: self.u32(
                a.max_fails.as_ref(),
                &format!("{p}.max_fails"),
                d::MAX_FAILS,
                0,
            ),
            fail_timeout: self.duration(
                a.fail_timeout.as_ref(),
                &format!("{p}.fail_timeout"),
                d::FAIL_TIMEOUT,
                true,
            ),
        }
    }

    pub(super) fn app_name(
        &mut self,
        i: usize,
        p: &str,
        app_span: &Range<usize>,
        a: &RawApp,
        names: &mut HashMap<String, (usize, Range<usize>)>,
    ) -> String {
        let key = format!("{p}.name");
        let Some(name) = &a.name else {
            self.err(
                app_span,
                &key,
                "missing name",
                Some("add name = \"web\" (lowercase letters, digits, \"-\" and \"_\")".into()),
            );
            return format!("app{i}");
        };
        let span = name.span();
        let name = name.get_ref();
        if let Err(reason) = check_name(name) {
            let lower = name.to_ascii_lowercase().replace([' ', '.'], "-");
            let hint = if lower != *name && check_name(&lower).is_ok() {
                format!("e.g. name = \"{lower}\"")
            } else {
                "use 1 to 64 lowercase letters, digits, \"-\" and \"_\", starting with a letter or digit, e.g. \"web\" or \"api-v2\"".into()
            };
            self.err(
                &span,
                &key,
                format!("invalid app name \"{name}\": {reason}"),
                Some(hint),
            );
        } else if let Some((_, first)) = names.get(name) {
            let first = first.clone();
            self.duplicate_name(&span, &key, "app", name, &first);
        } else {
            names.insert(name.clone(), (i, span));
        }
        name.clone()
    }

    pub(super) fn command(&mut self, p: &str, command: &Val, a: &RawApp) -> Backends {
        let key = format!("{p}.command");
        let span = command.span();
        let argv = match command.get_ref() {
            Value::Array(items) => {
                let mut argv = Vec::with_capacity(items.len());
                for (j, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.contains('\0') => self.err(
                            &span,
                            &format!("{key}[{j}]"),
                            "argument contains a NUL byte",
                            None,
                        ),
                        Value::String(s) => argv.push(s.clone()),
                        other => self.err(
                            &span,
                            &format!("{key}[{j}]"),
                            format!("expected a string, found {}", other.type_str()),
                            Some("quote every argument, e.g. command = [\"./app\", \"--port\", \"3000\"]".into()),
                        ),
                    }
                }
                if items.is_empty() {
                    self.err(
                        &span,
                        &key,
                        "command must not be empty",
                        Some("give the program and its arguments, e.g. command = [\"./target/release/app\", \"--flag\"]".into()),
                    );
                } else if argv.first().is_some_and(|s| s.trim().is_empty()) {
                    self.err(
                        &span,
                        &format!("{key}[0]"),
                        "the program name is empty",
                        Some("e.g. command = [\"./target/release/app\"]".into()),
                    );
                }
                argv
            }
            Value::String(s) => {
                let words: Vec<String> = s.split_whitespace().map(|w| format!("\"{w}\"")).collect();
                self.err(
                    &span,
                    &key,
                    "command must be an array of strings",
                    Some(format!(
                        "herd never runs commands through a shell; write command = [{}]",
                        words.join(", ")
                    )),
                );
                Vec::new()
            }
            other => {
                self.err(
                    &span,
                    &key,
                    format!("expected an array of strings, found {}", other.type_str()),
                    Some("e.g. command = [\"./target/release/app\", \"--flag\"]".into()),
                );
                Vec::new()
            }
        };

        let cwd = match &a.cwd {
            Some(c) => resolve(self.base_dir, Path::new(c.get_ref())),
            None => resolve(self.base_dir, Path::new(".")),
        };
        let env = self.env(p, a);
        let (instances, instances_span) = self.instances(p, a.instances.as_ref());
        let port_range = self.port_range(p, a.port_range.as_ref());
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let wanted = instances.resolve(cores);
        let available = u32::from(port_range.1 - port_range.0) + 1;
        // One spare port: a rolling reload starts each new instance before the old one stops.
        if wanted >= available {
            let (span, key) = match &a.port_range {
                Some(r) => (r.span(), format!("{p}.port_range")),
                None => (instances_span, format!("{p}.instances")),
            };
            let what = match instances {
                Instances::Count(_) => String::new(),
                Instances::Max => format!(" (\"max\" = {cores} CPU cores)"),
                Instances::MaxMinusOne => format!(" (-1 = {cores} CPU cores - 1)"),
            };
            self.err(
                &span,
                &key,
                format!(
                    "port range {}-{} has {available} port{} but {wanted} instances{what} need one each, plus one spare for rolling reloads",
                    port_range.0,
                    port_range.1,
                    if available == 1 { "" } else { "s" }
                ),
                Some(format!(
                    "widen port_range, e.g. port_range = \"{}-{}\", or lower instances",
                    port_range.0,
                    u32::from(port_range.0).saturating_add(wanted.max(1000)).min(65535)
                )),
            );
        }
        let max_memory = match &a.max_memory {
            None => None,
            Some(v) => {
                match self.size(v, &format!("{p}.max_memory")) {
                    Some(0) => {
                        self.err(
                            &v.span(),
                            &format!("{p}.max_memory"),
                            "max_memory must be greater than 0",
                            Some("remove max_memory for no limit".into()),
                        );
                        None
                    }
                    // No process runs in less: every instance would be replaced as soon as it
                    // starts, forever. Almost always a unit left out (PM2 writes "512M").
                    Some(n) if n < 1 << 20 => {
                        self.err(
                        &v.span(),
                        &format!("{p}.max_memory"),
                        format!("max_memory is {n} bytes, under 1 MiB: no instance can run in that"),
                        Some(format!("give a unit, e.g. max_memory = \"{n}MiB\" (a bare number is bytes)")),
                    );
                        None
                    }
                    other => other,
                }
            }
        };
        let restart_delay = self.duration(
            a.restart_delay.as_ref(),
            &format!("{p}.restart_delay"),
            d::RESTART_DELAY,
            false,
        );
        let max_restart_delay = self.duration(
            a.max_restart_delay.as_ref(),
            &format!("{p}.max_restart_delay"),
            d::MAX_RESTART_DELAY,
            false,
        );
        if max_restart_delay < restart_delay {
            let (span, key) = match (&a.max_restart_delay, &a.restart_delay) {
                (Some(m), _) => (m.span(), format!("{p}.max_restart_delay")),
                (None, Some(r)) => (r.span(), format!("{p}.restart_delay")),
                (None, None) => (0..0, format!("{p}.max_restart_delay")),
            };
            self.err(
                &span,
                &key,
                format!(
                    "max_restart_delay ({}) is shorter than restart_delay ({})",
                    fmt_duration(max_restart_delay),
                    fmt_duration(restart_delay)
                ),
                Some(
                    "max_restart_delay caps the restart backoff; make it at least restart_delay"
                        .into(),
                ),
            );
        }
        Backends::Command(Command {
            argv,
            cwd,
            env,
            instances,
            port_range,
            max_memory,
            kill_timeout: self.duration(
                a.kill_timeout.as_ref(),
                &format!("{p}.kill_timeout"),
                d::KILL_TIMEOUT,
                false,
            ),
            kill_signal: self.kill_signal(a.kill_signal.as_ref(), &format!("{p}.kill_signal")),
            drain_timeout: self.duration(
                a.drain_timeout.as_ref(),
                &format!("{p}.drain_timeout"),
                d::DRAIN_TIMEOUT,
                false,
            ),
            ready_timeout: self.duration(
                a.ready_timeout.as_ref(),
                &format!("{p}.ready_timeout"),
                d::READY_TIMEOUT,
                true,
            ),
            min_uptime: self.duration(
                a.min_uptime.as_ref(),
                &format!("{p}.min_uptime"),
                d::MIN_UPTIME,
                false,
            ),
            max_restarts: self.u32(
                a.max_restarts.as_ref(),
                &format!("{p}.max_restarts"),
                d::MAX_RESTARTS,
                0,
            ),
            restart_delay,
            max_restart_delay,
            worker: a.worker.as_ref().is_some_and(|w| *w.get_ref()),
        })
    }

    /// The addresses, and each one's `weight`/`backup`/`max_conn` (parallel to them).
    pub(super) fn servers(
        &mut self,
        p: &str,
        servers: &Val,
        defaults: ServerParams,
    ) -> (Backends, Vec<ServerParams>) {
        let key = format!("{p}.servers");
        let span = servers.span();
        let items: Vec<&Value> = match servers.get_ref() {
            Value::Array(items) => items.iter().collect(),
            Value::String(_) => {
                self.err(
                    &span,
                    &key,
                    "servers must be an array",
                    Some("e.g. servers = [\"10.0.0.5:80\", \"10.0.0.6:80\"]".into()),
                );
                return (Backends::Servers(Vec::new()), Vec::new());
            }
            other => {
                self.err(
                    &span,
                    &key,
                    format!("expected an array of addresses, found {}", other.type_str()),
                    Some("e.g. servers = [\"10.0.0.5:80\", \"10.0.0.6:80\"]".into()),
                );
                return (Backends::Servers(Vec::new()), Vec::new());
            }
        };
        if items.is_empty() {
            self.err(
                &span,
                &key,
                "servers must list at least one address",
                Some("e.g. servers = [\"10.0.0.5:80\"]".into()),
            );
        }
        let mut addrs = Vec::with_capacity(items.len());
        let mut params = Vec::with_capacity(items.len());
        for (j, item) in items.into_iter().enumerate() {
            let key = format!("{key}[{j}]");
            // `{ addr = "...", weight = 3, backup = true, max_conn = 100 }` (validate/lb.rs).
            let (addr, param) = match item {
                Value::Table(t) => match self.server_table(&span, &key, t, defaults) {
                    Some((addr, param)) => (addr, param),
                    None => continue,
                },
                other => (other, defaults),
            };
            match addr {
                Value::String(s) => match parse_addr(s) {
                    Ok(addr) if addrs.contains(&addr) => self.err(
                        &span,
                        &key,
                        format!("duplicate server {addr}"),
                        Some("list each server once".into()),
                    ),
                    Ok(addr) => {
                        addrs.push(addr);
                        params.push(param);
                    }
                    Err((message, hint)) => self.err(&span, &key, message, Some(hint)),
                },
                other => self.err(
                    &span,
                    &key,
                    format!("expected an address string, found {}", other.type_str()),
                    Some(
                        "e.g. servers = [\"10.0.0.5:80\", { addr = \"10.0.0.6:80\", weight = 3 }]"
                            .into(),
                    ),
                ),
            }
        }
        (Backends::Servers(addrs), params)
    }

    pub(super) fn env(&mut self, p: &str, a: &RawApp) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(raw) = &a.env else {
            return env;
        };
        for (name, value) in raw.get_ref() {
            let key = format!("{p}.env.{name}");
            let span = value.span();
            if name.is_empty() || name.contains(['=', '\0']) {
                self.err(
                    &span,
                    &key,
                    format!("invalid environment variable name \"{name}\""),
                    Some("names must be non-empty and contain no \"=\"".into()),
                );
                continue;
            }
            // herd sets these for each instance, over the app's `env`: a value here would be
            // silently replaced.
            // (HERD_SERVICES_URL and _TOKEN too, while the services API is on:
            // `services_env_reserved`.)
            if matches!(
                name.as_str(),
                "PORT" | "HERD_APP" | "HERD_INSTANCE" | "NODE_APP_INSTANCE"
            ) {
                let hint = if name == "PORT" {
                    "remove it: herd gives each instance its own port in PORT (from port_range); make the app listen on $PORT".to_owned()
                } else {
                    format!("remove it: herd sets {name} for each instance")
                };
                self.err(
                    &span,
                    &key,
                    format!("{name} is set by herd for each instance and cannot be set in env"),
                    Some(hint),
                );
                continue;
            }
            let text = match value.get_ref() {
                Value::String(s) => s.clone(),
                Value::Integer(n) => n.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => {
                    self.err(
                        &span,
                        &key,
                        format!("expected a string, found {}", other.type_str()),
                        Some(format!("e.g. env = {{ {name} = \"value\" }}")),
                    );
                    continue;
                }
            };
            if text.contains('\0') {
                self.err(&span, &key, "value contains a NUL byte", None);
                continue;
            }
            env.insert(name.clone(), text);
        }
        env
    }

    pub(super) fn instances(&mut self, p: &str, v: Option<&Val>) -> (Instances, Range<usize>) {
        let Some(v) = v else {
            return (d::INSTANCES, 0..0);
        };
        let key = format!("{p}.instances");
        let span = v.span();
        let parsed = match v.get_ref() {
            Value::Integer(n) => instances_from_int(*n),
            Value::String(s) => s.parse::<Instances>(),
            other => Err(format!(
                "expected a number, \"max\" or -1, found {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(n) => (n, span),
            Err(message) => {
                let hint = if matches!(v.get_ref(), Value::Integer(0)) {
                    "use \"max\" for one instance per CPU core".to_owned()
                } else {
                    "use a count >= 1, \"max\" (one per CPU core) or -1 (one per CPU core, minus one)"
                        .to_owned()
                };
                self.err(&span, &key, message, Some(hint));
                (d::INSTANCES, span)
            }
        }
    }

    pub(super) fn port_range(&mut self, p: &str, v: Option<&Val>) -> (u16, u16) {
        let Some(v) = v else {
            return d::PORT_RANGE;
        };
        let key = format!("{p}.port_range");
        let parsed = match v.get_ref() {
            Value::String(s) => {
                parse_port_range(s).map_err(|e| format!("invalid port range \"{s}\": {e}"))
            }
            Value::Integer(n) => {
                parse_port_range(&n.to_string()).map_err(|e| format!("invalid port range {n}: {e}"))
            }
            other => Err(format!(
                "expected a port range string, found {}",
                other.type_str()
            )),
        };
        parsed.unwrap_or_else(|message| {
            self.err(
                &v.span(),
                &key,
                message,
                Some("use \"START-END\" with ports from 1 to 65535, e.g. \"20000-20999\"".into()),
            );
            d::PORT_RANGE
        })
    }

    pub(super) fn health(&mut self, p: &str, h: &RawHealth) -> Health {
        let mut path = None;
        if let Some(raw) = &h.path {
            let s = raw.get_ref();
            if !s.starts_with('/') {
                self.err(
                    &raw.span(),
                    &format!("{p}.path"),
                    format!("health path \"{s}\" must start with '/'"),
                    Some(format!(
                        "e.g. path = \"/{}\"; remove path for a TCP connect check",
                        s.trim_start_matches('/')
                    )),
                );
            } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.err(
                    &raw.span(),
                    &format!("{p}.path"),
                    format!("health path {s:?} contains whitespace"),
                    Some("percent-encode spaces as %20".into()),
                );
            } else {
                path = Some(s.clone());
            }
        }
        Health {
            path,
            interval: self.duration(
                h.interval.as_ref(),
                &format!("{p}.interval"),
                d::HEALTH_INTERVAL,
                true,
            ),
            fastinter: self.duration(
                h.fastinter.as_ref(),
                &format!("{p}.fastinter"),
                d::HEALTH_FASTINTER,
                true,
            ),
            timeout: self.duration(
                h.timeout.as_ref(),
                &format!("{p}.timeout"),
                d::HEALTH_TIMEOUT,
                true,
            ),
            rise: self.u32(h.rise.as_ref(), &format!("{p}.rise"), d::HEALTH_RISE, 1),
            fall: self.u32(h.fall.as_ref(), &format!("{p}.fall"), d::HEALTH_FALL, 1),
            downinter: h.downinter.as_ref().map(|v| {
                self.duration(Some(v), &format!("{p}.downinter"), d::HEALTH_INTERVAL, true)
            }),
            expect_status: self.expect_status(p, h.expect_status.as_ref()),
        }
    }
}

/// App names end up in log file names, metrics and CLI arguments: keep them simple.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name must not be empty");
    }
    if name.len() > 64 {
        return Err("name is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("only lowercase letters, digits, \"-\" and \"_\" are allowed");
    }
    if name.starts_with(['-', '_']) {
        return Err("name must start with a letter or digit");
    }
    Ok(())
}

impl Validator<'_> {
    /// An app's `port_range` must not hold a port herd listens on itself: an instance given
    /// that port could not bind it, and would restart for ever.
    pub(super) fn port_ranges_clear_of(
        &mut self,
        raw: &crate::raw::RawConfig,
        apps: &[App],
        listeners: &[(&str, std::net::SocketAddr)],
    ) {
        for (i, app) in apps.iter().enumerate() {
            let Backends::Command(c) = &app.backends else {
                continue;
            };
            let (lo, hi) = c.port_range;
            for (key, addr) in listeners {
                let port = addr.port();
                if port == 0 || port < lo || port > hi {
                    continue;
                }
                let Some(whole) = raw.app.get(i) else {
                    continue;
                };
                let r = whole.get_ref();
                let (span, at) = match &r.port_range {
                    Some(p) => (p.span(), format!("app[{i}].port_range")),
                    None => (whole.span(), format!("app[{i}]")),
                };
                let given = if r.port_range.is_some() {
                    ""
                } else {
                    " (the default)"
                };
                self.err(
                    &span,
                    &at,
                    format!("port range {lo}-{hi}{given} holds port {port}, where herd listens itself ({key} = {addr})"),
                    Some(format!(
                        "give the app a port_range clear of herd's listeners, e.g. port_range = \"{}-{}\"",
                        if port >= 30000 { 20000 } else { 30000 },
                        if port >= 30000 { 20999 } else { 30999 },
                    )),
                );
            }
        }
    }
}

impl Validator<'_> {
    /// With the services API on, herd passes `HERD_SERVICES_URL` and `HERD_SERVICES_TOKEN` to
    /// every instance, over the app's `env` (with it off, an app may point them elsewhere).
    pub(super) fn services_env_reserved(&mut self, raw: &crate::raw::RawConfig, enabled: bool) {
        if !enabled {
            return;
        }
        for (i, app) in raw.app.iter().enumerate() {
            let Some(env) = &app.get_ref().env else {
                continue;
            };
            for (name, value) in env.get_ref() {
                if name == "HERD_SERVICES_URL" || name == "HERD_SERVICES_TOKEN" {
                    self.err(
                        &value.span(),
                        &format!("app[{i}].env.{name}"),
                        format!("{name} is set by herd for each instance while [services] is enabled, and cannot be set in env"),
                        Some(format!("remove it, or set [services] enabled = false to pass your own {name}")),
                    );
                }
            }
        }
    }
}
