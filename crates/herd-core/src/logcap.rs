//! A cap on repeated log lines: during an outage every failed call would otherwise log one line,
//! thousands a second. [`LogCap::admit`] lets one line through per interval and says how many it
//! held back since the last one, so the line can carry that count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One line per `every`; the others are counted, not written.
pub struct LogCap {
    every: Duration,
    /// Milliseconds since `epoch()` of the last admitted line, plus one (0: none yet).
    last: AtomicU64,
    held: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogCap {
    /// A cap letting one line through per `every`.
    #[must_use]
    pub const fn new(every: Duration) -> LogCap {
        LogCap {
            every,
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when this line may be written, `None` when it is
    /// held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(epoch()).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < every {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One caller wins the slot; a loser is held back like any other.
        if self
            .last
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let cap = LogCap::new(Duration::from_secs(1));
        let t0 = epoch() + Duration::from_secs(10);
        assert_eq!(cap.admit_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(cap.admit_at(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(
            cap.admit_at(t0 + Duration::from_millis(1000)),
            Some(5),
            "the next line says how many were held back"
        );
        assert_eq!(cap.admit_at(t0 + Duration::from_millis(1500)), None);
        assert_eq!(cap.admit_at(t0 + Duration::from_secs(5)), Some(1));
        assert_eq!(cap.admit_at(t0 + Duration::from_secs(7)), Some(0));
    }

    #[test]
    fn the_first_line_always_passes() {
        let cap = LogCap::new(Duration::from_secs(3600));
        assert_eq!(cap.admit(), Some(0));
        assert_eq!(cap.admit(), None);
    }
}
