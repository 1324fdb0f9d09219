//! Start-first replacement of a slot's instance, and rolling reloads built on it.
//!
//! A replacement starts a new process for the slot while the old one keeps serving; the old one
//! drains only once the new one is ready (see `on_health`). A replacement that exits or misses
//! `ready_timeout` before it is ready is dropped and the old instance stays: a reload never
//! makes a fleet worse. Reloads replace one slot at a time; requests that arrive mid-pass get a
//! pass of their own afterwards (so every slot runs what was deployed when they asked).

use std::time::{Duration, Instant};

use super::{AppActor, Reply};
use crate::FleetError;

/// How long a slot waits before another `max_memory` replacement after one failed.
const MEMORY_RETRY: Duration = Duration::from_secs(30);

impl AppActor {
    /// Starts a replacement for slot `index`. Returns false when it could not even start.
    pub(super) fn start_replacement(&mut self, index: u32) -> bool {
        let mut next = self.new_inst(index);
        let Some(slot) = self.slots.get_mut(&index) else {
            return false;
        };
        if next.proc.is_none() {
            // Spawn failed or no port: the old instance keeps serving.
            // Say why (it was only in herd's log): no free port is the usual cause.
            let why = match next.last_exit.as_deref() {
                Some("no free port") => "the new instance could not be started: no free port in port_range (a start-first replacement needs one spare port beside the running instances; widen port_range)".to_owned(),
                Some(cause) => format!("the new instance could not be started: {cause}"),
                None => "the new instance could not be started".to_owned(),
            };
            self.replacement_failed(index, &why);
            return false;
        }
        // A fresh start (LIFECYCLE.md): the count of restarts carries over for the user to see,
        // the unstable-exit count and the backoff do not (an errored instance revived by
        // `herd reload` gets its whole `max_restarts` again).
        next.tracker.restarts = slot.active.tracker.restarts;
        slot.next = Some(next);
        true
    }

    /// Drops slot `index`'s replacement; fails the reload pass if it was waiting on this slot.
    pub(super) fn replacement_failed(&mut self, index: u32, why: &str) {
        let reloading_this = self.reload_queue.front() == Some(&index);
        let serving = self.slots.get(&index).is_some_and(|s| {
            s.active.proc.is_some() && s.active.state == herd_core::InstanceState::Ready
        });
        if let Some(slot) = self.slots.get_mut(&index) {
            if let Some(mut next) = slot.next.take() {
                if let Some(p) = &next.proc {
                    p.kill();
                    next.state = herd_core::InstanceState::Draining;
                    self.retiring.push(next);
                }
            }
            if !reloading_this {
                slot.no_replace_before = Some(Instant::now() + MEMORY_RETRY);
            }
        }
        if serving {
            tracing::error!(app = %self.app.name, slot = index, reason = why, "replacement failed; the current instance keeps serving");
        } else {
            tracing::error!(app = %self.app.name, slot = index, reason = why, "replacement failed; this slot has no serving instance (herd status shows its state)");
        }
        if reloading_this {
            let id = format!("{}-{index}", self.app.name);
            self.abort_reload(&format!("{id}: {why}"));
        }
    }

    pub(super) fn request_reload(&mut self, reply: Reply) {
        if self.reload_queue.is_empty() && self.reload_waiters.is_empty() {
            self.reload_waiters.push(reply);
            self.begin_pass();
        } else {
            self.queued_reloads.push(reply);
        }
    }

    fn begin_pass(&mut self) {
        self.passes += 1;
        self.reload_queue = self.slots.keys().copied().collect();
        tracing::info!(app = %self.app.name, instances = self.reload_queue.len(), "rolling reload started");
        self.advance_reload();
    }

    /// Moves the reload on: starts the replacement of the first queued slot, waits while one is
    /// in progress, skips slots that are gone, and ends the pass when the queue is empty.
    pub(super) fn advance_reload(&mut self) {
        if self.reload_waiters.is_empty() && self.reload_queue.is_empty() {
            return;
        }
        while let Some(&index) = self.reload_queue.front() {
            match self.slots.get(&index) {
                None => {
                    self.reload_queue.pop_front();
                }
                Some(slot) if slot.next.is_some() => return,
                Some(_) => {
                    if self.waits_for_a_port() {
                        // The old instance of the slot replaced before still drains on its
                        // port: go on when it has stopped (`on_exit` calls back).
                        tracing::info!(app = %self.app.name, slot = index, "rolling reload waits for a draining instance to free its port");
                        return;
                    }
                    if self.start_replacement(index) {
                        return;
                    }
                    // start_replacement failed and aborted the pass.
                    return;
                }
            }
        }
        tracing::info!(app = %self.app.name, "rolling reload complete");
        self.end_pass(&Ok(()));
    }

    /// No port is free now, but an instance on its way out holds one (a small `port_range`:
    /// one spare port makes a reload replace one instance at a time, each after the previous
    /// old one stopped).
    fn waits_for_a_port(&mut self) -> bool {
        let draining = self
            .retiring
            .iter()
            .any(|i| i.proc.as_ref().is_some_and(|p| p.port.is_some()));
        draining && self.ports.as_mut().is_some_and(|p| !p.any_free())
    }

    pub(super) fn abort_reload(&mut self, why: &str) {
        if self.reload_queue.is_empty() && self.reload_waiters.is_empty() {
            return;
        }
        self.reload_queue.clear();
        tracing::error!(app = %self.app.name, reason = why, "rolling reload aborted; instances not yet replaced keep the old version");
        self.end_pass(&Err(FleetError::ReloadFailed {
            app: self.app.name.clone(),
            reason: why.to_owned(),
        }));
    }

    fn end_pass(&mut self, result: &Result<(), FleetError>) {
        let mut reverted = false;
        if let Some((_, pass)) = &self.undo {
            if *pass <= self.passes {
                // A pass cut short by the shutdown says nothing about the new command.
                if let (Some((before, _)), Err(_), false) =
                    (self.undo.take(), result, self.shutting_down)
                {
                    reverted = self.put_back(before);
                }
            }
        }
        self.last_reload = Some(match result {
            Ok(()) => "complete".to_owned(),
            Err(e) if reverted => format!(
                "failed: {e}; the previous command, cwd and env stay in force for restarts and new instances"
            ),
            Err(e) => format!("failed: {e}"),
        });
        self.publish();
        for w in self.reload_waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        if !self.queued_reloads.is_empty() && !self.shutting_down {
            self.reload_waiters = std::mem::take(&mut self.queued_reloads);
            self.begin_pass();
        }
    }

    /// Puts back the command, cwd and env that ran before a config change whose rolling
    /// reload failed (the rest of the new config stays). Returns whether it did.
    fn put_back(&mut self, before: herd_config::Command) -> bool {
        let herd_config::Backends::Command(now) = &mut self.app.backends else {
            return false;
        };
        now.argv = before.argv;
        now.cwd = before.cwd;
        now.env = before.env;
        tracing::warn!(app = %self.app.name, "the new command, cwd or env did not become ready: the previous ones stay in force for restarts and new instances (fix the config and reload it)");
        true
    }

    pub(super) fn reject_queued_reloads(&mut self) {
        for w in self.queued_reloads.drain(..) {
            let _ = w.send(Err(FleetError::ReloadFailed {
                app: self.app.name.clone(),
                reason: "herd is shutting down".to_owned(),
            }));
        }
    }
}
