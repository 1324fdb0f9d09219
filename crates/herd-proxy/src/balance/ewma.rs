//! Peak EWMA of response latency (linkerd2-proxy, Finagle): a slow response raises the estimate
//! at once (the peak), faster ones pull it down with a time-based weight `exp(-Δt / 10 s)`, and
//! with no responses it decays toward zero so an instance that was slow gets tried again.
//!
//! The estimate lives in one `AtomicU64` updated with a CAS loop (no lock on the request path):
//! the high 32 bits hold it as `f32` microseconds, the low 32 bits the update time in
//! milliseconds since the cell's epoch (wrapping after 49 days, when any estimate has long
//! decayed to nothing anyway).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// linkerd's and Finagle's decay.
pub(crate) const DECAY: Duration = Duration::from_secs(10);
/// The estimate of an instance with no response yet, so a new instance is not flooded (tower's
/// `default_rtt`).
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(30);

#[allow(clippy::cast_precision_loss)]
fn decay_weight(elapsed_ms: u32) -> f64 {
    (-f64::from(elapsed_ms) / DECAY.as_millis() as f64).exp()
}

/// The estimate `elapsed_ms` after it was last updated to `est_us`.
pub(crate) fn decayed(est_us: f64, elapsed_ms: u32) -> f64 {
    est_us * decay_weight(elapsed_ms)
}

/// The estimate after a response that took `rtt_us`, `elapsed_ms` after the last update.
pub(crate) fn observe(est_us: f64, elapsed_ms: u32, rtt_us: f64) -> f64 {
    let w = decay_weight(elapsed_ms);
    let prev = est_us * w;
    if rtt_us > prev {
        rtt_us
    } else {
        prev + rtt_us * (1.0 - w)
    }
}

/// The lock-free per-instance cell.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    state: AtomicU64,
    epoch: Instant,
}

#[allow(clippy::cast_possible_truncation)]
fn pack(est_us: f64, at_ms: u32) -> u64 {
    (u64::from((est_us as f32).to_bits()) << 32) | u64::from(at_ms)
}

fn unpack(v: u64) -> (f64, u32) {
    let est = f32::from_bits(u32::try_from(v >> 32).unwrap_or(0));
    (f64::from(est), u32::try_from(v & 0xffff_ffff).unwrap_or(0))
}

impl PeakEwma {
    pub(crate) fn new(now: Instant) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let est = DEFAULT_RTT.as_micros() as f64;
        PeakEwma {
            state: AtomicU64::new(pack(est, 0)),
            epoch: now,
        }
    }

    fn ms(&self, now: Instant) -> u32 {
        // Truncation is the documented wrap.
        #[allow(clippy::cast_possible_truncation)]
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        ms
    }

    /// The estimate at `now`, in microseconds.
    pub(crate) fn get(&self, now: Instant) -> f64 {
        let (est, at) = unpack(self.state.load(Ordering::Relaxed));
        decayed(est, since(self.ms(now), at))
    }

    /// Records a response that took `rtt` (to its head).
    pub(crate) fn record(&self, now: Instant, rtt: Duration) {
        let now_ms = self.ms(now);
        #[allow(clippy::cast_precision_loss)]
        let rtt_us = rtt.as_micros() as f64;
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let (est, at) = unpack(v);
                let elapsed = since(now_ms, at);
                // A `now` taken before another thread's update keeps that update's time.
                let stamp = if elapsed == 0 { at } else { now_ms };
                Some(pack(observe(est, elapsed, rtt_us), stamp))
            });
    }
}

/// Milliseconds from `at` to `now` on the wrapping clock; 0 when `now` is (slightly) before
/// `at`, which happens when another thread stored a later time after `now` was read: without
/// this the wrap would read as 49 days of decay.
fn since(now: u32, at: u32) -> u32 {
    let d = now.wrapping_sub(at);
    if d > u32::MAX / 2 {
        0
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_read_before_another_threads_update_is_no_decay() {
        let e = PeakEwma::new(Instant::now());
        let t0 = e.epoch + Duration::from_secs(5);
        e.record(t0, Duration::from_millis(50));
        // A pick that read its clock a moment before the record: the peak stands.
        let before = t0 - Duration::from_millis(1);
        assert!(e.get(before) > 40_000.0, "{}", e.get(before));
        e.record(before, Duration::from_millis(1));
        assert!(
            e.get(t0) > 40_000.0,
            "a late sample erased the peak: {}",
            e.get(t0)
        );
        assert_eq!(since(5, 10), 0);
        assert_eq!(since(3, u32::MAX - 1), 5);
    }

    #[test]
    fn peaks_at_once_and_decays() {
        assert!((observe(100.0, 0, 5000.0) - 5000.0).abs() < 1e-9);
        // A faster response 10 s later weighs 1 - 1/e.
        let v = observe(5000.0, 10_000, 100.0);
        let want = 5000.0 / std::f64::consts::E + 100.0 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((v - want).abs() < 1e-6, "{v} vs {want}");
        // No time passed: a faster response does not move it.
        assert!((observe(5000.0, 0, 100.0) - 5000.0).abs() < 1e-9);
        assert!(decayed(5000.0, 60_000) < 20.0);
    }

    #[test]
    fn cell_records_and_decays() {
        let t0 = Instant::now();
        let cell = PeakEwma::new(t0);
        assert!((cell.get(t0) - 30_000.0).abs() < 1.0);
        cell.record(t0 + Duration::from_millis(5), Duration::from_millis(200));
        assert!((cell.get(t0 + Duration::from_millis(5)) - 200_000.0).abs() < 1.0);
        assert!(cell.get(t0 + Duration::from_secs(60)) < 1000.0);
    }
}
