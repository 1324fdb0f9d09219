//! Background removal of expired keys, so keys nobody reads again do not fill the file.
//!
//! Reads already treat expired keys as absent; the sweeper only reclaims space. It queues a
//! bounded `Sweep` op through the writer every second (more at once while a backlog remains).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ops::{Op, Reply};
use super::writer::Job;

const EVERY: Duration = Duration::from_secs(1);
const LIMIT: usize = 1000;

/// Spawns the sweeper; it stops when `cancel` fires or the writer is gone.
pub(super) fn spawn(tx: mpsc::Sender<Job>, cancel: CancellationToken) {
    let task = async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            loop {
                let (reply, rx) = oneshot::channel();
                if tx
                    .send(Job {
                        op: Op::Sweep { limit: LIMIT },
                        reply,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                match rx.await {
                    Ok(Ok(Reply::Count(n))) if n as usize == LIMIT && !cancel.is_cancelled() => {
                        continue
                    }
                    Ok(Ok(Reply::Count(n))) => {
                        if n > 0 {
                            tracing::debug!(removed = n, "swept expired keys");
                        }
                        break;
                    }
                    Ok(other) => {
                        tracing::warn!(result = ?other.err(), "failed to sweep expired keys; trying again later");
                        break;
                    }
                    Err(_) => return,
                }
            }
        }
    };
    tokio::spawn(task.instrument(tracing::info_span!("store_sweeper", backend = "embedded")));
}
