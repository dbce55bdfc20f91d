//! End to end: the `metrics` feature's series for real clients against real servers on
//! loopback. A hyper client over a closed port, a server answering 503 and a healthy server
//! counts its connect failures, unsent resends, retries and every outcome, and a tonic channel
//! counts its calls and their latencies; the counts agree with what the servers saw.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Empty;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::{OutlierDetection, Policy};
use waypost::hyper::{HttpClient, RetryBudget};
use waypost_tests::backend::Backend;
use waypost_tests::grpc::GrpcBackend;

/// `(name, labels, value)` of a recorded series.
type Series = (String, Vec<(String, String)>, DebugValue);

/// Every recorded series (a snapshot drains the recorder: take one).
fn recorded(snapshotter: &Snapshotter) -> Vec<Series> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, value)
        })
        .collect()
}

/// The sum of the counter `name` over the series whose labels include all of `with`.
fn counter(recorded: &[Series], name: &str, with: &[(&str, &str)]) -> u64 {
    recorded
        .iter()
        .filter(|(key, labels, _)| {
            key == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Counter(count) => *count,
            other => panic!("{name} is a counter, not {other:?}"),
        })
        .sum()
}

/// Latency samples recorded for `endpoint`.
fn latencies(recorded: &[Series], endpoint: &str) -> usize {
    recorded
        .iter()
        .filter(|(key, labels, _)| {
            key == "waypost_request_duration_seconds"
                && labels.iter().any(|(k, v)| k == "endpoint" && v == endpoint)
        })
        .map(|(_, _, value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            other => panic!("a histogram, not {other:?}"),
        })
        .sum()
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// A current-thread runtime: the thread-local recorder sees every task of the clients.
#[tokio::test(flavor = "current_thread")]
async fn hyper_client_counts_connect_failures_resends_retries_and_outcomes() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let closed = closed_port().await;
    let refusing = Backend::start().await.unwrap();
    refusing.set_status(503);
    let healthy = Backend::start().await.unwrap();
    let target = format!(
        "static:///{closed},{},{}",
        refusing.address(),
        healthy.address()
    );
    let client: HttpClient<Empty<Bytes>> = waypost::Builder::new(&target)
        .unwrap()
        .policy(Policy::round_robin())
        .outlier_detection(OutlierDetection::disabled())
        // Every refusal is retried: the refusing server is not passed over.
        .load_feedback(None)
        .retry_idempotent(RetryBudget::default())
        .http_client()
        .unwrap();
    let requests = 12;
    for n in 0..requests {
        let request = http::Request::get("/metrics").body(Empty::new()).unwrap();
        let response = client
            .request(request)
            .await
            .unwrap_or_else(|error| panic!("request {n}: {error}"));
        assert_eq!(
            response.status(),
            200,
            "request {n} was answered in the end"
        );
    }

    let recorded = recorded(&snapshotter);
    let closed = closed.to_string();
    let refusing_address = refusing.address().to_string();
    let healthy_address = healthy.address().to_string();
    let of = |endpoint: &str, outcome: &str| {
        counter(
            &recorded,
            "waypost_responses_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
        )
    };
    // Every request ended on the healthy server.
    assert_eq!(healthy.requests(), requests);
    assert_eq!(of(&healthy_address, "success"), requests);
    // Each answer of the refusing server is an overloaded outcome, then a retry.
    let refused = refusing.requests();
    assert!(refused >= 1, "round-robin reached the refusing server");
    assert_eq!(of(&refusing_address, "overloaded"), refused);
    // The closed port: a connect failure, an unreachable outcome and an unsent resend each
    // time a request was sent there.
    let unreachable = of(&closed, "unreachable");
    assert!(unreachable >= 1, "round-robin tried the closed port first");
    assert!(
        counter(
            &recorded,
            "waypost_connect_failures_total",
            &[("endpoint", &closed)]
        ) >= unreachable
    );
    assert_eq!(
        counter(&recorded, "waypost_unsent_resends_total", &[]),
        unreachable
    );
    assert_eq!(counter(&recorded, "waypost_retries_total", &[]), refused);
    // Picks and outcomes agree, and each outcome came with its latency.
    for endpoint in [&closed, &refusing_address, &healthy_address] {
        let picks = counter(&recorded, "waypost_picks_total", &[("endpoint", endpoint)]);
        let ended = counter(
            &recorded,
            "waypost_responses_total",
            &[("endpoint", endpoint)],
        );
        assert_eq!(picks, ended, "{endpoint}: every request sent there ended");
        assert_eq!(latencies(&recorded, endpoint) as u64, ended);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tonic_channel_counts_calls_and_their_latencies() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let backends = [
        GrpcBackend::start().await.unwrap(),
        GrpcBackend::start().await.unwrap(),
    ];
    let target = format!(
        "static:///{},{}",
        backends[0].address(),
        backends[1].address()
    );
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .policy(Policy::round_robin())
        .tonic_channel()
        .unwrap();
    let calls = 10;
    for _ in 0..calls {
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    let recorded = recorded(&snapshotter);
    let label = waypost::balance::metrics::target_label(&target);
    assert!(label.starts_with("static:///") && label.ends_with("+1"));
    assert_eq!(
        counter(
            &recorded,
            "waypost_responses_total",
            &[("target", &label), ("outcome", "success")]
        ),
        calls
    );
    for backend in &backends {
        let endpoint = backend.address().to_string();
        let answered = backend.requests();
        assert_eq!(
            counter(&recorded, "waypost_picks_total", &[("endpoint", &endpoint)]),
            answered
        );
        assert_eq!(latencies(&recorded, &endpoint) as u64, answered);
    }
    assert_eq!(counter(&recorded, "waypost_connect_failures_total", &[]), 0);
    assert_eq!(counter(&recorded, "waypost_retries_total", &[]), 0);
}
