//! Queue jobs end to end: producers add, workers reserve and ack. The same driver runs over
//! the services API (`queue`, [`crate::queue_http`]) and over the `herd-services` library in
//! this process (`queue-lib`, [`crate::queue_lib`]), so the two figures differ only by the
//! HTTP hop.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Jobs to run through the queue.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Concurrent workers, each reserving one job at a time and acking it.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Concurrent producers, each adding one job per call.
    #[arg(long, default_value_t = 16)]
    producers: u32,
    /// Jobs per reserve call, acked together in one call (BullMQ's worker takes one at a
    /// time: 1 compares like for like).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Jobs per add call (`{"jobs": [...]}`); 1 adds one job per call, as `Queue.add`.
    #[arg(long, default_value_t = 1)]
    bulk: u32,
    /// Ack without asking for the next job (one reserve and one ack call per job) instead of
    /// acking with `next` (one call per job while jobs keep coming).
    #[arg(long)]
    no_next: bool,
}

/// A job a worker holds: what its ack needs.
pub(crate) struct Held {
    pub(crate) id: String,
    pub(crate) token: String,
}

/// The four calls the run makes. Jobs are `{"name": "job", "data": {"i": i}}`, removed on
/// completion (BullMQ's `removeOnComplete: true`, as in `bench/bullmq/bench.mjs`).
pub(crate) trait QueueClient: Clone + Send + Sync + 'static {
    /// Adds jobs `first..end`: one job per call when that is one job, else one bulk add.
    fn add(
        &self,
        queue: &str,
        first: u64,
        end: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Leases up to `max` jobs for 30 s, waiting up to 1 s for one.
    fn reserve(
        &self,
        queue: &str,
        max: u32,
    ) -> impl Future<Output = anyhow::Result<Vec<Held>>> + Send;
    /// Acks one job; with `next`, leases up to that many more in the same call.
    fn ack(
        &self,
        queue: &str,
        job: Held,
        next: Option<u32>,
    ) -> impl Future<Output = anyhow::Result<Vec<Held>>> + Send;
    /// Acks a batch in one call (an error if any ack failed); with `next`, leases more.
    fn ack_many(
        &self,
        queue: &str,
        jobs: Vec<Held>,
        next: Option<u32>,
    ) -> impl Future<Output = anyhow::Result<Vec<Held>>> + Send;
}

/// The job the bench adds as job number `i`.
pub(crate) fn job_data(i: u64) -> serde_json::Value {
    json!({ "i": i })
}

pub(crate) async fn run<Q: QueueClient>(
    client: Q,
    args: Args,
    system: &str,
) -> anyhow::Result<serde_json::Value> {
    if args.jobs == 0
        || args.concurrency == 0
        || args.producers == 0
        || args.batch == 0
        || args.bulk == 0
    {
        bail!("--jobs, --concurrency, --producers, --batch and --bulk must be positive");
    }
    let queue = format!("bench-{}-{}", std::process::id(), args.concurrency);
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    // When the last job was acked: workers still long-polling then are not part of the run.
    let finished: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let start = Instant::now();

    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..args.producers {
        let (client, next, queue, jobs) = (client.clone(), next.clone(), queue.clone(), args.jobs);
        let bulk = u64::from(args.bulk);
        producers.spawn(async move {
            loop {
                let first = next.fetch_add(bulk, Ordering::Relaxed);
                if first >= jobs {
                    return anyhow::Ok(());
                }
                client.add(&queue, first, (first + bulk).min(jobs)).await?;
            }
        });
    }
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, acked, queue, jobs, batch) = (
            client.clone(),
            acked.clone(),
            queue.clone(),
            args.jobs,
            args.batch,
        );
        let finished = finished.clone();
        let with_next = !args.no_next;
        workers.spawn(async move {
            let done = |n: u64| {
                if acked.fetch_add(n, Ordering::Relaxed) + n >= jobs {
                    let _ = finished.set(Instant::now());
                }
            };
            let next = with_next.then_some(batch);
            let mut held: Vec<Held> = Vec::new();
            while acked.load(Ordering::Relaxed) < jobs {
                if held.is_empty() {
                    held = client.reserve(&queue, batch).await?;
                    held.reverse(); // pop() takes them in the order given
                    continue;
                }
                if batch > 1 {
                    // Work through the batch (a no-op job), then ack it all in one call that
                    // leases the next batch.
                    let n = held.len() as u64;
                    let mut got = client
                        .ack_many(&queue, std::mem::take(&mut held), next)
                        .await?;
                    done(n);
                    got.reverse();
                    held = got;
                    continue;
                }
                let job = held.pop().context("no job held")?;
                // The last job held asks for the next ones in its ack.
                let ask = if held.is_empty() { next } else { None };
                let mut got = client.ack(&queue, job, ask).await?;
                done(1);
                if ask.is_some() {
                    got.reverse();
                    held = got;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = producers.join_next().await {
        r??;
    }
    let added_s = start.elapsed().as_secs_f64();
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let secs = finished
        .get()
        .map_or_else(|| start.elapsed(), |t| *t - start)
        .as_secs_f64();
    Ok(json!({
        "system": system, "jobs": args.jobs, "concurrency": args.concurrency,
        "producers": args.producers, "bulk": args.bulk, "batch": args.batch, "next": !args.no_next, "seconds": (secs * 1000.0).round() / 1000.0,
        "jobs_per_s": (args.jobs as f64 / secs).round(),
        "add_per_s": (args.jobs as f64 / added_s).round(),
    }))
}
