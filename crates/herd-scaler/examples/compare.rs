//! Replays load traces under herd's policy and under HPA's defaults, side by side.
//!
//! `cargo run --release -p herd-scaler --example compare -- CONFIG CAPACITY START_TIME_S OUT_DIR TRACE...`
//!
//! Uses the first app with `[app.scaling]` in CONFIG; writes `<trace>.<policy>.svg` into OUT_DIR
//! and prints one table row per trace. A benchmark program: it prints figures, it decides nothing.

use std::path::Path;
use std::time::Instant;

use herd_scaler::simulate::{run, Policy, SimOptions, Trace};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: compare CONFIG CAPACITY START_TIME_S OUT_DIR TRACE...");
        std::process::exit(64);
    }
    let config = match herd_config::load(Path::new(&args[0])) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let Some(scaling) = config.apps.iter().find_map(|a| a.scaling.clone()) else {
        eprintln!("{}: no app has [app.scaling]", args[0]);
        std::process::exit(64);
    };
    let capacity: f64 = args[1].parse().expect("CAPACITY is a number");
    let start: f64 = args[2].parse().expect("START_TIME_S is a number");
    let out = Path::new(&args[3]);
    std::fs::create_dir_all(out).expect("create OUT_DIR");
    println!(
        "capacity {capacity} rps/instance, start time {start} s\n\n| trace | policy | instance-hours | unmet-demand s | actions | peak | sim time |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for path in &args[4..] {
        let text = std::fs::read_to_string(path).expect("read trace");
        let trace = Trace::parse(&text).expect("parse trace");
        let name = Path::new(path)
            .file_stem()
            .map_or_else(|| path.clone(), |s| s.to_string_lossy().into_owned());
        for policy in [Policy::Herd, Policy::HpaDefault] {
            let opts = SimOptions {
                start_time_s: start,
                policy,
                ..SimOptions::new(capacity)
            };
            let t = Instant::now();
            let r = run(&scaling, &trace, &opts);
            let took = t.elapsed();
            std::fs::write(out.join(format!("{name}.{}.svg", policy.name())), &r.svg)
                .expect("write svg");
            let rep = &r.report;
            println!(
                "| {name} | {} | {:.2} | {:.0} | {} | {} | {:.2} s |",
                rep.policy,
                rep.instance_hours,
                rep.unmet_demand_seconds,
                rep.scaling_actions,
                rep.peak_instances,
                took.as_secs_f64()
            );
        }
    }
}
