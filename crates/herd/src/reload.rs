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
    {
        out.push(
            "gateway.proxy_protocol(_from), client_header_timeout, max_connections or \
             max_header_size (read at start)"
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
