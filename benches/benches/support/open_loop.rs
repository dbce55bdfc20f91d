//! What the open-loop benchmarks (`tail_latency`, `failing_backends`) share: a `Balance` over
//! loopback backends with hyper-util HTTP/2 clients, a warm-up, requests at a fixed rate under a
//! deadline, and percentiles.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, BalanceConfig, HttpStatus};
use waypost_discovery::{Endpoint, Publisher};
use waypost_tests::backend::Backend;

type EndpointService = tower::util::BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<hyper::body::Incoming>,
    hyper_util::client::legacy::Error,
>;

/// The balancer under test.
pub(crate) type Balancer = Balance<EndpointService, waypost_balance::NoHashKey, HttpStatus>;

/// A balancer with `config` over `backends` (responses classified by status), its publisher
/// (keep it alive for the run), and connections warmed with a few requests per backend.
pub(crate) async fn balancer(backends: &[Backend], config: BalanceConfig) -> (Balancer, Publisher) {
    let mut publisher = Publisher::new("static:///open-loop");
    publisher.publish(backends.iter().map(|b| Endpoint::new(b.address())));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
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
    for _ in 0..backends.len() * 4 {
        let _ = balance
            .clone()
            .oneshot(http::Request::new(Empty::new()))
            .await;
    }
    (balance, publisher)
}

/// Sends `total` requests at `rate` per second (open loop: whatever the answers), each dropped
/// after `deadline`; `before(i)` runs before the `i`-th is sent. Returns the number that
/// succeeded (a 2xx in time) and every latency, sorted, a missed deadline counting as `deadline`.
pub(crate) async fn run(
    balance: &Balancer,
    rate: u32,
    total: usize,
    deadline: Duration,
    mut before: impl FnMut(usize),
) -> (usize, Vec<Duration>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        before(i);
        let mut balance = balance.clone();
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = tokio::time::timeout(deadline, async {
                balance
                    .ready()
                    .await?
                    .call(http::Request::new(Empty::new()))
                    .await
            })
            .await;
            let ok = matches!(&result, Ok(Ok(response)) if response.status().is_success());
            (ok, sent.elapsed().min(deadline))
        }));
    }
    let mut successes = 0;
    let mut latencies = Vec::with_capacity(total);
    for request in requests {
        let (ok, latency) = request.await.unwrap();
        successes += usize::from(ok);
        latencies.push(latency);
    }
    latencies.sort_unstable();
    (successes, latencies)
}

/// The `p`-quantile of sorted latencies.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}
