//! Per-queue limits shared through the store, so that a node whose config lacks a queue's
//! `[services.queue.NAME]` table still holds to the `rate` and `concurrency` other nodes set
//! (BullMQ keeps its global concurrency in Redis for the same reason).
//!
//! Every node with a queue's table writes its settings under `herd:{q:NAME}:settings` at start
//! and every 20 s, with a 60 s expiry: when the last node with the table stops (or drops it
//! by a restart), the settings go away within a minute. A node with the table uses its own
//! settings; a node without reads the store's (at most every 5 s per queue). Nodes whose
//! tables disagree each keep their own, and say so in their log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use herd_store::{Backend as _, Expect, Store};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Keys, Limiter, QueueSettings};

/// How often a node with a queue's table writes it again.
pub(super) const REFRESH: Duration = Duration::from_secs(20);
/// How long written settings last without a refresh.
pub(super) const EXPIRY: Duration = Duration::from_secs(60);
/// How long a node without the table trusts what it last read.
pub(super) const READ_EVERY: Duration = Duration::from_secs(5);

/// The stored form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrency: Option<u32>,
}

impl From<&QueueSettings> for Stored {
    fn from(s: &QueueSettings) -> Self {
        Stored {
            rate_max: s.limiter.map(|l| l.max),
            rate_ms: s
                .limiter
                .map(|l| u64::try_from(l.duration.as_millis()).unwrap_or(u64::MAX)),
            concurrency: s.concurrency,
        }
    }
}

impl From<Stored> for QueueSettings {
    fn from(s: Stored) -> Self {
        QueueSettings {
            limiter: match (s.rate_max, s.rate_ms) {
                (Some(max), Some(ms)) if max > 0 && ms > 0 => Some(Limiter {
                    max,
                    duration: Duration::from_millis(ms),
                }),
                _ => None,
            },
            concurrency: s.concurrency.filter(|&c| c > 0),
        }
    }
}

fn key(queue: &str) -> String {
    Keys::new(queue).set("settings")
}

/// Writes this node's settings of each configured queue, now and every [`REFRESH`], until
/// `shutdown`.
pub(super) async fn publish(
    store: std::sync::Arc<Store>,
    queues: HashMap<String, QueueSettings>,
    shutdown: CancellationToken,
) {
    if queues.is_empty() {
        return;
    }
    // What another node was last seen to have written, per queue (said once per value).
    let mut told: HashMap<String, Stored> = HashMap::new();
    loop {
        for (name, settings) in &queues {
            let mine = Stored::from(settings);
            let key = key(name);
            if let Ok(Some(v)) = store.get(&key).await {
                match serde_json::from_slice::<Stored>(&v.value) {
                    Ok(theirs) if theirs != mine && told.get(name) != Some(&theirs) => {
                        tracing::warn!(queue = %name, this_node = ?mine, other_node = ?theirs,
                            "another herd node on this store has different [services.queue.{name}] settings; each node with the table uses its own, nodes without it use whichever was written last: give every node the same table");
                        told.insert(name.clone(), theirs);
                    }
                    _ => {}
                }
            }
            let value = serde_json::to_vec(&mine).unwrap_or_default();
            if let Err(e) = store
                .put(&key, value.into(), Expect::Any, Some(EXPIRY))
                .await
            {
                tracing::debug!(queue = %name, error = %e, "could not share the queue's settings; trying again later");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// What a node without a queue's table last read of it.
#[derive(Default)]
pub(super) struct Cache {
    read: Mutex<HashMap<String, (QueueSettings, Instant)>>,
}

impl Cache {
    /// The settings other nodes shared for `queue` (none: no limits), read again when the last
    /// read is older than [`READ_EVERY`]. A store that cannot answer keeps the last reading.
    pub(super) async fn get(&self, store: &Store, queue: &str) -> QueueSettings {
        let now = Instant::now();
        let last = self.read.lock().unwrap().get(queue).cloned();
        if let Some((settings, at)) = &last {
            if now.duration_since(*at) < READ_EVERY {
                return settings.clone();
            }
        }
        let settings = match store.get(&key(queue)).await {
            Ok(Some(v)) => serde_json::from_slice::<Stored>(&v.value)
                .map(QueueSettings::from)
                .unwrap_or_default(),
            Ok(None) => QueueSettings::default(),
            Err(_) => last.map(|(s, _)| s).unwrap_or_default(),
        };
        self.read
            .lock()
            .unwrap()
            .insert(queue.to_owned(), (settings.clone(), now));
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_stored_form() {
        let s = QueueSettings {
            limiter: Some(Limiter {
                max: 10,
                duration: Duration::from_secs(60),
            }),
            concurrency: Some(4),
        };
        let text = serde_json::to_string(&Stored::from(&s)).unwrap();
        assert_eq!(text, r#"{"rate_max":10,"rate_ms":60000,"concurrency":4}"#);
        let back: Stored = serde_json::from_str(&text).unwrap();
        assert_eq!(QueueSettings::from(back), s);
        // No limits; and a nonsense stored value means none either.
        assert_eq!(
            serde_json::to_string(&Stored::from(&QueueSettings::default())).unwrap(),
            "{}"
        );
        let zero: Stored =
            serde_json::from_str(r#"{"rate_max":0,"rate_ms":5,"concurrency":0}"#).unwrap();
        assert_eq!(QueueSettings::from(zero), QueueSettings::default());
    }
}
