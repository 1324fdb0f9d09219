//! Checks that every app's command can be started, before anything is started: the `cwd` is a
//! directory, and the program is an executable file (found on `PATH` when it names no
//! directory, as `execvp` would find it). `herd check`, `herd up` and a config reload run it,
//! so a typo in `command` or `cwd` is refused with the path it looked at, instead of an instance
//! that crash-loops with the reason only in its log.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use herd_config::{Backends, Command, Config};

/// One app whose command cannot be started as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchProblem {
    /// The app's name.
    pub app: String,
    /// The key at fault: `cwd` or `command[0]`.
    pub key: &'static str,
    /// What is wrong, with the path looked at.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for LaunchProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "app \"{}\": {}: {}\n  hint: {}",
            self.app, self.key, self.message, self.hint
        )
    }
}

/// Every launch problem of `config`'s supervised apps (apps with `servers` have none).
#[must_use]
pub fn preflight(config: &Config) -> Vec<LaunchProblem> {
    config
        .apps
        .iter()
        .filter_map(|app| match &app.backends {
            Backends::Command(command) => check_command(&app.name, command),
            Backends::Servers(_) => None,
        })
        .collect()
}

/// The interpreter a script is run with, by its extension (PM2 picks it the same way).
fn interpreter_of(program: &str) -> Option<&'static str> {
    let ext = std::path::Path::new(program).extension()?.to_str()?;
    Some(match ext {
        "js" | "mjs" | "cjs" => "node",
        "ts" => "npx tsx",
        "py" => "python3",
        "rb" => "ruby",
        "php" => "php",
        _ => return None,
    })
}

fn check_command(app: &str, command: &Command) -> Option<LaunchProblem> {
    let problem = |key, message: String, hint: String| LaunchProblem {
        app: app.to_owned(),
        key,
        message,
        hint,
    };
    let cwd_problem = match std::fs::metadata(&command.cwd) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!("{} is not a directory", command.cwd.display())),
        Err(e) => Some(format!("cannot use {}: {e}", command.cwd.display())),
    };
    if let Some(message) = cwd_problem {
        return Some(problem(
            "cwd",
            message,
            "point cwd at the app's directory (relative paths are relative to the config file)"
                .into(),
        ));
    }
    let program = command.argv.first()?;
    // A script given as the program (`herd up -- server.js`, PM2's habit): it needs its
    // interpreter in front, whatever else is wrong with it (chmod +x would run JavaScript as
    // a shell script).
    if let Some(interpreter) = interpreter_of(program) {
        let path = command
            .cwd
            .join(program.strip_prefix("./").unwrap_or(program));
        // A script with a `#!` line names its interpreter itself.
        let mut start = [0u8; 2];
        let shebang = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut start))
            .is_ok_and(|()| &start == b"#!");
        if path.is_file() && !shebang {
            let rest = command.argv[1..].join(" ");
            let line = format!("{interpreter} {program} {rest}");
            return Some(problem(
                "command[0]",
                format!("\"{program}\" is a script, not a program herd can start by itself"),
                format!(
                    "put its interpreter first: herd up -- {} (in a config file: command = [\"{interpreter}\", \"{program}\"])",
                    line.trim_end()
                ),
            ));
        }
    }
    if program.contains('/') {
        // The instance runs in `cwd`, so a relative program is relative to it.
        let path = command
            .cwd
            .join(program.strip_prefix("./").unwrap_or(program));
        return executable(&path).err().map(|why| {
            problem(
                "command[0]",
                format!("{}: {why}", path.display()),
                format!(
                    "build or install the program, or fix the path (relative to cwd = {})",
                    command.cwd.display()
                ),
            )
        });
    }
    let search = command
        .env
        .get("PATH")
        .map(|p| p.clone().into())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let mut last_reason = None;
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() {
            command.cwd.clone()
        } else {
            command.cwd.join(dir)
        };
        match executable(&dir.join(program)) {
            Ok(()) => return None,
            Err(why) if why != NOT_FOUND => last_reason = Some((dir.join(program), why)),
            Err(_) => {}
        }
    }
    Some(match last_reason {
        Some((path, why)) => problem(
            "command[0]",
            format!("\"{program}\" was found on PATH but cannot be run: {}: {why}", path.display()),
            "make it executable (chmod +x), or give the full path of the right program".into(),
        ),
        None => problem(
            "command[0]",
            format!(
                "program \"{program}\" not found on PATH ({})",
                display_path(&search)
            ),
            format!("install it, or give its full path (e.g. /usr/local/bin/{program}), or ./{program} for one in cwd"),
        ),
    })
}

const NOT_FOUND: &str = "no such file";

/// Whether `path` is a file this process could execute; the reason when it is not.
fn executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NOT_FOUND),
        Err(_) => Err("cannot be read (permission denied on the way?)"),
        Ok(m) if m.is_dir() => Err("is a directory"),
        Ok(_) => nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
            .map_err(|_| "is not executable (chmod +x it)"),
    }
}

fn display_path(search: &OsStr) -> String {
    let dirs: Vec<PathBuf> = std::env::split_paths(search).collect();
    if dirs.is_empty() {
        return "PATH is empty".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt as _;

    fn command(argv: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
        let config = herd_config::quick(
            herd_config::Quick::new(argv.iter().map(|s| (*s).to_owned()).collect(), "t"),
            cwd,
        )
        .unwrap();
        let Backends::Command(mut c) = config.apps[0].backends.clone() else {
            unreachable!()
        };
        c.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>();
        c
    }

    #[test]
    fn finds_programs_on_path_and_relative_to_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("app.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data.txt");
        std::fs::write(&plain, "x").unwrap();

        assert_eq!(
            check_command("a", &command(&["sh", "-c", "true"], dir.path(), &[])),
            None
        );
        assert_eq!(
            check_command("a", &command(&["./app.sh"], dir.path(), &[])),
            None
        );
        // A PATH from the app's env is the one searched, relative entries against cwd.
        assert_eq!(
            check_command("a", &command(&["app.sh"], dir.path(), &[("PATH", ".")])),
            None
        );

        let missing = check_command("a", &command(&["./nope.sh"], dir.path(), &[])).unwrap();
        assert_eq!(missing.key, "command[0]");
        assert!(
            missing.message.contains("nope.sh: no such file"),
            "{missing}"
        );
        let not_exec = check_command("a", &command(&["./data.txt"], dir.path(), &[])).unwrap();
        assert!(not_exec.message.contains("not executable"), "{not_exec}");
        let on_path =
            check_command("a", &command(&["herd-no-such-program"], dir.path(), &[])).unwrap();
        assert!(on_path.message.contains("not found on PATH"), "{on_path}");
        let dir_prog = check_command("a", &command(&["."], dir.path(), &[("PATH", "/")])).unwrap();
        assert!(dir_prog.message.contains("cannot be run"), "{dir_prog}");
    }

    #[test]
    fn a_script_without_its_interpreter_is_told_which_to_put_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.js"), "require('http')").unwrap();
        for argv in [&["server.js", "--flag"][..], &["./server.js", "--flag"][..]] {
            let p = check_command("a", &command(argv, dir.path(), &[])).unwrap();
            assert!(p.message.contains("is a script"), "{p}");
            assert!(
                p.hint
                    .contains(&format!("herd up -- node {} --flag", argv[0])),
                "{p}"
            );
        }
        // One that names its interpreter (#!) and may be run as it is.
        let tool = dir.path().join("tool.js");
        std::fs::write(&tool, "#!/usr/bin/env node\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            check_command("a", &command(&["./tool.js"], dir.path(), &[])),
            None
        );
    }

    #[test]
    fn refuses_a_missing_or_file_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let p = check_command("a", &command(&["sh"], &gone, &[])).unwrap();
        assert_eq!(p.key, "cwd");
        assert!(
            p.to_string().starts_with("app \"a\": cwd: cannot use "),
            "{p}"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let p = check_command("a", &command(&["sh"], &file, &[])).unwrap();
        assert!(p.message.contains("is not a directory"), "{p}");
    }
}
