//! Load traces for `herd simulate`: CSV with a header `time,rps` or `time,concurrency`, time in
//! seconds (non-decreasing), one row per change. Between rows the load holds (a step function).
//! Blank lines and lines starting with `#` are skipped.

use std::fmt;

use serde::Serialize;

/// What a trace's second column measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    /// Requests arriving per second.
    Rps,
    /// Requests in the system at once.
    Concurrency,
}

impl fmt::Display for TraceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceKind::Rps => "rps",
            TraceKind::Concurrency => "concurrency",
        })
    }
}

/// A parsed trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The second column.
    pub kind: TraceKind,
    /// `(time_s, value)`, time non-decreasing, values ≥ 0.
    pub points: Vec<(f64, f64)>,
}

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The first row is not `time,rps` or `time,concurrency`.
    #[error("line 1: expected the header \"time,rps\" or \"time,concurrency\", found {found:?}")]
    Header {
        /// What was there.
        found: String,
    },
    /// A data row is malformed.
    #[error("line {line}: {message}")]
    Row {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No data rows.
    #[error("the trace has no data rows")]
    Empty,
}

/// The longest trace replayed (400 days: a year with its seasons; 14 days replay in about
/// 2 s, one engine tick a second).
pub(super) const MAX_SPAN_S: f64 = 400.0 * 86_400.0;

impl Trace {
    /// Parses CSV text.
    ///
    /// # Errors
    /// A bad header, a malformed row (two numbers, time not going back, value ≥ 0), or no rows.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((_, header)) = lines.next() else {
            return Err(TraceError::Empty);
        };
        let cols: Vec<String> = header
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let kind = match cols
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["time", "rps"] => TraceKind::Rps,
            ["time", "concurrency"] => TraceKind::Concurrency,
            _ => {
                return Err(TraceError::Header {
                    found: header.to_owned(),
                })
            }
        };
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (line, row) in lines {
            let row_err = |message: String| TraceError::Row { line, message };
            let mut fields = row.split(',').map(str::trim);
            let (Some(t), Some(v), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(row_err(format!("expected two columns, found {row:?}")));
            };
            let t: f64 = t
                .parse()
                .ok()
                .filter(|t: &f64| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| row_err(format!("time {t:?} is not a number of seconds >= 0")))?;
            let v: f64 = v
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| row_err(format!("{kind} {v:?} is not a number >= 0")))?;
            if let Some((prev, _)) = points.last() {
                if t < *prev {
                    return Err(row_err(format!(
                        "time {t} goes back (previous row: {prev})"
                    )));
                }
                if t == *prev {
                    return Err(row_err(format!(
                        "time {t} repeats the previous row's: give each row its own time"
                    )));
                }
            }
            if t - points.first().map_or(t, |p| p.0) > MAX_SPAN_S {
                return Err(row_err(format!(
                    "time {t} is more than {} days after the first row: split the trace",
                    MAX_SPAN_S / 86_400.0
                )));
            }
            points.push((t, v));
        }
        if points.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(Trace { kind, points })
    }

    /// When the trace starts.
    #[must_use]
    pub fn start_s(&self) -> f64 {
        self.points.first().map_or(0.0, |p| p.0)
    }

    /// When the trace ends: the last row's time plus the typical row spacing (so the last row
    /// counts for as long as the others).
    #[must_use]
    pub fn end_s(&self) -> f64 {
        let n = self.points.len();
        let last = self.points.last().map_or(0.0, |p| p.0);
        if n < 2 {
            return last + 1.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let step = (last - self.start_s()) / (n - 1) as f64;
        last + step.max(1.0)
    }

    /// The load at time `t` (the last row at or before `t`). `hint` is the index found last
    /// time, so a forward scan is O(1) amortised.
    #[must_use]
    pub fn at(&self, t: f64, hint: &mut usize) -> f64 {
        if *hint >= self.points.len() || self.points[*hint].0 > t {
            *hint = 0;
        }
        while *hint + 1 < self.points.len() && self.points[*hint + 1].0 <= t {
            *hint += 1;
        }
        match self.points.get(*hint) {
            Some((pt, v)) if *pt <= t => *v,
            _ => 0.0,
        }
    }

    /// The largest value.
    #[must_use]
    pub fn peak(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_steps() {
        let t = Trace::parse("# comment\ntime,rps\n0,10\n\n10,20.5\n20,0\n").unwrap();
        assert_eq!(t.kind, TraceKind::Rps);
        assert_eq!(t.points.len(), 3);
        let mut h = 0;
        assert_eq!(t.at(0.0, &mut h), 10.0);
        assert_eq!(t.at(9.9, &mut h), 10.0);
        assert_eq!(t.at(10.0, &mut h), 20.5);
        assert_eq!(t.at(25.0, &mut h), 0.0);
        assert_eq!(t.at(5.0, &mut h), 10.0, "going back resets the hint");
        assert_eq!(t.end_s(), 30.0);
        assert_eq!(t.peak(), 20.5);
        let c = Trace::parse("Time, Concurrency\n0,1\n").unwrap();
        assert_eq!(c.kind, TraceKind::Concurrency);
    }

    #[test]
    fn errors() {
        assert_eq!(Trace::parse(""), Err(TraceError::Empty));
        assert_eq!(Trace::parse("time,rps\n"), Err(TraceError::Empty));
        assert!(matches!(
            Trace::parse("t,rps\n0,1"),
            Err(TraceError::Header { .. })
        ));
        let err = Trace::parse("time,rps\n0,1\n5,x\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: rps \"x\" is not a number >= 0");
        let err = Trace::parse("time,rps\n5,1\n4,1\n").unwrap_err();
        assert!(err.to_string().contains("goes back"), "{err}");
        assert!(Trace::parse("time,rps\n0,1,2\n").is_err());
        assert!(Trace::parse("time,rps\n-1,1\n").is_err());
        let err = Trace::parse("time,rps\n0,100\n0,200\n").unwrap_err();
        assert!(
            err.to_string().starts_with("line 3: time 0 repeats"),
            "{err}"
        );
        let err = Trace::parse("time,rps\n0,100\n1e12,100\n").unwrap_err();
        assert!(err.to_string().contains("more than 400 days"), "{err}");
    }
}
