//! Port allocation from an app's `port_range`.
//!
//! Ranges of different apps may overlap (two apps left at the default range share it): a
//! process-wide count of held ports keeps one app from taking a port another app's instance
//! holds but has not bound yet.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex, PoisonError};

/// Ports held by any app's instances in this process, with how many `Ports` hold each (a
/// reconfigured app's new range holds its instances' ports before the old range lets go).
static HELD: LazyLock<Mutex<HashMap<u16, u32>>> = LazyLock::new(Mutex::default);

fn held<R>(f: impl FnOnce(&mut HashMap<u16, u32>) -> R) -> R {
    f(&mut HELD.lock().unwrap_or_else(PoisonError::into_inner))
}

fn hold_global(port: u16) {
    held(|h| *h.entry(port).or_insert(0) += 1);
}

fn release_global(port: u16) {
    held(|h| {
        if let Some(n) = h.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                h.remove(&port);
            }
        }
    });
}

#[derive(Debug)]
pub(crate) struct Ports {
    first: u16,
    last: u16,
    next: u16,
    used: HashSet<u16>,
}

impl Ports {
    pub(crate) fn new((first, last): (u16, u16)) -> Self {
        Ports {
            first,
            last,
            next: first,
            used: HashSet::new(),
        }
    }

    /// A port of the range not held by another instance (of any app) and free to bind now.
    pub(crate) fn take(&mut self) -> Option<u16> {
        let size = u32::from(self.last - self.first) + 1;
        for _ in 0..size {
            let p = self.next;
            self.next = if p >= self.last { self.first } else { p + 1 };
            if self.used.contains(&p) || held(|h| h.contains_key(&p)) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                self.used.insert(p);
                hold_global(p);
                return Some(p);
            }
        }
        None
    }

    /// Whether [`Ports::take`] would find a port now (nothing stays taken).
    pub(crate) fn any_free(&mut self) -> bool {
        match self.take() {
            Some(p) => {
                self.release(p);
                true
            }
            None => false,
        }
    }

    /// Marks a port as held (by an instance that predates this range).
    pub(crate) fn hold(&mut self, port: u16) {
        if self.used.insert(port) {
            hold_global(port);
        }
    }

    pub(crate) fn release(&mut self, port: u16) {
        if self.used.remove(&port) {
            release_global(port);
        }
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        for p in self.used.drain() {
            release_global(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_held_and_busy_ports_and_wraps() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = busy.local_addr().unwrap().port();
        if b == u16::MAX {
            return;
        }
        let mut p = Ports::new((b, b + 1));
        let got = p.take();
        assert_ne!(got, Some(b));
        if let Some(port) = got {
            assert_eq!(p.take(), None);
            p.release(port);
            assert_eq!(p.take(), Some(port));
        }
    }

    #[test]
    fn overlapping_ranges_never_hand_out_the_same_port() {
        // A free port, then two "apps" over the same one-port range.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut a = Ports::new((port, port));
        let mut b = Ports::new((port, port));
        if a.take() != Some(port) {
            return; // taken by something else meanwhile
        }
        assert_eq!(b.take(), None, "held by the other app");
        // A reconfigured range holds the port before the old range is dropped.
        let mut a2 = Ports::new((port, port));
        a2.hold(port);
        drop(a);
        assert_eq!(b.take(), None, "still held by the new range");
        a2.release(port);
        assert_eq!(b.take(), Some(port));
    }
}
