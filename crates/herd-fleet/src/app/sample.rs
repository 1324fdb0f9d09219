//! The 1 s resource sample: RSS and CPU per process group, request rates, and `max_memory`.

use std::time::Instant;

use herd_core::InstanceState;

use super::AppActor;
use crate::procfs;

const MIB: f64 = 1024.0 * 1024.0;

impl AppActor {
    /// Once a second: RSS and CPU of every process group, request rates, and `max_memory`.
    pub(super) async fn sample(&mut self) {
        let pgids: Vec<u32> = self
            .all_insts()
            .filter_map(|i| i.proc.as_ref().and_then(|p| p.pid))
            .collect();
        let usage = if pgids.is_empty() {
            Default::default()
        } else {
            tokio::task::spawn_blocking(move || procfs::sample_groups(&pgids))
                .await
                .unwrap_or_default()
        };
        let ticks = procfs::clock_ticks();
        let now = Instant::now();
        let max_memory = self.command().and_then(|c| c.max_memory);
        let mut over: Vec<(u32, u64)> = Vec::new();
        for (&index, slot) in &mut self.slots {
            let replacing = slot.next.is_some();
            // A start-first replacement failed a moment ago: none is tried for a while.
            let no_replacement = slot.no_replace_before.is_some_and(|t| now < t);
            for inst in std::iter::once(&mut slot.active).chain(slot.next.as_mut()) {
                let Some(p) = inst.proc.as_mut() else {
                    continue;
                };
                let requests = p.endpoint.stats.requests();
                let dt = now.duration_since(p.last_requests.1).as_secs_f64();
                if dt > 0.0 {
                    p.rps = (requests - p.last_requests.0) as f64 / dt;
                }
                p.last_requests = (requests, now);
                p.window = p.endpoint.stats.window.take();
                let Some(u) = p.pid.and_then(|pid| usage.get(&pid)) else {
                    continue;
                };
                p.rss_bytes = u.rss_bytes;
                if let Some((prev, at)) = p.last_cpu {
                    let dt = now.duration_since(at).as_secs_f64();
                    if dt > 0.0 {
                        p.cpu_percent =
                            u.cpu_ticks.saturating_sub(prev) as f64 / ticks / dt * 100.0;
                    }
                }
                p.last_cpu = Some((u.cpu_ticks, now));
                let Some(limit) = max_memory.filter(|&m| u.rss_bytes > m) else {
                    continue;
                };
                let ready = inst.state == InstanceState::Ready;
                // Past the hard ceiling a replacement is not waited for: a fast leak would
                // otherwise grow for as long as the new process takes to get ready.
                let past_ceiling = u.rss_bytes > hard_ceiling(limit);
                if ready && !replacing && !no_replacement && !past_ceiling {
                    over.push((index, u.rss_bytes));
                } else if !ready || no_replacement || past_ceiling {
                    // No graceful way out (not in rotation, or its replacement just failed):
                    // max_memory is still a ceiling, so it is killed and restarted as after a
                    // crash (PM2's max_memory_restart).
                    tracing::warn!(app = %self.app.name, instance = %inst.id, state = %inst.state, rss_bytes = u.rss_bytes, max_memory = limit, "instance over max_memory and not replaceable start-first; killing it");
                    p.kill();
                    inst.killed_for = Some(format!(
                        "over max_memory ({:.1} MiB > {:.1} MiB)",
                        u.rss_bytes as f64 / MIB,
                        limit as f64 / MIB
                    ));
                }
            }
        }
        for inst in &mut self.retiring {
            if let Some(p) = inst.proc.as_mut() {
                if let Some(u) = p.pid.and_then(|pid| usage.get(&pid)) {
                    p.rss_bytes = u.rss_bytes;
                    // Draining for good: past the hard ceiling it goes now.
                    if let Some(limit) = max_memory.filter(|&m| u.rss_bytes > hard_ceiling(m)) {
                        tracing::warn!(app = %self.app.name, instance = %inst.id, rss_bytes = u.rss_bytes, max_memory = limit, "draining instance past 1.5 x max_memory; killing it");
                        p.kill();
                    }
                }
            }
        }
        for (index, rss) in over {
            if self.shutting_down {
                break;
            }
            let Some(slot) = self.slots.get(&index) else {
                continue;
            };
            if slot.next.is_some() || slot.no_replace_before.is_some_and(|t| now < t) {
                continue;
            }
            tracing::warn!(app = %self.app.name, instance = %slot.active.id, rss_bytes = rss, max_memory = max_memory.unwrap_or(0), "instance over max_memory; replacing it");
            if let Some(slot) = self.slots.get_mut(&index) {
                slot.active.tracker.restarts += 1;
            }
            if self.start_replacement(index) {
                // The slot's new process says why its predecessor went, as after a kill.
                if let Some(next) = self.slots.get_mut(&index).and_then(|s| s.next.as_mut()) {
                    next.last_exit = Some(format!(
                        "replaced by herd: over max_memory ({:.1} MiB > {:.1} MiB)",
                        rss as f64 / MIB,
                        max_memory.unwrap_or(0) as f64 / MIB
                    ));
                }
            }
        }
    }
}

/// Memory past which an instance over `max_memory` is killed at once, even while its
/// start-first replacement is starting: 1.5 x the limit.
fn hard_ceiling(limit: u64) -> u64 {
    limit.saturating_add(limit / 2)
}
