//! Validation of the data-plane keys: `[gateway]` timeouts, retries, circuit breaker, error
//! page, compression, access log and threads; an app's `protocol` and `error_page_503`; a
//! route's `retries`, `retry_on`, `total_timeout` and `compress`.

use std::path::Path;

use toml::Value;

use super::scaling::number;
use super::values::resolve;
use super::Validator;
use crate::model::data_plane as dp;
use crate::model::{
    AccessLog, AccessLogTarget, Circuit, Compress, DataPlane, ErrorPage, Protocol, RetryOn,
    RouteDataPlane,
};
use crate::raw::{RawApp, RawGateway, RawRoute, Str, Val};

/// Most gateway threads: each is a thread with its own runtime, plus as many control-plane
/// workers; more than this is a typo, not a machine.
const MAX_THREADS: u32 = 1024;

const RETRY_ON_VALUES: [&str; 6] = ["connect-failure", "502", "503", "504", "reset", "timeout"];
/// Error pages are held in memory and sent often: keep them small.
const MAX_ERROR_PAGE: u64 = 1024 * 1024;

impl Validator<'_> {
    pub(super) fn data_plane(&mut self, g: &RawGateway) -> DataPlane {
        let d = DataPlane::default();
        let c = Circuit::default();
        let k = |name: &str| format!("gateway.{name}");
        let circuit = Circuit {
            consecutive: self.u32(
                g.circuit_consecutive.as_ref(),
                &k("circuit_consecutive"),
                c.consecutive,
                0,
            ),
            error_rate: self.ratio(
                g.circuit_error_rate.as_ref(),
                &k("circuit_error_rate"),
                c.error_rate,
            ),
            min_requests: self.u32(
                g.circuit_min_requests.as_ref(),
                &k("circuit_min_requests"),
                c.min_requests,
                1,
            ),
            window: self.duration(
                g.circuit_window.as_ref(),
                &k("circuit_window"),
                c.window,
                true,
            ),
            open: self.duration(g.circuit_open.as_ref(), &k("circuit_open"), c.open, true),
            half_open: self.u32(
                g.circuit_half_open.as_ref(),
                &k("circuit_half_open"),
                c.half_open,
                1,
            ),
        };
        let compress = Compress {
            enabled: g.compress.as_ref().is_some_and(|b| *b.get_ref()),
            types: g
                .compress_types
                .as_ref()
                .map_or_else(|| d.compress.types.clone(), |v| self.media_types(v)),
            min_size: g
                .compress_min_size
                .as_ref()
                .and_then(|v| self.size(v, &k("compress_min_size")))
                .unwrap_or(dp::COMPRESS_MIN_SIZE),
        };
        DataPlane {
            idle_timeout: self.duration(
                g.idle_timeout.as_ref(),
                &k("idle_timeout"),
                d.idle_timeout,
                true,
            ),
            idle_release: match g.idle_release.as_ref() {
                None => d.idle_release,
                v => self.optional_timeout(v, &k("idle_release")),
            },
            total_timeout: self.optional_timeout(g.total_timeout.as_ref(), &k("total_timeout")),
            retries: self.u32(g.retries.as_ref(), &k("retries"), dp::RETRIES, 0),
            retry_on: g
                .retry_on
                .as_ref()
                .map_or_else(RetryOn::default, |v| self.retry_on(v, &k("retry_on"))),
            retry_budget: self.ratio(g.retry_budget.as_ref(), &k("retry_budget"), d.retry_budget),
            retry_budget_min_per_s: self.u32(
                g.retry_budget_min_per_s.as_ref(),
                &k("retry_budget_min_per_s"),
                dp::RETRY_BUDGET_MIN_PER_S,
                0,
            ),
            circuit,
            error_page_503: g
                .error_page_503
                .as_ref()
                .and_then(|s| self.error_page(s, &k("error_page_503"))),
            compress,
            access_log: self.access_log(g.access_log.as_ref(), g.access_log_format.as_ref()),
            threads: g.threads.as_ref().map(|t| {
                let mut n = self.u32(Some(t), &k("threads"), 1, 1);
                if n > MAX_THREADS {
                    self.err(
                        &t.span(),
                        &k("threads"),
                        format!("threads must be at most {MAX_THREADS}, got {n}"),
                        Some("leave it out for one per core, or set e.g. threads = 8".to_owned()),
                    );
                    n = 1;
                }
                usize::try_from(n).unwrap_or(1)
            }),
        }
    }

    /// An app's `protocol` and `error_page_503`.
    pub(super) fn app_data_plane(&mut self, p: &str, a: &RawApp) -> (Protocol, Option<ErrorPage>) {
        let protocol = match &a.protocol {
            None => Protocol::Http1,
            Some(s) => match s.get_ref().as_str() {
                "http1" => Protocol::Http1,
                "h2c" => Protocol::H2c,
                other => {
                    self.err(
                        &s.span(),
                        &format!("{p}.protocol"),
                        format!("unknown protocol \"{other}\""),
                        Some("use \"http1\" (HTTP/1.1, the default) or \"h2c\" (HTTP/2 without TLS, prior knowledge)".into()),
                    );
                    Protocol::Http1
                }
            },
        };
        let page = a
            .error_page_503
            .as_ref()
            .and_then(|s| self.error_page(s, &format!("{p}.error_page_503")));
        (protocol, page)
    }

    /// A route's `retries` (bool or count) and its other data-plane overrides.
    pub(super) fn route_data_plane(
        &mut self,
        p: &str,
        r: &RawRoute,
    ) -> (Option<u32>, RouteDataPlane) {
        let retries = r.retries.as_ref().and_then(|v| match v.get_ref() {
            Value::Boolean(true) => None,
            Value::Boolean(false) => Some(0),
            Value::Integer(n) if u32::try_from(*n).is_ok() => u32::try_from(*n).ok(),
            other => {
                self.err(
                    &v.span(),
                    &format!("{p}.retries"),
                    format!("retries must be true, false or a count from 0, got {other}"),
                    Some("e.g. retries = 2; true = the gateway's count, false = 0".into()),
                );
                None
            }
        });
        let plane = RouteDataPlane {
            retry_on: r
                .retry_on
                .as_ref()
                .map(|v| self.retry_on(v, &format!("{p}.retry_on"))),
            // Given: the route's own (`"off"` included); not given: the gateway's.
            total_timeout: r
                .total_timeout
                .as_ref()
                .map(|v| self.optional_timeout(Some(v), &format!("{p}.total_timeout"))),
            compress: r.compress.as_ref().map(|b| *b.get_ref()),
        };
        (retries, plane)
    }

    /// `"off"` / `0` = none, else a positive duration.
    fn optional_timeout(&mut self, v: Option<&Val>, key: &str) -> Option<std::time::Duration> {
        let v = v?;
        if matches!(v.get_ref(), Value::String(s) if s.trim() == "off") {
            return None;
        }
        let d = self.duration(Some(v), key, std::time::Duration::ZERO, false);
        (!d.is_zero()).then_some(d)
    }

    /// A number from 0 to 1.
    fn ratio(&mut self, v: Option<&Val>, key: &str, default: f64) -> f64 {
        let Some(v) = v else { return default };
        match number(v.get_ref()) {
            Some(n) if (0.0..=1.0).contains(&n) => n,
            _ => {
                let field = key.rsplit('.').next().unwrap_or(key);
                self.err(
                    &v.span(),
                    key,
                    format!("{field} must be a number from 0 to 1, got {}", v.get_ref()),
                    Some(format!("e.g. {field} = {default}")),
                );
                default
            }
        }
    }

    fn strings<'v>(
        &mut self,
        v: &'v Val,
        key: &str,
        example: &str,
    ) -> Vec<(&'v str, std::ops::Range<usize>)> {
        let Value::Array(items) = v.get_ref() else {
            self.err(
                &v.span(),
                key,
                format!(
                    "expected an array of strings, found {}",
                    v.get_ref().type_str()
                ),
                Some(format!("e.g. {example}")),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                Value::String(s) => out.push((s.as_str(), v.span())),
                other => self.err(
                    &v.span(),
                    key,
                    format!("expected strings, found {}", other.type_str()),
                    Some(format!("e.g. {example}")),
                ),
            }
        }
        out
    }

    fn retry_on(&mut self, v: &Val, key: &str) -> RetryOn {
        let example = "retry_on = [\"connect-failure\", \"503\", \"reset\"]";
        let mut on = RetryOn::none();
        for (s, span) in self.strings(v, key, example) {
            match s {
                // HAProxy's `retry-on` keywords are accepted for herd's own.
                "connect-failure" | "conn-failure" => {}
                "502" => on.status_502 = true,
                "503" => on.status_503 = true,
                "504" => on.status_504 = true,
                "reset" | "empty-response" => on.reset = true,
                "timeout" | "response-timeout" => on.timeout = true,
                other => {
                    let hint = match other {
                        "500" | "501" | "404" | "408" | "425" => format!(
                            "herd retries on 502, 503 and 504 only (a {other} is the app's own answer, the same on another instance); allowed: {}",
                            RETRY_ON_VALUES.join(", ")
                        ),
                        "junk-response" => "herd refuses a malformed response head as a 502: list \"502\"".to_owned(),
                        "all-retryable-errors" => "list the cases one by one: [\"connect-failure\", \"reset\", \"timeout\", \"502\", \"503\", \"504\"]".to_owned(),
                        _ => format!(
                            "allowed: {} (HAProxy's conn-failure, empty-response and response-timeout are accepted too)",
                            RETRY_ON_VALUES.join(", ")
                        ),
                    };
                    self.err(
                        &span,
                        key,
                        format!("unknown retry_on value \"{other}\""),
                        Some(hint),
                    );
                }
            }
        }
        on
    }

    /// `proxy_protocol_from`: CIDRs or single addresses; only with `proxy_protocol = true`.
    pub(super) fn proxy_protocol_from(&mut self, g: &RawGateway) -> Vec<ipnet::IpNet> {
        let key = "gateway.proxy_protocol_from";
        let Some(v) = &g.proxy_protocol_from else {
            return Vec::new();
        };
        if !g.proxy_protocol.as_ref().is_some_and(|b| *b.get_ref()) {
            self.err(
                &v.span(),
                key,
                "proxy_protocol_from is set but proxy_protocol is not".to_owned(),
                Some("add proxy_protocol = true, or remove proxy_protocol_from".into()),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (s, span) in self.strings(v, key, "proxy_protocol_from = [\"10.0.0.0/8\"]") {
            let s = s.trim();
            let net = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(n) => out.push(n.trunc()),
                Err(_) => self.err(
                    &span,
                    key,
                    format!("\"{s}\" is not an address or a CIDR block"),
                    Some("write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\"".into()),
                ),
            }
        }
        out
    }

    fn media_types(&mut self, v: &Val) -> Vec<String> {
        let key = "gateway.compress_types";
        let mut out = Vec::new();
        for (s, span) in self.strings(
            v,
            key,
            "compress_types = [\"text/*\", \"application/json\"]",
        ) {
            let mut t = s.trim().to_ascii_lowercase();
            if t == "*/*" {
                t = "*".to_owned(); // nginx's `gzip_types *`
            }
            if media_type_pattern(&t) {
                out.push(t);
            } else {
                self.err(
                    &span,
                    key,
                    format!("invalid media type \"{s}\""),
                    Some("write type/subtype without parameters, e.g. \"application/json\"; the wildcards are \"text/*\" (a whole type), \"application/*+json\" (a suffix) and \"*\" (everything)".into()),
                );
            }
        }
        out
    }

    /// Reads the page now, so a missing file stops herd at start (or fails a reload).
    fn error_page(&mut self, s: &Str, key: &str) -> Option<ErrorPage> {
        let path = resolve(self.base_dir, Path::new(s.get_ref()));
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let content_type = match ext.as_deref() {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            Some("txt") => "text/plain; charset=utf-8",
            Some("xml") => "application/xml",
            _ => {
                self.err(
                    &s.span(),
                    key,
                    format!("cannot tell the content type of {}", path.display()),
                    Some("name the file .html, .json, .txt or .xml".into()),
                );
                return None;
            }
        };
        let read = std::fs::metadata(&path).and_then(|m| {
            if m.len() > MAX_ERROR_PAGE {
                Err(std::io::Error::other("larger than 1MiB"))
            } else {
                std::fs::read(&path)
            }
        });
        match read {
            Ok(body) => Some(ErrorPage {
                path,
                body,
                content_type: content_type.to_owned(),
            }),
            Err(e) => {
                self.err(
                    &s.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                    Some("the path is relative to the config file's directory".into()),
                );
                None
            }
        }
    }

    fn access_log(&mut self, target: Option<&Str>, format: Option<&Str>) -> Option<AccessLog> {
        if let Some(f) = format {
            if f.get_ref() != "json" {
                self.err(
                    &f.span(),
                    "gateway.access_log_format",
                    format!("unknown access_log_format \"{}\"", f.get_ref()),
                    Some("the only format is \"json\" (one JSON object per line)".into()),
                );
            }
        }
        let t = target?;
        let s = t.get_ref().trim();
        if s.is_empty() {
            self.err(
                &t.span(),
                "gateway.access_log",
                "access_log must not be empty",
                Some("use \"stdout\" or a file path, e.g. access_log = \"logs/access.log\"".into()),
            );
            return None;
        }
        Some(AccessLog {
            target: if s == "stdout" {
                AccessLogTarget::Stdout
            } else {
                AccessLogTarget::File(resolve(self.base_dir, Path::new(s)))
            },
        })
    }
}

/// A `compress_types` entry: `type/subtype`, `type/*`, `type/*+suffix` or `*`.
fn media_type_pattern(t: &str) -> bool {
    if t == "*" {
        return true;
    }
    let token = |x: &str| {
        !x.is_empty()
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let Some((top, sub)) = t.split_once('/') else {
        return false;
    };
    token(top)
        && (token(sub)
            || sub == "*"
            || sub
                .strip_prefix("*+")
                .is_some_and(|suffix| token(suffix) && !suffix.contains('+')))
}
