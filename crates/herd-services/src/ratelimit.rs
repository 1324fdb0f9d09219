//! Shared rate limits: one GCRA step per request, done atomically by the store, so every herd
//! node counts against the same budget (nginx `limit_req` semantics: `rate`, `burst`). The
//! gateway's `shared = true` zones call [`RateLimits::check`].

use std::sync::Arc;
use std::time::Duration;

use herd_store::{Backend as _, Gcra, GcraDecision, Store};
use serde::Serialize;

use crate::error::{ServiceError, ServiceResult};

/// A rate as nginx writes it: `10r/s`, `600r/m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses `"<N>r/s"` or `"<N>r/m"`.
    ///
    /// # Errors
    /// `Invalid` naming the expected form.
    pub fn parse(s: &str) -> ServiceResult<Rate> {
        let t = s.trim();
        let (n, per) = if let Some(n) = t.strip_suffix("r/s") {
            (n, Duration::from_secs(1))
        } else if let Some(n) = t.strip_suffix("r/m") {
            (n, Duration::from_secs(60))
        } else {
            return Err(bad_rate(s));
        };
        match n.trim().parse::<u32>() {
            // The store counts in microseconds: one request per µs is the most it can tell.
            Ok(requests) if requests > 0 && per / requests >= Duration::from_micros(1) => {
                Ok(Rate { requests, per })
            }
            _ => Err(bad_rate(s)),
        }
    }

    /// Time between two requests at this rate.
    #[must_use]
    pub fn interval(&self) -> Duration {
        (self.per / self.requests.max(1)).max(Duration::from_nanos(1))
    }
}

fn bad_rate(s: &str) -> ServiceError {
    ServiceError::invalid(
        "rate",
        format!("{} is not a rate", crate::error::quoted(s)),
        "use requests per second or minute as nginx writes them: \"10r/s\" or \"600r/m\" (1 to 1000000r/s)",
    )
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// When refused: how long until a request would pass.
    pub retry_after_ms: u64,
    /// When allowed: how far ahead of the steady rate the key now is (nginx delays by this
    /// unless `nodelay`).
    pub delay_ms: u64,
}

/// The shared rate-limit service.
pub struct RateLimits {
    store: Arc<Store>,
}

impl RateLimits {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        RateLimits { store }
    }

    /// Counts one request for `key` against `rate` with `burst` extra requests allowed.
    ///
    /// # Errors
    /// `Invalid` key; store errors (callers decide whether to fail open).
    pub async fn check(&self, key: &str, rate: Rate, burst: u32) -> ServiceResult<Verdict> {
        if key.is_empty() || key.len() > 512 || key.contains(['{', '}', '\0']) {
            return Err(ServiceError::invalid(
                "rate-limit key",
                format!(
                    "{} is empty, too long or contains '{{', '}}' or NUL",
                    crate::error::quoted(key)
                ),
                "use a key like ip:203.0.113.7",
            ));
        }
        let interval = rate.interval();
        let params = Gcra {
            emission_interval: interval,
            burst_tolerance: interval * burst,
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(
            match self
                .store
                .gcra(&format!("herd:{{rl:{key}}}"), params)
                .await?
            {
                GcraDecision::Allow { delay } => Verdict {
                    allowed: true,
                    retry_after_ms: 0,
                    delay_ms: ms(delay),
                },
                GcraDecision::Deny { retry_after } => Verdict {
                    allowed: false,
                    // Round up so a client waiting this long passes.
                    retry_after_ms: ms(retry_after + Duration::from_micros(999)),
                    delay_ms: 0,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_rates() {
        assert_eq!(
            Rate::parse("10r/s").unwrap(),
            Rate {
                requests: 10,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            Rate::parse("600r/m").unwrap().interval(),
            Duration::from_millis(100)
        );
        assert!(Rate::parse("1000000r/s").is_ok());
        for bad in ["", "10", "0r/s", "-1r/s", "10r/h", "x r/s", "1000000000r/s"] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(e.hint().contains("r/s"), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,16}", n in 1u32..100_000) {
            let _ = Rate::parse(&s);
            let r = Rate::parse(&format!("{n}r/s")).unwrap();
            proptest::prop_assert_eq!(r.requests, n);
            proptest::prop_assert!(r.interval() > Duration::ZERO);
        }
    }
}
