//! Open-loop latency at a fixed request rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use http::Method;
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::Api;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Operations per second, sent on a fixed schedule.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Seconds of measured load (after a 1 s warm-up at the same rate).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// session-get, session-set, cache-get or mix (a third each).
    #[arg(long, default_value = "mix")]
    op: String,
}

/// Sessions the latency run spreads its session operations over.
const SESSIONS: usize = 1000;

#[derive(Clone, Copy)]
enum Op {
    SessionGet,
    SessionSet,
    CacheGet,
}

pub(crate) async fn run(api: Api, args: Args) -> anyhow::Result<serde_json::Value> {
    let ops: Vec<Op> = match args.op.as_str() {
        "session-get" => vec![Op::SessionGet],
        "session-set" => vec![Op::SessionSet],
        "cache-get" => vec![Op::CacheGet],
        "mix" => vec![Op::SessionGet, Op::SessionSet, Op::CacheGet],
        other => bail!("unknown --op {other}: use session-get, session-set, cache-get or mix"),
    };
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be positive");
    }
    let session = api
        .json(
            Method::POST,
            "/v1/sessions",
            Some(&json!({"data": {"user": "bench", "n": 0}, "ttl": "1h"})),
        )
        .await
        .context("creating the benchmark session")?;
    // Sessions are per user: spread reads and writes over many of them, as real traffic does
    // (one hot session would measure compare-and-swap contention on a single key instead).
    let mut sids = vec![session["id"]
        .as_str()
        .context("session id missing")?
        .to_owned()];
    for n in 1..SESSIONS {
        let body = json!({"data": {"user": "bench", "n": n}, "ttl": "1h"});
        let s = api.json(Method::POST, "/v1/sessions", Some(&body)).await?;
        sids.push(s["id"].as_str().context("session id missing")?.to_owned());
    }
    let sids = Arc::new(sids);
    api.call(
        Method::PUT,
        "/v1/cache/bench/k1?ttl=1h",
        Some(&json!({"v": "cached value"})),
    )
    .await?;

    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // How late the generator issued requests against its schedule (its own timer and
    // scheduling), reported so a late generator cannot pass unnoticed.
    let lag_max_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let warmup = u64::from(args.rate);
    let total = warmup + u64::from(args.rate) * u64::from(args.seconds);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let (api, hist, errors, lag) = (
            api.clone(),
            hist.clone(),
            errors.clone(),
            lag_max_us.clone(),
        );
        let sid = sids[usize::try_from(i).unwrap_or(0) % sids.len()].clone();
        let op = ops[usize::try_from(i).unwrap_or(0) % ops.len()];
        tasks.spawn(async move {
            // Latency counts from the moment the request is issued. The schedule itself stays
            // open-loop (requests go out on time whatever the answers do); measuring from the
            // ideal instant instead would add the runtime's 1 ms timer granularity to every
            // figure.
            let sent = Instant::now();
            let late =
                u64::try_from(sent.saturating_duration_since(at).as_micros()).unwrap_or(u64::MAX);
            lag.fetch_max(late, std::sync::atomic::Ordering::Relaxed);
            let res = match op {
                Op::SessionGet => {
                    api.call(Method::GET, &format!("/v1/sessions/{sid}"), None)
                        .await
                }
                Op::SessionSet => {
                    let body = json!({"data": {"user": "bench", "n": i}});
                    api.call(Method::PUT, &format!("/v1/sessions/{sid}"), Some(&body))
                        .await
                }
                Op::CacheGet => api.call(Method::GET, "/v1/cache/bench/k1", None).await,
            };
            let ok = matches!(&res, Ok((s, _)) if s.is_success());
            if !ok {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if i >= warmup {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.lock().await.record(micros.max(1)).ok();
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let h = hist.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "system": "herd-services", "op": args.op, "target_rate": args.rate,
        "sent": total, "achieved_rate": (total as f64 / elapsed).round(),
        "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
        "generator_lag_max_ms": lag_max_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0,
    }))
}
