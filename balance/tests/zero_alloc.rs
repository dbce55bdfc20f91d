//! The pick path allocates nothing: a counting global allocator watches `Balance::pick` and full
//! `call`s on no-op endpoint services, for every policy, and with a concurrency limit.
//!
//! The allocator (`allocation-counter`, installed by linking it) counts per thread. The test
//! harness's main thread keeps working after it has started the test's thread: it records the
//! running test and starts waiting on a channel, and both allocate. On a loaded machine that work
//! runs late, inside the counted region, and a process-wide counter charged those allocations to
//! the pick path. The pick path is synchronous, so everything it does happens on the calling
//! thread and a per-thread count sees all of it.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower::Service;
use waypost_balance::{Balance, BalanceConfig, ConcurrencyLimit, Policy};
use waypost_discovery::{Endpoint, Publisher};

/// A no-op endpoint service whose future is ready at once and allocates nothing.
#[derive(Clone)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<u64, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a no-op call completes at once"),
    }
}

/// Runs `f` and counts the allocations this thread made meanwhile (a reallocation counts as one).
fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let mut result = None;
    let info = allocation_counter::measure(|| result = Some(f()));
    (result.expect("measure runs the closure"), info.count_total)
}

#[test]
fn picks_and_calls_do_not_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let (_, sanity) = count(|| std::hint::black_box(Box::new(7u64)));
    assert_eq!(sanity, 1, "the counting allocator sees allocations");
    let (_, sanity) = count(|| std::hint::black_box(vec![0u8; 16]).extend_from_slice(&[1; 64]));
    assert_eq!(sanity, 2, "the counting allocator sees reallocations");
    let policies = [
        Policy::p2c_peak_ewma(),
        Policy::p2c_least_pending(),
        Policy::round_robin(),
        Policy::weighted_round_robin(),
        Policy::weighted_random(),
        Policy::maglev(),
        Policy::ring_hash(),
        Policy::maglev().with_bounded_load(0.25).unwrap(),
    ];
    let limited = |policy| BalanceConfig {
        concurrency_limit: Some(ConcurrencyLimit::new(4)),
        ..BalanceConfig::with_policy(policy)
    };
    let configs = policies.into_iter().map(BalanceConfig::with_policy).chain([
        limited(Policy::p2c_least_pending()),
        limited(Policy::round_robin()),
        limited(Policy::maglev()),
    ]);
    for config in configs {
        let policy = (config.policy, config.concurrency_limit.clone());
        let mut publisher = Publisher::new("zero-alloc");
        publisher.publish((1..=100u16).map(|i| {
            Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 10_000 + i)))
                .with_weight(1 + u32::from(i % 3))
        }));
        let mut balance = Balance::builder(publisher.endpoints())
            .config(config)
            .build(|_: &Endpoint| Noop)
            .unwrap();
        // Warm up thread-locals and lazily initialised statics.
        for i in 0..100 {
            balance.pick(Some(i));
            complete(balance.call(i)).unwrap();
        }

        let (picked, allocations) = count(|| {
            let mut picked = 0usize;
            for i in 0..10_000u64 {
                picked += usize::from(balance.pick(Some(i.wrapping_mul(0x9E37_79B9))).is_some());
            }
            picked
        });
        assert_eq!(picked, 10_000);
        assert_eq!(allocations, 0, "{policy:?}: allocations while picking");

        let (sum, allocations) = count(|| {
            let mut sum = 0u64;
            for i in 0..10_000u64 {
                sum += complete(balance.call(i)).unwrap();
            }
            sum
        });
        assert_eq!(sum, (0..10_000u64).sum::<u64>());
        assert_eq!(allocations, 0, "{policy:?}: allocations while calling");
    }
}
