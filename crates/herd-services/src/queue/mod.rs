//! Job queues with BullMQ's feature set over the shared store: priorities, delays, retries
//! with backoff, dead letters, leases with stalled-job recovery, dedupe by job id, pause,
//! clean, repeatable jobs (every / cron with time zone), a per-queue rate limit and a global
//! concurrency cap.
//!
//! - `job`: the record and the pure rules (scores, backoff, what a failure leads to).
//! - `spec`: the JSON form of a job (durations as text), shared by the HTTP API and schedules.
//! - `reserve`: promote due delayed jobs, recover stalled ones, lease waiting ones; long-poll.
//! - `housekeep`: how often a node promotes, recovers and fires schedules per queue.
//! - `finish`: ack (and ack-then-reserve), fail, extend; dead letters; clean.
//! - `schedule`: repeatable jobs and the next cron firing in a time zone.
//! - `browse`: the jobs of a state in order, removing one job, draining, reading schedules.
//!
//! # Layout
//! All keys of queue `N` share the hash tag `{q:N}` (one Redis Cluster slot): the record
//! `herd:{q:N}:job:ID` (KV, versioned) and ordered sets `waiting` (score = priority·2^31 +
//! seq), `delayed` (due ms), `active` (lease deadline ms), `completed` and `failed` (finish
//! ms). Set members are `ID#GEN`; the record names the current member. The record is in the
//! store's job format (`herd_store::queue`, see `record`): a header line the store itself
//! rewrites in a queue step, then the job's JSON, then the ack's result.
//!
//! # At-least-once: no accepted job is lost, whatever store call the process dies after
//! Every transition a caller asks for (add, reserve, ack, fail, extend, dead-letter retry and
//! delete) is one atomic store call: a queue step ([`herd_store::Backend::queue_step`]) for
//! add, reserve and ack, a transaction ([`herd_store::Txn`]) for the rest (the record's
//! compare-and-swap on its version, its new member's `zadd` and its old member's `zrem`).
//! So a crash leaves the job either where it was or where it went. Three paths still take
//! several calls, each safe because whoever reads a member next repairs a half-done move (see
//! below): the reserve of a queue with a rate limit or concurrency cap, promotion of due
//! delayed jobs and stalled recovery (record, then new member, then removal of the old one).
//!
//! - **add** (one job or a bulk): one queue step numbers the jobs with the queue's counter
//!   (the order of adding, and the id unless `job_id` names one) and writes each record whose
//!   id is free with its member. A retried add with the same `job_id` finds the record and
//!   returns its id (dedupe).
//! - **reserve**: one queue step moves the members waiting → active and leases each record
//!   that is waiting and names its member; a member it cannot lease (stale, or a record of an
//!   older herd) stays in `active` and goes through `claim`, as a plain move would leave it.
//!   With a rate limit or concurrency cap: `zmove(waiting → active)`, then the records are
//!   leased by compare-and-swap; dying in between leaves a member in `active` whose record
//!   still says `waiting`, and when its lease deadline passes stalled recovery puts it back
//!   in `waiting` (a re-delivery, never a loss).
//! - **ack** (with or without leasing the next jobs): one queue step, only while the record
//!   is active under the caller's lease token.
//! - **fail / extend / retry of a dead letter**: one transaction each, and only while
//!   the record is at the version the caller read (a lost race retries from the read). A
//!   transition that re-enters a set takes a new generation (a new member name), so a member
//!   left behind by an older herd (whose transitions were separate calls) can be told from the
//!   job's current place: whoever reads a member its record no longer names (reserve,
//!   promotion, stalled recovery) re-adds the record's member where its state says and drops
//!   the stale one.
//! - **ack with `remove_on_complete`** deletes the record and its member together.
//! - **an ack of a record of an older herd** (whole-record JSON) is a transaction as above.
//! - **promotion** of due delayed jobs keeps the member (`zadd waiting`, `zrem delayed`): a
//!   job re-enters `delayed` only under a new generation, so the `zrem` is safe; a duplicate
//!   in `waiting` is caught by the reserve's record check.
//!
//! Promotion and recovery run on a reserve at most every 20 ms / 1 s per node, and always
//! when a reserve finds nothing waiting (`housekeep`).
//!
//! Duplicated delivery is possible (a worker that outlives its lease); lost jobs are not.

mod browse;
mod finish;
mod housekeep;
pub mod job;
mod record;
mod reserve;
mod schedule;
mod shared;
pub mod spec;
mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herd_store::queue::{Add, QueueStep};
use herd_store::{Backend as _, Expect, Store, Txn, TxnOutcome, Written};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::clock::{millis, Clock};
use crate::error::{ServiceError, ServiceResult};
pub use browse::{Drained, MAX_LISTED};
pub use finish::{AckRequest, Cleaned, Failed};
pub use job::{Backoff, BackoffKind, JobRecord, Keep, NewJob, State};
pub use reserve::Reserved;
pub use schedule::{Repeat, ScheduleInfo};
pub use spec::JobSpec;

/// A per-queue rate limit: at most `max` jobs reserved per `duration` (BullMQ `limiter`): a
/// window opens with the first job reserved after the last one closed, and at most `max` jobs
/// are reserved in it (see `window`). The window is in the store, so all nodes share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limiter {
    pub max: u32,
    pub duration: Duration,
}

/// Settings of one queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSettings {
    pub limiter: Option<Limiter>,
    /// Most jobs active at once across all nodes.
    pub concurrency: Option<u32>,
}

/// Queue settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Lease when `reserve` names none (BullMQ lock 30 s, SQS visibility timeout 30 s).
    pub default_lease: Duration,
    /// Lease expiries a job survives before it is dead-lettered (BullMQ `maxStalledCount` 1).
    pub max_stalled: u32,
    /// Per-queue settings by name.
    pub queues: HashMap<String, QueueSettings>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            default_lease: Duration::from_secs(30),
            max_stalled: 1,
            queues: HashMap::new(),
        }
    }
}

/// Jobs per state (`GET /v1/queues/{q}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    /// Waiting jobs held back because the queue is paused (then `waiting` is 0).
    pub paused: u64,
    /// How many of the ready jobs (`waiting`, or `paused` while paused) have a priority.
    /// Unlike BullMQ's counts, `waiting` includes them: it is every job a reserve may take.
    pub prioritized: u64,
    pub is_paused: bool,
}

/// Store keys of one queue (the layout is the store's: `herd_store::queue`).
pub(crate) use herd_store::queue::QueueKeys as Keys;

/// What this node keeps per queue: a wake-up for long-polling reserves and when it last did
/// the queue's housekeeping.
#[derive(Default)]
struct Local {
    notify: Notify,
    listening: AtomicBool,
    /// The publisher task runs (see `announce`), and what wakes it.
    publishing: AtomicBool,
    publish: Notify,
    housekeeping: Mutex<housekeep::Housekeeping>,
}

/// The queue service.
pub struct Queues {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    config: QueueConfig,
    local: Mutex<HashMap<String, Arc<Local>>>,
    /// The settings of queues this node has no table for, as other nodes shared them.
    shared: shared::Cache,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Queue names become part of a hash tag.
fn check_queue(queue: &str) -> ServiceResult<()> {
    let why = if queue.is_empty() {
        "is empty".to_owned()
    } else if queue.len() > 200 {
        format!("is {} bytes long, over 200", queue.len())
    } else if let Some(c) = queue.chars().find(|c| matches!(c, '{' | '}' | ':' | '/')) {
        format!("contains '{c}'")
    } else if queue.chars().any(char::is_whitespace) {
        "contains a space".to_owned()
    } else if queue.chars().any(char::is_control) {
        "contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(ServiceError::invalid(
        "queue name",
        format!("{} {why}", crate::error::quoted(queue)),
        "use 1 to 200 bytes of letters, digits, '-', '_' or '.' (no '{', '}', ':', '/', spaces or control characters)",
    ))
}

fn check_job_id(id: &str) -> ServiceResult<()> {
    let why = if id.is_empty() {
        "is empty".to_owned()
    } else if id.len() > 200 {
        format!("is {} bytes long, over 200", id.len())
    } else if id.contains('/') {
        "contains '/'".to_owned()
    } else if id.contains('\0') {
        "contains NUL".to_owned()
    } else if id == "." || id == ".." {
        // HTTP clients resolve these path segments away: the job could never be addressed.
        "is a path segment that URLs resolve away".to_owned()
    } else {
        String::new()
    };
    if !why.is_empty() {
        return Err(ServiceError::invalid(
            "job_id",
            format!("{} {why}", crate::error::quoted(id)),
            "use 1 to 200 bytes without '/' or NUL, other than \".\" and \"..\", e.g. \"order-1500\"",
        ));
    }
    // Generated ids are plain integers: a caller's id must never collide with one (BullMQ
    // refuses integer custom ids for the same reason).
    if id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServiceError::invalid(
            "job_id",
            format!(
                "{} is a plain integer, the form of herd's generated ids",
                crate::error::quoted(id)
            ),
            "give it a prefix, e.g. \"order-1500\"",
        ));
    }
    Ok(())
}

/// The most jobs one bulk add takes (one store transaction).
pub(crate) const MAX_BULK: usize = 1000;

fn corrupt(key: String, reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::Corrupt {
        key,
        reason: reason.to_string(),
    }
}

fn encode(rec: &JobRecord) -> Bytes {
    record::encode(rec)
}

#[allow(clippy::cast_precision_loss)]
fn score(ms: i64) -> f64 {
    ms as f64
}

impl Queues {
    pub(crate) fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        config: QueueConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let tasks = TaskTracker::new();
        tasks.spawn(shared::publish(
            Arc::clone(&store),
            config.queues.clone(),
            shutdown.clone(),
        ));
        Queues {
            store,
            clock,
            config,
            local: Mutex::new(HashMap::new()),
            shared: shared::Cache::default(),
            shutdown,
            tasks,
        }
    }

    /// The queue's limits: this node's `[services.queue.NAME]` table, or else what other nodes
    /// with one shared through the store (see `shared`).
    async fn settings(&self, queue: &str) -> QueueSettings {
        match self.config.queues.get(queue) {
            Some(s) => s.clone(),
            None => self.shared.get(&self.store, queue).await,
        }
    }

    fn local(&self, queue: &str) -> Arc<Local> {
        Arc::clone(
            self.local
                .lock()
                .unwrap()
                .entry(queue.to_owned())
                .or_default(),
        )
    }

    /// Reads a job's record and its version.
    async fn read(&self, keys: &Keys, id: &str) -> ServiceResult<Option<(JobRecord, u64)>> {
        let key = keys.job(id);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(v) => {
                let rec = record::decode(&v.value, id).map_err(|e| corrupt(key, e))?;
                Ok(Some((rec, v.version)))
            }
        }
    }

    /// Writes a record at `version`; `false` when another writer got there first.
    async fn write(&self, keys: &Keys, rec: &JobRecord, version: u64) -> ServiceResult<bool> {
        Ok(matches!(
            self.store
                .put(
                    &keys.job(&rec.id),
                    encode(rec),
                    Expect::Version(version),
                    None
                )
                .await?,
            Written::Ok(_)
        ))
    }

    /// The queue's counter as it stands (the order of the job added last), without moving it.
    async fn tail_seq(&self, keys: &Keys) -> ServiceResult<u64> {
        let n = self.store.incr(&keys.set("seq"), 0, None).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The `waiting` score of a job that becomes ready again (a retry, a delayed job coming
    /// due), given [`Queues::tail_seq`]: behind every job of its priority added so far and
    /// ahead of the next one (half way past the counter), as BullMQ appends such a job to the
    /// wait list. A `lifo` job keeps its place ahead. (The record keeps its own order of
    /// adding: a repair after a crash puts it back there.)
    fn requeue_score(rec: &JobRecord, tail: u64) -> f64 {
        if rec.lifo {
            return rec.waiting_score();
        }
        herd_store::queue::waiting_score(rec.rank(), tail) + 0.5
    }

    /// The set (and score) the record's state says its member belongs in.
    fn place(keys: &Keys, rec: &JobRecord, now: i64) -> (String, f64) {
        match rec.state {
            State::Waiting if rec.due_ms > now => (keys.delayed(), score(rec.due_ms)),
            State::Waiting => (keys.waiting(), rec.waiting_score()),
            State::Active => (keys.active(), score(rec.lease_until_ms)),
            State::Completed => (keys.completed(), score(rec.finished_ms.unwrap_or(now))),
            State::Failed => (keys.failed(), score(rec.finished_ms.unwrap_or(now))),
        }
    }

    /// Makes sure the record's member is in the set its state names (finishing a move a
    /// crashed or racing call left half done).
    async fn repair(&self, keys: &Keys, rec: &JobRecord, now: i64) -> ServiceResult<()> {
        let member = rec.member();
        if rec.state == State::Waiting {
            // Promotion may not have run yet: delayed or waiting both count.
            for set in [keys.delayed(), keys.waiting()] {
                if self.store.zscore(&set, &member).await?.is_some() {
                    return Ok(());
                }
            }
        }
        let (set, s) = Self::place(keys, rec, now);
        if rec.state == State::Waiting || self.store.zscore(&set, &member).await?.is_none() {
            self.store.zadd(&set, &[(member, s)]).await?;
        }
        Ok(())
    }

    /// Applies a transaction; `false` when one of its checks failed (nothing was written).
    async fn commit(&self, txn: &Txn) -> ServiceResult<bool> {
        Ok(self.store.txn(txn).await? == TxnOutcome::Committed)
    }

    /// Wakes reserves waiting on this queue: here at once, on other nodes through a message
    /// the queue's publisher task sends. Announcements made while one is being published
    /// coalesce into one more message, so a burst of adds costs a few publishes, not one each.
    async fn announce(&self, queue: &str, _keys: &Keys) {
        let local = self.local(queue);
        local.notify.notify_waiters();
        if !local.publishing.swap(true, Ordering::SeqCst) {
            self.spawn_publisher(queue, &local);
        }
        local.publish.notify_one();
    }

    /// The per-queue task that publishes announcements (one in flight at a time).
    fn spawn_publisher(&self, queue: &str, local: &Arc<Local>) {
        let (store, local) = (Arc::clone(&self.store), Arc::clone(local));
        let (channel, shutdown) = (Keys::new(queue).channel(), self.shutdown.clone());
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = local.publish.notified() => {}
                }
                if let Err(e) = store.publish(&channel, Bytes::new()).await {
                    tracing::debug!(error = %e, "failed to announce new jobs; waiting reserves poll");
                }
            }
        }.instrument(tracing::info_span!("queue_publisher", queue = %queue)));
    }

    /// Adds a job; returns its id. With `job_id` set and a job of that id present (in any
    /// state), returns that id and adds nothing (BullMQ dedupe).
    ///
    /// # Errors
    /// `Invalid` queue, id, attempts or priority; store errors.
    pub async fn add(&self, queue: &str, job: NewJob) -> ServiceResult<String> {
        self.add_new(queue, job).await.map(|(id, _)| id)
    }

    /// [`Queues::add`], and whether the job was added: `false` when its `job_id` named a job
    /// already there (nothing was added).
    ///
    /// # Errors
    /// As [`Queues::add`].
    pub async fn add_new(&self, queue: &str, job: NewJob) -> ServiceResult<(String, bool)> {
        check_queue(queue)?;
        spec::check_new_job(&job)?;
        if let Some(id) = &job.job_id {
            check_job_id(id)?;
        }
        let keys = Keys::new(queue);
        let added = self.add_checked(&keys, vec![job]).await?;
        let added = added.into_iter().next().unwrap_or_default();
        // Also for a duplicate: it may be the retry of an add whose answer was lost (which
        // announced nothing), or have put back a missing waiting entry.
        self.announce(queue, &keys).await;
        Ok(added)
    }

    /// Adds several jobs; returns their ids, in order. Every job is checked before any is
    /// written; the order of adding is taken for all of them at once (one counter step) and
    /// their writes go to the store together.
    ///
    /// # Errors
    /// As [`Queues::add`]. When the store fails part-way, some of the jobs may be added:
    /// resending them with `job_id`s set adds each once.
    pub async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> ServiceResult<Vec<String>> {
        let added = self.add_bulk_new(queue, jobs).await?;
        Ok(added.into_iter().map(|(id, _)| id).collect())
    }

    /// [`Queues::add_bulk`], and for each job whether it was added (`false`: its `job_id`
    /// named a job already there).
    ///
    /// # Errors
    /// As [`Queues::add_bulk`].
    pub async fn add_bulk_new(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
    ) -> ServiceResult<Vec<(String, bool)>> {
        check_queue(queue)?;
        if jobs.len() > MAX_BULK {
            return Err(ServiceError::invalid(
                "jobs",
                format!("{} jobs in one bulk add", jobs.len()),
                "send at most 1000 jobs per call",
            ));
        }
        for job in &jobs {
            spec::check_new_job(job)?;
            if let Some(id) = &job.job_id {
                check_job_id(id)?;
            }
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(queue);
        let added = self.add_checked(&keys, jobs).await?;
        // Duplicates too (see `add_new`).
        self.announce(queue, &keys).await;
        Ok(added)
    }

    async fn add_quiet(&self, queue: &str, job: NewJob) -> ServiceResult<String> {
        check_queue(queue)?;
        spec::check_new_job(&job)?;
        if let Some(id) = &job.job_id {
            check_job_id(id)?;
        }
        let ids = self.add_checked(&Keys::new(queue), vec![job]).await?;
        Ok(ids.into_iter().next().map(|(id, _)| id).unwrap_or_default())
    }

    /// Adds checked jobs in one store step: the queue's counter gives each its number (the
    /// order of adding, and the id unless the job names one), and each record is written with
    /// its member only if its id is free. A job whose id is taken is left as it is (dedupe);
    /// its member is put back if a crashed older herd left it without one.
    async fn add_checked(
        &self,
        keys: &Keys,
        jobs: Vec<NewJob>,
    ) -> ServiceResult<Vec<(String, bool)>> {
        let now = self.clock.now_ms();
        let adds = jobs
            .into_iter()
            .map(|job| {
                let id = job.job_id.clone();
                let rec = Self::new_record(job, now);
                Add {
                    id,
                    header: record::header(&rec),
                    body: record::body(&rec),
                    rank: (rec.due_ms <= now).then(|| rec.rank()),
                    lifo: rec.lifo && rec.due_ms <= now,
                }
            })
            .collect();
        let step = QueueStep {
            keys: keys.clone(),
            adds,
            ..QueueStep::default()
        };
        let out = self.store.queue_step(&step).await?;
        // The adds are committed: a failed repair of a taken id's record must not make them
        // look failed (a retried add without job ids would add them again).
        for taken in out.added.iter().filter(|a| !a.new) {
            let repaired = match self.read(keys, &taken.id).await {
                Ok(Some((existing, _))) => self.repair(keys, &existing, now).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = repaired {
                tracing::warn!(job = %taken.id, error = %e, "could not check the member of an existing job after a deduplicated add");
            }
        }
        Ok(out.added.into_iter().map(|a| (a.id, a.new)).collect())
    }

    /// The record of a new job, before the store gives it its number (`seq`, and the id
    /// unless the job names one).
    fn new_record(job: NewJob, now: i64) -> JobRecord {
        JobRecord {
            id: job.job_id.unwrap_or_default(),
            name: job.name,
            data: job.data,
            attempts: job.attempts.max(1),
            backoff: job.backoff,
            priority: job.priority,
            seq: 0,
            keep_completed: job.keep_completed,
            keep_failed: job.keep_failed,
            lifo: job.lifo,
            state: State::Waiting,
            generation: 0,
            added_ms: now,
            due_ms: now + millis(job.delay),
            attempt: 0,
            stalled: 0,
            lease_token: None,
            lease_until_ms: 0,
            finished_ms: None,
            failed_reason: None,
            errors: Vec::new(),
            result: None,
        }
    }

    /// The service's clock now, in ms since the epoch.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A job's record.
    ///
    /// # Errors
    /// `NotFound`; store errors.
    pub async fn get(&self, queue: &str, id: &str) -> ServiceResult<JobRecord> {
        check_queue(queue)?;
        self.read(&Keys::new(queue), id)
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| ServiceError::not_found(format!("job {id} in queue {queue}")))
    }

    /// Jobs per state.
    ///
    /// # Errors
    /// Store errors.
    pub async fn counts(&self, queue: &str) -> ServiceResult<Counts> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let s = &self.store;
        let is_paused = self.is_paused(&keys).await?;
        let waiting = s.zcard(&keys.waiting()).await?;
        // Rank 1 and up (a priority) scores from 2^31 (`waiting_score`).
        let prioritized = s
            .zcount(
                &keys.waiting(),
                herd_store::queue::waiting_score(1, 0),
                f64::INFINITY,
            )
            .await?;
        Ok(Counts {
            prioritized,
            waiting: if is_paused { 0 } else { waiting },
            paused: if is_paused { waiting } else { 0 },
            delayed: s.zcard(&keys.delayed()).await?,
            active: s.zcard(&keys.active()).await?,
            completed: s.zcard(&keys.completed()).await?,
            failed: s.zcard(&keys.failed()).await?,
            is_paused,
        })
    }

    async fn is_paused(&self, keys: &Keys) -> ServiceResult<bool> {
        Ok(self.store.get(&keys.set("paused")).await?.is_some())
    }

    /// Stops reserves from handing out jobs (adds still queue up).
    ///
    /// # Errors
    /// Store errors.
    pub async fn pause(&self, queue: &str) -> ServiceResult<()> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        self.store
            .put(
                &keys.set("paused"),
                Bytes::from_static(b"1"),
                Expect::Any,
                None,
            )
            .await?;
        Ok(())
    }

    /// Lets reserves hand out jobs again.
    ///
    /// # Errors
    /// Store errors.
    pub async fn resume(&self, queue: &str) -> ServiceResult<()> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        self.store.delete(&keys.set("paused"), Expect::Any).await?;
        self.announce(queue, &keys).await;
        Ok(())
    }

    /// Waits for background listeners to stop (after shutdown is cancelled).
    pub(crate) async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_ids_that_cannot_be_addressed_are_refused() {
        for (id, why) in [
            ("", "empty"),
            (".", "resolve away"),
            ("..", "resolve away"),
            ("a/b", "'/'"),
            ("a\0b", "NUL"),
            ("1500", "plain integer"),
        ] {
            let e = super::check_job_id(id).unwrap_err().to_string();
            assert!(e.contains(why), "{id:?}: {e}");
        }
        let long = "x".repeat(201);
        assert!(super::check_job_id(&long)
            .unwrap_err()
            .to_string()
            .contains("201 bytes"));
        for ok in ["...", ".a", "order-1500", "a.b", "ü"] {
            super::check_job_id(ok).unwrap();
        }
    }
}
