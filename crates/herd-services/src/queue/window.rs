//! A queue's rate limit as BullMQ's `limiter {max, duration}` counts it: a window opens with
//! the first job reserved after the previous window closed, lasts `duration`, and lets at most
//! `max` jobs be reserved in it; then reserves wait for the next window.
//!
//! The window is one store key (`start_ms:used`, expiring when the window ends) changed by
//! compare-and-swap, so every node shares it. A reserve takes what it asks for before it moves
//! jobs and gives back what it could not move (another worker took those jobs first), so idle
//! workers racing for a few new jobs do not spend the window's allowance on nothing.

use std::time::Duration;

use bytes::Bytes;
use herd_store::{Backend as _, Expect, Store, Written};

use super::Limiter;
use crate::clock::millis;
use crate::error::ServiceResult;

/// Attempts of one compare-and-swap loop before giving up on this reserve (contention: the
/// caller's long-poll comes back).
const TRIES: usize = 16;

/// A grant out of one window: how many jobs, and the window they count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) jobs: usize,
    start_ms: i64,
}

fn parse(value: &[u8]) -> Option<(i64, u64)> {
    let (start, used) = std::str::from_utf8(value).ok()?.split_once(':')?;
    Some((start.parse().ok()?, used.parse().ok()?))
}

fn encode(start_ms: i64, used: u64) -> Bytes {
    Bytes::from(format!("{start_ms}:{used}"))
}

/// The window's remaining life from `now_ms` (at least 1 ms: a key must expire later).
fn ttl(limiter: Limiter, start_ms: i64, now_ms: i64) -> Duration {
    let end = start_ms.saturating_add(millis(limiter.duration));
    Duration::from_millis(
        u64::try_from(end.saturating_sub(now_ms))
            .unwrap_or(0)
            .max(1),
    )
}

/// Takes up to `want` jobs out of the window in force at `now_ms` (opening one if none is).
pub(super) async fn take(
    store: &Store,
    key: &str,
    limiter: Limiter,
    want: usize,
    now_ms: i64,
) -> ServiceResult<Grant> {
    let none = Grant {
        jobs: 0,
        start_ms: now_ms,
    };
    if want == 0 {
        return Ok(none);
    }
    for _ in 0..TRIES {
        let current = store.get(key).await?;
        let (start_ms, used, expect) = match &current {
            Some(v) => match parse(&v.value) {
                Some((start, used)) if now_ms < start.saturating_add(millis(limiter.duration)) => {
                    (start, used, Expect::Version(v.version))
                }
                // Closed (or unreadable): a new window opens now.
                _ => (now_ms, 0, Expect::Version(v.version)),
            },
            None => (now_ms, 0, Expect::Absent),
        };
        let left = u64::from(limiter.max).saturating_sub(used);
        let jobs = usize::try_from(left).unwrap_or(usize::MAX).min(want);
        if jobs == 0 {
            return Ok(none);
        }
        let value = encode(start_ms, used + jobs as u64);
        let ttl = ttl(limiter, start_ms, now_ms);
        if let Written::Ok(_) = store.put(key, value, expect, Some(ttl)).await? {
            return Ok(Grant { jobs, start_ms });
        }
    }
    Ok(none)
}

/// Gives `unused` jobs of `grant` back to its window, if that window is still the one in force.
pub(super) async fn give_back(
    store: &Store,
    key: &str,
    limiter: Limiter,
    grant: Grant,
    unused: usize,
    now_ms: i64,
) -> ServiceResult<()> {
    if unused == 0 {
        return Ok(());
    }
    for _ in 0..TRIES {
        let Some(v) = store.get(key).await? else {
            return Ok(());
        };
        let Some((start_ms, used)) = parse(&v.value) else {
            return Ok(());
        };
        if start_ms != grant.start_ms {
            return Ok(());
        }
        let value = encode(start_ms, used.saturating_sub(unused as u64));
        let ttl = ttl(limiter, start_ms, now_ms);
        if let Written::Ok(_) = store
            .put(key, value, Expect::Version(v.version), Some(ttl))
            .await?
        {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_reads_back() {
        assert_eq!(
            parse(&encode(1_700_000_000_123, 4)),
            Some((1_700_000_000_123, 4))
        );
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"1:x"), None);
    }

    #[test]
    fn the_key_lives_until_the_window_ends() {
        let l = Limiter {
            max: 5,
            duration: Duration::from_secs(1),
        };
        assert_eq!(ttl(l, 1_000, 1_250), Duration::from_millis(750));
        assert_eq!(ttl(l, 1_000, 2_000), Duration::from_millis(1), "never zero");
    }
}
