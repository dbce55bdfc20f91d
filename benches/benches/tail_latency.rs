//! Tail latency when one backend turns slow: 11 HTTP/2 backends on loopback answering in about
//! 10 ms, one of them slowed to about 200 ms for the middle half of the run; requests arrive at
//! a fixed rate (open loop) and time out after 100 ms. Reports the success rate and latency
//! percentiles for round-robin, P2C least pending and P2C Peak EWMA (timeouts count as 100 ms).
//!
//! ```text
//! cargo bench -p waypost-benches --bench tail_latency
//! ```

use std::time::Duration;

use waypost_balance::{BalanceConfig, OutlierDetection, Policy};
use waypost_tests::backend::{self, Backend};

#[path = "support/open_loop.rs"]
mod open_loop;
use open_loop::percentile;

const BACKENDS: usize = 11;
const TIMEOUT: Duration = Duration::from_millis(100);

async fn run(
    policy: Policy,
    backends: &[Backend],
    rate: u32,
    length: Duration,
) -> (usize, Vec<Duration>) {
    let (balance, _publisher) = open_loop::balancer(
        backends,
        BalanceConfig {
            // Measure the policy alone, not ejection.
            outlier_detection: OutlierDetection::disabled(),
            ..BalanceConfig::with_policy(policy)
        },
    )
    .await;
    let slow = &backends[0];
    let total = (rate as f64 * length.as_secs_f64()) as usize;
    let outcome = open_loop::run(&balance, rate, total, TIMEOUT, |i| {
        if i == total / 4 {
            slow.set_latency(Duration::from_millis(200));
        }
        if i == total * 3 / 4 {
            slow.set_latency(Duration::from_millis(10));
        }
    })
    .await;
    slow.set_latency(Duration::from_millis(10));
    outcome
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (rate, length) = if full {
        (500, Duration::from_secs(12))
    } else {
        (200, Duration::from_secs(2))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let backends = backend::start_many(BACKENDS).await.expect("loopback backends start");
        for backend in &backends {
            backend.set_latency(Duration::from_millis(10));
        }
        println!(
            "{BACKENDS} backends at ~10 ms, backend 0 at ~200 ms for the middle half; {rate} requests/s for {length:?}; timeout {TIMEOUT:?}"
        );
        println!(
            "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "policy", "requests", "success", "p50", "p99", "p99.9"
        );
        for (name, policy) in [
            ("round_robin", Policy::round_robin()),
            ("p2c_least_pending", Policy::p2c_least_pending()),
            ("p2c_peak_ewma", Policy::p2c_peak_ewma()),
        ] {
            let (successes, latencies) = run(policy, &backends, rate, length).await;
            let n = latencies.len();
            println!(
                "{:<20} {:>9} {:>9.2}% {:>10.1?} {:>10.1?} {:>10.1?}",
                name,
                n,
                successes as f64 * 100.0 / n as f64,
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
                percentile(&latencies, 0.999),
            );
        }
    });
}
