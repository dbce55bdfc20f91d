//! A full request through the balancer on no-op endpoint services: waypost's `Balance` against
//! tower's `p2c::Balance` behind a `Buffer` (the way tonic's balance channel and every shared
//! tower balancer run), with the same load metric (least pending, Peak EWMA), over the same 10
//! services, on one and two runtime threads.
//!
//! Each caller task loops `ready().await` + `call(..).await`. With two threads, two caller tasks
//! run at once on a two-worker runtime, each on its own clone. Times are per call, per caller.
//!
//! ```text
//! cargo bench -p waypost-benches --bench call
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::balance::p2c;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, BalanceConfig, Policy};
use waypost_discovery::{Endpoint, Publisher};

#[path = "support/noop.rs"]
mod noop;
use noop::Noop;

const ENDPOINTS: u16 = 10;

fn noop() -> Noop {
    Noop
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    }
}

/// Runs `iters` calls in each of `callers` tasks; returns the elapsed time.
fn drive<S>(runtime: &tokio::runtime::Runtime, service: &S, callers: usize, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    for i in 0..iters {
                        let response = service.ready().await.unwrap().call(i).await.unwrap();
                        black_box(response);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn call(c: &mut Criterion) {
    for threads in [1, 2] {
        let runtime = runtime(threads);
        let mut group = c.benchmark_group(format!(
            "call/{threads} thread{}",
            if threads > 1 { "s" } else { "" }
        ));
        group
            .sample_size(30)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));

        for (name, policy) in [
            ("waypost p2c_peak_ewma", Policy::p2c_peak_ewma()),
            ("waypost p2c_least_pending", Policy::p2c_least_pending()),
            ("waypost round_robin", Policy::round_robin()),
        ] {
            let balance = {
                let _guard = runtime.enter();
                let mut publisher = Publisher::new("bench");
                publisher.publish(
                    (1..=ENDPOINTS).map(|p| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], p)))),
                );
                Balance::builder(publisher.endpoints())
                    .config(BalanceConfig::with_policy(policy))
                    .build(|_: &Endpoint| noop())
                    .unwrap()
            };
            group.bench_function(name, |b| {
                b.iter_custom(|iters| drive(&runtime, &balance, threads, iters))
            });
        }

        let tower_pending = {
            let _guard = runtime.enter();
            let services: Vec<_> = (0..ENDPOINTS)
                .map(|_| PendingRequests::new(noop(), CompleteOnResponse::default()))
                .collect();
            Buffer::new(p2c::Balance::new(ServiceList::new(services)), 1024)
        };
        group.bench_function("tower p2c least pending + Buffer", |b| {
            b.iter_custom(|iters| drive(&runtime, &tower_pending, threads, iters))
        });
        let tower_peak_ewma = {
            let _guard = runtime.enter();
            let services: Vec<_> = (0..ENDPOINTS)
                .map(|_| {
                    PeakEwma::new(
                        noop(),
                        Duration::from_millis(30),
                        Duration::from_secs(10).as_nanos() as f64,
                        CompleteOnResponse::default(),
                    )
                })
                .collect();
            Buffer::new(p2c::Balance::new(ServiceList::new(services)), 1024)
        };
        group.bench_function("tower p2c peak ewma + Buffer", |b| {
            b.iter_custom(|iters| drive(&runtime, &tower_peak_ewma, threads, iters))
        });
        group.finish();
    }
}

criterion_group!(benches, call);
criterion_main!(benches);
