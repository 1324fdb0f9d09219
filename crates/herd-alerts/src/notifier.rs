//! [`Notifier`]: logs every notification once and queues it for the webhooks that want it
//! (`[alerts] webhooks` and the rule's own), one delivery task per distinct webhook.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use herd_config::{Alerts, WebhookUrl};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::payload;
use crate::types::{Notification, NotificationState, Severity};
use crate::webhook::{self, Delivery, Settings, Sink};

/// Delivery settings that are not in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Notifications queued per webhook at most; when full, the oldest is dropped. Default 256.
    pub queue_capacity: usize,
    /// Wait before the first retry; each further retry waits twice as long. Default 500ms.
    pub backoff_base: Duration,
    /// The longest wait between two attempts. Default 30s.
    pub backoff_max: Duration,
    /// After shutdown, how long queued notifications may still take to deliver. Default 5s.
    pub drain_timeout: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            queue_capacity: 256,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Logs notifications and hands them to the webhook tasks. Cheap to clone; `notify` never
/// waits.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    sinks: Vec<Arc<Sink>>,
    /// Sinks of `[alerts] webhooks`: every notification goes there.
    everyone: Vec<usize>,
    /// Sinks of each rule's own `webhooks`, by rule name.
    by_rule: HashMap<String, Vec<usize>>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `WebhookUrl` prints without path and query: no tokens here.
        let urls: Vec<&WebhookUrl> = self.inner.sinks.iter().map(|s| &s.url).collect();
        f.debug_struct("Notifier").field("webhooks", &urls).finish()
    }
}

impl Notifier {
    /// Starts one delivery task per distinct webhook in `config` with the default
    /// [`DeliveryOptions`]. The handle finishes once `shutdown` is cancelled and every task has
    /// drained (bounded by `drain_timeout`); at once if there are no webhooks.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    #[must_use]
    pub fn start(config: &Alerts, shutdown: CancellationToken) -> (Notifier, JoinHandle<()>) {
        Notifier::start_with(config, DeliveryOptions::default(), shutdown)
    }

    /// [`Notifier::start`] with other delivery options.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    #[must_use]
    pub fn start_with(
        config: &Alerts,
        options: DeliveryOptions,
        shutdown: CancellationToken,
    ) -> (Notifier, JoinHandle<()>) {
        let mut sinks: Vec<Arc<Sink>> = Vec::new();
        let mut index: HashMap<WebhookUrl, Option<usize>> = HashMap::new();
        let mut sink_of = |url: &WebhookUrl| -> Option<usize> {
            *index.entry(url.clone()).or_insert_with(|| {
                match Sink::new(url.clone(), options.queue_capacity) {
                    Ok(sink) => {
                        sinks.push(Arc::new(sink));
                        Some(sinks.len() - 1)
                    }
                    Err(err) => {
                        // Validation accepts only URLs that parse; report it, never panic.
                        error!(webhook = %url, error = %err, "alert webhook URL is invalid; not sending to it");
                        None
                    }
                }
            })
        };
        let everyone: Vec<usize> = config.webhooks.iter().filter_map(&mut sink_of).collect();
        let mut by_rule: HashMap<String, Vec<usize>> = HashMap::new();
        for rule in &config.rules {
            let own: Vec<usize> = rule
                .webhooks
                .iter()
                .filter_map(&mut sink_of)
                .filter(|i| !everyone.contains(i))
                .collect();
            if !own.is_empty() {
                by_rule.insert(rule.name.clone(), own);
            }
        }

        let settings = Settings {
            timeout: config.webhook_timeout,
            retries: config.webhook_retries,
            backoff_base: options.backoff_base,
            backoff_max: options.backoff_max,
            drain_timeout: options.drain_timeout,
        };
        let client = webhook::client();
        let mut tasks = JoinSet::new();
        for sink in &sinks {
            let span = tracing::info_span!("alert_webhook", webhook = %sink.url);
            tasks.spawn(
                webhook::run(
                    Arc::clone(sink),
                    client.clone(),
                    settings.clone(),
                    shutdown.clone(),
                )
                .instrument(span),
            );
        }
        let handle = tokio::spawn(
            async move {
                while let Some(done) = tasks.join_next().await {
                    if let Err(err) = done {
                        error!(error = %err, "alert webhook task failed");
                    }
                }
            }
            .instrument(tracing::info_span!("alert_notifier")),
        );
        let notifier = Notifier {
            inner: Arc::new(Inner {
                sinks,
                everyone,
                by_rule,
            }),
        };
        (notifier, handle)
    }

    /// Logs each notification (warning: `warn`, critical: `error`, resolved: `info`) and queues
    /// it for its webhooks. Never waits.
    pub fn notify(&self, notifications: Vec<Notification>) {
        for n in notifications {
            log(&n);
            let own = self
                .inner
                .by_rule
                .get(&n.alert)
                .map_or(&[][..], Vec::as_slice);
            if self.inner.everyone.is_empty() && own.is_empty() {
                continue;
            }
            let delivery = Arc::new(Delivery {
                body: payload::body(&n),
                alert: n.alert,
                app: n.app,
                state: n.state,
            });
            for &i in self.inner.everyone.iter().chain(own) {
                self.inner.sinks[i].push(Arc::clone(&delivery));
            }
        }
    }
}

fn log(n: &Notification) {
    let (alert, app, metric, value, threshold) = (&n.alert, &n.app, n.metric, n.value, n.threshold);
    match (n.state, n.severity) {
        (NotificationState::Firing, Severity::Warning) => warn!(
            %alert, %app, metric, severity = "warning", value, threshold,
            "alert firing: {}", n.summary
        ),
        (NotificationState::Firing, Severity::Critical) => error!(
            %alert, %app, metric, severity = "critical", value, threshold,
            "alert firing: {}", n.summary
        ),
        (NotificationState::Resolved, severity) => info!(
            %alert, %app, metric, severity = severity.as_str(), value, threshold,
            "alert resolved: {}", n.summary
        ),
    }
}
