//! What the data plane and the admin API share about an instance beyond counters: the last
//! active health check (shown by `GET /loadbalancer/status`), the operator's maintenance mark
//! (HAProxy MAINT: checks paused), and the hook a request's end calls so that requests queued
//! for a server under `max_conn` learn that a slot is free without polling.

use std::time::SystemTime;

use serde::Serialize;

/// The result of the last active health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastCheck {
    /// Unix milliseconds when the probe finished.
    pub at_unix_ms: u64,
    pub ok: bool,
    /// What the probe saw: `"HTTP 200"`, `"connect: Connection refused"`, `"timeout after 1s"`.
    pub detail: String,
}

impl LastCheck {
    /// A check finished now.
    #[must_use]
    pub fn now(ok: bool, detail: String) -> Self {
        let at_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        LastCheck {
            at_unix_ms,
            ok,
            detail,
        }
    }

    /// When the probe finished, as RFC 3339 UTC with milliseconds (`2026-11-22T20:31:05.123Z`).
    #[must_use]
    pub fn at_rfc3339(&self) -> String {
        rfc3339(self.at_unix_ms)
    }
}

/// Unix milliseconds as RFC 3339 UTC (civil date from days since the epoch, H. Hinnant's
/// algorithm; exact for the proleptic Gregorian calendar).
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_unix_milliseconds_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_379_152_521), "2026-11-22T20:25:52.521Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}

/// Told when a request that held an in-flight slot on an instance ends.
pub trait Release: Send + Sync + std::fmt::Debug {
    /// Called once per request, after the in-flight count went down.
    fn released(&self);
}

/// One instance in the gateway's rotation as the load balancer weighs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LbWeight {
    /// The instance id (`web-3`).
    pub instance: String,
    /// Configured `weight`.
    pub weight: u32,
    /// The weight in force now: lower than `weight` during slow start.
    pub effective_weight: f64,
    pub backup: bool,
    /// `max_conn` (0 = unlimited).
    pub max_conn: u32,
}

/// The gateway's view of its rotation, for `GET /loadbalancer/status`.
pub trait LbView: Send + Sync + 'static {
    /// The instances of `app` in rotation with their weights (empty for an unknown app).
    fn lb_weights(&self, app: &str) -> Vec<LbWeight>;
    /// Requests of `app` waiting for a server under its `max_conn`.
    fn queued(&self, app: &str) -> usize;
}

/// Whether an I/O error is herd running out of its own resources (file descriptors, socket
/// buffers, memory) rather than anything the other side did: a check or a connect that fails
/// so says nothing about the instance, and must not count against it.
#[must_use]
pub fn local_exhaustion(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE (the process's and the system's descriptor tables), ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

#[cfg(test)]
mod exhaustion_tests {
    #[test]
    fn descriptor_tables_full_are_local() {
        assert!(super::local_exhaustion(&std::io::Error::from_raw_os_error(
            24
        )));
        assert!(!super::local_exhaustion(&std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        )));
    }
}
