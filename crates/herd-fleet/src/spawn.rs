//! Starting instance processes.
//!
//! Each instance runs in its own process group (so signals reach its children too), with `PORT`,
//! `HERD_APP`, `HERD_INSTANCE` and the app's `env`, stdin closed and stdout/stderr piped to the
//! log pumps. When herd knows its own executable it starts the app through `herd __spawn`, a
//! shim that asks the kernel to SIGKILL it when herd dies (`PR_SET_PDEATHSIG`) and then `exec`s
//! the app in place: if herd is SIGKILLed, its instances die with it instead of lingering.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;

use herd_config::Command;
use tokio::process::{Child, Command as TokioCommand};

/// Name of the hidden subcommand that runs [`exec_shim`].
pub const SHIM_ARG: &str = "__spawn";
const PARENT_ENV: &str = "HERD_PARENT_PID";
/// The soft open-files limit herd started with, which the shim puts back before the app runs:
/// herd raises its own (see [`set_apps_nofile`]), an app keeps what it would have had.
const NOFILE_ENV: &str = "HERD_NOFILE_SOFT";

static APPS_NOFILE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Records the soft open-files limit herd started with, before it raised its own: instances
/// started through the shim get it back (apps that size tables by it, or use `select()`, are
/// not handed a container's hard limit of a million).
pub fn set_apps_nofile(soft: u64) {
    let _ = APPS_NOFILE.set(soft);
}

/// Everything one process start needs.
#[derive(Debug)]
pub(crate) struct SpawnSpec<'a> {
    pub(crate) app: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) port: u16,
    pub(crate) command: &'a Command,
    pub(crate) shim: Option<&'a Path>,
    pub(crate) extra_env: &'a [(String, String)],
}

pub(crate) fn spawn(spec: &SpawnSpec<'_>) -> std::io::Result<Child> {
    let argv = &spec.command.argv;
    let mut cmd = match spec.shim {
        Some(shim) => {
            let mut c = TokioCommand::new(shim);
            c.arg(SHIM_ARG).arg("--").args(argv);
            c.env(PARENT_ENV, std::process::id().to_string());
            if let Some(soft) = APPS_NOFILE.get() {
                c.env(NOFILE_ENV, soft.to_string());
            }
            c
        }
        None => {
            let mut c = TokioCommand::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.current_dir(&spec.command.cwd)
        // herd's own secret is not the app's: an instance holding the admin token could scale,
        // drain and reload the fleet (the app's `env` may still set it on purpose).
        .env_remove(ADMIN_TOKEN_ENV)
        .envs(&spec.command.env)
        // herd's variables after the app's: HERD_* and PORT are herd's to set.
        .envs(spec.extra_env.iter().map(|(k, v)| (k, v)))
        .env("PORT", spec.port.to_string())
        .env("HERD_APP", spec.app)
        .env("HERD_INSTANCE", spec.instance)
        // PM2's 0-based instance number (apps use it for "cron on instance 0 only").
        .envs(
            spec.instance
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .map(|n| ("NODE_APP_INSTANCE", n.saturating_sub(1).to_string())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// The variable herd's CLI reads the admin token from (see `herd status --token`).
const ADMIN_TOKEN_ENV: &str = "HERD_ADMIN_TOKEN";

/// The body of `herd __spawn -- CMD ARGS...`: arm the parent-death signal, check herd did not
/// already die, then replace this process with the app. Returns only on failure, with the exit
/// code to use (127 as a shell would for a command that cannot run).
#[must_use]
pub fn exec_shim(args: &[OsString]) -> i32 {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("herd __spawn: no command given");
        return 127;
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("herd __spawn: failed to set the parent-death signal: {e}");
    }
    // herd may have died between fork and prctl; then nobody would ever stop us.
    if let Some(parent) = std::env::var_os(PARENT_ENV) {
        let parent = parent.to_string_lossy().parse::<i32>().unwrap_or(-1);
        if nix::unistd::getppid().as_raw() != parent {
            return 1;
        }
    }
    if let Some(soft) = std::env::var_os(NOFILE_ENV).and_then(|v| v.to_str()?.parse::<u64>().ok()) {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard);
        }
    }
    let err = std::process::Command::new(program)
        .args(rest)
        .env_remove(PARENT_ENV)
        .env_remove(NOFILE_ENV)
        .exec();
    eprintln!(
        "herd: failed to start {}: {err} ({})",
        program.to_string_lossy(),
        exec_hint(std::path::Path::new(program), &err)
    );
    127
}

/// What to check after a failed exec. "No such file" for a file that is there means its `#!`
/// interpreter is missing.
fn exec_hint(program: &std::path::Path, err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::NotFound && program.is_file() {
        let mut head = Vec::new();
        let _ = std::fs::File::open(program)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 256), &mut head));
        let interpreter = head.strip_prefix(b"#!").and_then(|rest| {
            let line = rest.split(|&b| b == b'\n').next()?;
            Some(String::from_utf8_lossy(line).trim().to_owned())
        });
        return match interpreter {
            Some(i) => format!("the file is there, but its #! interpreter \"{i}\" is not: install it or fix the #! line"),
            None => "the file is there, but the loader or interpreter it needs is not".to_owned(),
        };
    }
    "check `command` and `cwd` in the app's config".to_owned()
}

/// Process groups of instances whose leader has not been reaped yet (a forced exit of herd kills
/// them: the parent-death signal reaches only each group's leader, not what it started).
static LIVE_GROUPS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<u32>>> =
    std::sync::LazyLock::new(Default::default);

pub(crate) fn group_started(pgid: u32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(pgid);
}

pub(crate) fn group_ended(pgid: u32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&pgid);
}

/// SIGKILLs every instance's process group still alive; for an exit that skips the drain (a
/// second Ctrl-C). Answers how many groups it signalled.
pub fn kill_all_groups() -> usize {
    let groups: Vec<u32> = LIVE_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .drain()
        .collect();
    for &g in &groups {
        signal_group(g, nix::sys::signal::Signal::SIGKILL);
    }
    groups.len()
}

/// Whether a process of group `pgid` is still running. Zombies do not count: with herd as
/// PID 1 (a container) the group's orphans are re-parented to herd, which does not reap them
/// while it waits, and `killpg(pgid, 0)` would find them for good.
pub(crate) fn group_alive(pgid: u32) -> bool {
    crate::procfs::group_running(pgid)
}

/// Sends `sig` to one process, if it is still the one `id` names (same start time).
pub(crate) fn signal_proc(id: crate::procfs::ProcId, sig: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(id.0) else { return };
    if crate::procfs::alive(id) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
    }
}

/// Sends `sig` to the whole process group led by `pgid`. A group that is already gone is fine.
pub(crate) fn signal_group(pgid: u32, sig: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, signal = ?sig, error = %e, "failed to signal process group"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_interpreter_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/no/such/interp -x\necho hi\n").unwrap();
        let err = std::io::Error::from(std::io::ErrorKind::NotFound);
        let hint = super::exec_hint(&script, &err);
        assert!(hint.contains("\"/no/such/interp -x\" is not"), "{hint}");
        let hint = super::exec_hint(&dir.path().join("absent"), &err);
        assert!(hint.contains("check `command` and `cwd`"), "{hint}");
    }
}
