//! End to end: active gRPC health checks (`Builder::grpc_health_check`) against tonic-health's
//! own `grpc.health.v1.Health` service on real tonic servers on loopback: `NOT_SERVING` takes a
//! backend out of new calls and `SERVING` brings it back, a service the server does not know
//! counts as not serving, a server without the health service is treated as healthy, and a
//! backend that stops serving while calls are in flight lets them finish. And HTTP probes
//! (`Builder::http_health_check`) against hyper servers: a backend answering 500, or slower than
//! the probe's timeout, is taken out after the unhealthy threshold and comes back after the
//! healthy one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::{BalanceConfig, OutlierDetection, Policy};
use waypost::tonic::Channel;
use waypost_tests::dns::PATIENCE;
use waypost_tests::grpc::{self, GrpcBackend, answered_by};

const SERVICE: &str = "greeter.Greeter";

fn channel(backends: &[GrpcBackend], service: &str) -> Channel {
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|backend| backend.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    waypost::Builder::new(&target)
        .unwrap()
        .balance_config(BalanceConfig {
            outlier_detection: OutlierDetection::disabled(),
            ..BalanceConfig::with_policy(Policy::round_robin())
        })
        .grpc_health_check(service)
        .tonic_channel()
        .unwrap()
}

/// `n` calls of the whole server's health check (what the application calls does not matter:
/// the channel's own watch streams are about `SERVICE`); answers per backend.
async fn calls(channel: &Channel, n: usize) -> BTreeMap<SocketAddr, usize> {
    let mut answers = BTreeMap::new();
    for _ in 0..n {
        let response = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("a usable backend answers");
        *answers.entry(answered_by(&response).unwrap()).or_default() += 1;
    }
    answers
}

/// Waits until the balancer behind `snapshot` sees `address` serving or not (and the table
/// follows).
async fn until_serving<F, Fut>(snapshot: F, address: SocketAddr, serving: bool)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = waypost::balance::Snapshot>,
{
    tokio::time::timeout(PATIENCE, async {
        loop {
            if snapshot().await.endpoints.iter().any(|endpoint| {
                endpoint.address == address
                    && endpoint.serving == serving
                    && endpoint.usable == serving
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{address} serving={serving} in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_takes_a_backend_out_and_serving_brings_it_back() {
    let backends = grpc::start_many(3).await.unwrap();
    for backend in &backends {
        backend.set_serving(SERVICE, true).await;
    }
    let channel = channel(&backends, SERVICE);
    // The watch streams start with the connections.
    let answers = calls(&channel, 30).await;
    assert_eq!(answers.len(), 3, "{answers:?}");

    let out = backends[1].address();
    backends[1].set_serving(SERVICE, false).await;
    until_serving(|| channel.snapshot(), out, false).await;
    let answers = calls(&channel, 300).await;
    assert_eq!(
        answers.get(&out),
        None,
        "no call while NOT_SERVING: {answers:?}"
    );
    assert_eq!(answers.values().sum::<usize>(), 300);

    backends[1].set_serving(SERVICE, true).await;
    until_serving(|| channel.snapshot(), out, true).await;
    let answers = calls(&channel, 300).await;
    assert!(
        answers.get(&out).copied().unwrap_or_default() >= 50,
        "back after SERVING: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_counts_as_not_serving() {
    let backends = grpc::start_many(3).await.unwrap();
    // Two backends know the service; the third has never heard of it. (tonic-health answers
    // such a Watch with a NOT_FOUND error rather than a SERVICE_UNKNOWN status; either way the
    // endpoint is out, and its watcher asks again after the reconnect backoff.)
    for backend in &backends[..2] {
        backend.set_serving(SERVICE, true).await;
    }
    let channel = channel(&backends, SERVICE);
    calls(&channel, 10).await;
    until_serving(|| channel.snapshot(), backends[2].address(), false).await;
    let answers = calls(&channel, 200).await;
    assert_eq!(answers.get(&backends[2].address()), None, "{answers:?}");
    assert_eq!(answers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_health_service_is_treated_as_healthy() {
    let backends = grpc::start_many(2).await.unwrap();
    backends[0].set_serving(SERVICE, true).await;
    // The second answers the Watch call UNIMPLEMENTED (ordinary calls still work).
    backends[1].set_health_service_missing(true);
    let channel = channel(&backends, SERVICE);
    // Calls make the connections; each connection's watcher asks the backend to Watch.
    tokio::time::timeout(PATIENCE, async {
        while backends[1].watches() == 0 {
            let _ = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the watcher asks the backend without a health service");
    // UNIMPLEMENTED leaves the endpoint serving. (Taken for a failure, it would be marked not
    // serving and asked again after the 1 s reconnect backoff: a second Watch call.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(backends[1].watches(), 1, "asked once per connection");
    let snapshot = channel.snapshot().await;
    assert!(
        snapshot
            .endpoints
            .iter()
            .all(|endpoint| endpoint.serving && endpoint.usable)
    );
    // Plain health calls to it fail (UNIMPLEMENTED) but reach it: it is picked.
    let mut reached = false;
    for _ in 0..20 {
        let before = backends[1].requests();
        let _ = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if backends[1].requests() > before {
            reached = true;
            break;
        }
    }
    assert!(reached, "the backend without a health service takes calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_when_a_backend_stops_serving() {
    let backends = grpc::start_many(2).await.unwrap();
    for backend in &backends {
        backend.set_serving(SERVICE, true).await;
    }
    let channel = channel(&backends, SERVICE);
    calls(&channel, 10).await;
    for backend in &backends {
        backend.set_latency(Duration::from_millis(800));
    }
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|response| answered_by(&response).unwrap())
            })
        })
        .collect();
    // Both backends have calls in flight before the first one stops serving.
    tokio::time::timeout(PATIENCE, async {
        while channel.in_flight().iter().filter(|(_, n)| *n > 0).count() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the calls reach both backends");
    backends[0].set_serving(SERVICE, false).await;
    let mut answered = Vec::new();
    for call in in_flight {
        answered.push(call.await.unwrap().expect("calls in flight finish"));
    }
    assert!(
        answered.contains(&backends[0].address()),
        "round-robin had sent some to the backend that stopped serving: {answered:?}"
    );
}

/// One GET through the HTTP client: the backend that answered (whatever the status).
async fn http_get(
    client: &waypost::hyper::HttpClient<http_body_util::Empty<bytes::Bytes>>,
) -> SocketAddr {
    let request = http::Request::get("/work")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("an answer");
    response
        .headers()
        .get("x-backend")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
        .expect("x-backend")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probes_take_a_failing_or_slow_backend_out_and_bring_it_back() {
    use waypost::hyper::HttpProbe;
    let backends = waypost_tests::backend::start_many(3).await.unwrap();
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|backend| backend.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let client = waypost::Builder::new(&target)
        .unwrap()
        .balance_config(BalanceConfig {
            outlier_detection: OutlierDetection::disabled(),
            ..BalanceConfig::with_policy(Policy::round_robin())
        })
        .http_health_check(HttpProbe {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            ..HttpProbe::new("/healthz")
        })
        .http_client::<http_body_util::Empty<bytes::Bytes>>()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(http_get(&client).await);
    }
    assert_eq!(seen.len(), 3);

    // A 500 on every path, the probe's included: out after two failed probes.
    let failing = backends[0].address();
    backends[0].set_status(500);
    until_serving(|| client.snapshot(), failing, false).await;
    for _ in 0..200 {
        assert_ne!(http_get(&client).await, failing);
    }
    backends[0].set_status(200);
    until_serving(|| client.snapshot(), failing, true).await;
    let mut back = 0;
    for _ in 0..90 {
        back += usize::from(http_get(&client).await == failing);
    }
    assert!(back >= 20, "back after two passed probes: {back} of 90");

    // Slower than the probe's timeout: out as well.
    let slow = backends[1].address();
    backends[1].set_latency(Duration::from_secs(1));
    until_serving(|| client.snapshot(), slow, false).await;
    backends[1].set_latency(Duration::ZERO);
    until_serving(|| client.snapshot(), slow, true).await;
}
