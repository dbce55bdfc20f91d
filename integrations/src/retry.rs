//! The retry budget shared by the clients: how many requests that may already have been
//! processed can be sent again.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// A retry budget for idempotent requests: retries may add at most `retry_percent` of the
/// recent request rate, plus `min_per_second` (tower's `TpsBudget` over a 10 s window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Extra retries allowed per second regardless of traffic. Default 10.
    pub min_per_second: u32,
    /// Retries allowed as a share of requests. Default 0.2.
    pub retry_percent: f32,
    /// Total attempts of one request, the first included. Default 3.
    pub max_attempts: usize,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            min_per_second: 10,
            retry_percent: 0.2,
            max_attempts: 3,
        }
    }
}

/// A live budget shared by a client's clones.
#[derive(Clone)]
pub(crate) struct Retries {
    budget: Arc<TpsBudget>,
    pub(crate) max_attempts: usize,
}

impl Retries {
    pub(crate) fn new(budget: RetryBudget) -> Self {
        Retries {
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                budget.min_per_second,
                budget.retry_percent,
            )),
            max_attempts: budget.max_attempts.max(1),
        }
    }

    /// Records a request that may be retried.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// `true` when attempt number `attempt` (1 for the first) may be followed by another.
    pub(crate) fn may_retry(&self, attempt: usize) -> bool {
        attempt < self.max_attempts && self.budget.withdraw()
    }
}
