//! The Redis subscriber task: one dedicated pub/sub connection feeding the in-process [`Hub`].
//!
//! It connects to the first reachable URL (on a cluster any node will do: PUBLISH reaches every
//! node), subscribes to every channel the hub has subscribers for, and after a lost connection
//! reconnects and subscribes again. A channel whose last local subscriber left stays subscribed on
//! the server until the next check (every 5 s, with a PING that finds a dead connection), which
//! UNSUBSCRIBEs every such channel: a new subscriber meanwhile asks for a SUBSCRIBE of its own,
//! handled after the check, so none is left deaf.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::hub::Hub;
use crate::{StoreError, StoreResult};

/// How often an idle subscriber connection is checked.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A request to SUBSCRIBE on the live connection, answered once the server confirmed.
pub(super) type Request = (String, oneshot::Sender<StoreResult<()>>);

/// Spawns the subscriber task; it stops when `cancel` fires.
pub(super) fn spawn(
    urls: Vec<String>,
    backend: &'static str,
    timeout: Duration,
    hub: Arc<Hub>,
    requests: mpsc::UnboundedReceiver<Request>,
    cancel: CancellationToken,
) {
    let task = run(urls, backend, timeout, hub, requests, cancel);
    tokio::spawn(task.instrument(tracing::info_span!("store_subscriber", backend)));
}

async fn run(
    urls: Vec<String>,
    backend: &'static str,
    timeout: Duration,
    hub: Arc<Hub>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    cancel: CancellationToken,
) {
    let unavailable = |reason: String| StoreError::Unavailable { backend, reason };
    let mut backoff = Duration::from_millis(100);
    let mut had_connection = false;
    loop {
        let connected = tokio::select! {
            () = cancel.cancelled() => return,
            c = connect(&urls, timeout, &hub) => c,
        };
        let (mut sink, mut stream, mut on_server) = match connected {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                if had_connection {
                    // Subscribed again: whatever was published while the connection was gone
                    // is lost. Every subscriber hears of the gap (see `Backend::subscribe`).
                    for channel in hub.channels() {
                        hub.deliver(&channel, &Bytes::new());
                    }
                }
                had_connection = true;
                c
            }
            Err(reason) => {
                tracing::debug!(%reason, "failed to connect the subscriber; retrying");
                // While disconnected, new subscriptions are refused rather than silently deaf.
                let deadline = tokio::time::sleep(backoff);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = &mut deadline => break,
                        req = requests.recv() => match req {
                            Some((_, reply)) => { let _ = reply.send(Err(unavailable(reason.clone()))); }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // An idle subscriber hears nothing either way: a PING now and then finds out whether
        // the connection still leads anywhere (reconnecting, and subscribing again, if not).
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ping.tick() => {
                    // Channels nobody listens to any more (a lock waited on once) are given
                    // back, or the server would fan their messages out to this node forever.
                    let live: HashSet<String> = hub.channels().into_iter().collect();
                    let stale: Vec<String> = on_server.difference(&live).cloned().collect();
                    let mut failed = false;
                    // A few UNSUBSCRIBE commands of many channels each, not a round trip per
                    // channel (messages and new subscriptions wait meanwhile).
                    for chunk in stale.chunks(256) {
                        match tokio::time::timeout(timeout, sink.unsubscribe(chunk)).await {
                            Ok(Ok(())) => {
                                for channel in chunk {
                                    on_server.remove(channel);
                                }
                            }
                            _ => { failed = true; break; }
                        }
                    }
                    if failed {
                        tracing::warn!("subscriber connection failed to unsubscribe; reconnecting");
                        break;
                    }
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "subscriber connection failed its ping; reconnecting");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(?timeout, "subscriber connection did not answer its ping; reconnecting");
                            break;
                        }
                    }
                }
                msg = stream.next() => match msg {
                    Some(m) => { hub.deliver(m.get_channel_name(), &Bytes::copy_from_slice(m.get_payload_bytes())); }
                    None => {
                        tracing::warn!("subscriber connection lost; reconnecting");
                        break;
                    }
                },
                req = requests.recv() => {
                    let Some((channel, reply)) = req else { return };
                    let res = tokio::time::timeout(timeout, sink.subscribe(&channel)).await;
                    match res {
                        Ok(Ok(())) => {
                            on_server.insert(channel);
                            let _ = reply.send(Ok(()));
                        }
                        Ok(Err(e)) => {
                            let _ = reply.send(Err(unavailable(e.to_string())));
                            break;
                        }
                        Err(_) => {
                            let _ = reply.send(Err(StoreError::Timeout { backend, millis: millis(timeout) }));
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Connects to the first URL that answers and subscribes to the hub's channels.
/// A subscriber connection, subscribed to every channel the hub has listeners for (returned).
async fn connect(
    urls: &[String],
    timeout: Duration,
    hub: &Hub,
) -> Result<
    (
        redis::aio::PubSubSink,
        redis::aio::PubSubStream,
        HashSet<String>,
    ),
    String,
> {
    let mut last = String::from("no URL given");
    for url in urls {
        let attempt = async {
            let client = super::conn::client(url, timeout).map_err(|e| e.to_string())?;
            let pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
            let (mut sink, stream) = pubsub.split();
            let channels = hub.channels();
            for channel in &channels {
                sink.subscribe(channel).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((sink, stream, channels.into_iter().collect()))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => last = format!("{}: {e}", super::codec::redact(url)),
            Err(_) => last = format!("{}: connect timed out", super::codec::redact(url)),
        }
    }
    Err(last)
}
