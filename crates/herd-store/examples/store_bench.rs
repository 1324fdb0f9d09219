//! Prints store throughput for a queue-like load (a program that prints figures, never pass/fail).
//!
//! A "job" is what a queue does per job: put the payload, zadd to `wait`, zmove to `active`,
//! zrem from `active`, delete the payload, incr a completed counter (6 store calls, all writes
//! but none of them batched by the caller).
//! Run: `cargo run --release -p herd-store --example store_bench -- [embedded|redis://...] [workers] [seconds]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_store::{Backend, Expect, Store, StoreOptions};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "embedded".into());
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let opts = if target == "embedded" {
        StoreOptions::Embedded {
            path: dir.path().join("bench.redb"),
        }
    } else {
        StoreOptions::Redis {
            urls: vec![target.clone()],
            cluster: false,
            timeout: Duration::from_secs(5),
        }
    };
    let store = Store::open(&opts).await.unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (s, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let (wait, active) = (
                format!("q{{b}}:wait:{}", w % 4),
                format!("q{{b}}:active:{}", w % 4),
            );
            let mut i = 0u64;
            while Instant::now() < deadline {
                let id = format!("{w}-{i}");
                let key = format!("q{{b}}:job:{id}");
                s.put(
                    &key,
                    Bytes::from_static(b"{\"payload\":1}"),
                    Expect::Absent,
                    None,
                )
                .await
                .unwrap();
                s.zadd(&wait, &[(id.clone(), 1.0)]).await.unwrap();
                let moved = s
                    .zmove(&wait, &active, f64::INFINITY, 1, 2.0)
                    .await
                    .unwrap();
                s.zrem(
                    &active,
                    &moved.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
                )
                .await
                .unwrap();
                s.delete(&key, Expect::Any).await.unwrap();
                s.incr("q{b}:completed", 1, None).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed) as f64;
    let el = start.elapsed().as_secs_f64();
    println!(
        "{target}: {workers} workers, {n} jobs in {el:.2} s = {:.0} jobs/s ({:.0} store calls/s)",
        n / el,
        6.0 * n / el
    );
    if let Store::Embedded(e) = &store {
        let st = e.stats();
        println!(
            "group commit: {} batches, {:.1} writes per batch",
            st.batches,
            st.ops as f64 / st.batches.max(1) as f64
        );
    }
    store.shutdown().await;
}
