//! The state machine of one alert (one rule on one app), stepped once per sample. Pure: the
//! time comes from the sample.
//!
//! Two timers remember since when the value has been past each threshold ("at least warning"
//! and "critical"). A severity fires once its condition has held for the rule's `for`, like
//! two Prometheus rules with the same `for`: inactive → pending → firing(warning) →
//! firing(critical) needs the critical condition to hold for `for` too, while de-escalation and
//! resolution take effect on the first sample that shows them. A missing value leaves
//! a firing alert as it is (it is no evidence either way) until [`NO_DATA_TIMEOUT`] has passed
//! without a value: then it resolves. A pending alert resets once its condition has gone
//! unobserved for its `for`: the time it was pending must have been watched.

use herd_config::AlertRule;

use crate::summary::{self, Resolution};
use crate::types::{AlertState, AlertStatus, Severity};
use crate::NO_DATA_TIMEOUT;

/// A state change of one alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    /// Started firing (`previous: None`) or changed severity while firing.
    Fired {
        severity: Severity,
        previous: Option<Severity>,
        since: i64,
    },
    /// Stopped firing.
    Resolved {
        severity: Severity,
        since: i64,
        why: Resolution,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Firing {
    severity: Severity,
    since: i64,
}

/// One alert's state.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    /// Index of the rule in the engine's rules.
    pub(crate) rule: usize,
    pub(crate) app: String,
    /// Since when the value is past `warning` or `critical` (only with a warning threshold).
    warning_since: Option<i64>,
    /// Since when the value is past `critical`.
    critical_since: Option<i64>,
    firing: Option<Firing>,
    /// The last sample's value.
    value: Option<f64>,
    last_data_ms: Option<i64>,
    last_eval_ms: Option<i64>,
    last_change_ms: Option<i64>,
}

fn no_data_ms() -> i64 {
    i64::try_from(NO_DATA_TIMEOUT.as_millis()).unwrap_or(i64::MAX)
}

impl Track {
    pub(crate) fn new(rule: usize, app: String) -> Self {
        Track {
            rule,
            app,
            warning_since: None,
            critical_since: None,
            firing: None,
            value: None,
            last_data_ms: None,
            last_eval_ms: None,
            last_change_ms: None,
        }
    }

    pub(crate) fn state(&self) -> AlertState {
        if self.firing.is_some() {
            AlertState::Firing
        } else if self.warning_since.is_some() || self.critical_since.is_some() {
            AlertState::Pending
        } else {
            AlertState::Inactive
        }
    }

    /// The value of the last sample.
    pub(crate) fn value(&self) -> Option<f64> {
        self.value
    }

    /// Applies the sample taken at `t` (ms since the epoch); `value` is `None` without data.
    pub(crate) fn step(&mut self, rule: &AlertRule, t: i64, value: Option<f64>) -> Option<Change> {
        let value = value.filter(|v| v.is_finite());
        let before = (self.state(), self.firing.map(|f| f.severity));
        self.value = value;
        self.last_eval_ms = Some(t);
        let stale = self
            .last_data_ms
            .is_some_and(|last| t.saturating_sub(last) >= no_data_ms());
        let change = match value {
            None if stale => {
                self.warning_since = None;
                self.critical_since = None;
                self.firing.take().map(|f| Change::Resolved {
                    severity: f.severity,
                    since: f.since,
                    why: Resolution::NoData,
                })
            }
            None => {
                self.forget_unwatched(rule, t);
                None
            }
            Some(v) => {
                if stale {
                    // Nothing is known about the gap: the timers start again.
                    self.warning_since = None;
                    self.critical_since = None;
                } else {
                    self.forget_unwatched(rule, t);
                }
                self.last_data_ms = Some(t);
                self.apply(rule, t, v)
            }
        };
        if (self.state(), self.firing.map(|f| f.severity)) != before {
            self.last_change_ms = Some(t);
        }
        change
    }

    /// A condition that went unobserved for longer than the rule's `for` has not been seen
    /// holding for `for`: its timer starts again (two slow answers a minute apart are not a
    /// minute of slowness; shorter gaps, sparse traffic, keep it). That is the pending alert's
    /// timers, or while firing at warning, the critical one's (an escalation needs `for`
    /// too). A firing alert itself stays firing.
    fn forget_unwatched(&mut self, rule: &AlertRule, t: i64) {
        let sustain = i64::try_from(rule.sustain.as_millis()).unwrap_or(i64::MAX);
        let unwatched = self
            .last_data_ms
            .is_none_or(|last| t.saturating_sub(last) > sustain);
        if !unwatched {
            return;
        }
        match self.firing.map(|f| f.severity) {
            None => {
                self.warning_since = None;
                self.critical_since = None;
            }
            Some(Severity::Warning) => self.critical_since = None,
            Some(Severity::Critical) => {}
        }
    }

    fn apply(&mut self, rule: &AlertRule, t: i64, v: f64) -> Option<Change> {
        let crit = rule.critical.is_some_and(|c| rule.crosses(v, c));
        let warn = crit || rule.warning.is_some_and(|w| rule.crosses(v, w));
        self.critical_since = if crit {
            self.critical_since.or(Some(t))
        } else {
            None
        };
        self.warning_since = if warn && rule.warning.is_some() {
            self.warning_since.or(Some(t))
        } else {
            None
        };
        let sustain = i64::try_from(rule.sustain.as_millis()).unwrap_or(i64::MAX);
        let held = |since: Option<i64>| since.is_some_and(|s| t.saturating_sub(s) >= sustain);
        let eligible = if held(self.critical_since) {
            Some(Severity::Critical)
        } else if held(self.warning_since) {
            Some(Severity::Warning)
        } else {
            None
        };
        // While firing, only a value back within the lowest threshold resolves. (After a reload
        // lengthened `for`, the condition may hold without having held for the new `for`.)
        let target = match (eligible, self.firing) {
            (Some(s), _) => Some(s),
            (None, Some(f)) if warn => Some(if f.severity == Severity::Critical && !crit {
                Severity::Warning
            } else {
                f.severity
            }),
            (None, _) => None,
        };
        match (self.firing, target) {
            (None, Some(severity)) => {
                self.firing = Some(Firing { severity, since: t });
                Some(Change::Fired {
                    severity,
                    previous: None,
                    since: t,
                })
            }
            (Some(f), Some(severity)) if f.severity != severity => {
                self.firing = Some(Firing { severity, ..f });
                Some(Change::Fired {
                    severity,
                    previous: Some(f.severity),
                    since: f.since,
                })
            }
            (Some(f), None) => {
                self.firing = None;
                Some(Change::Resolved {
                    severity: f.severity,
                    since: f.since,
                    why: Resolution::Cleared,
                })
            }
            _ => None,
        }
    }

    /// Ends a firing alert whose rule a reload removed; `None` if it was not firing.
    pub(crate) fn remove(&mut self) -> Option<Change> {
        self.end(Resolution::Removed)
    }

    /// Resolves a firing alert for `why` (not a sample's value); `None` when not firing.
    pub(crate) fn end(&mut self, why: Resolution) -> Option<Change> {
        self.firing.take().map(|f| Change::Resolved {
            severity: f.severity,
            since: f.since,
            why,
        })
    }

    pub(crate) fn status(&self, rule: &AlertRule) -> AlertStatus {
        let now = self.last_eval_ms.unwrap_or(0);
        let state = self.state();
        let (severity, since, summary) = match (self.firing, state) {
            (Some(f), _) => (
                Some(f.severity),
                Some(f.since),
                summary::firing_status(
                    rule,
                    &self.app,
                    self.value,
                    f.severity,
                    now.saturating_sub(f.since),
                ),
            ),
            (None, AlertState::Pending) => {
                let severity = if self.critical_since.is_some() {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                let since = match (self.warning_since, self.critical_since) {
                    (Some(w), Some(c)) => w.min(c),
                    (w, c) => w.or(c).unwrap_or(now),
                };
                (
                    Some(severity),
                    Some(since),
                    summary::pending(
                        rule,
                        &self.app,
                        self.value,
                        severity,
                        now.saturating_sub(since),
                    ),
                )
            }
            (None, _) => (None, None, summary::inactive(rule, &self.app, self.value)),
        };
        AlertStatus {
            name: rule.name.clone(),
            app: self.app.clone(),
            metric: rule.metric.name(),
            state,
            severity,
            value: self.value,
            warning: rule.warning,
            critical: rule.critical,
            below: rule.below,
            for_ms: u64::try_from(rule.sustain.as_millis()).unwrap_or(u64::MAX),
            since_unix_ms: since,
            last_change_unix_ms: self.last_change_ms,
            summary,
        }
    }
}
