//! The per-app queue in front of servers at their `max_conn` (HAProxy's backend queue with
//! `timeout queue`): a request that finds every eligible server full waits here, first in first
//! out, until a request on one of them ends; a full queue or `queue_timeout` answers 503.
//!
//! Event-driven: each ending request on the app's servers calls [`Release::released`], which
//! wakes the waiters (only when some wait: the request path pays one atomic load otherwise).
//! Only the waiter at the front tries to take the slot, so order is kept; [`Tickets`] is the
//! pure order book, tested against a model.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::{Demand, Release};
use tokio::sync::Notify;

/// The order of waiting requests by ticket number.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    next: u64,
    order: VecDeque<u64>,
}

impl Tickets {
    /// A ticket at the back, or `None` when `max` already wait.
    pub(crate) fn join(&mut self, max: usize) -> Option<u64> {
        if self.order.len() >= max {
            return None;
        }
        let t = self.next;
        self.next += 1;
        self.order.push_back(t);
        Some(t)
    }

    pub(crate) fn is_front(&self, t: u64) -> bool {
        self.order.front() == Some(&t)
    }

    /// Removes a ticket wherever it is (served, timed out or cancelled).
    pub(crate) fn leave(&mut self, t: u64) {
        if let Some(i) = self.order.iter().position(|&x| x == t) {
            self.order.remove(i);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// Why a queued request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    Full,
    Timeout,
}

#[derive(Debug)]
pub(crate) struct Queue {
    /// `queue` and `queue_timeout`: changed in place by a reload, so that the requests in
    /// flight (which release into this queue) and the ones waiting share one line.
    max: AtomicUsize,
    timeout_ms: AtomicU64,
    tickets: Mutex<Tickets>,
    waiting: AtomicUsize,
    wake: Notify,
    /// The app's demand: the queue's length feeds the autoscaler's `queue_depth`.
    demand: Arc<Demand>,
}

impl Queue {
    pub(crate) fn new(max: usize, timeout: Duration, demand: Arc<Demand>) -> Self {
        Queue {
            max: AtomicUsize::new(max),
            timeout_ms: AtomicU64::new(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            tickets: Mutex::new(Tickets::default()),
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
            demand,
        }
    }

    /// New limits (a reload); requests already in line keep their deadline.
    pub(crate) fn set_limits(&self, max: usize, timeout: Duration) {
        self.max.store(max, Ordering::Relaxed);
        self.timeout_ms.store(
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.wake();
    }

    /// `queue_timeout`.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Requests waiting now.
    pub(crate) fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Wakes the waiters (a slot freed or the set of servers changed).
    pub(crate) fn wake(&self) {
        if self.len() > 0 {
            self.wake.notify_waiters();
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Tickets) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while holding it; the book is still valid.
        let mut t = self
            .tickets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = f(&mut t);
        let len = t.len();
        if self.waiting.swap(len, Ordering::AcqRel) != len {
            self.demand.set_queued(len);
        }
        r
    }

    /// Waits in line until `take` yields (it is tried when this request is at the front and
    /// whenever a slot frees), at most `timeout`. `Ok(None)` when `take` says this request
    /// can never be served (nothing it may try): it leaves the line at once rather than
    /// holding the front.
    pub(crate) async fn wait<T>(
        &self,
        mut take: impl FnMut() -> Take<T>,
    ) -> Result<Option<T>, QueueError> {
        let max = self.max.load(Ordering::Relaxed);
        let ticket = self.with(|t| t.join(max)).ok_or(QueueError::Full)?;
        // Leaves the line however this future ends (served, timed out, client gone) and lets
        // the next one try.
        let _leave = Leave {
            queue: self,
            ticket,
        };
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.with(|t| t.is_front(ticket)) {
                match take() {
                    Take::Got(v) => return Ok(Some(v)),
                    Take::Never => return Ok(None),
                    Take::Wait => {}
                }
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return Err(QueueError::Timeout),
            }
        }
    }
}

/// What a waiter at the front of the line found.
pub(crate) enum Take<T> {
    Got(T),
    /// Every instance it may use is at its `max_conn`.
    Wait,
    /// Nothing it may use (none in rotation, or all tried already).
    Never,
}

struct Leave<'a> {
    queue: &'a Queue,
    ticket: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.queue.with(|t| t.leave(self.ticket));
        // The next in line may now take a free slot.
        self.queue.wake.notify_waiters();
    }
}

impl Release for Queue {
    fn released(&self) {
        self.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join,
        Leave(usize),
        ServeFront,
    }

    proptest! {
        /// Against a VecDeque model: joins go to the back, only the front is served, anyone may
        /// leave, and the bound holds.
        #[test]
        fn tickets_are_fifo(ops in proptest::collection::vec(prop_oneof![
            Just(Op::Join), (0usize..8).prop_map(Op::Leave), Just(Op::ServeFront)], 0..200),
            max in 1usize..6) {
            let mut book = Tickets::default();
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Join => {
                        let got = book.join(max);
                        if model.len() < max {
                            prop_assert_eq!(got, Some(next));
                            model.push_back(next);
                            next += 1;
                        } else {
                            prop_assert_eq!(got, None);
                        }
                    }
                    Op::Leave(i) => if let Some(&t) = model.get(i) {
                        book.leave(t);
                        model.remove(i);
                    },
                    Op::ServeFront => if let Some(&t) = model.front() {
                        for &other in model.iter().skip(1) {
                            prop_assert!(!book.is_front(other));
                        }
                        prop_assert!(book.is_front(t));
                        book.leave(t);
                        model.pop_front();
                    },
                }
                prop_assert_eq!(book.len(), model.len());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_and_time_out() {
        let demand = Arc::new(Demand::default());
        let q = Arc::new(Queue::new(2, Duration::from_secs(5), Arc::clone(&demand)));
        let slot = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (q, slot, served) = (Arc::clone(&q), Arc::clone(&slot), Arc::clone(&served));
            tasks.push(tokio::spawn(async move {
                let r = q
                    .wait(|| {
                        if slot.swap(false, Ordering::AcqRel) {
                            Take::Got(())
                        } else {
                            Take::Wait
                        }
                    })
                    .await;
                served.lock().unwrap().push(i);
                r
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(q.len(), 2);
        assert_eq!(demand.queued(), 2, "the autoscaler sees the queue");
        // The bound: a third request is refused at once.
        assert_eq!(q.wait(|| Take::Got(())).await, Err(QueueError::Full));
        for _ in 0..2 {
            slot.store(true, Ordering::Release);
            q.released();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(Some(())));
        }
        assert_eq!(*served.lock().unwrap(), vec![0, 1]);
        // No slot ever frees: `queue_timeout`.
        assert_eq!(q.wait(|| Take::<()>::Wait).await, Err(QueueError::Timeout));
        assert_eq!(q.len(), 0);
        // A reload's new limits apply to the same line.
        q.set_limits(0, Duration::from_secs(1));
        assert_eq!(q.wait(|| Take::Got(())).await, Err(QueueError::Full));
        assert_eq!(q.timeout(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_can_never_be_served_steps_aside() {
        let q = Arc::new(Queue::new(4, Duration::from_secs(5), Arc::default()));
        // The front waiter has tried every instance: it leaves at once, without its 5 s.
        let stuck = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.wait(|| Take::<()>::Never).await })
        };
        let next = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.wait(|| Take::Got(())).await })
        };
        let started = tokio::time::Instant::now();
        assert_eq!(stuck.await.unwrap(), Ok(None));
        assert_eq!(next.await.unwrap(), Ok(Some(())));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(q.len(), 0);
    }
}
