//! Pick cost per policy at N = 3, 100, 1000 and 10000 endpoints, on one and two threads,
//! against pingora-load-balancing's `select` (round-robin and consistent hashing) at the same N.
//!
//! A waypost pick is `Balance::pick`: the same lock-free pick a `call` makes (load the table,
//! choose, read the load counters), without sending anything. A pingora pick is
//! `LoadBalancer::select(key, 256)`. Times are per pick, per thread.
//!
//! `rebuild`: one endpoint leaves or joins (alternately) until the new table is visible to
//! picks, against pingora's `LoadBalancer::update` with a discovery answering the two sets in
//! turn. `maglev_build`: the Maglev table alone.
//!
//! ```text
//! cargo bench --manifest-path benches/peers/Cargo.toml --bench pick
//! cargo bench --manifest-path benches/peers/Cargo.toml --bench pick -- rebuild
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use waypost_balance::{Balance, BalanceConfig, Policy};
use waypost_bench_peers::{addresses, alternating_backends};
use waypost_discovery::{Endpoint, Publisher};

const SIZES: [usize; 4] = [3, 100, 1000, 10_000];

type Noop = tower::util::BoxCloneSyncService<(), (), Infallible>;

fn waypost(runtime: &tokio::runtime::Runtime, policy: Policy, n: usize) -> Balance<Noop> {
    let _guard = runtime.enter();
    let mut publisher = Publisher::new("bench");
    publisher.publish(addresses(n).into_iter().map(Endpoint::new));
    let balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig::with_policy(policy))
        .build(|_: &Endpoint| Noop::new(tower::service_fn(|_: ()| async { Ok(()) })))
        .expect("valid configuration");
    // The balancer keeps working after the publisher is gone (the set just stops changing).
    drop(publisher);
    balance
}

/// Runs `iters` picks on each of `threads` threads; returns the slowest thread's time.
fn threaded<P: FnMut(u64) + Send + 'static>(
    threads: usize,
    iters: u64,
    make: impl Fn() -> P,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut pick = make();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    pick(i);
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or_default()
}

fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn pick(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policies = [
        ("p2c_peak_ewma", Policy::p2c_peak_ewma()),
        ("p2c_least_pending", Policy::p2c_least_pending()),
        ("round_robin", Policy::round_robin()),
        ("weighted_random", Policy::weighted_random()),
        ("maglev", Policy::maglev()),
        ("ring_hash", Policy::ring_hash()),
    ];
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!(
            "pick/{threads} thread{}",
            if threads > 1 { "s" } else { "" }
        ));
        group
            .sample_size(30)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for n in SIZES {
            for (name, policy) in policies {
                let balance = waypost(&runtime, policy, n);
                let hashing = policy.is_hashing();
                group.bench_with_input(
                    BenchmarkId::new(format!("waypost {name}"), n),
                    &n,
                    |b, _| {
                        b.iter_custom(|iters| {
                            threaded(threads, iters, || {
                                let mut balance = balance.clone();
                                move |i| {
                                    black_box(balance.pick(hashing.then(|| key(i))));
                                }
                            })
                        })
                    },
                );
            }
            let addresses: Vec<String> = addresses(n).iter().map(ToString::to_string).collect();
            let round_robin: Arc<LoadBalancer<RoundRobin>> = Arc::new(
                LoadBalancer::try_from_iter(addresses.iter().map(String::as_str)).unwrap(),
            );
            let consistent: Arc<LoadBalancer<Consistent>> = Arc::new(
                LoadBalancer::try_from_iter(addresses.iter().map(String::as_str)).unwrap(),
            );
            group.bench_with_input(BenchmarkId::new("pingora round_robin", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    threaded(threads, iters, || {
                        let lb = Arc::clone(&round_robin);
                        move |_| {
                            black_box(lb.select(b"", 256));
                        }
                    })
                })
            });
            group.bench_with_input(BenchmarkId::new("pingora consistent", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    threaded(threads, iters, || {
                        let lb = Arc::clone(&consistent);
                        move |i| {
                            black_box(lb.select(&key(i).to_le_bytes(), 256));
                        }
                    })
                })
            });
        }
        group.finish();
    }
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group.sample_size(20);
    for n in [100, 1000, 10_000] {
        let keys: Vec<Vec<u8>> = addresses(n)
            .iter()
            .map(|a| a.to_string().into_bytes())
            .collect();
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let weights = vec![1; n];
        if n <= 1000 {
            group.bench_with_input(BenchmarkId::new("M=65537", n), &n, |b, _| {
                b.iter(|| waypost_balance::policy::MaglevTable::new(&keys, &weights, 65_537))
            });
        }
        // The default policy's size for N: 16 411 at 100, 131 101 at 1000, 1 048 583 at 10000.
        let size = waypost_balance::policy::maglev::table_size_for(n);
        group.bench_with_input(BenchmarkId::new("sized", n), &n, |b, _| {
            b.iter(|| waypost_balance::policy::MaglevTable::new(&keys, &weights, size))
        });
    }
    group.finish();
}

fn pingora_balancer<S>(n: usize) -> LoadBalancer<S>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    LoadBalancer::<S>::from_backends(alternating_backends(n))
}

fn rebuild(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(20);
    for n in [100, 1000, 10_000] {
        for (name, policy) in [
            ("p2c_least_pending", Policy::p2c_least_pending()),
            ("round_robin", Policy::round_robin()),
            ("maglev", Policy::maglev()),
            ("ring_hash", Policy::ring_hash()),
        ] {
            let _guard = runtime.enter();
            let full: Vec<Endpoint> = addresses(n).into_iter().map(Endpoint::new).collect();
            let less = full[..n - 1].to_vec();
            let mut publisher = Publisher::new("bench");
            publisher.publish(full.iter().cloned());
            let balance = Balance::builder(publisher.endpoints())
                .config(BalanceConfig::with_policy(policy))
                .build(|_: &Endpoint| Noop::new(tower::service_fn(|_: ()| async { Ok(()) })))
                .expect("valid configuration");
            let visible = |expected: usize| {
                runtime.block_on(async {
                    while balance.usable_endpoints() != expected {
                        tokio::task::yield_now().await;
                    }
                })
            };
            visible(n);
            let mut turn = 0u64;
            group.bench_with_input(
                BenchmarkId::new(format!("waypost {name}"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        turn += 1;
                        let (set, expected) = if turn % 2 == 1 {
                            (&less, n - 1)
                        } else {
                            (&full, n)
                        };
                        publisher.publish(set.iter().cloned());
                        visible(expected);
                    })
                },
            );
        }
        macro_rules! pingora {
            ($name:literal, $selection:ty) => {{
                let lb = pingora_balancer::<$selection>(n);
                runtime.block_on(lb.update()).expect("static discovery");
                group.bench_with_input(BenchmarkId::new($name, n), &n, |b, _| {
                    b.iter(|| runtime.block_on(lb.update()).expect("static discovery"))
                });
                black_box(lb.select(b"", 256));
            }};
        }
        pingora!("pingora round_robin", RoundRobin);
        pingora!("pingora consistent", Consistent);
    }
    group.finish();
}

criterion_group!(benches, pick, maglev_build, rebuild);
criterion_main!(benches);
