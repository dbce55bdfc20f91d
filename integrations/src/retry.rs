//! The retry budget shared by the clients: how many requests that may already have been
//! processed can be sent again.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use crate::error::{Error, ErrorKind};

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

impl RetryBudget {
    /// Checks every field: `retry_percent` from 0 to 1000 (a finite number), `min_per_second`
    /// below `i32::MAX`, `max_attempts` at least 1. The error is a
    /// [`Config`](ErrorKind::Config) error naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.retry_percent.is_finite() && (0.0..=1000.0).contains(&self.retry_percent)) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`RetryBudget::retry_percent` must be a number from 0 to 1000, not {}",
                    self.retry_percent
                ),
            ));
        }
        if self.min_per_second >= i32::MAX as u32 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`RetryBudget::min_per_second` must be below {}, not {}",
                    i32::MAX,
                    self.min_per_second
                ),
            ));
        }
        if self.max_attempts == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "`RetryBudget::max_attempts` must be at least 1 (the first attempt counts)",
            ));
        }
        Ok(())
    }
}

/// A live budget shared by a client's clones.
#[derive(Clone)]
pub(crate) struct Retries {
    budget: Arc<TpsBudget>,
    pub(crate) max_attempts: usize,
}

impl Retries {
    /// A live budget; the error names the field of `budget` that cannot work.
    pub(crate) fn new(budget: RetryBudget) -> Result<Self, Error> {
        budget.validate()?;
        Ok(Retries {
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                budget.min_per_second,
                budget.retry_percent,
            )),
            max_attempts: budget.max_attempts,
        })
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
