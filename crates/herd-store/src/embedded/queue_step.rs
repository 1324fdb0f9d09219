//! [`QueueStep`] inside the writer's transaction: the same rules as the Redis script
//! (`redis/scripts.rs`, `QUEUE_STEP`), on the same record format (`crate::queue`).

use bytes::Bytes;

use super::ops::{
    apply, counter, live_value, no_plain, value_slot, write_value, Op, Reply, Tables,
};
use super::read::{live_entry, raw_entry, zrange, zset_exists};
use crate::queue::{
    decode_job, encode_job, lifo_score, member, parse_member, waiting_score, Add, Added, Finish,
    Finished, JobHeader, JobState, Leased, QueueKeys, QueueStep, StepOutcome,
};
use crate::StoreResult;

#[allow(clippy::cast_precision_loss)]
fn score(ms: i64) -> f64 {
    ms as f64
}

/// Applies one step at the store's wall-clock `now` (ms, for TTLs only: the step's own times
/// come from the caller).
pub(super) fn apply_step(t: &mut Tables<'_>, step: &QueueStep, now: u64) -> StoreResult<Reply> {
    let keys = &step.keys;
    // Every refusal before the first write: the sets this step writes (as the Redis script
    // checks them), the queue's counter, the acked record.
    let mut sets = Vec::new();
    if step.adds.iter().any(|a| a.rank.is_some()) || step.claim.is_some() {
        sets.push(keys.waiting());
    }
    if step.adds.iter().any(|a| a.rank.is_none()) {
        sets.push(keys.delayed());
    }
    if step.finish.is_some() || step.claim.is_some() {
        sets.push(keys.active());
    }
    if step.finish.is_some() {
        sets.push(keys.completed());
    }
    for set in &sets {
        no_plain(t, set, now)?;
    }
    if !step.adds.is_empty() {
        counter(t, &keys.set("seq"), now)?;
    }
    if let Some(f) = &step.finish {
        value_slot(t, &keys.job(&f.id), now)?;
    }
    let mut out = StepOutcome {
        added: add(t, keys, &step.adds, now)?,
        ..StepOutcome::default()
    };
    if let Some(f) = &step.finish {
        let finished = finish(t, keys, f, now)?;
        let done = finished.done();
        out.finished = Some(finished);
        if !done {
            return Ok(Reply::Step(out));
        }
    }
    if let Some(claim) = &step.claim {
        if live_entry(&t.kv, &keys.paused(), now)?.is_some() {
            out.paused = true;
            return Ok(Reply::Step(out));
        }
        let picked = zrange(
            &t.zo,
            &keys.waiting(),
            f64::NEG_INFINITY,
            f64::INFINITY,
            claim.tokens.len(),
        )?;
        let (waiting, active) = (keys.waiting(), keys.active());
        for ((m, _), token) in picked.into_iter().zip(&claim.tokens) {
            t.zset_remove(&waiting, &m)?;
            t.zset_insert(&active, &m, score(claim.deadline_ms))?;
            match lease(t, keys, &m, token, claim.deadline_ms, now)? {
                Some(job) => out.leased.push(job),
                None => out.others.push(m),
            }
        }
    }
    Ok(Reply::Step(out))
}

/// The adds of a step (their checks are done).
fn add(t: &mut Tables<'_>, keys: &QueueKeys, adds: &[Add], now: u64) -> StoreResult<Vec<Added>> {
    if adds.is_empty() {
        return Ok(Vec::new());
    }
    let n = i64::try_from(adds.len()).unwrap_or(i64::MAX);
    let incr = Op::Incr {
        key: keys.set("seq"),
        by: n,
        ttl_ms: None,
    };
    let Reply::Int(last) = apply(t, &incr, now)? else {
        unreachable!("an incr answers a number")
    };
    let mut out = Vec::with_capacity(adds.len());
    for (a, seq) in adds.iter().zip(last - n + 1..) {
        let seq = u64::try_from(seq).unwrap_or(0);
        let id = a.id.clone().unwrap_or_else(|| seq.to_string());
        let key = keys.job(&id);
        // Whatever the key holds (a record, or anything else) counts as taken.
        let taken = live_entry(&t.kv, &key, now)?.is_some() || zset_exists(&t.zs, &key)?;
        if !taken {
            let header = JobHeader {
                seq,
                ..a.header.clone()
            };
            let payload = Bytes::from(encode_job(&header, &a.body, b""));
            let raw = raw_entry(&t.kv, &key)?;
            write_value(t, &key, &payload, None, raw, None, now)?;
            let m = member(&id, 0);
            match a.rank {
                Some(_) if a.lifo => t.zset_insert(&keys.waiting(), &m, lifo_score(seq))?,
                Some(rank) => t.zset_insert(&keys.waiting(), &m, waiting_score(rank, seq))?,
                None => t.zset_insert(&keys.delayed(), &m, score(header.due_ms))?,
            }
        }
        out.push(Added {
            id,
            seq,
            new: !taken,
        });
    }
    Ok(out)
}

fn finish(t: &mut Tables<'_>, keys: &QueueKeys, f: &Finish, now: u64) -> StoreResult<Finished> {
    let key = keys.job(&f.id);
    let (raw, live) = live_value(t, &key, now)?;
    let Some(entry) = live else {
        return Ok(Finished::NotFound);
    };
    let Some(parts) = decode_job(&entry.payload) else {
        return Ok(Finished::Unreadable);
    };
    let h = &parts.header;
    if h.state != JobState::Active || h.lease_token.as_deref() != Some(f.token.as_str()) {
        return Ok(Finished::WrongLease(h.state));
    }
    let old = member(&f.id, h.generation);
    let finished = if h.keep_completed.none() {
        t.remove(&key, raw.as_ref().unwrap_or(&entry))?;
        Finished::Deleted
    } else {
        let done = JobHeader {
            state: JobState::Completed,
            generation: h.generation + 1,
            finished_ms: Some(f.now_ms),
            lease_token: None,
            ..h.clone()
        };
        let payload = Bytes::from(encode_job(&done, parts.body, &f.result));
        write_value(t, &key, &payload, None, raw, Some(&entry), now)?;
        let new = member(&f.id, done.generation);
        t.zset_insert(&keys.completed(), &new, score(f.now_ms))?;
        Finished::Completed {
            keep: done.keep_completed,
        }
    };
    t.zset_remove(&keys.active(), &old)?;
    Ok(finished)
}

/// Leases the record of a member just moved to `active`, if it is waiting and names that
/// member; `None` otherwise (the caller reports the member).
fn lease(
    t: &mut Tables<'_>,
    keys: &QueueKeys,
    m: &str,
    token: &str,
    deadline_ms: i64,
    now: u64,
) -> StoreResult<Option<Leased>> {
    let Some((id, generation)) = parse_member(m) else {
        return Ok(None);
    };
    let key = keys.job(id);
    // A key of another kind is not a record: the caller sorts the member out.
    let Ok((raw, Some(entry))) = live_value(t, &key, now) else {
        return Ok(None);
    };
    let Some(parts) = decode_job(&entry.payload) else {
        return Ok(None);
    };
    let h = &parts.header;
    if h.state != JobState::Waiting || h.generation != generation {
        return Ok(None);
    }
    let leased = JobHeader {
        state: JobState::Active,
        attempt: h.attempt + 1,
        lease_until_ms: deadline_ms,
        lease_token: Some(token.to_owned()),
        ..h.clone()
    };
    let body = Bytes::copy_from_slice(parts.body);
    let payload = Bytes::from(encode_job(&leased, parts.body, parts.result));
    write_value(t, &key, &payload, None, raw, Some(&entry), now)?;
    Ok(Some(Leased {
        id: id.to_owned(),
        attempt: leased.attempt,
        token: token.to_owned(),
        lease_until_ms: deadline_ms,
        body,
    }))
}
