//! When the watch task tries again after a failure: the shared [`Backoff`] under the watch's
//! own rules for what counts as the server answering.
//!
//! The delay is the crate's jittered exponential backoff (`min` doubling to `max`, each delay in
//! `[delay / 2, delay]`), so the clients of a large Deployment, failing together when the API
//! server restarts, do not come back together. What resets it:
//!
//! - an event from the watch (the API server is answering);
//! - a complete list after the routine in-stream `410 Expired` (the history was compacted): the
//!   server answered the relist, so the next compaction waits `min` again instead of an
//!   escalated delay. Without this, consecutive compactions (each one a "failure") would push
//!   every later change further out: 0.5, 1, 2, 4 ... seconds;
//! - `2 * max` without a failure.
//!
//! A successful list after any *other* failure does not reset it: a server that lists fine but
//! then fails every watch (or answers it with HTTP 410, see the watch module) would otherwise be
//! asked again at the shortest delay forever. A server whose every watch ends in `410 Expired` at
//! once is still asked at most once per `min` delay.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;

#[derive(Debug)]
pub(super) struct Retry {
    backoff: Backoff,
    last_failure: Option<Instant>,
    /// The last failure was the in-stream `410 Expired`, and no complete list followed yet.
    relisting_after_expiry: bool,
}

impl Retry {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self::from_backoff(Backoff::new(min, max))
    }

    fn from_backoff(backoff: Backoff) -> Self {
        Retry {
            backoff,
            last_failure: None,
            relisting_after_expiry: false,
        }
    }

    /// The wait after a failure at `now`.
    pub(super) fn failure(&mut self, now: Instant) -> Duration {
        if self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) > self.backoff.max() * 2)
        {
            self.backoff.reset();
        }
        self.last_failure = Some(now);
        self.backoff.next_delay()
    }

    /// The wait after the in-stream `410 Expired` at `now`; the relist that follows resets the
    /// backoff when it completes ([`listed`](Self::listed)).
    pub(super) fn expired(&mut self, now: Instant) -> Duration {
        self.relisting_after_expiry = true;
        self.failure(now)
    }

    /// An event arrived from the watch: the server answers.
    pub(super) fn event(&mut self) {
        self.relisting_after_expiry = false;
        self.backoff.reset();
    }

    /// A list completed.
    pub(super) fn listed(&mut self) {
        if std::mem::take(&mut self.relisting_after_expiry) {
            self.backoff.reset();
        }
    }

    /// The nominal delay the next failure gets.
    #[cfg(test)]
    fn next_nominal(&self) -> Duration {
        self.backoff.peek()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn retry(seed: u64) -> Retry {
        Retry::from_backoff(Backoff::seeded(MIN, MAX, seed))
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_compactions_each_wait_the_minimum() {
        let mut retry = retry(1);
        for round in 0..10 {
            let delay = retry.expired(Instant::now());
            assert!(delay <= MIN, "compaction {round} waited {delay:?}");
            // The relist completes a little later; the next compaction comes a while after.
            tokio::time::advance(delay + Duration::from_millis(50)).await;
            retry.listed();
            assert_eq!(retry.next_nominal(), MIN, "after relist {round}");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_relist_after_a_compaction_backs_off_until_a_list_completes() {
        let mut retry = retry(2);
        assert!(retry.expired(Instant::now()) <= MIN);
        let bounds = [2, 4, 8, 16].map(|factor| MIN * factor);
        for bound in bounds {
            let delay = retry.failure(Instant::now());
            assert!(
                delay <= bound && delay >= bound / 2,
                "{delay:?} for {bound:?}"
            );
        }
        retry.listed();
        assert_eq!(retry.next_nominal(), MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_alone_does_not_reset_after_other_failures() {
        let mut retry = retry(3);
        for _ in 0..4 {
            retry.failure(Instant::now());
            retry.listed();
        }
        assert_eq!(retry.next_nominal(), MIN * 16);
        retry.event();
        assert_eq!(retry.next_nominal(), MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_period_starts_over() {
        let mut retry = retry(4);
        for _ in 0..5 {
            retry.failure(Instant::now());
        }
        tokio::time::advance(MAX * 2 + Duration::from_secs(1)).await;
        assert!(retry.failure(Instant::now()) <= MIN);
    }

    #[test]
    fn degenerate_bounds_are_clamped() {
        let mut retry = Retry::new(Duration::ZERO, Duration::ZERO);
        assert!(retry.failure(Instant::now()) <= Duration::from_millis(1));
    }
}
