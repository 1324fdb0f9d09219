//! Cron expressions for `[[app.scaling.schedule]] cron = "0 8 * * 1-5"`.
//!
//! The classic five fields (minute, hour, day of month, month, day of week) as in Vixie cron and
//! Kubernetes `CronJob`: `*`, single values, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`,
//! month and weekday names (`jan`, `mon`), `0` and `7` both Sunday, and the shorthands `@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly`. When both day fields are restricted, a day matches
//! if either matches (Vixie semantics).
//!
//! Parsing lives here rather than in a crate so that an error can name the field that is wrong;
//! matching is a few bit tests. Finding the previous firing in a time zone is the scaler's job.

use std::fmt;

/// A parsed cron expression. Displays as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// One field's name and range, for error messages.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const WEEKDAY: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Cron {
    /// Parses a five-field cron expression or an `@` shorthand.
    ///
    /// # Errors
    /// A short reason naming the field, e.g. `day-of-week value 8 is out of range 0-7`.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let trimmed = text.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(format!("unknown shorthand \"{trimmed}\"")),
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let minutes = parse_field(fields[0], &MINUTE)?;
        let hours = parse_field(fields[1], &HOUR)?;
        let days = parse_field(fields[2], &DAY)?;
        let months = parse_field(fields[3], &MONTH)?;
        let mut weekdays = parse_field(fields[4], &WEEKDAY)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let days_restricted = !fields[2].starts_with('*');
        let weekdays_restricted = !fields[4].starts_with('*');
        // Days of the month alone (`30 2`, Feb 30) may name no date any month it names has.
        if days_restricted && !weekdays_restricted {
            let longest = |m: u32| match m {
                2 => 29,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let possible = (1..=12u32)
                .filter(|m| months & (1 << m) != 0)
                .any(|m| (1..=longest(m)).any(|d| days & (1 << d) != 0));
            if !possible {
                return Err(format!(
                    "\"{trimmed}\" never fires: no month it names has the days of the month it names"
                ));
            }
        }
        Ok(Cron {
            source: trimmed.to_owned(),
            minutes,
            hours: u32::try_from(hours).unwrap_or(0),
            days: u32::try_from(days).unwrap_or(0),
            months: u16::try_from(months).unwrap_or(0),
            weekdays: u8::try_from(weekdays).unwrap_or(0),
            days_restricted,
            weekdays_restricted,
        })
    }

    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the minute field (0-59) matches.
    #[must_use]
    pub fn minute_matches(&self, minute: u32) -> bool {
        minute < 60 && self.minutes & (1 << minute) != 0
    }

    /// Whether the hour field (0-23) matches.
    #[must_use]
    pub fn hour_matches(&self, hour: u32) -> bool {
        hour < 24 && self.hours & (1 << hour) != 0
    }

    /// Whether a date matches: `month` 1-12, `day` 1-31, `weekday` 0-6 with Sunday = 0.
    #[must_use]
    pub fn date_matches(&self, month: u32, day: u32, weekday: u32) -> bool {
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || weekday > 6 {
            return false;
        }
        if self.months & (1 << month) == 0 {
            return false;
        }
        let day_ok = self.days & (1 << day) != 0;
        let weekday_ok = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day_ok || weekday_ok,
            _ => day_ok && weekday_ok,
        }
    }

    /// Whether a local wall-clock minute matches.
    #[must_use]
    pub fn matches(&self, month: u32, day: u32, weekday: u32, hour: u32, minute: u32) -> bool {
        self.date_matches(month, day, weekday)
            && self.hour_matches(hour)
            && self.minute_matches(minute)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} field \"{text}\" has an empty item", field.name));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
                    format!("{} step \"{step}\" is not a number >= 1", field.name)
                })?;
                (range, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, field)?, value(b, field)?);
            if a > b {
                return Err(format!(
                    "{} range {a}-{b} runs backwards; write the smaller value first",
                    field.name
                ));
            }
            (a, b)
        } else {
            let a = value(range, field)?;
            // `5/15` means "from 5 to the end, every 15", as in Vixie cron.
            (a, if item.contains('/') { field.max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            let Some(next) = v.checked_add(step) else {
                break;
            };
            v = next;
        }
    }
    Ok(bits)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        let i = u32::try_from(i).unwrap_or(0);
        return Ok(if field.min == 1 { i + 1 } else { i });
    }
    let n: u32 = text.parse().map_err(|_| {
        let names = if field.names.is_empty() {
            String::new()
        } else {
            format!(" or a name ({})", field.names.join(", "))
        };
        format!("{} value \"{text}\" is not a number{names}", field.name)
    })?;
    if n < field.min || n > field.max {
        return Err(format!(
            "{} value {n} is out of range {}-{}",
            field.name, field.min, field.max
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_at_eight() {
        let c = Cron::parse("0 8 * * 1-5").unwrap();
        assert!(c.matches(1, 1, 1, 8, 0));
        assert!(c.matches(6, 14, 5, 8, 0));
        assert!(!c.matches(6, 15, 6, 8, 0), "saturday");
        assert!(!c.matches(6, 16, 0, 8, 0), "sunday");
        assert!(!c.matches(6, 14, 5, 8, 1));
        assert!(!c.matches(6, 14, 5, 9, 0));
        assert_eq!(c.to_string(), "0 8 * * 1-5");
    }

    #[test]
    fn steps_lists_names_and_sunday_seven() {
        // A step past u32::MAX neither wraps nor panics: only the start matches.
        let big = Cron::parse("5/4294967295 * * * *").unwrap();
        assert!(big.minute_matches(5) && !big.minute_matches(0));
        let c = Cron::parse("*/15 9-17/4 * jan,JUL sun,7").unwrap();
        for m in [0, 15, 30, 45] {
            assert!(c.minute_matches(m));
        }
        assert!(!c.minute_matches(10));
        assert!(c.hour_matches(9) && c.hour_matches(13) && c.hour_matches(17));
        assert!(!c.hour_matches(10));
        assert!(c.date_matches(1, 3, 0));
        assert!(c.date_matches(7, 3, 0));
        assert!(!c.date_matches(2, 3, 0));
        assert!(!c.date_matches(1, 3, 1));
        let from = Cron::parse("5/20 * * * *").unwrap();
        assert!(from.minute_matches(5) && from.minute_matches(25) && from.minute_matches(45));
        assert!(!from.minute_matches(0));
    }

    #[test]
    fn day_fields_or_when_both_restricted() {
        let c = Cron::parse("0 0 1 * mon").unwrap();
        assert!(c.date_matches(3, 1, 4), "the 1st, a thursday");
        assert!(c.date_matches(3, 5, 1), "a monday");
        assert!(!c.date_matches(3, 5, 2));
        let c = Cron::parse("0 0 1 * *").unwrap();
        assert!(!c.date_matches(3, 5, 1), "only the day field is restricted");
    }

    #[test]
    fn a_date_that_never_comes_is_refused() {
        for never in ["0 8 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 feb *"] {
            let err = Cron::parse(never).unwrap_err();
            assert!(err.contains("never fires"), "{never}: {err}");
        }
        // Feb 29 comes in leap years; with a day of the week too, either matches.
        for ok in ["0 0 29 2 *", "0 0 31 * *", "0 8 30 2 mon", "0 0 31 1-4 *"] {
            Cron::parse(ok).unwrap();
        }
    }

    #[test]
    fn shorthands() {
        assert!(Cron::parse("@daily").unwrap().matches(5, 5, 3, 0, 0));
        assert!(Cron::parse("@hourly").unwrap().matches(5, 5, 3, 7, 0));
        assert!(Cron::parse("@weekly").unwrap().matches(5, 5, 0, 0, 0));
        assert!(Cron::parse("@every 5m").is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let bad = [
            ("0 8 * *", "expected 5 fields"),
            ("60 * * * *", "minute value 60 is out of range 0-59"),
            ("0 24 * * *", "hour value 24"),
            ("0 0 0 * *", "day-of-month value 0"),
            ("0 0 * 13 *", "month value 13"),
            ("0 8 * * 1-8", "day-of-week value 8 is out of range 0-7"),
            ("0 8 * * 5-1", "runs backwards"),
            ("*/0 * * * *", "step \"0\""),
            ("0 8 * * mo", "not a number or a name"),
            ("0,,5 * * * *", "empty item"),
        ];
        for (text, want) in bad {
            let err = Cron::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
