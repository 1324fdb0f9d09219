//! Smooth weighted round robin, as nginx's `ngx_http_upstream_get_peer`.
//!
//! Each step adds every peer's weight to its current weight, picks the peer with the largest
//! current weight (first on ties) and subtracts the total from it. Weights {5, 1, 1} give
//! `a a b a c a a`: heavy peers are interleaved with light ones instead of sent bursts.
//! The sequence repeats every `sum(weights)` steps, so the gateway computes one period when the
//! set changes and indexes it with its rotating counter: no lock and no per-request state.

/// The longest schedule built; larger weight sums are scaled down first.
const MAX_PERIOD: u64 = 1 << 16;

/// One step of the algorithm over `current` (the running weights), returning the chosen index.
/// `None` when every weight is zero.
pub(crate) fn step(current: &mut [i64], weights: &[u32]) -> Option<usize> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut best: Option<usize> = None;
    for (i, w) in weights.iter().enumerate() {
        if *w == 0 {
            continue;
        }
        current[i] += i64::from(*w);
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

/// One full period of the smooth weighted sequence (length = sum of weights, scaled down so it
/// stays under 65536 entries).
pub(crate) fn schedule(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let scaled: Vec<u32>;
    let weights = if total > MAX_PERIOD {
        let div = total.div_ceil(MAX_PERIOD);
        scaled = weights
            .iter()
            .map(|w| match *w {
                0 => 0,
                w => u32::try_from(u64::from(w) / div).unwrap_or(u32::MAX).max(1),
            })
            .collect();
        &scaled[..]
    } else {
        weights
    };
    let mut current = vec![0i64; weights.len()];
    let period: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    (0..period)
        .filter_map(|_| step(&mut current, weights))
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nginx_example() {
        let got: String = schedule(&[5, 1, 1])
            .into_iter()
            .map(|i| char::from(b'a' + u8::try_from(i).unwrap()))
            .collect();
        assert_eq!(got, "aabacaa");
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(schedule(&[1, 1, 1, 1]), vec![0, 1, 2, 3]);
        assert!(schedule(&[]).is_empty());
        assert_eq!(schedule(&[0, 2]), vec![1, 1]);
    }

    proptest! {
        /// Over one period every peer is chosen exactly `weight` times, and smoothly: no run of
        /// one peer is longer than ceil(w / (total - w)) + 1.
        #[test]
        fn period_counts_are_exact(weights in proptest::collection::vec(0u32..8, 1..8)) {
            let s = schedule(&weights);
            let total: u32 = weights.iter().sum();
            prop_assert_eq!(s.len(), total as usize);
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(s.iter().filter(|x| **x as usize == i).count(), *w as usize);
            }
            for (i, w) in weights.iter().enumerate() {
                let others = total - w;
                if others == 0 { continue; }
                let max_run = w.div_ceil(others) as usize + 1;
                let mut run = 0;
                for x in &s {
                    run = if *x as usize == i { run + 1 } else { 0 };
                    prop_assert!(run <= max_run, "{:?}: run of {} for {}", s, run, i);
                }
            }
        }
    }
}
