//! The one jittered exponential backoff that every waypost retry loop uses.
//!
//! A failing dependency (an API server, a DNS server, an endpoint that refuses connections) is
//! asked again after a delay that starts at `initial` and doubles with each consecutive failure
//! up to `max`. Every delay is jittered into `[delay / 2, delay]` ("equal jitter" in the terms of
//! the AWS architecture blog's *Exponential Backoff and Jitter*), so that the clients of a large
//! Deployment, failing together when a server restarts, do not come back together, while no
//! delay is ever shorter than half the nominal one.
//!
//! The caller decides what counts as success: [`Backoff::reset`] starts over at `initial`. A
//! connection that is made and then lost at once should not reset the backoff (a server that
//! accepts and closes would otherwise be asked again in a tight loop); resetting only after the
//! connection proved useful is the caller's rule.
//!
//! Randomness comes from [`fastrand`]; [`Backoff::seeded`] makes the sequence reproducible in
//! tests.
//!
//! ```
//! use std::time::Duration;
//! use waypost_discovery::backoff::Backoff;
//!
//! let mut backoff = Backoff::seeded(Duration::from_millis(100), Duration::from_secs(1), 7);
//! let first = backoff.next_delay();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! let second = backoff.next_delay();
//! assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
//! assert_eq!(backoff.failures(), 2);
//!
//! backoff.reset();
//! assert!(backoff.next_delay() <= Duration::from_millis(100));
//! ```

use std::fmt;
use std::time::Duration;

/// The smallest `initial` delay; zero would turn a retry loop into a busy loop.
const MIN_INITIAL: Duration = Duration::from_millis(1);

/// A jittered exponential backoff: `initial` doubling up to `max`, each delay drawn from
/// `[delay / 2, delay]`. See the [module docs](self).
#[derive(Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
    rng: fastrand::Rng,
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("initial", &self.initial)
            .field("max", &self.max)
            .field("next", &self.next)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, with a random seed.
    ///
    /// `initial` is raised to 1 ms and `max` to `initial` when smaller, so no input gives a busy
    /// loop or a panic.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, fastrand::Rng::new())
    }

    /// The same with a fixed seed: the sequence of delays is reproducible.
    pub fn seeded(initial: Duration, max: Duration, seed: u64) -> Self {
        Self::with_rng(initial, max, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Self {
        let initial = initial.max(MIN_INITIAL);
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
            failures: 0,
            rng,
        }
    }

    /// The delay to wait after one more failure: the nominal delay jittered into
    /// `[nominal / 2, nominal]`; the nominal delay then doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        jitter_down(&mut self.rng, nominal)
    }

    /// The nominal (unjittered) delay the next failure will get.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Consecutive failures since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Start over: the next failure waits about `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.failures = 0;
    }

    /// The first delay's nominal value.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest nominal delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// `delay` stretched by a random fraction in `[0, fraction]` of itself, from this backoff's
    /// random source: the jitter for periodic work (a TTL-driven refresh, a health probe) so that
    /// many clients do not act in step. `fraction` outside `[0, 1]` (or NaN) is clamped.
    pub fn stretch(&mut self, delay: Duration, fraction: f64) -> Duration {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        if fraction == 0.0 || delay.is_zero() {
            return delay;
        }
        let extra = delay.mul_f64(fraction * self.rng.f64());
        delay.saturating_add(extra)
    }
}

/// `nominal` jittered into `[nominal / 2, nominal]`.
fn jitter_down(rng: &mut fastrand::Rng, nominal: Duration) -> Duration {
    let half = nominal / 2;
    half.saturating_add((nominal - half).mul_f64(rng.f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_max_and_stay_within_jitter() {
        for seed in 0..200 {
            let mut backoff =
                Backoff::seeded(Duration::from_millis(100), Duration::from_millis(800), seed);
            for bound in [100, 200, 400, 800, 800, 800] {
                let delay = backoff.next_delay();
                let bound = Duration::from_millis(bound);
                assert!(delay <= bound, "{delay:?} > {bound:?}");
                assert!(delay >= bound / 2, "{delay:?} < {bound:?} / 2");
            }
            assert_eq!(backoff.failures(), 6);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::seeded(Duration::from_millis(100), Duration::from_secs(1), 1);
        for _ in 0..5 {
            backoff.next_delay();
        }
        assert_eq!(backoff.peek(), Duration::from_secs(1));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let mut a = Backoff::seeded(Duration::from_millis(10), Duration::from_secs(5), 42);
        let mut b = Backoff::seeded(Duration::from_millis(10), Duration::from_secs(5), 42);
        for _ in 0..20 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let mut backoff = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(1), 3);
        let delays: std::collections::BTreeSet<_> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.len() > 40,
            "jitter produced only {} distinct delays",
            delays.len()
        );
    }

    #[test]
    fn degenerate_bounds_never_panic_or_spin() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(backoff.next_delay() <= MIN_INITIAL);
        assert!(backoff.next_delay() >= MIN_INITIAL / 2);

        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..100 {
            assert!(huge.next_delay() <= Duration::MAX);
        }
        assert_eq!(huge.stretch(Duration::MAX, 1.0), Duration::MAX);
    }

    #[test]
    fn stretch_stays_within_the_fraction() {
        let mut backoff = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(1), 9);
        for _ in 0..100 {
            let stretched = backoff.stretch(Duration::from_secs(10), 0.1);
            assert!(stretched >= Duration::from_secs(10));
            assert!(stretched <= Duration::from_secs(11));
        }
        assert_eq!(
            backoff.stretch(Duration::from_secs(10), f64::NAN),
            Duration::from_secs(10)
        );
        assert!(backoff.stretch(Duration::from_secs(10), 7.0) <= Duration::from_secs(20));
    }
}
