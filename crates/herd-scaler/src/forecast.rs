//! Predictive scaling: a bounded history of demand and a seasonal forecast from it.
//!
//! Demand is recorded in *instances* (the largest fractional recommendation over the target
//! metrics), averaged per wall-clock minute, for 14 days (20 160 minutes, ~320 KiB). Two
//! forecasts are combined, taking the larger (a forecast that is too high costs a few
//! instance-minutes; one that is too low costs nothing worse than no forecast):
//!
//! - **seasonal naive**: the median of the 5 minutes around the same time last week (yesterday
//!   while there is no week of history), scaled by the last 30 minutes against the same 30
//!   minutes then (so a quieter Saturday after a busy Friday is forecast as quieter);
//! - **Holt-Winters** (additive, daily season of 1 440 minutes): level, trend and seasonal
//!   indices updated once per completed minute, initialised from the first full day.
//!
//! Nothing is forecast before a day of history (AWS predictive scaling asks for 24 h): a day
//! since the first minute and at least 18 hours of minutes recorded, so a restored file with a
//! few old minutes does not count. Holt-Winters starts from a day with 18 hours recorded.
//! The engine uses the maximum forecast over `[now, now + lead]` and only ever raises the count.

/// Minutes kept.
pub const HISTORY_MINUTES: i64 = 14 * 1440;
const HISTORY_SLOTS: usize = 14 * 1440;
const DAY: i64 = 1440;
const WEEK: i64 = 7 * 1440;
/// Minutes that must hold data before anything is forecast, and of the day Holt-Winters
/// starts from (18 hours).
const MIN_DAY_MINUTES: usize = 1080;
/// Seasonal-naive looks this many minutes either side of the same time.
const SMEAR: i64 = 2;
/// The seasonal-naive forecast is scaled by the last this-many minutes against the same minutes
/// one season ago.
const LEVEL_MINUTES: i64 = 30;
const ALPHA: f64 = 0.1;
const BETA: f64 = 0.005;
const GAMMA: f64 = 0.3;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Unix minute this slot holds; slots are reused every `HISTORY_MINUTES`.
    minute: i64,
    sum: f64,
    count: u32,
}

/// Additive Holt-Winters with a daily season.
#[derive(Debug, Clone)]
struct HoltWinters {
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// The last minute folded in.
    last: i64,
}

impl HoltWinters {
    fn update(&mut self, minute: i64, x: f64) {
        // Minutes without data advance the state along its own forecast.
        while self.last + 1 < minute {
            let m = self.last + 1;
            let predicted = self.forecast(m);
            self.step(m, predicted);
        }
        if minute > self.last {
            self.step(minute, x);
        }
    }

    fn step(&mut self, minute: i64, x: f64) {
        let i = usize::try_from(minute.rem_euclid(DAY)).unwrap_or(0);
        let s = self.season[i];
        let level = ALPHA * (x - s) + (1.0 - ALPHA) * (self.level + self.trend);
        self.trend = BETA * (level - self.level) + (1.0 - BETA) * self.trend;
        self.season[i] = GAMMA * (x - level) + (1.0 - GAMMA) * s;
        self.level = level;
        self.last = minute;
    }

    fn forecast(&self, minute: i64) -> f64 {
        #[allow(clippy::cast_precision_loss)] // minute differences are small
        let h = (minute - self.last) as f64;
        let i = usize::try_from(minute.rem_euclid(DAY)).unwrap_or(0);
        self.level + h * self.trend + self.season[i]
    }
}

/// The engine's demand history and forecaster.
#[derive(Debug, Clone)]
pub struct History {
    buckets: Vec<Bucket>,
    /// The minute being filled; folded into Holt-Winters when the next one starts.
    open: Option<i64>,
    first: Option<i64>,
    hw: Option<HoltWinters>,
    filled: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            buckets: vec![Bucket::default(); usize::try_from(HISTORY_MINUTES).unwrap_or(0)],
            open: None,
            first: None,
            hw: None,
            filled: 0,
        }
    }
}

/// The forecast over a lead time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Forecast {
    pub(crate) demand: f64,
    pub(crate) seasonal_naive: Option<f64>,
    pub(crate) holt_winters: Option<f64>,
}

impl History {
    fn slot(minute: i64) -> usize {
        usize::try_from(minute.rem_euclid(HISTORY_MINUTES)).unwrap_or(0)
    }

    /// The mean demand recorded in `minute`, if any.
    #[must_use]
    pub fn get(&self, minute: i64) -> Option<f64> {
        let b = self.buckets.get(Self::slot(minute))?;
        (b.minute == minute && b.count > 0).then(|| b.sum / f64::from(b.count))
    }

    /// Minutes with data (at most 14 days' worth).
    #[must_use]
    pub fn len(&self) -> usize {
        self.filled
    }

    /// No data yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }

    /// Records one demand sample (instances) at a wall-clock time.
    pub fn record(&mut self, wall_unix_ms: i64, demand: f64) {
        if !demand.is_finite() || demand < 0.0 {
            return;
        }
        let minute = wall_unix_ms.div_euclid(60_000);
        match self.open {
            // The clock went back (NTP step, restored history): keep what we have, add nothing
            // to minutes already folded in.
            Some(open) if minute < open => return,
            Some(open) if minute > open => self.close(open),
            _ => {}
        }
        self.open = Some(minute);
        self.first.get_or_insert(minute);
        let slot = Self::slot(minute);
        let b = &mut self.buckets[slot];
        if b.minute != minute || b.count == 0 {
            self.filled = (self.filled + 1).min(HISTORY_SLOTS);
            *b = Bucket {
                minute,
                sum: 0.0,
                count: 0,
            };
        }
        b.sum += demand;
        b.count += 1;
    }

    /// Folds a completed minute into Holt-Winters, initialising it after a full day.
    fn close(&mut self, minute: i64) {
        let Some(x) = self.get(minute) else { return };
        if let Some(hw) = &mut self.hw {
            hw.update(minute, x);
            return;
        }
        let Some(first) = self.first else { return };
        if minute - first + 1 < DAY {
            return;
        }
        let start = minute - DAY + 1;
        let values: Vec<(i64, f64)> = (start..=minute)
            .filter_map(|m| self.get(m).map(|v| (m, v)))
            .collect();
        if values.len() < MIN_DAY_MINUTES {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let level = values.iter().map(|(_, v)| v).sum::<f64>() / values.len() as f64;
        let mut season = vec![0.0; usize::try_from(DAY).unwrap_or(0)];
        for (m, v) in &values {
            season[usize::try_from(m.rem_euclid(DAY)).unwrap_or(0)] = v - level;
        }
        self.hw = Some(HoltWinters {
            level,
            trend: 0.0,
            season,
            last: minute,
        });
    }

    /// The median of the 5 minutes around the same time last week, or yesterday while there is
    /// no week of history yet, scaled by how the last 30 minutes compare with the same 30
    /// minutes then. A median, because single minutes are noisy and a median keeps steps
    /// sharp; last week first, because it knows weekdays from weekends; scaled, so that a
    /// quieter (or busier) day than the reference is forecast as such.
    fn seasonal_naive(&self, minute: i64, now: i64) -> Option<f64> {
        let median_around = |at: i64| {
            let mut v: Vec<f64> = (at - SMEAR..=at + SMEAR)
                .filter_map(|m| self.get(m))
                .collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            Some(v[v.len() / 2])
        };
        let season = if median_around(minute - WEEK).is_some() {
            WEEK
        } else {
            DAY
        };
        let base = median_around(minute - season)?;
        let mean = |from: i64, to: i64| {
            let (sum, n) = (from..to)
                .filter_map(|m| self.get(m))
                .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
            (n > 0).then(|| sum / f64::from(n))
        };
        let scale = match (
            mean(now - LEVEL_MINUTES, now),
            mean(now - season - LEVEL_MINUTES, now - season),
        ) {
            (Some(recent), Some(then)) if then > 0.0 => (recent / then).clamp(0.25, 4.0),
            _ => 1.0,
        };
        Some(base * scale)
    }

    /// The forecast over `[now, now + lead]`: the largest of the two methods at each minute.
    pub(crate) fn forecast(&self, wall_unix_ms: i64, lead_ms: u64) -> Forecast {
        let now = wall_unix_ms.div_euclid(60_000);
        let end = wall_unix_ms
            .saturating_add(i64::try_from(lead_ms).unwrap_or(i64::MAX))
            .div_euclid(60_000);
        let enough = self.first.is_some_and(|f| now - f >= DAY) && self.filled >= MIN_DAY_MINUTES;
        let mut sn: Option<f64> = None;
        let mut hw: Option<f64> = None;
        if enough {
            for m in now..=end.min(now + DAY) {
                if let Some(v) = self.seasonal_naive(m, now) {
                    sn = Some(sn.map_or(v, |b| b.max(v)));
                }
                if let Some(h) = &self.hw {
                    let v = h.forecast(m).max(0.0);
                    hw = Some(hw.map_or(v, |b| b.max(v)));
                }
            }
        }
        let demand = match (sn, hw) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0.0,
        };
        Forecast {
            demand,
            seasonal_naive: sn,
            holt_winters: hw,
        }
    }

    /// The recorded minutes, oldest first, for persisting across restarts.
    #[must_use]
    pub fn export(&self) -> Vec<(i64, f64)> {
        let Some(open) = self.open else {
            return Vec::new();
        };
        (open - HISTORY_MINUTES + 1..=open)
            .filter_map(|m| self.get(m).map(|v| (m, v)))
            .collect()
    }

    /// Rebuilds a history from exported minutes (any order; the last 14 days are kept).
    #[must_use]
    pub fn restore(minutes: &[(i64, f64)]) -> History {
        let mut sorted = minutes.to_vec();
        sorted.sort_by_key(|(m, _)| *m);
        let mut h = History::default();
        for (m, v) in sorted {
            h.record(m.saturating_mul(60_000), v);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_704_067_200_000;

    fn daily(minute: i64) -> f64 {
        let phase = (minute.rem_euclid(DAY) as f64) / DAY as f64 * std::f64::consts::TAU;
        10.0 + 8.0 * phase.sin()
    }

    fn fill(days: i64) -> History {
        let mut h = History::default();
        for m in 0..days * DAY {
            h.record(T0 + m * 60_000, daily(m));
        }
        h
    }

    #[test]
    fn nothing_before_a_day() {
        let h = fill(0);
        assert_eq!(h.forecast(T0, 120_000).demand, 0.0);
        let mut h = History::default();
        for m in 0..600 {
            h.record(T0 + m * 60_000, 5.0);
        }
        let f = h.forecast(T0 + 600 * 60_000, 120_000);
        assert_eq!((f.seasonal_naive, f.holt_winters), (None, None));
        // Ten minutes two days ago are not a day of history either.
        let h = History::restore(&(0..10).map(|m| (T0 / 60_000 + m, 5.0)).collect::<Vec<_>>());
        let f = h.forecast(T0 + 2 * DAY * 60_000, 120_000);
        assert_eq!((f.seasonal_naive, f.holt_winters), (None, None));
        let mut h = h;
        h.record(T0 + 2 * DAY * 60_000, 5.0);
        h.record(T0 + (2 * DAY + 1) * 60_000, 5.0);
        assert!(h.hw.is_none(), "Holt-Winters started from a few minutes");
    }

    #[test]
    fn forecasts_tomorrow_like_today() {
        let h = fill(3);
        // A quarter day in: the rising part of the sine. The forecast 10 minutes ahead must be
        // close to the true value then (and at least the value now).
        let now = 3 * DAY + DAY / 4 - 60;
        let f = h.forecast(T0 + now * 60_000, 10 * 60_000);
        let truth = daily(now + 10);
        assert!(f.demand >= daily(now) - 0.1, "{f:?}");
        assert!((f.demand - truth).abs() < 1.0, "{f:?} vs {truth}");
        let hw = f.holt_winters.unwrap();
        assert!((hw - truth).abs() < 1.0, "holt-winters {hw} vs {truth}");
    }

    #[test]
    fn a_quieter_day_is_forecast_quieter() {
        let mut h = History::default();
        // Yesterday at 1.0× the daily pattern, today so far at 0.5×.
        for m in 0..DAY + DAY / 4 {
            let f = if m < DAY { 1.0 } else { 0.5 };
            h.record(T0 + m * 60_000, f * daily(m));
        }
        let now = DAY + DAY / 4;
        let f = h.forecast(T0 + now * 60_000, 5 * 60_000);
        let sn = f.seasonal_naive.unwrap();
        assert!((sn - 0.5 * daily(now + 5)).abs() < 0.5, "{f:?}");
    }

    #[test]
    fn history_is_bounded_and_round_trips() {
        let h = fill(15);
        assert_eq!(h.len(), usize::try_from(HISTORY_MINUTES).unwrap());
        let exported = h.export();
        assert_eq!(exported.len(), h.len());
        let back = History::restore(&exported);
        assert_eq!(back.export(), exported);
        let m = exported[100].0;
        assert_eq!(back.get(m), h.get(m));
    }

    #[test]
    fn averages_within_a_minute_and_ignores_the_past() {
        let mut h = History::default();
        h.record(T0, 2.0);
        h.record(T0 + 30_000, 4.0);
        assert_eq!(h.get(T0 / 60_000), Some(3.0));
        h.record(T0 + 60_000, 1.0);
        h.record(T0 + 10_000, 100.0);
        assert_eq!(
            h.get(T0 / 60_000),
            Some(3.0),
            "a closed minute is not changed"
        );
        h.record(T0 + 120_000, f64::NAN);
        assert_eq!(h.get(T0 / 60_000 + 2), None);
    }
}
