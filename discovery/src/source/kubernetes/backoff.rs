//! How long the watch task waits after a failure before it tries again.
//!
//! Exponential: the first failure after a quiet period waits about `min`, each further one twice
//! as long, up to `max`. Every delay is jittered into `[delay / 2, delay]` so that the clients of
//! a large Deployment, failing together when the API server restarts, do not come back together.
//!
//! The delay falls back to `min` after an update arrived from the watch (the API server is
//! answering) or after `2 * max` without a failure. A successful list alone does not reset it:
//! a server that lists fine but then fails every watch (or answers it with HTTP 410, see the
//! watch module) would otherwise be asked again at the shortest delay forever.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    last_failure: Option<Instant>,
    rng: u64,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
            last_failure: None,
            // Seeded per process and per instance; the jitter needs no cryptographic quality.
            rng: RandomState::new().hash_one(0u64) | 1,
        }
    }

    /// The delay before the next attempt after a failure at `now`.
    pub(super) fn next_delay(&mut self, now: Instant) -> Duration {
        if self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) > self.max * 2)
        {
            self.next = self.min;
        }
        self.last_failure = Some(now);
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        // Jitter into [delay / 2, delay].
        let fraction = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(0.5 + 0.5 * fraction)
    }

    /// Back to the shortest delay: the server answered.
    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }

    /// The shortest delay; every delay is at least half of it.
    #[cfg(test)]
    pub(super) fn min(&self) -> Duration {
        self.min
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_max_and_stay_within_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let expected = [100, 200, 400, 800, 800, 800];
        for bound in expected {
            let delay = backoff.next_delay(Instant::now());
            let bound = Duration::from_millis(bound);
            assert!(delay <= bound, "{delay:?} > {bound:?}");
            assert!(delay >= bound / 2, "{delay:?} < {bound:?} / 2");
        }
        assert!(backoff.next_delay(Instant::now()) >= backoff.min() / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_and_quiet_periods_start_over() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..5 {
            backoff.next_delay(Instant::now());
        }
        backoff.reset();
        assert!(backoff.next_delay(Instant::now()) <= Duration::from_millis(100));

        for _ in 0..5 {
            backoff.next_delay(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(backoff.next_delay(Instant::now()) <= Duration::from_millis(100));
    }

    #[test]
    fn degenerate_bounds_are_clamped() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        let delay = backoff.next_delay(Instant::now());
        assert!(delay <= Duration::from_millis(1));
    }
}
