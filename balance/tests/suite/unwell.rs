//! Two bad endpoints among healthy ones, on tokio's paused clock: one answers an error at once,
//! one is slower than its callers wait. P2C with Peak EWMA alone (no ejection, no load
//! feedback) learns both within a few requests and then sends them almost nothing, including
//! when a pair draws the two together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Service, ServiceExt};
use waypost_balance::{
    Balance, BalanceConfig, Classify, LatencyClock, NoHashKey, Outcome, OutlierDetection, Policy,
};
use waypost_discovery::{Endpoint, Publisher};

const FAILING: u16 = 1;
const SLOW: u16 = 2;
const ENDPOINTS: u16 = 11;

/// The error of the failing endpoint.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

#[derive(Clone, Copy)]
struct ErrorsFail;

impl Classify<u16, Refused> for ErrorsFail {
    fn classify_response(&self, _: &u16) -> Outcome {
        Outcome::Success
    }

    fn classify_error(&self, _: &Refused) -> Outcome {
        Outcome::Failure
    }
}

type PortService = tower::util::BoxCloneSyncService<(), u16, Refused>;

/// Endpoints 1..=11 answering their port after 10 ms, except [`FAILING`] (an error after 1 ms)
/// and [`SLOW`] (after 2 s); counts the requests each received.
fn balance(
    publisher: &Publisher,
    received: Arc<Mutex<BTreeMap<u16, u32>>>,
) -> Balance<PortService, NoHashKey, ErrorsFail> {
    Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(5),
            latency_clock: LatencyClock::Tokio,
            outlier_detection: OutlierDetection::disabled(),
            load_feedback: None,
            ..BalanceConfig::with_policy(Policy::p2c_peak_ewma())
        })
        .classify(ErrorsFail)
        .build(move |endpoint: &Endpoint| {
            let port = endpoint.address().port();
            let received = received.clone();
            PortService::new(tower::service_fn(move |()| {
                *received.lock().unwrap().entry(port).or_default() += 1;
                async move {
                    match port {
                        FAILING => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            Err(Refused)
                        }
                        SLOW => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            Ok(port)
                        }
                        _ => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            Ok(port)
                        }
                    }
                }
            }))
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_sends_a_failing_and_a_stalled_endpoint_almost_nothing() {
    let mut publisher = Publisher::new("static:///unwell");
    publisher.publish(
        (1..=ENDPOINTS).map(|port| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))),
    );
    let received = Arc::new(Mutex::new(BTreeMap::new()));
    let balance = balance(&publisher, received.clone());
    tokio::time::sleep(Duration::from_millis(1)).await;

    // 500 requests a second for 12 s, each given up after 1 s.
    let total = 6_000;
    let mut ticker = tokio::time::interval(Duration::from_millis(2));
    let mut requests = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        let mut balance = balance.clone();
        requests.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(1), async {
                balance.ready().await.ok()?.call(()).await.ok()
            })
            .await
            .ok()
            .flatten()
        }));
    }
    let mut succeeded = 0;
    for request in requests {
        succeeded += usize::from(request.await.unwrap().is_some());
    }

    let received = received.lock().unwrap().clone();
    let to_bad = received[&FAILING] + received[&SLOW];
    // Each is tried before anything is known about it, and the slow one a few times more while
    // its first request has not yet timed out. Drawn together (2 in 110 pairs), the two used to
    // hand one of them the request: about 100 requests here.
    assert!(
        (2..=10).contains(&to_bad),
        "requests to the failing and the slow endpoint: {received:?}"
    );
    assert_eq!(
        succeeded + to_bad as usize,
        total,
        "every other request succeeded: {received:?}"
    );
}
