//! The single writer thread: group commit.
//!
//! Callers queue ops on a bounded channel; the thread takes everything queued (up to
//! [`MAX_BATCH`]), applies it in ONE write transaction, commits durably (one fsync for the whole
//! batch) and only then answers each op. Under load batches grow by themselves, which is what
//! makes durable writes fast; idle, a lone op commits at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::ops::{apply, Op, Reply, Tables};
use super::storage_error;
use crate::{args, StoreError, StoreResult};

/// The most ops one transaction takes, so one huge burst does not hold every answer back.
const MAX_BATCH: usize = 4096;

/// A queued op with where its answer goes.
pub(super) struct Job {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<StoreResult<Reply>>,
}

/// How much batching the writer achieved (for metrics, and for the test that batching happens),
/// and the disk error that stopped it, if one did.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) batches: AtomicU64,
    pub(super) ops: AtomicU64,
    /// Set by a failed read or write of the file. redb refuses every later transaction until
    /// the file is opened again (after a failed fsync the kernel may have dropped the pages,
    /// so nothing written since the last good commit can be trusted, PostgreSQL's reasoning
    /// too): the store reports itself down, with this, until herd is restarted.
    pub(super) disk_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    /// Notes a failure of the file (the first one is kept).
    pub(super) fn note_disk_error(&self, reason: &str) {
        self.disk_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(|| reason.to_owned());
    }

    /// The failure of the file, if there was one.
    pub(super) fn disk_error(&self) -> Option<String> {
        self.disk_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Runs until every sender is gone; then the thread returns and drops its handle on the file.
pub(super) fn run(db: Arc<Database>, mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
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
        commit(&db, &mut batch, &counters);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.ops.fetch_add(ops as u64, Ordering::Relaxed);
        tracing::trace!(
            ops,
            micros = started.elapsed().as_micros() as u64,
            "committed a batch"
        );
    }
    tracing::debug!("store writer stopped");
}

fn commit(db: &Database, batch: &mut Vec<Job>, counters: &Counters) {
    match apply_all(db, batch) {
        Ok(replies) => {
            for (job, reply) in batch.drain(..).zip(replies) {
                // The caller may have gone (cancelled); its op is committed all the same.
                let _ = job.reply.send(reply);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, ops = batch.len(), "failed to commit a batch of store writes");
            if let StoreError::Unavailable { reason, .. } = &e {
                counters.note_disk_error(reason);
            }
            let unavailable = matches!(e, StoreError::Unavailable { .. });
            let reason = match &e {
                StoreError::Unavailable { reason, .. } | StoreError::Backend { reason, .. } => {
                    reason.clone()
                }
                other => other.to_string(),
            };
            for job in batch.drain(..) {
                let err = if unavailable {
                    StoreError::Unavailable {
                        backend: "embedded",
                        reason: reason.clone(),
                    }
                } else {
                    StoreError::Backend {
                        backend: "embedded",
                        reason: reason.clone(),
                    }
                };
                let _ = job.reply.send(Err(err));
            }
        }
    }
}

/// Applies the batch in one transaction; an `Err` means nothing was committed.
fn apply_all(db: &Database, batch: &[Job]) -> StoreResult<Vec<StoreResult<Reply>>> {
    let txn = db.begin_write().map_err(storage_error)?;
    let now = args::now_ms();
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut tables = Tables::open(&txn)?;
        for job in batch {
            match apply(&mut tables, &job.op, now) {
                // A storage error may have left an op half-written: abort everything.
                Err(e @ (StoreError::Backend { .. } | StoreError::Unavailable { .. })) => {
                    return Err(e)
                }
                other => replies.push(other),
            }
        }
    }
    txn.commit().map_err(storage_error)?;
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Expect;

    #[test]
    fn a_disk_error_is_unavailable_and_other_faults_are_backend_errors() {
        let io = redb::Error::Io(std::io::Error::other("EIO"));
        assert!(
            matches!(storage_error(io), StoreError::Unavailable { reason, .. } if reason.contains("restart herd"))
        );
        assert!(matches!(
            storage_error(redb::Error::PreviousIo),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            storage_error(redb::Error::DatabaseAlreadyOpen),
            StoreError::Backend { .. }
        ));
    }

    #[test]
    fn queued_ops_commit_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(super::super::open_db(&dir.path().join("w.redb")).unwrap());
        let (tx, rx) = mpsc::channel(1000);
        let mut answers = Vec::new();
        for i in 0..100 {
            let (reply, answer) = oneshot::channel();
            let op = Op::Put {
                key: format!("k{i}"),
                value: bytes::Bytes::new(),
                expect: Expect::Absent,
                ttl_ms: None,
            };
            tx.try_send(Job { op, reply }).unwrap();
            answers.push(answer);
        }
        drop(tx);
        let counters = Arc::new(Counters::default());
        run(db, rx, counters.clone());
        assert_eq!(counters.ops.load(Ordering::Relaxed), 100);
        assert_eq!(
            counters.batches.load(Ordering::Relaxed),
            1,
            "everything queued goes in one transaction"
        );
        for mut a in answers {
            assert!(matches!(
                a.try_recv(),
                Ok(Ok(Reply::Written(crate::Written::Ok(1))))
            ));
        }
    }
}
