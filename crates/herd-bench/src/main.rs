//! `herd-bench`: load generators for the services benchmark (`bench/services.sh`).
//!
//! - `rate`: an open-loop client that sends a fixed number of operations per second to the
//!   services API (session get, session set, cache get) and reports latency percentiles measured
//!   from each request's scheduled start, so a slow server cannot hide queueing delay
//!   (coordinated omission).
//! - `queue`: jobs end to end through the queue API (add, reserve, ack) with a number of
//!   concurrent workers, the same shape as `bench/bullmq/bench.mjs`.
//! - `queue-lib`: the same run through the `herd-services` library in this process, on a
//!   store it opens itself (no HTTP hop: BullMQ's own shape).
//!
//! Each command prints one JSON line. The runtime has one worker thread (Node's one event
//! loop, for the BullMQ comparison).

mod client;
mod queue;
mod queue_http;
mod queue_lib;
mod rate;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd-bench", about = "load generators for herd's benchmarks")]
struct Cli {
    /// The services API, e.g. http://127.0.0.1:9091
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    url: String,
    /// Bearer token of the services API (`rate` and `queue`).
    #[arg(long, env = "HERD_SERVICES_TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open-loop latency at a fixed rate.
    Rate(rate::Args),
    /// Queue jobs end to end through the services API.
    Queue(queue::Args),
    /// Queue jobs end to end through the herd-services library, in this process.
    QueueLib {
        /// The store: redis://HOST:PORT or embedded:PATH (a redb file).
        #[arg(long)]
        store: String,
        #[command(flatten)]
        args: queue::Args,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let api = || {
        let token = cli
            .token
            .as_deref()
            .context("--token (or HERD_SERVICES_TOKEN) is required for the services API")?;
        client::Api::new(&cli.url, token)
    };
    let out = rt.block_on(async {
        match cli.cmd {
            Cmd::Rate(a) => rate::run(api()?, a).await,
            Cmd::Queue(a) => queue::run(queue_http::HttpQueue(api()?), a, "herd").await,
            Cmd::QueueLib { ref store, args } => {
                let (lib, stop) = queue_lib::LibQueue::open(store).await?;
                let out = queue::run(lib.clone(), args, "herd-library").await;
                lib.close(&stop).await;
                out
            }
        }
    })?;
    println!("{out}");
    Ok(())
}
