//! Looking into a queue and taking jobs out of it: the jobs of one state in order (BullMQ
//! `getJobs`), removing one job that no worker holds (`job.remove()`), draining the waiting
//! and delayed jobs (`queue.drain`), and reading schedules (`getJobSchedulers`).
//!
//! Every removal is a transaction that checks the record's version, deletes it and drops its
//! member from every set, so a job a worker reserves at the same moment is either removed
//! before the reserve (which then skips its member) or reserved and left alone.

use herd_store::{Backend as _, Expect, Txn};
use serde::Serialize;

use super::job::member_id;
use super::schedule::ScheduleInfo;
use super::{check_queue, corrupt, record, Keys, Queues};
use crate::error::{ServiceError, ServiceResult};
use crate::queue::{JobRecord, State};

/// The most jobs one listing reaches into a state (`offset + limit`).
pub const MAX_LISTED: usize = 10_000;

/// Removals per transaction in a drain.
const DRAIN_BATCH: usize = 200;

/// The states a listing can name, each with its ordered set.
const STATES: &str = "waiting, delayed, active, completed or failed";

/// What a drain removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drained {
    /// Jobs removed from `waiting` (paused ones included).
    pub waiting: u64,
    /// Jobs removed from `delayed` (only when asked for).
    pub delayed: u64,
}

fn state_set(keys: &Keys, state: &str) -> ServiceResult<String> {
    Ok(match state {
        "waiting" => keys.waiting(),
        "delayed" => keys.delayed(),
        "active" => keys.active(),
        "completed" => keys.completed(),
        "failed" => keys.failed(),
        other => {
            return Err(ServiceError::invalid(
                "state",
                format!("{} is not a job state", crate::error::quoted(other)),
                format!("name one of {STATES}"),
            ))
        }
    })
}

/// A removal that skips the job when it changed since it was read.
fn removal(keys: &Keys, rec: &JobRecord, version: u64) -> Txn {
    let key = keys.job(&rec.id);
    let member = rec.member();
    let mut txn = Txn::new()
        .check(&key, Expect::Version(version))
        .delete(&key);
    for set in [
        keys.waiting(),
        keys.delayed(),
        keys.active(),
        keys.completed(),
        keys.failed(),
    ] {
        txn = txn.zrem(set, vec![member.clone()]);
    }
    txn
}

impl Queues {
    /// The jobs of one state in the order the queue keeps them: `waiting` in the order they
    /// will be reserved (a paused queue's held jobs included), `delayed` by due time, `active`
    /// by lease deadline, `completed` and `failed` oldest first. Skips `offset` jobs, returns
    /// at most `limit`; `offset + limit` is at most [`MAX_LISTED`].
    ///
    /// # Errors
    /// `Invalid` state or range; store errors.
    pub async fn list(
        &self,
        queue: &str,
        state: &str,
        offset: usize,
        limit: usize,
    ) -> ServiceResult<Vec<JobRecord>> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let set = state_set(&keys, state)?;
        let reach = offset.saturating_add(limit);
        if reach > MAX_LISTED {
            return Err(ServiceError::invalid(
                "offset",
                format!("offset {offset} + limit {limit} reaches past job {MAX_LISTED}"),
                format!(
                    "list at most the first {MAX_LISTED} jobs of a state; clean or drain the rest"
                ),
            ));
        }
        let members = self
            .store
            .zrange_by_score(&set, f64::NEG_INFINITY, f64::INFINITY, reach)
            .await?;
        let members = members.into_iter().skip(offset).map(|(m, _)| m).collect();
        Ok(self
            .current_records(&keys, members)
            .await?
            .into_iter()
            .filter_map(|(_, current)| current.map(|(rec, _)| rec))
            .collect())
    }

    /// The record and version each member currently names, in the members' order; `None`
    /// for a member that is not a job's, whose record is gone, or that the record no longer
    /// names (a concurrent move left it behind).
    async fn current_records(
        &self,
        keys: &Keys,
        members: Vec<String>,
    ) -> ServiceResult<Vec<(String, Option<(JobRecord, u64)>)>> {
        let job_keys: Vec<String> = members
            .iter()
            .map(|m| member_id(m).map_or_else(String::new, |id| keys.job(id)))
            .collect();
        let wanted: Vec<String> = job_keys.iter().filter(|k| !k.is_empty()).cloned().collect();
        let mut found = self.store.get_many(&wanted).await?.into_iter();
        let mut out = Vec::with_capacity(members.len());
        for (member, key) in members.into_iter().zip(job_keys) {
            let value = if key.is_empty() {
                None
            } else {
                found.next().flatten()
            };
            let current = match (value, member_id(&member)) {
                (Some(v), Some(id)) => {
                    let rec = record::decode(&v.value, id).map_err(|e| corrupt(key, e))?;
                    (rec.member() == member).then_some((rec, v.version))
                }
                _ => None,
            };
            out.push((member, current));
        }
        Ok(out)
    }

    /// Removes a job that no worker holds: waiting (paused too), delayed, completed,
    /// dead-lettered, or active with its lease expired (stalled, not yet recovered: its
    /// worker's ack then finds no job). Its id is free again afterwards (a later add with that
    /// `job_id` adds).
    ///
    /// # Errors
    /// `NotFound`; `Busy` when the job is leased (active, lease running); `Contended` when it
    /// kept changing; store errors.
    pub async fn remove(&self, queue: &str, id: &str) -> ServiceResult<()> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        for attempt in 0..super::finish::TRIES {
            let Some((rec, version)) = self.read(&keys, id).await? else {
                return Err(ServiceError::not_found(format!(
                    "job {id} in queue {queue}"
                )));
            };
            let now = self.clock.now_ms();
            if rec.state == State::Active && rec.lease_until_ms > now {
                return Err(ServiceError::Busy {
                    what: format!("job {id} in queue {queue}"),
                    reason: format!(
                        "it is leased by a worker (active) for {} ms more",
                        rec.lease_until_ms - now
                    ),
                    hint: "let the worker ack or fail it, or remove it once its lease has expired"
                        .into(),
                });
            }
            if self.commit(&removal(&keys, &rec, version)).await? {
                return Ok(());
            }
            crate::sessions::backoff(attempt).await;
        }
        Err(ServiceError::Contended {
            what: format!("job {id}"),
            tries: super::finish::TRIES,
        })
    }

    /// Removes every waiting job (paused ones included) and, with `delayed`, every delayed
    /// one; active, completed and failed jobs stay (BullMQ `drain`). Jobs added while it runs
    /// may be removed too; it stops after as many jobs as the sets held when it began, so a
    /// steady stream of adds cannot keep it going.
    ///
    /// # Errors
    /// Store errors (what was removed before one stays removed).
    pub async fn drain(&self, queue: &str, delayed: bool) -> ServiceResult<Drained> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let mut out = Drained {
            waiting: self.drain_set(&keys, &keys.waiting()).await?,
            ..Drained::default()
        };
        if delayed {
            out.delayed = self.drain_set(&keys, &keys.delayed()).await?;
        }
        Ok(out)
    }

    async fn drain_set(&self, keys: &Keys, set: &str) -> ServiceResult<u64> {
        let budget = self.store.zcard(set).await?;
        let mut removed = 0u64;
        let mut seen = 0u64;
        while seen < budget {
            let batch = self
                .store
                .zrange_by_score(set, f64::NEG_INFINITY, f64::INFINITY, DRAIN_BATCH)
                .await?;
            if batch.is_empty() {
                break;
            }
            seen += batch.len() as u64;
            removed += self.drain_batch(keys, set, batch).await?;
        }
        Ok(removed)
    }

    /// Removes the jobs of one page of `set`: one transaction for all that are still where
    /// the page found them; each member whose record has moved on (or is gone) leaves `set`.
    async fn drain_batch(
        &self,
        keys: &Keys,
        set: &str,
        batch: Vec<(String, f64)>,
    ) -> ServiceResult<u64> {
        let members = batch.into_iter().map(|(m, _)| m).collect();
        let mut txn = Txn::new();
        let mut jobs = Vec::new();
        let mut stale = Vec::new();
        for (member, current) in self.current_records(keys, members).await? {
            match current {
                Some((rec, version)) if rec.state == State::Waiting => {
                    txn = txn.and(removal(keys, &rec, version));
                    jobs.push((rec, version));
                }
                // Reserved since the page was read, or a member a crashed move left behind:
                // either way not a job waiting here.
                _ => stale.push(member),
            }
        }
        if !stale.is_empty() {
            self.store.zrem(set, &stale).await?;
        }
        if jobs.is_empty() {
            return Ok(0);
        }
        if self.commit(&txn).await? {
            return Ok(jobs.len() as u64);
        }
        // One of them changed meanwhile (most likely reserved): remove the rest one by one.
        let mut removed = 0;
        for (rec, version) in jobs {
            if self.remove_if_waiting(keys, &rec, version).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes a job read as waiting; if it changed since, reads it again and removes it only
    /// if it is still waiting under the same member (it changed only data a drain ignores).
    async fn remove_if_waiting(
        &self,
        keys: &Keys,
        rec: &JobRecord,
        version: u64,
    ) -> ServiceResult<bool> {
        if self.commit(&removal(keys, rec, version)).await? {
            return Ok(true);
        }
        let Some((now, v)) = self.read(keys, &rec.id).await? else {
            return Ok(false);
        };
        if now.member() != rec.member() || now.state != State::Waiting {
            return Ok(false);
        }
        self.commit(&removal(keys, &now, v)).await
    }

    /// The queue's schedules, by next firing.
    ///
    /// # Errors
    /// Store errors.
    pub async fn schedules(&self, queue: &str) -> ServiceResult<Vec<ScheduleInfo>> {
        check_queue(queue)?;
        let keys = Keys::new(queue);
        let names = self
            .store
            .zrange_by_score(
                &keys.set("schedules"),
                f64::NEG_INFINITY,
                f64::INFINITY,
                MAX_LISTED,
            )
            .await?;
        let record_keys: Vec<String> = names
            .iter()
            .map(|(n, _)| keys.set(&format!("sched:{n}")))
            .collect();
        let found = self.store.get_many(&record_keys).await?;
        let mut out = Vec::with_capacity(found.len());
        for (key, value) in record_keys.into_iter().zip(found) {
            if let Some(v) = value {
                out.push(serde_json::from_slice(&v.value).map_err(|e| corrupt(key, e))?);
            }
        }
        Ok(out)
    }

    /// One schedule.
    ///
    /// # Errors
    /// `NotFound`; store errors.
    pub async fn schedule(&self, queue: &str, name: &str) -> ServiceResult<ScheduleInfo> {
        check_queue(queue)?;
        super::schedule::check_name(name)?;
        let key = Keys::new(queue).set(&format!("sched:{name}"));
        match self.store.get(&key).await? {
            Some(v) => serde_json::from_slice(&v.value).map_err(|e| corrupt(key, e)),
            None => Err(ServiceError::not_found(format!(
                "schedule {name} in queue {queue}"
            ))),
        }
    }
}
