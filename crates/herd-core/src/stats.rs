//! Cumulative request statistics per (app, route), written lock-free by the gateway and read by
//! `/metrics` (Prometheus counters and histograms) and the telemetry sampler (which takes
//! per-second deltas). A config reload keeps the counters of the (app, route) pairs that remain,
//! as Prometheus expects of counters, and drops those of pairs that are gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::window;

/// Upper bounds (seconds) of the latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status classes counted: 1xx..5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug)]
pub struct RouteStats {
    pub app: String,
    /// The route's label: its `name`, or `route<N>` by position, or `default`.
    pub route: String,
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// The same latencies in buckets 4.4 % wide (those of [`crate::window`]), for the
    /// percentiles of telemetry, `/health/performance` and latency alerts: the Prometheus
    /// buckets above are too coarse to interpolate in (0.5 s to 1 s is one bucket).
    fine: [AtomicU64; window::BUCKETS],
    latency_sum_us: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    retries: AtomicU64,
    connect_errors: AtomicU64,
    rate_limited: AtomicU64,
}

/// A consistent-enough copy of one entry's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteCounters {
    pub by_class: [u64; 5],
    /// Per bucket (not cumulative), the last is +Inf.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Per fine bucket (see [`RouteStats`]); empty when nothing was counted.
    pub fine: Vec<u64>,
    pub latency_sum_s: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub retries: u64,
    pub connect_errors: u64,
    /// Requests rejected by a `[[rate_limit]]`.
    pub rate_limited: u64,
}

impl RouteCounters {
    #[must_use]
    pub fn responses(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// `self - earlier`, saturating (for per-interval rates).
    #[must_use]
    pub fn delta(&self, earlier: &RouteCounters) -> RouteCounters {
        let mut d = RouteCounters::default();
        for i in 0..5 {
            d.by_class[i] = self.by_class[i].saturating_sub(earlier.by_class[i]);
        }
        for i in 0..d.buckets.len() {
            d.buckets[i] = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d.fine = self
            .fine
            .iter()
            .enumerate()
            .map(|(i, v)| v.saturating_sub(earlier.fine.get(i).copied().unwrap_or(0)))
            .collect();
        d.latency_sum_s = (self.latency_sum_s - earlier.latency_sum_s).max(0.0);
        d.bytes_in = self.bytes_in.saturating_sub(earlier.bytes_in);
        d.bytes_out = self.bytes_out.saturating_sub(earlier.bytes_out);
        d.retries = self.retries.saturating_sub(earlier.retries);
        d.connect_errors = self.connect_errors.saturating_sub(earlier.connect_errors);
        d.rate_limited = self.rate_limited.saturating_sub(earlier.rate_limited);
        d
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &RouteCounters) {
        for i in 0..5 {
            self.by_class[i] += other.by_class[i];
        }
        for i in 0..self.buckets.len() {
            self.buckets[i] += other.buckets[i];
        }
        if self.fine.len() < other.fine.len() {
            self.fine.resize(other.fine.len(), 0);
        }
        for (mine, theirs) in self.fine.iter_mut().zip(&other.fine) {
            *mine += theirs;
        }
        self.latency_sum_s += other.latency_sum_s;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.retries += other.retries;
        self.connect_errors += other.connect_errors;
        self.rate_limited += other.rate_limited;
    }

    /// The `q` quantile of the latency (seconds), interpolated linearly inside its fine bucket
    /// (as Prometheus' `histogram_quantile` does, with buckets 4.4 % wide); `None` without
    /// responses.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.fine.iter().sum();
        window::quantile(&self.fine, total, q).map(|d| d.as_secs_f64())
    }
}

impl RouteStats {
    fn new(app: &str, route: &str) -> Self {
        RouteStats {
            app: app.to_owned(),
            route: route.to_owned(),
            by_class: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            fine: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// One answered request: its status and time to response head.
    pub fn record(&self, status: u16, latency: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let s = latency.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|&ub| s <= ub)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.fine[window::bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    #[must_use]
    pub fn counters(&self) -> RouteCounters {
        let mut c = RouteCounters::default();
        for (i, v) in self.by_class.iter().enumerate() {
            c.by_class[i] = v.load(Ordering::Relaxed);
        }
        for (i, v) in self.buckets.iter().enumerate() {
            c.buckets[i] = v.load(Ordering::Relaxed);
        }
        c.fine = self
            .fine
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .collect();
        c.latency_sum_s = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        c.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        c.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        c.retries = self.retries.load(Ordering::Relaxed);
        c.connect_errors = self.connect_errors.load(Ordering::Relaxed);
        c.rate_limited = self.rate_limited.load(Ordering::Relaxed);
        c
    }
}

/// Every (app, route) entry, created on first use and kept for herd's lifetime, and the
/// gateway's client connection counts.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    entries: Mutex<Vec<Arc<RouteStats>>>,
    pub connections: Arc<ConnectionStats>,
    /// Requests the gateway answered itself before any route took them.
    pub refused: Arc<RefusedRequests>,
}

/// Requests the gateway answered itself, counted by status, before any app's route took them:
/// no route matched (404), a malformed target or framing (400), the per-IP connection limit
/// (503), a body over the limit (413). HAProxy's frontend `denied` and error counters.
#[derive(Debug, Default)]
pub struct RefusedRequests {
    by_code: [AtomicU64; REFUSED_CODES.len() + 1],
}

/// The statuses [`RefusedRequests`] counts one by one; any other is counted as `other`.
pub const REFUSED_CODES: [u16; 10] = [400, 404, 405, 408, 413, 414, 421, 431, 500, 503];

impl RefusedRequests {
    /// Counts one refused request answered with `status`.
    pub fn record(&self, status: u16) {
        let i = REFUSED_CODES
            .iter()
            .position(|c| *c == status)
            .unwrap_or(REFUSED_CODES.len());
        self.by_code[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)` for every code (`"other"` last), zeros included.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        REFUSED_CODES
            .iter()
            .map(ToString::to_string)
            .chain(std::iter::once("other".to_owned()))
            .zip(self.by_code.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Client connections of the gateway (nginx `stub_status`: accepts, active, waiting).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections accepted since start (a counter).
    pub accepted: AtomicU64,
    /// Connections open now, parked ones included.
    pub open: AtomicU64,
    /// Open connections released between two requests (`idle_release`), waiting for their
    /// next byte with no HTTP state (nginx's "waiting").
    pub parked: AtomicU64,
    /// Open connections per gateway thread (shard), sized once when the gateway starts
    /// serving: how evenly the kernel spreads connections across the threads.
    by_thread: OnceLock<Box<[AtomicU64]>>,
}

impl ConnectionStats {
    /// Counts an accepted connection as open until the guard drops.
    #[must_use]
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        self.opened_on(0)
    }

    /// As [`ConnectionStats::opened`], on gateway thread `thread`.
    #[must_use]
    pub fn opened_on(self: &Arc<Self>, thread: usize) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        // Only a counted connection is uncounted when it closes (`u32::MAX`: not counted).
        let counted = match self.by_thread.get().and_then(|t| t.get(thread)) {
            Some(c) => {
                c.fetch_add(1, Ordering::Relaxed);
                u32::try_from(thread).unwrap_or(u32::MAX)
            }
            None => u32::MAX,
        };
        OpenConnection {
            stats: Arc::clone(self),
            thread: counted,
        }
    }

    /// Sizes the per-thread counts for `threads` gateway threads (the first call wins).
    pub fn set_threads(&self, threads: usize) {
        let _ = self
            .by_thread
            .set((0..threads).map(|_| AtomicU64::new(0)).collect());
    }

    /// Open connections per gateway thread (empty before the gateway serves).
    #[must_use]
    pub fn by_thread(&self) -> Vec<u64> {
        self.by_thread.get().map_or_else(Vec::new, |t| {
            t.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        })
    }
}

/// One open client connection, counted in [`ConnectionStats::open`] (and its thread's count)
/// until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    stats: Arc<ConnectionStats>,
    thread: u32,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        let thread = usize::try_from(self.thread).unwrap_or(usize::MAX);
        if let Some(c) = self.stats.by_thread.get().and_then(|t| t.get(thread)) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl StatsRegistry {
    /// The entry for (app, route), created if new. Called when routing tables are built, never
    /// per request.
    pub fn entry(&self, app: &str, route: &str) -> Arc<RouteStats> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = entries.iter().find(|e| e.app == app && e.route == route) {
            return Arc::clone(e);
        }
        let e = Arc::new(RouteStats::new(app, route));
        entries.push(Arc::clone(&e));
        e
    }

    /// Forgets every entry not in `keep` (after a config reload removed its app or route), so
    /// `/metrics` stops exporting series for what no longer exists. An entry that comes back
    /// later starts from zero, which Prometheus reads as a counter reset.
    pub fn retain<'a>(&self, keep: impl IntoIterator<Item = &'a Arc<RouteStats>>) {
        let keep: Vec<&Arc<RouteStats>> = keep.into_iter().collect();
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|e| keep.iter().any(|k| Arc::ptr_eq(k, e)));
    }

    #[must_use]
    pub fn all(&self) -> Vec<Arc<RouteStats>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_classes_buckets_and_quantiles() {
        let reg = StatsRegistry::default();
        let s = reg.entry("web", "default");
        assert!(Arc::ptr_eq(&s, &reg.entry("web", "default")));
        for ms in 1..=100u64 {
            s.record(if ms > 95 { 503 } else { 200 }, Duration::from_millis(ms));
        }
        let c = s.counters();
        assert_eq!(c.by_class, [0, 95, 0, 0, 5]);
        assert_eq!(c.responses(), 100);
        // Within a fine bucket (4.4 %) of the truth: 50 ms and 99 ms.
        let p50 = c.quantile(0.5).unwrap();
        assert!((0.0478..=0.0522).contains(&p50), "{p50}");
        let p99 = c.quantile(0.99).unwrap();
        assert!((0.0946..=0.1034).contains(&p99), "{p99}");
        let later = {
            s.record(200, Duration::from_secs(60));
            s.counters()
        };
        let d = later.delta(&c);
        assert_eq!(d.responses(), 1);
        let one = d.quantile(0.5).unwrap();
        assert!((50.0..=72.0).contains(&one), "{one}");
    }

    #[test]
    fn slow_requests_get_percentiles_near_their_latency() {
        // Six requests of 1.41 s: the coarse Prometheus buckets (1 s to 2.5 s) would say
        // p50 1.75 s and p99 2.49 s.
        let s = StatsRegistry::default().entry("web", "default");
        for _ in 0..6 {
            s.record(200, Duration::from_millis(1410));
        }
        let c = s.counters();
        for q in [0.5, 0.95, 0.99] {
            let v = c.quantile(q).unwrap();
            assert!((1.19..=1.68).contains(&v), "q{q}: {v}");
        }
        assert_eq!(
            StatsRegistry::default()
                .entry("a", "b")
                .counters()
                .quantile(0.5),
            None
        );
    }

    #[test]
    fn retain_forgets_entries_that_are_gone() {
        let reg = StatsRegistry::default();
        let kept = reg.entry("web", "default");
        reg.entry("api", "route1")
            .record(200, Duration::from_millis(1));
        reg.retain([&kept]);
        let all = reg.all();
        assert_eq!(all.len(), 1);
        assert!(Arc::ptr_eq(&all[0], &kept));
        assert_eq!(reg.entry("api", "route1").counters().responses(), 0);
    }

    #[test]
    fn connections_count_per_thread() {
        let c = Arc::new(ConnectionStats::default());
        // Opened before the threads are known: counted in total only, and never uncounted.
        let early = c.opened_on(1);
        assert!(c.by_thread().is_empty());
        c.set_threads(2);
        let a = c.opened_on(0);
        let b = c.opened_on(1);
        let b2 = c.opened_on(1);
        let beyond = c.opened_on(7);
        assert_eq!(c.by_thread(), vec![1, 2]);
        assert_eq!(c.open.load(Ordering::Relaxed), 5);
        drop((early, beyond, b));
        assert_eq!(c.by_thread(), vec![1, 1]);
        drop((a, b2));
        assert_eq!(c.by_thread(), vec![0, 0]);
        assert_eq!(c.open.load(Ordering::Relaxed), 0);
        assert_eq!(c.accepted.load(Ordering::Relaxed), 5);
    }
}
