//! Per-instance request observations over a sampling window: latency distribution (time to the
//! response head) and errors. Written lock-free by the gateway on every response; read and reset
//! by the supervisor's 1 s sample, which hands them to the autoscaler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets grow by 2^(1/16) (≈4.4 %) from 100 µs; the last one holds everything above
/// ~105 s. (At 2^(1/4), a constant 1 s read as 1.15 s at p95: an alert at 1.1 s fired on
/// answers that all took 1.0 s.)
pub(crate) const BUCKETS: usize = 321;
const BASE_US: f64 = 100.0;
const PER_OCTAVE: f64 = 16.0;

/// What one window saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowStats {
    /// Responses (any status) whose head arrived in the window.
    pub responses: u64,
    /// 5xx responses plus failed attempts (connect errors, resets, timeouts).
    pub errors: u64,
    /// Failed attempts alone (no response, so not among `responses`): the error rate is
    /// `errors / (responses + failures)`.
    pub failures: u64,
    /// 95th percentile of time to response head, if any response arrived.
    pub latency_p95: Option<Duration>,
}

impl WindowStats {
    /// Failed exchanges over all exchanges, 0..=1: each response once (a 5xx is among
    /// `responses` and `errors`), each failed attempt once; 10 answers, all 503, is 1.
    #[must_use]
    pub fn error_rate(&self) -> f64 {
        let all = self.responses + self.failures;
        if all == 0 {
            0.0
        } else {
            self.errors as f64 / all as f64
        }
    }
}

/// Lock-free latency histogram and error counters.
#[derive(Debug)]
pub struct Window {
    buckets: [AtomicU64; BUCKETS],
    server_errors: AtomicU64,
    failures: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            server_errors: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

pub(crate) fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= BASE_US {
        return 0;
    }
    let b = ((us / BASE_US).log2() * PER_OCTAVE).ceil();
    (b as usize).min(BUCKETS - 1)
}

/// Upper bound of bucket `i`.
pub(crate) fn bucket_upper(i: usize) -> Duration {
    Duration::from_secs_f64(BASE_US * 2f64.powf(i as f64 / PER_OCTAVE) / 1e6)
}

impl Window {
    pub fn record(&self, latency: Duration, server_error: bool) {
        self.buckets[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        if server_error {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An attempt that got no response (connect error, reset, timeout).
    pub fn record_error(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the window's figures and starts a new window.
    pub fn take(&self) -> WindowStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let failures = self.failures.swap(0, Ordering::Relaxed);
        let errors = self.server_errors.swap(0, Ordering::Relaxed) + failures;
        let responses: u64 = counts.iter().sum();
        WindowStats {
            responses,
            errors,
            failures,
            latency_p95: quantile(&counts, responses, 0.95),
        }
    }
}

/// The `q` quantile, interpolated linearly inside its bucket (as Prometheus'
/// `histogram_quantile`); within 4.4 % of the true value.
pub(crate) fn quantile(counts: &[u64], total: u64, q: f64) -> Option<Duration> {
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        let next = seen + c as f64;
        if next >= rank && c > 0 {
            let lower = if i == 0 {
                0.0
            } else {
                bucket_upper(i - 1).as_secs_f64()
            };
            let upper = bucket_upper(i).as_secs_f64();
            let within = ((rank - seen) / c as f64).clamp(0.0, 1.0);
            return Some(Duration::from_secs_f64(lower + (upper - lower) * within));
        }
        seen = next;
    }
    Some(bucket_upper(counts.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_latency_reads_within_a_bucket_of_itself() {
        for ms in [1u64, 37, 200, 500, 1000, 4321] {
            let w = Window::default();
            for _ in 0..100 {
                w.record(Duration::from_millis(ms), false);
            }
            let p95 = w.take().latency_p95.unwrap().as_secs_f64() * 1000.0;
            let ms = ms as f64;
            assert!(
                p95 > ms * 0.956 && p95 < ms * 1.045,
                "{ms} ms read as {p95} ms"
            );
        }
    }

    #[test]
    fn the_error_rate_counts_each_exchange_once() {
        let w = Window::default();
        for _ in 0..10 {
            w.record(Duration::from_millis(1), true);
        }
        assert!((w.take().error_rate() - 1.0).abs() < 1e-9);
        for _ in 0..6 {
            w.record(Duration::from_millis(1), false);
        }
        w.record(Duration::from_millis(1), true);
        w.record_error();
        w.record_error();
        let s = w.take();
        assert_eq!((s.responses, s.errors, s.failures), (7, 3, 2));
        assert!((s.error_rate() - 3.0 / 9.0).abs() < 1e-9);
        assert!(WindowStats::default().error_rate().abs() < 1e-9);
    }

    #[test]
    fn p95_lands_within_one_bucket_of_the_truth() {
        let w = Window::default();
        for ms in 1..=100u64 {
            w.record(Duration::from_millis(ms), ms > 98);
        }
        let s = w.take();
        assert_eq!(s.responses, 100);
        assert_eq!(s.errors, 2);
        let p95 = s.latency_p95.unwrap();
        assert!(
            p95 >= Duration::from_millis(95) && p95 < Duration::from_millis(114),
            "{p95:?}"
        );
        assert_eq!(w.take(), WindowStats::default(), "take resets the window");
    }

    #[test]
    fn extremes_are_clamped() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_secs(10_000)), BUCKETS - 1);
    }
}
