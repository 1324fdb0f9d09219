//! Sessions: JSON objects under a random id, with a TTL, versions for compare-and-swap and a
//! per-field merge that never loses a concurrent write.
//!
//! A session is one KV record at `herd:{s:ID}` (one hash tag per session, so one Redis Cluster
//! slot): `{"data": {...}, "ttl_ms": N}`. The store's version of the key is the session's
//! version (the HTTP ETag). Whole-object saves (express-session's `save`) lose concurrent
//! writes; [`Sessions::patch`] instead re-reads and retries its compare-and-swap until its fields
//! are in, so twenty concurrent PATCHes of different fields all survive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_store::{Backend as _, Expect, Store, Written};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::ids;

mod known;
use known::{Known, KnownVersions};

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// TTL when `create` names none (connect-redis: 86400 s).
    pub default_ttl: Duration,
    /// Reset the TTL on a read (express-session `rolling`).
    pub rolling: bool,
    /// With `rolling`, this node renews a session's TTL on a read at most once per this long,
    /// and at most once per tenth of the session's TTL (connect-mongo `touchAfter`): a renewal
    /// is a store write, durable on the embedded store, and a session read many times a second
    /// needs one now and then, not one per read. Zero renews on every read. A session may so
    /// expire up to this long (or a tenth of its TTL) before strict rolling would let it.
    pub touch_after: Duration,
    /// The largest a session's stored record may grow (its data as JSON, plus a few bytes):
    /// a write past it is refused (`TooLarge`, 413). herd sets it to `[services]
    /// max_body_size`, so that a session merged up by PATCHes can still be read and saved
    /// whole in one request.
    pub max_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            default_ttl: Duration::from_secs(86_400),
            rolling: false,
            touch_after: Duration::from_secs(60),
            max_bytes: 1024 * 1024,
        }
    }
}

/// A session's id and version after a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRef {
    pub id: String,
    pub version: u64,
}

/// A session as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub id: String,
    pub version: u64,
    pub data: Map<String, Value>,
    /// The session's TTL in milliseconds (reset by writes and, when rolling, by reads).
    pub ttl_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    data: Map<String, Value>,
    ttl_ms: u64,
}

/// What the key of a deleted or regenerated session holds for [`TOMBSTONE_TTL`]: reads see no
/// session, and a create under that id (`create_with_id`, express-session's save of a session
/// it had loaded) finds the key taken. A request that loaded the session before a logout and
/// saves after it cannot bring the session back.
const TOMBSTONE: &[u8] = b"{\"ended\":true}";

/// How long an ended session's id stays reserved: far longer than any request in flight.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// How many times a merge retries its compare-and-swap before giving up (each retry waits a
/// little, randomised, so contenders spread out).
const MAX_CAS_TRIES: u32 = 64;

/// The session service.
pub struct Sessions {
    store: Arc<Store>,
    config: SessionConfig,
    /// When this node last renewed each recently read session (bounded; an entry that falls
    /// out only costs one early renewal).
    touched: moka::sync::Cache<String, Instant>,
    /// The version and TTL this node last wrote for each recent session (see [`known`]).
    known: KnownVersions,
}

/// The most sessions whose last renewal a node remembers.
const TOUCHED_MAX: u64 = 100_000;

/// Whether a read renews the TTL: when this node has not renewed it within the window (the
/// smaller of `touch_after` and a tenth of the TTL).
fn needs_touch(last: Option<Instant>, now: Instant, touch_after: Duration, ttl: Duration) -> bool {
    let window = touch_after.min(ttl / 10);
    last.is_none_or(|at| now.saturating_duration_since(at) >= window)
}

/// A session TTL in ms, refusing one under 1 ms (the store's resolution).
fn ttl_ms(ttl: Duration) -> ServiceResult<u64> {
    if ttl < Duration::from_millis(1) {
        return Err(ServiceError::invalid(
            "ttl",
            "a session TTL must be at least 1ms",
            "pass e.g. \"ttl\": \"1h\"",
        ));
    }
    Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

fn key(id: &str) -> String {
    format!("herd:{{s:{id}}}")
}

impl Sessions {
    pub(crate) fn new(store: Arc<Store>, config: SessionConfig) -> Self {
        let touched = moka::sync::Cache::builder()
            .max_capacity(TOUCHED_MAX)
            .time_to_live(config.touch_after.max(Duration::from_millis(1)))
            .build();
        Sessions {
            store,
            config,
            touched,
            known: KnownVersions::new(TOUCHED_MAX),
        }
    }

    /// Creates a session holding `data`.
    ///
    /// # Errors
    /// Store errors; `Invalid` for a zero TTL.
    pub async fn create(
        &self,
        data: Map<String, Value>,
        ttl: Option<Duration>,
    ) -> ServiceResult<SessionRef> {
        let ttl = ttl.unwrap_or(self.config.default_ttl);
        let record = Record {
            data,
            ttl_ms: ttl_ms(ttl)?,
        };
        // A 128-bit random id does not collide in practice; Absent makes sure it never
        // overwrites one that does.
        let value = self.encoded("new", &record)?;
        loop {
            let id = ids::random_id();
            match self
                .store
                .put(&key(&id), value.clone(), Expect::Absent, Some(ttl))
                .await?
            {
                Written::Ok(version) => {
                    self.remember(&id, version, record.ttl_ms);
                    return Ok(SessionRef { id, version });
                }
                Written::Conflict(_) => continue,
            }
        }
    }

    /// Creates a session under an id the caller made (express-session makes its own ids and
    /// then saves): 22 to 128 characters of base64url (`A-Z a-z 0-9 - _`), so at least 128
    /// bits when random. Create-only: an id in use is `Exists` (412), never overwritten.
    ///
    /// # Errors
    /// `Invalid` id or TTL, `Exists`, store errors.
    pub async fn create_with_id(
        &self,
        id: &str,
        data: Map<String, Value>,
        ttl: Option<Duration>,
    ) -> ServiceResult<SessionRef> {
        if !ids::looks_like_id(id) {
            return Err(ServiceError::invalid(
                "session id",
                format!(
                    "a session id is 22 to 128 characters of A-Z, a-z, 0-9, '-' and '_'; got {} characters",
                    id.len()
                ),
                "use a random base64url id of at least 128 bits, as express-session's genid makes",
            ));
        }
        let ttl = ttl.unwrap_or(self.config.default_ttl);
        let record = Record {
            data,
            ttl_ms: ttl_ms(ttl)?,
        };
        let value = self.encoded(id, &record)?;
        match self
            .store
            .put(&key(id), value, Expect::Absent, Some(ttl))
            .await?
        {
            Written::Ok(version) => {
                self.remember(id, version, record.ttl_ms);
                Ok(SessionRef {
                    id: id.to_owned(),
                    version,
                })
            }
            Written::Conflict(_) => Err(ServiceError::Exists {
                // Live, or ended within the hour (a tombstone): either way not this caller's.
                what: format!(
                    "session {}… (live, or ended by a logout or regenerate within the hour: ids are not reused)",
                    id.get(..6).unwrap_or(id)
                ),
            }),
        }
    }

    async fn read(&self, id: &str) -> ServiceResult<Option<(Record, u64)>> {
        if !ids::looks_like_id(id) {
            return Ok(None);
        }
        let Some(found) = self.store.get(&key(id)).await? else {
            return Ok(None);
        };
        if found.value.as_ref() == TOMBSTONE {
            return Ok(None);
        }
        let record: Record =
            serde_json::from_slice(&found.value).map_err(|e| ServiceError::Corrupt {
                // A session id is a credential: errors (and so logs) show its first characters.
                key: key(&format!("{}…", id.get(..6).unwrap_or(id))),
                reason: e.to_string(),
            })?;
        Ok(Some((record, found.version)))
    }

    /// Reads a session; with `rolling`, resets its TTL (at most once per `touch_after` on
    /// this node).
    ///
    /// # Errors
    /// `NotFound`, store errors.
    pub async fn get(&self, id: &str) -> ServiceResult<Session> {
        let (record, version) = self.read(id).await?.ok_or_else(|| not_found(id))?;
        let ttl = Duration::from_millis(record.ttl_ms);
        let now = Instant::now();
        if self.config.rolling
            && needs_touch(self.touched.get(id), now, self.config.touch_after, ttl)
        {
            // A write between the read and the touch already reset the TTL.
            self.store
                .touch(&key(id), ttl, Expect::Version(version))
                .await?;
            if !self.config.touch_after.is_zero() {
                self.touched.insert(id.to_owned(), now);
            }
        }
        Ok(Session {
            id: id.to_owned(),
            version,
            data: record.data,
            ttl_ms: record.ttl_ms,
        })
    }

    /// Replaces a session's data; with `if_match`, only if the session is at that version;
    /// with `ttl`, the session keeps that TTL from now on (connect-redis sets the cookie's
    /// `maxAge` on every save), otherwise the one it had.
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch` (412), `Invalid` zero TTL, store errors.
    pub async fn put(
        &self,
        id: &str,
        data: Map<String, Value>,
        if_match: Option<u64>,
        ttl: Option<Duration>,
    ) -> ServiceResult<SessionRef> {
        let new_ttl = ttl.map(ttl_ms).transpose()?;
        let known = self.known.get(id);
        if let Some(expected) = if_match {
            // The TTL the session has at `expected`: remembered from this node's write of that
            // version, or read.
            let (kept, guessed) = match known {
                Some(k) if k.version == expected => (k.ttl_ms, true),
                _ => {
                    let (old, _) = self.read(id).await?.ok_or_else(|| not_found(id))?;
                    (old.ttl_ms, false)
                }
            };
            let record = Record {
                data,
                ttl_ms: new_ttl.unwrap_or(kept),
            };
            return match self.write(id, &record, Expect::Version(expected)).await {
                // Without the read, a session ended meanwhile (its tombstone is a newer
                // version) would be 412: it is 404, as when read first.
                Err(ServiceError::VersionMismatch { .. }) if guessed => {
                    let (_, current) = self.read(id).await?.ok_or_else(|| not_found(id))?;
                    Err(ServiceError::VersionMismatch {
                        what: format!("session {id}"),
                        expected,
                        current: Some(current),
                    })
                }
                done => done,
            };
        }
        // Without If-Match a PUT replaces whatever is there, last write wins (Redis SET), but
        // only a session that still exists: the write is at the version read, and retried on
        // a newer one. A PUT racing a DELETE (logout) or a regenerate (login) never brings the
        // old id back. The version this node wrote last is tried first, with no read: one
        // store call when no one else wrote the session since.
        let mut record = Record { data, ttl_ms: 0 };
        if let Some(k) = known {
            record.ttl_ms = new_ttl.unwrap_or(k.ttl_ms);
            match self.write(id, &record, Expect::Version(k.version)).await {
                Err(ServiceError::VersionMismatch { .. }) => {}
                done => return done,
            }
        }
        for attempt in 0..MAX_CAS_TRIES {
            let (old, version) = self.read(id).await?.ok_or_else(|| not_found(id))?;
            record.ttl_ms = new_ttl.unwrap_or(old.ttl_ms);
            match self.write(id, &record, Expect::Version(version)).await {
                Err(ServiceError::VersionMismatch { .. }) => backoff(attempt).await,
                done => return done,
            }
        }
        Err(ServiceError::Contended {
            what: format!("session {id}"),
            tries: MAX_CAS_TRIES,
        })
    }

    async fn write(&self, id: &str, record: &Record, expect: Expect) -> ServiceResult<SessionRef> {
        let ttl = Duration::from_millis(record.ttl_ms);
        let value = self.encoded(id, record)?;
        match self.store.put(&key(id), value, expect, Some(ttl)).await? {
            Written::Ok(version) => {
                self.remember(id, version, record.ttl_ms);
                Ok(SessionRef {
                    id: id.to_owned(),
                    version,
                })
            }
            Written::Conflict(None) => Err(not_found(id)),
            Written::Conflict(current) => Err(ServiceError::VersionMismatch {
                what: format!("session {id}"),
                expected: match expect {
                    Expect::Version(v) => v,
                    _ => 0,
                },
                current,
            }),
        }
    }

    /// Merges `fields` into the session: each field replaces the stored one, `null` removes it
    /// (JSON merge patch, top level). Without `if_match` it retries its compare-and-swap until
    /// it wins, so concurrent patches of different fields all survive. With `ttl`, the
    /// session keeps that TTL from now on.
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch` (with `if_match`), `Contended`, `Invalid` zero TTL, store
    /// errors.
    pub async fn patch(
        &self,
        id: &str,
        fields: Map<String, Value>,
        if_match: Option<u64>,
        ttl: Option<Duration>,
    ) -> ServiceResult<SessionRef> {
        let new_ttl = ttl.map(ttl_ms).transpose()?;
        for attempt in 0..MAX_CAS_TRIES {
            let (mut record, version) = self.read(id).await?.ok_or_else(|| not_found(id))?;
            if let Some(expected) = if_match {
                if expected != version {
                    return Err(ServiceError::VersionMismatch {
                        what: format!("session {id}"),
                        expected,
                        current: Some(version),
                    });
                }
            }
            let changes = fields.iter().any(|(k, v)| {
                if v.is_null() {
                    record.data.contains_key(k)
                } else {
                    record.data.get(k) != Some(v)
                }
            });
            if !changes && new_ttl.is_none() {
                // Nothing to write: the version stays (a client holding it as its ETag keeps
                // a valid If-Match); the expiry is renewed as the write would have.
                let ttl = Duration::from_millis(record.ttl_ms);
                if self
                    .store
                    .touch(&key(id), ttl, Expect::Version(version))
                    .await?
                {
                    return Ok(SessionRef {
                        id: id.to_owned(),
                        version,
                    });
                }
                // Changed or gone since the read: look again.
                backoff(attempt).await;
                continue;
            }
            if let Some(ms) = new_ttl {
                record.ttl_ms = ms;
            }
            for (k, v) in &fields {
                if v.is_null() {
                    record.data.remove(k);
                } else {
                    record.data.insert(k.clone(), v.clone());
                }
            }
            match self.write(id, &record, Expect::Version(version)).await {
                Err(ServiceError::VersionMismatch { .. }) if if_match.is_none() => {
                    backoff(attempt).await;
                }
                other => return other,
            }
        }
        Err(ServiceError::Contended {
            what: format!("session {id}"),
            tries: MAX_CAS_TRIES,
        })
    }

    /// Deletes a session; with `if_match`, only at that version.
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch`, store errors.
    pub async fn delete(&self, id: &str, if_match: Option<u64>) -> ServiceResult<()> {
        if !ids::looks_like_id(id) {
            return Err(not_found(id));
        }
        for attempt in 0..MAX_CAS_TRIES {
            let (_, version) = self.read(id).await?.ok_or_else(|| not_found(id))?;
            if let Some(expected) = if_match.filter(|v| *v != version) {
                return Err(ServiceError::VersionMismatch {
                    what: format!("session {id}"),
                    expected,
                    current: Some(version),
                });
            }
            if self.end(id, version).await? {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(ServiceError::Contended {
            what: format!("session {id}"),
            tries: MAX_CAS_TRIES,
        })
    }

    /// Ends the session at `version`: its key holds the tombstone from now on. `false` when it
    /// changed (or ended) since.
    async fn end(&self, id: &str, version: u64) -> ServiceResult<bool> {
        self.known.forget(id);
        let written = self
            .store
            .put(
                &key(id),
                Bytes::from_static(TOMBSTONE),
                Expect::Version(version),
                Some(TOMBSTONE_TTL),
            )
            .await?;
        Ok(matches!(written, Written::Ok(_)))
    }

    /// Resets a session's TTL without reading it (express-session's store `touch`); with
    /// `ttl`, the session gets that TTL from now on (a write of the session, so its version
    /// grows).
    ///
    /// # Errors
    /// `NotFound`, `Invalid` zero TTL, store errors.
    pub async fn touch(&self, id: &str, ttl: Option<Duration>) -> ServiceResult<()> {
        if ttl.is_some() {
            return self.patch(id, Map::new(), None, ttl).await.map(|_| ());
        }
        // At the version this node wrote last, if no one wrote since: no read.
        if let Some(k) = self.known.get(id) {
            let ttl = Duration::from_millis(k.ttl_ms);
            if self
                .store
                .touch(&key(id), ttl, Expect::Version(k.version))
                .await?
            {
                return Ok(());
            }
        }
        let (record, version) = self.read(id).await?.ok_or_else(|| not_found(id))?;
        let ttl = Duration::from_millis(record.ttl_ms);
        // At the version read: a write in between (a new TTL, say) set the expiry itself and
        // must not be cut back to the TTL read here; the session then needs no touch.
        if self
            .store
            .touch(&key(id), ttl, Expect::Version(version))
            .await?
            || self.store.get(&key(id)).await?.is_some()
        {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// Moves a session to a fresh id (call at login: the id an attacker planted stops working).
    /// The old id is deleted only if the session did not change meanwhile; otherwise the copy is
    /// retried with the newer data.
    ///
    /// # Errors
    /// `NotFound`, `Contended`, store errors.
    pub async fn regenerate(&self, id: &str) -> ServiceResult<SessionRef> {
        self.regenerate_at(id, None).await
    }

    /// [`Sessions::regenerate`], only if the session is at version `if_match` (when given);
    /// otherwise `VersionMismatch` and nothing moves.
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch`, `Contended`, store errors.
    pub async fn regenerate_at(
        &self,
        id: &str,
        if_match: Option<u64>,
    ) -> ServiceResult<SessionRef> {
        for attempt in 0..MAX_CAS_TRIES {
            let (record, version) = self.read(id).await?.ok_or_else(|| not_found(id))?;
            if let Some(expected) = if_match.filter(|v| *v != version) {
                return Err(ServiceError::VersionMismatch {
                    what: format!("session {id}"),
                    expected,
                    current: Some(version),
                });
            }
            let created = self
                .create(record.data, Some(Duration::from_millis(record.ttl_ms)))
                .await?;
            if self.end(id, version).await? {
                return Ok(created);
            }
            // The old session changed (or vanished) under us: drop the copy and start over.
            self.store.delete(&key(&created.id), Expect::Any).await?;
            backoff(attempt).await;
        }
        Err(ServiceError::Contended {
            what: format!("session {id}"),
            tries: MAX_CAS_TRIES,
        })
    }
}

impl Sessions {
    fn remember(&self, id: &str, version: u64, ttl_ms: u64) {
        self.known
            .wrote(id, Known { version, ttl_ms }, TOMBSTONE_TTL);
    }
}

fn encode(record: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

impl Sessions {
    /// The record as stored, refused when over `max_bytes`.
    fn encoded(&self, id: &str, record: &Record) -> ServiceResult<Bytes> {
        let value = encode(record);
        if value.len() > self.config.max_bytes {
            return Err(ServiceError::TooLarge {
                what: format!("session {}…", id.get(..6).unwrap_or(id)),
                size: value.len(),
                limit: self.config.max_bytes,
            });
        }
        Ok(value)
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(format!("session {id}"))
}

/// A short randomised pause between compare-and-swap retries (up to ~10 ms).
pub(crate) async fn backoff(attempt: u32) {
    use rand::Rng as _;
    let cap = 1u64 << attempt.min(3);
    let micros = rand::rng().random_range(0..=cap * 1_250);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_renews_once_per_window() {
        let t0 = Instant::now();
        let (minute, day) = (Duration::from_secs(60), Duration::from_secs(86_400));
        assert!(needs_touch(None, t0, minute, day), "never renewed here");
        let later = |s| t0 + Duration::from_secs(s);
        assert!(!needs_touch(Some(t0), later(59), minute, day));
        assert!(needs_touch(Some(t0), later(60), minute, day));
        // A short TTL shrinks the window to a tenth of it.
        let short = Duration::from_secs(20);
        assert!(!needs_touch(Some(t0), later(1), minute, short));
        assert!(needs_touch(Some(t0), later(2), minute, short));
        // Zero: every read.
        assert!(needs_touch(Some(t0), t0, Duration::ZERO, day));
    }
}
