//! Maglev consistent hashing.
//!
//! From "Maglev: A Fast and Reliable Software Network Load Balancer" (Eisenbud et al., NSDI
//! 2016). Every endpoint derives a permutation of the `M` table slots from two hashes of its key
//! (`offset` and `skip`, with `M` prime so every skip generates a full permutation); endpoints then
//! take turns claiming their next preferred free slot until the table is full. A request's key
//! indexes the table directly, so a lookup is one load.
//!
//! Each endpoint ends up with `M / N` slots give or take one (max/mean load close to 1), and when
//! one of `N` endpoints leaves, about `1 / N` of the keys move, plus a small number of others
//! (the paper's "minimal disruption" is near, not at, the optimum).
//!
//! Weights are honoured as in Envoy's weighted Maglev: on each turn an endpoint claims a slot only
//! while its share so far is below its weight relative to the heaviest endpoint, so slot counts
//! are proportional to weights.
//!
//! # Table size
//!
//! With equal weights an endpoint owns `M / N` slots give or take one, so the busiest one carries
//! at most `1 + N / M` times the mean; the paper asks for `M > 100 × N`. Building costs about
//! `M · ln M` slot probes, so a table much larger than needed only makes every rebuild slower
//! (65 537 slots for 100 endpoints take about 4x the probes of 16 411 slots), and one smaller
//! than `100 × N` spreads the keys unevenly. The price of a smaller table is a little more
//! disruption: when one of 100 endpoints leaves, about 2.4% of the keys move with 16 411 slots
//! and 1.6% with 65 537, for the ideal 1% (`hash_quality` in the benchmarks).
//!
//! The balancer's default Maglev policy therefore sizes its table from the number of endpoints:
//! the smallest size of the ladder [`TABLE_SIZES`] with at least [`SLOTS_PER_ENDPOINT`] `× N`
//! slots ([`table_size_for`]). The ladder is the smallest prime above each power of two from
//! 2^10 to 2^24 (1 031 to 16 777 259); it contains 65 537 = 2^16 + 1, the size the paper uses.
//! Above 167 772 endpoints the table stays at [`MAX_TABLE_SIZE`] (64 MiB of entries) and the
//! spread degrades as `1 + N / M`.
//!
//! **When the size changes, the whole table is remapped**: the permutations of two different
//! sizes are unrelated, so nearly every key moves to another endpoint, not only `1 / N` of them.
//! To keep that rare, the size follows `N` with hysteresis ([`next_table_size`]): it grows to the
//! next step as soon as `N` needs it, and shrinks only when the step two below the current one
//! would suffice (`N ≤` about `M / 400`), straight to the size that `N` needs. A set that
//! oscillates across a step's boundary keeps its table size, and so its placement. (A balancer
//! left with no usable endpoint has no table; the next one starts from [`table_size_for`].) A
//! fixed size ([`Policy::maglev_with_table_size`](crate::Policy::maglev_with_table_size)) never
//! changes.

use xxhash_rust::xxh64::xxh64;

/// The table size the Maglev paper uses in production (65 537 = 2^16 + 1), one step of
/// [`TABLE_SIZES`]: the size the default policy picks for 328 to 655 endpoints.
pub const PAPER_TABLE_SIZE: u32 = 65_537;

/// The least number of table slots per endpoint the default policy sizes for: `M ≥ 100 × N`, the
/// Maglev paper's rule, keeps the busiest endpoint's share within about 1% of the mean
/// (`1 + N / M`).
pub const SLOTS_PER_ENDPOINT: u32 = 100;

/// The table sizes the default policy chooses from, ascending: the smallest prime above each
/// power of two from 2^10 to 2^24. Each step roughly doubles the table, so above 10 endpoints a
/// table has between 100 and about 200 slots per endpoint (up to about 400 while hysteresis keeps
/// a larger one).
pub const TABLE_SIZES: [u32; 15] = [
    1_031, 2_053, 4_099, 8_209, 16_411, 32_771, 65_537, 131_101, 262_147, 524_309, 1_048_583,
    2_097_169, 4_194_319, 8_388_617, 16_777_259,
];

/// The smallest table the default policy builds (1 031 slots, for up to 10 endpoints).
pub const MIN_TABLE_SIZE: u32 = TABLE_SIZES[0];

/// The largest table the default policy builds (16 777 259 slots, 64 MiB of entries, enough for
/// 167 772 endpoints at [`SLOTS_PER_ENDPOINT`]); larger sets share it.
pub const MAX_TABLE_SIZE: u32 = TABLE_SIZES[TABLE_SIZES.len() - 1];

/// The position in [`TABLE_SIZES`] of the smallest size with at least
/// [`SLOTS_PER_ENDPOINT`] slots for each of `n` endpoints; the last one when none has.
fn step_for(n: usize) -> usize {
    let wanted = (n as u64).saturating_mul(u64::from(SLOTS_PER_ENDPOINT));
    TABLE_SIZES
        .iter()
        .position(|&size| u64::from(size) >= wanted)
        .unwrap_or(TABLE_SIZES.len() - 1)
}

/// The table size for `n` endpoints without history: the smallest of [`TABLE_SIZES`] with at
/// least [`SLOTS_PER_ENDPOINT`] `× n` slots, or [`MAX_TABLE_SIZE`] when `n` is larger than that
/// allows. For example 16 411 for 100 endpoints, 131 101 for 1 000, 1 048 583 for 10 000.
pub fn table_size_for(n: usize) -> u32 {
    TABLE_SIZES[step_for(n)]
}

/// The table size for `n` endpoints when the current table has `previous` slots, with
/// hysteresis, as the balancer's default Maglev policy does on every rebuild:
///
/// - grows to [`table_size_for`]`(n)` as soon as that is larger than `previous`;
/// - keeps `previous` while `n` needs that step or the one just below it;
/// - shrinks to [`table_size_for`]`(n)` once that is two or more steps below `previous`
///   (at most about `previous / 400` endpoints);
/// - without a previous table, or when `previous` is not one of [`TABLE_SIZES`], returns
///   [`table_size_for`]`(n)`.
///
/// Every change of size remaps the whole table (see the [module docs](self)).
pub fn next_table_size(n: usize, previous: Option<u32>) -> u32 {
    let wanted = step_for(n);
    match previous.and_then(|size| TABLE_SIZES.iter().position(|&step| step == size)) {
        Some(current) if wanted <= current && wanted + 1 >= current => TABLE_SIZES[current],
        _ => TABLE_SIZES[wanted],
    }
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// A built Maglev lookup table over candidate positions `0..n`.
///
/// Entries are 16-bit while there are at most 65 536 candidates (half the memory, and half the
/// cache a lookup into a large table misses), 32-bit beyond.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    entries: Entries,
}

#[derive(Debug, Clone)]
enum Entries {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Entries {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Entries::Narrow(entries) => entries.len(),
            Entries::Wide(entries) => entries.len(),
        }
    }

    #[inline]
    fn get(&self, index: usize) -> usize {
        match self {
            Entries::Narrow(entries) => usize::from(entries[index]),
            Entries::Wide(entries) => entries[index] as usize,
        }
    }
}

impl MaglevTable {
    /// Builds a table of `size` entries (a prime) from each candidate's key bytes and weight.
    /// Returns `None` when no candidate has a weight above zero. Building is `O(size)` plus the
    /// collisions of the permutations, done off the request path.
    pub fn new(keys: &[&[u8]], weights: &[u32], size: u32) -> Option<Self> {
        debug_assert_eq!(keys.len(), weights.len());
        let m = u64::from(size);
        let max_weight = weights.iter().copied().max().unwrap_or(0);
        if max_weight == 0 || size == 0 {
            return None;
        }
        let n = keys.len();
        // Each endpoint's next preferred slot, `(offset + k * skip) % m` for its k-th try, kept
        // as a running position beside its skip: one add and one compare per try instead of a
        // division, and both in registers while the endpoint probes.
        let mut probes: Vec<(u64, u64)> = keys
            .iter()
            .map(|k| {
                let offset = xxh64(k, OFFSET_SEED) % m;
                let skip = xxh64(k, SKIP_SEED) % (m - 1).max(1) + 1;
                (offset, skip)
            })
            .collect();
        let mut claimed = vec![0u64; n];
        const EMPTY: u32 = u32::MAX;
        let mut entries = vec![EMPTY; size as usize];
        let mut filled = 0u64;
        let mut round = 0u64;
        while filled < m {
            round += 1;
            for (i, (probe, (&weight, claimed))) in probes
                .iter_mut()
                .zip(weights.iter().zip(claimed.iter_mut()))
                .enumerate()
            {
                // Weighted turns: claim only while below this endpoint's share of the rounds
                // (never for weight 0).
                if weight == 0 || *claimed * u64::from(max_weight) >= round * u64::from(weight) {
                    continue;
                }
                let (mut position, skip) = *probe;
                loop {
                    let slot = position as usize;
                    position += skip;
                    if position >= m {
                        position -= m;
                    }
                    if entries[slot] == EMPTY {
                        entries[slot] = i as u32;
                        break;
                    }
                }
                probe.0 = position;
                *claimed += 1;
                filled += 1;
                if filled == m {
                    break;
                }
            }
        }
        let entries = if n <= usize::from(u16::MAX) + 1 {
            // Every entry holds a position below n, so it fits.
            Entries::Narrow(entries.iter().map(|&entry| entry as u16).collect())
        } else {
            Entries::Wide(entries.into_boxed_slice())
        };
        Some(MaglevTable { entries })
    }

    /// The table size.
    pub fn size(&self) -> usize {
        self.entries.len()
    }

    /// The candidate position for a 64-bit key hash.
    #[inline]
    pub fn pick(&self, key: u64) -> usize {
        self.entries.get((key % self.entries.len() as u64) as usize)
    }

    /// The candidate `step` entries after the key's own, for walking on under bounded loads.
    #[inline]
    pub(crate) fn pick_after(&self, key: u64, step: u64) -> usize {
        let size = self.entries.len() as u64;
        self.entries.get(((key % size + step) % size) as usize)
    }

    /// How many entries each of `n` candidates owns: its share of the keys is its count over
    /// the table size.
    pub fn counts(&self, n: usize) -> Vec<u64> {
        let mut counts = vec![0u64; n];
        for index in 0..self.entries.len() {
            counts[self.entries.get(index)] += 1;
        }
        counts
    }
}

/// `true` when `n` is prime (trial division; table sizes are small).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256).into_bytes())
            .collect()
    }

    #[test]
    fn every_candidate_gets_its_share() {
        let keys = keys(10);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let table = MaglevTable::new(&refs, &[1; 10], 65_537).unwrap();
        let counts = table.counts(10);
        assert_eq!(counts.iter().sum::<u64>(), 65_537);
        for count in counts {
            assert!((6553..=6554).contains(&count), "{count}");
        }
    }

    #[test]
    fn weights_scale_shares() {
        let keys = keys(3);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let table = MaglevTable::new(&refs, &[1, 0, 3], 997).unwrap();
        let counts = table.counts(3);
        assert_eq!(counts[1], 0);
        assert!(
            (counts[2] as f64 / counts[0] as f64 - 3.0).abs() < 0.05,
            "{counts:?}"
        );
    }

    #[test]
    fn the_ladder_is_the_smallest_prime_above_each_power_of_two() {
        for (k, &size) in (10..=24).zip(TABLE_SIZES.iter()) {
            let power = 1u32 << k;
            assert!(is_prime(size), "{size}");
            assert!(size > power, "{size}");
            assert!((power + 1..size).all(|n| !is_prime(n)), "{size}");
        }
        assert_eq!(TABLE_SIZES.len(), 15);
        assert!(TABLE_SIZES.contains(&PAPER_TABLE_SIZE));
        assert_eq!((MIN_TABLE_SIZE, MAX_TABLE_SIZE), (1_031, 16_777_259));
    }

    #[test]
    fn sizes_step_exactly_where_n_needs_the_next_step() {
        assert_eq!(table_size_for(0), MIN_TABLE_SIZE);
        assert_eq!(table_size_for(1), MIN_TABLE_SIZE);
        for pair in TABLE_SIZES.windows(2) {
            // The largest N a step serves at 100 slots each, and one more.
            let last = (pair[0] / SLOTS_PER_ENDPOINT) as usize;
            assert_eq!(table_size_for(last), pair[0], "N = {last}");
            assert_eq!(table_size_for(last + 1), pair[1], "N = {}", last + 1);
        }
        assert_eq!(table_size_for(100), 16_411);
        assert_eq!(table_size_for(655), PAPER_TABLE_SIZE);
        assert_eq!(table_size_for(656), 131_101);
        assert_eq!(table_size_for(1_000), 131_101);
        assert_eq!(table_size_for(10_000), 1_048_583);
        assert_eq!(table_size_for(167_772), MAX_TABLE_SIZE);
        assert_eq!(table_size_for(167_773), MAX_TABLE_SIZE);
        assert_eq!(table_size_for(usize::MAX), MAX_TABLE_SIZE);
        for n in 1..=200_000 {
            let size = u64::from(table_size_for(n));
            assert!(
                size >= 100 * n as u64 || size == u64::from(MAX_TABLE_SIZE),
                "N = {n}"
            );
        }
    }

    #[test]
    fn sizes_grow_at_once_and_shrink_only_two_steps_down() {
        // Without history, or from a size off the ladder: the size N needs.
        assert_eq!(next_table_size(11, None), 2_053);
        assert_eq!(next_table_size(11, Some(65_536)), 2_053);
        assert_eq!(next_table_size(11, Some(101)), 2_053);
        // Growing: as soon as N needs the next step, even by one endpoint.
        assert_eq!(next_table_size(11, Some(1_031)), 2_053);
        assert_eq!(next_table_size(656, Some(65_537)), 131_101);
        assert_eq!(next_table_size(10_000, Some(1_031)), 1_048_583);
        // Keeping: N needs the current step or the one below.
        assert_eq!(next_table_size(10, Some(2_053)), 2_053);
        assert_eq!(next_table_size(1, Some(2_053)), 2_053);
        assert_eq!(next_table_size(21, Some(8_209)), 8_209);
        assert_eq!(next_table_size(328, Some(65_537)), 65_537);
        assert_eq!(next_table_size(165, Some(65_537)), 65_537);
        // Shrinking: once the step two below suffices, straight to the size N needs.
        assert_eq!(next_table_size(20, Some(8_209)), 2_053);
        assert_eq!(next_table_size(164, Some(65_537)), 16_411);
        assert_eq!(next_table_size(1, Some(65_537)), 1_031);
        assert_eq!(next_table_size(10, Some(4_099)), 1_031);
        // The largest table shrinks like any other; beyond it nothing grows.
        assert_eq!(
            next_table_size(1_000_000, Some(MAX_TABLE_SIZE)),
            MAX_TABLE_SIZE
        );
        assert_eq!(next_table_size(41_943, Some(MAX_TABLE_SIZE)), 4_194_319);
    }

    #[test]
    fn n_oscillating_across_a_step_keeps_the_size() {
        for (i, &size) in TABLE_SIZES.iter().enumerate().take(TABLE_SIZES.len() - 1) {
            let boundary = (size / SLOTS_PER_ENDPOINT) as usize;
            let mut current = next_table_size(boundary + 1, Some(size));
            assert_eq!(current, TABLE_SIZES[i + 1]);
            for n in [boundary, boundary + 1].into_iter().cycle().take(10) {
                current = next_table_size(n, Some(current));
                assert_eq!(current, TABLE_SIZES[i + 1], "N = {n}");
            }
        }
    }

    #[test]
    fn sized_tables_keep_the_busiest_endpoint_within_one_percent() {
        for n in [1, 2, 7, 10, 11, 41, 100, 164, 165, 655, 656, 1_000, 5_000] {
            let keys = keys(n);
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let size = table_size_for(n);
            let table = MaglevTable::new(&refs, &vec![1; n], size).unwrap();
            let counts = table.counts(n);
            let mean = f64::from(size) / n as f64;
            let max = *counts.iter().max().unwrap() as f64 / mean;
            let min = *counts.iter().min().unwrap() as f64 / mean;
            assert!(max <= 1.01, "N = {n}, M = {size}: max/mean {max}");
            assert!(min >= 0.99, "N = {n}, M = {size}: min/mean {min}");
        }
        // 65 537 slots, the old fixed default, are too few for 5 000 endpoints (13.1 each).
        let keys = keys(5_000);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let table = MaglevTable::new(&refs, &[1; 5_000], PAPER_TABLE_SIZE).unwrap();
        let max = *table.counts(5_000).iter().max().unwrap() as f64 * 5_000.0 / 65_537.0;
        assert!(max > 1.01, "{max}");
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(2));
        assert!(!is_prime(65_536));
        assert!(!is_prime(1));
        assert!(!is_prime(9));
    }
}
