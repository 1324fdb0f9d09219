//! `[alerts]` and `[[alert]]`: rules on the per-app telemetry metrics (warning and critical
//! thresholds held for a `for` duration) and the webhooks their notifications go to, as
//! validated. `herd-alerts` evaluates and delivers them; `docs/config.md` has the reference.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `[alerts]` together with every `[[alert]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// `defaults`, default true: whether the built-in rules ([`Alerts::builtin_rules`]) are on.
    pub defaults: bool,
    /// The rules in force: the built-ins (when `defaults` is on, minus those an `[[alert]]` of
    /// the same name replaces), then every `[[alert]]` in file order. Names are unique.
    pub rules: Vec<AlertRule>,
    /// `webhooks`, default none: receive every alert's notifications.
    pub webhooks: Vec<WebhookUrl>,
    /// `webhook_timeout`, default 5s: one delivery attempt, connect to response head.
    pub webhook_timeout: Duration,
    /// `webhook_retries`, default 5: attempts after the first failed one (so 6 at most), with
    /// exponential backoff.
    pub webhook_retries: u32,
}

/// One alert rule: while `metric` of an app is past a threshold for `sustain`, the alert fires
/// with that threshold's severity.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// `name`: unique among the rules in force.
    pub name: String,
    /// `metric`: which value of the app's per-second sample.
    pub metric: AlertMetric,
    /// `app`: `None` (the default) means every app, each evaluated on its own.
    pub app: Option<String>,
    /// `warning`: threshold for severity warning, in the metric's unit (see [`AlertMetric`]).
    pub warning: Option<f64>,
    /// `critical`: threshold for severity critical. At least one of the two is set; with both,
    /// `warning` comes first in the alert's direction (lower, or higher with `below`).
    pub critical: Option<f64>,
    /// `below`, default false: the condition is `value < threshold` instead of `value > threshold`.
    pub below: bool,
    /// `for`, default 0s (built-in rules: 30s): how long a condition must hold before it fires.
    pub sustain: Duration,
    /// `webhooks`, default none: receive this rule's notifications, besides `[alerts] webhooks`.
    pub webhooks: Vec<WebhookUrl>,
    /// True for the built-in rules of `[alerts] defaults`.
    pub builtin: bool,
}

impl AlertRule {
    /// The threshold of one severity.
    #[must_use]
    pub fn threshold(&self, critical: bool) -> Option<f64> {
        if critical {
            self.critical
        } else {
            self.warning
        }
    }

    /// Whether `value` is past `threshold` in this rule's direction (strictly, as the seed's
    /// `metrics.cpu > thresholds.criticalCpu`).
    #[must_use]
    pub fn crosses(&self, value: f64, threshold: f64) -> bool {
        if self.below {
            value < threshold
        } else {
            value > threshold
        }
    }
}

/// A metric an alert can watch: one of the values of herd's per-app telemetry sample
/// (`herd_core::telemetry::AppSample::metric`), under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertMetric {
    /// `rps`: requests answered per second.
    Rps,
    /// `error_rate`: 5xx answers / all answers, 0 to 1.
    ErrorRate,
    /// `latency_p50`: median time to response head, in seconds.
    LatencyP50,
    /// `latency_p95`: 95th percentile, in seconds.
    LatencyP95,
    /// `latency_p99`: 99th percentile, in seconds.
    LatencyP99,
    /// `in_flight`: requests in flight to the app's instances.
    InFlight,
    /// `ready`: instances in rotation.
    Ready,
    /// `desired`: instances the app wants.
    Desired,
    /// `instances`: instances that exist, in any state.
    Instances,
    /// `cpu`: mean CPU of the instances, in percent of one core.
    Cpu,
    /// `memory`: mean RSS of the instances, in percent of `max_memory`.
    Memory,
    /// `rss_bytes`: the instances' RSS, summed, in bytes.
    RssBytes,
}

impl AlertMetric {
    /// Every metric, in the order of `AppSample::METRICS`.
    pub const ALL: [AlertMetric; 12] = [
        AlertMetric::Rps,
        AlertMetric::ErrorRate,
        AlertMetric::LatencyP50,
        AlertMetric::LatencyP95,
        AlertMetric::LatencyP99,
        AlertMetric::InFlight,
        AlertMetric::Ready,
        AlertMetric::Desired,
        AlertMetric::Instances,
        AlertMetric::Cpu,
        AlertMetric::Memory,
        AlertMetric::RssBytes,
    ];

    /// The name as written in `metric = "..."` and passed to `AppSample::metric`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AlertMetric::Rps => "rps",
            AlertMetric::ErrorRate => "error_rate",
            AlertMetric::LatencyP50 => "latency_p50",
            AlertMetric::LatencyP95 => "latency_p95",
            AlertMetric::LatencyP99 => "latency_p99",
            AlertMetric::InFlight => "in_flight",
            AlertMetric::Ready => "ready",
            AlertMetric::Desired => "desired",
            AlertMetric::Instances => "instances",
            AlertMetric::Cpu => "cpu",
            AlertMetric::Memory => "memory",
            AlertMetric::RssBytes => "rss_bytes",
        }
    }

    /// The metric of that name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<AlertMetric> {
        AlertMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether thresholds are durations (`"3s"`) and values seconds.
    #[must_use]
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            AlertMetric::LatencyP50 | AlertMetric::LatencyP95 | AlertMetric::LatencyP99
        )
    }

    /// Formats a value with its unit: `3.2s`, `450ms`, `85%`, `512MiB`, `120 req/s`, `3`.
    #[must_use]
    pub fn format(self, value: f64) -> String {
        match self {
            _ if !value.is_finite() => value.to_string(),
            m if m.is_latency() => {
                if value.abs() < 1.0 {
                    format!("{}ms", trim(value * 1000.0, 1))
                } else {
                    format!("{}s", trim(value, 2))
                }
            }
            AlertMetric::Cpu | AlertMetric::Memory => format!("{}%", trim(value, 1)),
            AlertMetric::ErrorRate => format!("{}%", trim(value * 100.0, 2)),
            AlertMetric::Rps => format!("{} req/s", trim(value, 1)),
            AlertMetric::RssBytes => {
                const MIB: f64 = 1_048_576.0;
                if value.abs() >= 1024.0 * MIB {
                    format!("{}GiB", trim(value / (1024.0 * MIB), 2))
                } else {
                    format!("{}MiB", trim(value / MIB, 1))
                }
            }
            _ => trim(value, 2),
        }
    }
}

/// `value` with at most `decimals` decimals, trailing zeros dropped.
fn trim(value: f64, decimals: usize) -> String {
    let s = format!("{value:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

impl fmt::Display for AlertMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A webhook address: `http://host[:port][/path][?query]`.
///
/// The path and query often carry a secret token, so neither `Debug` nor `Display` shows them:
/// both print [`WebhookUrl::redacted`] (`http://host:port`). [`WebhookUrl::as_str`] is the full
/// URL, for sending only.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookUrl {
    url: String,
    host: String,
    port: u16,
}

impl WebhookUrl {
    /// The full URL as written (with its path and query): never log it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host as written (an IPv6 address keeps its brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, 80 when the URL has none.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://host:port`: what logs and errors may show.
    #[must_use]
    pub fn redacted(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a webhook URL was rejected. Messages never repeat the URL (it may hold a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    /// An empty string.
    #[error("webhook URL is empty")]
    Empty,
    /// `https://`: herd has no TLS client.
    #[error("webhook URL uses https://, which herd does not support")]
    Https,
    /// Another scheme, such as `ftp://`.
    #[error("webhook URL has scheme \"{0}\"; only http:// is supported")]
    Scheme(String),
    /// No `scheme://` at all.
    #[error("webhook URL does not start with http://")]
    NoScheme,
    /// `http://user:pass@host`.
    #[error("webhook URL contains credentials (user@host)")]
    UserInfo,
    /// `http:///path`, or a host with characters a host cannot have.
    #[error("webhook URL has an invalid host \"{0}\"")]
    Host(String),
    /// A port that is not 1 to 65535.
    #[error("webhook URL has an invalid port \"{0}\"")]
    Port(String),
    /// A space, a control character, a non-ASCII character or one a URL cannot hold unescaped.
    #[error("webhook URL contains {0:?}, which must be percent-encoded")]
    Char(char),
}

impl WebhookUrlError {
    /// How to fix it.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        match self {
            WebhookUrlError::Https => "herd has no TLS client: send to an http:// endpoint, e.g. a relay on localhost that forwards to the https URL",
            WebhookUrlError::UserInfo => "credentials in URLs are not supported; put a token in the path or query instead, e.g. \"http://10.0.0.9:9000/hook?token=...\"",
            WebhookUrlError::Char(_) => "percent-encode it (a space is %20)",
            WebhookUrlError::Port(_) => "use a port from 1 to 65535, or none for 80, e.g. \"http://127.0.0.1:9000/hook\"",
            _ => "write the full URL, e.g. \"http://127.0.0.1:9000/hooks/herd\"",
        }
    }
}

impl FromStr for WebhookUrl {
    type Err = WebhookUrlError;

    /// Parses `http://host[:port][/path][?query]`. Host names are resolved when sending.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = s.trim();
        if url.is_empty() {
            return Err(WebhookUrlError::Empty);
        }
        if let Some(c) = url.chars().find(|c| !is_url_char(*c)) {
            return Err(WebhookUrlError::Char(c));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(WebhookUrlError::NoScheme);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => return Err(WebhookUrlError::Https),
            _ => return Err(WebhookUrlError::Scheme(scheme.to_owned())),
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err(WebhookUrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        let tail = &rest[end..];
        // A fragment is never sent; drop it. Without a path, send `/`.
        let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
        let tail = if tail.starts_with('?') || tail.is_empty() {
            format!("/{tail}")
        } else {
            tail.to_owned()
        };
        Ok(WebhookUrl {
            url: format!("http://{authority}{tail}"),
            host: host.to_owned(),
            port,
        })
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16), WebhookUrlError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.split_once(']') {
            Some((v6, rest)) => {
                let host = &authority[..=v6.len()];
                match rest {
                    "" => (host, None),
                    _ => match rest.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(WebhookUrlError::Host(authority.to_owned())),
                    },
                }
            }
            None => return Err(WebhookUrlError::Host(authority.to_owned())),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    if !valid_host {
        return Err(WebhookUrlError::Host(host.to_owned()));
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(WebhookUrlError::Port(p.to_owned())),
        },
    };
    Ok((host, port))
}

/// RFC 3986 characters a URL may hold as they are (unreserved, reserved and `%`).
fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let u: WebhookUrl = "http://127.0.0.1:9000/hooks/herd?token=s3cret"
            .parse()
            .unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9000/hooks/herd?token=s3cret");
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 9000));
        assert_eq!(u.redacted(), "http://127.0.0.1:9000");
        assert_eq!(format!("{u:?}"), "WebhookUrl(http://127.0.0.1:9000)");
        assert_eq!(u.to_string(), "http://127.0.0.1:9000");

        let u: WebhookUrl = " HTTP://alerts.internal ".parse().unwrap();
        assert_eq!(u.as_str(), "http://alerts.internal/");
        assert_eq!(u.port(), 80);
        let u: WebhookUrl = "http://[::1]:8081?x=1#frag".parse().unwrap();
        assert_eq!(u.as_str(), "http://[::1]:8081/?x=1");
        assert_eq!(u.redacted(), "http://[::1]:8081");

        let bad: &[(&str, WebhookUrlError)] = &[
            ("", WebhookUrlError::Empty),
            ("https://hooks.slack.com/x", WebhookUrlError::Https),
            ("ftp://h/x", WebhookUrlError::Scheme("ftp".into())),
            ("127.0.0.1:9000/hook", WebhookUrlError::NoScheme),
            ("http://u:p@host/x", WebhookUrlError::UserInfo),
            ("http:///x", WebhookUrlError::Host(String::new())),
            ("http://[zz]/x", WebhookUrlError::Host("[zz]".into())),
            ("http://h:0/x", WebhookUrlError::Port("0".into())),
            ("http://h:99999/x", WebhookUrlError::Port("99999".into())),
            ("http://h:/x", WebhookUrlError::Port(String::new())),
            ("http://h/a b", WebhookUrlError::Char(' ')),
            ("http://h/é", WebhookUrlError::Char('é')),
        ];
        for (input, want) in bad {
            let err = input.parse::<WebhookUrl>().unwrap_err();
            assert_eq!(&err, want, "{input:?}");
            assert!(!err.to_string().contains("slack"), "{err}");
        }
    }

    #[test]
    fn formats_values_with_units() {
        assert_eq!(AlertMetric::LatencyP95.format(3.0), "3s");
        assert_eq!(AlertMetric::LatencyP95.format(3.456), "3.46s");
        assert_eq!(AlertMetric::LatencyP95.format(0.1204), "120.4ms");
        assert_eq!(AlertMetric::Cpu.format(85.0), "85%");
        assert_eq!(AlertMetric::ErrorRate.format(0.05), "5%");
        assert_eq!(AlertMetric::RssBytes.format(512.0 * 1_048_576.0), "512MiB");
        assert_eq!(
            AlertMetric::RssBytes.format(1.5 * 1_073_741_824.0),
            "1.5GiB"
        );
        assert_eq!(AlertMetric::Rps.format(12.5), "12.5 req/s");
        assert_eq!(AlertMetric::Ready.format(0.0), "0");
        assert_eq!(AlertMetric::Ready.format(-0.0), "0");
    }

    #[test]
    fn metric_names_round_trip() {
        for m in AlertMetric::ALL {
            assert_eq!(AlertMetric::from_name(m.name()), Some(m));
        }
        assert_eq!(AlertMetric::from_name("latency"), None);
    }
}
