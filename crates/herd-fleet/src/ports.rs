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
    /// Ports found taken by a process herd did not start, already warned about.
    warned: HashSet<u16>,
}

/// Whether herd cannot open a socket at all now (its descriptor table is full): then no port
/// looks free, though the range is not the problem.
pub(crate) fn out_of_descriptors() -> bool {
    match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
        Ok(_) => false,
        Err(e) => herd_core::local_exhaustion(&e),
    }
}

/// Whether an app could listen on port `p` now, the way servers do: on every address
/// (`0.0.0.0`, and `[::]` dual-stack as Node does where IPv6 is there), with `SO_REUSEADDR` as
/// Node, Go, Python's `http.server` and tokio set it (so a port whose last connections are in
/// `TIME_WAIT` after a stop is usable again at once, as it is for them).
fn bindable(p: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let try_bind = |domain: Domain, addr: std::net::SocketAddr| -> Option<bool> {
        let socket = Socket::new(domain, Type::STREAM, None).ok()?;
        let _ = socket.set_reuse_address(true);
        if domain == Domain::IPV6 {
            let _ = socket.set_only_v6(false);
        }
        Some(socket.bind(&addr.into()).is_ok())
    };
    let v4 = try_bind(Domain::IPV4, std::net::SocketAddr::from(([0, 0, 0, 0], p)));
    // No IPv6 on this host: the IPv4 answer is the whole answer.
    let v6 = try_bind(Domain::IPV6, std::net::SocketAddr::from(([0u16; 8], p)));
    v4.unwrap_or(false) && v6.unwrap_or(true)
}

impl Ports {
    pub(crate) fn new((first, last): (u16, u16)) -> Self {
        Ports {
            first,
            last,
            next: first,
            used: HashSet::new(),
            warned: HashSet::new(),
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
            if bindable(p) {
                self.used.insert(p);
                hold_global(p);
                return Some(p);
            }
            // Not one of herd's instances, yet something listens there: often what a herd
            // stopped with `kill -9` left (a grandchild outlives its group). Said once per port.
            if !out_of_descriptors() && self.warned.insert(p) {
                tracing::warn!(
                    port = p,
                    range = %format!("{}-{}", self.first, self.last),
                    "a port of port_range is taken by a process herd did not start (one left by an earlier herd stopped with kill -9?); skipping it. `ss -ltnp 'sport = :{p}'` shows which"
                );
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
    fn a_port_taken_on_another_address_is_skipped() {
        // An app of another kind listening on IPv6 only: an instance binding `::` (Node) or
        // `0.0.0.0` there would fail, though 127.0.0.1 looks free.
        let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 on this machine
        };
        let port = v6.local_addr().unwrap().port();
        let mut p = Ports::new((port, port));
        assert_eq!(p.take(), None);
        drop(v6);
        assert_eq!(p.take(), Some(port));
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
