//! Validation of single values (durations, sizes, counts, addresses) and path helpers.
//! Each value helper reports its own error and returns a default, so validation goes on.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::Validator;
use crate::raw::{Int, Val};
use crate::units::{parse_duration, parse_size, DURATION_HINT, SIZE_HINT};

impl Validator<'_> {
    /// A duration value; `positive` rejects zero. Returns `default` if absent or invalid.
    pub(super) fn duration(
        &mut self,
        v: Option<&Val>,
        key: &str,
        default: Duration,
        positive: bool,
    ) -> Duration {
        let Some(v) = v else {
            return default;
        };
        let parsed = match v.get_ref() {
            Value::String(s) => parse_duration(s).map_err(|e| {
                (
                    format!("invalid duration \"{s}\": {e}"),
                    DURATION_HINT.to_owned(),
                )
            }),
            Value::Integer(0) => Ok(Duration::ZERO),
            // PM2 and nginx configs count in milliseconds: a large bare number most likely
            // meant those, and "1600s" offered first would be 27 minutes.
            Value::Integer(n) if *n >= 100 => Err((
                format!("invalid duration {n}: missing unit"),
                format!("durations are quoted and need a unit, e.g. \"{n}ms\" (PM2 counts in milliseconds) or \"{n}s\""),
            )),
            Value::Integer(n) => Err((
                format!("invalid duration {n}: missing unit"),
                format!("durations are quoted and need a unit, e.g. \"{n}s\" or \"{n}ms\""),
            )),
            other => Err((
                format!("expected a duration string, found {}", other.type_str()),
                DURATION_HINT.to_owned(),
            )),
        };
        match parsed {
            Ok(dur) if positive && dur.is_zero() => {
                self.err(
                    &v.span(),
                    key,
                    "must be greater than 0",
                    Some(format!("e.g. \"{}\"", fmt_duration(default))),
                );
                default
            }
            Ok(dur) => dur,
            Err((message, mut hint)) => {
                if key.ends_with(".restart_delay") {
                    // The name is PM2's, the meaning is not: PM2's `restart_delay` is fixed.
                    hint.push_str("; note: herd's restart_delay is the first delay of a growing backoff (PM2's exp_backoff_restart_delay), PM2's fixed restart_delay has no counterpart");
                }
                self.err(&v.span(), key, message, Some(hint));
                default
            }
        }
    }

    /// A size in bytes; `None` (after reporting) if invalid.
    pub(super) fn size(&mut self, v: &Val, key: &str) -> Option<u64> {
        let parsed = match v.get_ref() {
            Value::String(s) => parse_size(s).map_err(|e| format!("invalid size \"{s}\": {e}")),
            Value::Integer(n) => u64::try_from(*n)
                .map_err(|_| format!("invalid size {n}: negative sizes are not allowed")),
            other => Err(format!(
                "expected a size string, found {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(n) => Some(n),
            Err(message) => {
                self.err(&v.span(), key, message, Some(SIZE_HINT.to_owned()));
                None
            }
        }
    }

    /// A non-negative count that must be at least `min`.
    pub(super) fn u32(&mut self, v: Option<&Int>, key: &str, default: u32, min: u32) -> u32 {
        let Some(v) = v else {
            return default;
        };
        let n = *v.get_ref();
        match u32::try_from(n) {
            Ok(n) if n >= min => n,
            _ => {
                let field = key.rsplit('.').next().unwrap_or(key);
                let limit = if n < i64::from(min) {
                    format!("at least {min}")
                } else {
                    format!("at most {}", u32::MAX)
                };
                self.err(
                    &v.span(),
                    key,
                    format!("{field} must be {limit}, got {n}"),
                    Some(format!("e.g. {field} = {default}")),
                );
                default
            }
        }
    }

    /// An integer from `min` to `max`.
    pub(super) fn u32_in(
        &mut self,
        v: Option<&Int>,
        key: &str,
        default: u32,
        (min, max): (u32, u32),
    ) -> u32 {
        let n = self.u32(v, key, default, min);
        match v {
            Some(v) if n > max => {
                let field = key.rsplit('.').next().unwrap_or(key);
                self.err(
                    &v.span(),
                    key,
                    format!("{field} must be at most {max}, got {n}"),
                    Some(format!("e.g. {field} = {default}")),
                );
                default
            }
            _ => n,
        }
    }

    /// `[gateway] max_headers`: 1 to 10 000.
    pub(super) fn max_headers(&mut self, v: Option<&Int>) -> usize {
        const MAX: u32 = 10_000;
        let n = self.u32(v, "gateway.max_headers", 100, 1);
        if n > MAX {
            if let Some(v) = v {
                self.err(
                    &v.span(),
                    "gateway.max_headers",
                    format!("max_headers must be at most {MAX}, got {n}"),
                    Some("e.g. max_headers = 200".into()),
                );
            }
            return 100;
        }
        usize::try_from(n).unwrap_or(100)
    }

    pub(super) fn usize(&mut self, v: Option<&Int>, key: &str, default: usize) -> usize {
        let Some(v) = v else {
            return default;
        };
        let n = *v.get_ref();
        usize::try_from(n).unwrap_or_else(|_| {
            let field = key.rsplit('.').next().unwrap_or(key);
            self.err(
                &v.span(),
                key,
                format!("{field} must not be negative, got {n}"),
                Some(format!("e.g. {field} = {default}")),
            );
            default
        })
    }

    pub(super) fn addr(&mut self, v: Option<&Val>, key: &str, default: SocketAddr) -> SocketAddr {
        let Some(v) = v else {
            return default;
        };
        let parsed = match v.get_ref() {
            Value::String(s) => parse_addr(s),
            Value::Integer(n) => Err((
                format!("invalid address {n}: expected \"IP:PORT\""),
                format!("quote it and include the IP, e.g. \"127.0.0.1:{n}\""),
            )),
            other => Err((
                format!("expected an address string, found {}", other.type_str()),
                format!("e.g. \"{default}\""),
            )),
        };
        parsed.unwrap_or_else(|(message, hint)| {
            self.err(&v.span(), key, message, Some(hint));
            default
        })
    }
}

/// Parses `IP:PORT` (`[v6]:PORT` for IPv6), with a hint for the usual mistakes.
pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, (String, String)> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        let message = format!("invalid socket address \"{s}\"");
        let hint = match s.trim().rsplit_once(':') {
            None if s.trim().bytes().all(|b| b.is_ascii_digit()) && !s.trim().is_empty() => {
                format!("include the IP: \"127.0.0.1:{0}\" (local only) or \"0.0.0.0:{0}\" (all interfaces)", s.trim())
            }
            Some(("", port)) => format!(
                "include the IP: \"127.0.0.1:{port}\" (local only) or \"0.0.0.0:{port}\" (all interfaces)"
            ),
            Some((host, port)) if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') => {
                format!("use an IP address, not a host name (names are not resolved), e.g. \"127.0.0.1:{port}\"")
            }
            Some((host, _)) if host.contains(':') && !host.starts_with('[') => {
                "write IPv6 addresses in brackets, e.g. \"[::1]:8080\"".to_owned()
            }
            _ => "use \"IP:PORT\" with a port from 0 to 65535, e.g. \"127.0.0.1:8080\"".to_owned(),
        };
        (message, hint)
    })
}

/// Joins a relative path onto `base` and drops `.` components.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let cleaned: PathBuf = joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if cleaned.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        cleaned
    }
}

/// Formats a duration the way it is written in the config file.
pub(super) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
