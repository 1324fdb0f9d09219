//! In-process fan-out of pub/sub messages to [`Subscription`]s.
//!
//! Both backends deliver through a hub: the embedded store publishes straight into it, the Redis
//! backend's subscriber task feeds it from the server. A slow subscriber loses messages rather than
//! stalling everyone else (pub/sub is for invalidation hints, never for data that must arrive).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::Subscription;

/// How many undelivered messages one subscriber may have before new ones are dropped for it.
const SUBSCRIBER_BUFFER: usize = 1024;

#[derive(Default)]
pub(crate) struct Hub {
    channels: Mutex<HashMap<String, Vec<mpsc::Sender<Bytes>>>>,
}

impl Hub {
    /// A new subscription; the bool says whether this is the channel's first live subscriber
    /// (the Redis backend then has to SUBSCRIBE on the server).
    pub(crate) fn subscribe(&self, channel: &str) -> (Subscription, bool) {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut map = self.channels.lock().unwrap();
        let subs = map.entry(channel.to_owned()).or_default();
        subs.retain(|s| !s.is_closed());
        let first = subs.is_empty();
        subs.push(tx);
        (Subscription::new(rx), first)
    }

    /// Delivers `message` to the channel's live subscribers; returns how many got it.
    pub(crate) fn deliver(&self, channel: &str, message: &Bytes) -> usize {
        let mut map = self.channels.lock().unwrap();
        let Some(subs) = map.get_mut(channel) else {
            return 0;
        };
        subs.retain(|s| !s.is_closed());
        let mut delivered = 0;
        for s in subs.iter() {
            match s.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(channel, "subscriber is {SUBSCRIBER_BUFFER} messages behind; dropping a message for it");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if subs.is_empty() {
            map.remove(channel);
        }
        delivered
    }

    /// The channels that still have subscribers (to resubscribe after a reconnect).
    pub(crate) fn channels(&self) -> Vec<String> {
        let mut map = self.channels.lock().unwrap();
        map.retain(|_, subs| {
            subs.retain(|s| !s.is_closed());
            !subs.is_empty()
        });
        map.keys().cloned().collect()
    }

    /// Ends every subscription (store shutdown).
    pub(crate) fn close(&self) {
        self.channels.lock().unwrap().clear();
    }
}
