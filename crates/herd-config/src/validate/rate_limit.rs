//! Validation of `[[rate_limit]]`: unique names, the key (`ip`, `header:NAME`, `cookie:NAME`,
//! `route`), the rate (`"10r/s"`, `"600r/m"`, as nginx), burst, status and the app/path scope.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use toml::{Spanned, Value};

use super::Validator;
use crate::defaults as d;
use crate::error::closest;
use crate::model::{Rate, RateKey, RateLimit};
use crate::raw::{RawConfig, RawRateLimit, Val};

const KEY_HINT: &str =
    "key = \"ip\", \"header:X-Api-Key\", \"cookie:session\" or \"route\" (one bucket per route)";
const RATE_HINT: &str = "requests per second or minute, as nginx: rate = \"10r/s\" or \"600r/m\"";

impl Validator<'_> {
    /// `apps` are the app names in file order (index = position in `Config::apps`).
    pub(super) fn rate_limits(
        &mut self,
        raw: &RawConfig,
        apps: &[(&str, usize)],
    ) -> Vec<RateLimit> {
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        let routes: Vec<&str> = raw
            .route
            .iter()
            .filter_map(|r| r.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
            .collect();
        raw.rate_limit
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                self.rate_limit(&format!("rate_limit[{i}]"), r, apps, &routes, &mut names)
            })
            .collect()
    }

    fn rate_limit(
        &mut self,
        p: &str,
        raw: &Spanned<RawRateLimit>,
        apps: &[(&str, usize)],
        routes: &[&str],
        names: &mut HashMap<String, Range<usize>>,
    ) -> Option<RateLimit> {
        let r = raw.get_ref();
        let span = raw.span();
        let errors = self.errors.len();

        let name = match &r.name {
            None => {
                self.err(
                    &span,
                    &format!("{p}.name"),
                    "missing name",
                    Some(
                        "add name = \"per-ip\": a unique name, shown in logs and in the 429 body"
                            .into(),
                    ),
                );
                String::new()
            }
            Some(n) if n.get_ref().trim().is_empty() => {
                self.err(
                    &n.span(),
                    &format!("{p}.name"),
                    "name must not be empty",
                    Some("e.g. name = \"per-ip\"".into()),
                );
                String::new()
            }
            Some(n) => {
                if let Some(first) = names.get(n.get_ref()) {
                    let (line, _) = self.src.locate(first.start);
                    self.err(
                        &n.span(),
                        &format!("{p}.name"),
                        format!("duplicate rate limit name \"{}\"", n.get_ref()),
                        Some(format!("the first one is on line {line}; give each [[rate_limit]] its own name")),
                    );
                } else {
                    names.insert(n.get_ref().clone(), n.span());
                }
                n.get_ref().clone()
            }
        };

        let key = match &r.key {
            None => {
                self.err(
                    &span,
                    &format!("{p}.key"),
                    "missing key",
                    Some(KEY_HINT.into()),
                );
                None
            }
            Some(k) => {
                let key = parse_key(k.get_ref());
                if let Err(message) = &key {
                    self.err(
                        &k.span(),
                        &format!("{p}.key"),
                        message.clone(),
                        Some(KEY_HINT.into()),
                    );
                }
                key.ok()
            }
        };

        let rate = match &r.rate {
            None => {
                self.err(
                    &span,
                    &format!("{p}.rate"),
                    "missing rate",
                    Some(RATE_HINT.into()),
                );
                None
            }
            Some(v) => self.rate(v, &format!("{p}.rate")),
        };

        let burst = self.u32(
            r.burst.as_ref(),
            &format!("{p}.burst"),
            d::RATE_LIMIT_BURST,
            0,
        );
        let nodelay = r.nodelay.as_ref().is_some_and(|b| *b.get_ref());
        let delay = self.u32(r.delay.as_ref(), &format!("{p}.delay"), 0, 0);
        if let Some(d) = &r.delay {
            if nodelay {
                self.err(
                    &d.span(),
                    &format!("{p}.delay"),
                    "delay and nodelay = true both set".to_owned(),
                    Some("nodelay serves the whole burst at once (delay = burst); keep one".into()),
                );
            } else if delay > burst {
                self.err(
                    &d.span(),
                    &format!("{p}.delay"),
                    format!("delay {delay} is more than burst {burst}"),
                    Some(
                        "delay counts requests within the burst served at once; raise burst or use nodelay = true"
                            .into(),
                    ),
                );
            }
        }

        let app = r.app.as_ref().and_then(|a| {
            let found = apps
                .iter()
                .find(|(n, _)| *n == a.get_ref())
                .map(|(_, i)| *i);
            if found.is_none() {
                let known: Vec<&str> = apps.iter().map(|(n, _)| *n).collect();
                let mut hint = String::new();
                if let Some(best) = closest(a.get_ref(), &known) {
                    hint.push_str(&format!("did you mean \"{best}\"? "));
                }
                hint.push_str(&format!(
                    "known apps: {}; leave app out to limit every app",
                    known.join(", ")
                ));
                self.err(
                    &a.span(),
                    &format!("{p}.app"),
                    format!("rate limit for unknown app \"{}\"", a.get_ref()),
                    Some(hint),
                );
            }
            found
        });

        let path_prefix = r.path_prefix.as_ref().and_then(|pp| {
            if pp.get_ref().starts_with('/') {
                Some(pp.get_ref().clone())
            } else {
                self.err(
                    &pp.span(),
                    &format!("{p}.path_prefix"),
                    format!("path_prefix \"{}\" must start with '/'", pp.get_ref()),
                    Some(format!(
                        "e.g. path_prefix = \"/{}\"",
                        pp.get_ref().trim_start_matches('/')
                    )),
                );
                None
            }
        });

        let route = r.route.as_ref().and_then(|n| {
            if routes.contains(&n.get_ref().as_str()) {
                return Some(n.get_ref().clone());
            }
            let mut hint = String::new();
            if let Some(best) = closest(n.get_ref(), routes) {
                hint.push_str(&format!("did you mean \"{best}\"? "));
            }
            if routes.is_empty() {
                hint.push_str("no [[route]] has a name; add name = \"...\" to the route to limit");
            } else {
                hint.push_str(&format!("named routes: {}", routes.join(", ")));
            }
            self.err(
                &n.span(),
                &format!("{p}.route"),
                format!("rate limit for unknown route \"{}\"", n.get_ref()),
                Some(hint),
            );
            None
        });

        let status = match &r.status {
            None => d::RATE_LIMIT_STATUS,
            Some(s) => match u16::try_from(*s.get_ref()) {
                Ok(code @ 400..=599) => code,
                _ => {
                    self.err(
                        &s.span(),
                        &format!("{p}.status"),
                        format!("status must be from 400 to 599, got {}", s.get_ref()),
                        Some(
                            "429 (Too Many Requests, the default) or 503 (nginx's default)".into(),
                        ),
                    );
                    d::RATE_LIMIT_STATUS
                }
            },
        };

        if self.errors.len() > errors {
            return None;
        }
        Some(RateLimit {
            name,
            key: key?,
            rate: rate?,
            burst,
            nodelay,
            delay,
            app,
            path_prefix,
            route,
            status,
            shared: r.shared.as_ref().is_some_and(|b| *b.get_ref()),
        })
    }

    fn rate(&mut self, v: &Val, key: &str) -> Option<Rate> {
        let parsed = match v.get_ref() {
            Value::String(s) => parse_rate(s),
            Value::Integer(n) => Err(format!("invalid rate {n}: missing unit")),
            other => Err(format!(
                "expected a rate string, found {}",
                other.type_str()
            )),
        };
        parsed
            .map_err(|message| self.err(&v.span(), key, message, Some(RATE_HINT.into())))
            .ok()
    }
}

fn parse_key(s: &str) -> Result<RateKey, String> {
    let named = |kind: &str, name: &str| {
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            Err(format!(
                "invalid key \"{s}\": {kind} name missing or not a token"
            ))
        } else {
            Ok(name.to_owned())
        }
    };
    match s.trim().split_once(':') {
        None if s.trim() == "ip" => Ok(RateKey::Ip),
        None if s.trim() == "route" => Ok(RateKey::Route),
        Some(("header", name)) => {
            named("header", name).map(|n| RateKey::Header(n.to_ascii_lowercase()))
        }
        Some(("cookie", name)) => named("cookie", name).map(RateKey::Cookie),
        _ => Err(format!("invalid key \"{s}\"")),
    }
}

/// `"10r/s"` or `"600r/m"` (nginx accepts only whole requests per second or minute).
pub(crate) fn parse_rate(s: &str) -> Result<Rate, String> {
    let t = s.trim();
    let (n, per) = if let Some(n) = t.strip_suffix("r/s") {
        (n, Duration::from_secs(1))
    } else if let Some(n) = t.strip_suffix("r/m") {
        (n, Duration::from_secs(60))
    } else {
        return Err(format!(
            "invalid rate \"{s}\": expected \"<N>r/s\" or \"<N>r/m\""
        ));
    };
    // u32's parser takes a leading '+'; nginx's rate does not.
    let n = n.trim();
    let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    match n.parse::<u32>() {
        Ok(requests) if requests > 0 && digits => {
            let rate = Rate { requests, per };
            if rate.interval() < Duration::from_micros(1) {
                return Err(format!(
                    "invalid rate \"{s}\": at most 1000000r/s (60000000r/m); a limit that high limits nothing, remove it"
                ));
            }
            Ok(rate)
        }
        _ => Err(format!(
            "invalid rate \"{s}\": the count must be a whole number of at least 1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Config, ConfigError};

    const APPS: &str = "[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:7001\"]\n\
                        [[app]]\nname = \"api\"\nservers = [\"127.0.0.1:7002\"]\n";

    fn parsed(text: &str) -> Result<Config, Vec<ConfigError>> {
        parse(
            &format!("{APPS}{text}"),
            "herd.toml",
            std::path::Path::new("/base"),
        )
        .map_err(|e| e.0)
    }

    #[test]
    fn full_entry_and_defaults() {
        let cfg = parsed(
            "[gateway]\nmax_conn_per_ip = 20\n\
             [[rate_limit]]\nname = \"per-ip\"\nkey = \"ip\"\nrate = \"10r/s\"\n\
             [[rate_limit]]\nname = \"keys\"\nkey = \"header:X-Api-Key\"\nrate = \"600r/m\"\n\
             burst = 20\nnodelay = true\napp = \"api\"\npath_prefix = \"/v1/\"\nstatus = 503\n",
        )
        .unwrap();
        assert_eq!(cfg.gateway.max_conn_per_ip, 20);
        let [a, b] = &cfg.rate_limits[..] else {
            panic!("{:#?}", cfg.rate_limits)
        };
        assert_eq!(
            (a.key.clone(), a.burst, a.nodelay, a.app, a.status),
            (RateKey::Ip, 0, false, None, 429)
        );
        assert_eq!(a.rate.interval(), Duration::from_millis(100));
        assert_eq!(b.key, RateKey::Header("x-api-key".into()));
        assert_eq!(
            (b.burst, b.nodelay, b.app, b.status),
            (20, true, Some(1), 503)
        );
        assert_eq!(b.path_prefix.as_deref(), Some("/v1/"));
        assert_eq!(parsed("").unwrap().gateway.max_conn_per_ip, 0);
    }

    #[test]
    fn errors_have_position_key_and_hint() {
        let errs = parsed(
            "[[rate_limit]]\nname = \"a\"\nkey = \"ipp\"\nrate = \"10r/h\"\nburst = -1\n\
             app = \"webb\"\npath_prefix = \"api\"\nstatus = 200\n\
             [[rate_limit]]\nname = \"a\"\nkey = \"route\"\n",
        )
        .unwrap_err();
        let keys: Vec<(usize, &str)> = errs.iter().map(|e| (e.line - 6, e.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                (3, "rate_limit[0].key"),
                (4, "rate_limit[0].rate"),
                (5, "rate_limit[0].burst"),
                (6, "rate_limit[0].app"),
                (7, "rate_limit[0].path_prefix"),
                (8, "rate_limit[0].status"),
                (9, "rate_limit[1].rate"),
                (10, "rate_limit[1].name"),
            ]
        );
        assert!(errs.iter().all(|e| e.hint.is_some() && e.col > 0));
        assert!(errs[3]
            .hint
            .as_ref()
            .unwrap()
            .contains("did you mean \"web\""));
        let table = parsed("[rate_limit]\nname = \"a\"\n").unwrap_err();
        assert!(
            table[0].hint.as_ref().unwrap().contains("[[rate_limit]]"),
            "{}",
            table[0]
        );
    }

    #[test]
    fn delay_is_within_burst_and_exclusive_with_nodelay() {
        let base = "[[rate_limit]]\nname = \"a\"\nkey = \"ip\"\nrate = \"10r/s\"\nburst = 12\n";
        let cfg = parsed(&format!("{base}delay = 8\n")).unwrap();
        assert_eq!(
            (cfg.rate_limits[0].delay, cfg.rate_limits[0].undelayed()),
            (8, 8)
        );
        let cfg = parsed(&format!("{base}nodelay = true\n")).unwrap();
        assert_eq!(
            cfg.rate_limits[0].undelayed(),
            12,
            "nodelay is delay = burst"
        );
        assert_eq!(parsed(base).unwrap().rate_limits[0].undelayed(), 0);

        let errs = parsed(&format!("{base}delay = 13\n")).unwrap_err();
        assert_eq!(errs[0].key, "rate_limit[0].delay");
        assert!(
            errs[0].message.contains("more than burst 12"),
            "{}",
            errs[0]
        );
        let errs = parsed(&format!("{base}nodelay = true\ndelay = 2\n")).unwrap_err();
        assert_eq!(errs[0].key, "rate_limit[0].delay");
        assert!(
            errs[0].hint.as_ref().unwrap().contains("keep one"),
            "{}",
            errs[0]
        );
        let errs = parsed(&format!("{base}delay = -1\n")).unwrap_err();
        assert_eq!(errs[0].key, "rate_limit[0].delay");
    }

    #[test]
    fn rates_and_keys_parse() {
        let r = parse_rate("10r/s").unwrap();
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert_eq!(
            parse_rate(" 600r/m ").unwrap().interval(),
            Duration::from_millis(100)
        );
        for bad in [
            "",
            "10",
            "0r/s",
            "1.5r/s",
            "10r/h",
            "-1r/s",
            "+10r/s",
            "1000001r/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("1000000r/s").is_ok());
        assert!(parse_rate("60000000r/m").is_ok());
        assert_eq!(parse_key("ip"), Ok(RateKey::Ip));
        assert_eq!(parse_key("route"), Ok(RateKey::Route));
        assert_eq!(
            parse_key("header:X-Api-Key"),
            Ok(RateKey::Header("x-api-key".into()))
        );
        assert_eq!(
            parse_key("cookie:session"),
            Ok(RateKey::Cookie("session".into()))
        );
        for bad in ["", "IP", "header:", "cookie: ", "host", "header:a b"] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }
}
