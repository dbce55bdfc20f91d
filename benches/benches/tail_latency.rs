//! Tail latency when one backend turns slow: 11 HTTP/2 backends on loopback answering in about
//! 10 ms, one of them slowed to about 200 ms for the middle half of the run; requests arrive at
//! a fixed rate (open loop) and time out after 100 ms. Reports the success rate and latency
//! percentiles for round-robin, P2C least pending and P2C Peak EWMA (timeouts count as 100 ms).
//!
//! ```text
//! cargo bench -p waypost-benches --bench tail_latency
//! ```

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, BalanceConfig, HttpStatus, OutlierDetection, Policy};
use waypost_discovery::{Endpoint, Publisher};
use waypost_tests::backend::{self, Backend};

const BACKENDS: usize = 11;
const TIMEOUT: Duration = Duration::from_millis(100);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type EndpointService = tower::util::BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<hyper::body::Incoming>,
    hyper_util::client::legacy::Error,
>;

struct Outcome {
    latencies: Vec<Duration>,
    successes: usize,
}

async fn run(policy: Policy, backends: &[Backend], rate: u32, length: Duration) -> Outcome {
    let mut publisher = Publisher::new("static:///eleven");
    publisher.publish(backends.iter().map(|b| Endpoint::new(b.address())));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            // Measure the policy alone, not ejection.
            outlier_detection: OutlierDetection::disabled(),
            ..BalanceConfig::with_policy(policy)
        })
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

    // Warm the connections.
    for _ in 0..BACKENDS * 4 {
        let _ = balance
            .clone()
            .oneshot(http::Request::new(Empty::new()))
            .await;
    }

    let slow = &backends[0];
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let total = (rate as f64 * length.as_secs_f64()) as usize;
    let mut requests = Vec::with_capacity(total);
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        if i == total / 4 {
            slow.set_latency(Duration::from_millis(200));
        }
        if i == total * 3 / 4 {
            slow.set_latency(Duration::from_millis(10));
        }
        let mut balance = balance.clone();
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = tokio::time::timeout(TIMEOUT, async {
                balance
                    .ready()
                    .await?
                    .call(http::Request::new(Empty::new()))
                    .await
            })
            .await;
            let ok = matches!(&result, Ok(Ok(response)) if response.status().is_success());
            (ok, sent.elapsed().min(TIMEOUT))
        }));
    }
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(total),
        successes: 0,
    };
    for request in requests {
        let (ok, latency) = request.await.unwrap();
        outcome.successes += usize::from(ok);
        outcome.latencies.push(latency);
    }
    let _ = started;
    outcome.latencies.sort_unstable();
    slow.set_latency(Duration::from_millis(10));
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
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
            let outcome = run(policy, &backends, rate, length).await;
            let n = outcome.latencies.len();
            println!(
                "{:<20} {:>9} {:>9.2}% {:>10.1?} {:>10.1?} {:>10.1?}",
                name,
                n,
                outcome.successes as f64 * 100.0 / n as f64,
                percentile(&outcome.latencies, 0.50),
                percentile(&outcome.latencies, 0.99),
                percentile(&outcome.latencies, 0.999),
            );
        }
    });
}
