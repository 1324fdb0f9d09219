//! Config reload (`SIGHUP`, `POST /config/reload`): validate the file again; if it is valid,
//! apply it to the gateway (atomically swapped tables) and then to the supervisor (apps added,
//! removed, changed); if not, report every error and keep the running config.

use std::path::PathBuf;
use std::sync::Arc;

use herd_admin::{ConfigReloader, ReloadFuture, ReloadReport};
use herd_config::Config;
use herd_fleet::Fleet;
use herd_proxy::Gateway;

pub(crate) struct FileReloader {
    pub(crate) path: PathBuf,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) alerts: Arc<std::sync::Mutex<herd_alerts::AlertEngine>>,
    pub(crate) notifier: herd_alerts::Notifier,
    /// The config in force; one reload at a time.
    pub(crate) current: tokio::sync::Mutex<Config>,
}

fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.gateway.listen != new.gateway.listen {
        out.push(format!(
            "gateway.listen {} (still serving on {})",
            new.gateway.listen, old.gateway.listen
        ));
    }
    if old.gateway.tls.is_some() != new.gateway.tls.is_some()
        || old.gateway.redirect_http != new.gateway.redirect_http
    {
        out.push(
            "[gateway.tls] added or removed, or redirect_http (certificates, paths and SNI entries reload live)"
                .to_owned(),
        );
    }
    if old.gateway.proxy_protocol != new.gateway.proxy_protocol
        || old.gateway.proxy_protocol_from != new.gateway.proxy_protocol_from
        || old.gateway.client_header_timeout != new.gateway.client_header_timeout
        || old.gateway.max_connections != new.gateway.max_connections
        || old.gateway.max_header_size != new.gateway.max_header_size
        || old.gateway.max_headers != new.gateway.max_headers
    {
        out.push(
            "gateway.proxy_protocol(_from), client_header_timeout, max_connections, \
             max_header_size or max_headers (read at start)"
                .to_owned(),
        );
    }
    let (od, nd) = (&old.gateway.data_plane, &new.gateway.data_plane);
    if od.threads != nd.threads
        || od.access_log != nd.access_log
        || od.idle_timeout != nd.idle_timeout
        || od.idle_release != nd.idle_release
    {
        out.push(
            "gateway.threads, access_log, idle_timeout or idle_release (read at start)".to_owned(),
        );
    }
    if old.admin.listen != new.admin.listen {
        out.push(format!(
            "admin.listen {} (still serving on {})",
            new.admin.listen, old.admin.listen
        ));
    }
    if old.admin.token != new.admin.token {
        out.push("admin.token (the old token stays valid until a restart)".to_owned());
    }
    if old.alerts.webhooks != new.alerts.webhooks
        || old.alerts.webhook_timeout != new.alerts.webhook_timeout
        || old.alerts.webhook_retries != new.alerts.webhook_retries
    {
        out.push("[alerts] webhook delivery settings (rules reload live)".to_owned());
    }
    let rule_hooks = |c: &Config| {
        let mut v: Vec<_> = c
            .alerts
            .rules
            .iter()
            .filter(|r| !r.webhooks.is_empty())
            .map(|r| (r.name.clone(), r.webhooks.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if rule_hooks(old) != rule_hooks(new) {
        out.push("[[alert]] webhooks (the rules' other keys reload live)".to_owned());
    }
    if old.store != new.store {
        out.push("[store] (the store in use stays open until a restart)".to_owned());
    }
    if old.logs != new.logs {
        out.push(
            "[logs] (the instances' log files keep their settings until a restart)".to_owned(),
        );
    }
    if old.services != new.services {
        out.push(
            "[services] (listen, token, limits and cache strategies apply at start)".to_owned(),
        );
    }
    out
}

/// The config now in force: `new`, except the settings read only at start (those
/// [`needs_restart`] lists), which keep their running values. So a later reload compares with
/// what really runs: the same file again reports the same pending restart, and a file that
/// goes back to the running value reports nothing.
fn in_force(old: &Config, mut new: Config) -> Config {
    let (o, n) = (&old.gateway, &mut new.gateway);
    n.listen = o.listen;
    if o.tls.is_some() != n.tls.is_some() {
        n.tls.clone_from(&o.tls);
    }
    n.redirect_http = o.redirect_http;
    n.proxy_protocol = o.proxy_protocol;
    n.proxy_protocol_from.clone_from(&o.proxy_protocol_from);
    n.client_header_timeout = o.client_header_timeout;
    n.max_connections = o.max_connections;
    n.max_header_size = o.max_header_size;
    n.max_headers = o.max_headers;
    n.data_plane.threads = o.data_plane.threads;
    n.data_plane.access_log.clone_from(&o.data_plane.access_log);
    n.data_plane.idle_timeout = o.data_plane.idle_timeout;
    n.data_plane.idle_release = o.data_plane.idle_release;
    new.admin.listen = old.admin.listen;
    new.admin.token.clone_from(&old.admin.token);
    new.alerts.webhooks.clone_from(&old.alerts.webhooks);
    new.alerts.webhook_timeout = old.alerts.webhook_timeout;
    new.alerts.webhook_retries = old.alerts.webhook_retries;
    // A rule's own webhooks are the ones its running name had (none for a new name).
    for rule in &mut new.alerts.rules {
        rule.webhooks = old
            .alerts
            .rules
            .iter()
            .find(|r| r.name == rule.name)
            .map(|r| r.webhooks.clone())
            .unwrap_or_default();
    }
    new.store.clone_from(&old.store);
    new.services.clone_from(&old.services);
    new.logs.clone_from(&old.logs);
    new
}

/// The `[gateway]` settings and `[[rate_limit]]` zones that changed and apply at once (new
/// requests use them; backend connections opened from now on use the pool settings).
fn live_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.gateway, &new.gateway);
    let (od, nd) = (&o.data_plane, &n.data_plane);
    // Kept by each instance's connection pool from when the instance joined.
    let pooled: Vec<&str> = [
        ("connect_timeout", o.connect_timeout != n.connect_timeout),
        (
            "pool_idle_timeout",
            o.pool_idle_timeout != n.pool_idle_timeout,
        ),
        ("pool_max_idle", o.pool_max_idle != n.pool_max_idle),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    let changed: Vec<&str> = [
        ("response_timeout", o.response_timeout != n.response_timeout),
        ("shutdown_timeout", o.shutdown_timeout != n.shutdown_timeout),
        ("max_conn_per_ip", o.max_conn_per_ip != n.max_conn_per_ip),
        ("max_body_size", o.max_body_size != n.max_body_size),
        ("security_headers", o.security_headers != n.security_headers),
        ("merge_slashes", o.merge_slashes != n.merge_slashes),
        (
            "tunnel_idle_timeout",
            o.tunnel_idle_timeout != n.tunnel_idle_timeout,
        ),
        ("sticky_secret", o.sticky_secret != n.sticky_secret),
        ("total_timeout", od.total_timeout != nd.total_timeout),
        ("retries", od.retries != nd.retries),
        ("retry_on", od.retry_on != nd.retry_on),
        ("retry_budget", od.retry_budget != nd.retry_budget),
        (
            "retry_budget_min_per_s",
            od.retry_budget_min_per_s != nd.retry_budget_min_per_s,
        ),
        ("circuit", od.circuit != nd.circuit),
        ("compress", od.compress.enabled != nd.compress.enabled),
        ("compress_types", od.compress.types != nd.compress.types),
        (
            "compress_min_size",
            od.compress.min_size != nd.compress.min_size,
        ),
        ("error_page_503", od.error_page_503 != nd.error_page_503),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    let mut out = Vec::new();
    if !changed.is_empty() {
        out.push(format!("gateway: {}", changed.join(", ")));
    }
    if !pooled.is_empty() {
        out.push(format!(
            "gateway: {} (for instances that join from now on; the others keep their connection pool's settings until they are replaced or herd restarts)",
            pooled.join(", ")
        ));
    }
    if old.rate_limits != new.rate_limits {
        out.push(format!(
            "rate limits: {}",
            named_changes(&old.rate_limits, &new.rate_limits, |z| &z.name)
        ));
    }
    out
}

/// Default route labels (`route<N>`, routes without a `name`) that name another rule after a
/// reload: a different matcher or app at that position, or no unnamed rule there any more.
fn moved_labels(old_config: &Config, new_config: &Config) -> Vec<String> {
    let (old, new) = (&old_config.routes, &new_config.routes);
    // Routes name their app by its index: compared by name, so a reordered `[[app]]` list is
    // not a move.
    let app_of = |c: &Config, r: &herd_config::Route| c.apps.get(r.app).map(|a| a.name.clone());
    let same_rule = |a: &herd_config::Route, b: &herd_config::Route| {
        app_of(old_config, a) == app_of(new_config, b)
            && (
                &a.host,
                &a.path_prefix,
                &a.path,
                &a.path_regex,
                &a.methods,
                &a.header,
                a.websocket,
            ) == (
                &b.host,
                &b.path_prefix,
                &b.path,
                &b.path_regex,
                &b.methods,
                &b.header,
                b.websocket,
            )
    };
    old.iter()
        .enumerate()
        .filter(|(_, o)| o.name.is_none())
        .filter(|&(i, o)| {
            new.get(i)
                .is_none_or(|n| n.name.is_some() || !same_rule(o, n))
        })
        .map(|(i, _)| format!("route{i}"))
        .collect()
}

/// "added a; changed b; removed c" between two lists of named items.
fn named_changes<T: PartialEq>(old: &[T], new: &[T], name: impl Fn(&T) -> &String) -> String {
    fn by_name<'a, T>(list: &'a [T], n: &str, name: &impl Fn(&T) -> &String) -> Option<&'a T> {
        list.iter().find(|x| name(x) == n)
    }
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for x in new {
        match by_name(old, name(x), &name) {
            None => added.push(name(x).as_str()),
            Some(o) if o != x => changed.push(name(x).as_str()),
            Some(_) => {}
        }
    }
    let removed: Vec<&str> = old
        .iter()
        .filter(|o| by_name(new, name(o), &name).is_none())
        .map(|o| name(o).as_str())
        .collect();
    let parts: Vec<String> = [("added", added), ("changed", changed), ("removed", removed)]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(verb, names)| format!("{verb} {}", names.join(", ")))
        .collect();
    if parts.is_empty() {
        // Same names and settings: only the order moved (first match wins, so it matters).
        return "reordered".to_owned();
    }
    parts.join("; ")
}

impl ConfigReloader for FileReloader {
    fn reload(&self) -> ReloadFuture<'_> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            let new = herd_config::load(&self.path).map_err(|mut errors| {
                // herd runs already: quick mode is no way out of a missing file.
                for e in &mut errors.0 {
                    if e.message.starts_with("cannot read config file") {
                        e.hint = Some(
                            "put the file back (or fix its permissions); the running config stays in force"
                                .to_owned(),
                        );
                    }
                }
                let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                for l in &lines {
                    tracing::error!(error = %l, "config reload rejected");
                }
                lines
            })?;
            let restart = needs_restart(&current, &new);
            // What can fail is done before anything changes, so a reload is all or nothing.
            // Certificates are re-read from the files the new table names (the same ones, or
            // new paths and SNI entries): a certificate being renewed (certbot's deploy hook
            // reloads) or added must not report success while the old set stays. Turning TLS
            // on or off needs a restart (reported below).
            let same_files = current.gateway.tls == new.gateway.tls;
            let certs = match &new.gateway.tls {
                Some(tls) if current.gateway.tls.is_some() => self.gateway.read_tls_config(tls),
                _ => Ok(None),
            };
            let certs = certs.map_err(|e| {
                let line = format!(
                    "[gateway.tls]: {e} (fix the file; the running config and certificates stay in force)"
                );
                tracing::error!(error = %line, "config reload rejected");
                vec![line]
            })?;
            self.fleet
                .prepare(&new)
                .map_err(|e| vec![format!("cannot apply the new config: {e}")])?;
            // Gateway first: a new app must be routable before its first instance is published,
            // and a removed app stops receiving traffic before its instances drain.
            self.gateway.reconfigure(&new);
            let mut changes = self
                .fleet
                .reconfigure(&new)
                .await
                .map_err(|e| vec![e.to_string()])?;
            // As nginx's reload: log files are opened again by their paths (after logrotate).
            self.gateway.reopen_logs();
            if let Some(certs) = certs {
                self.gateway.install_tls(certs);
                changes.push(if same_files {
                    "tls: certificates re-read".to_owned()
                } else {
                    "tls: certificate files and SNI entries changed".to_owned()
                });
            }
            let names: Vec<String> = new.apps.iter().map(|a| a.name.clone()).collect();
            let apps_changed = !current.apps.iter().map(|a| &a.name).eq(names.iter());
            // Removed apps count too: their alerts resolve now, not after the no-data timeout.
            if current.alerts.rules != new.alerts.rules || apps_changed {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let resolved = self
                    .alerts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .reload(&new.alerts.rules, &names, now);
                self.notifier.notify(resolved);
                if current.alerts.rules != new.alerts.rules {
                    changes.push(format!(
                        "alerts: {}",
                        named_changes(&current.alerts.rules, &new.alerts.rules, |r| &r.name)
                    ));
                }
            }
            if current.routes != new.routes {
                let mut line = format!("routes: {} rule(s)", new.routes.len());
                let moved = moved_labels(&current, &new);
                if !moved.is_empty() {
                    line.push_str(&format!(
                        "; {} now label other rules than before (a route without a `name` is labelled by its position, so its metrics series carry on under the new rule: name routes to keep each one's series)",
                        moved.join(", ")
                    ));
                }
                changes.push(line);
            }
            changes.extend(live_changes(&current, &new));
            for line in &changes {
                tracing::info!(change = %line, "config reloaded");
            }
            for line in &restart {
                tracing::warn!(setting = %line, "config change needs a restart to apply");
            }
            *current = in_force(&current, new);
            Ok(ReloadReport {
                changes,
                needs_restart: restart,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text =
            format!("[gateway]\n{extra}\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n");
        herd_config::parse(&text, "herd.toml", std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn live_gateway_changes_are_reported_by_name() {
        let old = config("");
        assert!(live_changes(&old, &old).is_empty());
        let new = config("max_body_size = \"1MiB\"\nsecurity_headers = true\nretries = 5\n");
        assert_eq!(
            live_changes(&old, &new),
            ["gateway: max_body_size, security_headers, retries"]
        );
        let types = config("compress_types = [\"text/html\"]\n");
        assert_eq!(live_changes(&old, &types), ["gateway: compress_types"]);
        let limited = herd_config::parse(
            "[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n[[rate_limit]]\nname = \"z\"\nkey = \"ip\"\nrate = \"1r/s\"\n",
            "herd.toml",
            std::path::Path::new("/"),
        )
        .unwrap();
        assert_eq!(live_changes(&old, &limited), ["rate limits: added z"]);
        let headers = config("max_headers = 200\n");
        assert!(live_changes(&old, &headers).is_empty());
        assert_eq!(needs_restart(&old, &headers).len(), 1);
    }

    /// Every setting `needs_restart` reports is one `in_force` keeps: the two lists stay in step.
    #[test]
    fn in_force_keeps_every_setting_that_needs_a_restart() {
        let parse =
            |text: &str| herd_config::parse(text, "herd.toml", std::path::Path::new("/")).unwrap();
        let old = parse("[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n");
        let new = parse(
            "[gateway]\nlisten = \"127.0.0.1:8081\"\nproxy_protocol = true\n\
             client_header_timeout = \"5s\"\nmax_connections = 10\nmax_header_size = \"16KiB\"\n\
             max_headers = 50\nthreads = 3\naccess_log = \"stdout\"\nidle_timeout = \"9s\"\n\
             idle_release = \"off\"\n\
             [admin]\nlisten = \"127.0.0.1:9099\"\ntoken = \"0123456789abcdef0123\"\n\
             [alerts]\nwebhooks = [\"http://127.0.0.1:1/hook\"]\nwebhook_timeout = \"2s\"\nwebhook_retries = 1\n\
             [store]\npath = \"other.redb\"\n\
             [services]\nlisten = \"127.0.0.1:9098\"\n\
             [logs]\nmax_files = 9\n\
             [[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n",
        );
        assert!(
            needs_restart(&old, &new).len() >= 8,
            "{:?}",
            needs_restart(&old, &new)
        );
        assert_eq!(
            needs_restart(&in_force(&old, new), &old),
            Vec::<String>::new()
        );
    }

    #[test]
    fn default_route_labels_that_move_are_named() {
        let parse = |routes: &str| {
            herd_config::parse(
                &format!("[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n{routes}"),
                "herd.toml",
                std::path::Path::new("/"),
            )
            .unwrap()
        };
        let demo = "[[route]]\npath_prefix = \"/demo/\"\napp = \"web\"\n";
        let d2 = "[[route]]\npath_prefix = \"/d2/\"\napp = \"web\"\n";
        let rest = "[[route]]\napp = \"web\"\n";
        let old = parse(&format!("{demo}{rest}"));
        // A rule inserted on top moves every label after it.
        assert_eq!(
            moved_labels(&old, &parse(&format!("{d2}{demo}{rest}"))),
            ["route0", "route1"]
        );
        let timeout =
            "[[route]]\npath_prefix = \"/demo/\"\napp = \"web\"\nresponse_timeout = \"5s\"\n";
        assert!(
            moved_labels(&old, &parse(&format!("{timeout}{rest}"))).is_empty(),
            "a setting of the same rule is not a move"
        );
        let named = "[[route]]\nname = \"demo\"\npath_prefix = \"/demo/\"\napp = \"web\"\n";
        assert_eq!(
            moved_labels(&old, &parse(&format!("{named}{rest}"))),
            ["route0"]
        );
        assert!(moved_labels(
            &parse(&format!("{named}{rest}")),
            &parse(&format!("{named}{rest}"))
        )
        .is_empty());
        // An app added before "web" shifts app indexes, not the rules.
        let with_api = herd_config::parse(
            &format!("[[app]]\nname = \"api\"\nservers = [\"127.0.0.1:2\"]\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n{demo}{rest}"),
            "herd.toml",
            std::path::Path::new("/"),
        )
        .unwrap();
        assert!(moved_labels(&old, &with_api).is_empty());
    }

    #[test]
    fn named_changes_say_what_was_added_changed_and_removed() {
        let pairs = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
            v.iter().map(|(n, x)| ((*n).to_owned(), *x)).collect()
        };
        let old = pairs(&[("a", 1), ("b", 2), ("c", 3)]);
        let new = pairs(&[("b", 5), ("c", 3), ("d", 4)]);
        assert_eq!(
            named_changes(&old, &new, |p| &p.0),
            "added d; changed b; removed a"
        );
        let moved = pairs(&[("c", 3), ("a", 1), ("b", 2)]);
        assert_eq!(named_changes(&old, &moved, |p| &p.0), "reordered");
    }

    #[test]
    fn settings_read_at_start_keep_their_running_values() {
        let old = config("listen = \"127.0.0.1:8080\"\nmax_headers = 100\n");
        let new = config("listen = \"127.0.0.1:8081\"\nmax_headers = 200\nretries = 5\n");
        assert_eq!(needs_restart(&old, &new).len(), 2);
        let running = in_force(&old, new.clone());
        assert_eq!(running.gateway.listen, old.gateway.listen);
        assert_eq!(running.gateway.max_headers, 100);
        assert_eq!(
            running.gateway.data_plane.retries,
            new.gateway.data_plane.retries
        );
        // The same file again still needs the restart; going back to the running value does not.
        assert_eq!(needs_restart(&running, &new).len(), 2);
        assert!(needs_restart(&running, &old).is_empty());
        assert!(needs_restart(&in_force(&old, old.clone()), &old).is_empty());
    }
}
