//! Ending a lease (ack, fail), extending it, dead letters and cleaning finished jobs.
//! Each transition is one store transaction: the record's compare-and-swap (a new
//! generation), its new member and the removal of its old one, together.

use std::time::Duration;

use bytes::Bytes;
use herd_store::queue::{Claim, Finish, Finished, QueueStep, StepOutcome};
use herd_store::{Backend as _, Expect, Txn};
use serde::Serialize;
use serde_json::Value;

use super::housekeep::Chores;
use super::job::{after_fail, AfterFail, JobRecord, Keep, State};
use super::{check_queue, encode, score, Keys, Queues};
use crate::clock::millis;

/// How many failed attempts' errors a job keeps, the newest (BullMQ's `stackTraceLimit`): a job
/// with many attempts would otherwise grow by one error per failure.
pub(crate) const MAX_ERRORS: usize = 10;

/// The longest error kept, in bytes; a longer one is cut at a character boundary and marked.
pub(crate) const MAX_ERROR_BYTES: usize = 16 * 1024;

fn clip_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes, cut)", &error[..end], error.len())
}
use crate::error::{ServiceError, ServiceResult};

/// How many times a lease operation retries its compare-and-swap.
pub(super) const TRIES: u32 = 32;

/// What a failed delivery led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// `Waiting` (retried, after `due_ms`) or `Failed` (dead-lettered).
    pub state: State,
    pub due_ms: i64,
    /// When the failure was recorded (the service's clock).
    pub now_ms: i64,
}

impl Failed {
    /// `waiting`, `delayed` (retried after a backoff) or `failed`.
    #[must_use]
    pub fn status(&self) -> &'static str {
        super::job::status(self.state, self.due_ms, self.now_ms)
    }
}

/// The most finished jobs one trim by age removes (BullMQ's limit per finishing job); a
/// backlog older than the age goes over the next acks.
const MAX_TRIMMED: usize = 1000;

/// What `clean` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cleaned {
    pub removed: Vec<String>,
}

/// A committed ack: whether it left a record in `completed` (not when it was deleted), and
/// which completed jobs to keep.
struct Acked {
    completed: bool,
    keep: Keep,
}

fn wrong_lease(rec: &JobRecord, now_ms: i64) -> ServiceError {
    ServiceError::WrongLease {
        job: rec.id.clone(),
        // "delayed" for a job waiting out a retry's backoff (its record says waiting).
        state: rec.status(now_ms),
    }
}

/// The next jobs leased after a committed ack: a failed reserve must not make the ack look
/// failed (a retried ack would get a lease conflict), so the worker gets no next job and
/// reserves again.
fn after_ack(queue: &str, jobs: ServiceResult<Vec<super::Reserved>>) -> Vec<super::Reserved> {
    jobs.unwrap_or_else(|e| {
        tracing::warn!(queue, error = %e, "ack committed but leasing the next jobs failed");
        Vec::new()
    })
}

fn check_lease(rec: &JobRecord, token: &str, now_ms: i64) -> ServiceResult<()> {
    if rec.state != State::Active || rec.lease_token.as_deref() != Some(token) {
        return Err(wrong_lease(rec, now_ms));
    }
    Ok(())
}

/// One ack of a batch ([`Queues::ack_many`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AckRequest {
    pub id: String,
    pub lease_token: String,
    pub result: Option<Value>,
}

/// The most acks one batch takes.
pub(crate) const MAX_ACKS: usize = 1000;

impl Queues {
    /// Reads the job and checks the lease token; returns the record, its version and member.
    async fn leased(
        &self,
        keys: &Keys,
        queue: &str,
        id: &str,
        token: &str,
    ) -> ServiceResult<(JobRecord, u64)> {
        let (rec, version) = self
            .read(keys, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("job {id} in queue {queue}")))?;
        check_lease(&rec, token, self.clock.now_ms())?;
        Ok((rec, version))
    }

    /// Marks a leased job completed, keeping `result`; with `remove_on_complete` (keep 0)
    /// the record is deleted instead. One transaction: the record (compare-and-swap on its
    /// version) and the member's move out of `active`.
    ///
    /// # Errors
    /// `NotFound`; `WrongLease` when the token is not the job's current lease; store errors.
    pub async fn ack(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        result: Option<Value>,
    ) -> ServiceResult<()> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let acked = match self
            .finish_step(&keys, queue, id, token, result.as_ref(), None)
            .await?
        {
            Some((acked, _)) => acked,
            None => self.ack_commit(&keys, queue, id, token, result).await?,
        };
        self.slot_freed(queue, &keys).await;
        self.ack_finish(&keys, acked).await
    }

    /// A job left `active`: on a queue with a concurrency cap, that frees a slot, so waiting
    /// reserves (here and on other nodes) look again now rather than at their next re-check.
    async fn slot_freed(&self, queue: &str, keys: &Keys) {
        if self.settings(queue).await.concurrency.is_some() {
            self.announce(queue, keys).await;
        }
    }

    /// The ack as one queue step, with the lease of the next jobs when `claim` names them:
    /// one store call. `None` when the record is in an older format (nothing was done; the
    /// caller takes the general path).
    async fn finish_step(
        &self,
        keys: &Keys,
        queue: &str,
        id: &str,
        token: &str,
        result: Option<&Value>,
        claim: Option<Claim>,
    ) -> ServiceResult<Option<(Acked, StepOutcome)>> {
        let step = QueueStep {
            keys: keys.clone(),
            finish: Some(Finish {
                id: id.to_owned(),
                token: token.to_owned(),
                now_ms: self.clock.now_ms(),
                result: Bytes::from(super::record::result_bytes(result)),
            }),
            claim,
            ..QueueStep::default()
        };
        let mut out = self.store.queue_step(&step).await?;
        let acked = match out.finished.take() {
            Some(Finished::Completed { keep }) => Acked {
                completed: true,
                keep,
            },
            Some(Finished::Deleted) => Acked {
                completed: false,
                keep: Keep::NONE,
            },
            Some(Finished::NotFound) => {
                return Err(ServiceError::not_found(format!(
                    "job {id} in queue {queue}"
                )))
            }
            Some(Finished::WrongLease(state)) => {
                // The record says whether a waiting job is delayed (a retry's backoff).
                let now = self.clock.now_ms();
                let state = match self.read(keys, id).await {
                    Ok(Some((rec, _))) => rec.status(now),
                    _ => super::record::from_store(state).as_str(),
                };
                return Err(ServiceError::WrongLease {
                    job: id.to_owned(),
                    state,
                });
            }
            Some(Finished::Unreadable) | None => return Ok(None),
        };
        Ok(Some((acked, out)))
    }

    /// Acks a leased job, then leases up to `max` more without waiting (BullMQ's
    /// `moveToFinished` fetching the next job): a worker's steady state is one call per job,
    /// and, on a queue without a rate limit or concurrency cap, one store call (a queue step:
    /// the ack, then the lease). A record of an older herd, or a capped queue, takes the
    /// general path: the lease check and the pause check side by side, the ack's commit, then
    /// the reserve's housekeeping and lease (the ack's clean-up runs beside them).
    ///
    /// # Errors
    /// As [`Queues::ack`] (nothing is reserved then) and [`Queues::reserve`].
    pub async fn ack_and_reserve(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        result: Option<Value>,
        max: usize,
        lease: Option<Duration>,
    ) -> ServiceResult<Vec<super::Reserved>> {
        // Bad reserve arguments are refused before the ack, so a refused call changed nothing.
        super::reserve::check_reserve(max, lease)?;
        check_queue(queue)?;
        let lease = lease.unwrap_or(self.config.default_lease);
        let keys = Keys::new(queue);
        let now = self.clock.now_ms();
        if super::reserve::plain(&self.settings(queue).await) {
            // The ack and the lease of the next jobs in one store call (BullMQ's
            // `moveToFinished`). The due chores that only add to `waiting` (schedules,
            // promotion) run first, so the lease sees what came due. Stalled recovery must
            // run after the ack (it would take back the job being acked if its lease just ran
            // out) and before the lease (a recovered job goes out in its turn): when it is
            // due (once a second per node), the ack and the lease are two steps around it.
            let deadline = now + millis(lease);
            let stalled = Chores {
                stalled: true,
                ..Chores::default()
            };
            let early = self.take_some_chores(queue, now, Chores::all_but(stalled));
            if let Err(e) = self.housekeep(queue, &keys, now, early).await {
                // Best effort: the ack does not depend on it, and the next reserve runs it.
                tracing::warn!(queue, error = %e, "housekeeping before an ack failed");
            }
            let recover = self.stalled_due(queue, now);
            let claim = (!recover).then(|| super::reserve::claim_of(max, deadline));
            if let Some((acked, out)) = self
                .finish_step(&keys, queue, id, token, result.as_ref(), claim)
                .await?
            {
                let next = async {
                    let mut jobs = self
                        .after_step(&keys, out.leased, out.others, deadline)
                        .await?;
                    let late = if recover {
                        self.take_some_chores(queue, now, stalled)
                    } else {
                        Chores::default()
                    };
                    // Jobs the step leased are the worker's now: a failed recovery must not
                    // drop them (the next reserve recovers).
                    if let Err(e) = self.housekeep(queue, &keys, now, late).await {
                        tracing::warn!(queue, error = %e, "stalled recovery after an ack failed");
                    }
                    if jobs.is_empty() && !out.paused {
                        jobs = self
                            .reserve_lease(queue, &keys, max, lease, now, early.or(late))
                            .await?;
                    }
                    Ok(jobs)
                };
                let (finished, jobs) = tokio::join!(self.ack_finish(&keys, acked), next);
                if let Err(e) = finished {
                    tracing::warn!(queue, job = id, error = %e, "ack committed but trimming completed jobs failed; the next ack trims");
                }
                return Ok(after_ack(queue, jobs));
            }
        }
        // Reads first, side by side: the lease (a stale or unknown one reserves nothing) and
        // the pause flag. Then the ack commits, and only then does the reserve do its
        // housekeeping and lease: stalled recovery must not take back the job being acked
        // (its lease may just have run out) before the ack lands.
        let (checked, paused) =
            tokio::join!(self.leased(&keys, queue, id, token), self.is_paused(&keys));
        let acked = self
            .ack_commit_from(&keys, queue, id, token, result, Some(checked?))
            .await?;
        let lease_next = async {
            if paused? {
                return Ok(Vec::new());
            }
            let chores = self.take_chores(queue, now);
            self.housekeep(queue, &keys, now, chores).await?;
            self.reserve_lease(queue, &keys, max, lease, now, chores)
                .await
        };
        let (finished, jobs) = tokio::join!(self.ack_finish(&keys, acked), lease_next);
        if let Err(e) = finished {
            // The ack is committed; what is left over is what a crash there leaves, and
            // recovery cleans it up. Failing now would strand the jobs just leased.
            tracing::warn!(queue, job = id, error = %e, "ack committed but its clean-up failed; stalled recovery finishes it");
        }
        Ok(after_ack(queue, jobs))
    }

    /// Acks several leased jobs (SQS's DeleteMessageBatch): their records are read in one
    /// call and each ack commits on its own, so one stale lease fails only its own ack.
    /// Returns each ack's outcome, in order.
    ///
    /// # Errors
    /// `Invalid` queue or more than 1000 acks; store errors reading the records. Each ack's
    /// own failure (`NotFound`, `WrongLease`, store errors) is in its slot of the answer.
    pub async fn ack_many(
        &self,
        queue: &str,
        acks: Vec<AckRequest>,
    ) -> ServiceResult<Vec<ServiceResult<()>>> {
        check_queue(queue)?;
        if acks.len() > MAX_ACKS {
            return Err(ServiceError::invalid(
                "acks",
                format!("{} acks in one call", acks.len()),
                "send at most 1000 acks per call",
            ));
        }
        let keys = Keys::new(queue);
        let record_keys: Vec<String> = acks.iter().map(|a| keys.job(&a.id)).collect();
        let records = self.store.get_many(&record_keys).await?;
        let now = self.clock.now_ms();
        let mut firsts = Vec::with_capacity(acks.len());
        for (ack, found) in acks.iter().zip(records) {
            firsts.push(match found {
                None => Err(ServiceError::not_found(format!(
                    "job {} in queue {queue}",
                    ack.id
                ))),
                Some(v) => super::record::decode(&v.value, &ack.id)
                    .map_err(|e| super::corrupt(keys.job(&ack.id), e))
                    .and_then(|rec| {
                        check_lease(&rec, &ack.lease_token, now).map(|()| (rec, v.version))
                    }),
            });
        }
        let ids: Vec<String> = acks.iter().map(|a| a.id.clone()).collect();
        let committed = match self.ack_together(&keys, &acks, &firsts).await? {
            Some(committed) => committed,
            None => self.ack_each(&keys, queue, acks, firsts).await,
        };
        let done: Vec<(&str, Keep)> = ids
            .iter()
            .zip(&committed)
            .filter_map(|(id, r)| {
                let a = r.as_ref().ok().filter(|a| a.completed)?;
                Some((id.as_str(), a.keep))
            })
            .collect();
        if let Err(e) = self.trim_batch(&keys, &done).await {
            tracing::warn!(queue, error = %e, "failed to trim completed jobs after a batch ack; the next ack trims");
        }
        if committed.iter().any(Result::is_ok) {
            self.slot_freed(queue, &keys).await;
        }
        Ok(committed.into_iter().map(|r| r.map(drop)).collect())
    }

    /// The usual batch (every lease current, each job once) in one transaction; `None` when
    /// the batch is not like that or a check failed (then each ack goes on its own).
    async fn ack_together(
        &self,
        keys: &Keys,
        acks: &[AckRequest],
        firsts: &[ServiceResult<(JobRecord, u64)>],
    ) -> ServiceResult<Option<Vec<ServiceResult<Acked>>>> {
        let mut ids = std::collections::HashSet::new();
        if acks.len() < 2 || !acks.iter().all(|a| ids.insert(a.id.as_str())) {
            return Ok(None);
        }
        let mut joined = Txn::new();
        let mut out = Vec::with_capacity(acks.len());
        for (ack, first) in acks.iter().zip(firsts) {
            let Ok((rec, version)) = first else {
                return Ok(None);
            };
            let (step, acked) = self.ack_step(keys, &mut rec.clone(), *version, ack.result.clone());
            joined = joined.and(step);
            out.push(Ok(acked));
        }
        Ok(self.commit(&joined).await?.then_some(out))
    }

    /// Each ack of a batch on its own (all at once), starting from the records read.
    async fn ack_each(
        &self,
        keys: &Keys,
        queue: &str,
        acks: Vec<AckRequest>,
        firsts: Vec<ServiceResult<(JobRecord, u64)>>,
    ) -> Vec<ServiceResult<Acked>> {
        let commits = acks.into_iter().zip(firsts).map(|(ack, first)| async move {
            let first = first?;
            self.ack_commit_from(
                keys,
                queue,
                &ack.id,
                &ack.lease_token,
                ack.result,
                Some(first),
            )
            .await
        });
        futures_util::future::join_all(commits).await
    }

    /// [`Queues::ack_many`] and a non-waiting reserve of up to `max` jobs (whatever the
    /// acks' outcomes): a batch worker's steady state is one call per batch. Without a
    /// concurrency cap the acks and the lease of waiting jobs run side by side (on the
    /// embedded store their writes share commits), and the reserve's housekeeping follows the
    /// acks; with a cap, the acks go first to free their slots. If the acks fail as a whole
    /// (the store), the call fails and jobs it leased meanwhile are re-delivered when their
    /// lease runs out.
    ///
    /// # Errors
    /// As [`Queues::ack_many`] and [`Queues::reserve`].
    pub async fn ack_many_and_reserve(
        &self,
        queue: &str,
        acks: Vec<AckRequest>,
        max: usize,
        lease: Option<Duration>,
    ) -> ServiceResult<(Vec<ServiceResult<()>>, Vec<super::Reserved>)> {
        super::reserve::check_reserve(max, lease)?;
        check_queue(queue)?;
        let lease = lease.unwrap_or(self.config.default_lease);
        let keys = Keys::new(queue);
        let now = self.clock.now_ms();
        let lease_next = async {
            match self.reserve_prepare(queue, &keys, now).await? {
                Some(ran) => self.reserve_lease(queue, &keys, max, lease, now, ran).await,
                None => Ok(Vec::new()),
            }
        };
        if self.settings(queue).await.concurrency.is_some() {
            let acked = self.ack_many(queue, acks).await?;
            return Ok((acked, after_ack(queue, lease_next.await)));
        }
        // The acks and a plain lease of what is waiting run side by side; housekeeping (which
        // may take back a job whose lease just ran out) waits for the acks, and so does a
        // second look when nothing was waiting.
        let first = async {
            if self.is_paused(&keys).await? {
                return Ok(None);
            }
            self.lease_and_claim(queue, &keys, max, lease, now)
                .await
                .map(Some)
        };
        let (acked, first) = tokio::join!(self.ack_many(queue, acks), first);
        let acked = acked?;
        // The acks are committed: from here a failure only means no next jobs.
        let next = async {
            let Some(first) = first? else {
                return Ok(Vec::new());
            };
            let chores = self.take_chores(queue, now);
            self.housekeep(queue, &keys, now, chores).await?;
            if !first.is_empty() {
                return Ok(first);
            }
            self.reserve_lease(queue, &keys, max, lease, now, chores)
                .await
        };
        Ok((acked, after_ack(queue, next.await)))
    }

    /// The ack's commit point: the record is deleted (`remove_on_complete`) or written
    /// completed under a new generation, and its member leaves `active`, in one transaction.
    async fn ack_commit(
        &self,
        keys: &Keys,
        queue: &str,
        id: &str,
        token: &str,
        result: Option<Value>,
    ) -> ServiceResult<Acked> {
        self.ack_commit_from(keys, queue, id, token, result, None)
            .await
    }

    /// `ack_commit`, starting from a record the caller already read (a batch reads all of
    /// its records in one call); later tries read again.
    async fn ack_commit_from(
        &self,
        keys: &Keys,
        queue: &str,
        id: &str,
        token: &str,
        result: Option<Value>,
        mut first: Option<(JobRecord, u64)>,
    ) -> ServiceResult<Acked> {
        for attempt in 0..TRIES {
            let (mut rec, version) = match first.take() {
                Some((rec, version)) => {
                    check_lease(&rec, token, self.clock.now_ms())?;
                    (rec, version)
                }
                None => self.leased(keys, queue, id, token).await?,
            };
            let (step, acked) = self.ack_step(keys, &mut rec, version, result.clone());
            if self.commit(&step).await? {
                return Ok(acked);
            }
            crate::sessions::backoff(attempt).await;
        }
        Err(ServiceError::Contended {
            what: format!("job {id}"),
            tries: TRIES,
        })
    }

    /// The transaction that acks a leased record read at `version`: the record deleted
    /// (`remove_on_complete`) or written completed under a new generation, and its member out
    /// of `active`.
    fn ack_step(
        &self,
        keys: &Keys,
        rec: &mut JobRecord,
        version: u64,
        result: Option<Value>,
    ) -> (Txn, Acked) {
        let old = rec.member();
        let key = keys.job(&rec.id);
        let step = Txn::new().check(&key, Expect::Version(version));
        let completed = !rec.keep_completed.none();
        let step = if completed {
            let now = self.clock.now_ms();
            rec.state = State::Completed;
            rec.finished_ms = Some(now);
            rec.lease_token = None;
            rec.result = result;
            rec.next_generation();
            step.put(&key, encode(rec), None)
                .zadd(keys.completed(), vec![(rec.member(), score(now))])
        } else {
            step.delete(&key)
        };
        let acked = Acked {
            completed,
            keep: rec.keep_completed,
        };
        (step.zrem(keys.active(), vec![old]), acked)
    }

    /// After the commit: trim `completed` to what the job's `remove_on_complete` keeps.
    async fn ack_finish(&self, keys: &Keys, acked: Acked) -> ServiceResult<()> {
        if !acked.completed {
            return Ok(());
        }
        self.trim(keys, State::Completed, acked.keep).await
    }

    /// Records a failed delivery: retried after its backoff while attempts remain and `retry`
    /// is true, otherwise dead-lettered.
    ///
    /// # Errors
    /// `NotFound`; `WrongLease`; store errors.
    pub async fn fail(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        error: &str,
        retry: bool,
    ) -> ServiceResult<Failed> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        for attempt in 0..TRIES {
            let (mut rec, version) = self.leased(&keys, queue, id, token).await?;
            let old = rec.member();
            let now = self.clock.now_ms();
            let unit: f64 = rand::random();
            let error = clip_error(error);
            rec.errors.push(error.clone());
            if rec.errors.len() > MAX_ERRORS {
                let extra = rec.errors.len() - MAX_ERRORS;
                rec.errors.drain(..extra);
            }
            rec.failed_reason = Some(error);
            rec.lease_token = None;
            match after_fail(&rec, retry, now, unit) {
                AfterFail::Retry { due_ms } => {
                    rec.state = State::Waiting;
                    rec.due_ms = due_ms;
                }
                AfterFail::Dead => {
                    rec.state = State::Failed;
                    rec.finished_ms = Some(now);
                }
            }
            rec.next_generation();
            let key = keys.job(id);
            let step = Txn::new().check(&key, Expect::Version(version));
            let step = if rec.state == State::Failed && rec.keep_failed.none() {
                step.delete(&key)
            } else {
                let (set, mut s) = Self::place(&keys, &rec, now);
                // Ready again at once: behind the jobs already waiting (a retry with a
                // backoff takes its place when it comes due).
                if set == keys.waiting() {
                    s = Self::requeue_score(&rec, self.tail_seq(&keys).await?);
                }
                step.put(&key, encode(&rec), None)
                    .zadd(set, vec![(rec.member(), s)])
            };
            if !self.commit(&step.zrem(keys.active(), vec![old])).await? {
                crate::sessions::backoff(attempt).await;
                continue;
            }
            if rec.state == State::Failed {
                // The fail is committed: a trim that fails is the next finishing job's to do.
                if let Err(e) = self.trim(&keys, State::Failed, rec.keep_failed).await {
                    tracing::warn!(queue, job = id, error = %e, "failed to trim dead letters after a fail; the next one trims");
                }
                self.slot_freed(queue, &keys).await;
            } else if rec.due_ms <= now {
                self.announce(queue, &keys).await;
            } else {
                self.slot_freed(queue, &keys).await;
            }
            return Ok(Failed {
                state: rec.state,
                due_ms: rec.due_ms,
                now_ms: now,
            });
        }
        Err(ServiceError::Contended {
            what: format!("job {id}"),
            tries: TRIES,
        })
    }

    /// Extends a lease to `lease` from now (`None`: the default lease, `[services] job_lease`,
    /// as `reserve` takes); returns the new deadline (ms).
    ///
    /// # Errors
    /// `NotFound`; `WrongLease`; store errors.
    pub async fn extend(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        lease: Option<Duration>,
    ) -> ServiceResult<i64> {
        check_queue(queue)?;
        let lease = lease.unwrap_or(self.config.default_lease);
        super::reserve::check_lease(lease)?;
        let keys = Keys::new(queue);
        for attempt in 0..TRIES {
            let (mut rec, version) = self.leased(&keys, queue, id, token).await?;
            rec.lease_until_ms = self.clock.now_ms() + millis(lease);
            let key = keys.job(id);
            let step = Txn::new()
                .check(&key, Expect::Version(version))
                .put(&key, encode(&rec), None)
                .zadd(
                    keys.active(),
                    vec![(rec.member(), score(rec.lease_until_ms))],
                );
            if !self.commit(&step).await? {
                crate::sessions::backoff(attempt).await;
                continue;
            }
            return Ok(rec.lease_until_ms);
        }
        Err(ServiceError::Contended {
            what: format!("job {id}"),
            tries: TRIES,
        })
    }

    /// Drops the finished jobs `keep` does not keep: those finished longer than its age ago
    /// (at most [`MAX_TRIMMED`] a call), then the oldest beyond its count.
    pub(crate) async fn trim(&self, keys: &Keys, state: State, keep: Keep) -> ServiceResult<()> {
        // Keeping none removes the finishing job itself (its step deletes the record), never
        // the jobs others kept: BullMQ's `removeOnFail: true` removes only that job.
        if keep.all() || keep.none() {
            return Ok(());
        }
        let set = if state == State::Completed {
            keys.completed()
        } else {
            keys.failed()
        };
        // Finished sets are scored by the time each job finished: an age trims from the
        // oldest up to `now - age` (BullMQ removes at most 1000 per finishing job too).
        if let Some(age) = keep.age_ms {
            let age = i64::try_from(age).unwrap_or(i64::MAX);
            let before = self.clock.now_ms().saturating_sub(age).saturating_sub(1);
            let old = self
                .store
                .zrange_by_score(&set, f64::NEG_INFINITY, score(before), MAX_TRIMMED)
                .await?;
            self.remove_members(keys, &set, old.into_iter().map(|(m, _)| m))
                .await?;
        }
        let Some(count) = keep.count else {
            return Ok(());
        };
        let n = self.store.zcard(&set).await?;
        if n <= count {
            return Ok(());
        }
        let extra = usize::try_from(n - count).unwrap_or(usize::MAX);
        let oldest = self
            .store
            .zrange_by_score(&set, f64::NEG_INFINITY, f64::INFINITY, extra)
            .await?;
        self.remove_members(keys, &set, oldest.into_iter().map(|(m, _)| m))
            .await?;
        Ok(())
    }

    /// Trims `completed` after a batch of acks (`done`: the ids kept in it, in the batch's
    /// order) as if each job had finished on its own, each trim by its own
    /// `remove_on_complete`, as BullMQ trims when each job completes: a job keeping 1 early in
    /// a batch does not remove the jobs acked after it.
    async fn trim_batch(&self, keys: &Keys, done: &[(&str, Keep)]) -> ServiceResult<()> {
        // Every job of the batch finished now: an age trims only what finished before it, and
        // the smallest age trims all that the others would.
        if let Some(age) = done.iter().filter_map(|(_, k)| k.age_ms).min() {
            let by_age = Keep {
                count: None,
                age_ms: Some(age),
            };
            self.trim(keys, State::Completed, by_age).await?;
        }
        let set = keys.completed();
        let n = self.store.zcard(&set).await?;
        let before = n.saturating_sub(done.len() as u64);
        // After the i-th job of the batch finished, the set held `before + i + 1` and its
        // count trim removed the oldest beyond its count; trims take from the oldest, so
        // together they remove the oldest `front`.
        let mut front = 0u64;
        for (i, (_, keep)) in done.iter().enumerate() {
            if let Some(count) = keep.count {
                front = front.max((before + i as u64 + 1).saturating_sub(count));
            }
        }
        if front == 0 {
            return Ok(());
        }
        // The oldest are those finished before the batch (by score), then the batch's own in
        // its order (their scores tie at the same millisecond).
        let ours: std::collections::HashSet<&str> = done.iter().map(|(id, _)| *id).collect();
        let front = usize::try_from(front).unwrap_or(usize::MAX);
        let mut members: Vec<String> = self
            .store
            .zrange_by_score(
                &set,
                f64::NEG_INFINITY,
                f64::INFINITY,
                front.saturating_add(done.len()),
            )
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| super::job::member_id(m).is_none_or(|id| !ours.contains(id)))
            .take(front)
            .collect();
        for (id, _) in done.iter().take(front - members.len()) {
            if let Some((rec, _)) = self.read(keys, id).await? {
                if rec.state == State::Completed {
                    members.push(rec.member());
                }
            }
        }
        self.remove_members(keys, &set, members.into_iter()).await?;
        Ok(())
    }

    /// Deletes the records of `members` (if the member is still current) and the members.
    async fn remove_members(
        &self,
        keys: &Keys,
        set: &str,
        members: impl Iterator<Item = String>,
    ) -> ServiceResult<Vec<String>> {
        let mut removed = Vec::new();
        for member in members {
            if let Some(id) = super::job::member_id(&member) {
                if let Some((rec, version)) = self.read(keys, id).await? {
                    if rec.member() == member
                        && self
                            .store
                            .delete(&keys.job(id), Expect::Version(version))
                            .await?
                    {
                        removed.push(id.to_owned());
                    }
                }
            }
            self.store.zrem(set, &[member]).await?;
        }
        Ok(removed)
    }

    /// Dead-lettered jobs, oldest first (the first `limit`, at most [`super::MAX_LISTED`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn dead_letters(&self, queue: &str, limit: usize) -> ServiceResult<Vec<JobRecord>> {
        self.list(queue, "failed", 0, limit.min(super::MAX_LISTED))
            .await
    }

    async fn dead(&self, keys: &Keys, queue: &str, id: &str) -> ServiceResult<(JobRecord, u64)> {
        match self.read(keys, id).await? {
            Some((rec, v)) if rec.state == State::Failed => Ok((rec, v)),
            _ => Err(ServiceError::not_found(format!(
                "dead-lettered job {id} in queue {queue}"
            ))),
        }
    }

    /// Puts a dead-lettered job back in `waiting` with its attempts reset.
    ///
    /// # Errors
    /// `NotFound` when the job is not dead-lettered; store errors.
    pub async fn retry_dead(&self, queue: &str, id: &str) -> ServiceResult<()> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        for attempt in 0..TRIES {
            let (mut rec, version) = self.dead(&keys, queue, id).await?;
            let old = rec.member();
            let now = self.clock.now_ms();
            rec.state = State::Waiting;
            rec.due_ms = now;
            rec.attempt = 0;
            rec.stalled = 0;
            rec.finished_ms = None;
            // BullMQ's retry clears `failedReason`; the errors stay as the job's history.
            rec.failed_reason = None;
            rec.next_generation();
            let key = keys.job(id);
            let step = Txn::new()
                .check(&key, Expect::Version(version))
                .put(&key, encode(&rec), None)
                .zadd(keys.waiting(), vec![(rec.member(), rec.waiting_score())])
                .zrem(keys.failed(), vec![old]);
            if !self.commit(&step).await? {
                crate::sessions::backoff(attempt).await;
                continue;
            }
            self.announce(queue, &keys).await;
            return Ok(());
        }
        Err(ServiceError::Contended {
            what: format!("job {id}"),
            tries: TRIES,
        })
    }

    /// Deletes a dead-lettered job.
    ///
    /// # Errors
    /// `NotFound` when the job is not dead-lettered; store errors.
    pub async fn delete_dead(&self, queue: &str, id: &str) -> ServiceResult<()> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let (rec, version) = self.dead(&keys, queue, id).await?;
        let key = keys.job(id);
        let step = Txn::new()
            .check(&key, Expect::Version(version))
            .delete(&key)
            .zrem(keys.failed(), vec![rec.member()]);
        if !self.commit(&step).await? {
            return Err(ServiceError::Contended {
                what: format!("job {id}"),
                tries: 1,
            });
        }
        Ok(())
    }

    /// Removes up to `limit` `completed` or `failed` jobs that finished more than `grace` ago
    /// (BullMQ `clean`).
    ///
    /// # Errors
    /// `Invalid` state; store errors.
    pub async fn clean(
        &self,
        queue: &str,
        state: &str,
        grace: Duration,
        limit: usize,
    ) -> ServiceResult<Cleaned> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let set = match state {
            "completed" => keys.completed(),
            "failed" => keys.failed(),
            other => {
                return Err(ServiceError::invalid(
                    "state",
                    format!("cannot clean {other:?}"),
                    "clean \"completed\" or \"failed\" jobs",
                ))
            }
        };
        let before = self.clock.now_ms() - millis(grace);
        let old = self
            .store
            .zrange_by_score(&set, f64::NEG_INFINITY, score(before), limit)
            .await?;
        let removed = self
            .remove_members(&keys, &set, old.into_iter().map(|(m, _)| m))
            .await?;
        Ok(Cleaned { removed })
    }
}
