//! One webhook: its queue of notifications and the task that POSTs them in order, each retried
//! with exponential backoff, until shutdown; then what is queued gets a bounded drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use herd_config::WebhookUrl;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::DeliveryError;
use crate::queue::Bounded;
use crate::types::NotificationState;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The most of an answer's body read (and thrown away) so its connection can be reused.
const MAX_ANSWER: usize = 64 * 1024;

/// One notification to deliver, with what the logs say about it.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) body: Bytes,
    pub(crate) alert: String,
    pub(crate) app: String,
    pub(crate) state: NotificationState,
}

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) drain_timeout: Duration,
}

/// A webhook's address and queue.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) url: WebhookUrl,
    uri: Uri,
    queue: Mutex<Bounded<Arc<Delivery>>>,
    wake: Notify,
}

impl Sink {
    pub(crate) fn new(url: WebhookUrl, capacity: usize) -> Result<Self, http::uri::InvalidUri> {
        Ok(Sink {
            uri: url.as_str().parse()?,
            url,
            queue: Mutex::new(Bounded::new(capacity)),
            wake: Notify::new(),
        })
    }

    /// Queues a delivery without waiting; a full queue drops its oldest one (logged).
    pub(crate) fn push(&self, delivery: Arc<Delivery>) {
        let dropped = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(delivery);
        self.wake.notify_one();
        if let Some(d) = dropped {
            warn!(
                webhook = %self.url,
                alert = %d.alert,
                app = %d.app,
                state = d.state.as_str(),
                "alert webhook queue full; dropped its oldest notification"
            );
        }
    }

    fn pop(&self) -> Option<Arc<Delivery>> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn len(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn next(&self) -> Arc<Delivery> {
        loop {
            if let Some(d) = self.pop() {
                return d;
            }
            // A push between `pop` and here leaves a permit: no wake-up is lost.
            self.wake.notified().await;
        }
    }
}

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Delivers the sink's notifications until `shutdown`, then drains the queue for at most
/// `drain_timeout` (a delivery cut short by shutdown is tried again in the drain).
pub(crate) async fn run(
    sink: Arc<Sink>,
    client: HttpClient,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let mut interrupted = None;
    loop {
        let delivery = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            d = sink.next() => d,
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                interrupted = Some(delivery);
                break;
            }
            _ = deliver(&sink, &client, &settings, &delivery) => {}
        }
    }

    let busy = AtomicBool::new(false);
    let drain = async {
        let mut next = interrupted;
        while let Some(d) = next.or_else(|| sink.pop()) {
            busy.store(true, Ordering::Relaxed);
            deliver(&sink, &client, &settings, &d).await;
            busy.store(false, Ordering::Relaxed);
            next = None;
        }
    };
    if tokio::time::timeout(settings.drain_timeout, drain)
        .await
        .is_err()
    {
        warn!(
            undelivered = sink.len() + usize::from(busy.load(Ordering::Relaxed)),
            "shutdown: gave up delivering alert notifications after {}ms",
            settings.drain_timeout.as_millis()
        );
    }
}

/// Attempts one delivery, retrying with backoff; true if the receiver accepted it.
async fn deliver(sink: &Sink, client: &HttpClient, settings: &Settings, d: &Delivery) -> bool {
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match post(client, &sink.uri, d.body.clone(), settings.timeout).await {
            Ok(()) => {
                debug!(alert = %d.alert, app = %d.app, state = d.state.as_str(), attempt, "delivered alert notification");
                return true;
            }
            Err(err) if err.is_retryable() && attempt <= settings.retries => {
                let wait = backoff(attempt, settings.backoff_base, settings.backoff_max);
                let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                // The first failure is a warning at once (a receiver that is down is news
                // before the retries run out); the retries after it are detail.
                if attempt == 1 {
                    warn!(alert = %d.alert, app = %d.app, retries_left = settings.retries, retry_in_ms, error = %err, "alert webhook attempt failed; retrying");
                } else {
                    debug!(alert = %d.alert, attempt, retry_in_ms, error = %err, "alert webhook attempt failed");
                }
                tokio::time::sleep(wait).await;
            }
            Err(err) => {
                warn!(
                    alert = %d.alert,
                    app = %d.app,
                    state = d.state.as_str(),
                    attempts = attempt,
                    error = %err,
                    "failed to deliver alert notification"
                );
                return false;
            }
        }
    }
}

/// The wait before retry `n` (1-based): `base × 2^(n-1)`, at most `max`.
pub(crate) fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1));
    base.saturating_mul(factor).min(max)
}

async fn post(
    client: &HttpClient,
    uri: &Uri,
    body: Bytes,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let request = Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("herd/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|source| DeliveryError::Request { source })?;
        let status = response.status();
        // The answer's content does not matter; reading it lets the connection be reused.
        let _ = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status { status })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DeliveryError::Timeout { after: timeout })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let waits: Vec<Duration> = (1..=7).map(|n| backoff(n, ms(500), ms(30_000))).collect();
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16_000),
                ms(30_000)
            ]
        );
        assert_eq!(backoff(200, ms(500), ms(30_000)), ms(30_000));
    }

    proptest::proptest! {
        /// What config validation accepts, the HTTP client can send to.
        #[test]
        fn accepted_urls_parse_as_uris(
            host in "[a-z0-9._-]{1,12}|\\[::1\\]|127\\.0\\.0\\.1",
            port in proptest::option::of(1u16..),
            rest in "[-A-Za-z0-9._~:/?#\\[\\]@!$&'()*+,;=%]{0,40}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("http://{host}{port}/{rest}");
            if let Ok(url) = text.parse::<WebhookUrl>() {
                proptest::prop_assert!(Sink::new(url, 1).is_ok(), "{text}");
            }
        }
    }

    #[test]
    fn every_valid_webhook_url_is_a_valid_uri() {
        for url in [
            "http://127.0.0.1:9000/hooks/herd?token=a%20b&x=1",
            "http://[::1]:8081",
            "http://alerts.internal/a/b;c=d/(x)!$'*+,@:~",
            "http://h/a[b]%zz?q=[1]#frag",
        ] {
            let url: WebhookUrl = url.parse().unwrap();
            assert!(Sink::new(url.clone(), 1).is_ok(), "{url:?}");
        }
    }
}
