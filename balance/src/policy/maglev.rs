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

use xxhash_rust::xxh64::xxh64;

/// The default table size: the prime the Maglev paper uses for production (65 537).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// A built Maglev lookup table over candidate positions `0..n`.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    entries: Box<[u32]>,
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
        let offsets: Vec<u64> = keys.iter().map(|k| xxh64(k, OFFSET_SEED) % m).collect();
        let skips: Vec<u64> = keys
            .iter()
            .map(|k| xxh64(k, SKIP_SEED) % (m - 1).max(1) + 1)
            .collect();
        // Each endpoint's next preferred slot, `(offset + k * skip) % m` for its k-th try, kept
        // as a running position: one add and one compare per try instead of a division.
        let mut position = offsets;
        let mut claimed = vec![0u64; n];
        const EMPTY: u32 = u32::MAX;
        let mut entries = vec![EMPTY; size as usize];
        let mut filled = 0u64;
        let mut round = 0u64;
        while filled < m {
            round += 1;
            for i in 0..n {
                if weights[i] == 0 {
                    continue;
                }
                // Weighted turns: claim only while below this endpoint's share of the rounds.
                if claimed[i] * u64::from(max_weight) >= round * u64::from(weights[i]) {
                    continue;
                }
                loop {
                    let slot = position[i];
                    position[i] += skips[i];
                    if position[i] >= m {
                        position[i] -= m;
                    }
                    if entries[slot as usize] == EMPTY {
                        entries[slot as usize] = i as u32;
                        claimed[i] += 1;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        Some(MaglevTable {
            entries: entries.into_boxed_slice(),
        })
    }

    /// The table size.
    pub fn size(&self) -> usize {
        self.entries.len()
    }

    /// The candidate position for a 64-bit key hash.
    #[inline]
    pub fn pick(&self, key: u64) -> usize {
        self.entries[(key % self.entries.len() as u64) as usize] as usize
    }

    /// The candidate `step` entries after the key's own, for walking on under bounded loads.
    #[inline]
    pub(crate) fn pick_after(&self, key: u64, step: u64) -> usize {
        let size = self.entries.len() as u64;
        self.entries[((key % size + step) % size) as usize] as usize
    }

    /// How many entries each of `n` candidates owns: its share of the keys is its count over
    /// the table size.
    pub fn counts(&self, n: usize) -> Vec<u64> {
        let mut counts = vec![0u64; n];
        for &entry in self.entries.iter() {
            counts[entry as usize] += 1;
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
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(2));
        assert!(!is_prime(65_536));
        assert!(!is_prime(1));
        assert!(!is_prime(9));
    }
}
