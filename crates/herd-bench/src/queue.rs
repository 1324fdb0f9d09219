//! Queue jobs end to end through the services API: producers add, workers reserve and ack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use http::Method;
use serde_json::json;

use crate::client::Api;

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

pub(crate) async fn run(api: Api, args: Args) -> anyhow::Result<serde_json::Value> {
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
        let (api, next, queue, jobs) = (api.clone(), next.clone(), queue.clone(), args.jobs);
        let bulk = u64::from(args.bulk);
        producers.spawn(async move {
            let path = format!("/v1/queues/{queue}/jobs");
            loop {
                let first = next.fetch_add(bulk, Ordering::Relaxed);
                if first >= jobs {
                    return anyhow::Ok(());
                }
                let job =
                    |i: u64| json!({"name": "job", "data": {"i": i}, "remove_on_complete": true});
                let body = if bulk == 1 {
                    job(first)
                } else {
                    json!({"jobs": (first..(first + bulk).min(jobs)).map(job).collect::<Vec<_>>()})
                };
                api.json(Method::POST, &path, Some(&body)).await?;
            }
        });
    }
    let mut workers = tokio::task::JoinSet::new();
    let acked_view = acked.clone();
    for _ in 0..args.concurrency {
        let (api, acked, queue, jobs, batch) = (
            api.clone(),
            acked.clone(),
            queue.clone(),
            args.jobs,
            args.batch,
        );
        let finished = finished.clone();
        let done = move |n: u64| {
            if acked.fetch_add(n, Ordering::Relaxed) + n >= jobs {
                let _ = finished.set(Instant::now());
            }
        };
        let acked_so_far = acked_view.clone();
        let with_next = !args.no_next;
        workers.spawn(async move {
            let reserve = json!({"max": batch, "lease": "30s", "wait": "1s"});
            let next = json!({"max": batch, "lease": "30s"});
            let mut held: Vec<serde_json::Value> = Vec::new();
            while acked_so_far.load(Ordering::Relaxed) < jobs {
                if held.is_empty() {
                    let got = api
                        .json(
                            Method::POST,
                            &format!("/v1/queues/{queue}/reserve"),
                            Some(&reserve),
                        )
                        .await?;
                    held = got["jobs"].as_array().cloned().unwrap_or_default();
                    held.reverse(); // pop() takes them in the order given
                    continue;
                }
                if batch > 1 {
                    // Work through the batch (a no-op job), then ack it all in one call that
                    // leases the next batch.
                    let acks: Vec<_> = held
                        .drain(..)
                        .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]}))
                        .collect();
                    let n = acks.len() as u64;
                    let mut body = json!({ "acks": acks });
                    if with_next {
                        body["next"] = next.clone();
                    }
                    let got = api
                        .json(
                            Method::POST,
                            &format!("/v1/queues/{queue}/ack"),
                            Some(&body),
                        )
                        .await?;
                    let failed = got["errors"].as_array().map_or(0, Vec::len);
                    if failed > 0 {
                        bail!("{failed} acks of a batch failed: {}", got["errors"]);
                    }
                    done(n);
                    held = got["jobs"].as_array().cloned().unwrap_or_default();
                    held.reverse();
                    continue;
                }
                let job = held.pop().context("no job held")?;
                let id = job["id"].as_str().context("job without id")?.to_owned();
                let mut body = json!({"lease_token": job["lease_token"]});
                // The last job held asks for the next ones in its ack.
                let ask = with_next && held.is_empty();
                if ask {
                    body["next"] = next.clone();
                }
                let got = api
                    .json(
                        Method::POST,
                        &format!("/v1/queues/{queue}/jobs/{id}/ack"),
                        Some(&body),
                    )
                    .await?;
                done(1);
                if ask {
                    held = got["jobs"].as_array().cloned().unwrap_or_default();
                    held.reverse();
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
        "system": "herd", "jobs": args.jobs, "concurrency": args.concurrency,
        "producers": args.producers, "bulk": args.bulk, "batch": args.batch, "next": !args.no_next, "seconds": (secs * 1000.0).round() / 1000.0,
        "jobs_per_s": (args.jobs as f64 / secs).round(),
        "add_per_s": (args.jobs as f64 / added_s).round(),
    }))
}
