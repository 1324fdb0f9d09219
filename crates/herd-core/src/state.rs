use serde::Serialize;

/// The states an instance is shown in. Transitions are documented in `crates/herd-fleet/LIFECYCLE.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Process spawned (or server configured); health checks have not yet passed `rise` times.
    Starting,
    /// In rotation: receives traffic.
    Ready,
    /// Failed its health checks (`fall` in a row after it was ready; a fixed server at its
    /// first `fall` failures): out of rotation while its checks go on; `rise` passes put it
    /// back (HAProxy's DOWN). A process herd started keeps running (it is restarted when its
    /// checks get no answer for `ready_timeout`).
    Down,
    /// Out of rotation; in-flight requests finish, then it is stopped.
    Draining,
    /// Put in maintenance by an operator (HAProxy MAINT): out of rotation, checks paused,
    /// in-flight requests finish; the process keeps running.
    Maint,
    /// Stopped on purpose (scale-in, replacement, shutdown).
    Stopped,
    /// Exited unexpectedly; waiting out the restart backoff.
    Restarting,
    /// Gave up after `max_restarts` unstable restarts.
    Errored,
}

impl InstanceState {
    /// Every state, in lifecycle order (for metrics that export each one as 0 or 1).
    pub const ALL: [InstanceState; 8] = [
        InstanceState::Starting,
        InstanceState::Ready,
        InstanceState::Down,
        InstanceState::Draining,
        InstanceState::Maint,
        InstanceState::Stopped,
        InstanceState::Restarting,
        InstanceState::Errored,
    ];

    /// The lowercase name used in the admin API and the CLI.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Down => "down",
            InstanceState::Draining => "draining",
            InstanceState::Maint => "maint",
            InstanceState::Stopped => "stopped",
            InstanceState::Restarting => "restarting",
            InstanceState::Errored => "errored",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
