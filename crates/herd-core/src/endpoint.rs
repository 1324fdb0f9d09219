use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::circuit::{Admission, Circuit, CircuitSettings, CircuitState};

/// One routable instance of an app.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Unique for the life of the herd process; a replacement instance gets a new uid.
    pub uid: u64,
    /// Stable, human id such as `web-3` (kept by a replacement of the same slot).
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub stats: Arc<EndpointStats>,
}

/// Live counters of one instance, written by the gateway, read by the supervisor and the admin API.
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Failures counted toward `max_fails` (passive health): each within `fail_timeout` of the
    /// one before.
    window_fails: AtomicU64,
    /// Milliseconds since `epoch` of the last failure counted.
    last_fail_ms: AtomicU64,
    /// Milliseconds since `epoch` until which the instance is passively marked down (0 = not down).
    down_until_ms: AtomicU64,
    epoch: Instant,
    idle: Notify,
    /// The last active health check, for the admin API.
    last_check: Mutex<Option<crate::LastCheck>>,
    /// Operator maintenance (HAProxy MAINT): out of rotation, active checks paused.
    maint: AtomicBool,
    /// Latency and errors since the supervisor's last sample.
    pub window: crate::Window,
    /// The circuit breaker (see `circuit`); locked only briefly, and only when the breaker is
    /// enabled: `circuit_closed` lets the common case skip the lock when reading.
    circuit: std::sync::Mutex<Circuit>,
    circuit_closed: std::sync::atomic::AtomicBool,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointStats {
    #[must_use]
    pub fn new() -> Self {
        let epoch = Instant::now();
        EndpointStats {
            circuit: std::sync::Mutex::new(Circuit::new(epoch)),
            circuit_closed: std::sync::atomic::AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            window_fails: AtomicU64::new(0),
            last_fail_ms: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            epoch,
            idle: Notify::new(),
            last_check: Mutex::new(None),
            maint: AtomicBool::new(false),
            window: crate::Window::default(),
        }
    }

    /// Counts a request as started; the returned guard ends it when dropped (after the response
    /// body has been streamed, so draining waits for whole exchanges).
    #[must_use]
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            stats: Arc::clone(self),
            release: None,
        }
    }

    /// Records an active health check's result.
    pub fn set_last_check(&self, check: crate::LastCheck) {
        if let Ok(mut c) = self.last_check.lock() {
            *c = Some(check);
        }
    }

    /// The last active health check's result, if one ran.
    #[must_use]
    pub fn last_check(&self) -> Option<crate::LastCheck> {
        self.last_check.lock().ok().and_then(|c| c.clone())
    }

    /// Sets or clears operator maintenance (checks pause while set).
    pub fn set_maint(&self, on: bool) {
        self.maint.store(on, Ordering::Relaxed);
    }

    #[must_use]
    pub fn in_maint(&self) -> bool {
        self.maint.load(Ordering::Relaxed)
    }

    /// When the current passive mark ends (or ended): slow start counts from there.
    #[must_use]
    pub fn down_until(&self) -> Option<Instant> {
        match self.down_until_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }

    /// Like [`EndpointStats::start_request`], but only while fewer than `max` are in flight
    /// (`max_conn`); atomic, so concurrent requests never exceed it.
    #[must_use]
    pub fn try_start_request(self: &Arc<Self>, max: usize) -> Option<InFlightGuard> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        Some(InFlightGuard {
            stats: Arc::clone(self),
            release: None,
        })
    }

    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    #[must_use]
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn ms_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a failed attempt (connect error, reset). After `max_fails` failures, each within
    /// `fail_timeout` of the last, the instance is passively down for `fail_timeout`; successes
    /// in between do not wipe the count (nginx: `fails` is reset by a success only once
    /// `fail_timeout` has passed since the last failure). Returns true when this failure marked
    /// it down.
    pub fn record_failure(&self, now: Instant, max_fails: u32, fail_timeout: Duration) -> bool {
        self.window.record_error();
        self.record_failed_response(now, max_fails, fail_timeout)
    }

    /// [`EndpointStats::record_failure`] for a response passive health counts as a failure
    /// (`observe = "layer7"`: a 5xx), which the window has already counted as a response.
    pub fn record_failed_response(
        &self,
        now: Instant,
        max_fails: u32,
        fail_timeout: Duration,
    ) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if max_fails == 0 {
            // nginx's `max_fails=0`: passive health is off.
            return false;
        }
        let now_ms = self.ms_since_epoch(now);
        let window_ms = u64::try_from(fail_timeout.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_fail_ms.swap(now_ms, Ordering::Relaxed);
        if now_ms.saturating_sub(last) > window_ms {
            self.window_fails.store(0, Ordering::Relaxed);
        }
        let fails = self.window_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= u64::from(max_fails) {
            self.down_until_ms
                .store(now_ms.saturating_add(window_ms).max(1), Ordering::Relaxed);
            self.window_fails.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records a successful exchange: clears the failure count once `fail_timeout` has passed
    /// since the last failure (an instance failing every other request still adds up).
    pub fn record_success(&self, now: Instant, fail_timeout: Duration) {
        if self.window_fails.load(Ordering::Relaxed) == 0 {
            return;
        }
        let window_ms = u64::try_from(fail_timeout.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_fail_ms.load(Ordering::Relaxed);
        if self.ms_since_epoch(now).saturating_sub(last) > window_ms {
            self.window_fails.store(0, Ordering::Relaxed);
        }
    }

    /// Whether passive health currently keeps this instance out of the pick.
    #[must_use]
    pub fn passively_down(&self, now: Instant) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.ms_since_epoch(now) < until
    }

    /// Clears the passive mark (an active check passed).
    pub fn clear_down(&self) {
        self.down_until_ms.store(0, Ordering::Relaxed);
    }

    /// The circuit breaker's state: `"closed"`, `"open"` or `"half_open"` (for the admin API).
    #[must_use]
    pub fn circuit(&self) -> &'static str {
        self.circuit_state(Instant::now()).as_str()
    }

    /// The circuit breaker's state at `now`.
    #[must_use]
    pub fn circuit_state(&self, now: Instant) -> CircuitState {
        if self.circuit_closed.load(Ordering::Acquire) {
            return CircuitState::Closed;
        }
        self.lock_circuit().state(now)
    }

    /// Whether the breaker would admit a request now (no probe slot taken): for the pick.
    #[must_use]
    pub fn circuit_would_admit(&self, now: Instant, s: &CircuitSettings) -> bool {
        !s.enabled()
            || self.circuit_closed.load(Ordering::Acquire)
            || self.lock_circuit().would_admit(now, s)
    }

    /// Lets a request through the breaker (taking a probe slot while half-open) or not.
    pub fn circuit_admit(&self, now: Instant, s: &CircuitSettings) -> Admission {
        if self.circuit_closed.load(Ordering::Acquire) {
            return Admission::Admitted;
        }
        let mut c = self.lock_circuit();
        let admission = c.admission(now, s);
        if !s.enabled() {
            // The breaker was turned off while this circuit was not closed: it is now.
            self.circuit_closed.store(true, Ordering::Release);
        }
        admission
    }

    /// Gives back a probe slot (of the run `Admission::Probe` named) whose request will report
    /// no outcome.
    pub fn circuit_release_probe(&self, run: u32) {
        self.lock_circuit().release_probe(run);
    }

    /// Feeds an exchange's outcome to the breaker; returns the new state when it changed.
    pub fn circuit_record(
        &self,
        now: Instant,
        ok: bool,
        s: &CircuitSettings,
    ) -> Option<CircuitState> {
        if !s.enabled() && self.circuit_closed.load(Ordering::Acquire) {
            return None;
        }
        let mut c = self.lock_circuit();
        let change = c.record(now, ok, s);
        if change.is_some() {
            self.circuit_closed
                .store(change == Some(CircuitState::Closed), Ordering::Release);
        }
        change
    }

    fn lock_circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once no request is in flight. Event-driven: woken by the last guard's drop.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Ends one in-flight request when dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    stats: Arc<EndpointStats>,
    release: Option<Arc<dyn crate::Release>>,
}

impl InFlightGuard {
    /// Also tells `release` when the request ends (requests queued under `max_conn` wait on it).
    #[must_use]
    pub fn on_release(mut self, release: Arc<dyn crate::Release>) -> Self {
        self.release = Some(release);
        self
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.stats.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stats.idle.notify_waiters();
        }
        if let Some(r) = &self.release {
            r.released();
        }
    }
}

/// Where the supervisor publishes the set of instances in rotation for an app.
///
/// Implemented by the gateway; called on every change (never on the request path).
pub trait Rotation: Send + Sync + 'static {
    /// Replaces the ready set of `app`. Endpoints keep their identity by `uid`, so the
    /// gateway can keep connection pools of instances that stay.
    fn set_endpoints(&self, app: &str, endpoints: Vec<Endpoint>);

    /// The requests the gateway holds for `app` while it has no instance (scale from zero).
    fn demand(&self, app: &str) -> Option<std::sync::Arc<crate::Demand>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_down_after_max_fails_and_recovers_after_timeout() {
        let s = EndpointStats::new();
        let t0 = s.epoch + Duration::from_secs(1);
        assert!(!s.record_failure(t0, 2, Duration::from_secs(10)));
        assert!(!s.passively_down(t0));
        assert!(s.record_failure(t0 + Duration::from_secs(1), 2, Duration::from_secs(10)));
        assert!(s.passively_down(t0 + Duration::from_secs(2)));
        assert!(!s.passively_down(t0 + Duration::from_secs(12)));
    }

    #[test]
    fn successes_in_between_do_not_wipe_the_count() {
        let s = EndpointStats::new();
        let t0 = s.epoch + Duration::from_secs(1);
        let ft = Duration::from_secs(10);
        let mut down = false;
        for i in 0..3u64 {
            let t = t0 + Duration::from_secs(i);
            down = s.record_failure(t, 3, ft);
            s.record_success(t + Duration::from_millis(500), ft);
        }
        assert!(down, "3 failures within fail_timeout, every other request");
        // A success after a quiet fail_timeout does clear the count.
        let s = EndpointStats::new();
        assert!(!s.record_failure(t0, 2, ft));
        s.record_success(t0 + Duration::from_secs(11), ft);
        assert!(!s.record_failure(t0 + Duration::from_secs(12), 2, ft));
    }

    #[test]
    fn failures_outside_window_do_not_add_up() {
        let s = EndpointStats::new();
        let t0 = s.epoch + Duration::from_secs(1);
        assert!(!s.record_failure(t0, 2, Duration::from_secs(10)));
        assert!(!s.record_failure(t0 + Duration::from_secs(20), 2, Duration::from_secs(10)));
        assert!(!s.passively_down(t0 + Duration::from_secs(21)));
    }

    #[tokio::test]
    async fn wait_idle_wakes_when_last_request_ends() {
        let s = Arc::new(EndpointStats::new());
        let g1 = s.start_request();
        let g2 = s.start_request();
        let s2 = Arc::clone(&s);
        let waiter = tokio::spawn(async move { s2.wait_idle().await });
        drop(g1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g2);
        waiter.await.unwrap();
        assert_eq!(s.requests(), 2);
        assert_eq!(s.in_flight(), 0);
    }
}
