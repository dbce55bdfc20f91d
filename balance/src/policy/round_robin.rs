//! Round-robin without a shared hot counter, and smooth weighted round-robin schedules.
//!
//! A single counter shared by every thread makes each pick a cache-line transfer between cores:
//! two threads picking are slower than one. Instead each thread increments its own counter among
//! cache-padded [`Stripes`] (twice as many as the machine runs threads at once, at most 16); a
//! thread's picks walk the endpoints in order, and stripes start at different offsets so threads
//! do not move in lockstep.
//!
//! Weighted round-robin follows nginx's smooth weighted round-robin: it interleaves endpoints
//! (weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`). The sequence is computed once per
//! snapshot as a schedule and then walked like plain round-robin, so a pick stays `O(1)` and
//! never takes a lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// The most counters a balancer has; threads beyond the count share them (round-robin per
/// stripe stays exact).
pub(crate) const STRIPES: usize = 16;

/// Counters per balancer: a power of two, twice the machine's parallelism (threads are given
/// stripes in turn, and some of them never pick), at most [`STRIPES`]. 128 bytes each: sixteen
/// on a machine with two cores would take 2 KiB per balancer for nothing.
fn stripe_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        let parallelism = std::thread::available_parallelism().map_or(STRIPES, usize::from);
        parallelism
            .saturating_mul(2)
            .next_power_of_two()
            .min(STRIPES)
    })
}

/// The longest schedule kept; larger weight sums are scaled down proportionally.
pub(crate) const MAX_SCHEDULE: u64 = 1 << 16;

/// Per-thread round-robin counters.
#[derive(Debug)]
pub(crate) struct Stripes {
    counters: Box<[CachePadded<AtomicU64>]>,
}

impl Stripes {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        Stripes {
            counters: (0..stripe_count())
                .map(|_| CachePadded::new(AtomicU64::new(rng.u64(..u64::MAX / 2))))
                .collect(),
        }
    }

    /// No counters, for a balancer whose policy is not a round-robin.
    /// [`next`](Self::next) then always answers 0.
    pub(crate) fn unused() -> Self {
        Stripes {
            counters: Box::default(),
        }
    }

    /// The next position in `0..len` for the calling thread's stripe.
    #[inline]
    pub(crate) fn next(&self, len: usize) -> usize {
        // The count is a power of two (or zero, when unused).
        let Some(counter) = self
            .counters
            .get(thread_stripe() & self.counters.len().wrapping_sub(1))
        else {
            return 0;
        };
        let count = counter.fetch_add(1, Ordering::Relaxed);
        // The remainder in 32 bits where the length fits (always, in practice): one division
        // instruction, where the 64-bit one first tests whether both operands fit in 32 bits
        // (about 10 instructions fewer per pick). The count's low half wraps every 2^32 picks
        // of a stripe, where one step of the cycle comes out of order.
        match u32::try_from(len) {
            Ok(len) if len > 0 => (count as u32 % len) as usize,
            _ => (count % len as u64) as usize,
        }
    }
}

#[inline]
fn thread_stripe() -> usize {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        static STRIPE: Cell<u32> = const { Cell::new(u32::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut value = stripe.get();
        if value == u32::MAX {
            value = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES as u32;
            stripe.set(value);
        }
        value as usize
    })
}

/// The smooth weighted round-robin sequence for `weights` (positions with weight 0 never appear).
/// One cycle holds each position `weight / gcd` times, or proportionally fewer when the sum
/// exceeds [`MAX_SCHEDULE`] (every non-zero weight keeps at least one turn).
pub(crate) fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let divisor = weights.iter().copied().filter(|&w| w > 0).fold(0u32, gcd);
    if divisor == 0 {
        return Box::default();
    }
    let mut reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w / divisor)).collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_SCHEDULE {
        for w in reduced.iter_mut().filter(|w| **w > 0) {
            *w = (*w * MAX_SCHEDULE / total).max(1);
        }
    }
    let total: i64 = reduced.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; reduced.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, &w) in reduced.iter().enumerate() {
            if w == 0 {
                continue;
            }
            current[i] += w as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule.into_boxed_slice()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_interleaves() {
        assert_eq!(&*smooth_schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*smooth_schedule(&[2, 4]), &[1, 0, 1]);
        assert_eq!(&*smooth_schedule(&[0, 3]), &[1]);
        assert!(smooth_schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn huge_weights_are_scaled() {
        let schedule = smooth_schedule(&[u32::MAX, 1, 7]);
        assert!(schedule.len() as u64 <= MAX_SCHEDULE + 2);
        assert!(schedule.contains(&1) && schedule.contains(&2));
    }

    #[test]
    fn one_thread_walks_in_order() {
        let stripes = Stripes::new(1);
        let first = stripes.next(5);
        for i in 1..20 {
            assert_eq!(stripes.next(5), (first + i) % 5);
        }
    }

    #[test]
    fn stripes_follow_the_machine_and_every_thread_walks_in_order() {
        let stripes = Stripes::new(7);
        let count = stripes.counters.len();
        assert!(count.is_power_of_two() && count <= STRIPES, "{count}");
        assert!(
            count >= 2,
            "at least two stripes, even on one core: {count}"
        );
        // More threads than stripes: each still walks the endpoints in order on its stripe
        // (threads sharing one see each other's picks, so one thread at a time here).
        for _ in 0..count + 3 {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let first = stripes.next(7);
                    for i in 1..10 {
                        assert_eq!(stripes.next(7), (first + i) % 7);
                    }
                });
            });
        }
    }

    #[test]
    fn a_length_beyond_32_bits_still_walks_in_order() {
        let stripes = Stripes::new(3);
        let len = (1usize << 33) + 5;
        let first = stripes.next(len);
        assert!(first < len);
        for i in 1..5 {
            assert_eq!(stripes.next(len), (first + i) % len);
        }
    }

    #[test]
    fn unused_stripes_allocate_nothing_and_answer_the_first_position() {
        let stripes = Stripes::unused();
        assert!(stripes.counters.is_empty());
        assert_eq!(stripes.next(5), 0);
        assert_eq!(stripes.next(1), 0);
    }
}
