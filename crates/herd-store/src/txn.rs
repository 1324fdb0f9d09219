//! [`Txn`]: several writes applied together or not at all, guarded by version checks (etcd's
//! compare-then). One transaction is one Lua script on Redis and one op of the embedded store's
//! group-committed write transaction, so a caller that needs "if the record is still at version
//! 7, rewrite it and move its member between two sets" pays one round trip (one commit) instead
//! of three.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;

use crate::{args, Expect, StoreError, StoreResult};

/// One write inside a [`Txn`].
#[derive(Clone, Debug, PartialEq)]
pub enum TxnOp {
    /// Writes a value as `put(.., Expect::Any, ttl)` does: its version grows by one (or starts
    /// at 1); `ttl: None` keeps no expiry.
    Put {
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    },
    /// Removes the key, whatever it holds (as `delete(.., Expect::Any)`).
    Delete { key: String },
    /// Adds or re-scores members of an ordered set.
    Zadd {
        key: String,
        members: Vec<(String, f64)>,
    },
    /// Removes members of an ordered set.
    Zrem { key: String, members: Vec<String> },
}

impl TxnOp {
    pub(crate) fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. }
            | TxnOp::Delete { key }
            | TxnOp::Zadd { key, .. }
            | TxnOp::Zrem { key, .. } => key,
        }
    }
}

/// Checks, then writes: if every check holds, every op is applied, in order, atomically;
/// otherwise nothing is written. Checks are on values (a check on an ordered set, counter or
/// rate-limit state fails with `WrongType`); a key may not be both a value and an ordered set
/// within one transaction. On Redis Cluster every key shares one hash tag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Txn {
    pub checks: Vec<(String, Expect)>,
    pub ops: Vec<TxnOp>,
}

/// What [`crate::Backend::txn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every check held and every op was applied.
    Committed,
    /// Check number `check` (0-based) failed; nothing was written. `current` is that key's
    /// version (`None`: absent).
    Conflict { check: usize, current: Option<u64> },
}

impl Txn {
    /// An empty transaction (it commits and writes nothing).
    #[must_use]
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a check: the value at `key` must meet `expect`.
    #[must_use]
    pub fn check(mut self, key: impl Into<String>, expect: Expect) -> Txn {
        self.checks.push((key.into(), expect));
        self
    }

    /// Adds a write of a value.
    #[must_use]
    pub fn put(mut self, key: impl Into<String>, value: Bytes, ttl: Option<Duration>) -> Txn {
        self.ops.push(TxnOp::Put {
            key: key.into(),
            value,
            ttl,
        });
        self
    }

    /// Adds a removal of a key.
    #[must_use]
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(TxnOp::Delete { key: key.into() });
        self
    }

    /// Adds members to an ordered set.
    #[must_use]
    pub fn zadd(mut self, key: impl Into<String>, members: Vec<(String, f64)>) -> Txn {
        self.ops.push(TxnOp::Zadd {
            key: key.into(),
            members,
        });
        self
    }

    /// Removes members from an ordered set.
    #[must_use]
    pub fn zrem(mut self, key: impl Into<String>, members: Vec<String>) -> Txn {
        self.ops.push(TxnOp::Zrem {
            key: key.into(),
            members,
        });
        self
    }

    /// This transaction's checks and ops followed by `other`'s: several steps committed as
    /// one (a conflict names the check's position in the joined list).
    #[must_use]
    pub fn and(mut self, other: Txn) -> Txn {
        self.checks.extend(other.checks);
        self.ops.extend(other.ops);
        self
    }

    /// Every key, checks first, then ops, in order (the Redis script's KEYS).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.checks
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.ops.iter().map(TxnOp::key))
    }

    /// Refuses what no backend could apply all-or-nothing: bad scores and TTLs, and a key
    /// used both as a value and as an ordered set (Redis would find the clash only half-way).
    pub(crate) fn validate(&self) -> StoreResult<()> {
        let mut values = HashSet::new();
        let mut sets = HashSet::new();
        for (key, _) in &self.checks {
            values.insert(key.as_str());
        }
        for op in &self.ops {
            match op {
                TxnOp::Put { key, ttl, .. } => {
                    if let Some(t) = ttl {
                        args::ttl_ms(key, *t)?;
                    }
                    values.insert(key.as_str());
                }
                TxnOp::Delete { .. } => {}
                TxnOp::Zadd { key, members } => {
                    for (_, s) in members {
                        args::score(key, *s)?;
                    }
                    sets.insert(key.as_str());
                }
                TxnOp::Zrem { key, .. } => {
                    sets.insert(key.as_str());
                }
            }
        }
        if let Some(both) = values.intersection(&sets).next() {
            return Err(StoreError::Invalid(format!(
                "transaction uses {both:?} both as a value and as an ordered set; \
                 split it into two transactions"
            )));
        }
        Ok(())
    }
}
