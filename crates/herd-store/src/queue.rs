//! Queue steps: a job's ack and the lease of the next waiting jobs done inside the store, in one
//! round trip (one Lua script on Redis, one op of the embedded store's group commit), as
//! BullMQ's `moveToFinished` and `moveToActive` scripts do.
//!
//! The store reads and rewrites only a job record's *header*, a short line of numbers and a
//! lease token in front of the user's JSON; the rest of the record (the *body*, then the
//! ack's *result*) is opaque bytes the store copies and never re-encodes. The queue service
//! (`herd-services`) owns what the body means; the format and the keys are defined here once
//! for both backends.
//!
//! # Record format
//! `J1 <state> <generation> <seq> <due ms> <attempt> <stalled> <lease until ms> <finished ms|->
//! <keep completed> <lease token|->` `\n` body `\n` result. State is `w`aiting, `a`ctive,
//! `c`ompleted or `f`ailed. Keep completed is a [`Keep`]: `-` (all), a count, or a count (or
//! `-`) then `/` and an age in ms. Body and result are compact JSON (no raw newline); the
//! result is empty when there is none.
//!
//! # Keys
//! All keys of queue `N` share the hash tag `{q:N}` (one Redis Cluster slot): records at
//! `herd:{q:N}:job:ID`, ordered sets `waiting`, `active`, `completed`, and the pause flag
//! `paused`. Set members are `ID#GENERATION`.

use bytes::Bytes;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    Active,
    Completed,
    Failed,
}

impl JobState {
    fn code(self) -> char {
        match self {
            JobState::Waiting => 'w',
            JobState::Active => 'a',
            JobState::Completed => 'c',
            JobState::Failed => 'f',
        }
    }

    /// The state a header's (or a Lua script's) one-letter code names.
    #[must_use]
    pub fn from_code(code: &str) -> Option<JobState> {
        Some(match code {
            "w" => JobState::Waiting,
            "a" => JobState::Active,
            "c" => JobState::Completed,
            "f" => JobState::Failed,
            _ => return None,
        })
    }
}

/// The fields of a record the store itself reads and rewrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobHeader {
    pub state: JobState,
    /// The generation of the job's set member (`ID#GENERATION`).
    pub generation: u64,
    /// The job's number in its queue's order of adding (the queue's counter `seq`).
    pub seq: u64,
    pub due_ms: i64,
    /// Deliveries so far (1 during the first).
    pub attempt: u32,
    /// Lease expiries so far.
    pub stalled: u32,
    pub lease_until_ms: i64,
    pub finished_ms: Option<i64>,
    /// Completed jobs to keep (keeping none, a count or an age of 0: an ack deletes the
    /// record).
    pub keep_completed: Keep,
    /// Set while active. A token is never empty, `-`, or holds whitespace.
    pub lease_token: Option<String>,
}

/// BullMQ's `KeepJobs`: how many finished jobs of a kind to keep (the newest), and for how
/// long after they finished. Both unset: keep every one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    pub count: Option<u64>,
    pub age_ms: Option<u64>,
}

impl Keep {
    /// Keep every finished job.
    pub const ALL: Keep = Keep {
        count: None,
        age_ms: None,
    };
    /// Keep none: the job's record goes as it finishes.
    pub const NONE: Keep = Keep {
        count: Some(0),
        age_ms: None,
    };

    /// Keep the newest `n`.
    #[must_use]
    pub fn count(n: u64) -> Keep {
        Keep {
            count: Some(n),
            age_ms: None,
        }
    }

    /// Whether a finishing job is removed at once rather than kept.
    #[must_use]
    pub fn none(self) -> bool {
        self.count == Some(0) || self.age_ms == Some(0)
    }

    /// Whether anything is ever removed.
    #[must_use]
    pub fn all(self) -> bool {
        self.count.is_none() && self.age_ms.is_none()
    }

    /// Its form in a header: `-`, `N`, `N/AGE_MS` or `-/AGE_MS`.
    #[must_use]
    pub fn field(self) -> String {
        let count = opt(self.count.as_ref());
        match self.age_ms {
            None => count,
            Some(age) => format!("{count}/{age}"),
        }
    }

    /// Reads [`Keep::field`]'s form; `None` when `s` is not in it.
    #[must_use]
    pub fn parse(s: &str) -> Option<Keep> {
        fn digits(s: &str) -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        let (count, age) = match s.split_once('/') {
            Some((count, age)) => (count, Some(digits(age)?)),
            None => (s, None),
        };
        let count = if count == "-" {
            None
        } else {
            Some(digits(count)?)
        };
        Some(Keep { count, age_ms: age })
    }
}

/// A record taken apart: its header, and the bytes of its body and result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobParts<'a> {
    pub header: JobHeader,
    pub body: &'a [u8],
    /// Empty when there is none.
    pub result: &'a [u8],
}

/// Whether a lease token can sit in a header (the store compares tokens, it never parses them).
#[must_use]
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token != "-" && !token.bytes().any(|b| b.is_ascii_whitespace())
}

fn opt<T: std::fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A header's fields before `seq` and after it (the store puts `seq` in between when it adds
/// a job).
pub(crate) fn header_halves(h: &JobHeader) -> (String, String) {
    let before = format!("{} {}", h.state.code(), h.generation);
    let after = format!(
        "{} {} {} {} {} {} {}",
        h.due_ms,
        h.attempt,
        h.stalled,
        h.lease_until_ms,
        opt(h.finished_ms.as_ref()),
        h.keep_completed.field(),
        h.lease_token.as_deref().unwrap_or("-"),
    );
    (before, after)
}

/// Encodes a record. `body` and `result` must hold no newline (compact JSON never does).
///
/// # Panics
/// When the lease token is not [`valid_token`], or body or result holds a newline: both are
/// programming errors of the caller, and a record written so could not be read back.
#[must_use]
pub fn encode_job(h: &JobHeader, body: &[u8], result: &[u8]) -> Vec<u8> {
    assert!(
        h.lease_token.as_deref().is_none_or(valid_token),
        "a lease token must be non-empty, not '-' and hold no whitespace"
    );
    assert!(
        !body.contains(&b'\n') && !result.contains(&b'\n'),
        "a job's body and result must hold no newline"
    );
    let (before, after) = header_halves(h);
    let line = format!("J1 {before} {} {after}\n", h.seq);
    let mut out = Vec::with_capacity(line.len() + body.len() + 1 + result.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(body);
    out.push(b'\n');
    out.extend_from_slice(result);
    out
}

/// Takes a record apart; `None` when `raw` is not in this format (an older record, or not a
/// job record at all).
#[must_use]
pub fn decode_job(raw: &[u8]) -> Option<JobParts<'_>> {
    let rest = raw.strip_prefix(b"J1 ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&rest[..nl]).ok()?;
    let rest = &rest[nl + 1..];
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let (body, result) = (&rest[..nl], &rest[nl + 1..]);
    let f: Vec<&str> = line.split(' ').collect();
    let [state, generation, seq, due, attempt, stalled, lease_until, finished, keep, token] = f[..]
    else {
        return None;
    };
    // Digits only (a sign only where a time may be negative), as the Redis script checks.
    fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    fn maybe<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
        if s == "-" {
            Some(None)
        } else {
            num(s).map(Some)
        }
    }
    if result.contains(&b'\n') || token.is_empty() {
        return None;
    }
    let header = JobHeader {
        state: JobState::from_code(state)?,
        generation: num(generation)?,
        seq: num(seq)?,
        due_ms: num(due)?,
        attempt: num(attempt)?,
        stalled: num(stalled)?,
        lease_until_ms: num(lease_until)?,
        finished_ms: maybe(finished)?,
        keep_completed: Keep::parse(keep)?,
        lease_token: (token != "-").then(|| token.to_owned()),
    };
    Some(JobParts {
        header,
        body,
        result,
    })
}

/// The keys of one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    /// The keys of queue `name` (the caller checks the name: no `{`, `}`, `:`).
    #[must_use]
    pub fn new(name: &str) -> QueueKeys {
        QueueKeys {
            prefix: format!("herd:{{q:{name}}}"),
        }
    }
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The queue's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.prefix["herd:{q:".len()..self.prefix.len() - 1]
    }
    /// A job's record.
    #[must_use]
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    /// Any other key of the queue (`waiting`, `seq`, ...).
    #[must_use]
    pub fn set(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
    #[must_use]
    pub fn waiting(&self) -> String {
        self.set("waiting")
    }
    #[must_use]
    pub fn delayed(&self) -> String {
        self.set("delayed")
    }
    #[must_use]
    pub fn active(&self) -> String {
        self.set("active")
    }
    #[must_use]
    pub fn completed(&self) -> String {
        self.set("completed")
    }
    #[must_use]
    pub fn failed(&self) -> String {
        self.set("failed")
    }
    #[must_use]
    pub fn paused(&self) -> String {
        self.set("paused")
    }
    #[must_use]
    pub fn channel(&self) -> String {
        self.set("events")
    }
}

/// `ID#GENERATION`.
#[must_use]
pub fn member(id: &str, generation: u64) -> String {
    format!("{id}#{generation}")
}

/// The id and generation in a set member (`None`: not one of ours).
#[must_use]
pub fn parse_member(member: &str) -> Option<(&str, u64)> {
    let (id, generation) = member.rsplit_once('#')?;
    if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id, generation.parse().ok()?))
}

/// The score of a waiting job: its rank first (lower goes first), then its order of adding.
/// Exact in an f64 for rank < 2^22.
#[must_use]
pub fn waiting_score(rank: u64, seq: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = ((rank << 31) | (seq & 0x7fff_ffff)) as f64;
    s
}

/// The score of a waiting `lifo` job (BullMQ's `lifo`): ahead of every job scored by
/// [`waiting_score`], the newest first. Exact in an f64.
#[must_use]
pub fn lifo_score(seq: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = -(((seq & 0x7fff_ffff) + 1) as f64);
    s
}

/// The largest rank [`waiting_score`] keeps exact.
pub const MAX_RANK: u64 = (1 << 22) - 1;

/// A new job: the queue's counter `seq` gives it its number (and its id unless it has one);
/// its record is written only if no record has that id (a job of that id already there is
/// left as it is: dedupe); its member `ID#0` enters `waiting` scored by `rank`, then seq, or
/// `delayed` scored `header.due_ms` when `rank` is `None`; with `lifo` (rank 0 only) it enters
/// `waiting` ahead of every job there ([`lifo_score`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    pub id: Option<String>,
    /// The record's header (generation 0); the store sets `seq`.
    pub header: JobHeader,
    pub body: Bytes,
    pub rank: Option<u64>,
    pub lifo: bool,
}

/// What an [`Add`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub id: String,
    pub seq: u64,
    /// False: a record of that id was there (nothing was written).
    pub new: bool,
}

/// The ack of a leased job: if the record is active under `token`, it is deleted (its header
/// keeps no completed job: [`Keep::none`]) or becomes completed at `now_ms` under the next generation with
/// `result` (compact JSON, or empty), and its member leaves `active` (and, completed, enters
/// `completed` scored `now_ms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub id: String,
    pub token: String,
    pub now_ms: i64,
    pub result: Bytes,
}

/// The lease of up to `tokens.len()` waiting jobs, lowest score first, until `deadline_ms`:
/// each moves from `waiting` to `active` (scored `deadline_ms`) and, when its record is
/// waiting and names that member, becomes active with the next attempt and its token.
/// Nothing is leased while the queue's `paused` key exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub deadline_ms: i64,
    pub tokens: Vec<String>,
}

/// One queue step: the adds, then the ack (if any), then, if there was none or it succeeded,
/// the claim (if any); atomic as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStep {
    pub keys: QueueKeys,
    pub adds: Vec<Add>,
    pub finish: Option<Finish>,
    pub claim: Option<Claim>,
}

/// What the ack did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The record is completed; `keep` is its `keep_completed` (for trimming).
    Completed { keep: Keep },
    /// The record was deleted (its `keep_completed` keeps none).
    Deleted,
    /// No record of that id.
    NotFound,
    /// The record is not active under that token; its state.
    WrongLease(JobState),
    /// The record is not in this format (written by an older herd): nothing was done, and the
    /// caller takes the general path.
    Unreadable,
}

/// A job the claim leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leased {
    pub id: String,
    pub attempt: u32,
    pub token: String,
    pub lease_until_ms: i64,
    /// The record's body.
    pub body: Bytes,
}

/// What a [`QueueStep`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// One per add, in order.
    pub added: Vec<Added>,
    pub finished: Option<Finished>,
    pub leased: Vec<Leased>,
    /// Members the claim moved to `active` whose record did not match (missing, stale member,
    /// not waiting, older format): the caller sorts each out as a plain move would leave it.
    pub others: Vec<String>,
    /// The claim found the queue paused.
    pub paused: bool,
}

impl Finished {
    /// Whether the ack went through (so the claim ran).
    #[must_use]
    pub fn done(&self) -> bool {
        matches!(self, Finished::Completed { .. } | Finished::Deleted)
    }
}

impl QueueStep {
    /// Refuses what no backend could carry out.
    pub(crate) fn validate(&self) -> crate::StoreResult<()> {
        for add in &self.adds {
            let bad = |what: String| Err(crate::StoreError::Invalid(what));
            if add.id.as_deref().is_some_and(str::is_empty) {
                return bad("a job id must not be empty".into());
            }
            if add.rank.is_some_and(|r| r > MAX_RANK) {
                return bad(format!("a job's rank must be at most {MAX_RANK}"));
            }
            if add.lifo && add.rank != Some(0) {
                return bad("a lifo job is added waiting, at rank 0".into());
            }
            if add.body.contains(&b'\n') {
                return bad("a job's body must be compact JSON (no newline)".into());
            }
            if add.header.state != JobState::Waiting || add.header.generation != 0 {
                return bad("a new job is waiting, at generation 0".into());
            }
            if add.header.lease_token.is_some() {
                return bad("a new job has no lease token".into());
            }
        }
        if let Some(c) = &self.claim {
            if let Some(bad) = c.tokens.iter().find(|t| !valid_token(t)) {
                return Err(crate::StoreError::Invalid(format!(
                    "lease token {bad:?} is empty, '-' or holds whitespace"
                )));
            }
        }
        if let Some(c) = &self.claim {
            if c.tokens.is_empty() {
                return Err(crate::StoreError::Invalid(
                    "a claim names at least one lease token (one per job)".into(),
                ));
            }
        }
        if self.finish.is_some() && !self.adds.is_empty() {
            return Err(crate::StoreError::Invalid(
                "a queue step adds jobs or acks one, not both".into(),
            ));
        }
        if let Some(f) = &self.finish {
            if f.result.contains(&b'\n') {
                return Err(crate::StoreError::Invalid(
                    "an ack's result must be compact JSON (no newline)".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> JobHeader {
        JobHeader {
            state: JobState::Active,
            generation: 3,
            seq: 41,
            due_ms: 1_700_000_000_123,
            attempt: 2,
            stalled: 1,
            lease_until_ms: 1_700_000_030_000,
            finished_ms: None,
            keep_completed: Keep::NONE,
            lease_token: Some("tok-_9".into()),
        }
    }

    #[test]
    fn records_round_trip() {
        let h = header();
        let raw = encode_job(&h, br#"{"name":"a b"}"#, b"");
        let parts = decode_job(&raw).unwrap();
        assert_eq!(parts.header, h);
        assert_eq!(parts.body, br#"{"name":"a b"}"#);
        assert_eq!(parts.result, b"");
        let done = JobHeader {
            state: JobState::Completed,
            finished_ms: Some(5),
            keep_completed: Keep {
                count: None,
                age_ms: Some(3_600_000),
            },
            lease_token: None,
            ..h
        };
        let raw = encode_job(&done, b"{}", b"[1,2]");
        let parts = decode_job(&raw).unwrap();
        assert_eq!(parts.header, done);
        assert_eq!(parts.result, b"[1,2]");
    }

    #[test]
    fn other_formats_are_not_records() {
        assert!(decode_job(br#"{"id":"1"}"#).is_none());
        assert!(
            decode_job(b"J1 w 0 0 0 0 0 0 - -\n{}\n").is_none(),
            "a field short"
        );
        assert!(
            decode_job(b"J1 x 0 0 0 0 0 0 - - -\n{}\n").is_none(),
            "bad state"
        );
        assert!(
            decode_job(b"J1 w 0 0 0 0 0 0 - - -\n{}").is_none(),
            "no result line"
        );
    }

    #[test]
    #[should_panic(expected = "lease token")]
    fn a_token_with_a_space_is_refused() {
        let mut h = header();
        h.lease_token = Some("a b".into());
        let _ = encode_job(&h, b"{}", b"");
    }

    #[test]
    fn waiting_scores_rank_first_then_seq() {
        assert!(waiting_score(1, 99) < waiting_score(2, 1));
        assert!(waiting_score(2, 1) < waiting_score(2, 2));
        assert_eq!(waiting_score(MAX_RANK, 5) as u64, (MAX_RANK << 31) | 5);
    }

    #[test]
    fn keep_fields_round_trip() {
        for (field, keep) in [
            ("-", Keep::ALL),
            ("0", Keep::NONE),
            ("12", Keep::count(12)),
            (
                "-/60000",
                Keep {
                    count: None,
                    age_ms: Some(60_000),
                },
            ),
            (
                "5/0",
                Keep {
                    count: Some(5),
                    age_ms: Some(0),
                },
            ),
        ] {
            assert_eq!(Keep::parse(field), Some(keep), "{field}");
            assert_eq!(keep.field(), field);
        }
        for bad in [
            "", "/", "-/", "1/", "/5", "x", "1/2/3", "-1", "1/-2", "- /1",
        ] {
            assert_eq!(Keep::parse(bad), None, "{bad:?}");
        }
        assert!(Keep::NONE.none() && Keep::parse("7/0").unwrap().none());
        assert!(!Keep::count(1).none() && Keep::ALL.all() && !Keep::count(1).all());
    }

    #[test]
    fn keys_know_their_queue() {
        assert_eq!(QueueKeys::new("mail").name(), "mail");
    }

    #[test]
    fn members_parse() {
        assert_eq!(parse_member("a#b#12"), Some(("a#b", 12)));
        assert_eq!(parse_member("7#0"), Some(("7", 0)));
        assert_eq!(parse_member("7#"), None);
        assert_eq!(parse_member("7"), None);
        assert_eq!(member("x", 4), "x#4");
    }
}
