//! Memory per endpoint of a balancer, counted by an instrumented global allocator: everything
//! `Balance` allocates for N endpoints (slots, per-endpoint state, the background task's
//! records, the pick table), beside the discovery set it reads (which the source owns and
//! any balancer shares). The endpoint service is a zero-sized no-op, so the figures are the
//! balancer's own overhead; a real client adds its connection.
//!
//! ```text
//! cargo bench -p waypost-benches --bench balance_memory
//! ```

use std::alloc::System;
use std::net::SocketAddr;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use waypost_balance::{Balance, BalanceConfig, Policy};
use waypost_discovery::{Endpoint, Publisher};

#[path = "support/noop.rs"]
mod noop;
use noop::Noop;

#[path = "support/memory.rs"]
mod memory;
use memory::live_bytes;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn addresses(n: usize) -> impl Iterator<Item = SocketAddr> {
    (0..n).map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080)))
}

/// (set bytes, balancer bytes) for `n` endpoints under `policy`.
fn measure(runtime: &tokio::runtime::Runtime, policy: Policy, n: usize) -> (isize, isize) {
    let _guard = runtime.enter();
    let region = Region::new(GLOBAL);
    let mut publisher = Publisher::new("static:///bench");
    publisher.publish(addresses(n).map(Endpoint::new));
    let set_bytes = live_bytes(&region);

    let region = Region::new(GLOBAL);
    let balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig::with_policy(policy))
        .build(|_: &Endpoint| Noop)
        .expect("valid configuration");
    runtime.block_on(async {
        while balance.usable_endpoints() < n {
            tokio::task::yield_now().await;
        }
        // Let the background task settle on the first table.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    let balance_bytes = live_bytes(&region);
    drop(balance);
    drop(publisher);
    // The background task ends once the last clone is gone: let it, so that what it frees is
    // not counted against the next measurement.
    runtime.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    (set_bytes, balance_bytes)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else filters the policies by substring.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let policies = [
        ("p2c_peak_ewma", Policy::p2c_peak_ewma()),
        ("p2c_least_pending", Policy::p2c_least_pending()),
        ("round_robin", Policy::round_robin()),
        ("maglev", Policy::maglev()),
        ("ring_hash", Policy::ring_hash()),
    ];
    println!("bytes per endpoint (instrumented allocator, live after the first table)");
    println!(
        "{:<20}{:>8}{:>18}{:>18}",
        "policy", "N", "balancer", "discovery set"
    );
    for (name, policy) in policies {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        for n in [100, 1_000, 10_000] {
            let (set, balance) = measure(&runtime, policy, n);
            println!(
                "{name:<20}{n:>8}{:>18.1}{:>18.1}",
                balance as f64 / n as f64,
                set as f64 / n as f64
            );
        }
    }
}
