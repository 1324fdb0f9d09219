//! `herd up` and `herd check`: build the parts from a validated config, run until a signal,
//! then drain with deadlines.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herd_admin::telemetry::Telemetry;
use herd_config::{Config, Instances};
use herd_core::StatsRegistry;
use herd_fleet::{Fleet, FleetOptions};
use herd_proxy::Gateway;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::cli::UpArgs;

use crate::EX_CONFIG;

/// Whether herd could create and write the embedded store's file (with `[services]` on): its
/// directory, or the nearest existing one above it, must be a writable directory. A read-only
/// place (a system directory under a sandbox, a root-owned one) stopped `herd up` after
/// `herd check` had said ok.
fn store_problem(cfg: &herd_config::Config) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let herd_config::Store::Embedded { path } = &cfg.store else {
        return None;
    };
    if !cfg.services.enabled {
        return None;
    }
    let hint = "set [store] path to a file in a directory herd may write (e.g. /var/lib/herd/store.redb), or [services] enabled = false";
    if path.is_dir() {
        return Some(format!(
            "store.path: {} is a directory; the store is a file\n  hint: {hint}",
            path.display()
        ));
    }
    if path.exists() {
        return access(path.as_path(), AccessFlags::R_OK | AccessFlags::W_OK)
            .err()
            .map(|e| {
                format!(
                    "store.path: cannot write {}: {e}
  hint: {hint}",
                    path.display()
                )
            });
    }
    creatable("store.path", path, hint)
}

/// Why `path`, which does not exist yet, could not be created: the nearest existing place
/// above it is not a directory, or not one herd may write.
fn creatable(key: &str, path: &Path, hint: &str) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let mut dir = path.parent()?;
    while !dir.exists() {
        dir = dir.parent()?;
    }
    if !dir.is_dir() {
        return Some(format!(
            "{key}: {} is not a directory, so {} cannot be created
  hint: {hint}",
            dir.display(),
            path.display()
        ));
    }
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
        .err()
        .map(|e| {
            format!(
                "{key}: {} cannot be created: {}: {e}
  hint: {hint}",
                path.display(),
                dir.display()
            )
        })
}

/// `[gateway] access_log` names a file herd must be able to append to (or create): nginx
/// refuses to start on an access log it cannot open, and so does herd, rather than serve with
/// no log.
fn access_log_problem(cfg: &herd_config::Config) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let herd_config::AccessLogTarget::File(path) =
        &cfg.gateway.data_plane.access_log.as_ref()?.target
    else {
        return None;
    };
    let hint = "point access_log at a file herd may append to, in a directory that exists (relative paths start at the config file's directory), or \"stdout\"";
    if path.is_dir() {
        return Some(format!(
            "gateway.access_log: {} is a directory\n  hint: {hint}",
            path.display()
        ));
    }
    if path.exists() {
        return access(path.as_path(), AccessFlags::W_OK).err().map(|e| {
            format!(
                "gateway.access_log: cannot append to {}: {e}\n  hint: {hint}",
                path.display()
            )
        });
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Some(format!(
            "gateway.access_log: {} cannot be created: the directory {} does not exist\n  hint: {hint}",
            path.display(),
            dir.display()
        )),
        Some(dir) if !dir.as_os_str().is_empty() => {
            access(dir, AccessFlags::W_OK | AccessFlags::X_OK).err().map(|e| {
                format!(
                    "gateway.access_log: {} cannot be created: {}: {e}\n  hint: {hint}",
                    path.display(),
                    dir.display()
                )
            })
        }
        _ => None,
    }
}

/// Instance output goes under `[logs] dir`: it must be (or become) a directory herd may write.
fn logs_problem(cfg: &herd_config::Config) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let dir = &cfg.logs.dir;
    let hint = "set [logs] dir to a directory herd may write (relative paths start at the config file's directory)";
    if dir.exists() && !dir.is_dir() {
        return Some(format!(
            "logs.dir: {} is a file, not a directory\n  hint: {hint}",
            dir.display()
        ));
    }
    if dir.is_dir() {
        return access(dir.as_path(), AccessFlags::W_OK | AccessFlags::X_OK)
            .err()
            .map(|e| {
                format!(
                    "logs.dir: cannot write in {}: {e}\n  hint: {hint}",
                    dir.display()
                )
            });
    }
    creatable("logs.dir", dir, hint)
}

pub(crate) fn check(path: &Path, config_only: bool) -> ExitCode {
    match herd_config::load(path) {
        Ok(cfg) => {
            if config_only {
                println!(
                    "{}: ok (the file alone: apps' programs and certificates not checked)",
                    path.display()
                );
                return ExitCode::SUCCESS;
            }
            // What `herd up` loads besides the file: the certificates.
            if let Some(tls) = &cfg.gateway.tls {
                if let Err(e) = herd_proxy::tls::TlsCerts::load(tls) {
                    eprintln!("error: [gateway.tls]: {e}\n  hint: point cert and key at readable PEM files (paths are relative to the config file)");
                    eprintln!("1 error(s) in {}", path.display());
                    return ExitCode::from(EX_CONFIG);
                }
            }
            // And that every app's command can be started, and the embedded store written.
            let mut problems: Vec<String> = herd_fleet::preflight(&cfg)
                .iter()
                .map(ToString::to_string)
                .collect();
            problems.extend(store_problem(&cfg));
            problems.extend(logs_problem(&cfg));
            problems.extend(access_log_problem(&cfg));
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{}: {p}", path.display());
                }
                eprintln!("{} error(s) in {}", problems.len(), path.display());
                return ExitCode::from(EX_CONFIG);
            }
            println!(
                "{}: ok ({} app{}, {} route{})",
                path.display(),
                cfg.apps.len(),
                if cfg.apps.len() == 1 { "" } else { "s" },
                cfg.routes.len(),
                if cfg.routes.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s) in {}", errors.0.len(), path.display());
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// PM2-style default name: the script's stem for interpreters, else the program's.
fn default_name(argv: &[String]) -> String {
    const INTERPRETERS: &[&str] = &[
        "node", "nodejs", "bun", "deno", "python", "python3", "ruby", "php", "perl", "sh", "bash",
        "java", "dotnet",
    ];
    let stem = |s: &str| {
        Path::new(s)
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let program = stem(&argv[0]);
    let base = match argv.get(1) {
        Some(script) if INTERPRETERS.contains(&program.as_str()) && !script.starts_with('-') => {
            stem(script)
        }
        _ => program,
    };
    let cleaned: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned.is_empty() {
        "app".to_owned()
    } else {
        cleaned
    }
}

fn load_config(args: &UpArgs) -> Result<Config, ExitCode> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    if let (Some(file), false) = (&args.config, args.command.is_empty()) {
        eprintln!(
            "herd up: -c {} and a command after `--` exclude each other: the command starts quick mode, which reads no config file\n  hint: drop `-- {}` to run the config file's apps, or drop -c to run the command alone",
            file.display(),
            args.command.join(" ")
        );
        return Err(ExitCode::from(EX_CONFIG));
    }
    if args.command.is_empty() {
        let config = args.config_path();
        let quick_only: Vec<&str> = [
            ("-i/--instances", args.instances.is_some()),
            ("--name", args.name.is_some()),
            ("--port", args.port.is_some()),
            ("--admin", args.admin.is_some()),
            ("--services", args.services.is_some()),
            ("--port-range", args.port_range.is_some()),
            ("--worker", args.worker),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !quick_only.is_empty() {
            eprintln!(
                "herd up: {} {} for quick mode only, and would be ignored with {}\n  hint: set them in the config file ([gateway] listen, [admin] listen, [services] listen, the app's instances, port_range and worker), or give the app's command after `--`, e.g. `herd up -i 3 -- node server.js`",
                quick_only.join(", "),
                if quick_only.len() == 1 { "is" } else { "are" },
                config.display()
            );
            return Err(ExitCode::from(EX_CONFIG));
        }
        return herd_config::load(&config).map_err(|errors| {
            eprintln!("{errors}");
            eprintln!(
                "herd: not starting: {} error(s) in {} (run `herd check -c {}` after fixing)",
                errors.0.len(),
                config.display(),
                config.display()
            );
            ExitCode::from(EX_CONFIG)
        });
    }
    let instances = match args
        .instances
        .as_deref()
        .map(str::parse::<Instances>)
        .transpose()
    {
        Ok(i) => i.unwrap_or(Instances::Count(1)),
        Err(e) => {
            eprintln!("command line: --instances: {e}\n  hint: use a number >= 1, \"max\" (one per CPU core) or -1 (cores - 1)");
            return Err(ExitCode::from(EX_CONFIG));
        }
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.command));
    let admin = args
        .admin
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090)));
    let services = args
        .services
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9091)));
    for (flag, addr) in [("--admin", admin), ("--services", services)] {
        if !addr.ip().is_loopback() {
            eprintln!(
                "herd up: {flag} {addr} is not a loopback address, and quick mode has no token to protect it\n  hint: keep {flag} on 127.0.0.1, or write a herd.toml with [admin] / [services] listen and token (see docs/config.md) and run `herd up -c herd.toml`"
            );
            return Err(ExitCode::from(EX_CONFIG));
        }
    }
    herd_config::quick(
        herd_config::Quick {
            argv: args.command.clone(),
            instances,
            port: args.port.unwrap_or(8080),
            admin,
            services,
            name,
            port_range: args.port_range.clone(),
            worker: args.worker,
        },
        &cwd,
    )
    .map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(EX_CONFIG)
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // herd's own log goes to stderr, so that stdout can carry the access log alone
    // (`access_log = "stdout"`). Colours only on a terminal: a redirect gets plain lines.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    if std::env::var("HERD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub(crate) fn up(args: UpArgs) -> ExitCode {
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let problems = herd_fleet::preflight(&config);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!(
            "herd: not starting: {} app(s) cannot be started",
            problems.len()
        );
        return ExitCode::from(EX_CONFIG);
    }
    if let Some(p) = logs_problem(&config) {
        eprintln!("{p}\nherd: not starting: instance output has nowhere to go");
        return ExitCode::from(EX_CONFIG);
    }
    if let Some(p) = access_log_problem(&config) {
        eprintln!("{p}\nherd: not starting: the access log cannot be written");
        return ExitCode::from(EX_CONFIG);
    }
    // The certificates too, as `herd check` does: a file problem is a config error (64, which
    // the systemd unit does not restart on), not a failure to retry.
    if let Some(tls) = &config.gateway.tls {
        if let Err(e) = herd_proxy::tls::TlsCerts::load(tls) {
            eprintln!("error: [gateway.tls]: {e}\n  hint: point cert and key at readable PEM files (paths are relative to the config file)");
            eprintln!("herd: not starting: the certificates of [gateway.tls] cannot be loaded");
            return ExitCode::from(EX_CONFIG);
        }
    }
    init_tracing();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // This runtime runs the supervisor, health checks, autoscaler, admin and services APIs;
    // the gateway's data plane runs on `[gateway] threads` threads of its own (`serve_threads`).
    // Sized by `threads` too (tokio's default: one per core), so `threads = 1` keeps herd's
    // busy threads to two.
    if let Some(n) = config.gateway.data_plane.threads {
        builder.worker_threads(n);
        tracing::info!(
            threads = n,
            "gateway and control-plane threads from [gateway] threads"
        );
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herd: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = args.command.is_empty().then(|| args.config_path());
    match runtime.block_on(run(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // herd's log is on stderr: one line, not the same error twice (unless the log is
            // filtered to below errors).
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e:#}");
            } else {
                eprintln!("herd: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// SIGUSR1 reopens the access log and every instance's log files by their paths (nginx's
/// `-s reopen`, PM2's `reloadLogs`, for logrotate's `postrotate`). Installed before start-up,
/// so an early one does not kill herd.
async fn reopen_on_sigusr1(
    usr1: Option<tokio::signal::unix::Signal>,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
) {
    let Some(mut usr1) = usr1 else {
        tracing::warn!("failed to install the SIGUSR1 handler; log files cannot be reopened");
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = usr1.recv() => {
                gateway.reopen_logs();
                herd_fleet::reopen_logs();
            }
        }
    }
}

/// SIGHUP reloads the config file (nginx, HAProxy); errors are logged and the old config stays.
async fn reload_on_sighup(
    hup: Option<tokio::signal::unix::Signal>,
    reloader: Option<Arc<dyn herd_admin::ConfigReloader>>,
    stop: CancellationToken,
) {
    let Some(mut hup) = hup else {
        tracing::warn!("failed to install the SIGHUP handler; use POST /config/reload");
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = hup.recv() => {}
        }
        match &reloader {
            None => tracing::warn!("SIGHUP ignored: herd runs without a config file (quick mode)"),
            Some(r) => match r.reload().await {
                Ok(report) => {
                    tracing::info!(changes = report.changes.len(), "config reloaded on SIGHUP")
                }
                Err(errors) => tracing::error!(
                    errors = errors.len(),
                    "config reload on SIGHUP rejected; the running config stays in force"
                ),
            },
        }
    }
}

/// Raises the soft limit on open files to the hard one (nginx's `worker_rlimit_nofile`): a
/// shell's or a container's 1 024 is a few hundred idle client connections, and running out
/// of descriptors stops health checks and instance starts. The instances get the limit herd
/// started with back (the launcher shim restores it before the app runs).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                // The instances get the limit herd started with back.
                herd_fleet::set_apps_nofile(soft);
                tracing::debug!(from = soft, to = hard, "raised the open files limit");
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "failed to raise the open files limit")
            }
        },
        Ok(_) | Err(_) => {}
    }
}

async fn run(config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    raise_nofile();
    // The instances run as herd's user: without this, any of them could read herd's
    // environment (the admin token) and memory through /proc/<herd>/environ and ptrace. The
    // instances themselves stay dumpable (the flag resets at their exec).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "failed to make herd's process undumpable");
    }
    // Signal handlers first, before anything that can take a while (opening the store, a
    // Redis connect): a SIGHUP (`systemctl reload`) or SIGTERM meanwhile is then acted on once
    // herd runs, instead of killing it by the signal's default action.
    let hup = signal(SignalKind::hangup()).ok();
    let usr1 = signal(SignalKind::user_defined1()).ok();
    let mut term =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut int =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    // One listening socket per gateway thread (`SO_REUSEPORT` when more than one).
    let threads = config
        .gateway
        .data_plane
        .threads
        .unwrap_or_else(herd_proxy::server::default_threads);
    use crate::listen::{error as listen_error, Origin};
    let quick = path.is_none();
    let gateway_listeners =
        herd_proxy::shard::bind(config.gateway.listen, threads).map_err(|e| {
            let origin = Origin::new("gateway.listen", Some("--port"), quick);
            listen_error(config.gateway.listen, origin, &e)
        })?;
    let admin_listener = TcpListener::bind(config.admin.listen).await.map_err(|e| {
        let origin = Origin::new("admin.listen", Some("--admin"), quick);
        listen_error(config.admin.listen, origin, &e)
    })?;
    let redirect_listener = match config.gateway.redirect_http {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            listen_error(addr, Origin::new("gateway.redirect_http", None, quick), &e)
        })?),
        None => None,
    };

    let services = crate::services::start(&config, quick).await?;

    let stats = Arc::new(StatsRegistry::default());
    let gateway = Gateway::new(&config, Arc::clone(&stats));
    if let Some(s) = &services {
        gateway.set_shared_store(Arc::clone(&s.store));
    }
    if let Some(tls) = &config.gateway.tls {
        gateway
            .enable_tls(tls)
            .context("failed to load the certificates of [gateway.tls]")?;
    }
    let shim = std::env::current_exe().ok();
    let fleet = Arc::new(
        Fleet::start(
            &config,
            gateway.clone(),
            FleetOptions {
                shim,
                env: services.as_ref().map(|s| s.env.clone()).unwrap_or_default(),
            },
        )
        .context("failed to start the supervisor")?,
    );

    let gateway_stop = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let app_names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let alerts = Arc::new(std::sync::Mutex::new(herd_alerts::AlertEngine::new(
        &config.alerts.rules,
        &app_names,
    )));
    let (notifier, notifier_task) =
        herd_alerts::Notifier::start(&config.alerts, admin_stop.clone());
    // Set when the shutdown begins: the drain empties the fleet and the gateway, which rules
    // like `ready below 1` would page about, with no "resolved" ever to follow.
    let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_sample = {
        let (alerts, notifier) = (Arc::clone(&alerts), notifier.clone());
        let shutting_down = Arc::clone(&shutting_down);
        Box::new(move |sample: &herd_core::telemetry::Sample| {
            if shutting_down.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let fired = alerts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .evaluate(sample);
            if !fired.is_empty() {
                notifier.notify(fired);
            }
        })
    };
    let (telemetry, telemetry_task) = Telemetry::start(
        Arc::clone(&fleet),
        Arc::clone(&stats),
        admin_stop.clone(),
        on_sample,
    );
    let reloader: Option<Arc<dyn herd_admin::ConfigReloader>> = path.map(|path| {
        Arc::new(crate::reload::FileReloader {
            // Reloads name the file herd reads, wherever the reload is asked from.
            path: std::path::absolute(&path).unwrap_or(path),
            gateway: Arc::clone(&gateway),
            fleet: Arc::clone(&fleet),
            alerts: Arc::clone(&alerts),
            notifier: notifier.clone(),
            current: tokio::sync::Mutex::new(config.clone()),
        }) as Arc<dyn herd_admin::ConfigReloader>
    });
    let sighup_task = tokio::spawn(reload_on_sighup(hup, reloader.clone(), admin_stop.clone()));
    let usr1_task = tokio::spawn(reopen_on_sigusr1(
        usr1,
        Arc::clone(&gateway),
        admin_stop.clone(),
    ));
    let redirect_task = redirect_listener.map(|l| {
        let https_port = gateway_listeners[0].local_addr().map_or(443, |a| a.port());
        let settings = herd_proxy::RedirectSettings {
            https_port,
            client_header_timeout: config.gateway.client_header_timeout,
            drain: config.gateway.shutdown_timeout,
        };
        tokio::spawn(herd_proxy::serve_redirect(
            l,
            settings,
            gateway_stop.clone(),
        ))
    });
    let mut gateway_task = tokio::spawn(
        gateway
            .clone()
            .serve_threads(gateway_listeners, gateway_stop.clone()),
    );
    let admin_task = tokio::spawn(herd_admin::serve(
        admin_listener,
        herd_admin::AdminState {
            fleet: Arc::clone(&fleet),
            stats,
            telemetry,
            alerts: Arc::clone(&alerts),
            reload: reloader,
            services: services.as_ref().map(|s| Arc::clone(&s.services)),
            token: config.admin.token.as_deref().map(Arc::from),
            lb: Some(gateway.clone() as Arc<dyn herd_core::LbView>),
            shutdown: admin_stop.clone(),
            stopping: gateway_stop.clone(),
        },
    ));

    // The gateway ends on its own only when it failed (a gateway thread could not start or
    // panicked): herd then shuts down too, rather than run on with nothing listening.
    let mut gateway_ended = None;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        res = &mut gateway_task => {
            gateway_ended = Some(res);
            "none (the gateway stopped)"
        }
    };
    shutting_down.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        signal = which,
        "shutting down: draining the gateway, then the instances (alert rules are no longer evaluated)"
    );
    // Firing alerts resolve now, saying why; their webhooks get the notifier's drain below.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let ended = alerts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .stop(now_ms);
    if !ended.is_empty() {
        notifier.notify(ended);
    }
    let mut gateway_failed = false;

    // A second signal skips the rest of the drain: every instance's process group is killed
    // (what the apps started too; the parent-death signal alone reaches only each leader).
    // One Ctrl-C can arrive twice at once: from the terminal to the process group, and again
    // from a wrapper that forwards it (npm, `timeout`, a shell script); only a signal after
    // `DUPLICATE_SIGNAL` is a second one.
    let first_signal = std::time::Instant::now();
    let forced = async {
        loop {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            if first_signal.elapsed() >= DUPLICATE_SIGNAL {
                break;
            }
            tracing::info!("ignored a signal that came with the first (the same Ctrl-C, delivered twice); send another to stop at once");
        }
    };
    let graceful = async {
        gateway_stop.cancel();
        let ended = match gateway_ended.take() {
            Some(res) => res,
            None => gateway_task.await,
        };
        gateway_failed = !matches!(ended, Ok(Ok(())));
        match ended {
            Ok(Err(e)) => tracing::error!(error = %e, "gateway failed"),
            Err(e) => tracing::error!(error = %e, "gateway task failed"),
            Ok(Ok(())) => {}
        }
        if let Some(task) = redirect_task {
            let _ = task.await;
        }
        // The longest stop of any config applied since start (a reload may have raised it).
        let deadline = fleet.stop_deadline();
        if tokio::time::timeout(deadline, fleet.shutdown())
            .await
            .is_err()
        {
            // Never leave an instance's process group behind herd: the main process would die
            // with herd (the launcher's parent-death signal), its children would not.
            let killed = herd_fleet::kill_all_groups();
            tracing::error!(
                ?deadline,
                killed,
                "instances did not stop in time; killed their process groups"
            );
        }
        // After the instances: they may call the services while they drain.
        if let Some(s) = services {
            s.shutdown(Duration::from_secs(5)).await;
        }
    };
    let mut cut_short = false;
    tokio::select! {
        () = graceful => tracing::info!("all instances stopped"),
        () = forced => {
            let killed = herd_fleet::kill_all_groups();
            tracing::warn!(killed, "second signal: exiting without finishing the drain; killed every instance's process group");
            cut_short = true;
        }
    }
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), telemetry_task).await;
    // Alert deliveries still queued get the notifier's own bounded drain.
    let _ = tokio::time::timeout(Duration::from_secs(10), notifier_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sighup_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), usr1_task).await;
    if gateway_failed {
        anyhow::bail!("the gateway failed (see the log above); herd stopped");
    }
    if cut_short {
        anyhow::bail!(
            "stopped by a second signal before the drain finished (instances were killed)"
        );
    }
    Ok(())
}

/// Signals within this long of the first are the same one delivered twice.
const DUPLICATE_SIGNAL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_pm2() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(default_name(&v(&["node", "server.js"])), "server");
        assert_eq!(default_name(&v(&["./target/release/demo-app"])), "demo-app");
        assert_eq!(
            default_name(&v(&["python3", "-m", "http.server"])),
            "python3"
        );
    }
}
