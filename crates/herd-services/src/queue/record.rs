//! A [`JobRecord`] in the store's job format (`herd_store::queue`): the header the store
//! itself rewrites in a queue step, the body (the job's JSON: what only this crate reads),
//! then the ack's result. Records written by an older herd (the whole record as one JSON
//! object) are still read.

use bytes::Bytes;
use herd_store::queue::{decode_job, encode_job, JobHeader, JobState, Leased};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::job::{keep_json, Backoff, JobRecord, Keep, State};
use super::reserve::Reserved;

/// The body as written (borrowed from the record).
#[derive(Serialize)]
struct BodyOut<'a> {
    name: &'a str,
    data: &'a Value,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    backoff: Option<&'a Backoff>,
    priority: u32,
    #[serde(skip_serializing_if = "keep_json::all", with = "keep_json")]
    keep_failed: Keep,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    lifo: bool,
    added_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    errors: &'a [String],
}

/// The body as read.
#[derive(Deserialize)]
struct BodyIn {
    name: String,
    data: Value,
    attempts: u32,
    #[serde(default)]
    backoff: Option<Backoff>,
    priority: u32,
    #[serde(default, with = "keep_json")]
    keep_failed: Keep,
    #[serde(default)]
    lifo: bool,
    added_ms: i64,
    #[serde(default)]
    failed_reason: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
}

/// What a worker needs of a leased job's body.
#[derive(Deserialize)]
struct Work {
    name: String,
    data: Value,
}

fn to_store(s: State) -> JobState {
    match s {
        State::Waiting => JobState::Waiting,
        State::Active => JobState::Active,
        State::Completed => JobState::Completed,
        State::Failed => JobState::Failed,
    }
}

pub(crate) fn from_store(s: JobState) -> State {
    match s {
        JobState::Waiting => State::Waiting,
        JobState::Active => State::Active,
        JobState::Completed => State::Completed,
        JobState::Failed => State::Failed,
    }
}

/// The record's header (what the store reads and rewrites).
pub(crate) fn header(rec: &JobRecord) -> JobHeader {
    JobHeader {
        state: to_store(rec.state),
        generation: rec.generation,
        seq: rec.seq,
        due_ms: rec.due_ms,
        attempt: rec.attempt,
        stalled: rec.stalled,
        lease_until_ms: rec.lease_until_ms,
        finished_ms: rec.finished_ms,
        keep_completed: rec.keep_completed,
        lease_token: rec.lease_token.clone(),
    }
}

/// The record's body: the job's JSON without what the header and the key hold.
pub(crate) fn body(rec: &JobRecord) -> Bytes {
    let body = BodyOut {
        name: &rec.name,
        data: &rec.data,
        attempts: rec.attempts,
        backoff: rec.backoff.as_ref(),
        priority: rec.priority,
        keep_failed: rec.keep_failed,
        lifo: rec.lifo,
        added_ms: rec.added_ms,
        failed_reason: rec.failed_reason.as_deref(),
        errors: &rec.errors,
    };
    // Serialising a `Value` and plain fields cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The record as stored.
pub(crate) fn encode(rec: &JobRecord) -> Bytes {
    let result = result_bytes(rec.result.as_ref());
    Bytes::from(encode_job(&header(rec), &body(rec), &result))
}

/// An ack's result as the store keeps it (compact JSON; empty for none).
pub(crate) fn result_bytes(result: Option<&Value>) -> Vec<u8> {
    result
        .map(|v| serde_json::to_vec(v).unwrap_or_default())
        .unwrap_or_default()
}

/// The stored record of job `id` (either format).
pub(crate) fn decode(raw: &[u8], id: &str) -> Result<JobRecord, String> {
    let Some(parts) = decode_job(raw) else {
        return serde_json::from_slice(raw).map_err(|e| e.to_string());
    };
    let b: BodyIn = serde_json::from_slice(parts.body).map_err(|e| e.to_string())?;
    let result = if parts.result.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(parts.result).map_err(|e| e.to_string())?)
    };
    let h = parts.header;
    Ok(JobRecord {
        id: id.to_owned(),
        name: b.name,
        data: b.data,
        attempts: b.attempts,
        backoff: b.backoff,
        priority: b.priority,
        seq: h.seq,
        keep_completed: h.keep_completed,
        keep_failed: b.keep_failed,
        lifo: b.lifo,
        state: from_store(h.state),
        generation: h.generation,
        added_ms: b.added_ms,
        due_ms: h.due_ms,
        attempt: h.attempt,
        stalled: h.stalled,
        lease_token: h.lease_token,
        lease_until_ms: h.lease_until_ms,
        finished_ms: h.finished_ms,
        failed_reason: b.failed_reason,
        errors: b.errors,
        result,
    })
}

/// A job a queue step leased, as its worker receives it.
pub(crate) fn reserved(job: Leased) -> Result<Reserved, String> {
    let work: Work = serde_json::from_slice(&job.body).map_err(|e| e.to_string())?;
    Ok(Reserved {
        id: job.id,
        name: work.name,
        data: work.data,
        attempt: job.attempt,
        lease_token: job.token,
        lease_until_ms: job.lease_until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::job::BackoffKind;

    fn record() -> JobRecord {
        JobRecord {
            id: "order 7".into(),
            name: "mail\nmerge".into(),
            data: serde_json::json!({"to": ["a", "b"], "n": 1.5, "big": 12_345_678_901_234_567_u64}),
            attempts: 3,
            backoff: Some(Backoff {
                kind: BackoffKind::Exponential,
                delay_ms: 1000,
                jitter: 0.2,
            }),
            priority: 4,
            seq: 99,
            keep_completed: Keep::count(10),
            keep_failed: Keep {
                count: None,
                age_ms: Some(86_400_000),
            },
            lifo: false,
            state: State::Active,
            generation: 2,
            added_ms: 1_700_000_000_000,
            due_ms: 1_700_000_000_500,
            attempt: 2,
            stalled: 1,
            lease_token: Some("AbC-_".into()),
            lease_until_ms: 1_700_000_030_000,
            finished_ms: None,
            failed_reason: Some("boom\n".into()),
            errors: vec!["boom\n".into()],
            result: Some(serde_json::json!({"ok": true})),
        }
    }

    #[test]
    fn records_round_trip_through_the_store_format() {
        let rec = record();
        assert_eq!(decode(&encode(&rec), &rec.id).unwrap(), rec);
        let bare = JobRecord {
            backoff: None,
            keep_completed: Keep::ALL,
            keep_failed: Keep::ALL,
            lease_token: None,
            failed_reason: None,
            errors: vec![],
            result: None,
            state: State::Waiting,
            ..record()
        };
        assert_eq!(decode(&encode(&bare), &bare.id).unwrap(), bare);
    }

    #[test]
    fn records_of_an_older_herd_still_read() {
        let rec = record();
        let old = serde_json::to_vec(&rec).unwrap();
        assert_eq!(decode(&old, &rec.id).unwrap(), rec);
        assert!(decode(b"J1 nonsense", "x").is_err());
    }
}
