//! Requests the gateway holds for an app with no instance in rotation (scale from zero), and the
//! two signals around them: "someone is waiting" (to the supervisor) and "instances arrived"
//! (to the waiting requests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Demand {
    held: AtomicUsize,
    /// Requests waiting for a new app's first instance (not demand: never seen by the
    /// autoscaler, which would scale on them).
    first: AtomicUsize,
    /// Requests waiting for a server under its `max_conn` (the gateway's queue keeps it).
    queued: AtomicUsize,
    wake: Notify,
    arrived: Notify,
}

/// Why a held request gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldError {
    /// `queue` requests are already waiting.
    QueueFull,
    /// No instance became ready within the hold timeout.
    TimedOut,
    /// [`Demand::wait_first`]: its `queue` requests already wait.
    FirstQueueFull,
    /// [`Demand::wait_first`]: no instance within its timeout.
    FirstTimedOut,
}

impl std::fmt::Display for HoldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HoldError::QueueFull => "hold_queue requests already wait for one",
            HoldError::TimedOut => "none became ready within hold_timeout",
            HoldError::FirstQueueFull => "1000 requests already wait for its first instance",
            HoldError::FirstTimedOut => {
                "its first instance was not ready within ready_timeout of the app's start"
            }
        })
    }
}

impl Demand {
    /// Requests currently held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Requests waiting in the gateway's `max_conn` queue: demand the instances cannot take.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Set by the gateway's `max_conn` queue whenever its length changes.
    pub fn set_queued(&self, n: usize) {
        self.queued.store(n, Ordering::Release);
    }

    /// Resolves when a request starts waiting (the supervisor reacts at once instead of at its
    /// next tick). Cancel-safe.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Called by the gateway when instances enter rotation.
    pub fn instances_arrived(&self) {
        self.arrived.notify_waiters();
    }

    /// Holds one request until `ready()` is true (checked after every arrival), at most
    /// `timeout`, with at most `queue` requests waiting at once.
    ///
    /// # Errors
    /// [`HoldError::QueueFull`] or [`HoldError::TimedOut`].
    pub async fn hold(
        &self,
        timeout: Duration,
        queue: usize,
        ready: impl Fn() -> bool,
    ) -> Result<(), HoldError> {
        // Counted until the hold ends, however it ends: a client that gives up drops this
        // future mid-wait, and a count left behind would read as demand (and fill the queue)
        // for good.
        struct Held<'a>(&'a AtomicUsize);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let held = Held(&self.held);
        if self.held.fetch_add(1, Ordering::AcqRel) >= queue {
            return Err(HoldError::QueueFull);
        }
        self.wake.notify_one();
        let waited = self.until_ready(timeout, ready).await;
        drop(held);
        waited.map_err(|()| HoldError::TimedOut)
    }

    /// Holds one request until `ready()` as [`Demand::hold`] does, for an app whose first
    /// instance is starting anyway (herd's start, a reload that added the app): not counted as
    /// demand, and the autoscaler is not woken.
    ///
    /// # Errors
    /// [`HoldError::FirstQueueFull`] or [`HoldError::FirstTimedOut`].
    pub async fn wait_first(
        &self,
        timeout: Duration,
        queue: usize,
        ready: impl Fn() -> bool,
    ) -> Result<(), HoldError> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.first);
        if self.first.fetch_add(1, Ordering::AcqRel) >= queue {
            return Err(HoldError::FirstQueueFull);
        }
        let waited = self.until_ready(timeout, ready).await;
        drop(waiting);
        waited.map_err(|()| HoldError::FirstTimedOut)
    }

    async fn until_ready(&self, timeout: Duration, ready: impl Fn() -> bool) -> Result<(), ()> {
        tokio::time::timeout(timeout, async {
            loop {
                let arrived = self.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if ready() {
                    return;
                }
                arrived.await;
            }
        })
        .await
        .map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn held_requests_resume_on_arrival_or_time_out() {
        let d = Arc::new(Demand::default());
        let up = Arc::new(AtomicBool::new(false));
        let (d2, up2) = (Arc::clone(&d), Arc::clone(&up));
        let waiter = tokio::spawn(async move {
            d2.hold(Duration::from_secs(10), 2, || up2.load(Ordering::Acquire))
                .await
        });
        d.woken().await;
        assert_eq!(d.held(), 1);
        up.store(true, Ordering::Release);
        d.instances_arrived();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(d.held(), 0);

        let never = d.hold(Duration::from_secs(1), 2, || false).await;
        assert_eq!(never, Err(HoldError::TimedOut));
        assert_eq!(
            d.hold(Duration::from_secs(1), 0, || true).await,
            Err(HoldError::QueueFull)
        );
        assert_eq!(d.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_given_up_by_its_client_is_no_longer_counted() {
        let d = Arc::new(Demand::default());
        let d2 = Arc::clone(&d);
        let waiter =
            tokio::spawn(async move { d2.hold(Duration::from_secs(30), 4, || false).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(d.held(), 1);
        // The client left: hyper drops the request's future mid-wait.
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(d.held(), 0, "a dropped hold still counts as demand");
    }
}
