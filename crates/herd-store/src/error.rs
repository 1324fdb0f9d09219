//! The store's errors.

/// A store call's error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now (connection refused or lost, server down); retryable.
    #[error("store unavailable ({backend}): {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// The call did not finish in time; retryable.
    #[error("store call timed out after {millis} ms ({backend})")]
    Timeout { backend: &'static str, millis: u64 },
    /// The key holds another kind of value than the call expects (e.g. `incr` on a KV value).
    #[error("key {key:?} holds a {found}, not a {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    /// An argument the store cannot take (e.g. keys of different hash tags on a cluster).
    #[error("invalid store call: {0}")]
    Invalid(String),
    /// The store failed on its own side (disk error, corrupt file, script error).
    #[error("store failed ({backend}): {reason}")]
    Backend {
        backend: &'static str,
        reason: String,
    },
    /// A failure injected by the `Unreliable` wrapper (tests only).
    #[error("injected failure: {0}")]
    Injected(String),
}

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. } | StoreError::Injected(_)
        )
    }
}

/// A store call's result.
pub type StoreResult<T> = Result<T, StoreError>;
