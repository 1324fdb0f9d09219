//! `herd-bench`: load generators for the services benchmark (`bench/services.sh`).
//!
//! - `rate`: an open-loop client that sends a fixed number of operations per second to the
//!   services API (session get, session set, cache get) and reports latency percentiles measured
//!   from each request's scheduled start, so a slow server cannot hide queueing delay
//!   (coordinated omission).
//! - `queue`: jobs end to end through the queue API (add, reserve, ack) with a number of
//!   concurrent workers, the same shape as `bench/bullmq/bench.mjs`.
//!
//! Each command prints one JSON line.

mod client;
mod queue;
mod rate;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd-bench", about = "load generators for herd's benchmarks")]
struct Cli {
    /// The services API, e.g. http://127.0.0.1:9091
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    url: String,
    /// Bearer token of the services API.
    #[arg(long, env = "HERD_SERVICES_TOKEN")]
    token: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open-loop latency at a fixed rate.
    Rate(rate::Args),
    /// Queue jobs end to end.
    Queue(queue::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = client::Api::new(&cli.url, &cli.token)?;
    let out = rt.block_on(async {
        match cli.cmd {
            Cmd::Rate(a) => rate::run(client, a).await,
            Cmd::Queue(a) => queue::run(client, a).await,
        }
    })?;
    println!("{out}");
    Ok(())
}
