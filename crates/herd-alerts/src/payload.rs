//! The JSON body POSTed to webhooks:
//! `{"id","alert","app","metric","state","severity","value","threshold","since","at","summary","source":"herd"}`
//! with `since`/`at` as RFC 3339 UTC times. `id` is the same on every delivery attempt of one
//! notification (a receiver dedupes retries by it) and differs between notifications.

use bytes::Bytes;
use serde::Serialize;

use crate::types::{Notification, NotificationState, Severity};

#[derive(Serialize)]
struct Payload<'a> {
    id: String,
    alert: &'a str,
    app: &'a str,
    metric: &'a str,
    state: NotificationState,
    severity: Severity,
    value: Option<f64>,
    threshold: Option<f64>,
    since: String,
    at: String,
    summary: &'a str,
    source: &'static str,
}

/// `ms` since the epoch as RFC 3339 (`2025-01-31T12:00:00.5Z`); out of range: the number.
pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// The webhook body of `n`.
pub(crate) fn body(n: &Notification) -> Bytes {
    // Six decimals: a latency of 0.8174629999999999 s reads 0.817463.
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let payload = Payload {
        id: format!(
            "{}/{}/{}/{}/{}",
            n.alert,
            n.app,
            n.since_unix_ms,
            n.state.as_str(),
            n.severity.as_str()
        ),
        alert: &n.alert,
        app: &n.app,
        metric: n.metric,
        state: n.state,
        severity: n.severity,
        value: n.value.filter(|v| v.is_finite()).map(round),
        threshold: Some(n.threshold).filter(|v| v.is_finite()).map(round),
        since: rfc3339(n.since_unix_ms),
        at: rfc3339(n.at_unix_ms),
        summary: &n.summary,
        source: "herd",
    };
    // Strings and numbers only: serializing cannot fail.
    Bytes::from(serde_json::to_vec(&payload).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body() {
        let n = Notification {
            alert: "slow".into(),
            app: "web".into(),
            metric: "latency_p95",
            state: NotificationState::Firing,
            severity: Severity::Critical,
            previous: None,
            value: Some(3.5),
            threshold: 3.0,
            since_unix_ms: 1_700_000_000_000,
            at_unix_ms: 1_700_000_030_500,
            summary: "s".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&n)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "slow/web/1700000000000/firing/critical",
                "alert": "slow", "app": "web", "metric": "latency_p95", "state": "firing",
                "severity": "critical", "value": 3.5, "threshold": 3.0,
                "since": "2023-11-14T22:13:20Z", "at": "2023-11-14T22:13:50.5Z",
                "summary": "s", "source": "herd"
            })
        );
        let none = Notification {
            value: None,
            threshold: f64::NAN,
            ..n
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&none)).unwrap();
        assert!(v["value"].is_null() && v["threshold"].is_null());
    }
}
