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

/// Points per unit of weight for `n` endpoints and a target imbalance `epsilon`.
pub(crate) fn points_per_weight(n: usize, epsilon: f64, total_weight: u64, max_ring: usize) -> u64 {
    let n = n.max(2) as f64;
    let epsilon = epsilon.clamp(1e-3, 10.0);
    let wanted = (2.0 * n.ln() / (epsilon * epsilon)).ceil().max(1.0) as u64;
    let cap = (max_ring as u64 / total_weight.max(1)).max(1);
    wanted.min(cap)
}

/// A built ring over candidate positions `0..n`.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    hashes: Box<[u64]>,
    owners: Box<[u32]>,
}

impl Ring {
    /// Builds a ring with `points_per_weight × weight` points per candidate, from each candidate's
    /// key bytes. `None` when no candidate has a weight above zero.
    pub(crate) fn new(keys: &[&[u8]], weights: &[u32], points_per_weight: u64) -> Option<Self> {
        let total: u64 = weights
            .iter()
            .map(|&w| u64::from(w) * points_per_weight)
            .sum();
        if total == 0 {
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
        let (hashes, owners) = points.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        Some(Ring {
            hashes: hashes.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
        })
    }

    /// Number of points.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The position of the first point at or after `key`, wrapping around.
    #[inline]
    pub(crate) fn point(&self, key: u64) -> usize {
        let index = self.hashes.partition_point(|&hash| hash < key);
        if index == self.hashes.len() { 0 } else { index }
    }

    /// The candidate owning point `point` (wrapping).
    #[inline]
    pub(crate) fn owner(&self, point: usize) -> usize {
        self.owners[point % self.owners.len()] as usize
    }

    /// The candidate for `key`.
    #[cfg(test)]
    pub(crate) fn pick(&self, key: u64) -> usize {
        self.owner(self.point(key))
    }

    /// The share of the 64-bit key space each candidate owns.
    #[cfg(test)]
    pub(crate) fn shares(&self, n: usize) -> Vec<f64> {
        let mut owned = vec![0u128; n];
        let len = self.hashes.len();
        for i in 0..len {
            let previous = if i == 0 {
                self.hashes[len - 1]
            } else {
                self.hashes[i - 1]
            };
            let arc = self.hashes[i].wrapping_sub(previous);
            // A single point owns the whole ring.
            let arc = if len == 1 {
                u64::MAX as u128 + 1
            } else {
                u128::from(arc)
            };
            owned[self.owners[i] as usize] += arc;
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
            if ring.hashes[7] == u64::MAX { 7 } else { 0 }
        );
        assert_eq!(ring.pick(0), ring.owners[0] as usize);
    }

    #[test]
    fn sizing_is_capped() {
        assert_eq!(points_per_weight(1000, 0.001, 1000, 10_000), 10);
        assert!(points_per_weight(2, 0.5, 2, DEFAULT_MAX_RING_SIZE) >= 6);
    }
}
