//! The supervisor of one app: an actor that owns the app's instances and reacts to commands
//! (scale, reload, shutdown), instance events (exit, health flips) and timers (restart backoff,
//! readiness deadlines, the 1 s resource sample). States and transitions: `LIFECYCLE.md`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use herd_config::{App, Backends, Command};
use herd_core::{InstanceState, Rotation};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::instance::{Event, Inst, Launch, Proc};
use crate::logs::{LogFile, LogLine, LogSettings, Stream};
use crate::ports::Ports;
use crate::restart::{RestartPolicy, RestartTracker, Verdict};
use crate::status::{AppView, ScaleRecord, ScalingView};
use crate::FleetError;

mod reconfigure;
mod replace;
mod sample;
mod scale;

pub use scale::ScalingEvent;

pub(crate) type Reply = oneshot::Sender<Result<(), FleetError>>;

pub(crate) enum Cmd {
    Scale {
        n: u32,
        reason: String,
        /// Answers the count in force (bounded by autoscaling's `min`/`max`).
        reply: oneshot::Sender<Result<u32, FleetError>>,
    },
    Reload {
        reply: Reply,
    },
    /// Clears a manual override: the autoscaler decides again.
    ClearManual {
        reply: Reply,
    },
    /// Takes one instance out of rotation, or puts it back.
    Drain {
        id: String,
        drained: bool,
        /// Also pause active checks (HAProxy MAINT).
        maint: bool,
        reply: Reply,
    },
    /// Applies a new config for this app.
    Reconfigure {
        app: Box<App>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Stops (or resumes) autoscaling decisions.
    Pause {
        paused: bool,
        reason: String,
        reply: Reply,
    },
    Shutdown,
}

/// Where the actor publishes what others read: instance output, the status snapshot and the
/// scaling events.
pub(crate) struct Outputs {
    pub(crate) log_tx: broadcast::Sender<LogLine>,
    pub(crate) view: Arc<ArcSwap<AppView>>,
    pub(crate) scaling_events: Arc<std::sync::Mutex<VecDeque<ScalingEvent>>>,
}

/// A numbered place in the fleet (`web-3` is slot 3). During a start-first replacement it holds
/// both the serving instance and its successor.
#[derive(Debug)]
struct Slot {
    active: Inst,
    next: Option<Inst>,
    /// After a failed `max_memory` replacement: do not try again before this.
    no_replace_before: Option<Instant>,
}

impl Slot {
    /// The slot's replacement (`next`) or its active instance.
    fn inst_mut(&mut self, next: bool) -> Option<&mut Inst> {
        if next {
            self.next.as_mut()
        } else {
            Some(&mut self.active)
        }
    }
}

pub(crate) struct AppActor {
    app: App,
    shim: Option<PathBuf>,
    /// herd-provided variables for every instance (`FleetOptions::env`).
    env: Arc<[(String, String)]>,
    logs: LogSettings,
    log_tx: broadcast::Sender<LogLine>,
    rotation: Arc<dyn Rotation>,
    /// Requests the gateway holds while the app has no instance (scale from zero).
    demand: Option<Arc<herd_core::Demand>>,
    scaler: Option<scale::Scaler>,
    scaling_events: Arc<std::sync::Mutex<VecDeque<ScalingEvent>>>,
    view: Arc<ArcSwap<AppView>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    ports: Option<Ports>,
    desired: u32,
    slots: BTreeMap<u32, Slot>,
    retiring: Vec<Inst>,
    reload_queue: VecDeque<u32>,
    reload_waiters: Vec<Reply>,
    /// Reload requests that arrived during a pass: they get a pass of their own afterwards.
    queued_reloads: Vec<Reply>,
    log_files: HashMap<Arc<str>, (LogFile, LogFile)>,
    last_scale: Option<ScaleRecord>,
    /// How the last rolling reload ended: `complete` or `failed: …`.
    last_reload: Option<String>,
    /// Rolling reload passes begun so far.
    passes: u64,
    /// A config change of the command, cwd or env, until the pass that deploys it ends: what
    /// ran before (put back if that pass fails, so restarts and new instances do not start
    /// what could not become ready), and that pass's number.
    undo: Option<(herd_config::Command, u64)>,
    published: Vec<u64>,
    shutting_down: bool,
    /// The fixed servers' health settings: a reload sends new ones to every server's checker.
    server_health: tokio::sync::watch::Sender<herd_config::Health>,
    server_health_rx: tokio::sync::watch::Receiver<herd_config::Health>,
}

impl AppActor {
    pub(crate) fn new(
        app: App,
        desired: u32,
        shim: Option<PathBuf>,
        env: Arc<[(String, String)]>,
        logs: LogSettings,
        rotation: Arc<dyn Rotation>,
        outputs: Outputs,
    ) -> Self {
        let Outputs {
            log_tx,
            view,
            scaling_events,
        } = outputs;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let demand = rotation.demand(&app.name);
        let scaler = match (&app.scaling, &app.backends) {
            (Some(s), Backends::Command(_)) => {
                Some(scale::Scaler::new(s, logs.dir.join("scaler-history.json")))
            }
            _ => None,
        };
        let ports = match &app.backends {
            Backends::Command(c) => Some(Ports::new(c.port_range)),
            Backends::Servers(_) => None,
        };
        let (server_health, server_health_rx) = tokio::sync::watch::channel(app.health.clone());
        AppActor {
            app,
            shim,
            env,
            logs,
            log_tx,
            demand,
            scaler,
            scaling_events,
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
            queued_reloads: Vec::new(),
            log_files: HashMap::new(),
            last_scale: None,
            last_reload: None,
            passes: 0,
            undo: None,
            published: Vec::new(),
            shutting_down: false,
            server_health,
            server_health_rx,
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
            Backends::Servers(addrs) => self.rebuild_servers(addrs),
            Backends::Command(_) => self.reconcile(),
        }
        self.publish();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scale_every = self.scale_every();
        let mut scale_tick = tokio::time::interval(scale_every);
        scale_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let woken = wake_again(self.demand.clone());
        tokio::pin!(woken);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = cmds.recv(), if !self.shutting_down => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.begin_shutdown(),
                },
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                _ = tick.tick() => self.sample().await,
                _ = scale_tick.tick(), if self.scaler.is_some() && !self.shutting_down => {
                    self.scale_tick(Instant::now());
                }
                () = &mut woken, if self.scaler.is_some() && !self.shutting_down => {
                    // A request is waiting for an app at zero: decide now, not at the next tick.
                    woken.set(wake_again(self.demand.clone()));
                    self.scale_tick(Instant::now());
                }
                () = sleep_until_opt(deadline) => self.on_timers(Instant::now()),
            }
            self.publish();
            if self.scale_every() != scale_every {
                // Autoscaling turned on, or its `interval` changed, by a config reload.
                scale_every = self.scale_every();
                scale_tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + scale_every,
                    scale_every,
                );
                scale_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            if self.shutting_down && self.slots.is_empty() && self.retiring.is_empty() {
                tracing::info!(app = %self.app.name, "all instances stopped");
                if let Some(s) = self.scaler.as_mut() {
                    s.save_history(true);
                }
                return;
            }
        }
    }

    /// How often the autoscaler decides (an hour while there is none: the tick is then off).
    fn scale_every(&self) -> Duration {
        self.scaler
            .as_ref()
            .map_or(Duration::from_secs(3600), |s| s.engine.config().interval)
    }

    fn launch(&self) -> Launch<'_> {
        Launch {
            app: &self.app.name,
            health: &self.app.health,
            server_health: &self.server_health_rx,
            worker: self.app.is_worker(),
            shim: self.shim.as_deref(),
            log_tx: &self.log_tx,
            events: &self.events_tx,
            extra_env: &self.env,
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
            failed_readiness: false,
            served: false,
            killed_for: None,
            last_exit: None,
            drained: false,
            maint: false,
        }
    }

    /// Starts (or restarts) the process of `inst`. A failed spawn counts as an immediate exit.
    fn start(&mut self, inst: &mut Inst) {
        let Some(command) = self.command().cloned() else {
            return;
        };
        inst.restart_at = None;
        let Some(port) = self.ports.as_mut().and_then(Ports::take) else {
            if crate::ports::out_of_descriptors() {
                // Not the app's failure, nor the range's: try again shortly, uncounted.
                tracing::error!(app = %self.app.name, instance = %inst.id, "herd is out of file descriptors; starting the instance again in 1 s (raise LimitNOFILE / ulimit -n, or set [gateway] max_connections)");
                inst.state = InstanceState::Restarting;
                inst.restart_at = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
            tracing::error!(app = %self.app.name, instance = %inst.id, "no free port in port_range; widen `port_range`");
            self.after_exit(inst, Duration::ZERO, "no free port");
            return;
        };
        let logs = &self.logs;
        let files = self
            .log_files
            .entry(Arc::clone(&inst.id))
            .or_insert_with(|| {
                (
                    LogFile::new(logs, &inst.id, Stream::Out),
                    LogFile::new(logs, &inst.id, Stream::Err),
                )
            })
            .clone();
        match self
            .launch()
            .spawn_process(&inst.id, &command, port, &files)
        {
            Ok(proc) => {
                tracing::info!(app = %self.app.name, instance = %inst.id, pid = proc.pid.unwrap_or(0), port, "instance started");
                inst.state = InstanceState::Starting;
                inst.served = false;
                // A restart in maintenance stays there: its checks stay paused, so it cannot
                // become ready, and `ready_timeout` runs only once maintenance ends.
                inst.ready_deadline = (!inst.maint).then(|| Instant::now() + command.ready_timeout);
                proc.endpoint.stats.set_maint(inst.maint);
                inst.proc = Some(proc);
            }
            Err(e) => {
                tracing::error!(app = %self.app.name, instance = %inst.id, error = %e, "failed to spawn instance");
                if let Some(p) = self.ports.as_mut() {
                    p.release(port);
                }
                if crate::ports::out_of_descriptors() {
                    // Its pipes could not be opened: herd's shortage, not the app's failure.
                    inst.state = InstanceState::Restarting;
                    inst.restart_at = Some(Instant::now() + Duration::from_secs(1));
                    return;
                }
                self.after_exit(inst, Duration::ZERO, &format!("failed to start: {e}"));
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
                        no_replace_before: None,
                    },
                );
            }
            index += 1;
        }
        while self.slots.len() > want {
            // Instances not serving go first (errored, restarting, starting, failing checks,
            // drained or in maintenance: a ReplicaSet deletes not-ready pods first), the
            // highest-numbered first; then serving ones, highest-numbered first. Scaling in
            // must not keep a drained instance and stop the only ones serving.
            let serving = |i: &Inst| i.state == InstanceState::Ready && !i.drained && !i.maint;
            let victim = self
                .slots
                .iter()
                .rev()
                .find(|(_, s)| !serving(&s.active))
                .or_else(|| self.slots.iter().next_back())
                .map(|(&k, _)| k);
            let Some(slot) = victim.and_then(|k| self.slots.remove(&k)) else {
                break;
            };
            self.retire(slot.active);
            if let Some(next) = slot.next {
                self.retire(next);
            }
        }
        // A reload may have been waiting on a slot that is gone now.
        self.advance_reload();
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
        // Out of rotation before its drain starts counting in-flight requests: its slot is
        // already gone from `slots` (scale-in, reload), so this set no longer holds it.
        let stop = (cmd.drain_timeout, cmd.kill_timeout, cmd.kill_signal);
        self.publish();
        let Some(proc) = &inst.proc else {
            return;
        };
        proc.stop(stop.0, stop.1, stop.2);
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
                self.request_reload(reply);
            }
            Cmd::Drain {
                id,
                drained,
                maint,
                reply,
            } => {
                let ready_timeout = self
                    .command()
                    .map_or(Duration::from_secs(30), |c| c.ready_timeout);
                let found = self
                    .slots
                    .values_mut()
                    .find(|s| &*s.active.id == id.as_str())
                    .map(|s| {
                        let maint_changed = s.active.maint != maint;
                        s.active.drained = drained;
                        s.active.maint = maint;
                        if let Some(p) = &s.active.proc {
                            p.endpoint.stats.set_maint(maint);
                        }
                        // Maintenance pauses the checks, so a starting instance cannot get
                        // ready meanwhile: its `ready_timeout` counts from when it ends.
                        // (A fixed server has no process to restart: no deadline.)
                        if maint_changed
                            && matches!(
                                s.active.state,
                                InstanceState::Starting | InstanceState::Down
                            )
                            && s.active.proc.as_ref().is_some_and(|p| p.pid.is_some())
                        {
                            s.active.ready_deadline =
                                (!maint).then(|| Instant::now() + ready_timeout);
                        }
                    });
                let res = match found {
                    Some(()) => {
                        tracing::info!(app = %self.app.name, instance = %id, drained, maint, "operator drain switch");
                        // In force when the caller hears back: the gateway and the status
                        // already show it.
                        self.publish();
                        Ok(())
                    }
                    None => Err(FleetError::UnknownInstance { id }),
                };
                let _ = reply.send(res);
            }
            Cmd::Reconfigure { app, reply } => {
                let changes = self.reconfigure(*app);
                let _ = reply.send(changes);
            }
            Cmd::ClearManual { reply } => {
                let res = match self.scaler.as_mut() {
                    Some(s) => {
                        s.manual = None;
                        tracing::info!(app = %self.app.name, "manual override cleared; autoscaling resumes");
                        Ok(())
                    }
                    None => Err(self.not_autoscaled()),
                };
                if res.is_ok() {
                    self.scale_tick(Instant::now());
                }
                let _ = reply.send(res);
            }
            Cmd::Pause {
                paused,
                reason,
                reply,
            } => {
                let res = match self.scaler.as_mut() {
                    Some(s) => {
                        s.paused = paused;
                        s.pause_reason = paused.then(|| reason.clone());
                        tracing::info!(app = %self.app.name, paused, %reason, "autoscaling pause switch");
                        Ok(())
                    }
                    None => Err(self.not_autoscaled()),
                };
                let _ = reply.send(res);
            }
            Cmd::Shutdown => self.begin_shutdown(),
        }
    }

    fn not_autoscaled(&self) -> FleetError {
        FleetError::NotAutoscaled {
            app: self.app.name.clone(),
        }
    }

    fn scale(&mut self, n: u32, reason: String) -> Result<u32, FleetError> {
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
        tracing::info!(app = %self.app.name, from = self.desired, to = n, %reason, "manual scaling");
        self.last_scale = Some(ScaleRecord {
            instances: n,
            reason: reason.clone(),
        });
        if let Some(s) = self.scaler.as_mut() {
            // With autoscaling on, a manual count is an override the engine honours (within
            // bounds) until it is cleared.
            let bounds = s.engine.config();
            let in_force = n.clamp(bounds.min, bounds.max);
            s.manual = Some(herd_scaler::ManualOverride {
                instances: n,
                reason,
            });
            self.scale_tick(Instant::now());
            Ok(in_force)
        } else {
            self.apply_scale(n, &[]);
            Ok(n)
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.abort_reload("herd is shutting down");
        self.reject_queued_reloads();
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
            // A rolling reload may have been waiting for this port.
            self.advance_reload();
            return;
        }
        let Some((index, is_next)) = self.locate(uid) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&index) else {
            return;
        };
        if is_next {
            let Some(mut next) = slot.next.take() else {
                return;
            };
            if let Some(proc) = next.proc.take() {
                proc.stop_checks();
                self.release_port(&proc);
            }
            let why = match next.killed_for.take() {
                Some(why) => why,
                None => format!(
                    "exited ({status}) before becoming ready; its output says why: herd logs {}",
                    self.app.name
                ),
            };
            self.replacement_failed(index, &why);
            return;
        }
        let mut inst = std::mem::replace(&mut slot.active, placeholder());
        let Some(proc) = inst.proc.take() else {
            if let Some(slot) = self.slots.get_mut(&index) {
                slot.active = inst;
            }
            return;
        };
        proc.stop_checks();
        self.release_port(&proc);
        let uptime = proc.started.elapsed();
        match inst.killed_for.as_deref() {
            // herd stopped it itself (checks without answer, ready_timeout, max_memory): said
            // when it did; this is the end of that, not a surprise.
            Some(why) => {
                tracing::info!(app = %self.app.name, instance = %inst.id, %status, uptime_ms = uptime.as_millis() as u64, reason = why, "instance stopped by herd exited");
            }
            None => {
                tracing::warn!(app = %self.app.name, instance = %inst.id, %status, uptime_ms = uptime.as_millis() as u64, "instance exited unexpectedly");
            }
        }
        // A process killed for missing ready_timeout never ran properly: an unstable exit.
        let counted = if std::mem::take(&mut inst.failed_readiness) {
            Duration::ZERO
        } else {
            uptime
        };
        let status = format!("{status} after {:.1}s", uptime.as_secs_f64());
        self.after_exit(&mut inst, counted, &status);
        if let Some(slot) = self.slots.get_mut(&index) {
            slot.active = inst;
        }
    }

    /// Applies the restart policy after an unexpected exit (or failed start).
    fn after_exit(&mut self, inst: &mut Inst, uptime: Duration, status: &str) {
        inst.last_exit = Some(match inst.killed_for.take() {
            Some(why) => format!("{status}, killed by herd: {why}"),
            None => status.to_owned(),
        });
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
                tracing::error!(app = %self.app.name, instance = %inst.id, last_exit = status, unstable_exits = inst.tracker.unstable, "too many unstable restarts; instance errored (its output says why: `herd logs {}`; fix the app, then `herd reload`)", self.app.name);
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
        let Some(inst) = slot.inst_mut(is_next) else {
            return;
        };
        if up {
            if matches!(inst.state, InstanceState::Starting | InstanceState::Down) {
                inst.state = InstanceState::Ready;
                inst.ready_deadline = None;
                inst.served = true;
                if let Some(p) = &inst.proc {
                    p.endpoint.stats.clear_down();
                    if let Some(s) = self.scaler.as_mut() {
                        let ms = u64::try_from(p.started.elapsed().as_millis()).unwrap_or(0);
                        s.observe_start(ms);
                    }
                }
                tracing::info!(app = %self.app.name, instance = %inst.id, "instance ready");
            }
            if is_next {
                if let Some(mut next) = slot.next.take() {
                    // The operator's drain or maintenance of the slot outlives a replacement
                    // (memory limit, rolling reload), as HAProxy keeps a server's admin state
                    // across reloads: `ready` puts the slot back, whichever process runs it.
                    next.drained = slot.active.drained;
                    next.maint = slot.active.maint;
                    if let Some(p) = &next.proc {
                        p.endpoint.stats.set_maint(next.maint);
                    }
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
        } else if matches!(inst.state, InstanceState::Ready | InstanceState::Starting) {
            // From ready (any instance), or from starting (a fixed server failing its first
            // checks: the health loop reports no other starting instance down).
            if inst.state == InstanceState::Ready {
                inst.ready_deadline = ready_timeout.map(|t| Instant::now() + t);
            }
            inst.state = InstanceState::Down;
            let last_check = inst
                .proc
                .as_ref()
                .and_then(|p| p.endpoint.stats.last_check())
                .map_or_else(|| "none".to_owned(), |c| c.detail);
            tracing::warn!(app = %self.app.name, instance = %inst.id, %last_check, "instance failed health checks; out of rotation");
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
        let ready_timeout = self.command().map(|c| c.ready_timeout);
        let indices: Vec<u32> = self.slots.keys().copied().collect();
        for index in indices {
            for is_next in [false, true] {
                let Some(slot) = self.slots.get_mut(&index) else {
                    continue;
                };
                let Some(inst) = slot.inst_mut(is_next) else {
                    continue;
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
                    let last_check = inst
                        .proc
                        .as_ref()
                        .and_then(|p| p.endpoint.stats.last_check())
                        .map_or_else(|| "no check finished".to_owned(), |c| c.detail);
                    if last_check.starts_with(crate::health::LOCAL) {
                        // herd could not run the checks (out of descriptors): nothing was
                        // learned about the instance; judge it again a period later.
                        inst.ready_deadline = ready_timeout.map(|t| now + t);
                        continue;
                    }
                    if inst.served {
                        // It served, then failed its checks for `ready_timeout`. An app that
                        // answers them ("HTTP 503": its database is down) is alive, and a
                        // restart would not help: it stays, out of rotation, until its checks
                        // pass again (Kubernetes' readiness). One whose checks get no answer
                        // is hung: it is restarted, gracefully (it may hold requests), and
                        // that exit is a stable one: it had served. Neither turns an outage
                        // of a dependency into an errored fleet.
                        if last_check.starts_with("HTTP ") {
                            tracing::warn!(app = %self.app.name, instance = %inst.id, %last_check, "instance still answers its health check with an error after ready_timeout; kept running out of rotation until its checks pass");
                            // Judged again each period: should it stop answering (hung), it
                            // is restarted then.
                            inst.ready_deadline = ready_timeout.map(|t| now + t);
                            continue;
                        }
                        let why = format!(
                            "its health checks got no answer for ready_timeout (last check: {last_check})"
                        );
                        tracing::warn!(app = %self.app.name, instance = %inst.id, %last_check, "health checks get no answer; restarting the instance");
                        inst.killed_for = Some(why);
                        let stop = self
                            .command()
                            .map(|c| (c.drain_timeout, c.kill_timeout, c.kill_signal));
                        let Some(slot) = self.slots.get_mut(&index) else {
                            continue;
                        };
                        let Some(inst) = slot.inst_mut(is_next) else {
                            continue;
                        };
                        if let (Some(p), Some((drain, kill, signal))) = (&inst.proc, stop) {
                            p.stop(drain, kill, signal);
                        }
                        continue;
                    }
                    inst.failed_readiness = true;
                    // Nothing listening on the port herd gave: the usual cause is an app that
                    // does not read $PORT (a port fixed in its code or config).
                    let port = inst.proc.as_ref().and_then(|p| p.port);
                    let hint = match port {
                        Some(port) if last_check.contains("refused") => not_listening_hint(port),
                        _ => String::new(),
                    };
                    let why =
                        format!("not ready within ready_timeout (last check: {last_check}){hint}");
                    tracing::warn!(app = %self.app.name, instance = %inst.id, %last_check, "not ready within ready_timeout; killing it");
                    inst.killed_for = Some(why);
                    if let Some(p) = &inst.proc {
                        p.kill();
                    }
                }
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
        // A worker's instances serve no requests: never in the gateway's rotation.
        let worker = self.app.is_worker();
        let ready: Vec<_> = self
            .slots
            .values()
            .filter(|_| !worker)
            .filter(|s| s.active.state == InstanceState::Ready && !s.active.drained)
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
            last_reload: self.last_reload.clone(),
            scaling: self.scaler.as_ref().map(|s| ScalingView {
                desired: self.desired,
                current: u32::try_from(self.slots.len()).unwrap_or(u32::MAX),
                manual: s.manual.clone(),
                paused: s.paused,
                pause_reason: s.pause_reason.clone(),
                start_time_ms: s.start_time_ms,
                interval_ms: u64::try_from(s.engine.config().interval.as_millis()).unwrap_or(0),
                last: s.last.clone(),
                decisions: s.decisions.clone(),
            }),
            reloading: !self.reload_queue.is_empty(),
            scale_from_zero: self.app.scaling.as_ref().is_some_and(|s| s.min == 0),
            max_memory: self.command().and_then(|c| c.max_memory),
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
        failed_readiness: false,
        served: false,
        killed_for: None,
        last_exit: None,
        drained: false,
        maint: false,
    }
}

async fn wake_again(demand: Option<Arc<herd_core::Demand>>) {
    match demand {
        Some(d) => d.woken().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Why an instance refused herd's checks on `127.0.0.1:port`: it listens on IPv6 loopback only
/// (Node 17+ resolves `localhost` to `::1`), or on no such port at all.
fn not_listening_hint(port: u16) -> String {
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    // Loopback answers at once, accepted or refused: this does not hold the supervisor up.
    if std::net::TcpStream::connect_timeout(&v6, Duration::from_millis(50)).is_ok() {
        format!(
            "; it listens on [::1]:{port} (IPv6) only, and herd connects to 127.0.0.1:{port}: listen on 127.0.0.1 or on every address (in Node, server.listen(process.env.PORT) without a host; \"localhost\" may resolve to ::1)"
        )
    } else {
        format!(
            "; nothing listens on 127.0.0.1:{port}: the app must listen on the port in $PORT, on 127.0.0.1 or on every address (an app that serves no requests, a queue consumer or a script, is a worker: worker = true, or herd up --worker)"
        )
    }
}
