//! Instance selection. Pure: takes the candidates' observations, a rotation counter, a random
//! word and the request's hash, does no I/O and reads no clock.
//!
//! - round robin: one period of nginx's smooth weighted round robin ([`swrr`]), precomputed
//!   when the set changes and indexed by the counter (all weights 1 until servers get weights).
//! - least connections: fewest in flight per weight, ties by the round robin's turns.
//! - `random_two`: power of two choices on in-flight; `peak_ewma`: the same on latency EWMA ×
//!   (in-flight + 1) ([`ewma`]).
//! - `ip_hash` / `hash`: consistent hashing with bounded loads ([`ring`], keys from [`key`]).
//! - `first`: the first instance in order that is not skipped.
//!
//! Server weights (scaled by [`slowstart::SCALE`], ramped by slow start) weigh every algorithm
//! but the hashing ones and `first`: round robin through the precomputed schedule (a weighted
//! random draw while some instance ramps up), least connections on in-flight / weight (ties by
//! the weighted turns), P2C on cost / weight with draws in proportion to weight. Backups and `max_conn` are decided by the caller through `skip`.

use herd_config::Balance;

pub(crate) mod ewma;
pub(crate) mod key;
pub(crate) mod ring;
pub(crate) mod slowstart;
pub(crate) mod swrr;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod weight_tests;

/// What the balancer needs to know about one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) in_flight: usize,
    /// Passively marked down (recent failures) or already tried for this request.
    pub(crate) skip: bool,
    /// Peak EWMA latency in microseconds (read only by `peak_ewma`).
    pub(crate) latency_us: f64,
}

/// Per-request inputs besides the candidates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    /// A counter the caller increments per request.
    pub(crate) rr: u64,
    /// A random word from the caller's seeded generator.
    pub(crate) rand: u64,
    /// The request's hash for `ip_hash`/`hash`; `None` falls back to round robin.
    pub(crate) key: Option<u64>,
    /// One smooth weighted round robin period over the set.
    pub(crate) schedule: &'a [u32],
    /// The consistent-hash ring over the set.
    pub(crate) ring: &'a ring::Ring,
    /// `hash_balance_factor` (0 = unbounded).
    pub(crate) factor: u32,
    /// Effective weight per candidate in `1/SCALE` units; empty = all equal.
    pub(crate) weights: &'a [u32],
    /// Some instance is in slow start: the schedule's static weights do not hold.
    pub(crate) ramping: bool,
}

impl Inputs<'_> {
    fn weight(&self, i: usize) -> u64 {
        self.weights.get(i).map_or(1, |&w| u64::from(w))
    }
}

/// Picks an index among `n` candidates, or `None` when all are skipped.
pub(crate) fn pick(
    algo: Balance,
    n: usize,
    input: &Inputs<'_>,
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    match (algo, input.key) {
        (Balance::RoundRobin, _) | (Balance::IpHash | Balance::Hash, None) => {
            if input.ramping {
                weighted_random(n, input, candidate)
            } else {
                round_robin(n, input.rr, input.schedule, candidate)
            }
        }
        (Balance::LeastConn, _) => least_conn(n, input, candidate),
        (Balance::RandomTwo, _) => p2c(n, input, candidate, |c| {
            // Exact for any realistic count (< 2^53).
            #[allow(clippy::cast_precision_loss)]
            let load = c.in_flight as f64;
            load
        }),
        (Balance::PeakEwma, _) => p2c(n, input, candidate, peak_cost),
        // A `weight = 0` server takes no balanced traffic (HAProxy), by key or by order
        // either, while another can serve: on the ring only its own keys move elsewhere.
        // (A slow start's ramp keeps a 0 at 0 and any other weight above it.)
        (Balance::IpHash | Balance::Hash, Some(key)) => {
            let zero = |i: usize| input.weight(i) == 0;
            let others = (0..n).any(|i| !zero(i) && !candidate(i).skip);
            input.ring.pick(key, n, input.factor, |i| {
                let mut c = candidate(i);
                c.skip |= others && zero(i);
                c
            })
        }
        (Balance::First, _) => (0..n)
            .find(|&i| !candidate(i).skip && input.weight(i) > 0)
            .or_else(|| (0..n).find(|&i| !candidate(i).skip)),
    }
}

/// linkerd's cost: latency × (in-flight + 1). The microsecond added keeps in-flight counting
/// once an idle instance's estimate has decayed to zero.
pub(crate) fn peak_cost(c: &Candidate) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let pending = c.in_flight as f64 + 1.0;
    (c.latency_us + 1.0) * pending
}

fn round_robin(
    n: usize,
    rr: u64,
    schedule: &[u32],
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    if schedule.is_empty() {
        let m = (0..n).filter(|&i| !candidate(i).skip).count();
        let k = usize::try_from(rr % m.max(1) as u64).unwrap_or(0);
        return (0..n).filter(|&i| !candidate(i).skip).nth(k);
    }
    let len = schedule.len();
    let start = usize::try_from(rr % len as u64).unwrap_or(0);
    let first = schedule[start] as usize;
    if first < n && !candidate(first).skip {
        return Some(first);
    }
    // Its turn is skipped (down, full, circuit open, a backup): the turn goes to one of the
    // others by the same rotation, not to the next in the period, which would take twice its
    // share (a skipped instance's neighbour got 30 of 40 requests). Candidates are judged
    // once each (not once per entry of the period), and nothing is allocated.
    let open = |i: usize| i < n && !candidate(i).skip;
    let mut judged: [Option<bool>; 64] = [None; 64];
    let mut is_open = |i: usize| match judged.get_mut(i) {
        Some(slot) => *slot.get_or_insert_with(|| open(i)),
        None => open(i),
    };
    let m = schedule.iter().filter(|&&i| is_open(i as usize)).count();
    if m > 0 {
        let k = usize::try_from(rr % m as u64).unwrap_or(0);
        return schedule
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| is_open(i))
            .nth(k);
    }
    // A weight-0 instance appears in no period; it still serves when nothing else can.
    (0..n).find(|&i| !candidate(i).skip)
}

/// A draw proportional to the effective weights of the candidates not skipped (weight 0 only
/// when nothing else is left).
fn weighted_random(
    n: usize,
    input: &Inputs<'_>,
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    let open: Vec<usize> = (0..n).filter(|&i| !candidate(i).skip).collect();
    let total: u64 = open.iter().map(|&i| input.weight(i)).sum();
    if total == 0 {
        return open.first().copied();
    }
    let mut x = input.rand % total;
    for &i in &open {
        let w = input.weight(i);
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    open.last().copied()
}

/// Fewest in flight relative to weight: in-flight ÷ weight (nginx's rule), compared by cross
/// multiplication. The instances tied at the lowest take turns by the smooth weighted round
/// robin (a weighted draw while some instance ramps up), so at low load, when all are idle,
/// the weights hold as under `round_robin`. Weight 0 serves only when nothing else can.
fn least_conn(
    n: usize,
    input: &Inputs<'_>,
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    // One look at each candidate: in-flight counts move under our feet, and the tie-break
    // below must see the same ones as the scan. The first 64 are remembered in a bitmask;
    // past that (a set that large is rare) the tie-break reads them again.
    let mut best: Option<(usize, u64, u64)> = None;
    let mut fallback = None;
    let mut tied: u64 = 0;
    for i in 0..n {
        let c = candidate(i);
        if c.skip {
            continue;
        }
        fallback.get_or_insert(i);
        let w = input.weight(i);
        if w == 0 {
            continue;
        }
        let load = c.in_flight as u64;
        let order = best.map(|(_, bl, bw)| {
            (u128::from(load) * u128::from(bw)).cmp(&(u128::from(bl) * u128::from(w)))
        });
        match order {
            None | Some(std::cmp::Ordering::Less) => {
                best = Some((i, load, w));
                tied = 0;
            }
            Some(std::cmp::Ordering::Equal) => {}
            Some(std::cmp::Ordering::Greater) => continue,
        }
        if i < 64 {
            tied |= 1 << i;
        }
    }
    let Some((first, bl, bw)) = best else {
        return fallback;
    };
    let is_tied = |i: usize| {
        if i < 64 {
            return tied & (1 << i) != 0;
        }
        let c = candidate(i);
        let w = input.weight(i);
        !c.skip
            && w > 0
            && u128::from(c.in_flight as u64) * u128::from(bw) == u128::from(bl) * u128::from(w)
    };
    let tie = |i: usize| Candidate {
        in_flight: 0,
        skip: !is_tied(i),
        latency_us: 0.0,
    };
    let turn = if input.ramping {
        weighted_random(n, input, tie)
    } else {
        round_robin(n, input.rr, input.schedule, tie)
    };
    turn.or(Some(first))
}

/// The two distinct draws (positions among `m >= 2` eligible candidates) that `rand` makes:
/// the high half picks the first, the low half the second among the other `m - 1`.
pub(crate) fn draws(rand: u64, m: usize) -> (usize, usize) {
    // Lemire's multiply-shift reduction: unbiased enough for m far below 2^32, no division.
    let reduce = |x: u64, m: usize| usize::try_from((x * m as u64) >> 32).unwrap_or(0);
    let a = reduce(rand >> 32, m);
    let mut b = reduce(rand & 0xffff_ffff, m - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

/// Power of two choices: two distinct random candidates among those not skipped; the lower
/// cost wins, the first draw on ties. With weights, each draw is in proportion to weight (so
/// at low load, when costs tie, the weights still hold) and a weight-0 candidate is drawn
/// only when no other can serve.
fn p2c(
    n: usize,
    input: &Inputs<'_>,
    candidate: impl Fn(usize) -> Candidate,
    cost: impl Fn(&Candidate) -> f64,
) -> Option<usize> {
    #[allow(clippy::cast_precision_loss)]
    let cost = |i: usize| cost(&candidate(i)) / (input.weight(i).max(1) as f64);
    let rand = input.rand;
    let open = |i: usize| !candidate(i).skip;
    let total: u64 = if input.weights.is_empty() {
        0
    } else {
        (0..n).filter(|&i| open(i)).map(|i| input.weight(i)).sum()
    };
    if total > 0 {
        // The `x`-th unit of weight among the open candidates other than `not`.
        let nth_unit = |mut x: u64, not: Option<usize>| {
            (0..n).filter(|&i| Some(i) != not && open(i)).find(|&i| {
                let w = input.weight(i);
                if x < w {
                    return true;
                }
                x -= w;
                false
            })
        };
        let a = nth_unit((rand >> 32) % total, None)?;
        let rest = total - input.weight(a);
        if rest == 0 {
            return Some(a);
        }
        let Some(b) = nth_unit((rand & 0xffff_ffff) % rest, Some(a)) else {
            return Some(a);
        };
        return Some(if cost(b) < cost(a) { b } else { a });
    }
    let m = (0..n).filter(|&i| open(i)).count();
    let nth = |k: usize| (0..n).filter(|&i| open(i)).nth(k);
    match m {
        0 => None,
        1 => nth(0),
        _ => {
            let (a, b) = draws(rand, m);
            let (a, b) = (nth(a)?, nth(b)?);
            if cost(b) < cost(a) {
                Some(b)
            } else {
                Some(a)
            }
        }
    }
}
