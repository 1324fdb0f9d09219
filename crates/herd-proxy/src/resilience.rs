//! Per-app data-plane state beside the balancer: the backend protocol, the circuit breaker's
//! settings (the breakers themselves live in each instance's `EndpointStats`), the retry budget
//! and the page answered when no instance can serve.

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use herd_config::{App, DataPlane, Protocol};
use herd_core::CircuitSettings;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::retry::RetryBudget;

/// `error_page_503`, read at config load.
#[derive(Debug, Clone)]
pub(crate) struct ErrorPage {
    body: Bytes,
    content_type: HeaderValue,
}

impl ErrorPage {
    fn from_config(p: &herd_config::ErrorPage) -> Option<Self> {
        Some(ErrorPage {
            body: Bytes::from(p.body.clone()),
            content_type: HeaderValue::from_str(&p.content_type).ok()?,
        })
    }

    pub(crate) fn response(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::text(self.body.clone()));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, self.content_type.clone());
        resp
    }
}

#[derive(Debug)]
pub(crate) struct AppPlane {
    pub(crate) protocol: Protocol,
    pub(crate) circuit: CircuitSettings,
    /// The app's page, else the gateway's.
    pub(crate) error_page: Option<ErrorPage>,
    /// Locked for a few nanoseconds per request (one deposit, rarely a withdrawal): not worth
    /// an atomic ring whose buckets would need a compare-and-swap per second anyway.
    budget: Mutex<RetryBudget>,
    epoch: Instant,
}

impl AppPlane {
    pub(crate) fn new(app: &App, gateway: &DataPlane) -> Self {
        let c = gateway.circuit;
        AppPlane {
            protocol: app.protocol,
            circuit: CircuitSettings {
                consecutive: c.consecutive,
                error_rate: c.error_rate,
                min_requests: c.min_requests,
                window: c.window,
                open: c.open,
                half_open: c.half_open,
            },
            error_page: app
                .error_page_503
                .as_ref()
                .or(gateway.error_page_503.as_ref())
                .and_then(ErrorPage::from_config),
            budget: Mutex::new(RetryBudget::new(
                gateway.retry_budget,
                gateway.retry_budget_min_per_s,
            )),
            epoch: Instant::now(),
        }
    }

    fn sec(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Counts a request into the retry budget.
    pub(crate) fn deposit(&self, now: Instant) {
        let sec = self.sec(now);
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .deposit(sec);
    }

    /// Takes a retry from the budget, if it allows one.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let sec = self.sec(now);
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .withdraw(sec)
    }

    /// Gives back a retry withdrawn at `at` that was not made.
    pub(crate) fn refund(&self, at: Instant) {
        let sec = self.sec(at);
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refund(sec);
    }
}
