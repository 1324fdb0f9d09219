//! herd's local fleet supervisor.
//!
//! [`Fleet::start`] runs one supervisor actor per app (`app`): it starts N instances of the app's
//! command, each on its own port and in its own process group (`spawn`), watches them with
//! active health checks (`health`), restarts crashes with PM2's backoff policy (`restart`),
//! samples RSS/CPU from `/proc` every second (`procfs`) to enforce `max_memory`, writes their
//! output to rotated files (`logs`), and publishes the ready set to the gateway through
//! [`herd_core::Rotation`]. Stops are graceful: out of rotation → in-flight requests finish →
//! `kill_signal` (SIGTERM) → `kill_timeout` → SIGKILL of the group. States and transitions: `LIFECYCLE.md`.

mod app;
mod health;
mod instance;
mod logs;
mod ports;
mod preflight;
mod procfs;
mod restart;
mod spawn;
mod status;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use herd_config::Config;
use herd_core::Rotation;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use app::ScalingEvent;
pub use health::{probe, probe_detailed, HealthState};
pub use logs::{reopen_logs, tail_lines, LogLine, Stream};
pub use preflight::{preflight, LaunchProblem};
pub use restart::{RestartPolicy, RestartTracker, Verdict};
pub use spawn::{exec_shim, kill_all_groups, set_apps_nofile, SHIM_ARG};
pub use status::{AppStatus, InstanceStatus, ScaleRecord, ScalingView};

use app::{AppActor, Cmd};
use logs::LogSettings;
use status::AppView;

/// Ways a fleet operation can fail.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FleetError {
    #[error("no app named {name:?} (known: {known})")]
    UnknownApp { name: String, known: String },
    #[error("app {app:?} uses fixed `servers`; herd does not start its instances")]
    NotSupervised { app: String },
    #[error("cannot run {requested} instances of {app:?}: {reason}")]
    InvalidCount {
        app: String,
        requested: u32,
        reason: String,
    },
    #[error("reload of {app:?} failed: {reason}")]
    ReloadFailed { app: String, reason: String },
    #[error("app {app:?} has no [app.scaling] section; autoscaling is off for it")]
    NotAutoscaled { app: String },
    #[error("no instance {id:?} (ids look like web-1; see GET /cluster/status)")]
    UnknownInstance { id: String },
    #[error("the supervisor of {app:?} has stopped")]
    Stopped { app: String },
    #[error("failed to create the log directory {path}: {reason}")]
    LogDir { path: String, reason: String },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Launch { problems: Vec<LaunchProblem> },
    #[error("herd is shutting down; the config is not applied")]
    ShuttingDown,
}

/// Process-level options that do not come from the config file.
#[derive(Clone, Default)]
pub struct FleetOptions {
    /// herd's own executable: instances are started through `herd __spawn` so that they die
    /// with herd. `None` starts them directly (used by library tests).
    pub shim: Option<PathBuf>,
    /// Variables every instance gets on top of its app's `env` (e.g. `HERD_SERVICES_URL` and
    /// `HERD_SERVICES_TOKEN`); herd's own names win over the app's.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for FleetOptions {
    /// Names only: `env` carries secrets (the services token).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("FleetOptions")
            .field("shim", &self.shim)
            .field("env", &names)
            .finish()
    }
}

struct AppHandle {
    name: String,
    cmds: mpsc::Sender<Cmd>,
    view: Arc<ArcSwap<AppView>>,
    logs: broadcast::Sender<LogLine>,
    log_dir: PathBuf,
    scaling_events: Arc<std::sync::Mutex<std::collections::VecDeque<ScalingEvent>>>,
}

/// The running supervisor of every app.
pub struct Fleet {
    /// Swapped when a config reload adds or removes apps.
    apps: ArcSwap<Vec<Arc<AppHandle>>>,
    tasks: std::sync::Mutex<Vec<(String, JoinHandle<()>)>>,
    rotation: Arc<dyn Rotation>,
    options: FleetOptions,
    logs: std::sync::Mutex<herd_config::Logs>,
    /// Set by [`Fleet::shutdown`] (under the `tasks` lock): no app starts after it.
    stopping: AtomicBool,
    /// The longest graceful stop of an instance (`drain_timeout` + `kill_timeout`) of any
    /// config applied so far, in ms: instances of a removed app may still be draining under it.
    longest_stop_ms: AtomicU64,
}

/// The longest graceful stop of one instance under `config`.
fn longest_stop(config: &Config) -> Duration {
    config
        .apps
        .iter()
        .filter_map(|a| match &a.backends {
            herd_config::Backends::Command(c) => Some(c.drain_timeout + c.kill_timeout),
            herd_config::Backends::Servers(_) => None,
        })
        .max()
        .unwrap_or_default()
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("apps", &self.app_names())
            .finish()
    }
}

fn launch_app(
    app: &herd_config::App,
    logs: &herd_config::Logs,
    rotation: &Arc<dyn Rotation>,
    options: &FleetOptions,
) -> Result<(Arc<AppHandle>, JoinHandle<()>), FleetError> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let log_dir = ensure_log_dir(&logs.dir, &app.name)?;
    let desired = match &app.backends {
        herd_config::Backends::Command(c) => match &app.scaling {
            // The configured count, within the autoscaler's bounds.
            Some(s) => c.instances.resolve(cores).clamp(s.min, s.max),
            None => c.instances.resolve(cores),
        },
        herd_config::Backends::Servers(s) => u32::try_from(s.len()).unwrap_or(u32::MAX),
    };
    let (log_tx, _) = broadcast::channel(1024);
    let view = Arc::new(ArcSwap::from_pointee(AppView {
        name: app.name.clone(),
        supervised: matches!(app.backends, herd_config::Backends::Command(_)),
        desired,
        instances: Vec::new(),
        last_scale: None,
        last_reload: None,
        reloading: false,
        scale_from_zero: false,
        scaling: None,
        max_memory: None,
    }));
    let scaling_events = Arc::default();
    let (tx, rx) = mpsc::channel(64);
    let actor = AppActor::new(
        app.clone(),
        desired,
        options.shim.clone(),
        options.env.clone().into(),
        LogSettings {
            dir: log_dir.clone(),
            max_size: logs.max_size,
            max_files: logs.max_files,
            date_format: logs.date_format.as_deref().map(Arc::from),
        },
        Arc::clone(rotation),
        app::Outputs {
            log_tx: log_tx.clone(),
            view: Arc::clone(&view),
            scaling_events: Arc::clone(&scaling_events),
        },
    );
    let task = tokio::spawn(
        actor
            .run(rx)
            .instrument(tracing::info_span!("supervisor", app = %app.name)),
    );
    let handle = Arc::new(AppHandle {
        name: app.name.clone(),
        cmds: tx,
        view,
        logs: log_tx,
        log_dir,
        scaling_events,
    });
    Ok((handle, task))
}

/// Creates (if need be) and returns the log directory of app `name`.
fn ensure_log_dir(dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf, FleetError> {
    let log_dir = instance::log_dir(dir, name);
    std::fs::create_dir_all(&log_dir).map_err(|e| FleetError::LogDir {
        path: log_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(log_dir)
}

impl Fleet {
    /// Starts every app's instances. Returns at once; instances become ready in the background.
    ///
    /// # Errors
    /// [`FleetError::LogDir`] when the log directory cannot be created.
    pub fn start(
        config: &Config,
        rotation: Arc<dyn Rotation>,
        options: FleetOptions,
    ) -> Result<Fleet, FleetError> {
        let mut apps = Vec::new();
        let mut tasks = Vec::new();
        for app in &config.apps {
            let (handle, task) = launch_app(app, &config.logs, &rotation, &options)?;
            apps.push(handle);
            tasks.push((app.name.clone(), task));
        }
        Ok(Fleet {
            apps: ArcSwap::from_pointee(apps),
            tasks: std::sync::Mutex::new(tasks),
            rotation,
            options,
            logs: std::sync::Mutex::new(config.logs.clone()),
            stopping: AtomicBool::new(false),
            longest_stop_ms: AtomicU64::new(millis_u64(longest_stop(config))),
        })
    }

    /// Does what applying `config` could fail at (checking that every app's command can be
    /// started, creating each app's log directory) without changing anything that runs, so a
    /// config reload can stop before its first change.
    ///
    /// # Errors
    /// [`FleetError::Launch`] when an app's `cwd` or program is missing or not usable (see
    /// [`preflight`]); [`FleetError::LogDir`] when a log directory cannot be created.
    pub fn prepare(&self, config: &Config) -> Result<(), FleetError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(FleetError::ShuttingDown);
        }
        let problems = preflight(config);
        if !problems.is_empty() {
            return Err(FleetError::Launch { problems });
        }
        for app in &config.apps {
            ensure_log_dir(&config.logs.dir, &app.name)?;
        }
        Ok(())
    }

    /// Applies a new config: new apps start, removed apps drain and stop, the others apply
    /// what changed (see `app/reconfigure.rs`). Returns one line per change.
    ///
    /// # Errors
    /// [`FleetError::LogDir`] for a new app whose log directory cannot be created.
    pub async fn reconfigure(&self, config: &Config) -> Result<Vec<String>, FleetError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(FleetError::ShuttingDown);
        }
        self.longest_stop_ms
            .fetch_max(millis_u64(longest_stop(config)), Ordering::AcqRel);
        let mut changes = Vec::new();
        let current = self.apps.load_full();
        let logs = config.logs.clone();
        *self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = logs.clone();
        let mut next: Vec<Arc<AppHandle>> = Vec::new();
        for app in &config.apps {
            match current.iter().find(|h| h.name == app.name) {
                Some(h) => {
                    let (tx, rx) = oneshot::channel();
                    if h.cmds
                        .send(Cmd::Reconfigure {
                            app: Box::new(app.clone()),
                            reply: tx,
                        })
                        .await
                        .is_ok()
                    {
                        changes.extend(rx.await.unwrap_or_default());
                    }
                    next.push(Arc::clone(h));
                }
                None => {
                    // Under the lock `shutdown` takes the tasks with: an app launched here is
                    // either awaited by the shutdown or not launched at all.
                    let mut tasks = self
                        .tasks
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if self.stopping.load(Ordering::Acquire) {
                        continue; // not started; the apps already running stay listed
                    }
                    let (handle, task) = launch_app(app, &logs, &self.rotation, &self.options)?;
                    tasks.push((app.name.clone(), task));
                    drop(tasks);
                    changes.push(format!("{}: new app started", app.name));
                    next.push(handle);
                }
            }
        }
        for h in current.iter() {
            if !config.apps.iter().any(|a| a.name == h.name) {
                let _ = h.cmds.send(Cmd::Shutdown).await;
                changes.push(format!(
                    "{}: removed; draining and stopping its instances",
                    h.name
                ));
            }
        }
        self.apps.store(Arc::new(next));
        if self.stopping.load(Ordering::Acquire) {
            // The shutdown began meanwhile and may not have seen the apps started here: stop
            // them too (their tasks are among those it awaits).
            for h in self.apps.load_full().iter() {
                let _ = h.cmds.send(Cmd::Shutdown).await;
            }
            return Err(FleetError::ShuttingDown);
        }
        Ok(changes)
    }

    /// How long [`Fleet::shutdown`] may take: the longest graceful stop of an instance under
    /// any config applied so far, plus a margin.
    #[must_use]
    pub fn stop_deadline(&self) -> Duration {
        Duration::from_millis(self.longest_stop_ms.load(Ordering::Acquire)) + Duration::from_secs(2)
    }

    /// Takes instance `id` out of rotation (`drained = true`) or puts it back.
    ///
    /// # Errors
    /// [`FleetError::UnknownInstance`].
    pub async fn set_drained(&self, id: &str, drained: bool) -> Result<(), FleetError> {
        let unknown = || FleetError::UnknownInstance { id: id.to_owned() };
        let apps = self.apps.load_full();
        let handle = apps
            .iter()
            .filter(|h| id.starts_with(&format!("{}-", h.name)))
            .max_by_key(|h| h.name.len())
            .ok_or_else(unknown)?;
        self.ask(handle, |reply| Cmd::Drain {
            id: id.to_owned(),
            drained,
            maint: false,
            reply,
        })
        .await
    }

    /// Puts instance `id` in maintenance (HAProxy MAINT: out of rotation, active checks
    /// paused) or, with `false`, takes it out again and back into rotation.
    ///
    /// # Errors
    /// [`FleetError::UnknownInstance`].
    pub async fn set_maint(&self, id: &str, maint: bool) -> Result<(), FleetError> {
        let unknown = || FleetError::UnknownInstance { id: id.to_owned() };
        let apps = self.apps.load_full();
        let handle = apps
            .iter()
            .filter(|h| id.starts_with(&format!("{}-", h.name)))
            .max_by_key(|h| h.name.len())
            .ok_or_else(unknown)?;
        self.ask(handle, |reply| Cmd::Drain {
            id: id.to_owned(),
            drained: maint,
            maint,
            reply,
        })
        .await
    }

    fn app(&self, name: &str) -> Result<Arc<AppHandle>, FleetError> {
        let apps = self.apps.load();
        apps.iter()
            .find(|a| a.name == name)
            .cloned()
            .ok_or_else(|| FleetError::UnknownApp {
                name: name.to_owned(),
                known: apps
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every app and instance, with live counters.
    #[must_use]
    pub fn status(&self) -> Vec<AppStatus> {
        let now = Instant::now();
        self.apps
            .load()
            .iter()
            .map(|a| a.view.load().render(now))
            .collect()
    }

    /// Names of the apps, in config order.
    #[must_use]
    pub fn app_names(&self) -> Vec<String> {
        self.apps.load().iter().map(|a| a.name.clone()).collect()
    }

    async fn ask<T>(
        &self,
        app: &AppHandle,
        make: impl FnOnce(oneshot::Sender<Result<T, FleetError>>) -> Cmd,
    ) -> Result<T, FleetError> {
        let stopped = || FleetError::Stopped {
            app: app.name.clone(),
        };
        let (tx, rx) = oneshot::channel();
        app.cmds.send(make(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Sets the number of instances of `app`; answers the count in force, which autoscaling's
    /// `min`/`max` bound.
    ///
    /// # Errors
    /// Unknown app, a `servers` app, or more instances than `port_range` allows.
    pub async fn scale(
        &self,
        app: &str,
        instances: u32,
        reason: String,
    ) -> Result<u32, FleetError> {
        let handle = self.app(app)?;
        self.ask(&handle, |reply| Cmd::Scale {
            n: instances,
            reason,
            reply,
        })
        .await
    }

    /// Rolling, start-first reload of `app` (or of every supervised app); resolves when done.
    ///
    /// # Errors
    /// Unknown app, a `servers` app, or a new instance that could not become ready.
    pub async fn reload(&self, app: Option<&str>) -> Result<(), FleetError> {
        match app {
            Some(name) => {
                self.ask(&*self.app(name)?, |reply| Cmd::Reload { reply })
                    .await
            }
            None => {
                // Each app on its own, as `pm2 reload all`: one that fails does not keep the
                // others on their old instances.
                let (mut reloaded, mut failed) = (Vec::new(), Vec::new());
                for handle in self.apps.load_full().iter() {
                    if !handle.view.load().supervised {
                        continue;
                    }
                    match self.ask(handle, |reply| Cmd::Reload { reply }).await {
                        Ok(()) => reloaded.push(handle.name.clone()),
                        Err(FleetError::ReloadFailed { reason, .. }) => {
                            failed.push((handle.name.clone(), reason));
                        }
                        Err(e) => failed.push((handle.name.clone(), e.to_string())),
                    }
                }
                if failed.is_empty() {
                    return Ok(());
                }
                let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
                let reasons: Vec<String> =
                    failed.iter().map(|(n, r)| format!("{n}: {r}")).collect();
                Err(FleetError::ReloadFailed {
                    app: names.join(", "),
                    reason: format!(
                        "{}; reloaded: {}",
                        reasons.join("; "),
                        if reloaded.is_empty() {
                            "none".to_owned()
                        } else {
                            reloaded.join(", ")
                        }
                    ),
                })
            }
        }
    }

    /// The autoscaler of every app (`None` where `[app.scaling]` is absent).
    #[must_use]
    pub fn scaling_status(&self) -> Vec<(String, Option<ScalingView>)> {
        self.apps
            .load()
            .iter()
            .map(|a| (a.name.clone(), a.view.load().scaling.clone()))
            .collect()
    }

    /// Recent scaling events (oldest first), of one app or all.
    ///
    /// # Errors
    /// Unknown app.
    pub fn scaling_events(&self, app: Option<&str>) -> Result<Vec<ScalingEvent>, FleetError> {
        let handles: Vec<Arc<AppHandle>> = match app {
            Some(name) => vec![self.app(name)?],
            None => self.apps.load().iter().cloned().collect(),
        };
        let mut out: Vec<ScalingEvent> = handles
            .iter()
            .flat_map(|h| {
                h.scaling_events
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|e| e.at_unix_ms);
        Ok(out)
    }

    /// Clears a manual override so the autoscaler decides again.
    ///
    /// # Errors
    /// Unknown app, or an app without autoscaling.
    pub async fn clear_manual(&self, app: &str) -> Result<(), FleetError> {
        self.ask(&*self.app(app)?, |reply| Cmd::ClearManual { reply })
            .await
    }

    /// Pauses or resumes the autoscaler of `app` (the count stays where it is while paused).
    ///
    /// # Errors
    /// Unknown app, or an app without autoscaling.
    pub async fn pause(&self, app: &str, paused: bool, reason: String) -> Result<(), FleetError> {
        self.ask(&*self.app(app)?, |reply| Cmd::Pause {
            paused,
            reason,
            reply,
        })
        .await
    }

    /// Live output of `app`'s instances, plus the log files to read history from.
    ///
    /// # Errors
    /// Unknown app.
    pub fn logs(
        &self,
        app: &str,
    ) -> Result<(broadcast::Receiver<LogLine>, Vec<PathBuf>), FleetError> {
        let handle = self.app(app)?;
        let mut files: Vec<PathBuf> = Vec::new();
        let mut ids: Vec<String> = handle
            .view
            .load()
            .instances
            .iter()
            .map(|i| i.id.to_string())
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            for stream in [Stream::Out, Stream::Err] {
                files.push(logs::log_path(&handle.log_dir, &id, stream));
            }
        }
        Ok((handle.logs.subscribe(), files))
    }

    /// The shutdown has begun: no config is applied any more.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Drains and stops every instance of every app; resolves when all have exited.
    /// Calling it again waits for nothing.
    pub async fn shutdown(&self) {
        {
            let _tasks = self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.stopping.store(true, Ordering::Release);
        }
        for app in self.apps.load_full().iter() {
            let _ = app.cmds.send(Cmd::Shutdown).await;
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, task) in tasks {
            if let Err(e) = task.await {
                tracing::error!(app = %name, error = %e, "supervisor task failed");
            }
        }
    }

    /// True when every app has at least one ready instance.
    #[must_use]
    pub fn all_ready(&self) -> bool {
        self.status().iter().all(|a| a.ready > 0)
    }
}
