//! One instance: its running process (if any), the tasks that watch it, and how it is stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_config::{Command, Health};
use herd_core::{Endpoint, EndpointStats, InstanceState};
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::health::{probe_detailed, HealthState};
use crate::logs::{self, LogFile, LogLine, Stream};
use crate::restart::RestartTracker;
use crate::spawn::{self, SpawnSpec};
use crate::status::InstanceView;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// What instance tasks report to their app's supervisor.
#[derive(Debug)]
pub(crate) enum Event {
    Exited { uid: u64, status: String },
    Health { uid: u64, up: bool },
}

/// When the group's stragglers get SIGKILL after the leader exited during a graceful stop.
type Grace = Arc<std::sync::Mutex<Option<Instant>>>;

/// A running process (or, for `servers` apps, a configured address) being watched.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) uid: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) port: Option<u16>,
    pub(crate) endpoint: Endpoint,
    pub(crate) started: Instant,
    /// Stops the health checker.
    checks: CancellationToken,
    /// Cancelled by the waiter once the process has exited.
    pub(crate) exited: CancellationToken,
    /// Set by a graceful stop when it sends SIGTERM: until then the rest of the group may
    /// finish after the leader has exited (a wrapper script, a cluster primary without a
    /// handler), as `kill_timeout` promises.
    grace: Grace,
    pub(crate) rss_bytes: u64,
    pub(crate) cpu_percent: f64,
    pub(crate) rps: f64,
    pub(crate) last_cpu: Option<(u64, Instant)>,
    pub(crate) last_requests: (u64, Instant),
    /// Latency and errors seen by the gateway during the last 1 s sample.
    pub(crate) window: herd_core::WindowStats,
}

/// One instance lineage of a slot: survives restarts of its process, keeps its id.
#[derive(Debug)]
pub(crate) struct Inst {
    pub(crate) id: Arc<str>,
    pub(crate) state: InstanceState,
    pub(crate) proc: Option<Proc>,
    pub(crate) tracker: RestartTracker,
    pub(crate) restart_at: Option<Instant>,
    pub(crate) ready_deadline: Option<Instant>,
    /// Killed for missing `ready_timeout`: its exit counts as unstable.
    pub(crate) failed_readiness: bool,
    /// The running process has been ready (in rotation) at least once. Failing its checks
    /// later is not a failed start: it is kept while it answers them (see `on_timers`), and a
    /// restart for checks that get no answer is a stable exit.
    pub(crate) served: bool,
    /// Why herd killed the running process, if it did (shown in `last_exit`).
    pub(crate) killed_for: Option<String>,
    /// How the last process of this instance ended (status, uptime, and herd's reason if it
    /// killed it); kept after a restart.
    pub(crate) last_exit: Option<String>,
    /// Taken out of rotation by an operator (`POST /loadbalancer/instances/{id}/drain`) until
    /// put back (`.../ready`); shown as `draining` meanwhile.
    pub(crate) drained: bool,
    /// In maintenance (`.../maint`): drained, and active checks paused; shown as `maint`.
    pub(crate) maint: bool,
}

impl Inst {
    pub(crate) fn view(&self) -> InstanceView {
        let p = self.proc.as_ref();
        InstanceView {
            id: Arc::clone(&self.id),
            pid: p.and_then(|p| p.pid),
            port: p.and_then(|p| p.port),
            addr: p
                .filter(|p| p.pid.is_none())
                .map(|p| p.endpoint.addr.to_string()),
            state: if self.maint && matches!(self.state, InstanceState::Ready | InstanceState::Down)
            {
                InstanceState::Maint
            } else if self.drained && self.state == InstanceState::Ready {
                InstanceState::Draining
            } else {
                self.state
            },
            started: p.map(|p| p.started),
            restarts: self.tracker.restarts,
            restart_at: self.restart_at,
            restart_delay_ms: u64::try_from(self.tracker.next_delay.as_millis()).unwrap_or(0),
            rss_bytes: p.map_or(0, |p| p.rss_bytes),
            cpu_percent: p.map_or(0.0, |p| p.cpu_percent),
            rps: p.map_or(0.0, |p| p.rps),
            stats: p.map(|p| Arc::clone(&p.endpoint.stats)),
            last_exit: self.last_exit.clone(),
        }
    }
}

/// What starting a process needs from the app.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) app: &'a str,
    pub(crate) health: &'a Health,
    /// The health settings of fixed servers, which a config reload changes in place (a
    /// process herd started keeps the checks it started with until it is replaced).
    pub(crate) server_health: &'a tokio::sync::watch::Receiver<Health>,
    /// `worker = true`: no checks; a process counts as ready once it runs.
    pub(crate) worker: bool,
    pub(crate) shim: Option<&'a std::path::Path>,
    pub(crate) log_tx: &'a broadcast::Sender<LogLine>,
    pub(crate) events: &'a mpsc::UnboundedSender<Event>,
    pub(crate) extra_env: &'a [(String, String)],
}

impl Launch<'_> {
    /// Spawns the app's command on `port` and starts its waiter, log pumps and health checker.
    pub(crate) fn spawn_process(
        &self,
        id: &Arc<str>,
        command: &Command,
        port: u16,
        files: &(LogFile, LogFile),
    ) -> std::io::Result<Proc> {
        let mut child = spawn::spawn(&SpawnSpec {
            app: self.app,
            instance: id,
            port,
            command,
            shim: self.shim,
            extra_env: self.extra_env,
        })?;
        let pid = child.id();
        if let Some(pid) = pid {
            spawn::group_started(pid);
        }
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("instance", app = %self.app, instance = %id, pid = pid.unwrap_or(0));
        type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
        let out = child.stdout.take().map(|r| Box::new(r) as Reader);
        let err = child.stderr.take().map(|r| Box::new(r) as Reader);
        for (reader, stream, file) in [(out, Stream::Out, &files.0), (err, Stream::Err, &files.1)] {
            if let Some(reader) = reader {
                // Ends at EOF, i.e. when the process group has closed the pipe.
                tokio::spawn(
                    logs::pump(
                        reader,
                        Arc::clone(id),
                        stream,
                        file.clone(),
                        self.log_tx.clone(),
                    )
                    .instrument(span.clone()),
                );
            }
        }
        let exited = CancellationToken::new();
        let grace = Grace::default();
        tokio::spawn(
            wait_exit(
                uid,
                child,
                self.events.clone(),
                exited.clone(),
                Arc::clone(&grace),
            )
            .instrument(span.clone()),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut proc = self.watch(uid, id, addr, pid, Some(port), exited, span);
        proc.grace = grace;
        Ok(proc)
    }

    /// Watches a fixed server (`servers = [...]`): health checks only.
    pub(crate) fn watch_server(&self, id: &Arc<str>, addr: SocketAddr) -> Proc {
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("server", app = %self.app, instance = %id, %addr);
        self.watch(uid, id, addr, None, None, CancellationToken::new(), span)
    }

    /// The checks a new process or server starts with: a fixed server follows the app's
    /// settings through reloads; a process keeps those it started with.
    fn health_for(&self, server: bool) -> tokio::sync::watch::Receiver<Health> {
        if server {
            self.server_health.clone()
        } else {
            tokio::sync::watch::channel(self.health.clone()).1
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn watch(
        &self,
        uid: u64,
        id: &Arc<str>,
        addr: SocketAddr,
        pid: Option<u32>,
        port: Option<u16>,
        exited: CancellationToken,
        span: tracing::Span,
    ) -> Proc {
        let checks = CancellationToken::new();
        let stats = Arc::new(EndpointStats::new());
        if self.worker && pid.is_some() {
            // Nothing to check: running is ready (the supervisor still restarts it when it
            // exits, and replaces it past max_memory).
            let _ = self.events.send(Event::Health { uid, up: true });
        } else {
            tokio::spawn(
                check_loop(
                    uid,
                    addr,
                    self.health_for(pid.is_none()),
                    self.events.clone(),
                    checks.clone(),
                    Arc::clone(&stats),
                    pid.is_none(),
                )
                .instrument(span),
            );
        }
        let now = Instant::now();
        Proc {
            uid,
            pid,
            port,
            endpoint: Endpoint {
                uid,
                id: Arc::clone(id),
                addr,
                stats,
            },
            started: now,
            checks,
            exited,
            grace: Grace::default(),
            rss_bytes: 0,
            cpu_percent: 0.0,
            rps: 0.0,
            last_cpu: None,
            last_requests: (0, now),
            window: herd_core::WindowStats::default(),
        }
    }
}

impl Proc {
    /// Stops health checking (the process is leaving rotation for good).
    pub(crate) fn stop_checks(&self) {
        self.checks.cancel();
    }

    /// Graceful stop: wait for in-flight requests (at most `drain`), send the group `signal`
    /// (`kill_signal`, SIGTERM by default), wait at most `kill` for the exit, then SIGKILL the
    /// group. Runs as its own task; the exit itself is
    /// reported by the waiter.
    pub(crate) fn stop(&self, drain: Duration, kill: Duration, signal: herd_config::StopSignal) {
        let signal = match signal {
            herd_config::StopSignal::Term => Signal::SIGTERM,
            herd_config::StopSignal::Int => Signal::SIGINT,
            herd_config::StopSignal::Quit => Signal::SIGQUIT,
            herd_config::StopSignal::Hup => Signal::SIGHUP,
            herd_config::StopSignal::Usr1 => Signal::SIGUSR1,
            herd_config::StopSignal::Usr2 => Signal::SIGUSR2,
        };
        self.stop_checks();
        let Some(pid) = self.pid else { return };
        let stats = Arc::clone(&self.endpoint.stats);
        let exited = self.exited.clone();
        let grace = Arc::clone(&self.grace);
        let span = tracing::info_span!("stop", instance = %self.endpoint.id, pid);
        tokio::spawn(
            async move {
                tokio::select! {
                    () = stats.wait_idle() => {}
                    () = tokio::time::sleep(drain) => {
                        tracing::warn!(in_flight = stats.in_flight(), ?drain, "drain_timeout reached with requests in flight");
                    }
                    () = exited.cancelled() => return,
                }
                let deadline = Instant::now() + kill;
                *grace.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(deadline);
                // Children that left the group (a detached worker) get the same signal and
                // the same kill_timeout, found while the leader still names them its children.
                let escaped = tokio::task::spawn_blocking(move || crate::procfs::escaped(pid))
                    .await
                    .unwrap_or_default();
                spawn::signal_group(pid, signal);
                for &e in &escaped {
                    spawn::signal_proc(e, signal);
                }
                tokio::select! {
                    () = exited.cancelled() => {}
                    () = tokio::time::sleep(kill) => {
                        tracing::warn!(?kill, "still running after kill_timeout; sending SIGKILL");
                        spawn::signal_group(pid, Signal::SIGKILL);
                    }
                }
                while Instant::now() < deadline && escaped.iter().any(|&e| crate::procfs::alive(e)) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for &e in &escaped {
                    if crate::procfs::alive(e) {
                        tracing::warn!(pid = e.0, "a process the instance started outside its group is still running after kill_timeout; sending SIGKILL");
                        spawn::signal_proc(e, Signal::SIGKILL);
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Immediate stop (failed readiness): SIGKILL the group. Not once the waiter has seen the
    /// group end: its number may belong to another group by now.
    pub(crate) fn kill(&self) {
        if self.exited.is_cancelled() {
            return;
        }
        if let Some(pid) = self.pid {
            spawn::signal_group(pid, Signal::SIGKILL);
        }
    }
}

async fn wait_exit(
    uid: u64,
    mut child: Child,
    events: mpsc::UnboundedSender<Event>,
    exited: CancellationToken,
    grace: Grace,
) {
    let pid = child.id();
    let status = match child.wait().await {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    // Whatever the leader left behind in its group goes too, so the port is free for a restart;
    // during a graceful stop, only once the group has had its `kill_timeout` since SIGTERM.
    if let Some(pid) = pid {
        let deadline = *grace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(deadline) = deadline {
            while Instant::now() < deadline && spawn::group_alive(pid) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        spawn::signal_group(pid, Signal::SIGKILL);
        spawn::group_ended(pid);
    }
    exited.cancel();
    let _ = events.send(Event::Exited { uid, status });
}

async fn check_loop(
    uid: u64,
    addr: SocketAddr,
    mut settings: tokio::sync::watch::Receiver<Health>,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
    stats: Arc<EndpointStats>,
    server: bool,
) {
    let mut health = settings.borrow_and_update().clone();
    let mut state = if server {
        HealthState::new_server(health.rise, health.fall)
    } else {
        HealthState::new(health.rise, health.fall)
    };
    let mut first = true;
    loop {
        // A reload's new settings take effect from the next probe; the streaks under way
        // count toward the new `rise` and `fall`.
        if settings.has_changed().unwrap_or(false) {
            health = settings.borrow_and_update().clone();
            state.set_thresholds(health.rise, health.fall);
        }
        let wait = if first {
            Duration::from_millis(50)
        } else {
            state.next_interval(health.interval, health.fastinter, health.downinter)
        };
        first = false;
        let (ok, detail) = tokio::select! {
            () = cancel.cancelled() => return,
            seen = async {
                tokio::time::sleep(wait).await;
                // Maintenance (HAProxy MAINT) pauses checks: nothing is probed or counted.
                if stats.in_maint() {
                    return None;
                }
                Some(probe_detailed(addr, health.path.as_deref(), &health.expect_status, health.timeout).await)
            } => match seen {
                Some(seen) => seen,
                None => continue,
            },
        };
        if detail.starts_with(crate::health::LOCAL) {
            // herd is out of descriptors (say, under a flood of idle connections): the
            // instance is not to blame, and killing it would turn the flood into an outage.
            // Shown as the last check (the supervisor then waits instead of judging), never
            // counted.
            tracing::warn!(%detail, "health check not run: herd is out of resources");
            stats.set_last_check(herd_core::LastCheck::now(false, detail));
            continue;
        }
        stats.set_last_check(herd_core::LastCheck::now(ok, detail));
        if let Some(up) = state.observe(ok) {
            if events.send(Event::Health { uid, up }).is_err() {
                return;
            }
        }
    }
}

/// Where an app's instance logs go.
pub(crate) fn log_dir(base: &std::path::Path, app: &str) -> PathBuf {
    base.join(app)
}
