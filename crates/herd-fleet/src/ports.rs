//! Port allocation from an app's `port_range`.

use std::collections::HashSet;

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

    /// A port of the range not held by another instance and free to bind right now.
    pub(crate) fn take(&mut self) -> Option<u16> {
        let size = u32::from(self.last - self.first) + 1;
        for _ in 0..size {
            let p = self.next;
            self.next = if p >= self.last { self.first } else { p + 1 };
            if self.used.contains(&p) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                self.used.insert(p);
                return Some(p);
            }
        }
        None
    }

    /// Marks a port as held (by an instance that predates this range).
    pub(crate) fn hold(&mut self, port: u16) {
        self.used.insert(port);
    }

    pub(crate) fn release(&mut self, port: u16) {
        self.used.remove(&port);
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
}
