//! herd's alerts: rules on the per-app telemetry metrics (`[[alert]]`, plus the built-in rules
//! of `[alerts] defaults`), evaluated every second, logged, and POSTed as JSON to webhooks.
//!
//! Two halves, as elsewhere in herd: decisions without I/O, and the I/O.
//!
//! - [`AlertEngine`] (`engine`, with the per-alert state machine in `track` and the sentences
//!   in `summary`) is pure: [`AlertEngine::evaluate`] takes a
//!   [`Sample`](herd_core::telemetry::Sample), whose time it uses, and returns the
//!   [`Notification`]s of the alerts whose state changed; [`AlertEngine::status`] is what
//!   `GET /alerts` shows. Each (rule, app) pair goes inactive → pending (past a threshold,
//!   waiting for `for`) → firing (warning or critical; each severity change notifies) →
//!   resolved (notified once) → inactive. A missing value (no traffic for a latency, no
//!   `max_memory` for memory, an app absent from the sample) neither fires nor resolves; after
//!   [`NO_DATA_TIMEOUT`] without a value, a firing alert resolves and a pending one resets.
//! - [`Notifier`] (`notifier`, `webhook`, `payload`, `queue`) logs each notification once
//!   (warning → `warn`, critical → `error`, resolved → `info`) and queues it, without waiting,
//!   for its webhooks: one task per webhook POSTs the queue in order, each notification retried
//!   with exponential backoff (0.5 s, doubling) up to `webhook_retries` times, each attempt
//!   bounded by `webhook_timeout`. A full queue drops its oldest entry. Cancelling the shutdown
//!   token stops the tasks after a bounded drain. Logs show webhooks as `http://host:port` only:
//!   paths and queries often carry tokens.
//!
//! Wiring, in the telemetry loop: `notifier.notify(engine.evaluate(&sample))` every second, and
//! `engine.status()` for `GET /alerts`.

mod engine;
mod error;
mod notifier;
mod payload;
mod queue;
mod summary;
mod track;
mod types;
mod webhook;

use std::time::Duration;

pub use engine::AlertEngine;
pub use error::DeliveryError;
pub use notifier::{DeliveryOptions, Notifier};
pub use types::{AlertState, AlertStatus, Notification, NotificationState, Severity};

/// How long an alert may go without a value before a firing one resolves and a pending one
/// resets (Prometheus' staleness lookback). Shorter gaps change nothing: a latency has no value
/// in a second without answers, which is also what a badly overloaded app looks like.
pub const NO_DATA_TIMEOUT: Duration = Duration::from_secs(300);
