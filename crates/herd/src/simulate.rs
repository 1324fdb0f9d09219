//! `herd simulate`: replay a load trace through the autoscaler (herd's policy from the config,
//! or Kubernetes HPA's defaults) with a queueing model of instances, print the figures and
//! write an SVG plot of demand against capacity.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use herd_scaler::simulate::{self, Policy, SimOptions, Trace};

use crate::cli::SimulateArgs;

use crate::EX_CONFIG;

/// Why a simulation did not run or finish: bad input (exit 64) or a plot that could not be
/// written (exit 1).
enum Failed {
    Usage(String),
    Write(String),
}

impl From<String> for Failed {
    fn from(msg: String) -> Self {
        Failed::Usage(msg)
    }
}

pub(crate) fn run(args: &SimulateArgs) -> ExitCode {
    match simulate_all(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Usage(msg)) => {
            eprintln!("herd simulate: {msg}");
            ExitCode::from(EX_CONFIG)
        }
        Err(Failed::Write(msg)) => {
            eprintln!("herd simulate: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn simulate_all(args: &SimulateArgs) -> Result<(), Failed> {
    let config = herd_config::load(&args.config).map_err(|e| format!("{e}"))?;
    let app = match &args.app {
        Some(name) => config
            .apps
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| format!("no app named {name:?} in {}", args.config.display()))?,
        None => config
            .apps
            .iter()
            .find(|a| a.scaling.is_some())
            .ok_or_else(|| {
                format!(
                    "no app in {} has an [app.scaling] section\n  hint: add one, e.g. [app.scaling] min = 1, max = 10, target = {{ concurrency = 10 }}",
                    args.config.display()
                )
            })?,
    };
    let scaling = app.scaling.as_ref().ok_or_else(|| {
        format!(
            "app {:?} has no [app.scaling] section to simulate",
            app.name
        )
    })?;
    let text = std::fs::read_to_string(&args.trace)
        .map_err(|e| format!("failed to read the trace {}: {e}", args.trace.display()))?;
    let trace = Trace::parse(&text).map_err(|e| format!("{}: {e}", args.trace.display()))?;
    let service_time_s = herd_config::parse_duration(&args.service_time)
        .map_err(|e| format!("--service-time: {e}"))?
        .as_secs_f64();
    if service_time_s <= 0.0 {
        return Err(Failed::Usage(format!(
            "--service-time must be longer than 0, got {:?}\n  hint: the time one request takes, e.g. \"100ms\"",
            args.service_time
        )));
    }
    let start_time_s = herd_config::parse_duration(&args.start_time)
        .map_err(|e| format!("--start-time: {e}"))?
        .as_secs_f64();
    let capacity = args
        .capacity
        .unwrap_or_else(|| SimOptions::default_capacity(scaling, trace.kind, service_time_s));
    if !(capacity > 0.0 && capacity.is_finite()) {
        return Err(Failed::Usage(format!(
            "--capacity must be a positive number, got {capacity}"
        )));
    }
    let policies: &[Policy] = match args.policy.as_str() {
        "herd" => &[Policy::Herd],
        "hpa-default" => &[Policy::HpaDefault],
        "both" => &[Policy::Herd, Policy::HpaDefault],
        other => {
            return Err(Failed::Usage(format!(
                "unknown --policy {other:?}\n  hint: one of herd, hpa-default, both"
            )))
        }
    };
    let mut unmodelled: Vec<&str> = scaling
        .targets
        .iter()
        .map(|t| t.metric)
        .chain(scaling.rules.iter().map(|r| r.metric))
        .filter(|m| !m.is_total() && *m != herd_config::Metric::Cpu)
        .map(herd_config::Metric::name)
        .collect();
    unmodelled.sort_unstable();
    unmodelled.dedup();
    if !unmodelled.is_empty() {
        println!(
            "note: the simulation models load (concurrency, rps, queue_depth) and CPU only; {} read as missing, so they ask for nothing here",
            unmodelled.join(", ")
        );
    }
    println!(
        "app {}: trace {} ({:.0} s, peak {:.1} {}), capacity {capacity:.1} per instance, start time {start_time_s:.0} s",
        app.name,
        args.trace.display(),
        trace.end_s() - trace.start_s(),
        trace.peak(),
        match trace.kind {
            herd_scaler::simulate::TraceKind::Rps => "req/s",
            herd_scaler::simulate::TraceKind::Concurrency => "concurrent",
        },
    );
    for &policy in policies {
        let mut opts = SimOptions::new(capacity);
        opts.policy = policy;
        opts.start_time_s = start_time_s;
        opts.service_time_s = service_time_s;
        let result = simulate::run(scaling, &trace, &opts);
        println!("{}", result.report);
        let plot = plot_path(args, policy, policies.len() > 1);
        std::fs::write(&plot, &result.svg).map_err(|e| {
            Failed::Write(format!("failed to write the plot {}: {e}", plot.display()))
        })?;
        println!("  plot: {}", plot.display());
    }
    Ok(())
}

fn plot_path(args: &SimulateArgs, policy: Policy, several: bool) -> PathBuf {
    match &args.plot {
        Some(p) if !several => p.clone(),
        Some(p) => with_suffix(p, policy.name()),
        None => {
            let stem = args
                .trace
                .file_stem()
                .map_or_else(|| "trace".to_owned(), |s| s.to_string_lossy().into_owned());
            PathBuf::from(format!("{stem}.{}.svg", policy.name()))
        }
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let stem = p
        .file_stem()
        .map_or_else(|| "plot".to_owned(), |s| s.to_string_lossy().into_owned());
    p.with_file_name(format!("{stem}.{suffix}.svg"))
}
