//! The supervisor of one app: an actor that owns the app's instances and reacts to commands
//! (scale, reload, shutdown), instance events (exit, health flips) and timers (restart backoff,
//! readiness deadlines, the 1 s resource sample). States and transitions: `LIFECYCLE.md`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use herd_config::{App, Backends, Command};
use herd_core::{InstanceState, Rotation};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::instance::{Event, Inst, Launch, Proc};
use crate::logs::{LogLine, LogSettings};
use crate::ports::Ports;
use crate::procfs;
use crate::restart::{RestartPolicy, RestartTracker, Verdict};
use crate::status::{AppView, ScaleRecord};
use crate::FleetError;

pub(crate) type Reply = oneshot::Sender<Result<(), FleetError>>;

pub(crate) enum Cmd {
    Scale {
        n: u32,
        reason: String,
        reply: Reply,
    },
    Reload {
        reply: Reply,
    },
    Shutdown,
}

/// A numbered place in the fleet (`web-3` is slot 3). During a start-first replacement it holds
/// both the serving instance and its successor.
#[derive(Debug)]
struct Slot {
    active: Inst,
    next: Option<Inst>,
}

pub(crate) struct AppActor {
    app: App,
    shim: Option<PathBuf>,
    logs: LogSettings,
    log_tx: broadcast::Sender<LogLine>,
    rotation: Arc<dyn Rotation>,
    view: Arc<ArcSwap<AppView>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    ports: Option<Ports>,
    desired: u32,
    slots: BTreeMap<u32, Slot>,
    retiring: Vec<Inst>,
    reload_queue: VecDeque<u32>,
    reload_waiters: Vec<Reply>,
    last_scale: Option<ScaleRecord>,
    published: Vec<u64>,
    shutting_down: bool,
}

impl AppActor {
    pub(crate) fn new(
        app: App,
        desired: u32,
        shim: Option<PathBuf>,
        logs: LogSettings,
        log_tx: broadcast::Sender<LogLine>,
        rotation: Arc<dyn Rotation>,
        view: Arc<ArcSwap<AppView>>,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let ports = match &app.backends {
            Backends::Command(c) => Some(Ports::new(c.port_range)),
            Backends::Servers(_) => None,
        };
        AppActor {
            app,
            shim,
            logs,
            log_tx,
            rotation,
            view,
            events_tx,
            events_rx,
            ports,
            desired,
            slots: BTreeMap::new(),
            retiring: Vec::new(),
            reload_queue: VecDeque::new(),
            reload_waiters: Vec::new(),
            last_scale: None,
            published: Vec::new(),
            shutting_down: false,
        }
    }

    fn command(&self) -> Option<&Command> {
        match &self.app.backends {
            Backends::Command(c) => Some(c),
            Backends::Servers(_) => None,
        }
    }

    fn policy(&self) -> RestartPolicy {
        self.command().map_or(
            RestartPolicy {
                min_uptime: Duration::ZERO,
                max_restarts: 0,
                initial_delay: Duration::ZERO,
                max_delay: Duration::ZERO,
            },
            |c| RestartPolicy {
                min_uptime: c.min_uptime,
                max_restarts: c.max_restarts,
                initial_delay: c.restart_delay,
                max_delay: c.max_restart_delay,
            },
        )
    }

    /// Runs until a shutdown command has stopped every instance.
    pub(crate) async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        match self.app.backends.clone() {
            Backends::Servers(addrs) => {
                for (i, addr) in addrs.into_iter().enumerate() {
                    let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    let id: Arc<str> = Arc::from(format!("{}-{index}", self.app.name));
                    let proc = self.launch().watch_server(&id, addr);
                    let mut inst = self.blank_inst(id);
                    inst.proc = Some(proc);
                    self.slots.insert(
                        index,
                        Slot {
                            active: inst,
                            next: None,
                        },
                    );
                }
            }
            Backends::Command(_) => self.reconcile(),
        }
        self.publish();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = cmds.recv(), if !self.shutting_down => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.begin_shutdown(),
                },
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                _ = tick.tick() => self.sample().await,
                () = sleep_until_opt(deadline) => self.on_timers(Instant::now()),
            }
            self.publish();
            if self.shutting_down && self.slots.is_empty() && self.retiring.is_empty() {
                tracing::info!(app = %self.app.name, "all instances stopped");
                return;
            }
        }
    }

    fn launch(&self) -> Launch<'_> {
        Launch {
            app: &self.app.name,
            health: &self.app.health,
            shim: self.shim.as_deref(),
            logs: &self.logs,
            log_tx: &self.log_tx,
            events: &self.events_tx,
            extra_env: &[],
        }
    }

    fn blank_inst(&self, id: Arc<str>) -> Inst {
        Inst {
            id,
            state: InstanceState::Starting,
            proc: None,
            tracker: RestartTracker::new(&self.policy()),
            restart_at: None,
            ready_deadline: None,
        }
    }

    /// Starts (or restarts) the process of `inst`. A failed spawn counts as an immediate exit.
    fn start(&mut self, inst: &mut Inst) {
        let Some(command) = self.command().cloned() else {
            return;
        };
        inst.restart_at = None;
        let Some(port) = self.ports.as_mut().and_then(Ports::take) else {
            tracing::error!(app = %self.app.name, instance = %inst.id, "no free port in port_range; widen `port_range`");
            self.after_exit(inst, Duration::ZERO, "no free port");
            return;
        };
        match self.launch().spawn_process(&inst.id, &command, port) {
            Ok(proc) => {
                tracing::info!(app = %self.app.name, instance = %inst.id, pid = proc.pid.unwrap_or(0), port, "instance started");
                inst.state = InstanceState::Starting;
                inst.ready_deadline = Some(Instant::now() + command.ready_timeout);
                inst.proc = Some(proc);
            }
            Err(e) => {
                tracing::error!(app = %self.app.name, instance = %inst.id, error = %e, "failed to spawn instance");
                if let Some(p) = self.ports.as_mut() {
                    p.release(port);
                }
                self.after_exit(inst, Duration::ZERO, "spawn failed");
            }
        }
    }

    fn new_inst(&mut self, index: u32) -> Inst {
        let id: Arc<str> = Arc::from(format!("{}-{index}", self.app.name));
        let mut inst = self.blank_inst(id);
        self.start(&mut inst);
        inst
    }

    /// Brings the number of slots to `desired`: new slots take the lowest free numbers, scale-in
    /// removes the highest.
    fn reconcile(&mut self) {
        if self.command().is_none() || self.shutting_down {
            return;
        }
        let want = self.desired as usize;
        let mut index = 1;
        while self.slots.len() < want {
            if !self.slots.contains_key(&index) {
                let inst = self.new_inst(index);
                self.slots.insert(
                    index,
                    Slot {
                        active: inst,
                        next: None,
                    },
                );
            }
            index += 1;
        }
        while self.slots.len() > want {
            let Some((index, slot)) = self.slots.pop_last() else {
                break;
            };
            self.reload_queue.retain(|i| *i != index);
            self.retire(slot.active);
            if let Some(next) = slot.next {
                self.retire(next);
            }
        }
    }

    /// Takes an instance out of rotation and stops it gracefully.
    fn retire(&mut self, mut inst: Inst) {
        inst.restart_at = None;
        let Some(proc) = &inst.proc else {
            return; // restarting / errored: nothing runs
        };
        let Some(cmd) = self.command() else {
            proc.stop_checks();
            return;
        };
        tracing::info!(app = %self.app.name, instance = %inst.id, pid = proc.pid.unwrap_or(0), "draining instance");
        proc.stop(cmd.drain_timeout, cmd.kill_timeout);
        inst.state = InstanceState::Draining;
        self.retiring.push(inst);
    }

    fn on_command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Scale { n, reason, reply } => {
                let res = self.scale(n, reason);
                let _ = reply.send(res);
            }
            Cmd::Reload { reply } => {
                if self.command().is_none() {
                    let _ = reply.send(Err(FleetError::NotSupervised {
                        app: self.app.name.clone(),
                    }));
                    return;
                }
                self.reload_waiters.push(reply);
                if self.reload_queue.is_empty() {
                    self.reload_queue = self.slots.keys().copied().collect();
                    tracing::info!(app = %self.app.name, instances = self.reload_queue.len(), "rolling reload started");
                    self.advance_reload();
                }
            }
            Cmd::Shutdown => self.begin_shutdown(),
        }
    }

    fn scale(&mut self, n: u32, reason: String) -> Result<(), FleetError> {
        let Some(cmd) = self.command() else {
            return Err(FleetError::NotSupervised {
                app: self.app.name.clone(),
            });
        };
        let capacity = u32::from(cmd.port_range.1 - cmd.port_range.0) + 1;
        if n >= capacity {
            return Err(FleetError::InvalidCount {
                app: self.app.name.clone(),
                requested: n,
                reason: format!(
                    "port_range {}-{} has {capacity} ports; one is kept free for a rolling replacement",
                    cmd.port_range.0, cmd.port_range.1
                ),
            });
        }
        tracing::info!(app = %self.app.name, from = self.desired, to = n, %reason, "scaling");
        self.desired = n;
        self.last_scale = Some(ScaleRecord {
            instances: n,
            reason,
        });
        self.reconcile();
        Ok(())
    }

    /// Starts the replacement of the next slot in the reload queue (one at a time: rolling).
    fn advance_reload(&mut self) {
        while let Some(&index) = self.reload_queue.front() {
            if self.slots.get(&index).is_some_and(|s| s.next.is_none()) {
                let next = self.new_inst(index);
                if let Some(slot) = self.slots.get_mut(&index) {
                    slot.next = Some(next);
                }
                return;
            }
            self.reload_queue.pop_front();
        }
        for w in self.reload_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        tracing::info!(app = %self.app.name, "rolling reload complete");
    }

    fn abort_reload(&mut self, why: &str) {
        if self.reload_queue.is_empty() {
            return;
        }
        self.reload_queue.clear();
        tracing::error!(app = %self.app.name, reason = why, "rolling reload aborted; remaining instances keep the old version");
        for w in self.reload_waiters.drain(..) {
            let _ = w.send(Err(FleetError::ReloadFailed {
                app: self.app.name.clone(),
                reason: why.to_owned(),
            }));
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.abort_reload("herd is shutting down");
        let slots = std::mem::take(&mut self.slots);
        for (_, slot) in slots {
            self.retire(slot.active);
            if let Some(next) = slot.next {
                self.retire(next);
            }
        }
        for inst in &self.retiring {
            if let Some(p) = &inst.proc {
                p.stop_checks();
            }
        }
        if self.command().is_none() {
            self.retiring.clear();
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Exited { uid, status } => self.on_exit(uid, &status),
            Event::Health { uid, up } => self.on_health(uid, up),
        }
    }

    fn on_exit(&mut self, uid: u64, status: &str) {
        let holds = |i: &Inst| i.proc.as_ref().is_some_and(|p| p.uid == uid);
        if let Some(pos) = self.retiring.iter().position(holds) {
            let mut inst = self.retiring.swap_remove(pos);
            if let Some(proc) = inst.proc.take() {
                proc.stop_checks();
                self.release_port(&proc);
            }
            inst.state = InstanceState::Stopped;
            tracing::info!(app = %self.app.name, instance = %inst.id, %status, "instance stopped");
            return;
        }
        let Some((index, is_next)) = self.locate(uid) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&index) else {
            return;
        };
        let mut inst = if is_next {
            match slot.next.take() {
                Some(i) => i,
                None => return,
            }
        } else {
            std::mem::replace(&mut slot.active, placeholder())
        };
        let Some(proc) = inst.proc.take() else { return };
        proc.stop_checks();
        self.release_port(&proc);
        let uptime = proc.started.elapsed();
        tracing::warn!(app = %self.app.name, instance = %inst.id, %status, uptime_ms = uptime.as_millis() as u64, "instance exited unexpectedly");
        self.after_exit(&mut inst, uptime, status);
        let errored = inst.state == InstanceState::Errored;
        if let Some(slot) = self.slots.get_mut(&index) {
            if is_next {
                if errored {
                    self.abort_reload("the new instance could not start");
                } else {
                    slot.next = Some(inst);
                }
            } else {
                slot.active = inst;
            }
        }
    }

    /// Applies the restart policy after an unexpected exit (or failed start).
    fn after_exit(&mut self, inst: &mut Inst, uptime: Duration, status: &str) {
        inst.proc = None;
        inst.ready_deadline = None;
        match inst.tracker.on_exit(&self.policy(), uptime) {
            Verdict::Restart { after } => {
                inst.state = InstanceState::Restarting;
                inst.restart_at = Some(Instant::now() + after);
                tracing::info!(app = %self.app.name, instance = %inst.id, delay_ms = after.as_millis() as u64, restarts = inst.tracker.restarts, "restart scheduled");
            }
            Verdict::GiveUp => {
                inst.state = InstanceState::Errored;
                inst.restart_at = None;
                tracing::error!(app = %self.app.name, instance = %inst.id, last_exit = status, unstable_exits = inst.tracker.unstable, "too many unstable restarts; instance errored (fix the app, then `herd reload`)");
            }
        }
    }

    fn release_port(&mut self, proc: &Proc) {
        if let (Some(ports), Some(port)) = (self.ports.as_mut(), proc.port) {
            ports.release(port);
        }
    }

    /// The slot holding the process `uid`, and whether it is the slot's replacement (`next`).
    fn locate(&self, uid: u64) -> Option<(u32, bool)> {
        let holds = |i: &Inst| i.proc.as_ref().is_some_and(|p| p.uid == uid);
        self.slots.iter().find_map(|(&k, s)| {
            if holds(&s.active) {
                Some((k, false))
            } else if s.next.as_ref().is_some_and(holds) {
                Some((k, true))
            } else {
                None
            }
        })
    }

    fn on_health(&mut self, uid: u64, up: bool) {
        let Some((index, is_next)) = self.locate(uid) else {
            return;
        };
        let ready_timeout = self.command().map(|c| c.ready_timeout);
        let Some(slot) = self.slots.get_mut(&index) else {
            return;
        };
        let inst = if is_next {
            match slot.next.as_mut() {
                Some(i) => i,
                None => return,
            }
        } else {
            &mut slot.active
        };
        if up {
            if inst.state == InstanceState::Starting {
                inst.state = InstanceState::Ready;
                inst.ready_deadline = None;
                if let Some(p) = &inst.proc {
                    p.endpoint.stats.clear_down();
                }
                tracing::info!(app = %self.app.name, instance = %inst.id, "instance ready");
            }
            if is_next {
                if let Some(next) = slot.next.take() {
                    let old = std::mem::replace(&mut slot.active, next);
                    // Publish the new set before the old one starts draining.
                    self.publish();
                    self.retire(old);
                }
                if self.reload_queue.front() == Some(&index) {
                    self.reload_queue.pop_front();
                    self.advance_reload();
                }
            }
        } else if inst.state == InstanceState::Ready {
            inst.state = InstanceState::Starting;
            inst.ready_deadline = ready_timeout.map(|t| Instant::now() + t);
            tracing::warn!(app = %self.app.name, instance = %inst.id, "instance failed health checks; out of rotation");
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .flat_map(|s| std::iter::once(&s.active).chain(s.next.as_ref()))
            .flat_map(|i| [i.restart_at, i.ready_deadline])
            .flatten()
            .min()
    }

    fn on_timers(&mut self, now: Instant) {
        let indices: Vec<u32> = self.slots.keys().copied().collect();
        for index in indices {
            for is_next in [false, true] {
                let Some(slot) = self.slots.get_mut(&index) else {
                    continue;
                };
                let inst = if is_next {
                    match slot.next.as_mut() {
                        Some(i) => i,
                        None => continue,
                    }
                } else {
                    &mut slot.active
                };
                if inst.restart_at.is_some_and(|t| t <= now) {
                    let mut taken = std::mem::replace(inst, placeholder());
                    self.start(&mut taken);
                    if let Some(slot) = self.slots.get_mut(&index) {
                        if is_next {
                            slot.next = Some(taken);
                        } else {
                            slot.active = taken;
                        }
                    }
                } else if inst.ready_deadline.is_some_and(|t| t <= now) {
                    inst.ready_deadline = None;
                    tracing::warn!(app = %self.app.name, instance = %inst.id, "not ready within ready_timeout; restarting it");
                    if let Some(p) = &inst.proc {
                        p.kill();
                    }
                }
            }
        }
    }

    /// Once a second: RSS and CPU of every process group, request rates, and `max_memory`.
    async fn sample(&mut self) {
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
                if inst.state == InstanceState::Ready
                    && max_memory.is_some_and(|m| u.rss_bytes > m)
                    && !replacing
                {
                    over.push((index, u.rss_bytes));
                }
            }
        }
        for inst in &mut self.retiring {
            if let Some(p) = inst.proc.as_mut() {
                if let Some(u) = p.pid.and_then(|pid| usage.get(&pid)) {
                    p.rss_bytes = u.rss_bytes;
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
            if slot.next.is_some() {
                continue;
            }
            tracing::warn!(app = %self.app.name, instance = %slot.active.id, rss_bytes = rss, max_memory = max_memory.unwrap_or(0), "instance over max_memory; replacing it");
            let mut next = self.new_inst(index);
            if let Some(slot) = self.slots.get_mut(&index) {
                next.tracker = slot.active.tracker.clone();
                next.tracker.restarts += 1;
                slot.next = Some(next);
            }
        }
    }

    fn all_insts(&self) -> impl Iterator<Item = &Inst> {
        self.slots
            .values()
            .flat_map(|s| std::iter::once(&s.active).chain(s.next.as_ref()))
            .chain(self.retiring.iter())
    }

    /// Pushes the ready set to the gateway (when it changed) and the snapshot to readers.
    fn publish(&mut self) {
        let ready: Vec<_> = self
            .slots
            .values()
            .filter(|s| s.active.state == InstanceState::Ready)
            .filter_map(|s| s.active.proc.as_ref().map(|p| p.endpoint.clone()))
            .collect();
        let uids: Vec<u64> = ready.iter().map(|e| e.uid).collect();
        if uids != self.published {
            self.published = uids;
            self.rotation.set_endpoints(&self.app.name, ready);
        }
        let instances = self.all_insts().map(Inst::view).collect();
        self.view.store(Arc::new(AppView {
            name: self.app.name.clone(),
            supervised: self.command().is_some(),
            desired: self.desired,
            instances,
            last_scale: self.last_scale.clone(),
            reloading: !self.reload_queue.is_empty(),
        }));
    }
}

/// A stand-in while an instance is moved out of its slot for a mutable operation.
fn placeholder() -> Inst {
    Inst {
        id: Arc::from(""),
        state: InstanceState::Stopped,
        proc: None,
        tracker: RestartTracker {
            unstable: 0,
            restarts: 0,
            next_delay: Duration::ZERO,
        },
        restart_at: None,
        ready_deadline: None,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
