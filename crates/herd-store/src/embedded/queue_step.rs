//! [`QueueStep`] inside the writer's transaction: the same rules as the Redis script
//! (`redis/scripts.rs`, `QUEUE_STEP`), on the same record format (`crate::queue`).

use bytes::Bytes;

use super::ops::{live_value, no_plain, value_slot, write_value, Reply, Tables};
use super::read::{live_entry, zrange};
use crate::queue::{
    decode_job, encode_job, member, parse_member, Finish, Finished, JobHeader, JobState, Leased,
    QueueKeys, QueueStep, StepOutcome,
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
    // Every refusal before the first write.
    for set in [keys.waiting(), keys.active(), keys.completed()] {
        no_plain(t, &set, now)?;
    }
    if let Some(f) = &step.finish {
        value_slot(t, &keys.job(&f.id), now)?;
    }
    let mut out = StepOutcome::default();
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
    let finished = if h.keep_completed == Some(0) {
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
