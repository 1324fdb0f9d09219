//! A cached value with its times and tags, as held in L1 (moka) and encoded in L2 (the store).
//!
//! L2 layout: one line of JSON metadata, a newline, then the value's bytes untouched, so values
//! may be any bytes (images, JSON, protobuf) without escaping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One cached value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    pub(crate) stored_at_ms: i64,
    pub(crate) ttl_ms: i64,
    pub(crate) tags: Vec<String>,
    /// The Content-Type the value was stored with (HTTP API), if any.
    pub(crate) content_type: Option<String>,
    /// How long L1 keeps it (the namespace's `l1_ttl`, capped by what is left of ttl + grace).
    pub(crate) l1_for: Duration,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    at: i64,
    ttl: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ct: Option<String>,
}

impl Entry {
    /// About how much memory the entry holds (for L1's byte budget).
    pub(crate) fn approx_size(&self) -> usize {
        const OVERHEAD: usize = 128;
        self.value.len()
            + self.tags.iter().map(String::len).sum::<usize>()
            + self.content_type.as_ref().map_or(0, String::len)
            + OVERHEAD
    }

    pub(crate) fn encode(&self) -> Bytes {
        let meta = Meta {
            at: self.stored_at_ms,
            ttl: self.ttl_ms,
            tags: self.tags.clone(),
            ct: self.content_type.clone(),
        };
        let mut out = serde_json::to_vec(&meta).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(&self.value);
        Bytes::from(out)
    }

    /// Decodes an L2 record; `None` when it is not one of ours.
    pub(crate) fn decode(raw: &Bytes) -> Option<Entry> {
        let newline = raw.iter().position(|b| *b == b'\n')?;
        let meta: Meta = serde_json::from_slice(&raw[..newline]).ok()?;
        Some(Entry {
            value: raw.slice(newline + 1..),
            stored_at_ms: meta.at,
            ttl_ms: meta.ttl,
            tags: meta.tags,
            content_type: meta.ct,
            l1_for: Duration::ZERO,
        })
    }
}

/// Per-entry L1 expiry: each entry carries its own `l1_for`.
pub(crate) struct L1Expiry;

impl moka::Expiry<String, Arc<Entry>> for L1Expiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.l1_for)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.l1_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        let e = Entry {
            value: Bytes::from_static(b"\n{\"x\":1}\n\xff"),
            stored_at_ms: 42,
            ttl_ms: 1000,
            tags: vec!["user:1".into()],
            content_type: Some("application/json".into()),
            l1_for: Duration::ZERO,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Entry::decode(&Bytes::from_static(b"plain")), None);
    }

    proptest::proptest! {
        /// L2 bytes may come from anything that wrote the key: decoding never panics.
        #[test]
        fn decode_takes_any_bytes(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Entry::decode(&Bytes::from(raw));
        }
    }
}
