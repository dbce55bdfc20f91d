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

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, BalanceConfig, HttpStatus, LoadFeedback, OutlierDetection, Policy};
use waypost_discovery::{Endpoint, Publisher};
use waypost_tests::backend::{self, Backend};

const BACKENDS: usize = 11;
const DEADLINE: Duration = Duration::from_secs(1);
const HEALTHY: Duration = Duration::from_millis(10);
const FAILING: usize = 0;
const SLOW: usize = 1;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type EndpointService = tower::util::BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<hyper::body::Incoming>,
    hyper_util::client::legacy::Error,
>;

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
    let mut publisher = Publisher::new("static:///eleven");
    publisher.publish(backends.iter().map(|b| Endpoint::new(b.address())));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let balance = Balance::builder(publisher.endpoints())
        .config(config)
        .classify(HttpStatus)
        .build(move |endpoint: &Endpoint| {
            let client = client.clone();
            let uri: http::Uri = format!("http://{}/", endpoint.address()).parse().unwrap();
            EndpointService::new(tower::service_fn(
                move |mut request: http::Request<Empty<Bytes>>| {
                    *request.uri_mut() = uri.clone();
                    client.request(request)
                },
            ))
        })
        .unwrap();

    // Warm the connections while every backend is healthy; the balancer then learns the bad
    // ones from the measured traffic alone.
    for backend in backends {
        backend.set_status(200);
        backend.set_latency(HEALTHY);
    }
    for _ in 0..BACKENDS * 4 {
        let _ = balance
            .clone()
            .oneshot(http::Request::new(Empty::new()))
            .await;
    }
    let failing = &backends[FAILING];
    let slow = &backends[SLOW];
    failing.set_status(error);
    failing.set_latency(Duration::from_millis(1));
    slow.set_latency(Duration::from_secs(2));
    let (failing_before, slow_before) = (failing.requests(), slow.requests());

    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let total = (rate as f64 * length.as_secs_f64()) as usize;
    let mut requests = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        let mut balance = balance.clone();
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            // The caller's deadline: a request past it is dropped (cancelled).
            let result = tokio::time::timeout(DEADLINE, async {
                balance
                    .ready()
                    .await?
                    .call(http::Request::new(Empty::new()))
                    .await
            })
            .await;
            let ok = matches!(&result, Ok(Ok(response)) if response.status().is_success());
            (ok, sent.elapsed().min(DEADLINE))
        }));
    }
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(total),
        successes: 0,
        to_failing: 0,
        to_slow: 0,
    };
    for request in requests {
        let (ok, latency) = request.await.unwrap();
        outcome.successes += usize::from(ok);
        outcome.latencies.push(latency);
    }
    outcome.to_failing = failing.requests() - failing_before;
    outcome.to_slow = slow.requests() - slow_before;
    outcome.latencies.sort_unstable();
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
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
