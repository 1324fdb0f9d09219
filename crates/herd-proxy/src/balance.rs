//! Instance selection. Pure: takes the candidates' observations and a rotation counter, does no I/O.

use herd_config::Balance;

/// What the balancer needs to know about one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) in_flight: usize,
    /// Passively marked down (recent failures) or already tried for this request.
    pub(crate) skip: bool,
}

/// Picks an index among `n` candidates, or `None` when all are skipped.
///
/// `rr` is a counter the caller increments per request: round robin starts its scan there, and
/// least connections uses it to rotate among ties so equal instances share load evenly.
pub(crate) fn pick(
    algo: Balance,
    n: usize,
    rr: u64,
    candidate: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = usize::try_from(rr % n as u64).unwrap_or(0);
    match algo {
        Balance::RoundRobin => (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| !candidate(i).skip),
        Balance::LeastConn => {
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                let c = candidate(i);
                if c.skip {
                    continue;
                }
                if best.is_none_or(|(_, load)| c.in_flight < load) {
                    best = Some((i, c.in_flight));
                }
            }
            best.map(|(i, _)| i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cands<'a>(loads: &'a [usize], skip: &'a [bool]) -> impl Fn(usize) -> Candidate + 'a {
        move |i| Candidate {
            in_flight: loads[i],
            skip: skip[i],
        }
    }

    #[test]
    fn round_robin_is_exact_over_a_stable_set() {
        let loads = [0; 3];
        let skip = [false; 3];
        let mut hits = [0; 3];
        for rr in 0..300 {
            hits[pick(Balance::RoundRobin, 3, rr, cands(&loads, &skip)).unwrap()] += 1;
        }
        assert_eq!(hits, [100, 100, 100]);
    }

    #[test]
    fn least_conn_prefers_the_idlest() {
        let loads = [5, 1, 3];
        let skip = [false; 3];
        for rr in 0..10 {
            assert_eq!(
                pick(Balance::LeastConn, 3, rr, cands(&loads, &skip)),
                Some(1)
            );
        }
    }

    #[test]
    fn least_conn_rotates_ties() {
        let loads = [2, 2, 2];
        let skip = [false; 3];
        let picked: Vec<_> = (0..3)
            .map(|rr| pick(Balance::LeastConn, 3, rr, cands(&loads, &skip)).unwrap())
            .collect();
        assert_eq!(picked, vec![0, 1, 2]);
    }

    proptest! {
        #[test]
        fn never_picks_a_skipped_candidate(
            loads in proptest::collection::vec(0usize..50, 1..12),
            skip_bits in any::<u16>(),
            rr in any::<u64>(),
            lc in any::<bool>(),
        ) {
            let n = loads.len();
            let skip: Vec<bool> = (0..n).map(|i| skip_bits & (1 << i) != 0).collect();
            let algo = if lc { Balance::LeastConn } else { Balance::RoundRobin };
            let got = pick(algo, n, rr, cands(&loads, &skip));
            match got {
                None => prop_assert!(skip.iter().all(|s| *s)),
                Some(i) => {
                    prop_assert!(!skip[i]);
                    if lc {
                        let min = (0..n).filter(|&j| !skip[j]).map(|j| loads[j]).min().unwrap();
                        prop_assert_eq!(loads[i], min);
                    }
                }
            }
        }

        #[test]
        fn round_robin_spreads_evenly(n in 1usize..10, rounds in 1u64..20) {
            let loads = vec![0; n];
            let skip = vec![false; n];
            let mut hits = vec![0u64; n];
            for rr in 0..(n as u64 * rounds) {
                hits[pick(Balance::RoundRobin, n, rr, cands(&loads, &skip)).unwrap()] += 1;
            }
            prop_assert!(hits.iter().all(|h| *h == rounds));
        }
    }
}
