//! Argument checks shared by every backend, so a bad call fails the same way everywhere.

use std::time::Duration;

use crate::{StoreError, StoreResult};

/// A TTL in whole milliseconds; Redis refuses `PX 0`, so every backend refuses it.
pub(crate) fn ttl_ms(key: &str, ttl: Duration) -> StoreResult<u64> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(StoreError::Invalid(format!(
            "ttl for key {key:?} is {ttl:?}; it must be at least 1 ms (use None for no expiry)"
        )));
    }
    Ok(ms)
}

/// Scores must be numbers; NaN has no place in an ordered set.
pub(crate) fn score(key: &str, score: f64) -> StoreResult<f64> {
    if score.is_nan() {
        return Err(StoreError::Invalid(format!(
            "score for ordered set {key:?} is NaN; use a finite number or ±infinity"
        )));
    }
    Ok(score)
}

/// Emission interval of a GCRA step in microseconds; zero would divide the key's time by nothing.
pub(crate) fn gcra_us(key: &str, params: crate::Gcra) -> StoreResult<(u64, u64)> {
    let t = u64::try_from(params.emission_interval.as_micros()).unwrap_or(u64::MAX);
    let tau = u64::try_from(params.burst_tolerance.as_micros()).unwrap_or(u64::MAX);
    if t == 0 {
        return Err(StoreError::Invalid(format!(
            "rate limit for key {key:?}: emission interval must be at least 1 µs (rate at most 1,000,000 r/s)"
        )));
    }
    Ok((t, tau))
}

/// Wall-clock milliseconds since the Unix epoch (the embedded store's clock for TTLs).
pub(crate) fn now_ms() -> u64 {
    now_us() / 1000
}

/// Wall-clock microseconds since the Unix epoch (GCRA resolution).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The GCRA step itself, shared by the embedded store and mirrored by the Redis Lua script:
/// `tat` is the stored theoretical arrival time (None: fresh key). Returns the decision and the
/// new TAT to store when allowed.
pub(crate) fn gcra_step(
    tat: Option<u64>,
    now: u64,
    t: u64,
    tau: u64,
) -> (crate::GcraDecision, Option<u64>) {
    let tat = tat.unwrap_or(now).max(now);
    let ahead = tat - now;
    if ahead > tau {
        let retry = Duration::from_micros(ahead - tau);
        (crate::GcraDecision::Deny { retry_after: retry }, None)
    } else {
        let delay = Duration::from_micros(ahead);
        (
            crate::GcraDecision::Allow { delay },
            Some(tat.saturating_add(t)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GcraDecision;

    #[test]
    fn gcra_allows_burst_then_denies_with_retry_after() {
        let (t, tau) = (100, 200); // 10 r/ms-ish units, burst 2
        let mut tat = None;
        let now = 1_000;
        for expected_delay in [0, 100, 200] {
            let (d, new) = gcra_step(tat, now, t, tau);
            assert_eq!(
                d,
                GcraDecision::Allow {
                    delay: Duration::from_micros(expected_delay)
                }
            );
            tat = new;
        }
        let (d, new) = gcra_step(tat, now, t, tau);
        assert_eq!(
            d,
            GcraDecision::Deny {
                retry_after: Duration::from_micros(100)
            }
        );
        assert_eq!(new, None);
        // After the retry_after, one more is allowed.
        let (d, _) = gcra_step(tat, now + 100, t, tau);
        assert!(matches!(d, GcraDecision::Allow { .. }));
    }

    #[test]
    fn zero_ttl_and_nan_are_refused() {
        assert!(matches!(
            ttl_ms("k", Duration::ZERO),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(score("z", f64::NAN), Err(StoreError::Invalid(_))));
    }
}
