//! Parsers for the human-friendly value formats used in the config file and on the command line:
//! durations (`"500ms"`, `"1.5s"`, `"1m30s"`), sizes (`"512MiB"`, `"10MB"`), instance counts
//! (`3`, `"max"`, `-1`) and port ranges (`"20000-20999"`).
//!
//! Every parser returns `Err(String)` with a short, lowercase reason; the validation layer wraps it
//! into a [`ConfigError`](crate::ConfigError) with the location, key and a hint.

use std::str::FromStr;
use std::time::Duration;

use crate::model::Instances;

/// Hint shown for an invalid duration.
pub(crate) const DURATION_HINT: &str = "use a number with ms, s, m, h or d, e.g. \"2s\"";
/// Hint shown for an invalid size.
pub(crate) const SIZE_HINT: &str =
    "use a number of bytes with an optional unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024; PM2's K, M, G mean these), e.g. \"512MiB\" or \"512M\"";

/// The longest duration any key takes: 100 years.
pub(crate) const MAX_DURATION_SECS: u64 = 36_500 * 86_400;

/// Parses a duration such as `"500ms"`, `"2s"`, `"5m"`, `"1h"`, `"1d"`, `"1.5s"` or `"1m30s"`.
///
/// A unit is required for every number; `"0"` alone is accepted as zero. Negative values,
/// empty strings and unknown units are rejected with a short reason.
///
/// # Errors
/// Returns a short description of what is wrong, e.g. `unknown unit "x"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        if number.is_empty() {
            return Err(format!("expected a number at \"{rest}\""));
        }
        check_number(number)?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => return Err(format!("missing unit after \"{number}\"")),
            other => return Err(format!("unknown unit \"{other}\"")),
        };
        let nanos = scale_decimal(number, nanos_per_unit).ok_or("duration is too large")?;
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or("duration is too large")?;
        rest = tail.trim_start();
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| "duration is too large")?;
    // Every duration is added to a clock somewhere (`now + ttl`, a deadline, a cache's TTL):
    // a bound keeps those from overflowing, far above any useful setting.
    if secs > MAX_DURATION_SECS {
        return Err("duration is too large (at most 100 years, \"36500d\")".to_owned());
    }
    // The remainder is < 1e9 and always fits.
    let sub = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// Parses a size in bytes such as `"512MiB"`, `"1GiB"`, `"100KiB"`, `"10MB"`, `"1000"` or `"64B"`.
///
/// SI units (`KB`, `MB`, `GB`, `TB`) are powers of 1000; binary units (`KiB`, `MiB`, `GiB`, `TiB`)
/// and the PM2-style shorthands `K`, `M`, `G` are powers of 1024. Units are case-insensitive and
/// fractions round down to whole bytes (`"1.5KiB"` = 1536).
///
/// # Errors
/// Returns a short description of what is wrong, e.g. `unknown unit "XB"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty size".to_owned());
    }
    if s.starts_with('-') {
        return Err("negative sizes are not allowed".to_owned());
    }
    let (number, unit) = split_number(s);
    if number.is_empty() {
        return Err(format!("expected a number at \"{s}\""));
    }
    check_number(number)?;
    let unit = unit.trim();
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit \"{unit}\"")),
    };
    let bytes = scale_decimal(number, multiplier).ok_or("size is too large")?;
    u64::try_from(bytes).map_err(|_| "size is too large".to_owned())
}

/// Parses an instance count as accepted by `herd up -i`: a count >= 1, `max` or `-1`.
impl FromStr for Instances {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Instances::Max);
        }
        match s.parse::<i64>() {
            Ok(n) => instances_from_int(n),
            Err(_) => Err(format!(
                "invalid instance count \"{s}\": expected a number >= 1, \"max\" or -1"
            )),
        }
    }
}

/// Converts an integer instance count: `n >= 1`, or `-1` for one per core minus one.
pub(crate) fn instances_from_int(n: i64) -> Result<Instances, String> {
    match n {
        -1 => Ok(Instances::MaxMinusOne),
        0 => Err("instances must be at least 1".to_owned()),
        n if n < 0 => Err(format!("invalid instance count {n}")),
        n => u32::try_from(n)
            .map(Instances::Count)
            .map_err(|_| format!("instance count {n} is too large")),
    }
}

/// Parses an inclusive port range `"START-END"` (or a single port `"PORT"`).
pub(crate) fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let s = s.trim();
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s, s),
    };
    let start = parse_port(start)?;
    let end = parse_port(end)?;
    if start > end {
        return Err(format!("start {start} is greater than end {end}"));
    }
    Ok((start, end))
}

fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("missing port number".to_owned());
    }
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed".to_owned()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("\"{s}\" is not a port number (1-65535)")),
    }
}

/// Splits a leading unsigned decimal number (`12`, `1.5`, `.5`) from the rest of the string.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Rejects malformed decimals such as `1.2.3` or a lone `.`.
fn check_number(number: &str) -> Result<(), String> {
    if number == "." || number.matches('.').count() > 1 {
        return Err(format!("invalid number \"{number}\""));
    }
    Ok(())
}

/// Computes `number * multiplier` exactly for a decimal `number` like `1.5`, rounding down.
fn scale_decimal(number: &str, multiplier: u128) -> Option<u128> {
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let mut value = int.checked_mul(multiplier)?;
    // Only the first 18 fractional digits can matter for any multiplier we use.
    let frac = frac_part.get(..frac_part.len().min(18)).unwrap_or("");
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        value = value.checked_add(digits.checked_mul(multiplier)? / scale)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25s", Duration::from_millis(250)),
            (".5s", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("1h 30m", Duration::from_secs(5400)),
            (" 10s ", Duration::from_secs(10)),
            ("2 s", Duration::from_secs(2)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("1.0005s", Duration::from_micros(1_000_500)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input).as_ref(), Ok(want), "{input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("-1s", "negative"),
            ("2x", "unknown unit \"x\""),
            ("2sec", "unknown unit \"sec\""),
            ("5", "missing unit"),
            ("s", "expected a number"),
            ("1.2.3s", "invalid number \"1.2.3\""),
            ("1s-", "unknown unit \"s-\""),
            ("99999999999999999999999d", "too large"),
            // Would overflow a clock once added to now (a TTL, a deadline).
            ("400000d", "at most 100 years"),
        ];
        assert!(parse_duration("36500d").is_ok());
        for (input, want) in bad {
            let err = parse_duration(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("512MiB", 512 << 20),
            ("1GiB", 1 << 30),
            ("100KiB", 100 << 10),
            ("10MB", 10_000_000),
            ("10mb", 10_000_000),
            ("1KB", 1_000),
            ("2GB", 2_000_000_000),
            ("1000", 1000),
            ("64B", 64),
            ("64 B", 64),
            ("0", 0),
            ("150M", 150 << 20),
            ("1.5KiB", 1536),
            ("1TiB", 1 << 40),
        ];
        for (input, want) in ok {
            assert_eq!(parse_size(input), Ok(*want), "{input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("-1MB", "negative"),
            ("10XB", "unknown unit \"XB\""),
            ("MB", "expected a number"),
            ("99999999999TiB", "too large"),
        ];
        for (input, want) in bad {
            let err = parse_size(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn instances() {
        assert_eq!("3".parse::<Instances>(), Ok(Instances::Count(3)));
        assert_eq!("max".parse::<Instances>(), Ok(Instances::Max));
        assert_eq!("MAX".parse::<Instances>(), Ok(Instances::Max));
        assert_eq!("-1".parse::<Instances>(), Ok(Instances::MaxMinusOne));
        assert!("0".parse::<Instances>().is_err());
        assert!("-2".parse::<Instances>().is_err());
        assert!("many".parse::<Instances>().is_err());
        assert!("99999999999".parse::<Instances>().is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-20999"), Ok((20000, 20999)));
        assert_eq!(parse_port_range("8000 - 8001"), Ok((8000, 8001)));
        assert_eq!(parse_port_range("8000"), Ok((8000, 8000)));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10-5").is_err());
        assert!(parse_port_range("1-70000").is_err());
        assert!(parse_port_range("a-b").is_err());
        assert!(parse_port_range("-5").is_err());
    }
}
