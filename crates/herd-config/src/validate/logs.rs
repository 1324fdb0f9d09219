//! `[logs]`: where instance output goes, its rotation, and the timestamp put before each line
//! (`time`, `date_format`: PM2's `time` and `log_date_format`).

use std::path::Path;

use super::{resolve, Validator};
use crate::defaults as d;
use crate::model::Logs;
use crate::raw::{RawConfig, Str};

/// The format `time = true` uses: RFC 3339 with milliseconds and the local offset.
pub(crate) const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S.%3f%:z";

impl Validator<'_> {
    pub(super) fn logs(&mut self, raw: &RawConfig) -> Logs {
        let Some(l) = &raw.logs else {
            return Logs {
                dir: resolve(self.base_dir, Path::new(d::LOGS_DIR)),
                ..Logs::default()
            };
        };
        let dir = l.dir.as_ref().map_or(d::LOGS_DIR, |s| s.get_ref().as_str());
        if let Some(s) = &l.dir {
            if s.get_ref().trim().is_empty() {
                self.err(
                    &s.span(),
                    "logs.dir",
                    "dir must not be empty",
                    Some(format!("remove it to use the default \"{}\"", d::LOGS_DIR)),
                );
            }
        }
        let mut max_size = d::LOGS_MAX_SIZE;
        if let Some(v) = &l.max_size {
            if let Some(n) = self.size(v, "logs.max_size") {
                if n == 0 {
                    self.err(
                        &v.span(),
                        "logs.max_size",
                        "max_size must be greater than 0",
                        Some("e.g. max_size = \"10MiB\"".into()),
                    );
                } else {
                    max_size = n;
                }
            }
        }
        let format = l.date_format.as_ref().and_then(|f| self.date_format(f));
        let date_format = match l.time.as_ref().map(|t| *t.get_ref()) {
            Some(false) => {
                if let Some(f) = &l.date_format {
                    self.err(
                        &f.span(),
                        "logs.date_format",
                        "date_format is set but time = false turns timestamps off",
                        Some("remove one of them: date_format alone turns timestamps on".into()),
                    );
                }
                None
            }
            Some(true) => Some(format.unwrap_or_else(|| DEFAULT_DATE_FORMAT.to_owned())),
            None => format,
        };
        Logs {
            dir: resolve(self.base_dir, Path::new(dir)),
            max_size,
            // Each rotation renames every kept file while the instance's output waits.
            max_files: self.u32_in(
                l.max_files.as_ref(),
                "logs.max_files",
                d::LOGS_MAX_FILES,
                (0, 1000),
            ),
            date_format,
        }
    }

    /// A strftime format that formats (checked on a fixed instant) and holds a conversion.
    fn date_format(&mut self, f: &Str) -> Option<String> {
        const KEY: &str = "logs.date_format";
        let text = f.get_ref();
        let example = format!("e.g. date_format = \"{DEFAULT_DATE_FORMAT}\" (strftime)");
        let problem = if text.trim().is_empty() {
            Some(("date_format must not be empty".to_owned(), example))
        } else if text.contains(['\n', '\r']) {
            Some(("date_format must not hold a line break".to_owned(), example))
        } else if !text.contains('%') {
            let hint = match from_moment(text) {
                Some(strftime) => format!(
                    "herd takes strftime formats, not PM2's (moment.js): \"{text}\" is \
                     date_format = \"{strftime}\""
                ),
                None => example,
            };
            Some((
                format!("date_format \"{text}\" has no % conversion: every line would get the same text"),
                hint,
            ))
        } else {
            let probe = jiff::Timestamp::UNIX_EPOCH.to_zoned(jiff::tz::TimeZone::UTC);
            match jiff::fmt::strtime::format(text.as_bytes(), &probe) {
                Ok(_) => None,
                Err(e) => Some((
                    format!("date_format \"{text}\" is not a valid strftime format: {e}"),
                    example,
                )),
            }
        };
        match problem {
            Some((message, hint)) => {
                self.err(&f.span(), KEY, message, Some(hint));
                None
            }
            None => Some(text.clone()),
        }
    }
}

/// PM2's `log_date_format` is a moment.js format: its usual tokens in strftime, or `None` when
/// the text holds none of them.
fn from_moment(text: &str) -> Option<String> {
    // Longest first, so that "YYYY" is not read as two "YY".
    const TOKENS: [(&str, &str); 15] = [
        ("YYYY", "%Y"),
        ("MMMM", "%B"),
        ("dddd", "%A"),
        ("MMM", "%b"),
        ("ddd", "%a"),
        ("SSS", "%3f"),
        ("YY", "%y"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("HH", "%H"),
        ("hh", "%I"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("ZZ", "%z"),
        ("Z", "%:z"),
    ];
    let mut out = String::new();
    let mut rest = text;
    let mut found = false;
    'outer: while let Some(c) = rest.chars().next() {
        for (moment, strftime) in TOKENS {
            if let Some(after) = rest.strip_prefix(moment) {
                out.push_str(strftime);
                rest = after;
                found = true;
                continue 'outer;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::from_moment;

    #[test]
    fn translates_pm2_moment_formats() {
        assert_eq!(
            from_moment("YYYY-MM-DD HH:mm Z").as_deref(),
            Some("%Y-%m-%d %H:%M %:z")
        );
        assert_eq!(
            from_moment("YYYY-MM-DDTHH:mm:ss.SSS").as_deref(),
            Some("%Y-%m-%dT%H:%M:%S.%3f")
        );
        assert_eq!(from_moment("[app]"), None);
    }
}
