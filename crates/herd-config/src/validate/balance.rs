//! Validation of an app's balancing keys: `balance`, `hash_key` and `hash_balance_factor`.

use toml::Spanned;

use super::Validator;
use crate::defaults as d;
use crate::error::closest;
use crate::model::{Balance, HashKey};
use crate::raw::RawApp;

/// Valid `balance` values, as written in the file.
const BALANCE_VALUES: [&str; 7] = [
    "round_robin",
    "least_conn",
    "random_two",
    "peak_ewma",
    "ip_hash",
    "hash",
    "first",
];

const HASH_KEY_HINT: &str =
    "use \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"path\", e.g. hash_key = \"header:X-User\"";

impl Validator<'_> {
    /// `balance`, then `hash_key` (required exactly when `balance = "hash"`) and
    /// `hash_balance_factor`.
    pub(super) fn balancing(&mut self, p: &str, a: &RawApp) -> (Balance, Option<HashKey>, u32) {
        let (balance, hash_key) = self.balance_with_key(p, a.balance.as_ref(), a.hash_key.as_ref());
        let key = format!("{p}.hash_balance_factor");
        let factor = match &a.hash_balance_factor {
            None => d::HASH_BALANCE_FACTOR,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if n == 0 || n >= 100 => n,
                _ => {
                    self.err(
                        &v.span(),
                        &key,
                        format!(
                            "hash_balance_factor must be 0 or at least 100, got {}",
                            v.get_ref()
                        ),
                        Some("a percentage of the mean load, e.g. hash_balance_factor = 125 (herd's default; HAProxy's usual range is 125-200, and its default is 0); 0 = unbounded".into()),
                    );
                    d::HASH_BALANCE_FACTOR
                }
            },
        };
        (balance, hash_key, factor)
    }

    /// `hash_balance_factor` on an app that hashes nowhere: not its own `balance`, nor a route
    /// to it that overrides to `hash`/`ip_hash` (those use the app's factor).
    pub(super) fn hash_factor_used(
        &mut self,
        raw: &crate::raw::RawConfig,
        apps: &[crate::App],
        routes: &[crate::Route],
    ) {
        let hashing = |b: &Balance| matches!(b, Balance::Hash | Balance::IpHash);
        for (i, (app, raw_app)) in apps.iter().zip(&raw.app).enumerate() {
            let Some(v) = &raw_app.get_ref().hash_balance_factor else {
                continue;
            };
            let by_route = routes.iter().any(|r| {
                r.app == i
                    && r.overrides
                        .balance
                        .as_ref()
                        .is_some_and(|(b, _)| hashing(b))
            });
            if !hashing(&app.balance) && !by_route {
                self.err(
                    &v.span(),
                    &format!("app[{i}].hash_balance_factor"),
                    "hash_balance_factor only applies with balance = \"hash\" or \"ip_hash\" (the app's, or a route's to it)",
                    Some("remove hash_balance_factor, or use a hashing balance".into()),
                );
            }
        }
    }

    /// `balance` and `hash_key` (for an app, or a route's override).
    pub(super) fn balance_with_key(
        &mut self,
        p: &str,
        balance: Option<&Spanned<String>>,
        hash_key: Option<&Spanned<String>>,
    ) -> (Balance, Option<HashKey>) {
        let balance_span = balance.map_or(0..0, Spanned::span);
        let balance = match balance {
            None => d::BALANCE,
            Some(b) => self.balance_name(p, b),
        };
        let hash_key = match (hash_key, balance) {
            (Some(k), Balance::Hash) => match parse_hash_key(k.get_ref()) {
                Ok(key) => Some(key),
                Err(message) => {
                    self.err(
                        &k.span(),
                        &format!("{p}.hash_key"),
                        message,
                        Some(HASH_KEY_HINT.into()),
                    );
                    Some(HashKey::Path)
                }
            },
            (None, Balance::Hash) => {
                self.err(
                    &balance_span,
                    &format!("{p}.hash_key"),
                    "balance = \"hash\" needs hash_key",
                    Some(format!("add hash_key; {HASH_KEY_HINT}")),
                );
                Some(HashKey::Path)
            }
            (Some(k), _) => {
                self.err(
                    &k.span(),
                    &format!("{p}.hash_key"),
                    "hash_key only applies with balance = \"hash\"",
                    Some("set balance = \"hash\", or remove hash_key".into()),
                );
                None
            }
            (None, _) => None,
        };
        (balance, hash_key)
    }

    fn balance_name(&mut self, p: &str, b: &Spanned<String>) -> Balance {
        match b.get_ref().as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_conn" => Balance::LeastConn,
            "random_two" => Balance::RandomTwo,
            "peak_ewma" => Balance::PeakEwma,
            "ip_hash" => Balance::IpHash,
            "hash" => Balance::Hash,
            "first" => Balance::First,
            other => {
                let mut hint = String::new();
                let alias = match other.to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
                    "roundrobin" | "round_robin" | "rr" => Some("round_robin"),
                    "leastconn" | "least_conn" | "least_connections" | "least_conns" => {
                        Some("least_conn")
                    }
                    "random" | "p2c" | "random_2" | "power_of_two" => Some("random_two"),
                    "ewma" | "peakewma" | "peak_ewma" => Some("peak_ewma"),
                    "source" | "iphash" | "ip_hash" | "src" => Some("ip_hash"),
                    "consistent" | "hdr" | "uri" | "url_param" | "chash" => Some("hash"),
                    _ => closest(other, &BALANCE_VALUES),
                };
                if let Some(s) = alias {
                    hint.push_str(&format!("did you mean \"{s}\"? "));
                }
                let all: Vec<String> = BALANCE_VALUES.iter().map(|v| format!("\"{v}\"")).collect();
                hint.push_str(&format!("valid values: {}", all.join(", ")));
                self.err(
                    &b.span(),
                    &format!("{p}.balance"),
                    format!("unknown balance \"{other}\""),
                    Some(hint),
                );
                d::BALANCE
            }
        }
    }
}

/// Parses `header:NAME`, `cookie:NAME`, `query:NAME` or `path`.
fn parse_hash_key(s: &str) -> Result<HashKey, String> {
    if s == "path" {
        return Ok(HashKey::Path);
    }
    let Some((kind, name)) = s.split_once(':') else {
        return Err(format!("invalid hash_key \"{s}\""));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("hash_key \"{s}\" names no {kind}"));
    }
    match kind.trim() {
        "header" => {
            if http_token(name) {
                Ok(HashKey::Header(name.to_ascii_lowercase()))
            } else {
                Err(format!("invalid header name \"{name}\" in hash_key"))
            }
        }
        "cookie" if http_token(name) => Ok(HashKey::Cookie(name.to_owned())),
        "cookie" => Err(format!("invalid cookie name \"{name}\" in hash_key")),
        "query" if !name.contains(['&', '=', '#', ' ']) => Ok(HashKey::Query(name.to_owned())),
        "query" => Err(format!("invalid query parameter \"{name}\" in hash_key")),
        other => Err(format!("unknown hash_key kind \"{other}\"")),
    }
}

/// RFC 9110 `token`: what header and cookie names may contain.
fn http_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys() {
        assert_eq!(
            parse_hash_key("header:X-User"),
            Ok(HashKey::Header("x-user".into()))
        );
        assert_eq!(
            parse_hash_key("cookie:sid"),
            Ok(HashKey::Cookie("sid".into()))
        );
        assert_eq!(parse_hash_key("query:u"), Ok(HashKey::Query("u".into())));
        assert_eq!(parse_hash_key("path"), Ok(HashKey::Path));
        assert!(parse_hash_key("header:").is_err());
        assert!(parse_hash_key("header:X User").is_err());
        assert!(parse_hash_key("body:x").is_err());
        assert!(parse_hash_key("uri").is_err());
    }
}
