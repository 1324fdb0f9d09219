//! Weights at low load: when every instance is idle the load-aware algorithms must still send
//! each its share (they used to send every sequential request to the heaviest).

use herd_config::Balance;

use super::ring::Ring;
use super::*;

fn shares(algo: Balance, weights: &[u32], loads: &[usize], rounds: u64) -> Vec<u64> {
    let n = weights.len();
    let schedule = swrr::schedule(weights);
    let ids: Vec<String> = (1..=n).map(|i| format!("web-{i}")).collect();
    let ring = Ring::new(ids.iter().map(String::as_str));
    let scaled: Vec<u32> = weights.iter().map(|w| w * slowstart::SCALE).collect();
    let mut hits = vec![0u64; n];
    let mut state = 7u64;
    for rr in 0..rounds {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let input = Inputs {
            rr,
            rand: state ^ (state >> 29),
            key: None,
            schedule: &schedule,
            ring: &ring,
            factor: 0,
            weights: &scaled,
            ramping: false,
        };
        let cand = |i: usize| Candidate {
            in_flight: loads[i],
            skip: false,
            latency_us: 1000.0,
        };
        hits[pick(algo, n, &input, cand).unwrap()] += 1;
    }
    hits
}

#[test]
fn idle_least_conn_follows_the_weights_exactly() {
    // nginx: in-flight ÷ weight, ties by the weighted round robin.
    assert_eq!(
        shares(Balance::LeastConn, &[3, 1], &[0, 0], 400),
        vec![300, 100]
    );
    assert_eq!(
        shares(Balance::LeastConn, &[5, 1, 1], &[0, 0, 0], 700),
        vec![500, 100, 100]
    );
}

#[test]
fn least_conn_compares_in_flight_per_weight() {
    // 2 in flight on weight 3 (0.67 each) beats 1 on weight 1.
    assert_eq!(
        shares(Balance::LeastConn, &[3, 1], &[2, 1], 10),
        vec![10, 0]
    );
    // 4 on weight 3 (1.33) loses to 1 on weight 1.
    assert_eq!(
        shares(Balance::LeastConn, &[3, 1], &[4, 1], 10),
        vec![0, 10]
    );
    // Tied per weight (3 on 3, 1 on 1): the weighted turns decide.
    assert_eq!(
        shares(Balance::LeastConn, &[3, 1], &[3, 1], 400),
        vec![300, 100]
    );
}

#[test]
fn idle_power_of_two_choices_follow_the_weights() {
    // Draws in proportion to weight, the first draw winning ties: 3/4 of the picks. (Under
    // `peak_ewma` the costs do not tie: latency ÷ weight decides, and an idle instance's
    // decaying estimate brings it back.)
    let hits = shares(Balance::RandomTwo, &[3, 1, 0], &[0, 0, 0], 20_000);
    let heavy = hits[0] as f64 / 20_000.0;
    assert!((0.72..=0.78).contains(&heavy), "{hits:?}");
    assert_eq!(hits[2], 0, "{hits:?}");
}

#[test]
fn weight_zero_is_never_drawn_beside_a_weighted_instance() {
    for algo in [
        Balance::LeastConn,
        Balance::RandomTwo,
        Balance::PeakEwma,
        Balance::RoundRobin,
    ] {
        let hits = shares(algo, &[0, 2, 1], &[0, 5, 5], 3_000);
        assert_eq!(hits[0], 0, "{algo:?}: {hits:?}");
    }
}
