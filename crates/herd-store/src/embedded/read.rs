//! Lookups shared by read transactions and the writer (generic over redb's readable tables).

use redb::ReadableTable;

use super::codec::{bits_score, score_bits, Entry};
use super::OrBackend;
use crate::StoreResult;

/// The entry at `key` as stored, expired or not (the writer needs it to clean the expiry index).
pub(super) fn raw_entry<T>(kv: &T, key: &str) -> StoreResult<Option<Entry>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    match kv.get(key).or_backend()? {
        Some(raw) => Entry::decode(key, raw.value()).map(Some),
        None => Ok(None),
    }
}

/// The entry at `key` unless absent or expired.
pub(super) fn live_entry<T>(kv: &T, key: &str, now_ms: u64) -> StoreResult<Option<Entry>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    Ok(raw_entry(kv, key)?.filter(|e| !e.expired(now_ms)))
}

/// Members of `set` with `min <= score <= max`, lowest first, at most `limit`, as (member, bits).
pub(super) fn zrange<T>(
    zo: &T,
    set: &str,
    min: f64,
    max: f64,
    limit: usize,
) -> StoreResult<Vec<(String, u64)>>
where
    T: ReadableTable<(&'static str, u64, &'static str), ()>,
{
    let (lo, hi) = (score_bits(min), score_bits(max));
    let mut out = Vec::new();
    if limit == 0 || lo > hi {
        return Ok(out);
    }
    for item in zo.range((set, lo, "")..).or_backend()? {
        let (k, _) = item.or_backend()?;
        let (s, bits, member) = k.value();
        if s != set || bits > hi {
            break;
        }
        out.push((member.to_owned(), bits));
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// How many members of `set` have `min <= score <= max`.
pub(super) fn zcount<T>(zo: &T, set: &str, min: f64, max: f64) -> StoreResult<u64>
where
    T: ReadableTable<(&'static str, u64, &'static str), ()>,
{
    let (lo, hi) = (score_bits(min), score_bits(max));
    let mut n = 0;
    if lo > hi {
        return Ok(n);
    }
    for item in zo.range((set, lo, "")..).or_backend()? {
        let (k, _) = item.or_backend()?;
        let (s, bits, _) = k.value();
        if s != set || bits > hi {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// The score of `member` in `set`.
pub(super) fn zscore<T>(zs: &T, set: &str, member: &str) -> StoreResult<Option<f64>>
where
    T: ReadableTable<(&'static str, &'static str), u64>,
{
    Ok(zs
        .get((set, member))
        .or_backend()?
        .map(|g| bits_score(g.value())))
}

/// The number of members of `set`.
pub(super) fn zcard<T>(zs: &T, set: &str) -> StoreResult<u64>
where
    T: ReadableTable<(&'static str, &'static str), u64>,
{
    let mut n = 0;
    for item in zs.range((set, "")..).or_backend()? {
        let (k, _) = item.or_backend()?;
        if k.value().0 != set {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// Whether `set` has any member (an ordered set exists at that key).
pub(super) fn zset_exists<T>(zs: &T, set: &str) -> StoreResult<bool>
where
    T: ReadableTable<(&'static str, &'static str), u64>,
{
    match zs.range((set, "")..).or_backend()?.next() {
        Some(item) => Ok(item.or_backend()?.0.value().0 == set),
        None => Ok(false),
    }
}
