//! A job's record and the pure rules of its life: scores, backoff, what a failure leads to.
//!
//! The record is at `herd:{q:NAME}:job:ID`, in the store's job format (`record`). Its `member` (`ID#GEN`) is the job's name in
//! whichever ordered set holds it; every transition that re-enters a set by `zadd` takes a new
//! generation, so removing the old member can never remove the job's new place (see the
//! module docs of `queue` for why that keeps jobs from being lost).

use std::time::Duration;

pub use herd_store::queue::Keep;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// BullMQ's backoff: `fixed` waits `delay`, `exponential` waits `2^(attempt-1) × delay`;
/// `jitter` in [0, 1] takes up to that fraction off at random.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    pub delay_ms: u64,
    #[serde(default)]
    pub jitter: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    Fixed,
    Exponential,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In `waiting` (due) or `delayed` (`due_ms` in the future).
    Waiting,
    Active,
    Completed,
    Failed,
}

impl State {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Active => "active",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }
}

/// A state as users see it at `now_ms`: `delayed` for a waiting job due after `now_ms`.
#[must_use]
pub fn status(state: State, due_ms: i64, now_ms: i64) -> &'static str {
    if state == State::Waiting && due_ms > now_ms {
        "delayed"
    } else {
        state.as_str()
    }
}

/// A new job.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub name: String,
    pub data: Value,
    /// Failed deliveries allowed before the job is dead-lettered (BullMQ `attempts`, default
    /// 1); stalled deliveries do not count.
    pub attempts: u32,
    pub backoff: Option<Backoff>,
    pub delay: Duration,
    /// 0 = none (after all prioritised jobs, as BullMQ), 1 = highest .. 2^21.
    pub priority: u32,
    /// Dedupe: adding an id that exists returns it and adds nothing.
    pub job_id: Option<String>,
    /// `remove_on_complete`: which completed jobs to keep (`true`: none).
    pub keep_completed: Keep,
    /// `remove_on_fail`: which dead-lettered jobs to keep.
    pub keep_failed: Keep,
    /// BullMQ `lifo`: ahead of every waiting job, the newest first (priority 0 only).
    pub lifo: bool,
}

impl NewJob {
    /// A job with BullMQ's defaults.
    #[must_use]
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        NewJob {
            name: name.into(),
            data,
            attempts: 1,
            backoff: None,
            delay: Duration::ZERO,
            priority: 0,
            job_id: None,
            keep_completed: Keep::ALL,
            keep_failed: Keep::ALL,
            lifo: false,
        }
    }
}

/// A [`Keep`] in a record's JSON: left out (keep all), a count (as older records hold it), or
/// `{"count": N, "age_ms": M}` when it has an age.
pub(crate) mod keep_json {
    use herd_store::queue::Keep;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Form {
        Count(u64),
        Both {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            count: Option<u64>,
            age_ms: Option<u64>,
        },
    }

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
    pub(crate) fn all(k: &Keep) -> bool {
        k.all()
    }

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` passes a reference
    pub(crate) fn serialize<S: Serializer>(k: &Keep, s: S) -> Result<S::Ok, S::Error> {
        match (k.count, k.age_ms) {
            (Some(n), None) => s.serialize_u64(n),
            (count, age_ms) => Form::Both { count, age_ms }.serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Keep, D::Error> {
        Ok(match Option::<Form>::deserialize(d)? {
            None => Keep::ALL,
            Some(Form::Count(n)) => Keep::count(n),
            Some(Form::Both { count, age_ms }) => Keep { count, age_ms },
        })
    }
}

/// The highest priority value BullMQ accepts.
pub const MAX_PRIORITY: u32 = 1 << 21;

/// The stored record of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub data: Value,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    pub priority: u32,
    /// Order of adding among equal priorities.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "keep_json::all", with = "keep_json")]
    pub keep_completed: Keep,
    #[serde(default, skip_serializing_if = "keep_json::all", with = "keep_json")]
    pub keep_failed: Keep,
    /// Waits ahead of every other job, the newest first (BullMQ `lifo`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lifo: bool,
    pub state: State,
    /// Generation of `member`.
    pub generation: u64,
    pub added_ms: i64,
    /// When a waiting job may be reserved.
    pub due_ms: i64,
    /// Deliveries so far (1 during the first).
    pub attempt: u32,
    /// Times its lease expired without ack or fail.
    pub stalled: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    #[serde(default)]
    pub lease_until_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// One per failed delivery, oldest first: the last [`super::finish::MAX_ERRORS`], each cut at
    /// [`super::finish::MAX_ERROR_BYTES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl JobRecord {
    /// Its state as users see it at `now_ms`: a waiting job not yet due is `delayed` (its
    /// `delay`, or the backoff before a retry), as in the queue's counts.
    #[must_use]
    pub fn status(&self, now_ms: i64) -> &'static str {
        status(self.state, self.due_ms, now_ms)
    }

    /// The job's name in the ordered set that holds it.
    #[must_use]
    pub fn member(&self) -> String {
        member(&self.id, self.generation)
    }

    /// Moves the record to a new generation (before it enters a set by `zadd`).
    pub fn next_generation(&mut self) {
        self.generation += 1;
    }

    /// Its rank in `waiting`: its priority, so 0 (none) comes before every prioritised job,
    /// as in BullMQ.
    #[must_use]
    pub fn rank(&self) -> u64 {
        u64::from(self.priority)
    }

    /// The score in `waiting`: `lifo` jobs first (the newest first), then by priority (0,
    /// none, before every prioritised job), then the order of adding. Exact in an f64:
    /// priority < 2^22, seq < 2^31.
    #[must_use]
    pub fn waiting_score(&self) -> f64 {
        if self.lifo {
            return herd_store::queue::lifo_score(self.seq);
        }
        herd_store::queue::waiting_score(self.rank(), self.seq)
    }
}

/// `ID#GEN` (the store's member format, `herd_store::queue`).
#[must_use]
pub fn member(id: &str, generation: u64) -> String {
    herd_store::queue::member(id, generation)
}

/// The job id in a set member (`None`: not one of ours), read as the store reads it.
#[must_use]
pub fn member_id(member: &str) -> Option<&str> {
    herd_store::queue::parse_member(member).map(|(id, _)| id)
}

/// The wait before delivery number `attempt + 1` after delivery `attempt` failed; `unit` is a
/// random number in [0, 1) for the jitter.
#[must_use]
pub fn backoff_delay(backoff: Option<&Backoff>, attempt: u32, unit: f64) -> Duration {
    let Some(b) = backoff else {
        return Duration::ZERO;
    };
    let base = match b.kind {
        BackoffKind::Fixed => b.delay_ms,
        BackoffKind::Exponential => b
            .delay_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(40)),
    };
    // As every other delay: at most ten years, whatever the exponent made of it.
    let cap = u64::try_from(super::spec::MAX_DURATION.as_millis()).unwrap_or(u64::MAX);
    let base = base.min(cap);
    let jitter = b.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let ms = (base as f64 * (1.0 - jitter)) as u64;
    Duration::from_millis(ms)
}

/// What an explicit failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFail {
    /// Back to waiting, due at this time.
    Retry { due_ms: i64 },
    /// Dead-lettered (the `failed` set).
    Dead,
}

/// Retry while failures remain and the worker allows it. As BullMQ's `attemptsMade`, only
/// failed deliveries count against `attempts` (this one included): a delivery whose lease ran
/// out (a stall, bounded by `max_stalled` on its own) does not, and does not lengthen the
/// backoff either.
#[must_use]
pub fn after_fail(record: &JobRecord, retry: bool, now_ms: i64, unit: f64) -> AfterFail {
    let failures = record.attempt.saturating_sub(record.stalled);
    if retry && failures < record.attempts {
        let delay = backoff_delay(record.backoff.as_ref(), failures, unit);
        AfterFail::Retry {
            due_ms: now_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
        }
    } else {
        AfterFail::Dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_like_bullmq() {
        let exp = Backoff {
            kind: BackoffKind::Exponential,
            delay_ms: 1000,
            jitter: 0.0,
        };
        let got: Vec<u64> = (1..=4)
            .map(|a| backoff_delay(Some(&exp), a, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(got, [1000, 2000, 4000, 8000]);
        let fixed = Backoff {
            kind: BackoffKind::Fixed,
            delay_ms: 500,
            jitter: 0.5,
        };
        assert_eq!(
            backoff_delay(Some(&fixed), 3, 0.0),
            Duration::from_millis(500)
        );
        assert_eq!(
            backoff_delay(Some(&fixed), 3, 1.0),
            Duration::from_millis(250)
        );
        assert_eq!(backoff_delay(None, 3, 1.0), Duration::ZERO);
        let huge = Backoff {
            kind: BackoffKind::Exponential,
            delay_ms: u64::MAX,
            jitter: 0.0,
        };
        let ten_years = crate::queue::spec::MAX_DURATION;
        assert_eq!(backoff_delay(Some(&huge), 100, 0.0), ten_years);
        let doubling = Backoff {
            kind: BackoffKind::Exponential,
            delay_ms: 1000,
            jitter: 0.0,
        };
        assert_eq!(backoff_delay(Some(&doubling), 40, 0.0), ten_years);
    }

    #[test]
    fn priority_orders_before_seq_and_zero_goes_first() {
        let mut r = JobRecord {
            id: "1".into(),
            name: "n".into(),
            data: Value::Null,
            attempts: 1,
            backoff: None,
            priority: 0,
            seq: 1,
            keep_completed: Keep::ALL,
            keep_failed: Keep::ALL,
            lifo: false,
            state: State::Waiting,
            generation: 0,
            added_ms: 0,
            due_ms: 0,
            attempt: 0,
            stalled: 0,
            lease_token: None,
            lease_until_ms: 0,
            finished_ms: None,
            failed_reason: None,
            errors: vec![],
            result: None,
        };
        let none = r.waiting_score();
        r.priority = MAX_PRIORITY;
        r.seq = 99;
        let lowest = r.waiting_score();
        r.priority = 1;
        let highest = r.waiting_score();
        assert!(none < highest && highest < lowest);
        r.attempt = 1;
        r.attempts = 2;
        assert_eq!(
            after_fail(&r, true, 10, 0.0),
            AfterFail::Retry { due_ms: 10 }
        );
        assert_eq!(after_fail(&r, false, 10, 0.0), AfterFail::Dead);
        r.attempt = 2;
        assert_eq!(after_fail(&r, true, 10, 0.0), AfterFail::Dead);
        assert_eq!(member_id(&r.member()), Some("1"));
        assert_eq!(member_id("a#b#3"), Some("a#b"));
    }
}
