//! When a cached entry is fresh, due for a refresh, stale or gone: a pure function of the
//! entry's times, the namespace's strategy and `now`, so it is tested without a clock.
//!
//! With `ttl` the entry's lifetime, `refresh_ahead = f` and `grace = g` (all from the strategy):
//!
//! ```text
//! age:   0 ........ f·ttl ........ ttl ........ ttl+g ........
//!        | Fresh    | RefreshAhead  | Stale      | Expired
//! ```
//!
//! `RefreshAhead` serves the value and refreshes it in the background before it expires (the
//! seed's `refreshThreshold`); `Stale` serves the old value while a refresh runs (RFC 5861
//! stale-while-revalidate, Varnish grace); `Expired` is a miss.

/// What a read should do with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it and refresh it in the background.
    RefreshAhead,
    /// Past its TTL but within grace: serve it and refresh it in the background.
    Stale,
    /// Gone: a miss.
    Expired,
}

impl Freshness {
    /// The name used in the `X-Cache-Freshness` header and stats.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::RefreshAhead => "refresh-ahead",
            Freshness::Stale => "stale",
            Freshness::Expired => "expired",
        }
    }

    /// Whether a background refresh should start.
    #[must_use]
    pub fn wants_refresh(self) -> bool {
        matches!(self, Freshness::RefreshAhead | Freshness::Stale)
    }
}

/// Classifies an entry stored at `stored_at_ms` with lifetime `ttl_ms`.
///
/// `refresh_ahead` is a fraction of the TTL in `(0, 1]` (`None`: never refresh ahead);
/// `grace_ms` is how long past the TTL a stale value may still be served. A `stored_at_ms` in
/// the future (clocks of two nodes disagree) counts as just stored.
#[must_use]
pub fn freshness(
    stored_at_ms: i64,
    ttl_ms: i64,
    refresh_ahead: Option<f64>,
    grace_ms: i64,
    now_ms: i64,
) -> Freshness {
    let age = now_ms.saturating_sub(stored_at_ms).max(0);
    if age >= ttl_ms.saturating_add(grace_ms.max(0)) {
        return Freshness::Expired;
    }
    if age >= ttl_ms {
        return Freshness::Stale;
    }
    if let Some(fraction) = refresh_ahead {
        // Precision loss is irrelevant at millisecond ages.
        #[allow(clippy::cast_precision_loss)]
        let threshold = ttl_ms as f64 * fraction;
        #[allow(clippy::cast_precision_loss)]
        if age as f64 >= threshold {
            return Freshness::RefreshAhead;
        }
    }
    Freshness::Fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_device_strategy() {
        // 3600 s TTL, refresh at 0.8, no grace.
        let ttl = 3_600_000;
        assert_eq!(freshness(0, ttl, Some(0.8), 0, 0), Freshness::Fresh);
        assert_eq!(freshness(0, ttl, Some(0.8), 0, 2_879_999), Freshness::Fresh);
        assert_eq!(
            freshness(0, ttl, Some(0.8), 0, 2_880_000),
            Freshness::RefreshAhead
        );
        assert_eq!(freshness(0, ttl, Some(0.8), 0, ttl), Freshness::Expired);
        assert_eq!(freshness(0, ttl, None, 10_000, ttl + 5), Freshness::Stale);
        assert_eq!(
            freshness(0, ttl, None, 10_000, ttl + 10_000),
            Freshness::Expired
        );
        assert_eq!(
            freshness(1_000, ttl, None, 0, 0),
            Freshness::Fresh,
            "future entry"
        );
    }

    proptest! {
        #[test]
        fn classifies_by_age_and_never_goes_back(
            stored in -1_000_000i64..1_000_000,
            ttl in 1i64..10_000_000,
            fraction in proptest::option::of(0.01f64..=1.0),
            grace in 0i64..1_000_000,
            a in 0i64..20_000_000,
            b in 0i64..20_000_000,
        ) {
            let (t1, t2) = (stored + a.min(b), stored + a.max(b));
            let f1 = freshness(stored, ttl, fraction, grace, t1);
            let f2 = freshness(stored, ttl, fraction, grace, t2);
            // Time only moves an entry towards expiry.
            prop_assert!(f1 <= f2, "{f1:?} at {t1} then {f2:?} at {t2}");
            let age = t2 - stored;
            prop_assert_eq!(f2 == Freshness::Expired, age >= ttl + grace);
            prop_assert_eq!(f2 == Freshness::Stale, age >= ttl && age < ttl + grace);
            if f2 == Freshness::RefreshAhead {
                prop_assert!(fraction.is_some() && age < ttl);
            }
            if fraction.is_none() {
                prop_assert!(f2 != Freshness::RefreshAhead);
            }
        }
    }
}
