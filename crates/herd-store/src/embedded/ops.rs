//! The write operations the writer thread applies, each atomic inside the batch's transaction.
//!
//! Every op checks everything it needs before it writes anything, so an op that fails with a
//! logical error (`WrongType`, `Invalid`) leaves no trace even though its batch commits.
//! A storage error (`StoreError::Backend`) aborts the whole batch instead.

use bytes::Bytes;
#[cfg(test)]
use redb::ReadableTableMetadata;
use redb::{ReadableTable, Table, WriteTransaction};

use super::codec::{bits_score, score_bits, Entry, Kind, EXP, KV, ZO, ZS};
use super::read::{live_entry, raw_entry, zrange, zset_exists};
use super::OrBackend;
use crate::queue::{QueueStep, StepOutcome};
use crate::{
    args, Expect, Gcra, GcraDecision, StoreError, StoreResult, Txn, TxnOp, TxnOutcome, Written,
};

/// One queued write.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Put {
        key: String,
        value: Bytes,
        expect: Expect,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: String,
        expect: Expect,
    },
    Touch {
        key: String,
        ttl_ms: u64,
        expect: Expect,
    },
    Incr {
        key: String,
        by: i64,
        ttl_ms: Option<u64>,
    },
    Acquire {
        key: String,
        fence_key: String,
        value: Bytes,
        ttl_ms: u64,
    },
    Zadd {
        key: String,
        members: Vec<(String, f64)>,
    },
    Zrem {
        key: String,
        members: Vec<String>,
    },
    Zmove {
        src: String,
        dst: String,
        max_score: f64,
        count: usize,
        dst_score: f64,
    },
    Gcra {
        key: String,
        params: Gcra,
        /// When the call was made (µs): a batch waits for the commit before it, so the
        /// batch's own clock would put every request of a busy millisecond at one instant.
        now_us: u64,
    },
    /// Checks, then several writes, all or nothing.
    Txn(Box<Txn>),
    /// A queue's ack and lease in one step (`crate::queue`).
    QueueStep(Box<QueueStep>),
    /// Removes up to `limit` expired keys (the background sweeper).
    Sweep {
        limit: usize,
    },
}

/// What an op answers.
#[derive(Debug)]
pub(super) enum Reply {
    Written(Written),
    Bool(bool),
    Int(i64),
    Fence(Option<u64>),
    Count(u64),
    Members(Vec<(String, f64)>),
    Gcra(GcraDecision),
    Txn(TxnOutcome),
    Step(StepOutcome),
}

/// The tables of one write transaction.
pub(super) struct Tables<'t> {
    pub(super) kv: Table<'t, &'static str, &'static [u8]>,
    exp: Table<'t, (u64, &'static str), ()>,
    pub(super) zs: Table<'t, (&'static str, &'static str), u64>,
    pub(super) zo: Table<'t, (&'static str, u64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> StoreResult<Tables<'t>> {
        Ok(Tables {
            kv: txn.open_table(KV).or_backend()?,
            exp: txn.open_table(EXP).or_backend()?,
            zs: txn.open_table(ZS).or_backend()?,
            zo: txn.open_table(ZO).or_backend()?,
        })
    }

    /// Writes `entry` at `key`, keeping the expiry index in step with the `old` entry.
    fn store(&mut self, key: &str, entry: &Entry, old: Option<&Entry>) -> StoreResult<()> {
        if let Some(old) = old.filter(|o| o.expires_ms != 0 && o.expires_ms != entry.expires_ms) {
            self.exp.remove((old.expires_ms, key)).or_backend()?;
        }
        if entry.expires_ms != 0 {
            self.exp.insert((entry.expires_ms, key), ()).or_backend()?;
        }
        self.kv
            .insert(key, entry.encode().as_slice())
            .or_backend()?;
        Ok(())
    }

    pub(super) fn remove(&mut self, key: &str, old: &Entry) -> StoreResult<()> {
        if old.expires_ms != 0 {
            self.exp.remove((old.expires_ms, key)).or_backend()?;
        }
        self.kv.remove(key).or_backend()?;
        Ok(())
    }

    pub(super) fn zset_insert(&mut self, set: &str, member: &str, score: f64) -> StoreResult<()> {
        let bits = score_bits(score);
        if let Some(old) = self.zs.insert((set, member), bits).or_backend()? {
            let old = old.value();
            if old != bits {
                self.zo.remove((set, old, member)).or_backend()?;
            }
        }
        self.zo.insert((set, bits, member), ()).or_backend()?;
        Ok(())
    }

    /// Removes every member of `set`; true when there were any.
    fn zset_clear(&mut self, set: &str) -> StoreResult<bool> {
        let mut members = Vec::new();
        for item in self.zs.range((set, "")..).or_backend()? {
            let (k, v) = item.or_backend()?;
            let (s, m) = k.value();
            if s != set {
                break;
            }
            members.push((m.to_owned(), v.value()));
        }
        for (m, bits) in &members {
            self.zs.remove((set, m.as_str())).or_backend()?;
            self.zo.remove((set, *bits, m.as_str())).or_backend()?;
        }
        Ok(!members.is_empty())
    }

    pub(super) fn zset_remove(&mut self, set: &str, member: &str) -> StoreResult<bool> {
        let old = self
            .zs
            .remove((set, member))
            .or_backend()?
            .map(|g| g.value());
        if let Some(bits) = old {
            self.zo.remove((set, bits, member)).or_backend()?;
        }
        Ok(old.is_some())
    }
}

fn wrong_type(key: &str, expected: &'static str, found: Kind) -> StoreError {
    StoreError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.name(),
    }
}

/// The live value entry at `key`, refusing counters and rate-limit state.
pub(super) fn live_value(
    t: &Tables<'_>,
    key: &str,
    now: u64,
) -> StoreResult<(Option<Entry>, Option<Entry>)> {
    let raw = raw_entry(&t.kv, key)?;
    let live = raw.clone().filter(|e| !e.expired(now));
    if let Some(e) = &live {
        if e.kind != Kind::Value {
            return Err(wrong_type(key, "value", e.kind));
        }
    }
    Ok((raw, live))
}

/// The entry at `key` (raw, and live) for a value op, refusing any other kind. A live entry
/// means no ordered set shares the key (every write keeps that so), so the ordered-set probe
/// runs only when there is none.
pub(super) fn value_slot(
    t: &Tables<'_>,
    key: &str,
    now: u64,
) -> StoreResult<(Option<Entry>, Option<Entry>)> {
    let (raw, live) = live_value(t, key, now)?;
    if live.is_none() {
        no_zset(t, key, "value")?;
    }
    Ok((raw, live))
}

/// Writes a value over `live` (version + 1, or 1); returns the new version.
pub(super) fn write_value(
    t: &mut Tables<'_>,
    key: &str,
    value: &Bytes,
    ttl_ms: Option<u64>,
    raw: Option<Entry>,
    live: Option<&Entry>,
    now: u64,
) -> StoreResult<u64> {
    let version = live.map_or(1, |e| e.version + 1);
    let entry = Entry {
        kind: Kind::Value,
        version,
        expires_ms: expiry(now, ttl_ms),
        payload: value.to_vec(),
    };
    t.store(key, &entry, raw.as_ref())?;
    Ok(version)
}

/// Refuses a value/counter op on a key that holds an ordered set (Redis says WRONGTYPE).
fn no_zset(t: &Tables<'_>, key: &str, expected: &'static str) -> StoreResult<()> {
    if zset_exists(&t.zs, key)? {
        return Err(StoreError::WrongType {
            key: key.to_owned(),
            expected,
            found: "ordered set",
        });
    }
    Ok(())
}

/// Refuses an ordered-set op on a key that holds a value, counter or rate-limit state.
pub(super) fn no_plain(t: &Tables<'_>, key: &str, now: u64) -> StoreResult<()> {
    match live_entry(&t.kv, key, now)? {
        Some(e) => Err(wrong_type(key, "ordered set", e.kind)),
        None => Ok(()),
    }
}

fn holds(expect: Expect, live: Option<&Entry>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => live.is_none(),
        Expect::Version(v) => live.is_some_and(|e| e.version == v),
    }
}

fn expiry(now: u64, ttl_ms: Option<u64>) -> u64 {
    ttl_ms.map_or(0, |t| now.saturating_add(t))
}

/// Applies one op at wall-clock time `now` (ms).
pub(super) fn apply(t: &mut Tables<'_>, op: &Op, now: u64) -> StoreResult<Reply> {
    match op {
        Op::Put {
            key,
            value,
            expect,
            ttl_ms,
        } => {
            let (raw, live) = value_slot(t, key, now)?;
            if !holds(*expect, live.as_ref()) {
                return Ok(Reply::Written(Written::Conflict(live.map(|e| e.version))));
            }
            let version = write_value(t, key, value, *ttl_ms, raw, live.as_ref(), now)?;
            Ok(Reply::Written(Written::Ok(version)))
        }
        Op::Delete { key, expect } => {
            let raw = raw_entry(&t.kv, key)?;
            let live = raw.as_ref().filter(|e| !e.expired(now));
            let ok = match (expect, live) {
                (_, None) | (Expect::Absent, _) => false,
                (Expect::Any, Some(_)) => true,
                (Expect::Version(v), Some(e)) if e.kind == Kind::Value => e.version == *v,
                (Expect::Version(_), Some(e)) => return Err(wrong_type(key, "value", e.kind)),
            };
            if let Some(raw) = &raw {
                // An expired entry goes too: it is absent to callers anyway.
                if ok || live.is_none() {
                    t.remove(key, raw)?;
                }
            }
            // delete(Any) removes whatever the key holds, an ordered set included (as DEL does).
            let cleared = *expect == Expect::Any && live.is_none() && t.zset_clear(key)?;
            Ok(Reply::Bool(ok || cleared))
        }
        Op::Touch {
            key,
            ttl_ms,
            expect,
        } => {
            let raw = raw_entry(&t.kv, key)?;
            let Some(live) = raw.clone().filter(|e| !e.expired(now)) else {
                return Ok(Reply::Bool(false));
            };
            let ok = match expect {
                Expect::Any => true,
                Expect::Absent => false,
                Expect::Version(v) if live.kind == Kind::Value => live.version == *v,
                Expect::Version(_) => return Err(wrong_type(key, "value", live.kind)),
            };
            if ok {
                let entry = Entry {
                    expires_ms: expiry(now, Some(*ttl_ms)),
                    ..live
                };
                t.store(key, &entry, raw.as_ref())?;
            }
            Ok(Reply::Bool(ok))
        }
        Op::Incr { key, by, ttl_ms } => {
            let (raw, n) = counter(t, key, now)?;
            let next = n.checked_add(*by).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "incr of counter {key:?} by {by} overflows (it is {n})"
                ))
            })?;
            let expires_ms = match ttl_ms {
                Some(_) => expiry(now, *ttl_ms),
                None => raw
                    .as_ref()
                    .filter(|e| !e.expired(now))
                    .map_or(0, |e| e.expires_ms),
            };
            let entry = Entry {
                kind: Kind::Counter,
                version: 0,
                expires_ms,
                payload: next.to_be_bytes().to_vec(),
            };
            t.store(key, &entry, raw.as_ref())?;
            Ok(Reply::Int(next))
        }
        Op::Acquire {
            key,
            fence_key,
            value,
            ttl_ms,
        } => {
            let raw = raw_entry(&t.kv, key)?;
            if let Some(e) = raw.as_ref().filter(|e| !e.expired(now)) {
                // Held with this very value: the holder's fence (a call sent again).
                let again = e.kind == Kind::Value && e.payload == value.as_ref();
                return Ok(Reply::Fence(again.then_some(e.version)));
            }
            if zset_exists(&t.zs, key)? {
                return Ok(Reply::Fence(None));
            }
            let (fence_raw, n) = counter(t, fence_key, now)?;
            let fence = n.checked_add(1).ok_or_else(|| {
                StoreError::Invalid(format!("fence counter {fence_key:?} overflows"))
            })?;
            // Its version is its fence: unique per acquisition (see `Backend::acquire`).
            let lock = Entry {
                kind: Kind::Value,
                version: u64::try_from(fence).unwrap_or(0),
                expires_ms: expiry(now, Some(*ttl_ms)),
                payload: value.to_vec(),
            };
            t.store(key, &lock, raw.as_ref())?;
            let keep = fence_raw
                .as_ref()
                .filter(|e| !e.expired(now))
                .map_or(0, |e| e.expires_ms);
            let entry = Entry {
                kind: Kind::Counter,
                version: 0,
                expires_ms: keep,
                payload: fence.to_be_bytes().to_vec(),
            };
            t.store(fence_key, &entry, fence_raw.as_ref())?;
            Ok(Reply::Fence(Some(u64::try_from(fence).unwrap_or(0))))
        }
        Op::Zadd { key, members } => {
            no_plain(t, key, now)?;
            for (m, s) in members {
                t.zset_insert(key, m, *s)?;
            }
            Ok(Reply::Count(members.len() as u64))
        }
        Op::Zrem { key, members } => {
            no_plain(t, key, now)?;
            let mut n = 0;
            for m in members {
                n += u64::from(t.zset_remove(key, m)?);
            }
            Ok(Reply::Count(n))
        }
        Op::Zmove {
            src,
            dst,
            max_score,
            count,
            dst_score,
        } => {
            no_plain(t, src, now)?;
            no_plain(t, dst, now)?;
            let picked = zrange(&t.zo, src, f64::NEG_INFINITY, *max_score, *count)?;
            let mut moved = Vec::with_capacity(picked.len());
            for (m, bits) in picked {
                t.zset_remove(src, &m)?;
                t.zset_insert(dst, &m, *dst_score)?;
                moved.push((m, bits_score(bits)));
            }
            Ok(Reply::Members(moved))
        }
        Op::Gcra {
            key,
            params,
            now_us,
        } => {
            let (t_us, tau_us) = args::gcra_us(key, *params)?;
            no_zset(t, key, "rate-limit state")?;
            let raw = raw_entry(&t.kv, key)?;
            let live = raw.clone().filter(|e| !e.expired(now));
            let tat = match &live {
                None => None,
                Some(e) if e.kind == Kind::Gcra => Some(e.int(key)? as u64),
                Some(e) => return Err(wrong_type(key, "rate-limit state", e.kind)),
            };
            let (decision, new_tat) = args::gcra_step(tat, *now_us, t_us, tau_us);
            if let Some(new_tat) = new_tat {
                // The state is worthless once the key is back at the steady rate: expire it then.
                let expires_ms = new_tat / 1000 + 1;
                let entry = Entry {
                    kind: Kind::Gcra,
                    version: 0,
                    expires_ms,
                    payload: new_tat.to_be_bytes().to_vec(),
                };
                t.store(key, &entry, raw.as_ref())?;
            }
            Ok(Reply::Gcra(decision))
        }
        Op::Sweep { limit } => sweep(t, now, *limit).map(|n| Reply::Count(n as u64)),
        Op::Txn(txn) => apply_txn(t, txn, now),
        Op::QueueStep(step) => super::queue_step::apply_step(t, step, now),
    }
}

/// A transaction: every check and every type before the first write, so a refused
/// transaction leaves no trace; then each op as its own call would apply it.
fn apply_txn(t: &mut Tables<'_>, txn: &Txn, now: u64) -> StoreResult<Reply> {
    for (check, (key, expect)) in txn.checks.iter().enumerate() {
        let (_, live) = value_slot(t, key, now)?;
        if !holds(*expect, live.as_ref()) {
            let current = live.map(|e| e.version);
            return Ok(Reply::Txn(TxnOutcome::Conflict { check, current }));
        }
    }
    for op in &txn.ops {
        match op {
            TxnOp::Put { key, ttl, .. } => {
                value_slot(t, key, now)?;
                if let Some(d) = ttl {
                    args::ttl_ms(key, *d)?;
                }
            }
            TxnOp::Delete { .. } => {}
            TxnOp::Zadd { key, .. } | TxnOp::Zrem { key, .. } => no_plain(t, key, now)?,
        }
    }
    // Past the checks nothing can be refused (`Txn::validate` keeps values and sets apart),
    // so the writes skip them. Any error now aborts the whole batch rather than commit half a
    // transaction.
    txn_writes(t, txn, now).map_err(|e| match e {
        e @ StoreError::Backend { .. } => e,
        other => StoreError::Backend {
            backend: "embedded",
            reason: format!("transaction failed half-way, nothing committed: {other}"),
        },
    })?;
    Ok(Reply::Txn(TxnOutcome::Committed))
}

fn txn_writes(t: &mut Tables<'_>, txn: &Txn, now: u64) -> StoreResult<()> {
    for op in &txn.ops {
        match op {
            TxnOp::Put { key, value, ttl } => {
                let (raw, live) = live_value(t, key, now)?;
                let ttl_ms = ttl.map(|d| args::ttl_ms(key, d)).transpose()?;
                write_value(t, key, value, ttl_ms, raw, live.as_ref(), now)?;
            }
            TxnOp::Delete { key } => {
                let delete = Op::Delete {
                    key: key.clone(),
                    expect: Expect::Any,
                };
                apply(t, &delete, now)?;
            }
            TxnOp::Zadd { key, members } => {
                for (m, s) in members {
                    t.zset_insert(key, m, *s)?;
                }
            }
            TxnOp::Zrem { key, members } => {
                for m in members {
                    t.zset_remove(key, m)?;
                }
            }
        }
    }
    Ok(())
}

/// The counter at `key` (absent or expired: 0) with its raw entry.
pub(super) fn counter(t: &Tables<'_>, key: &str, now: u64) -> StoreResult<(Option<Entry>, i64)> {
    no_zset(t, key, "counter")?;
    let raw = raw_entry(&t.kv, key)?;
    let n = match raw.as_ref().filter(|e| !e.expired(now)) {
        None => 0,
        Some(e) if e.kind == Kind::Counter => e.int(key)?,
        Some(e) => return Err(wrong_type(key, "counter", e.kind)),
    };
    Ok((raw, n))
}

fn sweep(t: &mut Tables<'_>, now: u64, limit: usize) -> StoreResult<usize> {
    let mut due = Vec::new();
    for item in t.exp.range(..(now.saturating_add(1), "")).or_backend()? {
        let (k, _) = item.or_backend()?;
        let (at, key) = k.value();
        due.push((at, key.to_owned()));
        if due.len() == limit {
            break;
        }
    }
    for (at, key) in &due {
        t.exp.remove((*at, key.as_str())).or_backend()?;
        // The index may be stale if the key was rewritten; only an entry still due goes.
        let live = match live_entry(&t.kv, key, now) {
            Ok(live) => live,
            // An entry that cannot be decoded stays for whoever reads it to see the error, but
            // does not fail the sweep (and with it every write in the same batch) each second.
            Err(StoreError::Backend { reason, .. }) => {
                tracing::warn!(key, %reason, "store sweep: skipping an entry that cannot be decoded");
                continue;
            }
            Err(e) => return Err(e),
        };
        if live.is_none() && raw_entry(&t.kv, key)?.is_some() {
            t.kv.remove(key.as_str()).or_backend()?;
        }
    }
    Ok(due.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tables(f: impl FnOnce(&mut Tables<'_>)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            f(&mut t);
        }
        txn.commit().unwrap();
        dir
    }

    fn put(key: &str, ttl_ms: Option<u64>) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from_static(b"v"),
            expect: Expect::Any,
            ttl_ms,
        }
    }

    #[test]
    fn an_undecodable_entry_does_not_fail_the_sweep() {
        with_tables(|t| {
            apply(t, &put("a", Some(10)), 1_000).unwrap();
            t.kv.insert("bad", &[0xffu8, 1, 2][..]).unwrap();
            t.exp.insert((1_005, "bad"), ()).unwrap();
            assert!(matches!(
                apply(t, &Op::Sweep { limit: 100 }, 2_000).unwrap(),
                Reply::Count(2)
            ));
            assert!(
                raw_entry(&t.kv, "a").unwrap().is_none(),
                "a expired and went"
            );
        });
    }

    #[test]
    fn sweep_removes_only_entries_still_due() {
        with_tables(|t| {
            apply(t, &put("a", Some(10)), 1_000).unwrap();
            apply(t, &put("b", Some(10)), 1_000).unwrap();
            apply(t, &put("c", None), 1_000).unwrap();
            // b is rewritten with a later expiry: its old index entry must not remove it.
            apply(
                t,
                &Op::Touch {
                    key: "b".into(),
                    ttl_ms: 60_000,
                    expect: Expect::Any,
                },
                1_005,
            )
            .unwrap();
            assert!(matches!(
                apply(t, &Op::Sweep { limit: 100 }, 1_005).unwrap(),
                Reply::Count(0)
            ));
            assert!(matches!(
                apply(t, &Op::Sweep { limit: 100 }, 2_000).unwrap(),
                Reply::Count(1)
            ));
            assert!(
                raw_entry(&t.kv, "a").unwrap().is_none(),
                "expired a is gone from the file"
            );
            assert!(raw_entry(&t.kv, "b").unwrap().is_some());
            assert!(raw_entry(&t.kv, "c").unwrap().is_some());
            assert_eq!(t.exp.len().unwrap(), 1, "only b's new expiry is indexed");
        });
    }

    #[test]
    fn failed_op_writes_nothing() {
        with_tables(|t| {
            apply(
                t,
                &Op::Incr {
                    key: "fence".into(),
                    by: 1,
                    ttl_ms: None,
                },
                1,
            )
            .unwrap();
            apply(t, &put("fence-as-value", None), 1).unwrap();
            let op = Op::Acquire {
                key: "lock".into(),
                fence_key: "fence-as-value".into(),
                value: Bytes::new(),
                ttl_ms: 100,
            };
            assert!(matches!(
                apply(t, &op, 1),
                Err(StoreError::WrongType { .. })
            ));
            assert!(
                raw_entry(&t.kv, "lock").unwrap().is_none(),
                "the lock was not taken"
            );
        });
    }
}
