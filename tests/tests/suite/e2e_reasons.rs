//! End to end: what a failed call says. Real tonic servers and the in-process DNS server on
//! loopback; the status a generated client sees carries the reason and the root cause, and names
//! the target once.

use std::error::Error as _;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::tonic::Channel;
use waypost_tests::dns::options_for;
use waypost_tests::dns::server::{DnsServer, Mode};
use waypost_tests::grpc::GrpcBackend;
use waypost_tests::{PATIENCE, wait_for_health, wait_for_set};

const NAME: &str = "gone.prod.svc.cluster.local";

async fn call(channel: Channel) -> Result<(), tonic::Status> {
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

fn cause(status: &tonic::Status) -> &waypost::Error {
    status
        .source()
        .and_then(|source| source.downcast_ref::<waypost::Error>())
        .expect("the waypost error is the status's source")
}

fn assert_names_target_once(status: &tonic::Status, target: &str) {
    assert_eq!(
        status.message().matches(target).count(),
        1,
        "names `{target}` once: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_confirmed_nxdomain_fails_calls_at_once() {
    let server = DnsServer::start().await.unwrap();
    let target = format!("dns:///{NAME}.:50051");
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .dns_options(options_for(server.address()))
        // Calls that waited for endpoints would wait an hour.
        .wait_for_endpoints(Duration::from_secs(3600))
        .tonic_channel()
        .unwrap();
    wait_for_set(channel.endpoints(), "the NXDOMAIN confirmed", |set| {
        set.revision() > 0 && set.is_empty()
    })
    .await;
    wait_for_health(channel.endpoints(), "a current source", |health| {
        health.is_current()
    })
    .await;
    let status = tokio::time::timeout(PATIENCE, call(channel.clone()))
        .await
        .expect("the call fails without waiting for endpoints")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no endpoints"), "{status:?}");
    assert_names_target_once(&status, &target);
    assert_eq!(cause(&status).kind(), waypost::ErrorKind::NoEndpoints);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_ends_while_discovery_fails_carries_the_discovery_error() {
    let server = DnsServer::start().await.unwrap();
    server.set_mode(Mode::ServFail);
    let target = format!("dns:///{NAME}.:50051");
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .dns_options(options_for(server.address()))
        .wait_for_endpoints(Duration::from_secs(3600))
        .timeout(Duration::from_millis(300))
        .tonic_channel()
        .unwrap();
    let health = wait_for_health(channel.endpoints(), "a failing source", |health| {
        health.is_failing()
    })
    .await;
    let detail = health.last_error().unwrap().detail().to_owned();
    let status = call(channel.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let message = status.message();
    assert!(message.contains("waiting for an endpoint"), "{message}");
    assert!(message.contains("discovery is failing"), "{message}");
    assert!(
        message.contains(&detail),
        "the source's error `{detail}` in: {message}"
    );
    assert_names_target_once(&status, &target);
    let error = cause(&status);
    assert!(error.is_timeout());
    let reason = error
        .source()
        .and_then(|source| source.downcast_ref::<waypost::Error>())
        .expect("the reason is the timeout's source");
    assert_eq!(reason.kind(), waypost::ErrorKind::Discovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_a_crash_says_what_happened_to_the_connection() {
    let backend = GrpcBackend::start().await.unwrap();
    backend.set_latency(Duration::from_secs(30));
    let target = format!("static:///{}", backend.address());
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .tonic_channel()
        .unwrap();
    let requests_before = backend.requests();
    let pending = tokio::spawn(call(channel.clone()));
    waypost_tests::eventually("the call reached the backend", || {
        backend.requests() > requests_before
    })
    .await;
    backend.kill();
    let status = pending.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The deepest cause (hyper's or the OS's words for the lost connection) is in the message.
    let mut deepest: &dyn std::error::Error = cause(&status);
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    assert!(
        status.message().contains(&deepest.to_string()),
        "the root cause `{deepest}` in: {}",
        status.message()
    );
    assert!(
        status.message().len() > format!("`{target}`: the request failed").len(),
        "{}",
        status.message()
    );
    assert_names_target_once(&status, &target);
}
