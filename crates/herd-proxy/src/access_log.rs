//! `[gateway] access_log`: one JSON object per request and line, written by one task.
//!
//! The request path never waits on the disk: a finished exchange hands its line to a bounded
//! channel ([`CAPACITY`] lines); when the writer falls that far behind, lines are dropped and
//! counted ([`AccessLogger::dropped`], logged by the writer) instead of slowing requests down.
//! Only the fields below are written: never a header value other than `Host` and `User-Agent`,
//! so `Authorization` and `Cookie` never reach the log; the path is written without its query.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_config::{AccessLog, AccessLogTarget};
use http::{header, Request, Version};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lines buffered between the request path and the writer.
pub(crate) const CAPACITY: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct AccessLogger {
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    target: AccessLogTarget,
    dropped: AtomicU64,
    /// Close the file and open it again by its path (SIGUSR1, a config reload): after
    /// logrotate (or a `mv`) renamed it, lines go to a new file, as nginx's `-s reopen`.
    reopen: tokio::sync::Notify,
}

impl AccessLogger {
    pub(crate) fn new(cfg: &AccessLog) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Arc::new(AccessLogger {
            tx,
            rx: Mutex::new(Some(rx)),
            target: cfg.target.clone(),
            dropped: AtomicU64::new(0),
            reopen: tokio::sync::Notify::new(),
        })
    }

    /// Asks the writer to reopen the file (see [`AccessLogger::reopen`]); nothing for stdout.
    pub(crate) fn reopen(&self) {
        self.reopen.notify_one();
    }

    async fn open(&self) -> Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> {
        match &self.target {
            AccessLogTarget::Stdout => Some(Box::new(tokio::io::stdout())),
            AccessLogTarget::File(path) => {
                match tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .await
                {
                    Ok(f) => Some(Box::new(f)),
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "failed to open the access log; requests are not logged");
                        None
                    }
                }
            }
        }
    }

    /// Lines dropped because the writer was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The writer task: runs until `stop`, then writes what is queued and returns. Only the
    /// first call gets the queue (the gateway serves once).
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let Some(file) = self.open().await else {
            return;
        };
        let mut out = tokio::io::BufWriter::new(file);
        let mut reported = 0;
        loop {
            let line = tokio::select! {
                line = rx.recv() => line,
                () = self.reopen.notified() => {
                    if matches!(self.target, AccessLogTarget::File(_)) {
                        let _ = out.flush().await;
                        // Lines keep queueing meanwhile; a file that cannot be opened now
                        // leaves the old one in use.
                        if let Some(file) = self.open().await {
                            out = tokio::io::BufWriter::new(file);
                            tracing::info!("access log reopened");
                        }
                    }
                    continue;
                }
                () = stop.cancelled() => None,
            };
            let Some(line) = line else { break };
            let mut failed = out.write_all(line.as_bytes()).await.is_err();
            // Write what is queued, flushing once the queue is empty.
            while let Ok(line) = rx.try_recv() {
                failed |= out.write_all(line.as_bytes()).await.is_err();
            }
            failed |= out.flush().await.is_err();
            if failed {
                tracing::warn!("failed to write to the access log");
            }
            let dropped = self.dropped();
            if dropped > reported {
                tracing::warn!(dropped, "access log lines dropped: the writer is behind");
                reported = dropped;
            }
        }
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes()).await;
        }
        let _ = out.flush().await;
    }
}

/// A header value as text: visible ASCII as is, any other byte and `\` itself as `\xHH`
/// (nginx's access log escaping), so a value with a byte outside ASCII is logged, not hidden
/// as `null`, and a `\xFF` the client sent as text cannot pass for an escaped byte.
fn escaped(v: &http::HeaderValue) -> String {
    if let Ok(text) = v.to_str() {
        if !text.contains('\\') {
            return text.to_owned();
        }
    }
    let mut out = String::with_capacity(v.len() + 8);
    for &b in v.as_bytes() {
        if b != b'\\' && (b == b' ' || b.is_ascii_graphic()) {
            out.push(char::from(b));
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\x{b:02X}"));
        }
    }
    out
}

/// What is known of a request when it arrives.
#[derive(Debug)]
pub(crate) struct Record {
    logger: Arc<AccessLogger>,
    time: jiff::Timestamp,
    started: Instant,
    request_id: String,
    client: SocketAddr,
    method: String,
    host: Option<String>,
    path: String,
    http: &'static str,
    tls: bool,
    user_agent: Option<String>,
}

impl Record {
    pub(crate) fn start<B>(
        logger: &Arc<AccessLogger>,
        req: &Request<B>,
        client: SocketAddr,
        request_id: &http::HeaderValue,
        started: Instant,
    ) -> Self {
        let text = |v: Option<&http::HeaderValue>| v.map(escaped);
        Record {
            logger: Arc::clone(logger),
            time: jiff::Timestamp::now(),
            started,
            request_id: request_id.to_str().unwrap_or("").to_owned(),
            client,
            method: req.method().to_string(),
            host: text(req.headers().get(header::HOST))
                .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned())),
            path: req.uri().path().to_owned(),
            http: match req.version() {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            },
            tls: req.extensions().get::<crate::tls::ClientTls>().is_some(),
            user_agent: text(req.headers().get(header::USER_AGENT)),
        }
    }

    /// Writes the line once the response body has been sent (or abandoned).
    pub(crate) fn finish(self, status: u16, bytes_sent: u64, ex: &Exchange) {
        // Whole microseconds, so the number prints as `3.236`, not `3.2364569999999997`.
        #[allow(clippy::cast_precision_loss)]
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        let upstream = ex.instance.as_ref().map(
            |(id, addr)| serde_json::json!({ "instance": id.as_ref(), "addr": addr.to_string() }),
        );
        let line = serde_json::json!({
            "time": self.time.to_string(),
            "request_id": self.request_id,
            "client": self.client.ip().to_string(),
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "status": status,
            "bytes_sent": bytes_sent,
            "duration_ms": ms(self.started.elapsed()),
            "upstream": upstream,
            "upstream_time_ms": ex.upstream_time.map(ms),
            "route": ex.route.as_deref(),
            "retries": ex.retries,
            "tls": self.tls,
            "http": self.http,
            "user_agent": self.user_agent,
            "body_error": ex.body_error,
            "rate_limit": ex.rate_limit,
        });
        let mut line = line.to_string();
        line.push('\n');
        self.logger.send(line);
    }
}

/// A request's log line until its response head exists: written with status 499 if the
/// request is dropped before that (the client closed its connection or reset its stream).
#[derive(Debug)]
pub(crate) struct Pending {
    record: Option<Record>,
    pub(crate) ex: Exchange,
}

impl Pending {
    pub(crate) fn new(record: Option<Record>) -> Self {
        Pending {
            record,
            ex: Exchange::default(),
        }
    }

    /// The record and what was learned, for the response's way out.
    pub(crate) fn take(&mut self) -> (Option<Record>, Exchange) {
        (self.record.take(), std::mem::take(&mut self.ex))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.finish(499, 0, &self.ex);
        }
    }
}

/// What the request path learned about one exchange, for the log and the way out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exchange {
    pub(crate) route: Option<Arc<str>>,
    /// The instance that answered (the last one tried).
    pub(crate) instance: Option<(Arc<str>, SocketAddr)>,
    /// Time to the response head from the instance that answered.
    pub(crate) upstream_time: Option<Duration>,
    /// When the request went to the last instance tried (for `upstream_time` when the
    /// exchange ends before that instance answers: `total_timeout`).
    pub(crate) sent_at: Option<Instant>,
    /// Attempts after the first.
    pub(crate) retries: u32,
    /// The route's `compress`, if it sets one.
    pub(crate) compress: Option<bool>,
    /// `total_timeout`: when the exchange, body included, must be over.
    pub(crate) deadline: Option<Instant>,
    pub(crate) total_timeout: Option<Duration>,
    /// The app's 503 page when no instance could serve.
    pub(crate) error_page: Option<crate::resilience::ErrorPage>,
    /// Why the response body ended before its end (the instance's stream broke, or
    /// `total_timeout`): the client got a truncated response under a complete-looking status.
    pub(crate) body_error: Option<String>,
    /// The `[[rate_limit]]` that refused the request (its `name`), for a 429 line.
    pub(crate) rate_limit: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_ascii_are_escaped_not_dropped() {
        let v = http::HeaderValue::from_bytes(b"ev\"il\xff\xfe").unwrap();
        assert_eq!(escaped(&v), "ev\"il\\xFF\\xFE");
        assert_eq!(escaped(&http::HeaderValue::from_static("curl/8")), "curl/8");
        assert_eq!(
            escaped(&http::HeaderValue::from_static("a\\xFF")),
            "a\\x5CxFF",
            "a backslash sent as text is escaped too"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let log = AccessLogger::new(&AccessLog {
            target: AccessLogTarget::Stdout,
        });
        // No writer runs: the queue fills, then every line is dropped and counted.
        for _ in 0..CAPACITY + 5 {
            log.send("{}\n".to_owned());
        }
        assert_eq!(log.dropped(), 5);
    }
}
