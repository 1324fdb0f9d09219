//! Why a webhook delivery failed, and whether trying again can help.

use std::error::Error as _;
use std::time::Duration;

/// One failed delivery attempt. Messages never contain the webhook's URL (it may hold a token).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No response head within `webhook_timeout`. Retried.
    #[error("no answer within {}ms", after.as_millis())]
    Timeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// Connecting, sending, or reading the answer failed. Retried.
    #[error("request failed: {}", chain(source))]
    Request {
        /// hyper's error, with the cause (connection refused, DNS, ...) as its source.
        source: hyper_util::client::legacy::Error,
    },
    /// The receiver answered with a status other than 2xx. Retried for 5xx, 408 and 429.
    #[error("the receiver answered {status}")]
    Status {
        /// The status.
        status: http::StatusCode,
    },
    /// The request could not be built. Not retried.
    #[error("cannot build the request: {0}")]
    Build(#[from] http::Error),
}

impl DeliveryError {
    /// Whether another attempt may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Timeout { .. } | DeliveryError::Request { .. } => true,
            DeliveryError::Status { status } => {
                status.is_server_error()
                    || *status == http::StatusCode::TOO_MANY_REQUESTS
                    || *status == http::StatusCode::REQUEST_TIMEOUT
            }
            DeliveryError::Build(_) => false,
        }
    }
}

/// `error: cause: cause`, as hyper's own message says little ("client error (Connect)").
fn chain(err: &hyper_util::client::legacy::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn what_is_retried() {
        let status = |s: u16| DeliveryError::Status {
            status: StatusCode::from_u16(s).unwrap(),
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(status(408).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(301).is_retryable());
        assert!(DeliveryError::Timeout {
            after: Duration::from_secs(1)
        }
        .is_retryable());
        assert_eq!(
            status(500).to_string(),
            "the receiver answered 500 Internal Server Error"
        );
    }
}
