//! Property tests of the policies' building blocks.

use proptest::prelude::*;

use super::alias::AliasTable;
use super::maglev::MaglevTable;
use super::ring::{self, Ring};
use super::round_robin::{Stripes, smooth_schedule};
use super::{CandidateInfo, Loads, Policy, PolicyTable, distinct_pair, weighted_distinct_pair};

struct Flat;

impl Loads for Flat {
    fn peak_ewma_cost(&self, _: usize) -> f64 {
        1.0
    }
    fn in_flight(&self, _: usize) -> u32 {
        0
    }
    fn avoid(&self, _: usize) -> bool {
        false
    }
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("127.0.{}.{}:8080", i / 250, i % 250 + 1).into_bytes())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn p2c_pairs_are_distinct(len in 2usize..10_000, seed in any::<u64>()) {
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..64 {
            let (a, b) = distinct_pair(len, &mut rng);
            prop_assert!(a != b && a < len && b < len);
        }
    }

    #[test]
    fn weighted_p2c_pairs_are_distinct(
        weights in prop::collection::vec(0u32..1000, 2..64),
        seed in any::<u64>(),
    ) {
        prop_assume!(weights.iter().filter(|&&w| w > 0).count() >= 2);
        let alias = AliasTable::new(&weights).unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..64 {
            let (a, b) = weighted_distinct_pair(&alias, &mut rng);
            prop_assert_ne!(a, b);
            prop_assert!(weights[a] > 0, "the first of a pair is drawn by weight");
        }
    }

    #[test]
    fn round_robin_visits_each_once_per_cycle(len in 1usize..200, seed in any::<u64>()) {
        let stripes = Stripes::new(seed);
        let candidates: Vec<CandidateInfo<'_>> =
            (0..len).map(|_| CandidateInfo { weight: 100, hash_key: b"" }).collect();
        let table = PolicyTable::build(&Policy::round_robin(), &candidates, None).unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        // Any window of `len` consecutive picks on one thread is a permutation.
        let picks: Vec<usize> = (0..len * 3)
            .map(|_| table.pick(None, &mut rng, &stripes, &Flat, None))
            .collect();
        for window in picks.windows(len) {
            let mut seen = vec![false; len];
            for &pick in window {
                prop_assert!(!seen[pick]);
                seen[pick] = true;
            }
        }
    }

    #[test]
    fn smooth_wrr_distributes_exactly_by_weight(
        weights in prop::collection::vec(0u32..50, 1..20),
        seed in any::<u64>(),
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let schedule = smooth_schedule(&weights);
        let divisor = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        let mut counts = vec![0u32; weights.len()];
        for &entry in schedule.iter() {
            counts[entry as usize] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            prop_assert_eq!(counts[i], w / divisor, "cycle share of {}", i);
        }
        // Through the table, on one thread, any full cycle has the same counts.
        let candidates: Vec<CandidateInfo<'_>> = weights
            .iter()
            .filter(|&&w| w > 0)
            .map(|&weight| CandidateInfo { weight, hash_key: b"" })
            .collect();
        let positive: Vec<u32> = weights.iter().copied().filter(|&w| w > 0).collect();
        let table = PolicyTable::build(&Policy::weighted_round_robin(), &candidates, None).unwrap();
        let stripes = Stripes::new(seed);
        let mut rng = fastrand::Rng::with_seed(seed);
        let cycle: u32 = positive.iter().map(|w| w / divisor).sum();
        let mut counts = vec![0u32; positive.len()];
        for _ in 0..cycle {
            counts[table.pick(None, &mut rng, &stripes, &Flat, None)] += 1;
        }
        for (i, &w) in positive.iter().enumerate() {
            prop_assert_eq!(counts[i], w / divisor);
        }
    }

}

proptest! {
    // Each case builds two 65 537-entry tables; fewer cases keep the debug build quick.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn maglev_moves_about_one_nth_when_one_leaves(n in 5usize..60, gone in any::<prop::sample::Index>()) {
        let all = keys(n);
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let before = MaglevTable::new(&refs, &vec![1; n], 65_537).unwrap();
        let gone = gone.index(n);
        let rest: Vec<&[u8]> = refs.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, k)| *k).collect();
        let after = MaglevTable::new(&rest, &vec![1; n - 1], 65_537).unwrap();
        let (moved, lookups) = moved_share(|k| before.pick(k), |k| after.pick(k), n, gone);
        // Keys of the departed endpoint must move (1/n of them); Maglev moves a few more.
        let ideal = 1.0 / n as f64;
        prop_assert!(moved >= ideal * 0.8 && moved <= ideal * 2.0, "moved {moved} vs ideal {ideal} over {lookups}");
    }

    #[test]
    fn ring_moves_about_one_nth_when_one_leaves(n in 5usize..60, gone in any::<prop::sample::Index>()) {
        let all = keys(n);
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let points = ring::points_per_weight(n, 0.1, n as u64, ring::DEFAULT_MAX_RING_SIZE);
        let before = Ring::new(&refs, &vec![1; n], points).unwrap();
        let gone = gone.index(n);
        let rest: Vec<&[u8]> = refs.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, k)| *k).collect();
        let after = Ring::new(&rest, &vec![1; n - 1], points).unwrap();
        let (moved, _) = moved_share(|k| before.pick(k), |k| after.pick(k), n, gone);
        let ideal = 1.0 / n as f64;
        // A ring moves exactly the departed endpoint's keys.
        prop_assert!(moved >= ideal * 0.8 && moved <= ideal * 1.25, "moved {moved} vs ideal {ideal}");
    }
}

/// The share of sampled keys whose endpoint changed, mapping `after`'s positions back to the
/// original ones (positions after `gone` shift down by one).
fn moved_share(
    before: impl Fn(u64) -> usize,
    after: impl Fn(u64) -> usize,
    _n: usize,
    gone: usize,
) -> (f64, usize) {
    let lookups = 20_000;
    let mut rng = fastrand::Rng::with_seed(99);
    let mut moved = 0;
    for _ in 0..lookups {
        let key = rng.u64(..);
        let old = before(key);
        let mut new = after(key);
        if new >= gone {
            new += 1;
        }
        if old != new {
            moved += 1;
        }
    }
    (moved as f64 / lookups as f64, lookups)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
