//! A per-instance circuit breaker: pure state machine, no clock, no I/O.
//!
//! Closed → Open when `consecutive` failures arrive in a row, or when at least `min_requests`
//! requests in the current window (`window`, counts reset each window) failed at a rate of
//! `error_rate` or more. Open rejects every request until `open` has passed, then the breaker is
//! half-open: it admits at most `half_open` probe requests; a probe's success closes it, a
//! failure opens it again for another `open`. A probe whose outcome never comes back (the
//! request was dropped) frees its slot after another `open`, so the breaker cannot wedge.
//!
//! Every method takes `now` and the settings, so tests replay transitions exactly.

use std::time::{Duration, Instant};

/// The breaker's knobs (`[gateway] circuit_*`). A trigger set to 0 is off; both off = no breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit (0 = off).
    pub consecutive: u32,
    /// Failure ratio in the window that opens it (0 = off).
    pub error_rate: f64,
    /// Requests in the window before `error_rate` is judged.
    pub min_requests: u32,
    /// Length of the counting window for `error_rate`.
    pub window: Duration,
    /// How long the circuit stays open before probing.
    pub open: Duration,
    /// Probes admitted at once while half-open (at least 1).
    pub half_open: u32,
}

impl CircuitSettings {
    /// Whether any trigger is on.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.consecutive > 0 || self.error_rate > 0.0
    }
}

/// What the admin API shows per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// `"closed"`, `"open"` or `"half_open"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Inner {
    Closed {
        consecutive: u32,
        window_start: Instant,
        requests: u32,
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probes: u32,
        /// When the last probe slot was taken (to free lost probes).
        since: Instant,
        /// Which run of probes this is: a slot is given back only to the run that gave it.
        run: u32,
    },
}

/// What [`Circuit::admission`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Refused,
    Admitted,
    /// Admitted as one of the half-open circuit's probes, of this run of probes.
    Probe(u32),
}

/// One instance's breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circuit {
    inner: Inner,
    /// Runs of half-open probes so far (see `Inner::HalfOpen::run`).
    runs: u32,
}

impl Circuit {
    /// A closed breaker whose first window starts at `now`.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Circuit {
            inner: closed(now),
            runs: 0,
        }
    }

    /// The state as seen at `now` (an open circuit whose time is up reads half-open).
    #[must_use]
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if now < until => CircuitState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether [`Circuit::admit`] would let a request through now, without taking a probe slot.
    #[must_use]
    pub fn would_admit(&self, now: Instant, s: &CircuitSettings) -> bool {
        if !s.enabled() {
            return true;
        }
        match self.inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { probes, since, .. } => {
                probes < s.half_open.max(1) || now.saturating_duration_since(since) >= s.open
            }
        }
    }

    /// Lets a request through or not; while half-open, an admitted request is a probe.
    pub fn admit(&mut self, now: Instant, s: &CircuitSettings) -> bool {
        self.admission(now, s) != Admission::Refused
    }

    /// [`Circuit::admit`], saying whether the request took a probe slot: one whose outcome is
    /// never recorded (the client went away, nothing reached the instance) gives it back with
    /// [`Circuit::release_probe`] (with the run the admission named).
    pub fn admission(&mut self, now: Instant, s: &CircuitSettings) -> Admission {
        if !s.enabled() {
            // Turned off (by a reload) while open or half-open: closed, for good.
            self.inner = closed(now);
            return Admission::Admitted;
        }
        let limit = s.half_open.max(1);
        match &mut self.inner {
            Inner::Closed { .. } => Admission::Admitted,
            Inner::Open { until } if now < *until => Admission::Refused,
            Inner::Open { .. } => {
                self.runs = self.runs.wrapping_add(1);
                self.inner = Inner::HalfOpen {
                    probes: 1,
                    since: now,
                    run: self.runs,
                };
                Admission::Probe(self.runs)
            }
            Inner::HalfOpen { probes, since, run } => {
                if *probes >= limit && now.saturating_duration_since(*since) >= s.open {
                    // The probes in flight never reported back: presume them lost (a new
                    // run: their slots, if they ever end, are not given back to this one).
                    *probes = 0;
                    self.runs = self.runs.wrapping_add(1);
                    *run = self.runs;
                }
                if *probes < limit {
                    *probes += 1;
                    *since = now;
                    Admission::Probe(*run)
                } else {
                    Admission::Refused
                }
            }
        }
    }

    /// Gives back a probe slot taken by [`Circuit::admission`] whose request reports no
    /// outcome; nothing when the circuit has left half-open meanwhile.
    pub fn release_probe(&mut self, run: u32) {
        match &mut self.inner {
            Inner::HalfOpen {
                probes, run: now, ..
            } if *now == run => *probes = probes.saturating_sub(1),
            _ => {}
        }
    }

    /// Records an exchange's outcome. Returns the new state when this outcome changed it.
    pub fn record(&mut self, now: Instant, ok: bool, s: &CircuitSettings) -> Option<CircuitState> {
        if !s.enabled() {
            if matches!(self.inner, Inner::Closed { .. }) {
                return None;
            }
            self.inner = closed(now);
            return Some(CircuitState::Closed);
        }
        match &mut self.inner {
            Inner::Closed {
                consecutive,
                window_start,
                requests,
                failures,
            } => {
                if now.saturating_duration_since(*window_start) >= s.window {
                    *window_start = now;
                    *requests = 0;
                    *failures = 0;
                }
                *requests = requests.saturating_add(1);
                if ok {
                    *consecutive = 0;
                } else {
                    *consecutive = consecutive.saturating_add(1);
                    *failures = failures.saturating_add(1);
                }
                let by_streak = s.consecutive > 0 && *consecutive >= s.consecutive;
                let by_rate = s.error_rate > 0.0
                    && *requests >= s.min_requests.max(1)
                    && f64::from(*failures) / f64::from(*requests) >= s.error_rate;
                (by_streak || by_rate).then(|| self.open(now, s))
            }
            // Outcomes of requests admitted before the circuit opened change nothing.
            Inner::Open { .. } => None,
            Inner::HalfOpen { .. } if ok => {
                self.inner = closed(now);
                Some(CircuitState::Closed)
            }
            Inner::HalfOpen { .. } => Some(self.open(now, s)),
        }
    }

    fn open(&mut self, now: Instant, s: &CircuitSettings) -> CircuitState {
        self.inner = Inner::Open {
            until: now + s.open,
        };
        CircuitState::Open
    }
}

fn closed(now: Instant) -> Inner {
    Inner::Closed {
        consecutive: 0,
        window_start: now,
        requests: 0,
        failures: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            consecutive: 5,
            error_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open: Duration::from_secs(10),
            half_open: 1,
        }
    }

    #[test]
    fn five_failures_in_a_row_open_then_a_probe_closes() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new(t0);
        for i in 0..4 {
            assert_eq!(c.record(t0, false, &s), None, "failure {i}");
        }
        assert_eq!(c.record(t0, false, &s), Some(CircuitState::Open));
        assert!(!c.admit(t0 + Duration::from_secs(9), &s));
        assert_eq!(c.state(t0 + Duration::from_secs(9)), CircuitState::Open);
        let t1 = t0 + Duration::from_secs(10);
        assert!(c.would_admit(t1, &s));
        assert!(c.admit(t1, &s), "the first probe");
        assert!(!c.admit(t1, &s), "only one probe at a time");
        // A probe that reports nothing (its client left) frees its slot for the next.
        c.release_probe(1);
        assert_eq!(c.admission(t1, &s), Admission::Probe(1));
        assert!(!c.admit(t1, &s));
        // A slot of an earlier run is not given back to a later one.
        c.release_probe(0);
        assert!(!c.admit(t1, &s));
        assert_eq!(c.record(t1, true, &s), Some(CircuitState::Closed));
        assert!(c.admit(t1, &s));
    }

    #[test]
    fn a_breaker_turned_off_while_open_or_half_open_closes() {
        let s = settings();
        let off = CircuitSettings {
            consecutive: 0,
            error_rate: 0.0,
            ..settings()
        };
        assert!(!off.enabled());
        let t0 = Instant::now();
        for probe_first in [false, true] {
            let mut c = Circuit::new(t0);
            for _ in 0..5 {
                c.record(t0, false, &s);
            }
            let t1 = t0 + Duration::from_secs(10);
            if probe_first {
                assert!(c.admit(t1, &s), "half-open, its probe out");
            }
            // A reload turns the breaker off: everything is admitted, as many as come.
            for _ in 0..3 {
                assert!(c.would_admit(t1, &off));
                assert!(c.admit(t1, &off));
            }
            assert_eq!(c.state(t1), CircuitState::Closed);
        }
    }

    #[test]
    fn a_failed_probe_reopens_for_another_period() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new(t0);
        for _ in 0..5 {
            c.record(t0, false, &s);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert!(c.admit(t1, &s));
        assert_eq!(c.record(t1, false, &s), Some(CircuitState::Open));
        assert!(!c.admit(t1 + Duration::from_secs(9), &s));
        assert!(c.admit(t1 + Duration::from_secs(10), &s));
    }

    #[test]
    fn error_rate_needs_min_requests_in_one_window() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new(t0);
        // Alternating: never 5 in a row; 10 failures of 19 is under min_requests.
        for i in 0..19 {
            assert_eq!(c.record(t0, i % 2 == 0, &s), None);
        }
        assert_eq!(c.record(t0, false, &s), Some(CircuitState::Open), "11/20");
        // The same pattern spread thinner: 10 requests per window never reach min_requests.
        let mut c = Circuit::new(t0);
        for i in 0..40u32 {
            let t = t0 + Duration::from_millis(u64::from(i) * 1000);
            assert_eq!(c.record(t, i % 2 == 1, &s), None, "request {i}");
        }
    }

    #[test]
    fn a_lost_probe_frees_its_slot_after_the_open_period() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new(t0);
        for _ in 0..5 {
            c.record(t0, false, &s);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert!(c.admit(t1, &s));
        assert!(!c.admit(t1 + Duration::from_secs(5), &s));
        assert!(c.admit(t1 + Duration::from_secs(10), &s));
    }

    #[test]
    fn disabled_never_opens() {
        let s = CircuitSettings {
            consecutive: 0,
            error_rate: 0.0,
            ..settings()
        };
        let t0 = Instant::now();
        let mut c = Circuit::new(t0);
        for _ in 0..100 {
            assert_eq!(c.record(t0, false, &s), None);
        }
        assert!(c.admit(t0, &s));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u64),
        Record(u64, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3_000u64).prop_map(Op::Admit),
            (0..3_000u64, any::<bool>()).prop_map(|(d, ok)| Op::Record(d, ok)),
        ]
    }

    proptest! {
        /// Against a simple model: the circuit opens exactly when the streak reaches
        /// `consecutive` (rate trigger off), never admits while open, and the number of
        /// probes admitted at once never exceeds `half_open` within one open period.
        #[test]
        fn matches_a_streak_model(ops in proptest::collection::vec(op(), 1..200), half in 1..4u32) {
            let s = CircuitSettings { error_rate: 0.0, half_open: half, ..settings() };
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = Circuit::new(t0);
            let mut streak = 0u32;
            let mut open_until: Option<Instant> = None;
            let mut probes_since: Option<(u32, Instant)> = None;
            for op in ops {
                match op {
                    Op::Admit(d) => {
                        now += Duration::from_millis(d * 10);
                        let was = c.state(now);
                        let admitted = c.admit(now, &s);
                        if let Some(until) = open_until {
                            if now < until {
                                prop_assert!(!admitted, "admitted while open");
                                prop_assert_eq!(was, CircuitState::Open);
                            }
                        }
                        if was == CircuitState::Closed {
                            prop_assert!(admitted);
                        } else if admitted {
                            let (n, since) = probes_since.unwrap_or((0, now));
                            let n = if now.saturating_duration_since(since) >= s.open && n >= half { 0 } else { n };
                            prop_assert!(n < half, "too many probes");
                            probes_since = Some((n + 1, now));
                        }
                    }
                    Op::Record(d, ok) => {
                        now += Duration::from_millis(d * 10);
                        let before = c.state(now);
                        let change = c.record(now, ok, &s);
                        match before {
                            CircuitState::Closed => {
                                streak = if ok { 0 } else { streak + 1 };
                                if streak >= s.consecutive {
                                    prop_assert_eq!(change, Some(CircuitState::Open));
                                    open_until = Some(now + s.open);
                                    streak = 0;
                                    probes_since = None;
                                } else {
                                    prop_assert_eq!(change, None);
                                }
                            }
                            CircuitState::Open => prop_assert_eq!(change, None),
                            CircuitState::HalfOpen => {
                                if matches!(c.inner, Inner::Open { .. }) && change.is_none() {
                                    // Still open and unprobed: outcomes are ignored.
                                } else if ok {
                                    prop_assert_eq!(change, Some(CircuitState::Closed));
                                    streak = 0;
                                    open_until = None;
                                    probes_since = None;
                                } else {
                                    prop_assert_eq!(change, Some(CircuitState::Open));
                                    open_until = Some(now + s.open);
                                    probes_since = None;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
