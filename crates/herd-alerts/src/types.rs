//! What the engine hands out: [`Notification`]s (state changes to deliver) and [`AlertStatus`]
//! (one row of `GET /alerts`), with their [`Severity`] and states.

use serde::Serialize;

/// How bad a firing alert is: which of the rule's thresholds the value is past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Past `warning`.
    Warning,
    /// Past `critical`.
    Critical,
}

impl Severity {
    /// `"warning"` or `"critical"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The state of one alert (a rule on one app), as `GET /alerts` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold (a resolved alert returns here).
    Inactive,
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// The condition has held for `for`: notifications went out.
    Firing,
}

/// What a [`Notification`] announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationState {
    /// The alert started firing, or its severity changed while firing.
    Firing,
    /// The alert stopped firing.
    Resolved,
}

impl NotificationState {
    /// `"firing"` or `"resolved"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Firing => "firing",
            NotificationState::Resolved => "resolved",
        }
    }
}

/// One state change of one alert, to log and to send to webhooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// The rule's name.
    pub alert: String,
    /// The app the value belongs to.
    pub app: String,
    /// The metric's name (`latency_p95`, ...).
    pub metric: &'static str,
    /// Firing (also on a severity change) or resolved.
    pub state: NotificationState,
    /// Firing: the new severity. Resolved: the severity it had when it stopped.
    pub severity: Severity,
    /// On a severity change while firing, the severity before; otherwise `None`.
    pub previous: Option<Severity>,
    /// The value at `at` (`None`: resolved without data, or by a reload).
    pub value: Option<f64>,
    /// The threshold of `severity`, in the metric's unit (seconds for latencies).
    pub threshold: f64,
    /// When this firing episode began (unchanged by severity changes), ms since the epoch.
    pub since_unix_ms: i64,
    /// The time of the sample that caused this change, ms since the epoch.
    pub at_unix_ms: i64,
    /// One sentence for people: what, where, how far past the threshold, for how long.
    pub summary: String,
}

/// The current state of one alert: a row of `GET /alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertStatus {
    /// The rule's name.
    pub name: String,
    /// The app.
    pub app: String,
    /// The metric's name.
    pub metric: &'static str,
    /// Inactive, pending or firing.
    pub state: AlertState,
    /// Firing: the current severity; pending: the severity it will fire with; else `None`.
    pub severity: Option<Severity>,
    /// The last sample's value (`None`: no data in the last sample).
    pub value: Option<f64>,
    /// The rule's thresholds, in the metric's unit.
    pub warning: Option<f64>,
    /// See `warning`.
    pub critical: Option<f64>,
    /// True when the alert is about the value falling below the thresholds.
    pub below: bool,
    /// The rule's `for`, in milliseconds.
    pub for_ms: u64,
    /// Pending: since when the condition holds; firing: since when it fires; else `None`.
    pub since_unix_ms: Option<i64>,
    /// The last time the state or severity changed (`None`: never).
    pub last_change_unix_ms: Option<i64>,
    /// One sentence describing the state.
    pub summary: String,
}
