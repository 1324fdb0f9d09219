//! The queue's model-based property test, shared by the embedded and Redis runs: random
//! sequences of add / reserve / ack / fail / extend / advance-time against the real queue (manual
//! clock) and a plain in-memory model of BullMQ's rules; every result and every count must agree.
//! The model does housekeeping on the node's schedule (promotion every 20 ms, stalled recovery
//! every 1 s, both when a reserve finds nothing waiting), so it checks that rule exactly.

use std::sync::Arc;
use std::time::Duration;

use herd_services::queue::{Backoff, BackoffKind, NewJob, State};
use herd_services::{ManualClock, ServiceError, ServicesConfig};
use proptest::prelude::*;

use super::Node;

const LEASE_MS: i64 = 1000;
const MAX_STALLED: u32 = 1;

#[derive(Debug, Clone)]
pub enum Op {
    Add {
        priority: u32,
        delay_ms: u64,
        attempts: u32,
        backoff_ms: u64,
    },
    Reserve {
        max: usize,
    },
    Ack {
        pick: usize,
    },
    /// `ack_and_reserve`: an ack that leases up to `max` next jobs.
    AckNext {
        pick: usize,
        max: usize,
    },
    /// A batch ack of distinct leases (`ack_many`).
    AckMany {
        picks: Vec<usize>,
    },
    /// `add_bulk` of `n` plain jobs.
    AddBulk {
        n: usize,
    },
    Fail {
        pick: usize,
        retry: bool,
    },
    Extend {
        pick: usize,
        lease_ms: u64,
    },
    Advance {
        ms: u64,
    },
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..4, prop_oneof![Just(0u64), 1u64..3000], 1u32..4, prop_oneof![Just(0u64), 1u64..2000])
            .prop_map(|(priority, delay_ms, attempts, backoff_ms)| Op::Add { priority, delay_ms, attempts, backoff_ms }),
        3 => (1usize..4).prop_map(|max| Op::Reserve { max }),
        2 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        1 => proptest::collection::vec(any::<usize>(), 1..5).prop_map(|picks| Op::AckMany { picks }),
        1 => (any::<usize>(), 1usize..3).prop_map(|(pick, max)| Op::AckNext { pick, max }),
        1 => (1usize..5).prop_map(|n| Op::AddBulk { n }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, retry)| Op::Fail { pick, retry }),
        1 => (any::<usize>(), 1u64..3000).prop_map(|(pick, lease_ms)| Op::Extend { pick, lease_ms }),
        2 => (0u64..2500).prop_map(|ms| Op::Advance { ms }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct MJob {
    id: String,
    priority: u32,
    seq: u64,
    attempts: u32,
    backoff_ms: u64,
    attempt: u32,
    stalled: u32,
    state: State,
    due: i64,
    /// In `waiting` rather than `delayed` (placed there when due, or promoted).
    promoted: bool,
    /// Ready again (a retry, a delayed job come due) when the queue's counter stood at this:
    /// it waits behind the jobs added up to then (BullMQ appends it to the wait list).
    requeued: Option<u64>,
    until: i64,
    token: Option<String>,
}

/// Housekeeping intervals of a node (`queue::housekeep`).
const PROMOTE_EVERY_MS: i64 = 20;
const STALLED_EVERY_MS: i64 = 1000;

#[derive(Default)]
struct Model {
    jobs: Vec<MJob>,
    seq: u64,
    /// When the node last promoted due delayed jobs and recovered stalled ones.
    last_promote: Option<i64>,
    last_stalled: Option<i64>,
}

fn chore_due(last: &mut Option<i64>, now: i64, every: i64, force: bool) -> bool {
    let run = force || last.is_none_or(|t| now - t >= every || now < t);
    if run {
        *last = Some(now);
    }
    run
}

impl Model {
    fn valid(&mut self, id: &str, token: &str) -> Option<&mut MJob> {
        self.jobs
            .iter_mut()
            .find(|j| j.id == id && j.state == State::Active && j.token.as_deref() == Some(token))
    }

    /// What `reserve` does before it leases: promotion and stalled recovery when their
    /// interval has passed, and both at once if nothing was waiting. Returns the ids it will
    /// lease.
    fn eligible(&mut self, now: i64, max: usize) -> Vec<String> {
        let promote = chore_due(&mut self.last_promote, now, PROMOTE_EVERY_MS, false);
        let stalled = chore_due(&mut self.last_stalled, now, STALLED_EVERY_MS, false);
        self.housekeep(now, promote, stalled);
        let ready = self.ready(max);
        if !ready.is_empty() {
            return ready;
        }
        let promote = !promote && chore_due(&mut self.last_promote, now, 0, true);
        let stalled = !stalled && chore_due(&mut self.last_stalled, now, 0, true);
        self.housekeep(now, promote, stalled);
        self.ready(max)
    }

    fn housekeep(&mut self, now: i64, promote: bool, stalled: bool) {
        let tail = self.seq;
        for j in &mut self.jobs {
            if promote && j.state == State::Waiting && j.due <= now && !j.promoted {
                j.promoted = true;
                j.requeued = Some(tail);
            }
            if stalled && j.state == State::Active && j.until <= now {
                j.stalled += 1;
                j.token = None;
                if j.stalled > MAX_STALLED {
                    j.state = State::Failed;
                } else {
                    // Back at its place by order of adding (BullMQ puts a stalled job back
                    // at the head of the wait list).
                    j.state = State::Waiting;
                    j.due = now;
                    j.promoted = true;
                    j.requeued = None;
                }
            }
        }
    }

    fn ready(&self, max: usize) -> Vec<String> {
        let mut ready: Vec<&MJob> = self
            .jobs
            .iter()
            .filter(|j| j.state == State::Waiting && j.promoted)
            .collect();
        // BullMQ: no priority (0) first, then 1 (highest) .. 2^21; the order of adding within,
        // a job ready again behind those added before; ties (the same score in the store) by
        // the member's name, `ID#GEN`.
        ready.sort_by_key(|j| {
            let order = j.requeued.map_or((j.seq, 0), |t| (t, 1));
            (j.priority, order, format!("{}#", j.id))
        });
        ready.into_iter().take(max).map(|j| j.id.clone()).collect()
    }

    fn count(&self, state: State) -> u64 {
        self.jobs.iter().filter(|j| j.state == state).count() as u64
    }
}

pub async fn run_case(
    store: &Arc<herd_store::Store>,
    queue: &str,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let t0 = 1_800_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let node = Node::with_clock(store, ServicesConfig::default(), clock.clone());
    let q = &node.services.queues;
    let mut model = Model::default();
    let mut leases: Vec<(String, String)> = Vec::new();
    let mut now = t0;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Add {
                priority,
                delay_ms,
                attempts,
                backoff_ms,
            } => {
                let mut job = NewJob::new("j", serde_json::json!(step));
                job.priority = priority;
                job.delay = Duration::from_millis(delay_ms);
                job.attempts = attempts;
                job.backoff = (backoff_ms > 0).then_some(Backoff {
                    kind: BackoffKind::Fixed,
                    delay_ms: backoff_ms,
                    jitter: 0.0,
                });
                let id = q.add(queue, job).await.unwrap();
                model.seq += 1;
                model.jobs.push(MJob {
                    id,
                    priority,
                    seq: model.seq,
                    attempts,
                    backoff_ms,
                    attempt: 0,
                    stalled: 0,
                    state: State::Waiting,
                    due: now + delay_ms as i64,
                    promoted: delay_ms == 0,
                    requeued: None,
                    until: 0,
                    token: None,
                });
            }
            Op::Reserve { max } => {
                let want = model.eligible(now, max);
                let got = q
                    .reserve(
                        queue,
                        max,
                        Some(Duration::from_millis(LEASE_MS as u64)),
                        Duration::ZERO,
                    )
                    .await
                    .unwrap();
                let got_ids: Vec<String> = got.iter().map(|j| j.id.clone()).collect();
                prop_assert_eq!(&got_ids, &want, "step {}: reserve order", step);
                for r in got {
                    let j = model.jobs.iter_mut().find(|j| j.id == r.id).unwrap();
                    j.state = State::Active;
                    j.attempt += 1;
                    j.until = now + LEASE_MS;
                    j.token = Some(r.lease_token.clone());
                    prop_assert_eq!(r.attempt, j.attempt, "step {}: attempt of {}", step, &r.id);
                    leases.push((r.id, r.lease_token));
                }
            }
            Op::AddBulk { n } => {
                let jobs = (0..n)
                    .map(|i| NewJob::new("b", serde_json::json!([step, i])))
                    .collect();
                let ids = q.add_bulk(queue, jobs).await.unwrap();
                prop_assert_eq!(ids.len(), n);
                for id in ids {
                    model.seq += 1;
                    model.jobs.push(MJob {
                        id,
                        priority: 0,
                        seq: model.seq,
                        attempts: 1,
                        backoff_ms: 0,
                        attempt: 0,
                        stalled: 0,
                        state: State::Waiting,
                        due: now,
                        promoted: true,
                        requeued: None,
                        until: 0,
                        token: None,
                    });
                }
            }
            Op::Ack { .. }
            | Op::AckMany { .. }
            | Op::AckNext { .. }
            | Op::Fail { .. }
            | Op::Extend { .. }
                if leases.is_empty() => {}
            Op::AckNext { pick, max } => {
                let (id, token) = leases[pick % leases.len()].clone();
                let got = q
                    .ack_and_reserve(
                        queue,
                        &id,
                        &token,
                        None,
                        max,
                        Some(Duration::from_millis(LEASE_MS as u64)),
                    )
                    .await;
                // The due chores that only add to `waiting` (promotion) run before the ack,
                // whether or not its lease is still valid; stalled recovery only after it.
                let promote = chore_due(&mut model.last_promote, now, PROMOTE_EVERY_MS, false);
                model.housekeep(now, promote, false);
                let valid = model.valid(&id, &token).is_some();
                if !valid {
                    prop_assert!(
                        matches!(got, Err(ServiceError::WrongLease { .. })),
                        "step {}: stale ack-next {} gave {:?}",
                        step,
                        id,
                        got
                    );
                } else {
                    let j = model.valid(&id, &token).unwrap();
                    j.state = State::Completed;
                    j.token = None;
                    let want = model.eligible(now, max);
                    let got = got.unwrap();
                    let got_ids: Vec<String> = got.iter().map(|j| j.id.clone()).collect();
                    prop_assert_eq!(&got_ids, &want, "step {}: ack-next order", step);
                    for r in got {
                        let j = model.jobs.iter_mut().find(|j| j.id == r.id).unwrap();
                        j.state = State::Active;
                        j.attempt += 1;
                        j.until = now + LEASE_MS;
                        j.token = Some(r.lease_token.clone());
                        leases.push((r.id, r.lease_token));
                    }
                }
            }
            Op::AckMany { picks } => {
                let mut chosen: Vec<usize> = picks.iter().map(|p| p % leases.len()).collect();
                chosen.sort_unstable();
                chosen.dedup();
                let batch: Vec<(String, String)> =
                    chosen.iter().map(|&i| leases[i].clone()).collect();
                let acks = batch
                    .iter()
                    .map(|(id, token)| herd_services::queue::AckRequest {
                        id: id.clone(),
                        lease_token: token.clone(),
                        result: None,
                    })
                    .collect();
                let got = q.ack_many(queue, acks).await.unwrap();
                prop_assert_eq!(got.len(), batch.len());
                for ((id, token), got) in batch.iter().zip(got) {
                    match model.valid(id, token) {
                        Some(j) => {
                            prop_assert!(
                                got.is_ok(),
                                "step {}: batch ack {} failed: {:?}",
                                step,
                                id,
                                got
                            );
                            j.state = State::Completed;
                            j.token = None;
                        }
                        None => prop_assert!(
                            matches!(got, Err(ServiceError::WrongLease { .. })),
                            "step {}: stale batch ack {} gave {:?}",
                            step,
                            id,
                            got
                        ),
                    }
                }
            }
            Op::Ack { pick } => {
                let (id, token) = leases[pick % leases.len()].clone();
                let got = q.ack(queue, &id, &token, None).await;
                match model.valid(&id, &token) {
                    Some(j) => {
                        prop_assert!(got.is_ok(), "step {}: ack {} failed: {:?}", step, id, got);
                        j.state = State::Completed;
                        j.token = None;
                    }
                    None => prop_assert!(
                        matches!(got, Err(ServiceError::WrongLease { .. })),
                        "step {}: stale ack {} gave {:?}",
                        step,
                        id,
                        got
                    ),
                }
            }
            Op::Fail { pick, retry } => {
                let (id, token) = leases[pick % leases.len()].clone();
                let got = q.fail(queue, &id, &token, "e", retry).await;
                let tail = model.seq;
                match model.valid(&id, &token) {
                    Some(j) => {
                        j.token = None;
                        if retry && j.attempt - j.stalled < j.attempts {
                            j.state = State::Waiting;
                            j.due = now + j.backoff_ms as i64;
                            j.promoted = j.backoff_ms == 0;
                            j.requeued = j.promoted.then_some(tail);
                        } else {
                            j.state = State::Failed;
                        }
                        prop_assert_eq!(
                            got.ok().map(|f| f.state),
                            Some(j.state),
                            "step {}: fail {}",
                            step,
                            id
                        );
                    }
                    None => prop_assert!(
                        matches!(got, Err(ServiceError::WrongLease { .. })),
                        "step {}: stale fail {} gave {:?}",
                        step,
                        id,
                        got
                    ),
                }
            }
            Op::Extend { pick, lease_ms } => {
                let (id, token) = leases[pick % leases.len()].clone();
                let got = q
                    .extend(queue, &id, &token, Some(Duration::from_millis(lease_ms)))
                    .await;
                match model.valid(&id, &token) {
                    Some(j) => {
                        j.until = now + lease_ms as i64;
                        prop_assert_eq!(got.ok(), Some(j.until), "step {}: extend {}", step, id);
                    }
                    None => prop_assert!(
                        matches!(got, Err(ServiceError::WrongLease { .. })),
                        "step {}: stale extend gave {:?}",
                        step,
                        got
                    ),
                }
            }
            Op::Advance { ms } => {
                clock.advance(Duration::from_millis(ms));
                now += ms as i64;
            }
        }
        let c = q.counts(queue).await.unwrap();
        prop_assert_eq!(
            c.active,
            model.count(State::Active),
            "step {}: active",
            step
        );
        prop_assert_eq!(
            c.completed,
            model.count(State::Completed),
            "step {}: completed",
            step
        );
        prop_assert_eq!(
            c.failed,
            model.count(State::Failed),
            "step {}: failed",
            step
        );
        prop_assert_eq!(
            c.waiting + c.delayed,
            model.count(State::Waiting),
            "step {}: waiting+delayed",
            step
        );
        // No job is ever in two places or lost: the sets hold exactly the model's jobs.
        prop_assert_eq!(
            c.waiting + c.delayed + c.active + c.completed + c.failed,
            model.jobs.len() as u64
        );
    }
    Ok(())
}
