//! Property tests of every algorithm against a simple model.

use std::collections::HashMap;

use herd_config::Balance;
use proptest::prelude::*;

use super::ring::{bounded_cap, Ring};
use super::*;

const ALL: [Balance; 7] = [
    Balance::RoundRobin,
    Balance::LeastConn,
    Balance::RandomTwo,
    Balance::PeakEwma,
    Balance::IpHash,
    Balance::Hash,
    Balance::First,
];

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("web-{i}")).collect()
}

fn ring_of(n: usize) -> Ring {
    let ids = ids(n);
    Ring::new(ids.iter().map(String::as_str))
}

/// SplitMix64, the same generator the gateway seeds per app.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct World {
    loads: Vec<usize>,
    skip: Vec<bool>,
    latency: Vec<f64>,
    schedule: Vec<u32>,
    ring: Ring,
}

impl World {
    fn new(loads: Vec<usize>, skip: Vec<bool>) -> World {
        let n = loads.len();
        World {
            latency: vec![1000.0; n],
            schedule: swrr::schedule(&vec![1; n]),
            ring: ring_of(n),
            loads,
            skip,
        }
    }

    fn cand(&self) -> impl Fn(usize) -> Candidate + '_ {
        move |i| Candidate {
            in_flight: self.loads[i],
            skip: self.skip[i],
            latency_us: self.latency[i],
        }
    }

    fn pick(
        &self,
        algo: Balance,
        rr: u64,
        rand: u64,
        key: Option<u64>,
        factor: u32,
    ) -> Option<usize> {
        let input = Inputs {
            rr,
            rand,
            key,
            schedule: &self.schedule,
            ring: &self.ring,
            factor,
            weights: &[],
            ramping: false,
        };
        pick(algo, self.loads.len(), &input, self.cand())
    }
}

#[test]
fn round_robin_is_exact_over_a_stable_set() {
    let w = World::new(vec![0; 3], vec![false; 3]);
    let mut hits = [0; 3];
    for rr in 0..300 {
        hits[w.pick(Balance::RoundRobin, rr, 0, None, 0).unwrap()] += 1;
    }
    assert_eq!(hits, [100, 100, 100]);
}

#[test]
fn a_skipped_instance_s_turns_are_shared_by_the_others() {
    // web-1 skipped (down, full, circuit open, or a backup while primaries serve): its turns
    // used to go to web-2, which took twice web-3's and web-4's share.
    for algo in [Balance::RoundRobin, Balance::LeastConn] {
        let w = World::new(vec![0; 4], vec![true, false, false, false]);
        let mut hits = [0u32; 4];
        for rr in 0..600 {
            hits[w.pick(algo, rr, 0, None, 0).unwrap()] += 1;
        }
        assert_eq!(hits[0], 0, "{algo:?}");
        for h in &hits[1..] {
            assert!((190..=210).contains(h), "{algo:?}: {hits:?}");
        }
    }
}

#[test]
fn a_weight_0_server_gets_no_hashed_or_first_traffic() {
    let w = World::new(vec![0; 3], vec![false; 3]);
    let weights = [0u32, 1, 1];
    let input = |key| Inputs {
        rr: 0,
        rand: 0,
        key,
        schedule: &w.schedule,
        ring: &w.ring,
        factor: 0,
        weights: &weights,
        ramping: false,
    };
    for key in 0..300u64 {
        let got = pick(Balance::Hash, 3, &input(Some(key)), w.cand()).unwrap();
        assert_ne!(got, 0, "key {key}");
    }
    assert_eq!(pick(Balance::First, 3, &input(None), w.cand()), Some(1));
    // Alone, it still serves.
    let only = World::new(vec![0; 3], vec![false, true, true]);
    let input = Inputs {
        rr: 0,
        rand: 0,
        key: Some(7),
        schedule: &only.schedule,
        ring: &only.ring,
        factor: 0,
        weights: &weights,
        ramping: false,
    };
    assert_eq!(pick(Balance::Hash, 3, &input, only.cand()), Some(0));
}

#[test]
fn least_conn_prefers_the_idlest_and_rotates_ties() {
    let w = World::new(vec![5, 1, 3], vec![false; 3]);
    for rr in 0..10 {
        assert_eq!(w.pick(Balance::LeastConn, rr, 0, None, 0), Some(1));
    }
    let w = World::new(vec![2, 2, 2], vec![false; 3]);
    let picked: Vec<_> = (0..3)
        .map(|rr| w.pick(Balance::LeastConn, rr, 0, None, 0).unwrap())
        .collect();
    assert_eq!(picked, vec![0, 1, 2]);
}

#[test]
fn hash_without_a_key_falls_back_to_round_robin() {
    let w = World::new(vec![0; 3], vec![false; 3]);
    let picked: Vec<_> = (0..6)
        .map(|rr| w.pick(Balance::Hash, rr, 0, None, 125).unwrap())
        .collect();
    assert_eq!(picked, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn random_two_spreads_within_statistical_bounds() {
    let n = 5;
    let w = World::new(vec![0; n], vec![false; n]);
    let mut state = 7;
    let draws = 50_000;
    let mut hits = vec![0u32; n];
    for _ in 0..draws {
        hits[w
            .pick(Balance::RandomTwo, 0, splitmix(&mut state), None, 0)
            .unwrap()] += 1;
    }
    // Binomial(50000, 1/5): sd ≈ 89; allow 6 sd.
    for h in hits {
        assert!((f64::from(h) - 10_000.0).abs() < 540.0, "{h}");
    }
}

#[test]
fn ip_hash_spreads_within_statistical_bounds() {
    let n = 4;
    let w = World::new(vec![0; n], vec![false; n]);
    let mut hits = vec![0u32; n];
    for a in 0..40_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + a);
        let key = key::ip_hash(ip.into());
        hits[w.pick(Balance::IpHash, 0, 0, Some(key), 0).unwrap()] += 1;
    }
    // 160 vnodes: each instance's arc is within about ±25 % of the mean.
    for h in hits {
        assert!((7_500..=12_500).contains(&h), "{h}");
    }
}

#[test]
fn peak_ewma_spreads_equal_instances_within_statistical_bounds() {
    // Equal latency and load: the P2C draw decides, as with random_two.
    let n = 5;
    let w = World::new(vec![0; n], vec![false; n]);
    let mut state = 11;
    let mut hits = vec![0u32; n];
    for _ in 0..50_000 {
        hits[w
            .pick(Balance::PeakEwma, 0, splitmix(&mut state), None, 0)
            .unwrap()] += 1;
    }
    // Binomial(50000, 1/5): sd ≈ 89; allow 6 sd.
    for h in hits {
        assert!((f64::from(h) - 10_000.0).abs() < 540.0, "{h}");
    }
}

#[test]
fn hash_by_header_cookie_query_and_path_spreads_within_statistical_bounds() {
    let n = 4;
    let w = World::new(vec![0; n], vec![false; n]);
    let keys = [
        herd_config::HashKey::Header("x-user".into()),
        herd_config::HashKey::Cookie("sid".into()),
        herd_config::HashKey::Query("user".into()),
        herd_config::HashKey::Path,
    ];
    for hk in &keys {
        let mut hits = vec![0u32; n];
        for i in 0..40_000u32 {
            let user = format!("user-{i}");
            let mut headers = http::HeaderMap::new();
            headers.insert("x-user", user.parse().unwrap());
            headers.insert(
                http::header::COOKIE,
                format!("a=1; sid={user}").parse().unwrap(),
            );
            let uri: http::Uri = format!("/u/{user}?lang=en&user={user}").parse().unwrap();
            let k = key::request_hash(hk, &headers, &uri).expect("the request carries the key");
            hits[w.pick(Balance::Hash, 0, 0, Some(k), 0).unwrap()] += 1;
        }
        // 160 vnodes per instance: each arc within about ±25 % of the mean.
        for h in &hits {
            assert!((7_500..=12_500).contains(h), "{hk:?}: {hits:?}");
        }
    }
}

#[test]
fn least_conn_spreads_concurrent_load_evenly() {
    // Requests arrive and finish at random; least_conn always sends the next one to an idlest
    // instance (ties rotate), so over time every instance gets its share.
    let n = 4;
    let mut w = World::new(vec![0; n], vec![false; n]);
    let mut state = 5;
    let mut hits = vec![0u32; n];
    let mut open: Vec<usize> = Vec::new();
    for rr in 0..40_000u64 {
        if !open.is_empty() && splitmix(&mut state).is_multiple_of(3) {
            let done = open
                .swap_remove(usize::try_from(splitmix(&mut state) % open.len() as u64).unwrap());
            w.loads[done] -= 1;
        }
        let i = w.pick(Balance::LeastConn, rr, 0, None, 0).unwrap();
        assert_eq!(
            w.loads[i],
            *w.loads.iter().min().unwrap(),
            "picks the idlest"
        );
        w.loads[i] += 1;
        open.push(i);
        hits[i] += 1;
    }
    for h in &hits {
        assert!((9_000..=11_000).contains(h), "{hits:?}");
    }
}

proptest! {
    #[test]
    fn never_picks_a_skipped_candidate(
        loads in proptest::collection::vec(0usize..50, 1..12),
        skip_bits in any::<u16>(),
        rr in any::<u64>(),
        rand in any::<u64>(),
        key in proptest::option::of(any::<u64>()),
        factor in prop_oneof![Just(0u32), 100u32..300],
    ) {
        let n = loads.len();
        let skip: Vec<bool> = (0..n).map(|i| skip_bits & (1 << i) != 0).collect();
        let w = World::new(loads.clone(), skip.clone());
        for algo in ALL {
            match w.pick(algo, rr, rand, key, factor) {
                None => prop_assert!(skip.iter().all(|s| *s), "{:?} found none", algo),
                Some(i) => {
                    prop_assert!(!skip[i], "{:?} picked skipped {}", algo, i);
                    if algo == Balance::LeastConn {
                        let min = (0..n).filter(|&j| !skip[j]).map(|j| loads[j]).min().unwrap();
                        prop_assert_eq!(loads[i], min);
                    }
                    if algo == Balance::First {
                        prop_assert!((0..i).all(|j| skip[j]), "first skipped over a free one");
                    }
                }
            }
        }
    }

    /// P2C against its model: list the unskipped, take the two draws, keep the lower cost.
    #[test]
    fn random_two_and_peak_ewma_pick_the_better_draw(
        loads in proptest::collection::vec(0usize..20, 2..10),
        latency in proptest::collection::vec(0.0f64..1e6, 10),
        skip_bits in any::<u16>(),
        rand in any::<u64>(),
    ) {
        let n = loads.len();
        let skip: Vec<bool> = (0..n).map(|i| skip_bits & (1 << i) != 0).collect();
        let mut w = World::new(loads.clone(), skip.clone());
        w.latency = latency[..n].to_vec();
        let free: Vec<usize> = (0..n).filter(|&i| !skip[i]).collect();
        prop_assume!(free.len() >= 2);
        let (a, b) = draws(rand, free.len());
        prop_assert_ne!(a, b);
        let (a, b) = (free[a], free[b]);
        let got = w.pick(Balance::RandomTwo, 0, rand, None, 0).unwrap();
        let want = if loads[b] < loads[a] { b } else { a };
        prop_assert_eq!(got, want);
        let cost = |i: usize| (w.latency[i] + 1.0) * (loads[i] as f64 + 1.0);
        let got = w.pick(Balance::PeakEwma, 0, rand, None, 0).unwrap();
        let want = if cost(b) < cost(a) { b } else { a };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn round_robin_spreads_exactly(n in 1usize..10, rounds in 1u64..20, offset in any::<u32>()) {
        let w = World::new(vec![0; n], vec![false; n]);
        let mut hits = vec![0u64; n];
        for rr in 0..(n as u64 * rounds) {
            hits[w.pick(Balance::RoundRobin, rr + u64::from(offset), 0, None, 0).unwrap()] += 1;
        }
        prop_assert!(hits.iter().all(|h| *h == rounds));
    }

    /// Only the removed instance's keys move; every other key keeps its instance.
    #[test]
    fn ring_moves_only_the_keys_of_a_removed_instance(
        n in 2usize..12,
        removed in any::<prop::sample::Index>(),
        keys in proptest::collection::vec(any::<u64>(), 1..200),
    ) {
        let all = ids(n);
        let r = removed.index(n);
        let rest: Vec<&str> = all.iter().enumerate().filter(|(i, _)| *i != r).map(|(_, s)| s.as_str()).collect();
        let before = Ring::new(all.iter().map(String::as_str));
        let after = Ring::new(rest.iter().copied());
        let free = |_| Candidate { in_flight: 0, skip: false, latency_us: 0.0 };
        for key in keys {
            let b = before.pick(key, n, 125, free).unwrap();
            let a = after.pick(key, n - 1, 125, free).unwrap();
            if b != r {
                prop_assert_eq!(all[b].as_str(), rest[a]);
            }
        }
    }

    /// Placing requests one by one (none finishing), no instance ever holds more than
    /// ceil(factor × mean) while others have room, and every key still finds an instance.
    #[test]
    fn bounded_load_cap_holds(
        n in 1usize..10,
        factor in 100u32..250,
        keys in proptest::collection::vec(0u64..16, 1..300),
        skip_bits in any::<u16>(),
    ) {
        let skip: Vec<bool> = (0..n).map(|i| skip_bits & (1 << i) != 0).collect();
        prop_assume!(skip.iter().any(|s| !s));
        let mut w = World::new(vec![0; n], skip.clone());
        // Few distinct keys: hot keys are what the cap is for.
        for k in keys {
            let key = super::ring::hash(&k.to_le_bytes());
            let eligible = skip.iter().filter(|s| !**s).count();
            let total: usize = (0..n).filter(|&i| !skip[i]).map(|i| w.loads[i]).sum();
            let cap = bounded_cap(factor, total, eligible);
            let i = w.pick(Balance::Hash, 0, 0, Some(key), factor).unwrap();
            prop_assert!(!skip[i]);
            w.loads[i] += 1;
            prop_assert!(w.loads[i] <= cap, "load {} over cap {}", w.loads[i], cap);
        }
    }

    /// With no cap, the same key always lands on the same instance whatever the loads.
    #[test]
    fn hash_is_sticky(loads in proptest::collection::vec(0usize..50, 1..10), key in any::<u64>()) {
        let n = loads.len();
        let w = World::new(loads, vec![false; n]);
        let idle = World::new(vec![0; n], vec![false; n]);
        prop_assert_eq!(
            w.pick(Balance::Hash, 1, 2, Some(key), 0),
            idle.pick(Balance::Hash, 3, 4, Some(key), 0)
        );
    }
}

#[test]
fn first_fills_in_order() {
    let mut w = World::new(vec![0; 4], vec![false; 4]);
    assert_eq!(w.pick(Balance::First, 5, 9, None, 0), Some(0));
    w.skip[0] = true;
    assert_eq!(w.pick(Balance::First, 5, 9, None, 0), Some(1));
    w.skip[1] = true;
    w.skip[2] = true;
    assert_eq!(w.pick(Balance::First, 5, 9, None, 0), Some(3));
}

#[test]
fn ring_is_the_same_in_every_process() {
    // Pinned mapping: changing the hash or vnode scheme remaps every user on upgrade.
    let ring = ring_of(3);
    let free = |_| Candidate {
        in_flight: 0,
        skip: false,
        latency_us: 0.0,
    };
    let got: HashMap<&str, usize> = ["alice", "bob", "carol", "dave"]
        .into_iter()
        .map(|u| {
            (
                u,
                ring.pick(super::ring::hash(u.as_bytes()), 3, 0, free)
                    .unwrap(),
            )
        })
        .collect();
    let again = ring_of(3);
    for (u, i) in &got {
        assert_eq!(
            again.pick(super::ring::hash(u.as_bytes()), 3, 0, free),
            Some(*i)
        );
    }
}
