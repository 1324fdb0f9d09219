//! Slow start (HAProxy `slowstart`): an instance that has just become ready, or just recovered
//! from a passive mark, gets a weight that grows linearly from almost nothing to its full
//! weight over the window, so a cold instance (empty caches, JIT) is not handed its whole share
//! at once. Pure: a function of (since, now).

use std::time::{Duration, Instant};

/// Weights are scaled by this so a ramp of weight 1 still has steps (HAProxy scales by 16 too).
pub(crate) const SCALE: u32 = 16;

/// The effective weight, in `1/SCALE` units, of an instance of `weight` that has been serving
/// since `since`. Never 0 during the ramp (an instance in slow start still gets some traffic),
/// and exactly `weight × SCALE` from `since + window` on, or always when `window` is zero.
pub(crate) fn effective(weight: u32, since: Instant, now: Instant, window: Duration) -> u32 {
    let full = weight.saturating_mul(SCALE);
    if window.is_zero() || full == 0 {
        return full;
    }
    let elapsed = now.saturating_duration_since(since);
    if elapsed >= window {
        return full;
    }
    let part = u128::from(full) * elapsed.as_micros() / window.as_micros().max(1);
    u32::try_from(part).unwrap_or(full).clamp(1, full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ramps_linearly_to_full() {
        let t0 = Instant::now();
        let w = Duration::from_secs(30);
        assert_eq!(effective(1, t0, t0, w), 1);
        assert_eq!(effective(1, t0, t0 + Duration::from_secs(15), w), 8);
        assert_eq!(effective(3, t0, t0 + Duration::from_secs(10), w), 16);
        assert_eq!(effective(1, t0, t0 + w, w), 16);
        assert_eq!(effective(1, t0, t0 + Duration::from_secs(3600), w), 16);
        assert_eq!(effective(2, t0, t0, Duration::ZERO), 32);
        assert_eq!(effective(0, t0, t0, w), 0);
        // `now` before `since` (clock read earlier): the start of the ramp.
        assert_eq!(effective(1, t0 + w, t0, w), 1);
    }

    proptest! {
        #[test]
        fn monotonic_and_bounded(weight in 0u32..=256, a in 0u64..100_000, b in 0u64..100_000,
                                 window_ms in 0u64..60_000) {
            let t0 = Instant::now();
            let w = Duration::from_millis(window_ms);
            let (lo, hi) = (a.min(b), a.max(b));
            let x = effective(weight, t0, t0 + Duration::from_millis(lo), w);
            let y = effective(weight, t0, t0 + Duration::from_millis(hi), w);
            prop_assert!(x <= y);
            prop_assert!(y <= weight * SCALE);
            prop_assert!(weight == 0 || x >= 1);
        }
    }
}
