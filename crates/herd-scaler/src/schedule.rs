//! `[[app.scaling.schedule]]`: which entries are in force at a wall-clock time.
//!
//! An entry with a `duration` is in force from each firing of its cron (in its time zone) for
//! that long. Entries without one behave like AWS scheduled actions: the most recent firing
//! among them is in force until another of them fires. Active entries raise the bounds: the
//! effective `min` is the largest of the base `min` and the active entries' `min`, likewise for
//! `max`, and `max` is never below `min`.
//!
//! The previous firing is found by walking back over local dates (at most five years), so a
//! restart picks up an entry that fired hours ago. Results are cached per wall-clock minute.

use herd_config::{Cron, Scaling, Schedule};
use jiff::{tz::TimeZone, Timestamp};

/// How far back a previous firing is looked for.
const LOOKBACK_DAYS: u32 = 366 * 5;

/// The last firing of `cron` in `tz` at or before `now_unix_ms`.
///
/// A local time skipped by a DST change fires at the shifted time (`compatible`); a local time
/// that occurs twice (the hour repeated when DST ends) fires at both instants. So, within the
/// repeated hour, the latest instant at or before now may belong to a time later on the clock
/// face: every time of the day is looked at, not only those before the local clock.
pub(crate) fn prev_fire(cron: &Cron, tz: &TimeZone, now_unix_ms: i64) -> Option<i64> {
    let now = Timestamp::from_millisecond(now_unix_ms).ok()?;
    let mut date = now.to_zoned(tz.clone()).datetime().date();
    for _ in 0..=LOOKBACK_DAYS {
        let weekday = u32::try_from(date.weekday().to_sunday_zero_offset()).unwrap_or(0);
        let (month, day) = (
            u32::try_from(date.month()).unwrap_or(0),
            u32::try_from(date.day()).unwrap_or(0),
        );
        if cron.date_matches(month, day, weekday) {
            let mut best: Option<i64> = None;
            for hour in (0..24u32).filter(|h| cron.hour_matches(*h)) {
                for minute in (0..60u32).filter(|m| cron.minute_matches(*m)) {
                    let (Ok(h), Ok(m)) = (i8::try_from(hour), i8::try_from(minute)) else {
                        continue;
                    };
                    for at in instants(tz, date.at(h, m, 0, 0)) {
                        if at <= now_unix_ms && best.is_none_or(|b| at > b) {
                            best = Some(at);
                        }
                    }
                }
            }
            if best.is_some() {
                return best;
            }
        }
        date = date.yesterday().ok()?;
    }
    None
}

/// The instants (Unix ms) a local time stands for in `tz`: one, two in a fold, and the
/// shifted one in a gap.
fn instants(tz: &TimeZone, civil: jiff::civil::DateTime) -> Vec<i64> {
    let ambiguous = tz.to_ambiguous_timestamp(civil);
    let ms = |t: Result<Timestamp, jiff::Error>| t.ok().map(|t| t.as_millisecond());
    match ambiguous.offset() {
        jiff::tz::AmbiguousOffset::Fold { .. } => ms(ambiguous.earlier())
            .into_iter()
            .chain(ms(ambiguous.later()))
            .collect(),
        _ => ms(ambiguous.compatible()).into_iter().collect(),
    }
}

/// Bounds in force, and the schedule that set the lower (or upper) one, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Active {
    pub(crate) min: u32,
    pub(crate) max: u32,
    /// The entry whose `min` is in force (when above the base `min`).
    pub(crate) min_from: Option<usize>,
    /// The entry whose `max` is in force (when above the base `max`).
    pub(crate) max_from: Option<usize>,
}

/// Caches the previous firing of every entry per wall-clock minute.
#[derive(Debug, Default)]
pub(crate) struct Schedules {
    minute: Option<i64>,
    fires: Vec<Option<i64>>,
}

impl Schedules {
    pub(crate) fn active(&mut self, cfg: &Scaling, wall_unix_ms: i64) -> Active {
        let mut active = Active {
            min: cfg.min,
            max: cfg.max,
            min_from: None,
            max_from: None,
        };
        if cfg.schedules.is_empty() {
            return active;
        }
        let minute = wall_unix_ms.div_euclid(60_000);
        if self.minute != Some(minute) || self.fires.len() != cfg.schedules.len() {
            self.minute = Some(minute);
            self.fires = cfg
                .schedules
                .iter()
                .map(|s| prev_fire(&s.cron, &s.tz, wall_unix_ms))
                .collect();
        }
        let latest_open = self
            .fires
            .iter()
            .zip(&cfg.schedules)
            .enumerate()
            .filter(|(_, (f, s))| f.is_some() && s.duration.is_none())
            .max_by_key(|(_, (f, _))| **f)
            .map(|(i, _)| i);
        for (i, (fire, s)) in self.fires.iter().zip(&cfg.schedules).enumerate() {
            let Some(fire) = fire else { continue };
            let on = match s.duration {
                Some(d) => {
                    let end = fire.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    wall_unix_ms < end
                }
                None => latest_open == Some(i),
            };
            if on {
                apply(&mut active, i, s);
            }
        }
        active.max = active.max.max(active.min);
        active
    }
}

fn apply(active: &mut Active, i: usize, s: &Schedule) {
    if let Some(min) = s.min {
        if min > active.min {
            active.min = min;
            active.min_from = Some(i);
        }
    }
    if let Some(max) = s.max {
        if max > active.max {
            active.max = max;
            active.max_from = Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2024-01-01T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_704_067_200_000;
    const HOUR: i64 = 3_600_000;

    fn entry(cron: &str, tz: &str, min: u32, duration: Option<Duration>) -> Schedule {
        Schedule {
            cron: Cron::parse(cron).unwrap(),
            tz: TimeZone::get(tz).unwrap(),
            tz_name: tz.into(),
            min: Some(min),
            max: None,
            duration,
        }
    }

    #[test]
    fn previous_firing_in_a_time_zone() {
        let c = Cron::parse("0 8 * * 1-5").unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // Monday 09:00 UTC = 10:00 Berlin: fired at 07:00 UTC the same day.
        assert_eq!(
            prev_fire(&c, &berlin, MONDAY + 9 * HOUR),
            Some(MONDAY + 7 * HOUR)
        );
        // Monday 06:00 UTC = 07:00 Berlin: last fired on Friday 29 Dec 2023, 07:00 UTC.
        assert_eq!(
            prev_fire(&c, &berlin, MONDAY + 6 * HOUR),
            Some(MONDAY - 3 * 24 * HOUR + 7 * HOUR)
        );
        // Exactly at the firing.
        assert_eq!(
            prev_fire(&c, &berlin, MONDAY + 7 * HOUR),
            Some(MONDAY + 7 * HOUR)
        );
        // A date that never comes is refused when parsed.
        assert!(Cron::parse("0 0 31 2 *").is_err());
    }

    #[test]
    fn the_hour_repeated_and_the_hour_skipped_by_dst() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2024-10-27: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:xx happens twice.
        let oct27 = 1_729_987_200_000;
        let half_past_two = Cron::parse("30 2 * * *").unwrap();
        // 02:20 CET (01:20 UTC): the last firing is 02:30 CEST (00:30 UTC), not yesterday's.
        assert_eq!(
            prev_fire(&half_past_two, &berlin, oct27 + 80 * 60_000),
            Some(oct27 + 30 * 60_000)
        );
        // 02:35 CET: 02:30 CET (01:30 UTC) fired too.
        assert_eq!(
            prev_fire(&half_past_two, &berlin, oct27 + 95 * 60_000),
            Some(oct27 + 90 * 60_000)
        );
        // Hourly: at 02:20 CET the last firing is 02:00 CET (01:00 UTC), not 02:00 CEST.
        let hourly = Cron::parse("0 * * * *").unwrap();
        assert_eq!(
            prev_fire(&hourly, &berlin, oct27 + 80 * 60_000),
            Some(oct27 + HOUR)
        );
        // 2024-03-31: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:30 fires at 03:30 CEST.
        let mar31 = 1_711_843_200_000;
        assert_eq!(
            prev_fire(&half_past_two, &berlin, mar31 + 105 * 60_000),
            Some(mar31 + 90 * 60_000)
        );
    }

    #[test]
    fn entries_with_and_without_duration() {
        let cfg = Scaling {
            schedules: vec![
                entry("0 8 * * 1-5", "UTC", 4, None),
                entry("0 20 * * 1-5", "UTC", 1, None),
                entry("0 12 * * *", "UTC", 6, Some(Duration::from_secs(3600))),
            ],
            ..Scaling::default()
        };
        let mut s = Schedules::default();
        let at = |s: &mut Schedules, h: i64| s.active(&cfg, MONDAY + h * HOUR);
        // Monday 07:00: Friday 20:00's entry (min 1) is the latest without a duration.
        assert_eq!(at(&mut s, 7).min, 1);
        let nine = at(&mut s, 9);
        assert_eq!((nine.min, nine.min_from), (4, Some(0)));
        let noon = at(&mut s, 12);
        assert_eq!((noon.min, noon.min_from), (6, Some(2)));
        assert_eq!(at(&mut s, 13).min, 4, "the one-hour entry has ended");
        assert_eq!(at(&mut s, 21).min, 1);
        assert!(at(&mut s, 21).max >= 1);
    }
}
