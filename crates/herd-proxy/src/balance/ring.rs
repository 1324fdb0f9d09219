//! Consistent hashing with bounded loads (Mirrokni et al.; HAProxy `hash-type consistent` with
//! `hash-balance-factor`).
//!
//! A ring of 160 virtual nodes per instance (ketama's count): with ~10 % load spread at 100
//! vnodes and the bounded-load cap absorbing what is left, more points buy little. A ring rather
//! than Maglev or rendezvous because the bounded-load overflow needs an order to walk ("the next
//! instance clockwise"), which a ring gives for free and keeps stable as instances come and go;
//! rendezvous would cost O(n) hashes per request. The ring is built when the set of instances
//! changes, never per request.
//!
//! Points are hashed from the instance's stable id (`web-3`), so a replacement of the same slot
//! takes over its keys, and with SipHash-2-4 under fixed keys, so every herd process (and every
//! restart) maps a key to the same instance.

use std::hash::Hasher as _;

use super::Candidate;

/// Virtual nodes per instance.
pub(crate) const VNODES: u32 = 160;

/// A stable 64-bit hash of `bytes` (SipHash-2-4 with fixed keys).
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    // `SipHasher` is deprecated only in favour of the randomly keyed `DefaultHasher`; its
    // algorithm is fixed (SipHash-2-4), which is what a ring shared across processes needs.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6865_7264_5f72_696e, 0x675f_7631_0000_0000);
    h.write(bytes);
    h.finish()
}

fn vnode_hash(id: &str, vnode: u32) -> u64 {
    let mut buf = Vec::with_capacity(id.len() + 5);
    buf.extend_from_slice(id.as_bytes());
    buf.push(b'#');
    buf.extend_from_slice(&vnode.to_le_bytes());
    hash(&buf)
}

/// The ring: points sorted by hash, each naming an index into the instance list it was built from.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring over instances identified by `ids` (index order = instance order).
    pub(crate) fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Ring {
        let mut points = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            points.extend((0..VNODES).map(|v| (vnode_hash(id, v), i)));
        }
        // Ties (astronomically rare) resolve by index so the order is deterministic.
        points.sort_unstable();
        Ring { points }
    }

    /// The instance for `key`: the first one clockwise from the key's point that is not skipped
    /// and has fewer than `ceil(factor / 100 × (in-flight over unskipped instances + 1) / n)`
    /// requests in flight. `factor` 0 means no cap. `n` is the number of instances.
    pub(crate) fn pick(
        &self,
        key: u64,
        n: usize,
        factor: u32,
        candidate: impl Fn(usize) -> Candidate,
    ) -> Option<usize> {
        if self.points.is_empty() || n == 0 {
            return None;
        }
        let cap = if factor == 0 {
            usize::MAX
        } else {
            let (mut eligible, mut total) = (0usize, 0usize);
            for i in 0..n {
                let c = candidate(i);
                if !c.skip {
                    eligible += 1;
                    total += c.in_flight;
                }
            }
            if eligible == 0 {
                return None;
            }
            bounded_cap(factor, total, eligible)
        };
        let start = self.points.partition_point(|(h, _)| *h < key);
        let len = self.points.len();
        let mut fallback = None;
        for k in 0..len {
            let i = self.points[(start + k) % len].1 as usize;
            if i >= n {
                continue;
            }
            let c = candidate(i);
            if c.skip {
                continue;
            }
            if c.in_flight < cap {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        // Only reachable when loads moved under us between the two passes.
        fallback
    }
}

/// `ceil(factor / 100 × (total + 1) / eligible)`: the most requests one instance may hold once
/// this one is placed (the `+ 1`), HAProxy's and the paper's cap.
pub(crate) fn bounded_cap(factor: u32, total: usize, eligible: usize) -> usize {
    let num = u128::from(factor) * (total as u128 + 1);
    let den = 100 * eligible as u128;
    usize::try_from(num.div_ceil(den))
        .unwrap_or(usize::MAX)
        .max(1)
}
