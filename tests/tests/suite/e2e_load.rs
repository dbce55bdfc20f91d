//! End to end: load feedback and the per-endpoint concurrency limit against real tonic and
//! hyper servers on loopback.
//!
//! - A tonic server answering `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` gets no new
//!   call for that long, then its share again; an idempotent call it refused goes again no
//!   sooner than the pushback, and not at all when the pushback says never.
//! - A hyper server answering 503 or 429 with `Retry-After` gets no new request for that long.
//! - With a limit of one call per endpoint, no server ever sees two at once; a call that finds
//!   every endpoint busy fails unsent (`UNAVAILABLE` naming the limit), or waits for room.
//!
//! Durations are lower bounds only (a pushback is never cut short) or long enough that no
//! machine is that slow (a 60 s pushback while a few hundred loopback calls run).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::{BalanceConfig, ConcurrencyLimit, OutlierDetection, Policy};
use waypost::tonic::Channel;
use waypost_tests::backend::{self, Backend};
use waypost_tests::dns::PATIENCE;
use waypost_tests::grpc::{self, GrpcBackend, answered_by};

fn target(addresses: impl IntoIterator<Item = SocketAddr>) -> String {
    format!(
        "static:///{}",
        addresses
            .into_iter()
            .map(|address| address.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn grpc_target(backends: &[GrpcBackend]) -> String {
    target(backends.iter().map(GrpcBackend::address))
}

/// Round-robin, so that every backend gets its turn, and no ejection: these tests are about
/// what happens besides it.
fn round_robin() -> BalanceConfig {
    BalanceConfig {
        outlier_detection: OutlierDetection::disabled(),
        ..BalanceConfig::with_policy(Policy::round_robin())
    }
}

/// One call: the backend that answered, or the status code and message.
async fn check(channel: Channel, idempotent: bool) -> Result<SocketAddr, (tonic::Code, String)> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if idempotent {
        request.extensions_mut().insert(waypost::tonic::Idempotent);
    }
    match HealthClient::new(channel).check(request).await {
        Ok(response) => Ok(answered_by(&response).expect("x-backend")),
        Err(status) => Err((status.code(), status.message().to_owned())),
    }
}

/// Calls until one reaches `backend` (it answers with an error then); panics if none does
/// within the patience.
async fn until_refused_by(channel: &Channel, backend: &GrpcBackend) -> (tonic::Code, String) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let before = backend.requests();
            let result = check(channel.clone(), false).await;
            if backend.requests() > before {
                return result.expect_err("the refusing backend answers with an error");
            }
        }
    })
    .await
    .expect("round-robin reaches every backend")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_pushback_keeps_new_calls_away_for_that_long() {
    let backends = grpc::start_many(3).await.unwrap();
    let channel = waypost::Builder::new(&grpc_target(&backends))
        .unwrap()
        .balance_config(round_robin())
        .tonic_channel()
        .unwrap();
    backends[1].set_refusing(Some((tonic::Code::ResourceExhausted, Some("60000"))));
    let (code, _) = until_refused_by(&channel, &backends[1]).await;
    assert_eq!(code, tonic::Code::ResourceExhausted);
    // The backend recovers at once, but asked for 60 s: no call goes there meanwhile.
    backends[1].set_refusing(None);
    let before = backends[1].requests();
    for _ in 0..300 {
        let answered = check(channel.clone(), false).await.unwrap();
        assert_ne!(answered, backends[1].address());
    }
    assert_eq!(backends[1].requests(), before);

    // A short pushback: the backend gets its share again once it is over.
    let channel = waypost::Builder::new(&grpc_target(&backends))
        .unwrap()
        .balance_config(round_robin())
        .tonic_channel()
        .unwrap();
    backends[2].set_refusing(Some((tonic::Code::Unavailable, Some("300"))));
    until_refused_by(&channel, &backends[2]).await;
    backends[2].set_refusing(None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = backends[2].requests();
    for _ in 0..90 {
        check(channel.clone(), false).await.unwrap();
    }
    assert!(
        backends[2].requests() - before >= 20,
        "back after the pushback: {} of 90",
        backends[2].requests() - before
    );
}

/// A round-robin channel over `backends` that retries idempotent calls.
fn retrying_channel(backends: &[GrpcBackend]) -> Channel {
    waypost::Builder::new(&grpc_target(backends))
        .unwrap()
        .balance_config(round_robin())
        .retry_idempotent(waypost::RetryBudget::default())
        .tonic_channel()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_is_resent_no_sooner_than_the_pushback() {
    let backends = grpc::start_many(2).await.unwrap();
    let channel = retrying_channel(&backends);
    backends[0].set_refusing(Some((tonic::Code::Unavailable, Some("700"))));
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            let before = backends[0].requests();
            let started = Instant::now();
            let result = check(channel.clone(), true).await;
            if backends[0].requests() > before {
                return (result, started.elapsed());
            }
        }
    })
    .await
    .expect("round-robin reaches the refusing backend");
    let (result, took) = outcome;
    assert_eq!(
        result.expect("resent to the other backend"),
        backends[1].address()
    );
    assert!(took >= Duration::from_millis(700), "resent after {took:?}");

    // A pushback that says never: the refusal is the answer.
    let channel = retrying_channel(&backends);
    backends[0].set_refusing(Some((tonic::Code::Unavailable, Some("-1"))));
    let result = tokio::time::timeout(PATIENCE, async {
        loop {
            let before = (backends[0].requests(), backends[1].requests());
            let result = check(channel.clone(), true).await;
            if backends[0].requests() > before.0 {
                assert_eq!(backends[1].requests(), before.1, "not resent");
                return result;
            }
        }
    })
    .await
    .expect("round-robin reaches the refusing backend");
    assert_eq!(result.unwrap_err().0, tonic::Code::Unavailable);
}

fn http_target(backends: &[Backend]) -> String {
    target(backends.iter().map(Backend::address))
}

async fn get(client: &waypost::hyper::HttpClient<Empty<Bytes>>) -> http::StatusCode {
    let request = http::Request::get("/").body(Empty::new()).unwrap();
    client.request(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_retry_after_keeps_new_requests_away_for_that_long() {
    for status in [503, 429] {
        let backends = backend::start_many(3).await.unwrap();
        let client = waypost::Builder::new(&http_target(&backends))
            .unwrap()
            .balance_config(round_robin())
            .http_client::<Empty<Bytes>>()
            .unwrap();
        backends[0].set_status(status);
        backends[0].set_retry_after(Some("60"));
        tokio::time::timeout(PATIENCE, async {
            while backends[0].requests() == 0 {
                get(&client).await;
            }
        })
        .await
        .expect("round-robin reaches every backend");
        backends[0].set_status(200);
        for _ in 0..300 {
            assert_eq!(get(&client).await, http::StatusCode::OK, "{status}");
        }
        assert_eq!(backends[0].requests(), 1, "{status}: passed over for 60 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_limit_of_one_no_server_sees_two_calls_and_the_rest_fail_unsent() {
    let backends = grpc::start_many(2).await.unwrap();
    for backend in &backends {
        backend.set_latency(Duration::from_millis(1500));
    }
    let channel = waypost::Builder::new(&grpc_target(&backends))
        .unwrap()
        .balance_config(round_robin())
        .concurrency_limit(ConcurrencyLimit::new(1))
        .tonic_channel()
        .unwrap();
    // Warm the connections up, one call at a time.
    for _ in 0..2 {
        check(channel.clone(), false).await.unwrap();
    }
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(check(channel.clone(), false)))
        .collect();
    tokio::time::timeout(PATIENCE, async {
        while channel.in_flight().iter().map(|(_, n)| n).sum::<u32>() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both calls start");
    let requests: u64 = backends.iter().map(GrpcBackend::requests).sum();
    for _ in 0..20 {
        let (code, message) = check(channel.clone(), false).await.unwrap_err();
        assert_eq!(code, tonic::Code::Unavailable, "{message}");
        assert!(
            message.contains("limit of 1 requests in flight"),
            "{message}"
        );
    }
    assert_eq!(
        backends.iter().map(GrpcBackend::requests).sum::<u64>(),
        requests,
        "refused calls were not sent"
    );
    for call in held {
        call.await.unwrap().unwrap();
    }
    assert!(backends.iter().all(|backend| backend.most_in_flight() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_waiting_limit_every_call_gets_through_one_at_a_time_per_server() {
    let backends = grpc::start_many(2).await.unwrap();
    for backend in &backends {
        backend.set_latency(Duration::from_millis(100));
    }
    let channel = waypost::Builder::new(&grpc_target(&backends))
        .unwrap()
        .balance_config(round_robin())
        .concurrency_limit(ConcurrencyLimit::new(1).waiting())
        .wait_for_endpoints(Duration::from_secs(60))
        .tonic_channel()
        .unwrap();
    // Ten callers at once on two servers that take one call each.
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(check(channel.clone(), false)))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert!(backends.iter().all(|backend| backend.most_in_flight() == 1));
    assert_eq!(backends.iter().map(GrpcBackend::requests).sum::<u64>(), 10);
}
