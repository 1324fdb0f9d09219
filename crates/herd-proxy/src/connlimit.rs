//! `[gateway] max_conn_per_ip` (nginx `limit_conn`): open client connections per client IP.
//! A connection over the limit is still read, and each of its requests is answered 503 with
//! `Connection: close` (nginx's `limit_conn_status` default), so clients see why.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per client IP; entries go when their count drops to zero.
#[derive(Debug, Default)]
pub(crate) struct ConnCounts {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// Counts one connection until dropped.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    counts: Arc<ConnCounts>,
    ip: IpAddr,
}

impl ConnCounts {
    /// Counts a new connection from `ip`, or `None` if `max` are already open.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ConnGuard> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_releases() {
        let c = Arc::new(ConnCounts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = c.try_acquire(a, 2).unwrap();
        let g2 = c.try_acquire(a, 2).unwrap();
        assert!(c.try_acquire(a, 2).is_none());
        assert!(c.try_acquire(b, 2).is_some());
        drop(g1);
        assert!(c.try_acquire(a, 2).is_some());
        drop(g2);
        assert!(
            c.open.lock().unwrap().is_empty(),
            "released entries are removed"
        );
    }
}
