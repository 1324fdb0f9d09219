//! The single writer thread: group commit.
//!
//! Callers queue ops on a bounded channel; the thread takes everything queued (up to
//! [`MAX_BATCH`]), applies it in ONE write transaction, commits durably (one fsync for the whole
//! batch) and only then answers each op. Under load batches grow by themselves, which is what
//! makes durable writes fast; idle, a lone op commits at once.

use std::sync::Arc;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::ops::{apply, Op, Reply, Tables};
use super::OrBackend;
use crate::{args, StoreError, StoreResult};

/// The most ops one transaction takes, so one huge burst does not hold every answer back.
const MAX_BATCH: usize = 4096;

/// A queued op with where its answer goes.
pub(super) struct Job {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<StoreResult<Reply>>,
}

/// Runs until every sender is gone; then the thread returns and drops its handle on the file.
pub(super) fn run(db: Arc<Database>, mut rx: mpsc::Receiver<Job>) {
    let _span = tracing::info_span!("store_writer", backend = "embedded").entered();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (started, ops) = (std::time::Instant::now(), batch.len());
        commit(&db, &mut batch);
        tracing::trace!(
            ops,
            micros = started.elapsed().as_micros() as u64,
            "committed a batch"
        );
    }
    tracing::debug!("store writer stopped");
}

fn commit(db: &Database, batch: &mut Vec<Job>) {
    match apply_all(db, batch) {
        Ok(replies) => {
            for (job, reply) in batch.drain(..).zip(replies) {
                // The caller may have gone (cancelled); its op is committed all the same.
                let _ = job.reply.send(reply);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, ops = batch.len(), "failed to commit a batch of store writes");
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(StoreError::Backend {
                    backend: "embedded",
                    reason: e.to_string(),
                }));
            }
        }
    }
}

/// Applies the batch in one transaction; an `Err` means nothing was committed.
fn apply_all(db: &Database, batch: &[Job]) -> StoreResult<Vec<StoreResult<Reply>>> {
    let txn = db.begin_write().or_backend()?;
    let now = args::now_ms();
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut tables = Tables::open(&txn)?;
        for job in batch {
            match apply(&mut tables, &job.op, now) {
                // A storage error may have left an op half-written: abort everything.
                Err(e @ StoreError::Backend { .. }) => return Err(e),
                other => replies.push(other),
            }
        }
    }
    txn.commit().or_backend()?;
    Ok(replies)
}
