//! Snapshots on tokio's paused clock: each endpoint's ejection, unreachable period, pushback,
//! slow-start ramp, in-flight count and latency estimate, and the table's mode, as the
//! balancer's task knows them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Service, ServiceExt};
use waypost_balance::{
    Balance, BalanceConfig, Classify, Connectivity, ErrorKind, LatencyClock, Outcome,
    OutlierDetection, Policy, SlowStart, Snapshot, TableMode, ZonePreference,
};
use waypost_discovery::{Endpoint, Publisher, Readiness};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// How an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Serve,
    Fail,
    /// Answers "overloaded" once, then serves.
    Overloaded(Duration),
    Unreachable,
    Hang,
}

#[derive(Clone, Copy)]
struct ByBehaviour;

impl Classify<Behaviour, Behaviour> for ByBehaviour {
    fn classify_response(&self, answer: &Behaviour) -> Outcome {
        match answer {
            Behaviour::Overloaded(after) => Outcome::Overloaded {
                retry_after: Some(*after),
            },
            _ => Outcome::Success,
        }
    }

    fn classify_error(&self, error: &Behaviour) -> Outcome {
        match error {
            Behaviour::Unreachable => Outcome::Unreachable,
            _ => Outcome::Failure,
        }
    }
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Behaviour {}

type BoxService = tower::util::BoxCloneSyncService<(), Behaviour, Behaviour>;

type Fleet = Arc<Mutex<BTreeMap<u16, Behaviour>>>;

fn balance(
    publisher: &Publisher,
    fleet: &Fleet,
    config: BalanceConfig,
) -> Balance<BoxService, waypost_balance::NoHashKey, ByBehaviour> {
    let fleet = Arc::clone(fleet);
    Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(3),
            latency_clock: LatencyClock::Tokio,
            ..config
        })
        .classify(ByBehaviour)
        .build(move |endpoint: &Endpoint| {
            let port = endpoint.address().port();
            let fleet = Arc::clone(&fleet);
            BoxService::new(tower::service_fn(move |()| {
                let behaviour = {
                    let mut fleet = fleet.lock().unwrap();
                    let behaviour = fleet.get(&port).copied().unwrap_or(Behaviour::Serve);
                    if let Behaviour::Overloaded(_) = behaviour {
                        // Once: the endpoint is passed over, not ejected for two failures.
                        fleet.insert(port, Behaviour::Serve);
                    }
                    behaviour
                };
                async move {
                    match behaviour {
                        Behaviour::Serve | Behaviour::Overloaded(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            Ok(behaviour)
                        }
                        Behaviour::Hang => std::future::pending().await,
                        Behaviour::Fail | Behaviour::Unreachable => Err(behaviour),
                    }
                }
            }))
        })
        .unwrap()
}

fn endpoint(snapshot: &Snapshot, port: u16) -> &waypost_balance::EndpointSnapshot {
    snapshot
        .endpoints
        .iter()
        .find(|endpoint| endpoint.address.port() == port)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_shows_why_each_endpoint_gets_traffic_or_not() {
    let fleet: Fleet = Arc::default();
    let mut publisher = Publisher::new("static:///snapshot");
    publisher.publish([
        Endpoint::new(addr(1)).with_zone("a"),
        Endpoint::new(addr(2)).with_zone("a").with_weight(3),
        Endpoint::new(addr(3)).with_zone("b"),
        Endpoint::new(addr(4))
            .with_readiness(Readiness::Terminating)
            .with_weight(0),
        Endpoint::new(addr(5)),
    ]);
    let config = BalanceConfig {
        outlier_detection: OutlierDetection {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            failure_percentage_threshold: None,
            ..OutlierDetection::default()
        },
        panic_threshold_percent: 0,
        slow_start: Some(SlowStart::new(Duration::from_secs(100))),
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let mut balance = balance(&publisher, &fleet, config);
    settle().await;
    let snapshot = balance.snapshot().await;
    assert_eq!(snapshot.target, "static:///snapshot");
    assert_eq!(snapshot.policy, "round_robin");
    assert_eq!(snapshot.mode, TableMode::Normal);
    assert_eq!(snapshot.set_revision, 1);
    assert!(snapshot.discovery.is_current());
    assert_eq!(snapshot.endpoints.len(), 5);
    // Weight 0: no new requests.
    assert_eq!(snapshot.usable_endpoints, 4);
    assert!(!endpoint(&snapshot, 4).usable);
    assert_eq!(endpoint(&snapshot, 4).readiness, Readiness::Terminating);
    assert_eq!(endpoint(&snapshot, 2).weight, 3);
    assert_eq!(endpoint(&snapshot, 1).zone.as_deref(), Some("a"));
    assert_eq!(endpoint(&snapshot, 1).connectivity, Connectivity::Unknown);
    assert_eq!(
        endpoint(&snapshot, 1).slow_start_percent,
        None,
        "the first set does not ramp"
    );

    fleet.lock().unwrap().insert(1, Behaviour::Fail);
    fleet
        .lock()
        .unwrap()
        .insert(2, Behaviour::Overloaded(Duration::from_secs(20)));
    fleet.lock().unwrap().insert(3, Behaviour::Unreachable);
    fleet.lock().unwrap().insert(5, Behaviour::Hang);
    // Round-robin over four: 40 requests give each endpoint its turns.
    let mut held = Vec::new();
    for _ in 0..40 {
        let call = balance.ready().await.unwrap().call(());
        held.push(tokio::spawn(call));
        settle().await;
    }
    settle().await;
    let snapshot = balance.snapshot().await;
    let failing = endpoint(&snapshot, 1);
    assert!(!failing.usable, "{failing:?}");
    assert_eq!(failing.ejections, 1);
    let ejected_for = failing.ejected_for.expect("ejected");
    assert!(
        ejected_for > Duration::from_secs(29) && ejected_for <= Duration::from_secs(30),
        "{ejected_for:?}"
    );
    let overloaded = endpoint(&snapshot, 2);
    assert!(overloaded.usable, "passed over, not removed");
    let passed_over_for = overloaded.passed_over_for.expect("passed over");
    assert!(
        passed_over_for > Duration::from_secs(19) && passed_over_for <= Duration::from_secs(20),
        "{passed_over_for:?}"
    );
    let unreachable = endpoint(&snapshot, 3);
    assert_eq!(unreachable.connectivity, Connectivity::Disconnected);
    assert!(unreachable.unreachable_for.is_some(), "{unreachable:?}");
    assert!(!unreachable.usable);
    let hanging = endpoint(&snapshot, 5);
    assert!(hanging.in_flight > 0, "{hanging:?}");
    assert_eq!(
        hanging.latency_estimate, None,
        "round-robin keeps no estimate"
    );
    assert_eq!(snapshot.usable_endpoints, 2);

    // A new endpoint ramps up.
    publisher.publish([
        Endpoint::new(addr(1)).with_zone("a"),
        Endpoint::new(addr(2)).with_zone("a").with_weight(3),
        Endpoint::new(addr(3)).with_zone("b"),
        Endpoint::new(addr(4))
            .with_readiness(Readiness::Terminating)
            .with_weight(0),
        Endpoint::new(addr(5)),
        Endpoint::new(addr(6)),
    ]);
    tokio::time::sleep(Duration::from_secs(50)).await;
    let snapshot = balance.snapshot().await;
    assert_eq!(snapshot.set_revision, 2);
    let ramping = endpoint(&snapshot, 6).slow_start_percent.expect("ramping");
    assert!((45..=55).contains(&ramping), "{ramping}");
    for call in held {
        call.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_names_the_table_mode() {
    let fleet: Fleet = Arc::default();
    let publisher = {
        let mut publisher = Publisher::new("static:///modes");
        publisher.publish([
            Endpoint::new(addr(1)).with_zone("a"),
            Endpoint::new(addr(2)).with_zone("a"),
            Endpoint::new(addr(3)).with_zone("b"),
            Endpoint::new(addr(4)).with_zone("b"),
        ]);
        publisher
    };
    let outlier = OutlierDetection {
        consecutive_failures: 1,
        max_ejection_percent: 100,
        failure_percentage_threshold: None,
        ..OutlierDetection::default()
    };
    // Zone a with one of its two endpoints ejected: half the local capacity, below 70%.
    let mut zoned = balance(
        &publisher,
        &fleet,
        BalanceConfig {
            outlier_detection: outlier.clone(),
            panic_threshold_percent: 0,
            zone_preference: Some(ZonePreference::new("a")),
            ..BalanceConfig::with_policy(Policy::p2c_peak_ewma())
        },
    );
    settle().await;
    fleet.lock().unwrap().insert(1, Behaviour::Fail);
    for _ in 0..50 {
        let _ = zoned.ready().await.unwrap().call(()).await;
    }
    settle().await;
    let snapshot = zoned.snapshot().await;
    let TableMode::ZoneSpillOver { remote_share } = snapshot.mode else {
        panic!("{:?}", snapshot.mode);
    };
    assert!(
        (remote_share - (1.0 - 0.5 / 0.7)).abs() < 1e-6,
        "{remote_share}"
    );
    assert!(endpoint(&snapshot, 2).latency_estimate.is_some());

    // Three of four failing: panic mode, then with panic mode off, nothing to pick.
    for port in [2, 3] {
        fleet.lock().unwrap().insert(port, Behaviour::Fail);
    }
    let mut panicking = balance(
        &publisher,
        &fleet,
        BalanceConfig {
            outlier_detection: outlier.clone(),
            ..BalanceConfig::with_policy(Policy::round_robin())
        },
    );
    settle().await;
    for _ in 0..20 {
        let _ = panicking.ready().await.unwrap().call(()).await;
    }
    settle().await;
    assert_eq!(panicking.snapshot().await.mode, TableMode::Panic);
    fleet.lock().unwrap().insert(4, Behaviour::Fail);
    let mut empty = balance(
        &publisher,
        &fleet,
        BalanceConfig {
            outlier_detection: outlier,
            panic_threshold_percent: 0,
            wait_for_endpoints: Duration::ZERO,
            ..BalanceConfig::with_policy(Policy::round_robin())
        },
    );
    settle().await;
    for _ in 0..20 {
        let _ = empty.ready().await.unwrap().call(()).await;
    }
    settle().await;
    let snapshot = empty.snapshot().await;
    assert_eq!(snapshot.mode, TableMode::Empty(ErrorKind::AllEjected));
    assert_eq!(snapshot.usable_endpoints, 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_snapshots_are_all_answered() {
    let fleet: Fleet = Arc::default();
    let mut publisher = Publisher::new("static:///snapshots");
    publisher.publish([Endpoint::new(addr(1)), Endpoint::new(addr(2))]);
    let balance = balance(&publisher, &fleet, BalanceConfig::default());
    settle().await;
    let asked: Vec<_> = (0..5).map(|_| balance.snapshot()).collect();
    for snapshot in futures_util::future::join_all(asked).await {
        assert_eq!(snapshot.usable_endpoints, 2);
        assert_eq!(snapshot.endpoints.len(), 2);
        // The task's records: a latency estimate per endpoint, which the table alone lacks.
        assert!(
            snapshot
                .endpoints
                .iter()
                .all(|e| e.latency_estimate.is_some())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_still_answers_once_the_background_task_is_gone() {
    let mut publisher = Publisher::new("static:///snapshot-after-panic");
    publisher.publish([Endpoint::new(addr(1))]);
    // The endpoint service maker panics for the second endpoint, inside the background task.
    let balance = Balance::builder(publisher.endpoints())
        .build(|endpoint: &Endpoint| {
            assert_eq!(
                endpoint.address(),
                addr(1),
                "no service for {}",
                endpoint.address()
            );
            tower::service_fn(|()| async { Ok::<_, std::convert::Infallible>(()) })
        })
        .unwrap();
    settle().await;
    assert!(
        balance.snapshot().await.endpoints[0]
            .latency_estimate
            .is_some()
    );
    publisher.publish([Endpoint::new(addr(1)), Endpoint::new(addr(2))]);
    settle().await;
    // Answered from the last table the task installed, without its records.
    let snapshot = balance.snapshot().await;
    assert_eq!(snapshot.usable_endpoints, 1);
    assert_eq!(snapshot.endpoints[0].address, addr(1));
    assert!(snapshot.endpoints[0].latency_estimate.is_none());
}
