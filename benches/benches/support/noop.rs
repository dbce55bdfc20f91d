//! A no-op endpoint service for the benchmarks of the balancer itself (`call`, `balance_memory`,
//! `fleet`): cloning it is free and its future is ready at once, so the figures are the
//! balancer's own cost.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tower::Service;

/// Answers every request with itself, at once.
#[derive(Clone, Copy)]
pub(crate) struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        std::future::ready(Ok(request))
    }
}
