//! Where the services read the time: wall-clock milliseconds since the Unix epoch.
//!
//! Queue scores (due times, lease deadlines) and cache entry ages are wall-clock milliseconds so
//! that every node reads them the same way. Tests inject a [`ManualClock`] and advance it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// This machine's clock set to the store's: [`SystemClock`] plus an offset that
/// [`StoreClock::sync`] measures against the store's `TIME` (Redis). Nodes sharing one Redis
/// then read queue due times and lease deadlines on one clock, whatever their own clocks say
/// (a node 20 s ahead would otherwise re-deliver every job leased by the others).
pub struct StoreClock {
    base: std::sync::Arc<dyn Clock>,
    offset_ms: AtomicI64,
}

impl std::fmt::Debug for StoreClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClock")
            .field("offset_ms", &self.offset_ms())
            .finish_non_exhaustive()
    }
}

impl Default for StoreClock {
    fn default() -> Self {
        StoreClock::on(std::sync::Arc::new(SystemClock))
    }
}

/// A round trip longer than this gives an offset too uncertain to adopt.
const MAX_SYNC_ROUND_TRIP_MS: i64 = 250;

impl StoreClock {
    /// A clock that reads as this machine's until the first [`StoreClock::sync`].
    #[must_use]
    pub fn new() -> Self {
        StoreClock::default()
    }

    /// The same over another clock than the system's (tests give it a skewed one).
    #[must_use]
    pub fn on(base: std::sync::Arc<dyn Clock>) -> Self {
        StoreClock {
            base,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Asks the store for its time and adopts the difference to this machine's clock (taken
    /// at the middle of the round trip). Returns the offset adopted in milliseconds (store
    /// minus this machine), or `None` when the round trip took too long to trust (the last
    /// offset stays).
    ///
    /// # Errors
    /// The store's error when it cannot answer (the last offset stays).
    pub async fn sync(
        &self,
        store: &impl herd_store::Backend,
    ) -> herd_store::StoreResult<Option<i64>> {
        let before = self.base.now_ms();
        let theirs = store.time_ms().await?;
        let after = self.base.now_ms();
        if after - before > MAX_SYNC_ROUND_TRIP_MS {
            return Ok(None);
        }
        let offset = theirs - (before + (after - before) / 2);
        self.offset_ms.store(offset, Ordering::Relaxed);
        Ok(Some(offset))
    }

    /// The offset in force (store minus this machine), in milliseconds.
    #[must_use]
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for StoreClock {
    fn now_ms(&self) -> i64 {
        self.base.now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `start_ms`.
    #[must_use]
    pub fn new(start_ms: i64) -> Self {
        ManualClock(AtomicI64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
