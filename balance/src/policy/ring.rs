//! Ring hash (Karger et al., "Consistent Hashing and Random Trees", STOC 1997), sized for a
//! target imbalance.
//!
//! Each endpoint places `k × weight` points on a 64-bit ring; a request goes to the first point
//! at or after its key's hash. With `k` points per endpoint the share of the ring an endpoint owns
//! has a relative standard deviation of about `1/√k`, and the largest of `N` shares sits about
//! `√(2 ln N)` deviations above the mean. So instead of a fixed ring size (gRPC's default of
//! 1 024 to 4 096 entries gives each of 1 000 endpoints one to four points, and some endpoints
//! several times the mean load), the ring is sized to meet a target max/mean ratio `1 + ε`:
//! `k = ⌈2 ln N / ε²⌉`, capped by a maximum ring size.

use xxhash_rust::xxh64::xxh64;

/// The default target: the busiest endpoint should own at most 10% more than the mean.
pub const DEFAULT_MAX_IMBALANCE: f64 = 0.10;
/// The default cap on ring entries (Envoy's default maximum ring size).
pub const DEFAULT_MAX_RING_SIZE: usize = 8 * 1024 * 1024;

/// Points per unit of weight for `n` endpoints and a target imbalance `epsilon`
/// (`⌈2 ln n / ε²⌉`), capped so the ring holds at most `max_ring` points for `total_weight`.
pub fn points_per_weight(n: usize, epsilon: f64, total_weight: u64, max_ring: usize) -> u64 {
    let n = n.max(2) as f64;
    let epsilon = epsilon.clamp(1e-3, 10.0);
    let wanted = (2.0 * n.ln() / (epsilon * epsilon)).ceil().max(1.0) as u64;
    let cap = (max_ring as u64 / total_weight.max(1)).max(1);
    wanted.min(cap)
}

/// A built ring over candidate positions `0..n`.
///
/// Points are kept as `(hash, owner)` pairs sorted by hash, with a bucket index over the top bits
/// of the hash: a lookup reads one index entry and searches the one or two points of its bucket,
/// instead of a binary search through a ring of a million points (about twenty cache misses).
#[derive(Debug, Clone)]
pub struct Ring {
    points: Box<[(u64, u32)]>,
    /// `index[b]` is the first point whose hash's top `bits` bits are at least `b`.
    index: Box<[u32]>,
    bits: u32,
}

impl Ring {
    /// Builds a ring with `points_per_weight × weight` points per candidate, from each candidate's
    /// key bytes (point `i` of a candidate is xxHash64 of its key with seed `i`). `None` when no
    /// candidate has a weight above zero.
    pub fn new(keys: &[&[u8]], weights: &[u32], points_per_weight: u64) -> Option<Self> {
        let total: u64 = weights
            .iter()
            .map(|&w| u64::from(w) * points_per_weight)
            .sum();
        if total == 0 || total > u64::from(u32::MAX) {
            return None;
        }
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        for (i, (key, &weight)) in keys.iter().zip(weights).enumerate() {
            for replica in 0..u64::from(weight) * points_per_weight {
                points.push((xxh64(key, replica), i as u32));
            }
        }
        // Ties (equal hashes) resolve by candidate position, so the ring does not depend on the
        // order points were generated in.
        points.sort_unstable();
        // About one point per bucket, at most 2^20 buckets (4 MiB of index).
        let bits = (u64::BITS - (total - 1).leading_zeros()).clamp(1, 20);
        let buckets = 1usize << bits;
        let mut index = Vec::with_capacity(buckets + 1);
        let mut next = 0usize;
        for bucket in 0..buckets as u64 {
            let start = bucket << (64 - bits);
            while next < points.len() && points[next].0 < start {
                next += 1;
            }
            index.push(next as u32);
        }
        index.push(points.len() as u32);
        Some(Ring {
            points: points.into_boxed_slice(),
            index: index.into_boxed_slice(),
            bits,
        })
    }

    /// `true` when the ring has no point (never, for a built ring).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// The position of the first point at or after `key`, wrapping around.
    #[inline]
    pub(crate) fn point(&self, key: u64) -> usize {
        let bucket = (key >> (64 - self.bits)) as usize;
        let (start, end) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        let found = start + self.points[start..end].partition_point(|&(hash, _)| hash < key);
        if found == self.points.len() { 0 } else { found }
    }

    /// The candidate owning point `point` (wrapping).
    #[inline]
    pub(crate) fn owner(&self, point: usize) -> usize {
        self.points[point % self.points.len()].1 as usize
    }

    /// The candidate position for a 64-bit key hash.
    #[inline]
    pub fn pick(&self, key: u64) -> usize {
        self.owner(self.point(key))
    }

    /// The share of the 64-bit key space each of `n` candidates owns.
    pub fn shares(&self, n: usize) -> Vec<f64> {
        let mut owned = vec![0u128; n];
        let len = self.points.len();
        for i in 0..len {
            let previous = if i == 0 {
                self.points[len - 1].0
            } else {
                self.points[i - 1].0
            };
            let arc = self.points[i].0.wrapping_sub(previous);
            // A single point owns the whole ring.
            let arc = if len == 1 {
                u64::MAX as u128 + 1
            } else {
                u128::from(arc)
            };
            owned[self.points[i].1 as usize] += arc;
        }
        let full = u64::MAX as f64 + 1.0;
        owned.into_iter().map(|o| o as f64 / full).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizing_meets_the_target_at_a_thousand_endpoints() {
        let n = 1000;
        let keys: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("10.1.{}.{}:80", i / 256, i % 256).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let k = points_per_weight(n, 0.10, n as u64, DEFAULT_MAX_RING_SIZE);
        let ring = Ring::new(&refs, &vec![1; n], k).unwrap();
        let shares = ring.shares(n);
        let mean = 1.0 / n as f64;
        let max = shares.iter().copied().fold(0.0, f64::max);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(max / mean <= 1.10, "max/mean {}", max / mean);
    }

    #[test]
    fn lookup_wraps_around() {
        let ring = Ring::new(&[b"a", b"b"], &[1, 1], 4).unwrap();
        assert_eq!(ring.len(), 8);
        assert_eq!(
            ring.point(u64::MAX),
            if ring.points[7].0 == u64::MAX { 7 } else { 0 }
        );
        assert_eq!(ring.pick(0), ring.points[0].1 as usize);
        // Every key lands on the first point at or after it.
        let big = Ring::new(&[b"a", b"b", b"c"], &[1, 2, 3], 1000).unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..10_000 {
            let key = rng.u64(..);
            let expected = big.points.partition_point(|&(hash, _)| hash < key) % big.len();
            assert_eq!(big.point(key), expected);
        }
    }

    #[test]
    fn sizing_is_capped() {
        assert_eq!(points_per_weight(1000, 0.001, 1000, 10_000), 10);
        assert!(points_per_weight(2, 0.5, 2, DEFAULT_MAX_RING_SIZE) >= 6);
    }
}
