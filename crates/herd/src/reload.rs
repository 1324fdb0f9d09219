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
    if old.gateway.tls != new.gateway.tls || old.gateway.redirect_http != new.gateway.redirect_http
    {
        out.push("[gateway.tls] files or redirect_http (certificates reload live)".to_owned());
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
    {
        out.push("gateway.threads, access_log or idle_timeout (read at start)".to_owned());
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
    if old.store != new.store {
        out.push("[store] (the store in use stays open until a restart)".to_owned());
    }
    if old.services != new.services {
        out.push(
            "[services] (listen, token, limits and cache strategies apply at start)".to_owned(),
        );
    }
    out
}

/// The `[gateway]` settings and `[[rate_limit]]` zones that changed and apply at once (new
/// requests use them; backend connections opened from now on use the pool settings).
fn live_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.gateway, &new.gateway);
    let (od, nd) = (&o.data_plane, &n.data_plane);
    let changed: Vec<&str> = [
        ("connect_timeout", o.connect_timeout != n.connect_timeout),
        ("response_timeout", o.response_timeout != n.response_timeout),
        (
            "pool_idle_timeout",
            o.pool_idle_timeout != n.pool_idle_timeout,
        ),
        ("pool_max_idle", o.pool_max_idle != n.pool_max_idle),
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
        ("idle_release", od.idle_release != nd.idle_release),
        ("total_timeout", od.total_timeout != nd.total_timeout),
        ("retries", od.retries != nd.retries),
        ("retry_on", od.retry_on != nd.retry_on),
        ("retry_budget", od.retry_budget != nd.retry_budget),
        (
            "retry_budget_min_per_s",
            od.retry_budget_min_per_s != nd.retry_budget_min_per_s,
        ),
        ("circuit", od.circuit != nd.circuit),
        ("compress", od.compress != nd.compress),
        ("error_page_503", od.error_page_503 != nd.error_page_503),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    let mut out = Vec::new();
    if !changed.is_empty() {
        out.push(format!("gateway: {}", changed.join(", ")));
    }
    if old.rate_limits != new.rate_limits {
        out.push(format!("rate limits: {} zone(s)", new.rate_limits.len()));
    }
    out
}

impl ConfigReloader for FileReloader {
    fn reload(&self) -> ReloadFuture<'_> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            let new = herd_config::load(&self.path).map_err(|errors| {
                let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                for l in &lines {
                    tracing::error!(error = %l, "config reload rejected");
                }
                lines
            })?;
            let restart = needs_restart(&current, &new);
            // Gateway first: a new app must be routable before its first instance is published,
            // and a removed app stops receiving traffic before its instances drain.
            self.gateway.reconfigure(&new);
            let mut changes = self
                .fleet
                .reconfigure(&new)
                .await
                .map_err(|e| vec![e.to_string()])?;
            // Certificates are re-read from the files in force (new paths need a restart).
            match self.gateway.reload_tls() {
                Ok(()) if current.gateway.tls.is_some() => {
                    changes.push("tls: certificates re-read".to_owned());
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "failed to reload TLS certificates; keeping the old ones");
                }
            }
            if current.alerts.rules != new.alerts.rules {
                let names: Vec<String> = new.apps.iter().map(|a| a.name.clone()).collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let resolved = self
                    .alerts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .reload(&new.alerts.rules, &names, now);
                self.notifier.notify(resolved);
                changes.push(format!("alerts: {} rule(s)", new.alerts.rules.len()));
            }
            if current.routes != new.routes {
                changes.push(format!("routes: {} rule(s)", new.routes.len()));
            }
            changes.extend(live_changes(&current, &new));
            for line in &changes {
                tracing::info!(change = %line, "config reloaded");
            }
            for line in &restart {
                tracing::warn!(setting = %line, "config change needs a restart to apply");
            }
            *current = new;
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
        let limited = herd_config::parse(
            "[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n[[rate_limit]]\nname = \"z\"\nkey = \"ip\"\nrate = \"1r/s\"\n",
            "herd.toml",
            std::path::Path::new("/"),
        )
        .unwrap();
        assert_eq!(live_changes(&old, &limited), ["rate limits: 1 zone(s)"]);
        let headers = config("max_headers = 200\n");
        assert!(live_changes(&old, &headers).is_empty());
        assert_eq!(needs_restart(&old, &headers).len(), 1);
    }
}
