//! A bounded FIFO that drops its oldest item when full: a webhook that is down must neither
//! block the telemetry loop nor hold on to stale alerts forever.

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Bounded<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Bounded<T> {
    /// A queue of at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Bounded {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    /// Appends `item`; returns the oldest item if it had to go to make room.
    pub(crate) fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_oldest_when_full() {
        let mut q = Bounded::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.len(), 2);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), None));
        let mut zero = Bounded::new(0);
        assert_eq!(zero.push('a'), None);
        assert_eq!(zero.push('b'), Some('a'));
    }
}
