//! Weighted sampling in constant time: Vose's alias method.
//!
//! Walker's alias method (A. J. Walker, 1977, in M. D. Vose's numerically stable form, 1991)
//! turns weights `w_0..w_n` into two tables so that one uniform draw picks index `i` with
//! probability `w_i / sum(w)`: choose a column uniformly, then keep it or take its alias by
//! comparing a second uniform number with the column's threshold. Building is `O(n)` and done
//! off the request path; a pick is two random numbers and two loads.

/// Alias tables over `n` weighted items.
#[derive(Debug, Clone)]
pub(crate) struct AliasTable {
    /// Keep column `i` when the draw is below `threshold[i]` (scaled to `u32::MAX`).
    threshold: Box<[u32]>,
    alias: Box<[u32]>,
}

impl AliasTable {
    /// Builds the tables; zero weights are never picked. Returns `None` when every weight is 0.
    pub(crate) fn new(weights: &[u32]) -> Option<Self> {
        let n = weights.len();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        // Scaled probabilities p_i * n, in fixed point relative to `total`.
        let mut scaled: Vec<u128> = weights.iter().map(|&w| u128::from(w) * n as u128).collect();
        let unit = u128::from(total);
        let mut threshold = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < unit);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            threshold[s] = ((scaled[s] * u128::from(u32::MAX)) / unit) as u32;
            alias[s] = l as u32;
            scaled[l] -= unit - scaled[s];
            if scaled[l] < unit {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left has probability exactly one column (up to rounding): always keep it.
        for i in small.into_iter().chain(large) {
            threshold[i] = u32::MAX;
            alias[i] = i as u32;
        }
        Some(AliasTable {
            threshold: threshold.into_boxed_slice(),
            alias: alias.into_boxed_slice(),
        })
    }

    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.threshold.len()
    }

    /// Picks an index from one 64-bit random number.
    #[inline]
    pub(crate) fn pick(&self, random: u64) -> usize {
        let n = self.threshold.len() as u64;
        // High bits choose the column (multiply-shift, no modulo bias worth measuring), low bits
        // decide between the column and its alias.
        let column = (((random >> 32) * n) >> 32) as usize;
        if (random as u32) < self.threshold[column] || self.threshold[column] == u32::MAX {
            column
        } else {
            self.alias[column] as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_follow_weights() {
        let weights = [1, 0, 3, 6];
        let table = AliasTable::new(&weights).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u32; 4];
        let draws = 200_000;
        for _ in 0..draws {
            counts[table.pick(rng.u64(..))] += 1;
        }
        assert_eq!(counts[1], 0, "weight 0 is never picked");
        for (i, &w) in weights.iter().enumerate() {
            let expected = f64::from(draws) * f64::from(w) / 10.0;
            let got = f64::from(counts[i]);
            assert!(
                (got - expected).abs() <= expected * 0.03 + 50.0,
                "{i}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn all_zero_is_none() {
        assert!(AliasTable::new(&[0, 0]).is_none());
        assert!(AliasTable::new(&[]).is_none());
    }

    #[test]
    fn single_item_always_picked() {
        let table = AliasTable::new(&[5]).unwrap();
        assert_eq!(table.pick(u64::MAX), 0);
        assert_eq!(table.pick(0), 0);
    }
}
