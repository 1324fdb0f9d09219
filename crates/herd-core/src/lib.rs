//! Types shared by herd's layers.
//!
//! The supervisor (`herd-fleet`) decides which instances are in rotation; the gateway (`herd-proxy`)
//! sends requests to them. They meet here:
//! - [`Endpoint`]: one routable instance (address, stable id) with its live [`EndpointStats`],
//!   shared by both sides so the gateway's in-flight count is exactly what the supervisor drains on.
//! - [`Rotation`]: the gateway-side sink the supervisor publishes each app's ready set into.
//! - [`Demand`]: requests held while an app scaled to zero gets its first instance.
//! - [`Circuit`]: the per-instance circuit breaker (pure), its state kept in [`EndpointStats`].
//! - [`Window`]: latency and error observations per sampling window, for the autoscaler.
//! - [`StatsRegistry`]: cumulative request counters and latency histograms per (app, route).
//! - [`telemetry`]: the per-second, per-app sample the dashboard and alerts read.
//! - [`logcap`]: one log line per interval for errors that come in floods.
//! - [`InstanceState`]: the lifecycle states shown to users (see `crates/herd-fleet/LIFECYCLE.md`).

mod check;
mod circuit;
mod demand;
mod endpoint;
pub mod linger;
pub mod logcap;
mod state;
mod stats;
pub mod telemetry;
pub mod token;
mod window;

pub use check::{local_exhaustion, LastCheck, LbView, LbWeight, Release};
pub use circuit::{Admission, Circuit, CircuitSettings, CircuitState};
pub use demand::{Demand, HoldError};
pub use endpoint::{Endpoint, EndpointStats, InFlightGuard, Rotation};
pub use state::InstanceState;
pub use stats::{
    ConnectionStats, OpenConnection, RefusedRequests, RouteCounters, RouteStats, StatsRegistry,
    LATENCY_BUCKETS, REFUSED_CODES, STATUS_CLASSES,
};
pub use window::{Window, WindowStats};
