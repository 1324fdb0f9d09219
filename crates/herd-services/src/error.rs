//! The services' errors. Each variant says how an HTTP caller should see it
//! ([`ServiceError::status`]) and how to fix it ([`ServiceError::hint`]).

use herd_store::StoreError;

/// A service call's error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store failed; `StoreError::is_retryable` says whether trying later may help.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such session, job, lock holder, schedule or cache entry.
    #[error("{what} not found")]
    NotFound { what: String },
    /// A conditional write (If-Match) named a version that is not the current one.
    #[error("{what} is at version {}, not {expected}", current.map_or_else(|| "(none: it does not exist)".to_owned(), |v| v.to_string()))]
    VersionMismatch {
        what: String,
        expected: u64,
        current: Option<u64>,
    },
    /// A create-only write (If-None-Match: *) found the record there already.
    #[error("{what} exists already")]
    Exists { what: String },
    /// A write would make a record larger than its limit.
    #[error("{what} would be {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    /// A compare-and-swap kept losing to concurrent writers.
    #[error("gave up on {what} after {tries} conflicting concurrent writes")]
    Contended { what: String, tries: u32 },
    /// The lease token does not match the job's current lease (expired and re-delivered, or wrong).
    #[error("job {job} is not leased with this token (state {state})")]
    WrongLease { job: String, state: &'static str },
    /// The call does not apply to what the record is doing now (e.g. removing a leased job).
    #[error("{what} cannot be changed: {reason}")]
    Busy {
        what: String,
        reason: String,
        hint: String,
    },
    /// The lock is not held with this token.
    #[error("lock {name} is not held with this token")]
    NotHolder { name: String },
    /// The lock stayed held by someone else until the wait ran out.
    #[error("lock {name} is held by another owner (waited {waited_ms} ms)")]
    LockBusy { name: String, waited_ms: u64 },
    /// Bad input from the caller.
    #[error("invalid {what}: {reason}")]
    Invalid {
        what: String,
        reason: String,
        hint: String,
    },
    /// A stored record could not be decoded (written by something else, or corrupt).
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// A cache loader failed.
    #[error("loader for cache key {key} failed: {reason}")]
    Load { key: String, reason: String },
    /// This node is shutting down: a wait it held (a lock's) ended unanswered.
    #[error("{what} ended unanswered: this herd node is shutting down")]
    ShuttingDown { what: String },
}

impl ServiceError {
    /// Shorthand for [`ServiceError::Invalid`].
    pub(crate) fn invalid(
        what: impl Into<String>,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        ServiceError::Invalid {
            what: what.into(),
            reason: reason.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        ServiceError::NotFound { what: what.into() }
    }

    /// The HTTP status this error maps to.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::Store(e) if e.is_retryable() => 503,
            ServiceError::Store(StoreError::Invalid(_) | StoreError::WrongType { .. }) => 400,
            ServiceError::Store(_) | ServiceError::Corrupt { .. } => 500,
            ServiceError::NotFound { .. } => 404,
            ServiceError::TooLarge { .. } => 413,
            ServiceError::VersionMismatch { .. } | ServiceError::Exists { .. } => 412,
            ServiceError::Contended { .. }
            | ServiceError::WrongLease { .. }
            | ServiceError::Busy { .. }
            | ServiceError::NotHolder { .. }
            | ServiceError::LockBusy { .. } => 409,
            ServiceError::Invalid { .. } => 400,
            ServiceError::Load { .. } => 502,
            ServiceError::ShuttingDown { .. } => 503,
        }
    }

    /// How the caller can fix or work around the error.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            ServiceError::Store(e) if e.is_retryable() => {
                "the shared store is unavailable; retry later and check GET /store/status on the admin API. A write cut off this way (a timeout, a lost connection) may still have been applied: read before retrying it, and give jobs a job_id so a retried add cannot enqueue twice".into()
            }
            ServiceError::Store(_) => "check the store's logs and herd's [store] settings".into(),
            ServiceError::NotFound { .. } => "check the name or id; it may have expired or been deleted".into(),
            ServiceError::VersionMismatch { .. } => {
                "re-read the current value and its version (ETag), then retry with If-Match set to it".into()
            }
            ServiceError::Exists { .. } => "a store saving a session it loaded earlier should drop this save (the session was ended meanwhile); to replace a live session, PUT without If-None-Match".into(),
            ServiceError::TooLarge { .. } => "remove fields the session no longer needs (PATCH them to null), or raise [services] max_body_size".into(),
            ServiceError::Contended { .. } => "retry; many writers are changing the same record".into(),
            ServiceError::WrongLease { state, .. } => match *state {
                "completed" => "the job is completed: it was acked already (a repeated ack changes nothing), or its lease expired and another worker finished it".into(),
                "failed" => "the job is dead-lettered: it was failed already, or it stalled too often; GET /v1/queues/{queue}/dead lists it".into(),
                "delayed" => "the job waits for a retry: it was failed already with this lease, or the lease expired".into(),
                _ => "either the token is not one this job was given, or its lease ran out and the job was re-delivered with a new one; use the lease_token from your latest reserve, and extend long-running jobs before the lease runs out".into(),
            },
            ServiceError::NotHolder { .. } => "the lock expired or was taken over; acquire it again".into(),
            ServiceError::LockBusy { .. } => "retry later or pass a longer \"wait\"".into(),
            ServiceError::Invalid { hint, .. } | ServiceError::Busy { hint, .. } => hint.clone(),
            ServiceError::Corrupt { .. } => "delete the record; it was not written by this version of herd".into(),
            ServiceError::Load { .. } => "check the origin the cache loads from".into(),
            ServiceError::ShuttingDown { .. } => {
                "nothing was done; retry on another node, or on this one after its restart".into()
            }
        }
    }
}

/// A service call's result.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// A caller's string as an error shows it: quoted, escaped, and cut after 64 characters (an
/// error never echoes a whole oversized input back).
pub(crate) fn quoted(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}
