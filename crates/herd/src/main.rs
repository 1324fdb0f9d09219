//! The `herd` binary: parses the command line, then hands over to the layer that does the work.
//! Exit codes: 0 ok, 1 runtime failure, 64 bad config or usage, 69 admin API unreachable.

mod cli;
mod client;
mod listen;
mod reload;
mod services;
mod simulate;
mod table;
mod up;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for a bad config file or bad usage (BSD's `EX_USAGE`).
const EX_CONFIG: u8 = 64;

/// mimalloc: per-thread free lists suit a proxy's many short-lived allocations, and it gives
/// freed pages back to the system, so a burst of busy connections does not leave its peak
/// behind in every idle one's share of memory (see BENCHMARKS.md, idle keep-alive memory).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `herd __spawn -- CMD...`: the instance launcher (see herd-fleet `spawn`). Checked before
    // clap so that starting an instance costs nothing more than an exec.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == herd_fleet::SHIM_ARG) {
        let rest = if args.get(2).is_some_and(|a| a == "--") {
            &args[3..]
        } else {
            &args[2..]
        };
        return ExitCode::from(u8::try_from(herd_fleet::exec_shim(rest)).unwrap_or(1));
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if let Some(hint) = up_without_dashes(&e) {
                eprintln!("{hint}");
            }
            // --help and --version are not errors; bad usage exits 64 like a bad config.
            return if e.use_stderr() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        cli::Cmd::Check {
            config,
            config_only,
        } => up::check(&config, config_only),
        cli::Cmd::Up(args) => up::up(args),
        cli::Cmd::Simulate(args) => simulate::run(&args),
        cli::Cmd::Status(c) => client::run(c, client::Action::Status),
        cli::Cmd::Scale {
            app,
            instances,
            reason,
            client: c,
        } => client::run(
            c,
            client::Action::Scale {
                app,
                instances,
                reason,
            },
        ),
        cli::Cmd::Reload {
            config: true,
            client: c,
            ..
        } => client::run(c, client::Action::ReloadConfig),
        cli::Cmd::Reload { app, client: c, .. } => client::run(c, client::Action::Reload { app }),
        cli::Cmd::Logs {
            app,
            follow,
            lines,
            client: c,
        } => client::run(c, client::Action::Logs { app, follow, lines }),
    }
}

/// `herd up server.js` (PM2's `pm2 start server.js`): the app's command goes after `--`.
fn up_without_dashes(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let args: Vec<String> = std::env::args().skip(1).collect();
    if e.kind() != ErrorKind::UnknownArgument || args.first().map(String::as_str) != Some("up") {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if arg.starts_with('-') {
        return None;
    }
    let runner = if arg.ends_with(".js") || arg.ends_with(".mjs") || arg.ends_with(".cjs") {
        "node "
    } else {
        ""
    };
    Some(format!(
        "hint: herd runs the command after `--`: herd up -- {runner}{arg} (flags for herd, such as -i 3, go before the `--`)"
    ))
}
