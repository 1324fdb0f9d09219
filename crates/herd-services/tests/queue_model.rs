//! Model-based property test of the queue on the embedded store (the model is in
//! `common/model.rs`; `redis.rs` runs it on Redis too).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::model::{op, run_case};
use common::*;
use proptest::test_runner::{Config, TestRunner};

#[test]
fn queue_agrees_with_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("model");
    let store = rt.block_on(open_store(&dir, false));
    let cases = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..50), |ops| {
            let queue = format!("model-{}", cases.fetch_add(1, Ordering::SeqCst));
            rt.block_on(run_case(&store, &queue, ops))
        })
        .unwrap();
}
