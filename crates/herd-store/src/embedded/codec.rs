//! How the embedded store lays values out in redb.
//!
//! `kv` maps a key to `[kind u8][version u64 BE][expires_ms u64 BE][payload]`; `expires_ms` 0 means
//! no expiry. Kinds keep a counter from being read as a value (Redis answers WRONGTYPE there too).
//! `exp` indexes `(expires_ms, key)` so the sweeper finds expired keys without a full scan.
//! Ordered sets use `zs: (set, member) -> score` and `zo: (set, score, member) -> ()`, the score
//! stored as order-preserving bits so redb's byte order is numeric order.

use redb::TableDefinition;

use crate::{StoreError, StoreResult};

pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
pub(super) const EXP: TableDefinition<(u64, &str), ()> = TableDefinition::new("exp");
pub(super) const ZS: TableDefinition<(&str, &str), u64> = TableDefinition::new("zs");
pub(super) const ZO: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("zo");

const HEADER: usize = 17;

/// What a `kv` entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Value = 0,
    Counter = 1,
    Gcra = 2,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Value => "value",
            Kind::Counter => "counter",
            Kind::Gcra => "rate-limit state",
        }
    }
}

/// One decoded `kv` entry.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) kind: Kind,
    pub(super) version: u64,
    pub(super) expires_ms: u64,
    pub(super) payload: Vec<u8>,
}

impl Entry {
    pub(super) fn decode(key: &str, raw: &[u8]) -> StoreResult<Entry> {
        let corrupt = || StoreError::Backend {
            backend: "embedded",
            reason: format!("corrupt entry for key {key:?} ({} bytes)", raw.len()),
        };
        if raw.len() < HEADER {
            return Err(corrupt());
        }
        let kind = match raw[0] {
            0 => Kind::Value,
            1 => Kind::Counter,
            2 => Kind::Gcra,
            _ => return Err(corrupt()),
        };
        let version = u64::from_be_bytes(raw[1..9].try_into().unwrap());
        let expires_ms = u64::from_be_bytes(raw[9..17].try_into().unwrap());
        Ok(Entry {
            kind,
            version,
            expires_ms,
            payload: raw[HEADER..].to_vec(),
        })
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub(super) fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }

    /// The payload as an i64 (counters) or u64 (GCRA state).
    pub(super) fn int(&self, key: &str) -> StoreResult<i64> {
        let bytes: [u8; 8] =
            self.payload
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Backend {
                    backend: "embedded",
                    reason: format!("corrupt {} for key {key:?}", self.kind.name()),
                })?;
        Ok(i64::from_be_bytes(bytes))
    }
}

/// Maps an f64 to a u64 whose unsigned order is the float's numeric order.
pub(super) fn score_bits(score: f64) -> u64 {
    // -0.0 and 0.0 are one score, as in Redis.
    let bits = if score == 0.0 {
        0f64.to_bits()
    } else {
        score.to_bits()
    };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The inverse of [`score_bits`].
pub(super) fn bits_score(bits: u64) -> f64 {
    if bits >> 63 == 1 {
        f64::from_bits(bits & !(1 << 63))
    } else {
        f64::from_bits(!bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bits_keep_numeric_order() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(score_bits(w[0]) < score_bits(w[1]), "{} < {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(bits_score(score_bits(x)), x);
        }
        assert_eq!(score_bits(-0.0), score_bits(0.0));
    }

    #[test]
    fn entry_round_trips() {
        let e = Entry {
            kind: Kind::Counter,
            version: 7,
            expires_ms: 99,
            payload: 5i64.to_be_bytes().to_vec(),
        };
        let d = Entry::decode("k", &e.encode()).unwrap();
        assert_eq!(
            (d.kind, d.version, d.expires_ms, d.int("k").unwrap()),
            (Kind::Counter, 7, 99, 5)
        );
        assert!(Entry::decode("k", &[9; 3]).is_err());
    }
}
