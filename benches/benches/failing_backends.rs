//! The setting of Buoyant's "Beyond Round Robin": 11 HTTP/2 backends on loopback answering in
//! about 10 ms, of which one fails fast (an error status after 1 ms) and one is slow (2 s);
//! requests arrive at a fixed rate (open loop) with a 1 s deadline. Reports the success rate,
//! latency percentiles (a missed deadline counts as 1 s) and how many requests each bad backend
//! received, for round-robin, P2C Peak EWMA alone, and P2C Peak EWMA with load feedback and
//! failure-percentage ejection; once with the fast failer answering 500 (a plain failure) and
//! once answering 503 (an overload signal, which load feedback reads).
//!
//! ```text
//! cargo bench -p waypost-benches --bench failing_backends
//! WAYPOST_RUN_SECONDS=60 cargo bench -p waypost-benches --bench failing_backends
//! ```
//!
//! Each run lasts 12 s unless `WAYPOST_RUN_SECONDS` says otherwise: what the balancer loses
//! while it learns is paid once per run, so longer runs show the steady state.

use std::time::Duration;

use waypost_balance::{BalanceConfig, LoadFeedback, OutlierDetection, Policy};
use waypost_tests::backend::{self, Backend};

#[path = "support/open_loop.rs"]
mod open_loop;
use open_loop::percentile;

const BACKENDS: usize = 11;
const DEADLINE: Duration = Duration::from_secs(1);
const HEALTHY: Duration = Duration::from_millis(10);
const FAILING: usize = 0;
const SLOW: usize = 1;

struct Outcome {
    latencies: Vec<Duration>,
    successes: usize,
    to_failing: u64,
    to_slow: u64,
}

async fn run(
    config: BalanceConfig,
    backends: &[Backend],
    error: u16,
    rate: u32,
    length: Duration,
) -> Outcome {
    // Warm the connections while every backend is healthy; the balancer then learns the bad
    // ones from the measured traffic alone.
    for backend in backends {
        backend.set_status(200);
        backend.set_latency(HEALTHY);
    }
    let (balance, _publisher) = open_loop::balancer(backends, config).await;
    let failing = &backends[FAILING];
    let slow = &backends[SLOW];
    failing.set_status(error);
    failing.set_latency(Duration::from_millis(1));
    slow.set_latency(Duration::from_secs(2));
    let (failing_before, slow_before) = (failing.requests(), slow.requests());
    let total = (rate as f64 * length.as_secs_f64()) as usize;
    let (successes, latencies) = open_loop::run(&balance, rate, total, DEADLINE, |_| {}).await;
    Outcome {
        latencies,
        successes,
        to_failing: failing.requests() - failing_before,
        to_slow: slow.requests() - slow_before,
    }
}

/// The configurations compared, each with load feedback and ejection stated.
fn configurations() -> Vec<(&'static str, BalanceConfig)> {
    let alone = |policy| BalanceConfig {
        outlier_detection: OutlierDetection::disabled(),
        load_feedback: None,
        ..BalanceConfig::with_policy(policy)
    };
    vec![
        ("round_robin", alone(Policy::round_robin())),
        ("peak_ewma", alone(Policy::p2c_peak_ewma())),
        (
            "peak_ewma+feedback+fail%",
            BalanceConfig {
                load_feedback: Some(LoadFeedback::default()),
                outlier_detection: OutlierDetection {
                    // Failure percentage only (no consecutive-failure rule), judged every
                    // second on endpoints with at least 5 requests in it: P2C sends a failing
                    // endpoint too few requests for the default volume (50 in 10 s).
                    consecutive_failures: 0,
                    interval: Duration::from_secs(1),
                    failure_percentage_threshold: Some(50),
                    failure_percentage_request_volume: 5,
                    ..OutlierDetection::default()
                },
                ..BalanceConfig::with_policy(Policy::p2c_peak_ewma())
            },
        ),
        ("defaults", BalanceConfig::default()),
    ]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (rate, length) = if full {
        let seconds = std::env::var("WAYPOST_RUN_SECONDS")
            .ok()
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(12);
        (500, Duration::from_secs(seconds))
    } else {
        (100, Duration::from_secs(2))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let backends = backend::start_many(BACKENDS).await.expect("loopback backends start");
        println!(
            "{BACKENDS} backends at ~{HEALTHY:?}; backend {FAILING} answers an error status after 1 ms, backend {SLOW} answers after 2 s; {rate} requests/s for {length:?}; deadline {DEADLINE:?}"
        );
        println!(
            "{:<6} {:<26} {:>9} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
            "error", "balancer", "requests", "success", "p50", "p99", "p99.9", "to fail", "to slow"
        );
        for error in [500, 503] {
            for (name, config) in configurations() {
                let outcome = run(config, &backends, error, rate, length).await;
                let n = outcome.latencies.len();
                println!(
                    "{:<6} {:<26} {:>9} {:>8.2}% {:>10.1?} {:>10.1?} {:>10.1?} {:>8} {:>8}",
                    error,
                    name,
                    n,
                    outcome.successes as f64 * 100.0 / n as f64,
                    percentile(&outcome.latencies, 0.50),
                    percentile(&outcome.latencies, 0.99),
                    percentile(&outcome.latencies, 0.999),
                    outcome.to_failing,
                    outcome.to_slow,
                );
                // Let the slow backend finish what the run left it.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    });
}
