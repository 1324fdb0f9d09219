//! The version and TTL this node last wrote for each recent session, so that a whole-object
//! save (`PUT` without `If-Match`, express-session's `set`) and a `touch` need one store call
//! instead of a read and then a compare-and-swap.
//!
//! An entry is a guess checked by the store: the write is at the remembered version, and any
//! write since (on this node or another, a `DELETE`'s tombstone included) has moved the version
//! on, so the guess fails and the caller reads as before. A version alone could repeat only if
//! the key vanished and was created again (versions start at 1 on a new key): an entry
//! therefore lives no longer than the key surely does after the write that made it, the
//! session's TTL (a tombstone keeps an ended id for an hour, longer still). Only a key that
//! went earlier (another node's write with a shorter TTL, a Redis `maxmemory` eviction) and
//! was then created again under the same id and written up to the same version could match a
//! stale entry: the save then replaces a session that does exist, as it should, but keeps the
//! TTL remembered here rather than the new session's.

use std::time::{Duration, Instant};

/// What this node wrote last for one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Known {
    pub(super) version: u64,
    pub(super) ttl_ms: u64,
}

/// Bounded, per-entry expiry: see the module's doc.
pub(super) struct KnownVersions {
    cache: moka::sync::Cache<String, (Known, Duration)>,
}

struct ForTtl;

impl moka::Expiry<String, (Known, Duration)> for ForTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &(Known, Duration),
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &(Known, Duration),
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl KnownVersions {
    pub(super) fn new(max: u64) -> Self {
        KnownVersions {
            cache: moka::sync::Cache::builder()
                .max_capacity(max)
                .expire_after(ForTtl)
                .build(),
        }
    }

    /// Remembers a write of `id` at `version`, made just now with a TTL of `ttl_ms`; an entry
    /// outlives neither the key nor `cap`.
    pub(super) fn wrote(&self, id: &str, known: Known, cap: Duration) {
        let lives = Duration::from_millis(known.ttl_ms).min(cap);
        if !lives.is_zero() {
            self.cache.insert(id.to_owned(), (known, lives));
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<Known> {
        self.cache.get(id).map(|(k, _)| k)
    }

    pub(super) fn forget(&self, id: &str) {
        self.cache.invalidate(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_no_longer_than_the_session_s_ttl() {
        let known = KnownVersions::new(10);
        let short = Known {
            version: 3,
            ttl_ms: 30,
        };
        known.wrote("a", short, Duration::from_secs(3600));
        let long = Known {
            version: 4,
            ttl_ms: 3_600_000,
        };
        known.wrote("b", long, Duration::from_millis(30));
        assert_eq!(known.get("a"), Some(short));
        assert_eq!(known.get("b"), Some(long));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(known.get("a"), None, "past the session's TTL");
        assert_eq!(known.get("b"), None, "past the cap");
        known.wrote("c", long, Duration::from_secs(3600));
        known.forget("c");
        assert_eq!(known.get("c"), None);
    }
}
