//! Reserving jobs: materialise due schedules, promote due delayed jobs, recover stalled ones
//! (each at most once per interval per node, see `housekeep`), then lease waiting ones with
//! one atomic `zmove(waiting → active)`. `reserve` long-polls: it waits for an add on this
//! node or a message from another (`herd:{q:N}:events`), never longer than `wait`, and
//! re-checks at least once a second for jobs that became due.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use herd_store::queue::{Claim, Leased, QueueStep};
use herd_store::{Backend as _, Expect, Txn};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument as _;

use super::housekeep::Chores;
use super::job::{member_id, JobRecord, State};
use super::{check_queue, score, Keys, Queues};
use crate::clock::millis;
use crate::error::{ServiceError, ServiceResult};
use crate::ids;

/// A leased job, as a worker receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reserved {
    pub id: String,
    pub name: String,
    pub data: Value,
    /// Delivery number, 1 for the first.
    pub attempt: u32,
    /// Proves the lease to ack, fail and extend.
    pub lease_token: String,
    pub lease_until_ms: i64,
}

/// Work per reserve on promotion and recovery (the rest waits for the next reserve).
const SWEEP: usize = 100;
/// The most jobs one reserve hands out.
pub(crate) const MAX_RESERVE: usize = 1000;

/// A queue without a rate limit or concurrency cap: its reserve is one queue step.
pub(super) fn plain(settings: &super::QueueSettings) -> bool {
    settings.limiter.is_none() && settings.concurrency.is_none()
}

/// A claim of up to `max` jobs, each with a fresh lease token.
pub(super) fn claim_of(max: usize, deadline_ms: i64) -> Claim {
    Claim {
        deadline_ms,
        tokens: (0..max).map(|_| ids::random_id()).collect(),
    }
}

/// Checks a reserve's `max` and `lease`.
pub(crate) fn check_reserve(max: usize, lease: Option<Duration>) -> ServiceResult<()> {
    if max == 0 || max > MAX_RESERVE {
        return Err(ServiceError::invalid(
            "max",
            format!("{max} is outside 1..={MAX_RESERVE}"),
            "ask for 1 to 1000 jobs per reserve",
        ));
    }
    lease.map_or(Ok(()), check_lease)
}

/// Checks a lease's length (a reserve's, an extend's).
pub(crate) fn check_lease(lease: Duration) -> ServiceResult<()> {
    if lease < Duration::from_millis(1) {
        return Err(ServiceError::invalid(
            "lease",
            "a lease must be at least 1ms",
            "pass e.g. \"lease\": \"30s\"",
        ));
    }
    Ok(())
}

impl Queues {
    /// Leases up to `max` jobs for `lease`, waiting up to `wait` for one to arrive.
    ///
    /// # Errors
    /// `Invalid` arguments; store errors.
    pub async fn reserve(
        &self,
        queue: &str,
        max: usize,
        lease: Option<Duration>,
        wait: Duration,
    ) -> ServiceResult<Vec<Reserved>> {
        check_queue(queue)?;
        check_reserve(max, lease)?;
        let lease = lease.unwrap_or(self.config.default_lease);
        let deadline = tokio::time::Instant::now() + wait;
        let local = self.local(queue);
        if !wait.is_zero() {
            self.listen(queue, &local);
        }
        loop {
            // Registered before looking, so an add between the look and the wait is not missed.
            let notified = local.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let jobs = self.reserve_once(queue, max, lease).await?;
            let now = tokio::time::Instant::now();
            if !jobs.is_empty() || now >= deadline {
                return Ok(jobs);
            }
            // Wake when the first delayed job (a `delay`, a backoff) comes due, and at least
            // once a second (other nodes' schedules, a store that missed a message).
            let recheck = (now + self.next_due_in(queue).await)
                .min(now + Duration::from_secs(1))
                .min(deadline);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(recheck) => {}
                () = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// How long until the first delayed job of `queue` is due (at least 1 ms; a second when
    /// none is delayed or the store cannot say).
    async fn next_due_in(&self, queue: &str) -> Duration {
        let first = self
            .store
            .zrange_by_score(
                &Keys::new(queue).delayed(),
                f64::NEG_INFINITY,
                f64::INFINITY,
                1,
            )
            .await;
        match first.ok().and_then(|f| f.first().map(|(_, due)| *due)) {
            Some(due) => {
                let ms = (due - score(self.clock.now_ms())).clamp(1.0, 1_000.0);
                Duration::from_micros((ms * 1_000.0) as u64)
            }
            None => Duration::from_secs(1),
        }
    }

    /// Subscribes once per queue to other nodes' add messages.
    fn listen(&self, queue: &str, local: &Arc<super::Local>) {
        if local.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let store = Arc::clone(&self.store);
        let local = Arc::clone(local);
        let channel = Keys::new(queue).channel();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(
            async move {
                loop {
                    let sub = tokio::select! {
                        () = shutdown.cancelled() => return,
                        s = store.subscribe(&channel) => s,
                    };
                    if let Ok(mut stream) = sub {
                        loop {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                m = stream.next() => match m {
                                    Some(_) => local.notify.notify_waiters(),
                                    None => break,
                                },
                            }
                        }
                    }
                    // Reserves still re-check every second meanwhile.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            .instrument(tracing::info_span!("queue_listener", queue = %queue)),
        );
    }

    /// One non-waiting reserve. Housekeeping runs when its interval has passed (see
    /// `housekeep`); when nothing was waiting, the chores this call skipped run at once and,
    /// if they moved anything, the reserve looks again, so a job that just came due (or
    /// stalled) is handed out now rather than one interval later.
    async fn reserve_once(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> ServiceResult<Vec<Reserved>> {
        let keys = Keys::new(queue);
        let now = self.clock.now_ms();
        match self.reserve_prepare(queue, &keys, now).await? {
            Some(ran) => self.reserve_lease(queue, &keys, max, lease, now, ran).await,
            None => Ok(Vec::new()),
        }
    }

    /// A reserve's first half, reads only unless housekeeping finds work: the chores that
    /// are due, and the pause check beside them. `None` when the queue is paused, else the
    /// chores it ran.
    /// The chores due on this node for `queue` (marked as run).
    pub(super) fn take_chores(&self, queue: &str, now: i64) -> Chores {
        self.local(queue)
            .housekeeping
            .lock()
            .unwrap()
            .take(now, Chores::default())
    }

    /// The chores among `only` due on this node for `queue` (marked as run).
    pub(super) fn take_some_chores(&self, queue: &str, now: i64, only: Chores) -> Chores {
        self.local(queue)
            .housekeeping
            .lock()
            .unwrap()
            .take_only(now, only)
    }

    /// Whether stalled recovery is due on this node for `queue` (nothing is marked).
    pub(super) fn stalled_due(&self, queue: &str, now: i64) -> bool {
        let mut peek = *self.local(queue).housekeeping.lock().unwrap();
        peek.take(now, Chores::default()).stalled
    }

    pub(super) async fn reserve_prepare(
        &self,
        queue: &str,
        keys: &Keys,
        now: i64,
    ) -> ServiceResult<Option<Chores>> {
        let ran = self.take_chores(queue, now);
        let (done, paused) =
            tokio::join!(self.housekeep(queue, keys, now, ran), self.is_paused(keys));
        done?;
        Ok((!paused?).then_some(ran))
    }

    /// A reserve's second half: lease what is waiting; if nothing is, run the chores the
    /// first half skipped and, if they moved anything, look once more.
    pub(super) async fn reserve_lease(
        &self,
        queue: &str,
        keys: &Keys,
        max: usize,
        lease: Duration,
        now: i64,
        ran: Chores,
    ) -> ServiceResult<Vec<Reserved>> {
        let jobs = self.lease_and_claim(queue, keys, max, lease, now).await?;
        if !jobs.is_empty() {
            return Ok(jobs);
        }
        let skipped = Chores::all_but(ran);
        let forced = self
            .local(queue)
            .housekeeping
            .lock()
            .unwrap()
            .take(now, skipped);
        if self.housekeep(queue, keys, now, forced).await? == 0 {
            return Ok(jobs);
        }
        self.lease_and_claim(queue, keys, max, lease, now).await
    }

    /// Runs `chores`; returns how many members or schedules they handled.
    pub(super) async fn housekeep(
        &self,
        queue: &str,
        keys: &Keys,
        now: i64,
        chores: Chores,
    ) -> ServiceResult<usize> {
        let mut handled = 0;
        if chores.schedules {
            handled += self.run_schedules(queue, keys, now).await?;
        }
        if chores.promote {
            handled += self.promote_due(keys, now).await?;
        }
        if chores.stalled {
            handled += self.recover_stalled(keys, now).await?;
        }
        Ok(handled)
    }

    /// Moves waiting members to `active` (under the concurrency gate if the queue has a cap)
    /// and turns them into leased jobs.
    pub(super) async fn lease_and_claim(
        &self,
        queue: &str,
        keys: &Keys,
        max: usize,
        lease: Duration,
        now: i64,
    ) -> ServiceResult<Vec<Reserved>> {
        let settings = self.settings(queue).await;
        let deadline = now + millis(lease);
        if plain(&settings) {
            let step = QueueStep {
                keys: keys.clone(),
                claim: Some(claim_of(max, deadline)),
                ..QueueStep::default()
            };
            let out = self.store.queue_step(&step).await?;
            return self
                .after_step(keys, out.leased, out.others, deadline)
                .await;
        }
        let gate = match settings.concurrency {
            Some(_) => match self.take_gate(keys).await? {
                Some(token) => Some(token),
                None => return Ok(Vec::new()), // another node is reserving; the loop retries
            },
            None => None,
        };
        let result = self.lease_waiting(keys, &settings, max, lease, now).await;
        if let Some(token) = gate {
            self.drop_gate(keys, &token).await;
        }
        let moved = result?;
        self.claim_many(keys, moved, deadline).await
    }

    /// The jobs a queue step leased, then the members it moved to `active` without leasing
    /// them, each sorted out on its own (leased if its record turns out to be waiting for it,
    /// repaired or dropped otherwise).
    pub(super) async fn after_step(
        &self,
        keys: &Keys,
        leased: Vec<Leased>,
        others: Vec<String>,
        deadline: i64,
    ) -> ServiceResult<Vec<Reserved>> {
        let mut out = Vec::with_capacity(leased.len());
        for job in leased {
            let id = job.id.clone();
            match super::record::reserved(job) {
                Ok(job) => out.push(job),
                // The other jobs are not held back by it; when its lease runs out, stalled
                // recovery finds it unreadable and takes it out of `active`.
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "leased job has an unreadable body; skipped");
                }
            }
        }
        // The jobs above are leased already: a member that cannot be sorted out now must not
        // take them down with it (it stays in `active`; stalled recovery looks at it again).
        for member in others {
            match self.claim(keys, &member, deadline).await {
                Ok(job) => out.extend(job),
                Err(e) => {
                    tracing::warn!(%member, error = %e, "could not sort out a moved member; stalled recovery will");
                }
            }
        }
        Ok(out)
    }

    /// Claims moved members: their records are read in one call and the usual case (a
    /// waiting record that names the member) is leased by a compare-and-swap, all at once;
    /// anything else, or a lost race, goes through `claim` one by one.
    async fn claim_many(
        &self,
        keys: &Keys,
        moved: Vec<String>,
        deadline: i64,
    ) -> ServiceResult<Vec<Reserved>> {
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let record_keys: Vec<String> = moved
            .iter()
            .map(|m| keys.job(member_id(m).unwrap_or_default()))
            .collect();
        let records = self.store.get_many(&record_keys).await?;
        // The usual case: each member's record is waiting and names it.
        let usual: Vec<Option<(JobRecord, u64)>> = moved
            .iter()
            .zip(records)
            .map(|(member, found)| {
                let v = found?;
                let id = member_id(member)?;
                let rec = super::record::decode(&v.value, id).ok()?;
                (rec.state == State::Waiting && rec.member() == *member).then_some((rec, v.version))
            })
            .collect();
        if usual.len() > 1 && usual.iter().all(Option::is_some) {
            // All of them in one transaction; a lost race sends each through on its own.
            let mut joined = Txn::new();
            let mut out = Vec::with_capacity(usual.len());
            for (rec, version) in usual.iter().flatten() {
                let (step, job) = Self::lease_step(keys, rec.clone(), *version, deadline);
                joined = joined.and(step);
                out.push(job);
            }
            if self.commit(&joined).await? {
                return Ok(out);
            }
        }
        let attempts = moved.iter().zip(usual).map(|(member, usual)| async move {
            let leased = match usual {
                Some((rec, version)) => self.lease_record(keys, rec, version, deadline).await?,
                None => None,
            };
            match leased {
                Some(job) => Ok(Some(job)),
                None => self.claim(keys, member, deadline).await,
            }
        });
        let mut out = Vec::with_capacity(moved.len());
        for job in futures_util::future::join_all(attempts).await {
            out.extend(job?);
        }
        Ok(out)
    }

    /// The transaction that leases a waiting record read at `version`, and the job it hands
    /// out once committed.
    fn lease_step(keys: &Keys, mut rec: JobRecord, version: u64, deadline: i64) -> (Txn, Reserved) {
        let token = ids::random_id();
        rec.state = State::Active;
        rec.attempt += 1;
        rec.lease_token = Some(token.clone());
        rec.lease_until_ms = deadline;
        let key = keys.job(&rec.id);
        let step =
            Txn::new()
                .check(&key, Expect::Version(version))
                .put(&key, super::encode(&rec), None);
        let job = Reserved {
            id: rec.id,
            name: rec.name,
            data: rec.data,
            attempt: rec.attempt,
            lease_token: token,
            lease_until_ms: deadline,
        };
        (step, job)
    }

    /// Leases a waiting record at `version`; `None` when another writer got there first.
    async fn lease_record(
        &self,
        keys: &Keys,
        rec: JobRecord,
        version: u64,
        deadline: i64,
    ) -> ServiceResult<Option<Reserved>> {
        let (step, job) = Self::lease_step(keys, rec, version, deadline);
        Ok(self.commit(&step).await?.then_some(job))
    }

    /// Moves up to `max` waiting members to `active`, within the limiter and concurrency cap.
    async fn lease_waiting(
        &self,
        keys: &Keys,
        settings: &super::QueueSettings,
        max: usize,
        lease: Duration,
        now: i64,
    ) -> ServiceResult<Vec<String>> {
        let mut allowed = max;
        if let Some(cap) = settings.concurrency {
            let active = self.store.zcard(&keys.active()).await?;
            allowed =
                allowed.min(usize::try_from(u64::from(cap).saturating_sub(active)).unwrap_or(0));
        }
        if allowed == 0 {
            return Ok(Vec::new());
        }
        let mut grant = None;
        if let Some(limiter) = settings.limiter {
            let waiting = usize::try_from(self.store.zcard(&keys.waiting()).await?).unwrap_or(0);
            let window = keys.set("window");
            let g = super::window::take(&self.store, &window, limiter, allowed.min(waiting), now)
                .await?;
            allowed = g.jobs;
            grant = Some((limiter, window, g));
        }
        if allowed == 0 {
            return Ok(Vec::new());
        }
        let moved = self
            .store
            .zmove(
                &keys.waiting(),
                &keys.active(),
                f64::INFINITY,
                allowed,
                score(now + millis(lease)),
            )
            .await;
        if let Some((limiter, window, g)) = grant {
            // Jobs another worker moved first were not reserved here: not counted.
            let unused = allowed - moved.as_ref().map_or(0, Vec::len);
            super::window::give_back(&self.store, &window, limiter, g, unused, now).await?;
        }
        Ok(moved?.into_iter().map(|(m, _)| m).collect())
    }

    /// The concurrency cap needs the count and the move to be one step across nodes: a short
    /// store lock around them. `None` when another node holds it.
    async fn take_gate(&self, keys: &Keys) -> ServiceResult<Option<String>> {
        let token = ids::random_id();
        for attempt in 0..20u32 {
            if self
                .store
                .acquire(
                    &keys.set("reserve-gate"),
                    &keys.set("reserve-gate-fence"),
                    Bytes::from(token.clone()),
                    Duration::from_secs(5),
                )
                .await?
                .is_some()
            {
                return Ok(Some(token));
            }
            crate::sessions::backoff(attempt).await;
        }
        Ok(None)
    }

    async fn drop_gate(&self, keys: &Keys, token: &str) {
        let key = keys.set("reserve-gate");
        if let Ok(Some(v)) = self.store.get(&key).await {
            if v.value.as_ref() == token.as_bytes() {
                // If this fails the gate's 5 s TTL frees it.
                let _ = self.store.delete(&key, Expect::Version(v.version)).await;
            }
        }
    }

    /// Turns a member moved into `active` into a leased job (record: active, new token).
    async fn claim(
        &self,
        keys: &Keys,
        member: &str,
        deadline: i64,
    ) -> ServiceResult<Option<Reserved>> {
        for _ in 0..16 {
            let Some(id) = member_id(member) else {
                self.store
                    .zrem(&keys.active(), &[member.to_owned()])
                    .await?;
                return Ok(None);
            };
            let Some((rec, version)) = self.read(keys, id).await? else {
                self.store
                    .zrem(&keys.active(), &[member.to_owned()])
                    .await?;
                return Ok(None);
            };
            if rec.member() != member {
                self.repair(keys, &rec, self.clock.now_ms()).await?;
                self.store
                    .zrem(&keys.active(), &[member.to_owned()])
                    .await?;
                return Ok(None);
            }
            if rec.state == State::Active {
                // A duplicate of a leased job's member was moved: keep its real deadline.
                self.store
                    .zadd(
                        &keys.active(),
                        &[(member.to_owned(), score(rec.lease_until_ms))],
                    )
                    .await?;
                return Ok(None);
            }
            if rec.state != State::Waiting {
                self.repair(keys, &rec, self.clock.now_ms()).await?;
                self.store
                    .zrem(&keys.active(), &[member.to_owned()])
                    .await?;
                return Ok(None);
            }
            if let Some(job) = self.lease_record(keys, rec, version, deadline).await? {
                return Ok(Some(job));
            }
        }
        // Still contended: stalled recovery re-delivers it after `deadline`.
        Ok(None)
    }

    /// Moves delayed jobs whose time has come to `waiting`; returns how many it looked at.
    async fn promote_due(&self, keys: &Keys, now: i64) -> ServiceResult<usize> {
        let due = self
            .store
            .zrange_by_score(&keys.delayed(), f64::NEG_INFINITY, score(now), SWEEP)
            .await?;
        let handled = due.len();
        // A job that comes due joins the end of its priority group (BullMQ appends promoted
        // jobs to the wait list), not its place by order of adding.
        let tail = if due.is_empty() {
            0
        } else {
            self.tail_seq(keys).await?
        };
        for (member, _) in due {
            if let Some(rec) = self.current(keys, &member).await? {
                if rec.state == State::Waiting {
                    let at = Self::requeue_score(&rec, tail);
                    self.store
                        .zadd(&keys.waiting(), &[(member.clone(), at)])
                        .await?;
                } else {
                    self.repair(keys, &rec, now).await?;
                }
            }
            self.store.zrem(&keys.delayed(), &[member]).await?;
        }
        Ok(handled)
    }

    /// The record whose current member is `member`; repairs and returns `None` for a stale
    /// or orphaned member (the caller removes it from its set).
    async fn current(&self, keys: &Keys, member: &str) -> ServiceResult<Option<JobRecord>> {
        let Some(id) = member_id(member) else {
            return Ok(None);
        };
        match self.read(keys, id).await? {
            None => Ok(None),
            Some((rec, _)) if rec.member() != member => {
                self.repair(keys, &rec, self.clock.now_ms()).await?;
                Ok(None)
            }
            Some((rec, _)) => Ok(Some(rec)),
        }
    }

    /// Re-delivers active jobs whose lease ran out (BullMQ stalled jobs); dead-letters those
    /// that stalled more than `max_stalled` times. Returns how many members it looked at.
    /// A member whose record is gone (an ack with `remove_on_complete` that died before its
    /// `zrem`) is dropped.
    async fn recover_stalled(&self, keys: &Keys, now: i64) -> ServiceResult<usize> {
        let expired = self
            .store
            .zrange_by_score(&keys.active(), f64::NEG_INFINITY, score(now), SWEEP)
            .await?;
        let handled = expired.len();
        for (member, _) in expired {
            let Some(id) = member_id(&member).map(str::to_owned) else {
                self.store.zrem(&keys.active(), &[member]).await?;
                continue;
            };
            let found = match self.read(keys, &id).await {
                Ok(found) => found,
                // One unreadable record must not stop recovery for the whole queue.
                Err(ServiceError::Corrupt { key, reason }) => {
                    tracing::error!(%key, %reason, "a stalled job's record is unreadable; its member leaves `active`, the record stays for inspection");
                    self.store.zrem(&keys.active(), &[member]).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((mut rec, version)) = found else {
                self.store.zrem(&keys.active(), &[member]).await?;
                continue;
            };
            if rec.member() != member {
                self.repair(keys, &rec, now).await?;
                self.store.zrem(&keys.active(), &[member]).await?;
                continue;
            }
            match rec.state {
                State::Active if rec.lease_until_ms > now => {
                    // An extend wrote the record but not the score.
                    self.store
                        .zadd(&keys.active(), &[(member, score(rec.lease_until_ms))])
                        .await?;
                    continue;
                }
                State::Active => {
                    rec.stalled += 1;
                    rec.lease_token = None;
                    if rec.stalled > self.config.max_stalled {
                        rec.state = State::Failed;
                        rec.finished_ms = Some(now);
                        let reason = format!(
                            "job stalled more than allowable limit ({} lease expiries)",
                            rec.stalled
                        );
                        rec.errors.push(reason.clone());
                        rec.failed_reason = Some(reason);
                    } else {
                        rec.state = State::Waiting;
                        rec.due_ms = now;
                    }
                    tracing::info!(queue = %keys.name(), job = %rec.id, stalled = rec.stalled, "job lease expired; recovering");
                }
                // A reserve died between its move and its record write: deliver again.
                State::Waiting => rec.due_ms = rec.due_ms.min(now),
                State::Completed | State::Failed => {}
            }
            if rec.state == State::Failed && rec.keep_failed.none() {
                // `remove_on_fail: true`: the dead-lettered job goes, as after a fail.
                if self
                    .store
                    .delete(&keys.job(&rec.id), Expect::Version(version))
                    .await?
                {
                    self.store.zrem(&keys.active(), &[member]).await?;
                }
                continue;
            }
            rec.next_generation();
            if !self.write(keys, &rec, version).await? {
                continue; // changed meanwhile (an ack, say); the next sweep looks again
            }
            let (set, s) = Self::place(keys, &rec, now);
            self.store.zadd(&set, &[(rec.member(), s)]).await?;
            self.store.zrem(&keys.active(), &[member]).await?;
            if rec.state == State::Failed {
                if let Err(e) = self.trim(keys, State::Failed, rec.keep_failed).await {
                    tracing::warn!(queue = %keys.name(), error = %e, "failed to trim dead letters after stalled recovery; the next one trims");
                }
            }
        }
        Ok(handled)
    }
}
