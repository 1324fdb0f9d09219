//! Encoding for the Redis backend: versioned values, scores, slots, error mapping, redaction.

use bytes::Bytes;
use redis::RedisError;

use crate::{StoreError, Versioned};

/// Decodes a GET reply: `"\0"` + version + payload; anything else is a counter or rate state.
pub(super) fn decode(key: &str, raw: Option<Vec<u8>>) -> Result<Option<Versioned>, StoreError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.len() >= 9 && raw[0] == 0 => {
            let version = u64::from_be_bytes(raw[1..9].try_into().unwrap());
            Ok(Some(Versioned {
                value: Bytes::copy_from_slice(&raw[9..]),
                version,
            }))
        }
        Some(_) => Err(StoreError::WrongType {
            key: key.to_owned(),
            expected: "value",
            found: "counter",
        }),
    }
}

/// A score as Redis reads it.
pub(super) fn score_arg(s: f64) -> String {
    if s == f64::INFINITY {
        "+inf".into()
    } else if s == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{s}")
    }
}

/// A score as Redis writes it (`inf`, `-inf` or a decimal).
pub(super) fn parse_score(raw: &str) -> Result<f64, StoreError> {
    raw.parse().map_err(|_| StoreError::Backend {
        backend: "redis",
        reason: format!("unreadable score {raw:?}"),
    })
}

/// The Redis Cluster slot of `key` (CRC16/XMODEM of its hash tag, mod 16384).
pub(super) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&c| c == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Refuses keys of one call that live in different slots (they would fail with CROSSSLOT).
pub(super) fn same_slot(call: &str, keys: &[&str]) -> Result<(), StoreError> {
    let Some(first) = keys.first() else {
        return Ok(());
    };
    if let Some(other) = keys.iter().find(|k| slot(k) != slot(first)) {
        return Err(StoreError::Invalid(format!(
            "{call} on a Redis Cluster needs all keys in one slot, but {first:?} and {other:?} differ; \
             give them the same hash tag, e.g. herd:{{queue:NAME}}:wait and herd:{{queue:NAME}}:active"
        )));
    }
    Ok(())
}

/// Redis error codes of a passing state: the call may succeed if made again later.
fn transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("LOADING" | "MASTERDOWN" | "READONLY" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN")
    )
}

/// Maps a Redis error to the store's error for a call on `key`.
pub(super) fn map_err(backend: &'static str, key: &str, e: &RedisError) -> StoreError {
    let text = e.to_string();
    if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
    {
        return StoreError::Unavailable {
            backend,
            reason: text,
        };
    }
    if e.is_timeout() {
        return StoreError::Unavailable {
            backend,
            reason: format!("timed out: {text}"),
        };
    }
    // States a server gets out of by itself: loading its AOF/RDB after a restart, a replica
    // cut from its primary, a URL left on a demoted primary, a long script, a resharding.
    if transient_code(e.code()) || e.kind() == redis::ErrorKind::AuthenticationFailed {
        return StoreError::Unavailable {
            backend,
            reason: text,
        };
    }
    // States an operator gets the server out of: the store cannot serve until then, and the
    // call is worth making again later (503), not a defect in herd (500).
    let operator = match e.code() {
        Some("OOM") => Some("Redis is out of memory (maxmemory); raise it or free memory"),
        Some("NOAUTH" | "WRONGPASS") => {
            Some("Redis wants a password herd does not have; put it in the [store] URL")
        }
        Some("NOPERM") => Some("the Redis user lacks a permission herd needs (ACL)"),
        Some("MOVED" | "ASK") if backend == "redis" => Some(
            "this Redis is a cluster node: list the cluster's nodes in [store] cluster = [...]",
        ),
        Some("MOVED" | "ASK") => Some("the master serving that slot may be unreachable"),
        _ => None,
    };
    if let Some(hint) = operator {
        return StoreError::Unavailable {
            backend,
            reason: format!("{text} ({hint})"),
        };
    }
    if text.contains("WRONGTYPE") {
        return StoreError::WrongType {
            key: key.to_owned(),
            expected: "value",
            found: "another kind of value",
        };
    }
    if text.contains("not an integer") {
        return StoreError::WrongType {
            key: key.to_owned(),
            expected: "counter",
            found: "value",
        };
    }
    if text.contains("overflow") {
        return StoreError::Invalid(format!("incr of counter {key:?} overflows"));
    }
    if text.contains("CROSSSLOT") {
        return StoreError::Invalid(format!(
            "keys of one call are in different cluster slots: {text}"
        ));
    }
    if e.is_cluster_error() {
        return StoreError::Unavailable {
            backend,
            reason: text,
        };
    }
    StoreError::Backend {
        backend,
        reason: text,
    }
}

/// A URL without its credentials (status pages and logs show the target): no `user:password@`,
/// and no `pass`, `password`, `user` or `username` query parameter (`redis+unix://` URLs carry
/// the password that way).
pub(super) fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://{}", &base[..scheme], &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    let kept: Vec<&str> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|kv| {
            let name = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            !matches!(name.as_str(), "pass" | "password" | "user" | "username")
        })
        .collect();
    if kept.is_empty() {
        base
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_loading_or_cut_from_its_primary_is_unavailable_not_broken() {
        for code in [
            "LOADING",
            "MASTERDOWN",
            "READONLY",
            "BUSY",
            "TRYAGAIN",
            "CLUSTERDOWN",
        ] {
            assert!(transient_code(Some(code)), "{code}");
        }
        assert!(!transient_code(Some("WRONGTYPE")));
        assert!(!transient_code(Some("ERR")));
        assert!(!transient_code(None));
    }

    #[test]
    fn slots_follow_hash_tags() {
        // Reference values from the Redis Cluster spec / CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("herd:{q}:wait"), slot("q"));
        assert!(same_slot("zmove", &["herd:{q}:a", "herd:{q}:b"]).is_ok());
        assert!(matches!(
            same_slot("zmove", &["herd:{a}:x", "herd:{b}:x"]),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn redact_drops_the_password() {
        assert_eq!(
            redact("redis://:secret@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://user:pw@h:1"), "redis://h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=1&pass=secret&user=u"),
            "redis+unix:///run/redis.sock?db=1"
        );
        assert_eq!(
            redact("unix:///run/redis.sock?PASSWORD=s"),
            "unix:///run/redis.sock"
        );
        assert_eq!(
            redact("rediss://:p@w@h:1/0?protocol=resp3"),
            "rediss://h:1/0?protocol=resp3"
        );
    }

    #[test]
    fn scores_round_trip() {
        for s in [
            f64::NEG_INFINITY,
            -1.5,
            0.0,
            1e-300,
            2.5,
            1e300,
            f64::INFINITY,
        ] {
            let arg = score_arg(s);
            let back = if arg == "+inf" { "inf".to_owned() } else { arg };
            assert_eq!(parse_score(&back).unwrap(), s);
        }
    }
}
