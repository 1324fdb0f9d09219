//! The embedded backend: a durable redb file on this node (single-node; pub/sub is in-process).
//!
//! Layout: [`codec`] (how entries are laid out), [`read`] (lookups), [`ops`] (the write ops),
//! [`writer`] (the group-commit thread), [`sweep`] (background removal of expired keys),
//! [`upgrade`] (rewriting a file an older herd wrote in redb's format v2).
//! Reads run inline in redb read transactions (MVCC snapshots); every write goes
//! through the one writer thread and is answered only after its batch is durably committed, so
//! a write that returned `Ok` survives a crash or `kill -9`.

mod codec;
mod ops;
mod queue_step;
mod read;
mod sweep;
mod upgrade;
mod writer;

#[cfg(test)]
mod model_tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::codec::{bits_score, Kind, KV, ZO, ZS};
use self::ops::{Op, Reply};
use crate::hub::Hub;
use crate::queue::{QueueStep, StepOutcome};
use crate::{
    args, Backend, Expect, Gcra, GcraDecision, StoreError, StoreResult, StoreStatus, Subscription,
    Txn, TxnOutcome, Versioned, Written,
};

/// How many writes may wait for the writer before callers wait to queue (backpressure).
const QUEUE: usize = 16 * 1024;

/// Maps redb's many error types to [`StoreError::Backend`].
pub(crate) trait OrBackend<T> {
    fn or_backend(self) -> StoreResult<T>;
}

impl<T, E: Into<redb::Error>> OrBackend<T> for Result<T, E> {
    fn or_backend(self) -> StoreResult<T> {
        self.map_err(storage_error)
    }
}

/// A redb failure as the store's error: the file's I/O failing is `Unavailable` (503, and the
/// store's status says so, see `writer::Counters::disk_error`); anything else is a backend
/// fault.
pub(crate) fn storage_error(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
        StoreError::Unavailable {
            backend: "embedded",
            reason: format!("disk error on the store's file: {e}; fix the disk, then restart herd"),
        }
    } else {
        StoreError::Backend {
            backend: "embedded",
            reason: e.to_string(),
        }
    }
}

/// The embedded store; cheap to clone (one shared handle).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once shut down, so the file can be opened again in this process.
    db: Mutex<Option<Arc<Database>>>,
    tx: Mutex<Option<mpsc::Sender<writer::Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    hub: Hub,
    cancel: CancellationToken,
    counters: Arc<writer::Counters>,
}

/// Group-commit figures since the store was opened (export them as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Write transactions committed (one fsync each).
    pub batches: u64,
    /// Write calls applied in them; `ops / batches` is the average batch size.
    pub ops: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn unavailable(reason: &str) -> StoreError {
    StoreError::Unavailable {
        backend: "embedded",
        reason: reason.to_owned(),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating missing parent directories.
    ///
    /// # Errors
    /// `StoreError::Backend` naming the path when the file cannot be created, is not a redb file,
    /// or is held by another process.
    pub async fn open(path: &Path) -> StoreResult<EmbeddedStore> {
        let p = path.to_path_buf();
        let db = tokio::task::spawn_blocking(move || open_db(&p))
            .await
            .map_err(|e| StoreError::Backend {
                backend: "embedded",
                reason: e.to_string(),
            })??;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE);
        let wdb = db.clone();
        let counters = Arc::new(writer::Counters::default());
        let writer = std::thread::Builder::new()
            .name("herd-store-writer".into())
            .spawn({
                let counters = counters.clone();
                move || writer::run(wdb, rx, counters)
            })
            .map_err(|e| StoreError::Backend {
                backend: "embedded",
                reason: format!("failed to start the writer thread: {e}"),
            })?;
        let cancel = CancellationToken::new();
        let store = EmbeddedStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: Mutex::new(Some(db)),
                tx: Mutex::new(Some(tx.clone())),
                writer: Mutex::new(Some(writer)),
                hub: Hub::default(),
                cancel: cancel.clone(),
                counters,
            }),
        };
        sweep::spawn(tx, cancel);
        tracing::info!(path = %path.display(), "embedded store open");
        Ok(store)
    }

    /// Stops the sweeper, lets queued writes commit, ends subscriptions and closes the file.
    /// Later calls fail with `Unavailable`. The file can then be opened again in this process.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.hub.close();
        self.inner.tx.lock().unwrap().take();
        self.inner.db.lock().unwrap().take();
        let handle = self.inner.writer.lock().unwrap().take();
        if let Some(h) = handle {
            // The writer ends once every sender is gone: ours now, the sweeper's as it sees the
            // cancellation, in-flight callers' as they get their answers.
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// How much group commit is batching (batches committed, write calls in them).
    #[must_use]
    pub fn stats(&self) -> EmbeddedStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.inner.counters;
        EmbeddedStats {
            batches: c.batches.load(Relaxed),
            ops: c.ops.load(Relaxed),
        }
    }

    async fn write(&self, op: Op) -> StoreResult<Reply> {
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| unavailable("the store is shut down"))?;
        let (reply, rx) = oneshot::channel();
        tx.send(writer::Job { op, reply })
            .await
            .map_err(|_| unavailable("the store writer has stopped"))?;
        rx.await
            .map_err(|_| unavailable("the store writer stopped before answering"))?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let db = self
            .inner
            .db
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| unavailable("the store is shut down"))?;
        if let Some(reason) = self.inner.counters.disk_error() {
            return Err(StoreError::Unavailable {
                backend: "embedded",
                reason,
            });
        }
        // Inline, not on the blocking pool: the services' reads are point lookups and short
        // ranges that redb answers from its page cache in microseconds (an MVCC snapshot, never
        // waiting for the writer), less than the thread hand-off of `spawn_blocking` costs in
        // latency. A cold page is one `pread`, served by the OS page cache in the common case.
        let read = db.begin_read().or_backend().and_then(|txn| f(&txn));
        if let Err(StoreError::Unavailable { reason, .. }) = &read {
            self.inner.counters.note_disk_error(reason);
        }
        read
    }
}

fn open_db(path: &Path) -> StoreResult<Database> {
    let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::Backend {
        backend: "embedded",
        reason: format!("failed to {what} store file {}: {e}", path.display()),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Private: the file holds session ids, cache values and jobs (a directory that exists
        // keeps its mode).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|e| fail("create the directory of", &e))?;
    }
    // A store dropped a moment ago may still be closing its file on the writer thread: wait a
    // little for it rather than failing a reopen in the same process.
    let (mut tries, mut upgraded) = (0, false);
    let db = loop {
        match Database::create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(redb::DatabaseError::UpgradeRequired(2)) if !upgraded => {
                upgraded = true;
                let done = upgrade::from_v2(path).map_err(|e| fail("upgrade", &e))?;
                tracing::warn!(
                    path = %path.display(),
                    entries = done.entries,
                    backup = %done.backup.display(),
                    "upgraded the store file from redb's file format v2 (written by an older herd); \
                     the old file is kept as the backup and can be removed once this herd runs well"
                );
            }
            Err(redb::DatabaseError::UpgradeRequired(v)) => {
                return Err(fail(
                    "open",
                    &format!(
                        "it is in redb's file format v{v}, which this herd cannot read \
                         (it reads v3, and upgrades v2); open it with the herd that wrote it, \
                         or point [store] path at a new file"
                    ),
                ))
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(fail(
                    "open",
                    &"another process holds it open: most likely another herd runs from this \
                      directory (stop it, or give this one its own [store] path; in quick mode, \
                      run it from another directory)",
                ))
            }
            other => break other.map_err(|e| fail("open", &e))?,
        }
    };
    // Readable by herd's user alone, whatever the umask: the file holds session ids (the
    // cookies of logged-in users), cache values and job payloads.
    // Only warned about when it fails: a file owned by another user, or on a filesystem that
    // refuses chmod, still opens as before.
    use std::os::unix::fs::PermissionsExt as _;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "failed to make the store file private (mode 0600)");
    }
    // Create every table once so read transactions never meet a missing one.
    let txn = db.begin_write().map_err(|e| fail("write", &e))?;
    {
        txn.open_table(KV).map_err(|e| fail("open tables in", &e))?;
        txn.open_table(codec::EXP)
            .map_err(|e| fail("open tables in", &e))?;
        txn.open_table(ZS).map_err(|e| fail("open tables in", &e))?;
        txn.open_table(ZO).map_err(|e| fail("open tables in", &e))?;
    }
    txn.commit().map_err(|e| fail("commit to", &e))?;
    Ok(db)
}

fn internal(reply: &Reply) -> StoreError {
    StoreError::Backend {
        backend: "embedded",
        reason: format!("internal: unexpected reply {reply:?}"),
    }
}

/// A value read; a key holding an ordered set is `WrongType`, as on Redis.
fn read_value(txn: &redb::ReadTransaction, key: &str, now: u64) -> StoreResult<Option<Versioned>> {
    let entry = read::live_entry(&txn.open_table(KV).or_backend()?, key, now)?;
    if entry.is_none() && read::zset_exists(&txn.open_table(ZS).or_backend()?, key)? {
        return Err(StoreError::WrongType {
            key: key.to_owned(),
            expected: "value",
            found: "ordered set",
        });
    }
    value_of(key, entry)
}

/// An ordered-set read that found nothing: `WrongType` if the key holds something else.
fn no_plain(txn: &redb::ReadTransaction, key: &str) -> StoreResult<()> {
    match read::live_entry(&txn.open_table(KV).or_backend()?, key, args::now_ms())? {
        Some(e) => Err(StoreError::WrongType {
            key: key.to_owned(),
            expected: "ordered set",
            found: e.kind.name(),
        }),
        None => Ok(()),
    }
}

fn value_of(key: &str, e: Option<codec::Entry>) -> StoreResult<Option<Versioned>> {
    match e {
        None => Ok(None),
        Some(e) if e.kind == Kind::Value => Ok(Some(Versioned {
            value: Bytes::from(e.payload),
            version: e.version,
        })),
        Some(e) => Err(StoreError::WrongType {
            key: key.to_owned(),
            expected: "value",
            found: e.kind.name(),
        }),
    }
}

impl Backend for EmbeddedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        let key = key.to_owned();
        self.read(move |txn| read_value(txn, &key, args::now_ms()))
            .await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        let keys = keys.to_vec();
        self.read(move |txn| {
            let now = args::now_ms();
            keys.iter().map(|k| read_value(txn, k, now)).collect()
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> StoreResult<Written> {
        let ttl_ms = ttl.map(|t| args::ttl_ms(key, t)).transpose()?;
        match self
            .write(Op::Put {
                key: key.to_owned(),
                value,
                expect,
                ttl_ms,
            })
            .await?
        {
            Reply::Written(w) => Ok(w),
            other => Err(internal(&other)),
        }
    }

    async fn delete(&self, key: &str, expect: Expect) -> StoreResult<bool> {
        match self
            .write(Op::Delete {
                key: key.to_owned(),
                expect,
            })
            .await?
        {
            Reply::Bool(b) => Ok(b),
            other => Err(internal(&other)),
        }
    }

    async fn touch(&self, key: &str, ttl: Duration, expect: Expect) -> StoreResult<bool> {
        let ttl_ms = args::ttl_ms(key, ttl)?;
        match self
            .write(Op::Touch {
                key: key.to_owned(),
                ttl_ms,
                expect,
            })
            .await?
        {
            Reply::Bool(b) => Ok(b),
            other => Err(internal(&other)),
        }
    }

    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let ttl_ms = ttl.map(|t| args::ttl_ms(key, t)).transpose()?;
        match self
            .write(Op::Incr {
                key: key.to_owned(),
                by,
                ttl_ms,
            })
            .await?
        {
            Reply::Int(n) => Ok(n),
            other => Err(internal(&other)),
        }
    }

    async fn acquire(
        &self,
        key: &str,
        fence_key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        let ttl_ms = args::ttl_ms(key, ttl)?;
        let op = Op::Acquire {
            key: key.to_owned(),
            fence_key: fence_key.to_owned(),
            value,
            ttl_ms,
        };
        match self.write(op).await? {
            Reply::Fence(f) => Ok(f),
            other => Err(internal(&other)),
        }
    }

    async fn zadd(&self, key: &str, members: &[(String, f64)]) -> StoreResult<()> {
        for (_, s) in members {
            args::score(key, *s)?;
        }
        match self
            .write(Op::Zadd {
                key: key.to_owned(),
                members: members.to_vec(),
            })
            .await?
        {
            Reply::Count(_) => Ok(()),
            other => Err(internal(&other)),
        }
    }

    async fn zrem(&self, key: &str, members: &[String]) -> StoreResult<u64> {
        match self
            .write(Op::Zrem {
                key: key.to_owned(),
                members: members.to_vec(),
            })
            .await?
        {
            Reply::Count(n) => Ok(n),
            other => Err(internal(&other)),
        }
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> StoreResult<Vec<(String, f64)>> {
        let (min, max) = (args::score(key, min)?, args::score(key, max)?);
        let key = key.to_owned();
        self.read(move |txn| {
            let zo = txn.open_table(ZO).or_backend()?;
            let found = read::zrange(&zo, &key, min, max, limit)?;
            if found.is_empty() {
                no_plain(txn, &key)?;
            }
            Ok(found
                .into_iter()
                .map(|(m, bits)| (m, bits_score(bits)))
                .collect())
        })
        .await
    }

    async fn zscore(&self, key: &str, member: &str) -> StoreResult<Option<f64>> {
        let (key, member) = (key.to_owned(), member.to_owned());
        self.read(move |txn| {
            let score = read::zscore(&txn.open_table(ZS).or_backend()?, &key, &member)?;
            if score.is_none() {
                no_plain(txn, &key)?;
            }
            Ok(score)
        })
        .await
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        let key = key.to_owned();
        self.read(move |txn| {
            let n = read::zcard(&txn.open_table(ZS).or_backend()?, &key)?;
            if n == 0 {
                no_plain(txn, &key)?;
            }
            Ok(n)
        })
        .await
    }

    async fn zcount(&self, key: &str, min: f64, max: f64) -> StoreResult<u64> {
        let (min, max) = (args::score(key, min)?, args::score(key, max)?);
        let key = key.to_owned();
        self.read(move |txn| {
            let n = read::zcount(&txn.open_table(ZO).or_backend()?, &key, min, max)?;
            if n == 0 {
                no_plain(txn, &key)?;
            }
            Ok(n)
        })
        .await
    }

    async fn zmove(
        &self,
        src: &str,
        dst: &str,
        max_score: f64,
        count: usize,
        dst_score: f64,
    ) -> StoreResult<Vec<(String, f64)>> {
        let (max_score, dst_score) = (args::score(src, max_score)?, args::score(dst, dst_score)?);
        let op = Op::Zmove {
            src: src.to_owned(),
            dst: dst.to_owned(),
            max_score,
            count,
            dst_score,
        };
        match self.write(op).await? {
            Reply::Members(m) => Ok(m),
            other => Err(internal(&other)),
        }
    }

    async fn txn(&self, txn: &Txn) -> StoreResult<TxnOutcome> {
        txn.validate()?;
        match self.write(Op::Txn(Box::new(txn.clone()))).await? {
            Reply::Txn(outcome) => Ok(outcome),
            other => Err(internal(&other)),
        }
    }

    async fn queue_step(&self, step: &QueueStep) -> StoreResult<StepOutcome> {
        step.validate()?;
        match self.write(Op::QueueStep(Box::new(step.clone()))).await? {
            Reply::Step(outcome) => Ok(outcome),
            other => Err(internal(&other)),
        }
    }

    async fn gcra(&self, key: &str, params: Gcra) -> StoreResult<GcraDecision> {
        args::gcra_us(key, params)?;
        match self
            .write(Op::Gcra {
                key: key.to_owned(),
                params,
                now_us: args::now_us(),
            })
            .await?
        {
            Reply::Gcra(d) => Ok(d),
            other => Err(internal(&other)),
        }
    }

    async fn publish(&self, channel: &str, message: Bytes) -> StoreResult<()> {
        if self.inner.cancel.is_cancelled() {
            return Err(unavailable("the store is shut down"));
        }
        self.inner.hub.deliver(channel, &message);
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        if self.inner.cancel.is_cancelled() {
            return Err(unavailable("the store is shut down"));
        }
        Ok(self.inner.hub.subscribe(channel).0)
    }

    async fn time_ms(&self) -> StoreResult<i64> {
        if self.inner.cancel.is_cancelled() {
            return Err(unavailable("the store is shut down"));
        }
        Ok(i64::try_from(args::now_us() / 1000).unwrap_or(i64::MAX))
    }

    fn status(&self) -> StoreStatus {
        // A writer that died (it never should) closes the channel: report that as down.
        let open = self
            .inner
            .tx
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|tx| !tx.is_closed());
        let disk = self
            .inner
            .counters
            .disk_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        StoreStatus {
            backend: "embedded",
            state: if open && disk.is_none() { "ok" } else { "down" },
            target: self.inner.path.display().to_string(),
            last_error: disk.or_else(|| (!open).then(|| "the store is shut down".to_owned())),
        }
    }
}

#[cfg(test)]
mod open_tests {
    #[tokio::test]
    async fn a_file_another_store_holds_open_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let _first = super::EmbeddedStore::open(&path).await.unwrap();
        let err = super::EmbeddedStore::open(&path).await.err().unwrap();
        assert!(
            err.to_string()
                .contains("another herd runs from this directory"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_store_is_private_to_herd_s_user() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("store.redb");
        let _store = super::EmbeddedStore::open(&path).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
}
