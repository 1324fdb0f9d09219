//! Turns the raw file structs into the typed [`Config`]: parses values, fills in defaults,
//! resolves paths and cross-references, and collects every problem (with location, key and
//! hint) instead of stopping at the first one.
//!
//! This module holds the entry point and the top-level sections (`[gateway]`, `[admin]`,
//! `[logs]`, `[[route]]`); `app` validates one `[[app]]`, `scaling` its `[app.scaling]`, `alerts`
//! `[alerts]` and `[[alert]]`, `values` single values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::defaults as d;
use crate::error::{closest, ConfigError, ConfigErrors, Source};
use crate::model::{Admin, Config, Gateway, Route};
use crate::raw::{RawConfig, RawRoute, Str, Val};

mod alerts;
mod app;
mod balance;
mod data_plane;
mod lb;
mod logs;
mod paths;
mod rate_limit;
mod route;
mod scaling;
mod store;
mod tls;
mod values;

pub(crate) use values::resolve;

/// Validates a raw config. `base_dir` is where relative paths (`cwd`, `logs.dir`) start from.
pub(crate) fn validate(
    raw: &RawConfig,
    src: &Source<'_>,
    base_dir: &Path,
    env: &crate::Env,
) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        src,
        base_dir,
        env,
        errors: Vec::new(),
    };
    let gateway = v.gateway(raw);
    let admin = v.admin(raw, gateway.listen);
    let logs = v.logs(raw);

    if raw.app.is_empty() {
        v.err(
            &(0..0),
            "app",
            "at least one [[app]] is required",
            Some("add an app: [[app]] with name = \"web\" and command = [\"./your-app\"]".into()),
        );
    }
    let mut apps = Vec::with_capacity(raw.app.len());
    // First definition of each app name: name -> (index, span).
    let mut names: HashMap<String, (usize, Range<usize>)> = HashMap::new();
    for (i, app) in raw.app.iter().enumerate() {
        apps.push(v.app(i, app, &mut names));
    }
    let mut known: Vec<(&str, usize)> = names.iter().map(|(n, (i, _))| (n.as_str(), *i)).collect();
    known.sort_by_key(|(_, i)| *i);
    let routes: Vec<crate::Route> = raw
        .route
        .iter()
        .enumerate()
        .filter_map(|(i, r)| v.route(i, r, &known))
        .collect();
    for (r, route) in raw.route.iter().zip(0..) {
        let Some(name) = &r.get_ref().app else {
            continue;
        };
        let worker = raw.app.iter().any(|a| {
            let a = a.get_ref();
            a.name
                .as_ref()
                .is_some_and(|n| n.get_ref() == name.get_ref())
                && a.worker.as_ref().is_some_and(|w| *w.get_ref())
        });
        if worker {
            v.err(
                &name.span(),
                &format!("route[{route}].app"),
                format!("route to worker app \"{}\"", name.get_ref()),
                Some("a worker app (worker = true) serves no requests; route to an app that listens on PORT".into()),
            );
        }
    }
    v.route_names(raw);
    v.routes_after_a_catch_all(raw, &routes);
    v.sticky_cookies_apart(raw, &apps, &routes);
    v.hash_factor_used(raw, &apps, &routes);
    let alerts = v.alerts(raw, &apps);
    let rate_limits = v.rate_limits(raw, &known);
    v.paths_normalised(raw, gateway.merge_slashes);
    let store = v.store(raw);
    let services = v.services(raw);
    v.shared_limits_need_the_store(raw, &services);
    v.services_listen(raw, &services, &gateway, &admin);
    v.redirect_listen(raw, &gateway, &admin, &services);
    let mut listeners = vec![
        ("gateway.listen", gateway.listen),
        ("admin.listen", admin.listen),
    ];
    if services.enabled {
        listeners.push(("services.listen", services.listen));
    }
    if let Some(r) = gateway.redirect_http {
        listeners.push(("gateway.redirect_http", r));
    }
    v.port_ranges_clear_of(raw, &apps, &listeners);
    v.services_env_reserved(raw, services.enabled);

    if v.errors.is_empty() {
        Ok(Config {
            gateway,
            admin,
            apps,
            routes,
            logs,
            alerts,
            rate_limits,
            store,
            services,
        })
    } else {
        let mut errors = v.errors;
        errors.sort_by_key(|e| (e.line, e.col));
        Err(ConfigErrors(errors))
    }
}

/// Two listeners that cannot both bind: the same port on the same address, or on a wildcard
/// (`0.0.0.0` takes the port on every IPv4 address, `[::]` on every address).
pub(crate) fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let wildcard =
        |x: SocketAddr, y: SocketAddr| x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || wildcard(a, b) || wildcard(b, a))
}

struct Validator<'a> {
    src: &'a Source<'a>,
    base_dir: &'a Path,
    env: &'a crate::Env,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn err(
        &mut self,
        span: &Range<usize>,
        key: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors.push(self.src.error(span, key, message, hint));
    }

    /// Reports `name` (a `what` name at `span`) as already used at `first`.
    fn duplicate_name(
        &mut self,
        span: &Range<usize>,
        key: &str,
        what: &str,
        name: &str,
        first: &Range<usize>,
    ) {
        let (line, _) = self.src.locate(first.start);
        let at = if line > 0 {
            format!(" (first defined on line {line})")
        } else {
            String::new()
        };
        self.err(
            span,
            key,
            format!("duplicate {what} name \"{name}\"{at}"),
            Some(format!("{what} names must be unique; rename one of them")),
        );
    }

    // ----- sections -------------------------------------------------------------------------

    fn gateway(&mut self, raw: &RawConfig) -> Gateway {
        let Some(g) = &raw.gateway else {
            return Gateway::default();
        };
        if let (Some(r), None) = (&g.redirect_http, &g.tls) {
            // It sends every client to https:// on the gateway's port, which would then speak
            // plain HTTP: a redirect no browser can follow.
            self.err(
                &r.span(),
                "gateway.redirect_http",
                "redirect_http sends clients to https:// on the gateway's port, but the gateway has no [gateway.tls]",
                Some("add [gateway.tls] with cert and key, or remove redirect_http".into()),
            );
        }
        Gateway {
            listen: self.addr(g.listen.as_ref(), "gateway.listen", d::GATEWAY_LISTEN),
            connect_timeout: self.duration(
                g.connect_timeout.as_ref(),
                "gateway.connect_timeout",
                d::CONNECT_TIMEOUT,
                true,
            ),
            response_timeout: self.duration(
                g.response_timeout.as_ref(),
                "gateway.response_timeout",
                d::RESPONSE_TIMEOUT,
                true,
            ),
            pool_idle_timeout: self.duration(
                g.pool_idle_timeout.as_ref(),
                "gateway.pool_idle_timeout",
                d::POOL_IDLE_TIMEOUT,
                false,
            ),
            pool_max_idle: self.usize(
                g.pool_max_idle.as_ref(),
                "gateway.pool_max_idle",
                d::POOL_MAX_IDLE,
            ),
            shutdown_timeout: self.duration(
                g.shutdown_timeout.as_ref(),
                "gateway.shutdown_timeout",
                d::SHUTDOWN_TIMEOUT,
                false,
            ),
            max_conn_per_ip: self.u32(
                g.max_conn_per_ip.as_ref(),
                "gateway.max_conn_per_ip",
                d::MAX_CONN_PER_IP,
                0,
            ),
            client_header_timeout: self.duration(
                g.client_header_timeout.as_ref(),
                "gateway.client_header_timeout",
                d::CLIENT_HEADER_TIMEOUT,
                true,
            ),
            client_body_timeout: self.duration(
                g.client_body_timeout.as_ref(),
                "gateway.client_body_timeout",
                d::CLIENT_BODY_TIMEOUT,
                true,
            ),
            max_connections: self.usize(g.max_connections.as_ref(), "gateway.max_connections", 0),
            max_header_size: self.max_header_size(g.max_header_size.as_ref()),
            max_body_size: g
                .max_body_size
                .as_ref()
                .and_then(|v| self.size(v, "gateway.max_body_size"))
                .filter(|&n| n > 0),
            security_headers: g.security_headers.as_ref().is_some_and(|b| *b.get_ref()),
            merge_slashes: g.merge_slashes.as_ref().is_none_or(|b| *b.get_ref()),
            max_headers: self.max_headers(g.max_headers.as_ref()),
            proxy_protocol: g.proxy_protocol.as_ref().is_some_and(|b| *b.get_ref()),
            proxy_protocol_from: self.proxy_protocol_from(g),
            tunnel_idle_timeout: self.duration(
                g.tunnel_idle_timeout.as_ref(),
                "gateway.tunnel_idle_timeout",
                d::TUNNEL_IDLE_TIMEOUT,
                true,
            ),
            tls: g.tls.as_ref().and_then(|t| self.tls(t)),
            redirect_http: g
                .redirect_http
                .as_ref()
                .map(|v| self.addr(Some(v), "gateway.redirect_http", d::GATEWAY_LISTEN)),
            data_plane: self.data_plane(g),
            sticky_secret: g.sticky_secret.as_ref().and_then(|s| self.sticky_secret(s)),
        }
    }

    fn max_header_size(&mut self, v: Option<&Val>) -> u64 {
        let key = "gateway.max_header_size";
        match v.map(|v| (v, self.size(v, key))) {
            None | Some((_, None)) => d::MAX_HEADER_SIZE,
            Some((v, Some(n))) if n < d::MIN_HEADER_SIZE => {
                self.err(
                    &v.span(),
                    key,
                    format!("max_header_size must be at least 8KiB, got {n} bytes"),
                    Some("e.g. max_header_size = \"64KiB\"".into()),
                );
                d::MAX_HEADER_SIZE
            }
            Some((_, Some(n))) => n,
        }
    }

    /// A bearer token (`[admin]`, `[services]`): at least 16 characters, all visible ASCII, so
    /// that it can be sent in a header as written (a space at either end, or a letter outside
    /// ASCII, made a token no client could ever present).
    fn token(&mut self, t: &Str, key: &str) -> Option<String> {
        let value = t.get_ref();
        let problem = if value.len() < 16 {
            Some("token must be at least 16 characters".to_owned())
        } else {
            value
                .chars()
                .find(|c| !c.is_ascii_graphic())
                .map(|c| format!("token must be visible ASCII characters only, found {c:?}"))
        };
        match problem {
            Some(message) => {
                self.err(
                    &t.span(),
                    key,
                    message,
                    Some(
                        "use a long random string without spaces, e.g. from `openssl rand -hex 32`"
                            .into(),
                    ),
                );
                None
            }
            None => Some(value.clone()),
        }
    }

    /// The admin API left on its default address, which `gateway.listen` takes: reported at
    /// the gateway's key, where the address was written.
    fn admin_default_taken(&mut self, raw: &RawConfig, gateway_listen: SocketAddr) {
        if !clash(Admin::default().listen, gateway_listen) {
            return;
        }
        let span = raw
            .gateway
            .as_ref()
            .and_then(|g| g.listen.as_ref())
            .map_or(0..0, Spanned::span);
        self.err(
            &span,
            "gateway.listen",
            format!("gateway.listen {gateway_listen} is the admin API's default address"),
            Some("give the gateway another port, or move the admin API: [admin] listen = \"127.0.0.1:9095\"".into()),
        );
    }

    /// `HERD_ADMIN_TOKEN` from herd's environment, checked as a token written in the file;
    /// an error names the variable, with no position in the file.
    fn env_admin_token(&mut self) -> Option<String> {
        let t = self.env.admin_token.clone()?;
        let before = self.errors.len();
        let token = self.token(&Spanned::new(0..0, t), "HERD_ADMIN_TOKEN");
        for e in &mut self.errors[before..] {
            (e.line, e.col) = (0, 0);
            e.message = format!("(from herd's environment) {}", e.message);
        }
        token
    }

    fn admin(&mut self, raw: &RawConfig, gateway_listen: SocketAddr) -> Admin {
        let Some(a) = &raw.admin else {
            self.admin_default_taken(raw, gateway_listen);
            return Admin {
                token: self.env_admin_token(),
                ..Admin::default()
            };
        };
        let listen = self.addr(a.listen.as_ref(), "admin.listen", d::ADMIN_LISTEN);
        let listen_span = a.listen.as_ref().map_or(0..0, Spanned::span);
        // The environment's token wins over the file's, as it does for the CLI (which sends
        // `HERD_ADMIN_TOKEN` before the file's): both ends then agree. The file's is checked
        // all the same.
        let file_token = a.token.as_ref().and_then(|t| self.token(t, "admin.token"));
        let token = match self.env.admin_token {
            Some(_) => self.env_admin_token(),
            None => file_token,
        };
        if token.is_none()
            && a.token.is_none()
            && self.env.admin_token.is_none()
            && !listen.ip().is_loopback()
        {
            self.err(
                &listen_span,
                "admin.token",
                format!(
                    "a token is required because admin.listen {listen} is not a loopback address"
                ),
                Some(
                    "set token = \"<long random string>\" in [admin] (or HERD_ADMIN_TOKEN in herd's environment), or listen on a loopback address such as 127.0.0.1:9090"
                        .into(),
                ),
            );
        }
        if a.listen.is_none() {
            self.admin_default_taken(raw, gateway_listen);
        } else if clash(listen, gateway_listen) {
            self.err(
                &listen_span,
                "admin.listen",
                format!("admin.listen {listen} clashes with gateway.listen {gateway_listen}"),
                Some(
                    "give the admin API a port of its own, e.g. listen = \"127.0.0.1:9095\"".into(),
                ),
            );
        }
        Admin { listen, token }
    }

    fn route(
        &mut self,
        i: usize,
        route: &Spanned<RawRoute>,
        known: &[(&str, usize)],
    ) -> Option<Route> {
        let p = format!("route[{i}]");
        let r = route.get_ref();
        let mut ok = true;

        let host = match &r.host {
            None => None,
            Some(h) => {
                let s = h.get_ref().trim();
                let problem = if s.is_empty() {
                    Some("host must not be empty")
                } else if s.contains(|c: char| c.is_whitespace() || c == '/') {
                    Some("host must be a bare host name")
                } else if s.rsplit_once(':').is_some_and(|(name, port)| {
                    !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit())
                }) {
                    Some("host must not include a port")
                } else if s.starts_with('.') {
                    Some("nginx's \".example.com\" form is not supported: write \"*.example.com\" for the subdomains, and a second route with \"example.com\" for the name itself")
                } else if s.starts_with('~') {
                    Some("host takes no regular expression (nginx's \"~\" form): use an exact name or one leading wildcard, \"*.example.com\", one route per pattern")
                } else {
                    route::wildcard_problem(s)
                };
                if let Some(problem) = problem {
                    ok = false;
                    self.err(
                        &h.span(),
                        &format!("{p}.host"),
                        format!("invalid host {:?}: {problem}", h.get_ref()),
                        Some("use the host name only, e.g. host = \"api.example.com\" or \"*.example.com\"; the request's port is ignored when matching".into()),
                    );
                    None
                } else {
                    Some(s.to_ascii_lowercase())
                }
            }
        };

        let path_prefix = match &r.path_prefix {
            None => None,
            Some(pp) if !pp.get_ref().starts_with('/') => {
                ok = false;
                self.err(
                    &pp.span(),
                    &format!("{p}.path_prefix"),
                    format!("path_prefix \"{}\" must start with '/'", pp.get_ref()),
                    Some(format!(
                        "e.g. path_prefix = \"/{}\"",
                        pp.get_ref().trim_start_matches('/')
                    )),
                );
                None
            }
            Some(pp) => Some(pp.get_ref().clone()),
        };

        let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
        let known_hint = || {
            if names.is_empty() {
                "no apps are defined".to_owned()
            } else {
                format!("known apps: {}", names.join(", "))
            }
        };
        let app = match &r.app {
            None => {
                self.err(
                    &route.span(),
                    &format!("{p}.app"),
                    "missing app",
                    Some(format!("add app = \"<name>\"; {}", known_hint())),
                );
                None
            }
            Some(name) => match known.iter().find(|(n, _)| *n == name.get_ref()) {
                Some((_, idx)) => Some(*idx),
                None => {
                    let mut hint = String::new();
                    if let Some(best) = closest(name.get_ref(), &names) {
                        hint.push_str(&format!("did you mean \"{best}\"? "));
                    }
                    hint.push_str(&known_hint());
                    self.err(
                        &name.span(),
                        &format!("{p}.app"),
                        format!("route to unknown app \"{}\"", name.get_ref()),
                        Some(hint),
                    );
                    None
                }
            },
        };
        let errors = self.errors.len();
        let rest = self.route_rest(&p, r);
        // Uses only values that passed their own checks (a bad one is `None` here).
        self.route_reachable(&p, r, path_prefix.as_deref(), &rest);
        match (ok && self.errors.len() == errors, app) {
            (true, Some(app)) => Some(Route {
                host,
                path_prefix,
                app,
                ..rest
            }),
            _ => None,
        }
    }
}
