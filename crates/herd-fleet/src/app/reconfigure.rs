//! A new config for a running app (`herd` config reload): what can change live, and how.
//!
//! - Command, arguments, working directory or environment changed: a rolling, start-first
//!   reload replaces every instance (so the new settings, health checks included, apply).
//! - Instance count (without autoscaling), when it changed in the file: scale to it (an
//!   unrelated edit keeps a count set by `herd scale`). Autoscaling added, changed or removed:
//!   the engine is created, reconfigured (keeping its history) or dropped.
//! - Port range: new instances take ports from the new range.
//! - Fixed `servers` changed: the watched set is rebuilt.
//! - Restart policy, timeouts, `max_memory`: apply from the next event that uses them.
//! - Health checks: fixed servers take the new ones at their next check (their state and the
//!   streaks under way stay); instances herd started keep theirs until replaced (a new check
//!   path may exist only in the new version a rolling reload brings).
//! - Switching between `command` and `servers` is not done live: restart herd.

use std::sync::Arc;

use herd_config::{App, Backends};

use super::{scale, AppActor, Slot};
use crate::ports::Ports;

impl AppActor {
    /// Applies `app` and returns one line per change made.
    pub(super) fn reconfigure(&mut self, app: App) -> Vec<String> {
        let mut changes = Vec::new();
        let name = self.app.name.clone();
        if app == self.app {
            return changes;
        }
        let old = std::mem::replace(&mut self.app, app);
        match (&old.backends, &self.app.backends) {
            (Backends::Command(o), Backends::Command(n)) => {
                if o.port_range != n.port_range {
                    let mut ports = Ports::new(n.port_range);
                    for p in self
                        .slots
                        .values()
                        .flat_map(|s| std::iter::once(&s.active).chain(s.next.as_ref()))
                        .chain(self.retiring.iter())
                        .filter_map(|i| i.proc.as_ref().and_then(|p| p.port))
                    {
                        ports.hold(p);
                    }
                    self.ports = Some(ports);
                    changes.push(format!(
                        "{name}: port_range {}-{}",
                        n.port_range.0, n.port_range.1
                    ));
                }
                let what: Vec<&str> = [
                    ("command", o.argv != n.argv),
                    ("cwd", o.cwd != n.cwd),
                    ("env", o.env != n.env),
                ]
                .into_iter()
                .filter_map(|(what, differs)| differs.then_some(what))
                .collect();
                if !what.is_empty() {
                    changes.push(format!(
                        "{name}: {} changed; rolling reload started (`herd status` shows how it ends)",
                        what.join(", ")
                    ));
                    // The pass that deploys it is the next one to begin (at once, or after
                    // the one under way). Several changes before it ends keep the first
                    // command, the last that ran.
                    let pass = self.passes + 1;
                    let known_good = self.undo.take().map_or_else(|| o.clone(), |(c, _)| c);
                    self.undo = Some((known_good, pass));
                    self.reload_internal();
                }
            }
            (Backends::Servers(o), Backends::Servers(n)) => {
                if o != n {
                    changes.push(format!("{name}: servers {n:?}"));
                    self.rebuild_servers(n.clone());
                }
            }
            _ => {
                // Keep running what runs; the caller reports that a restart is needed.
                self.app.backends = old.backends.clone();
                changes.push(format!(
                    "{name}: switching between `command` and `servers` needs a restart of herd"
                ));
            }
        }
        match (
            &mut self.scaler,
            self.app.scaling.clone(),
            &self.app.backends,
        ) {
            (Some(s), Some(cfg), _) if Some(&cfg) != old.scaling.as_ref() => {
                s.reconfigure(&cfg, self.logs.dir.join("scaler-history.json"));
                changes.push(format!("{name}: autoscaling policy updated"));
            }
            (None, Some(cfg), Backends::Command(_)) => {
                self.scaler = Some(scale::Scaler::new(
                    &cfg,
                    self.logs.dir.join("scaler-history.json"),
                ));
                changes.push(format!("{name}: autoscaling on"));
            }
            (Some(s), None, _) => {
                s.save_history(true);
                self.scaler = None;
                changes.push(format!("{name}: autoscaling off"));
            }
            _ => {}
        }
        if self.scaler.is_none() {
            if let Backends::Command(c) = &self.app.backends {
                let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
                let n = c.instances.resolve(cores);
                // Only a change of `instances` in the file (or autoscaling turned off) sets
                // the count: an unrelated edit keeps a count set by `herd scale`.
                let was = match &old.backends {
                    Backends::Command(o) if old.scaling.is_none() => {
                        Some(o.instances.resolve(cores))
                    }
                    _ => None,
                };
                if n != self.desired && was != Some(n) {
                    changes.push(format!("{name}: instances {} → {n}", self.desired));
                    self.apply_scale(n, &[]);
                }
            }
        }
        if old.health != self.app.health {
            if matches!(self.app.backends, Backends::Servers(_)) {
                self.server_health.send_replace(self.app.health.clone());
                changes.push(format!(
                    "{name}: health checks updated on every server (from each one's next check)"
                ));
            } else {
                changes.push(format!(
                    "{name}: health checks apply to instances started from now on (`herd reload {name}` applies them to every instance)"
                ));
            }
        }
        // Every other key that changed is listed too, also beside a rolling reload (a sticky
        // or balance change applies at once and must not go unreported).
        let said_instances = changes
            .iter()
            .any(|c| c.starts_with(&format!("{name}: instances")));
        let keys: Vec<&str> = changed_keys(&old, &self.app)
            .into_iter()
            .filter(|k| !(*k == "instances" && said_instances))
            .collect();
        if !keys.is_empty() {
            changes.push(format!("{name}: {} updated", keys.join(", ")));
        } else if changes.is_empty() {
            changes.push(format!("{name}: settings updated"));
        }
        changes
    }

    /// A rolling reload nobody waits for (a config change asked for it).
    fn reload_internal(&mut self) {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        self.request_reload(tx);
    }

    /// (Re)creates one watched slot per fixed server.
    /// A new `servers` list: servers that stay keep their slot, id, health state, counters
    /// and operator marks (HAProxy keeps a server's state across a reload, by name); removed
    /// ones stop being checked; added ones take the lowest free numbers. Ids so never move
    /// from one address to another (a hash ring, a sticky cookie and an operator's drain name
    /// the same server after the reload).
    pub(super) fn rebuild_servers(&mut self, addrs: Vec<std::net::SocketAddr>) {
        let addr_of = |slot: &Slot| slot.active.proc.as_ref().map(|p| p.endpoint.addr);
        let old = std::mem::take(&mut self.slots);
        for (index, slot) in old {
            if addr_of(&slot).is_some_and(|a| addrs.contains(&a)) {
                self.slots.insert(index, slot);
            } else if let Some(p) = &slot.active.proc {
                p.stop_checks();
            }
        }
        for addr in addrs {
            if self.slots.values().any(|s| addr_of(s) == Some(addr)) {
                continue;
            }
            let index = (1..)
                .find(|i| !self.slots.contains_key(i))
                .unwrap_or(u32::MAX);
            let id: Arc<str> = Arc::from(format!("{}-{index}", self.app.name));
            let proc = self.launch().watch_server(&id, addr);
            let mut inst = self.blank_inst(id);
            inst.proc = Some(proc);
            self.slots.insert(
                index,
                Slot {
                    active: inst,
                    next: None,
                    no_replace_before: None,
                },
            );
        }
        self.desired = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
    }
}

/// The keys of an app that differ between two configs, by their names in herd.toml (those a
/// reload applies without a change of its own to report).
fn changed_keys(old: &App, new: &App) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            keys.push(key);
        }
    };
    check("balance", old.balance != new.balance);
    check("hash_key", old.hash_key != new.hash_key);
    check(
        "hash_balance_factor",
        old.hash_balance_factor != new.hash_balance_factor,
    );
    check("max_fails", old.max_fails != new.max_fails);
    check("fail_timeout", old.fail_timeout != new.fail_timeout);
    check("protocol", old.protocol != new.protocol);
    check("sticky", old.lb.sticky != new.lb.sticky);
    check(
        "servers' weight, max_conn or backup",
        old.lb.defaults != new.lb.defaults || old.lb.servers != new.lb.servers,
    );
    check("queue", old.lb.queue != new.lb.queue);
    check(
        "queue_timeout",
        old.lb.queue_timeout != new.lb.queue_timeout,
    );
    check("slow_start", old.lb.slow_start != new.lb.slow_start);
    if let (Backends::Command(o), Backends::Command(n)) = (&old.backends, &new.backends) {
        check("max_memory", o.max_memory != n.max_memory);
        check("kill_timeout", o.kill_timeout != n.kill_timeout);
        check("kill_signal", o.kill_signal != n.kill_signal);
        check("drain_timeout", o.drain_timeout != n.drain_timeout);
        check("ready_timeout", o.ready_timeout != n.ready_timeout);
        check("min_uptime", o.min_uptime != n.min_uptime);
        check("max_restarts", o.max_restarts != n.max_restarts);
        check("restart_delay", o.restart_delay != n.restart_delay);
        check(
            "max_restart_delay",
            o.max_restart_delay != n.max_restart_delay,
        );
        check("instances", o.instances != n.instances);
    }
    keys
}
