//! herd's autoscaler: a pure decision engine, and the simulator that replays load traces
//! through it.
//!
//! The engine does no I/O. Each `interval` the supervisor calls [`Engine::tick`] with a
//! monotonic time, the wall-clock time, and an [`Observation`] (per-instance samples, the
//! gateway's queue, the operator's override and pause switch); it returns a [`Decision`]: the
//! desired count, the [`Reason`] that decided it, one sentence of explanation, every metric's
//! recommendation, and which instances to stop first. Time, samples and config are the only
//! inputs, so tests and `herd simulate` replay decisions exactly.
//!
//! Layout:
//!
//! - `observation`, `decision`: the public input and output types (serializable).
//! - `engine`: the tick, as a fixed sequence of stages (see its header for the order).
//! - `metrics`: per-metric recommendations, HPA's formula and missing-metric rules.
//! - `window`: HPA stabilization windows. `rules`: threshold rules with `for` and cooldown.
//! - `schedule`: cron schedules in time zones. `forecast`: demand history and the forecast.
//! - [`simulate`]: trace parsing, the queueing model, HPA's defaults, the report and the plot.
//!
//! Semantics (the config reference is `docs/config.md`):
//!
//! - **Metrics.** Load metrics (`concurrency` = in flight + gateway queue, `rps`,
//!   `queue_depth`) recommend `ceil(total / target)`. Per-instance metrics (`cpu`, `memory`,
//!   `latency_p95`, `error_rate`) follow HPA: averaged over measured instances; instances not
//!   measured count as 0 % when scaling up, ready ones without a value as 100 % when scaling
//!   down. Within `tolerance` of the current count nothing changes. The largest wins.
//! - **Warmup.** An instance is warming up while it is starting and, with `"auto"`, for one
//!   `interval` after it first shows as ready (its first full sample window), or with a duration
//!   until it is that old. Warming instances count toward capacity (`current`) but not toward
//!   averaged metrics, and nothing is scaled in while any instance warms up. With `"auto"`, an
//!   instance not ready after 5 minutes counts as broken, not warming; one that is down,
//!   errored, in maintenance or waiting out a restart backoff never warms up.
//! - **Panic** (Knative): demand averaged over `panic.window` at ≥ `threshold` × ready instances
//!   starts panic; it ends after `stable_window` below. In panic the count never goes down.
//! - **Zero.** With `min = 0`: traffic while nothing runs scales to one at once; without
//!   traffic, one instance is kept until `idle_to_zero` has passed, then the app goes to zero.
//! - **Schedules** raise `min`/`max` while active: for `duration` after each firing, or,
//!   without a duration, until another such entry fires (AWS scheduled actions).
//! - **Predictive.** Demand (instances) is kept per minute for 14 days; the forecast is the
//!   larger of seasonal-naive (the median of the same 5 minutes last week, or yesterday before
//!   a week of history, scaled by the last 30 minutes against then) and Holt-Winters (additive,
//!   daily season), maximised over `[now, now + lead]`; nothing before a day of history. `lead = "auto"` is the measured start time
//!   plus 60 s. The forecast only ever raises the recommendation (it goes through the scale-down
//!   window like any other), so it never causes a scale-in; `forecast_only` only reports it.
//! - **Manual** overrides everything but the bounds; **pause** keeps the current count.

mod decision;
mod engine;
mod forecast;
mod metrics;
mod observation;
mod rules;
mod schedule;
pub mod simulate;
mod window;

pub use decision::{Bounds, Decision, Direction, ForecastReport, MetricRecommendation, Reason};
pub use engine::{Engine, DEFAULT_START_TIME, STUCK_AFTER};
pub use forecast::{History, HISTORY_MINUTES};
pub use observation::{InstanceSample, ManualOverride, Observation};

#[cfg(test)]
mod tests;
