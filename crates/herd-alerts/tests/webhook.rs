//! Delivery to a real webhook receiver on 127.0.0.1: a config with an `[[alert]]` on an app's
//! latency, samples that cross the threshold and come back, the receiver failing the first
//! POST with 500 and accepting the retry. Also: shutdown is bounded when a receiver hangs, and
//! a 4xx is not retried.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_alerts::{AlertEngine, AlertState, DeliveryOptions, Notifier};
use herd_core::telemetry::{AppSample, Sample};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    target: String,
    content_type: String,
    body: serde_json::Value,
    answered: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<AtomicUsize>,
}

impl Receiver {
    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn wait_for_accepted(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.all();
            if all.iter().filter(|r| r.answered == 200).count() >= n {
                return all;
            }
            assert!(Instant::now() < deadline, "timed out; received {all:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A webhook receiver that answers `fail_with` to the first `fails` requests, then 200.
async fn receiver(fails: usize, fail_with: u16) -> (SocketAddr, Receiver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rx = Receiver::default();
    let state = rx.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let target = req.uri().to_string();
                    let content_type = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let bytes = req.into_body().collect().await.unwrap().to_bytes();
                    let n = state.attempts.fetch_add(1, Ordering::SeqCst);
                    let answered = if n < fails { fail_with } else { 200 };
                    state.received.lock().unwrap().push(Received {
                        target,
                        content_type,
                        body: serde_json::from_slice(&bytes).unwrap(),
                        answered,
                    });
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() = StatusCode::from_u16(answered).unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, rx)
}

/// Everything logged by the tests of this file. One global subscriber: with a thread-local
/// one, a callsite first hit by another test's thread could be cached as uninteresting.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .init();
        logs
    })
}

const T0: i64 = 1_700_000_000_000;

fn latency(secs: i64, p95_ms: f64) -> Sample {
    Sample {
        at_unix_ms: T0 + secs * 1000,
        apps: vec![AppSample {
            app: "demo".into(),
            rps: 20.0,
            p95_ms: Some(p95_ms),
            ..AppSample::default()
        }],
    }
}

#[tokio::test]
async fn fires_and_resolves_to_a_webhook_that_fails_once() {
    let logs = logs();
    let (addr, rx) = receiver(1, 500).await;
    let config = herd_config::parse(
        &format!(
            r#"
[[app]]
name = "demo"
command = ["./demo-app"]

[alerts]
defaults = false
webhook_timeout = "2s"
webhook_retries = 3

[[alert]]
name = "demo_slow"
metric = "latency_p95"
app = "demo"
warning = "1s"
for = "2s"
webhooks = ["http://{addr}/hooks/herd?token=s3cret"]
"#
        ),
        "herd.toml",
        Path::new("/"),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let options = DeliveryOptions {
        backoff_base: Duration::from_millis(50),
        ..DeliveryOptions::default()
    };
    let (notifier, handle) = Notifier::start_with(&config.alerts, options, shutdown.clone());
    let apps: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let mut engine = AlertEngine::new(&config.alerts.rules, &apps);

    // Fast, then slow for 3 s (fires after the 2 s `for`), then fast again (resolves).
    let trace = [120.0, 1500.0, 1800.0, 2400.0, 2100.0, 300.0, 200.0];
    let mut changes = Vec::new();
    for (s, ms) in trace.into_iter().enumerate() {
        let n = engine.evaluate(&latency(s as i64, ms));
        changes.extend(n.iter().map(|n| (s, n.state)));
        notifier.notify(n);
        if s == 3 {
            assert_eq!(engine.status()[0].state, AlertState::Firing);
        }
    }
    use herd_alerts::NotificationState::{Firing, Resolved};
    assert_eq!(changes, [(3, Firing), (5, Resolved)]);

    let got = rx.wait_for_accepted(2).await;
    assert_eq!(
        got.len(),
        3,
        "one failed attempt, its retry, the resolution: {got:#?}"
    );
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 200, 200]
    );
    for r in &got {
        assert_eq!(r.target, "/hooks/herd?token=s3cret");
        assert_eq!(r.content_type, "application/json");
    }
    assert_eq!(got[0].body, got[1].body, "the retry sends the same payload");
    assert_eq!(
        got[1].body,
        serde_json::json!({
            "id": "demo_slow/demo/1700000003000/firing/warning",
            "alert": "demo_slow",
            "app": "demo",
            "metric": "latency_p95",
            "state": "firing",
            "severity": "warning",
            "value": 2.4,
            "threshold": 1.0,
            "since": "2023-11-14T22:13:23Z",
            "at": "2023-11-14T22:13:23Z",
            "summary": "latency_p95 of demo is 2.4s, above the warning threshold of 1s for 2s",
            "source": "herd"
        })
    );
    let resolved = &got[2].body;
    assert_eq!(resolved["state"], "resolved");
    assert_ne!(
        resolved["id"], got[1].body["id"],
        "another notification, another id"
    );
    assert_eq!(resolved["severity"], "warning");
    assert_eq!(resolved["value"], 0.3);
    assert_eq!(resolved["since"], "2023-11-14T22:13:23Z");
    assert_eq!(resolved["at"], "2023-11-14T22:13:25Z");
    assert_eq!(
        resolved["summary"],
        "latency_p95 of demo is back to 300ms, not above the warning threshold of 1s, after firing for 2s"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("the notifier stops")
        .unwrap();

    let text = logs.text();
    assert!(
        text.contains("alert firing: latency_p95 of demo is 2.4s"),
        "{text}"
    );
    assert!(text.contains("alert resolved: "), "{text}");
    assert!(text.contains(" WARN "), "{text}");
    assert!(text.contains("the receiver answered 500"), "{text}");
    assert!(text.contains(&format!("webhook=http://{addr}")), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("/hooks/herd"),
        "{text}"
    );
}

fn alerts_to(url: &str, retries: u32, timeout: Duration) -> herd_config::Alerts {
    herd_config::Alerts {
        webhooks: vec![url.parse().unwrap()],
        webhook_retries: retries,
        webhook_timeout: timeout,
        ..herd_config::Alerts::default()
    }
}

fn one_firing() -> Vec<herd_alerts::Notification> {
    let rule = herd_config::AlertRule {
        sustain: Duration::ZERO,
        ..herd_config::Alerts::builtin_rules().remove(2)
    };
    let mut engine = AlertEngine::new(&[rule], &["demo".to_owned()]);
    let n = engine.evaluate(&latency(0, 5000.0));
    assert_eq!(n.len(), 1);
    n
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_receiver_hangs() {
    logs();
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });

    let shutdown = CancellationToken::new();
    let options = DeliveryOptions {
        drain_timeout: Duration::from_millis(300),
        ..DeliveryOptions::default()
    };
    let config = alerts_to(&format!("http://{addr}/"), 5, Duration::from_secs(30));
    let (notifier, handle) = Notifier::start_with(&config, options, shutdown.clone());
    notifier.notify(one_firing());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(held.lock().unwrap().len(), 1, "the POST is under way");

    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("the drain is bounded")
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "drained for {took:?}");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    logs();
    let (addr, rx) = receiver(usize::MAX, 400).await;
    let shutdown = CancellationToken::new();
    let config = alerts_to(&format!("http://{addr}/x"), 5, Duration::from_secs(2));
    let (notifier, handle) = Notifier::start(&config, shutdown.clone());
    notifier.notify(one_firing());
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.attempts.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first retry would come 500 ms later.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.attempts.load(Ordering::SeqCst), 1);
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn without_webhooks_it_only_logs() {
    logs();
    let shutdown = CancellationToken::new();
    let (notifier, handle) = Notifier::start(&herd_config::Alerts::default(), shutdown.clone());
    notifier.notify(one_firing());
    // No webhook tasks: the handle is done at once.
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .unwrap()
        .unwrap();
}
