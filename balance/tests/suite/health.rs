//! Health rules on tokio's paused clock: outlier ejection and return, growing ejection times,
//! the ejection cap, failure percentage, panic mode, zone spill-over, slow start, reconnect
//! backoff, Peak EWMA avoiding a slow endpoint, waiting for endpoints, and active health check
//! reports.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Service, ServiceExt};
use waypost_balance::{
    Balance, BalanceConfig, Classify, Connectivity, ConnectivityReporter, ErrorKind, LatencyClock,
    Outcome, OutlierDetection, Policy, SlowStart, WithConnectivity, ZoneMode, ZonePreference,
};
use waypost_discovery::topology::hints_prefer_zone;
use waypost_discovery::{DiscoveryError, DiscoveryErrorKind, Endpoint, Publisher, Readiness};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Lets the balancer's background task run (the paused clock advances when all tasks idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Endpoint services that answer with their port, fail while their port is in `failing`, and
/// take `latency` (per port) to answer.
#[derive(Clone, Default)]
struct Fleet {
    failing: Arc<Mutex<HashSet<u16>>>,
    latency: Arc<Mutex<BTreeMap<u16, Duration>>>,
    reporters: Arc<Mutex<BTreeMap<u16, ConnectivityReporter>>>,
}

#[derive(Debug)]
struct Failed(u16);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "endpoint {} failed", self.0)
    }
}

impl std::error::Error for Failed {}

type BoxService = tower::util::BoxCloneSyncService<(), u16, Failed>;

impl Fleet {
    fn make(&self) -> impl FnMut(&Endpoint, ConnectivityReporter) -> BoxService + Send + 'static {
        let fleet = self.clone();
        move |endpoint: &Endpoint, reporter: ConnectivityReporter| {
            let port = endpoint.address().port();
            fleet.reporters.lock().unwrap().insert(port, reporter);
            let fleet = fleet.clone();
            BoxService::new(tower::service_fn(move |_: ()| {
                let fleet = fleet.clone();
                async move {
                    let latency = fleet.latency.lock().unwrap().get(&port).copied();
                    if let Some(latency) = latency {
                        tokio::time::sleep(latency).await;
                    }
                    if fleet.failing.lock().unwrap().contains(&port) {
                        Err(Failed(port))
                    } else {
                        Ok(port)
                    }
                }
            }))
        }
    }

    fn fail(&self, port: u16, failing: bool) {
        let mut set = self.failing.lock().unwrap();
        if failing {
            set.insert(port);
        } else {
            set.remove(&port);
        }
    }

    fn report(&self, port: u16, connectivity: Connectivity) {
        self.reporters.lock().unwrap()[&port].report(connectivity);
    }

    fn serving(&self, port: u16, serving: bool) {
        self.reporters.lock().unwrap()[&port].report_serving(serving);
    }
}

fn publisher(ports: impl IntoIterator<Item = u16>) -> Publisher {
    let mut publisher = Publisher::new("test");
    publisher.publish(ports.into_iter().map(|p| Endpoint::new(addr(p))));
    publisher
}

fn balance(publisher: &Publisher, fleet: &Fleet, config: BalanceConfig) -> Balance<BoxService> {
    Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(7),
            // The paused clock drives the simulated latencies.
            latency_clock: LatencyClock::Tokio,
            ..config
        })
        .build(WithConnectivity(fleet.make()))
        .unwrap()
}

/// Sends `n` requests one after another; returns answers per port and the number of failures.
async fn send(balance: &mut Balance<BoxService>, n: usize) -> (BTreeMap<u16, usize>, usize) {
    let mut answers = BTreeMap::new();
    let mut failures = 0;
    for _ in 0..n {
        match balance.ready().await.unwrap().call(()).await {
            Ok(port) => *answers.entry(port).or_default() += 1,
            Err(error) => {
                assert!(error.is_endpoint(), "{error}");
                failures += 1;
            }
        }
    }
    (answers, failures)
}

/// Picks `n` times; shares per port.
fn shares(balance: &mut Balance<BoxService>, n: usize) -> BTreeMap<u16, f64> {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..n {
        *counts
            .entry(balance.pick(None).unwrap().port())
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(port, count)| (port, count as f64 / n as f64))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_for_growing_times() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=4);
    let mut balance = balance(
        &publisher,
        &fleet,
        BalanceConfig::with_policy(Policy::round_robin()),
    );
    fleet.fail(1, true);

    // Round-robin: endpoint 1 gets every fourth request, so 20 requests are 5 failures in a row.
    let (_, failures) = send(&mut balance, 20).await;
    assert_eq!(failures, 5);
    settle().await;
    assert_eq!(balance.usable_endpoints(), 3, "endpoint 1 is ejected");
    let (answers, failures) = send(&mut balance, 90).await;
    assert_eq!(failures, 0);
    assert!(!answers.contains_key(&1));

    // Base ejection time 30 s.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(balance.usable_endpoints(), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(balance.usable_endpoints(), 4, "back after 30 s");

    // Still failing: ejected again, now for 2 × 30 s.
    send(&mut balance, 20).await;
    settle().await;
    assert_eq!(balance.usable_endpoints(), 3);
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(
        balance.usable_endpoints(),
        3,
        "the second ejection lasts longer"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(balance.usable_endpoints(), 4);

    // Healthy again: it takes traffic and stays.
    fleet.fail(1, false);
    let (answers, failures) = send(&mut balance, 40).await;
    assert_eq!(failures, 0);
    assert_eq!(answers[&1], 10);
}

#[tokio::test(start_paused = true)]
async fn ejections_are_capped() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=4);
    let mut balance = balance(
        &publisher,
        &fleet,
        BalanceConfig::with_policy(Policy::round_robin()),
    );
    fleet.fail(1, true);
    fleet.fail(2, true);
    send(&mut balance, 40).await;
    settle().await;
    // 10% of 4: one endpoint may be ejected (none was), the second may not.
    assert_eq!(balance.usable_endpoints(), 3);
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_at_the_interval() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=5);
    let config = BalanceConfig {
        outlier_detection: OutlierDetection {
            consecutive_failures: 0,
            max_ejection_percent: 50,
            ..OutlierDetection::default()
        },
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let mut balance = balance(&publisher, &fleet, config);
    // Endpoint 3 fails 9 of 10 requests: never 5 in a row would matter here, the rule is off.
    for round in 0..100 {
        fleet.fail(3, round % 10 != 0);
        send(&mut balance, 5).await;
    }
    assert_eq!(
        balance.usable_endpoints(),
        5,
        "judged only when the interval ends"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(balance.usable_endpoints(), 4);
    let (answers, _) = send(&mut balance, 40).await;
    assert!(!answers.contains_key(&3));
}

#[tokio::test(start_paused = true)]
async fn panic_mode_uses_every_endpoint() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=4);
    let mut balance = balance(
        &publisher,
        &fleet,
        BalanceConfig::with_policy(Policy::round_robin()),
    );
    fleet.report(1, Connectivity::Disconnected);
    settle().await;
    assert_eq!(balance.usable_endpoints(), 3);
    assert!(!balance.is_panic_mode());

    fleet.report(2, Connectivity::Disconnected);
    settle().await;
    assert_eq!(
        balance.usable_endpoints(),
        2,
        "50% healthy is not below the threshold"
    );

    fleet.report(3, Connectivity::Disconnected);
    settle().await;
    assert!(balance.is_panic_mode(), "25% healthy");
    assert_eq!(balance.usable_endpoints(), 4);
    assert_eq!(shares(&mut balance, 400).len(), 4);

    fleet.report(1, Connectivity::Connected);
    fleet.report(2, Connectivity::Connected);
    settle().await;
    assert!(!balance.is_panic_mode());
    assert_eq!(balance.usable_endpoints(), 3);
}

#[tokio::test(start_paused = true)]
async fn without_panic_mode_all_down_is_all_ejected() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=2);
    let config = BalanceConfig {
        panic_threshold_percent: 0,
        wait_for_endpoints: Duration::from_secs(2),
        ..BalanceConfig::default()
    };
    let mut balance = balance(&publisher, &fleet, config);
    fleet.report(1, Connectivity::Disconnected);
    fleet.report(2, Connectivity::Disconnected);
    settle().await;
    let error = balance.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AllEjected);
    assert!(error.to_string().contains("`test`"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn zone_preference_spills_over_when_the_local_zone_is_short() {
    let fleet = Fleet::default();
    let mut publisher = Publisher::new("zones");
    publisher.publish(
        (1..=8).map(|p| Endpoint::new(addr(p)).with_zone(if p <= 4 { "zone-a" } else { "zone-b" })),
    );
    let config = BalanceConfig {
        zone_preference: Some(ZonePreference::new("zone-a")),
        ..BalanceConfig::with_policy(Policy::weighted_random())
    };
    let mut balance = balance(&publisher, &fleet, config);
    let local = |shares: &BTreeMap<u16, f64>| -> f64 {
        shares
            .iter()
            .filter(|(p, _)| **p <= 4)
            .map(|(_, s)| s)
            .sum()
    };
    assert_eq!(
        local(&shares(&mut balance, 2000)),
        1.0,
        "all local while the zone is healthy"
    );

    fleet.report(1, Connectivity::Disconnected);
    settle().await;
    assert_eq!(
        local(&shares(&mut balance, 2000)),
        1.0,
        "75% healthy is above 70%"
    );

    fleet.report(2, Connectivity::Disconnected);
    settle().await;
    // 50% healthy: the local share is 50/70.
    let share = local(&shares(&mut balance, 20_000));
    assert!((share - 50.0 / 70.0).abs() < 0.03, "local share {share}");

    fleet.report(3, Connectivity::Disconnected);
    fleet.report(4, Connectivity::Disconnected);
    settle().await;
    assert_eq!(
        local(&shares(&mut balance, 2000)),
        0.0,
        "no healthy local endpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn zone_hints_decide_locality_when_every_endpoint_has_them() {
    let fleet = Fleet::default();
    let mut publisher = Publisher::new("hints");
    // Zones say a/b, but the topology controller hinted endpoints 1 and 3 for zone-a.
    let hinted = || {
        (1..=4).map(|p| {
            Endpoint::new(addr(p))
                .with_zone(if p <= 2 { "zone-a" } else { "zone-b" })
                .with_zone_hints([if p % 2 == 1 { "zone-a" } else { "zone-b" }])
        })
    };
    publisher.publish(hinted());
    let picked = |publisher: &Publisher, preference| {
        let config = BalanceConfig {
            zone_preference: Some(preference),
            ..BalanceConfig::with_policy(Policy::round_robin())
        };
        let mut balance = balance(publisher, &fleet, config);
        shares(&mut balance, 100)
            .keys()
            .copied()
            .collect::<Vec<u16>>()
    };
    // Hints mode follows the hints; zone-aware mode the zone field, ignoring the hints.
    assert_eq!(picked(&publisher, ZonePreference::hints("zone-a")), [1, 3]);
    assert_eq!(picked(&publisher, ZonePreference::new("zone-a")), [1, 2]);
    assert_eq!(ZonePreference::new("zone-a").mode, ZoneMode::ZoneAware);

    // Incomplete hints: the hints mode uses every endpoint (and never the zone field).
    publisher.publish(hinted().chain([Endpoint::new(addr(5)).with_zone("zone-a")]));
    assert_eq!(
        picked(&publisher, ZonePreference::hints("zone-a")),
        [1, 2, 3, 4, 5]
    );
}

/// kube-proxy's `PreferSameNode`: node hints come before zone hints, by the same rule for the
/// client's node.
#[tokio::test(start_paused = true)]
async fn node_hints_come_before_zone_hints() {
    let fleet = Fleet::default();
    let mut publisher = Publisher::new("node-hints");
    // Endpoints 1 and 2 on node n1, 3 and 4 on n2; zone hints put 1 and 3 in zone-a.
    let hinted = || {
        (1..=4).map(|p| {
            Endpoint::new(addr(p))
                .with_zone_hints([if p % 2 == 1 { "zone-a" } else { "zone-b" }])
                .with_node_hints([if p <= 2 { "n1" } else { "n2" }])
        })
    };
    publisher.publish(hinted());
    let picked = |publisher: &Publisher, preference| {
        let config = BalanceConfig {
            zone_preference: Some(preference),
            ..BalanceConfig::with_policy(Policy::round_robin())
        };
        let mut balance = balance(publisher, &fleet, config);
        shares(&mut balance, 100)
            .keys()
            .copied()
            .collect::<Vec<u16>>()
    };
    let on = |node: &str| ZonePreference::hints("zone-a").with_node(node);
    assert_eq!(picked(&publisher, on("n1")), [1, 2]);
    assert_eq!(picked(&publisher, on("n2")), [3, 4]);
    // No endpoint hinted for this node, or no node given: the zone hints decide.
    assert_eq!(picked(&publisher, on("n3")), [1, 3]);
    assert_eq!(picked(&publisher, ZonePreference::hints("zone-a")), [1, 3]);
    // A ready endpoint without node hints: the node hints do not apply.
    publisher.publish(hinted().chain([Endpoint::new(addr(5)).with_zone_hints(["zone-a"])]));
    assert_eq!(picked(&publisher, on("n1")), [1, 3, 5]);
    // A not-ready one without node hints does not count.
    publisher
        .publish(hinted().chain([Endpoint::new(addr(5)).with_readiness(Readiness::Terminating)]));
    assert_eq!(picked(&publisher, on("n1")), [1, 2]);
    // An empty node name is a configuration error.
    let config = BalanceConfig {
        zone_preference: Some(ZonePreference::hints("zone-a").with_node("")),
        ..BalanceConfig::default()
    };
    assert_eq!(
        config.validate().unwrap_err().field(),
        "zone_preference.node"
    );
}

/// kube-proxy never filters the serving-and-terminating fallback by hints: with no ready
/// endpoint, the hints do not apply.
#[tokio::test(start_paused = true)]
async fn zone_hints_never_filter_the_draining_fallback() {
    let fleet = Fleet::default();
    let mut publisher = Publisher::new("draining");
    publisher.publish((1..=4).map(|p| {
        Endpoint::new(addr(p))
            .with_readiness(Readiness::Terminating)
            .with_zone_hints([if p % 2 == 1 { "zone-a" } else { "zone-b" }])
    }));
    assert!(!hints_prefer_zone(&*publisher.current(), "zone-a"));
    let config = BalanceConfig {
        zone_preference: Some(ZonePreference::hints("zone-a")),
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let mut balance = balance(&publisher, &fleet, config);
    let picked: Vec<u16> = shares(&mut balance, 100).keys().copied().collect();
    assert_eq!(picked, [1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_new_endpoints() {
    let fleet = Fleet::default();
    let mut publisher = publisher(1..=2);
    let config = BalanceConfig {
        slow_start: Some(SlowStart::new(Duration::from_secs(10))),
        ..BalanceConfig::with_policy(Policy::weighted_random())
    };
    let mut balance = balance(&publisher, &fleet, config);
    publisher.publish((1..=3).map(|p| Endpoint::new(addr(p))));
    settle().await;
    let share =
        |balance: &mut Balance<BoxService>| shares(balance, 40_000).get(&3).copied().unwrap_or(0.0);
    // Weights 1, 1 and 0.1 at first.
    let early = share(&mut balance);
    assert!((early - 0.1 / 2.1).abs() < 0.015, "early {early}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let middle = share(&mut balance);
    assert!((middle - 0.5 / 2.5).abs() < 0.02, "middle {middle}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let full = share(&mut balance);
    assert!((full - 1.0 / 3.0).abs() < 0.02, "full {full}");
    // The first set is never ramped.
    let first = shares(&mut balance, 40_000);
    assert!((first[&1] - 1.0 / 3.0).abs() < 0.02);
}

/// Errors mean "could not connect".
#[derive(Clone)]
struct Unreachable;

impl Classify<u16, Failed> for Unreachable {
    fn classify_response(&self, _: &u16) -> Outcome {
        Outcome::Success
    }
    fn classify_error(&self, _: &Failed) -> Outcome {
        Outcome::Unreachable
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_endpoints_are_retried_after_a_growing_backoff() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=4);
    let mut balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(3),
            ..BalanceConfig::with_policy(Policy::round_robin())
        })
        .classify(Unreachable)
        .build(WithConnectivity(fleet.make()))
        .unwrap();
    fleet.fail(4, true);
    let call = async |balance: &mut Balance<_, _, Unreachable>| {
        balance.ready().await.unwrap().call(()).await
    };
    let mut failures = 0;
    for _ in 0..8 {
        failures += usize::from(call(&mut balance).await.is_err());
    }
    assert_eq!(
        failures, 1,
        "one request finds it unreachable; then it is skipped"
    );
    settle().await;
    assert_eq!(balance.usable_endpoints(), 3);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(balance.usable_endpoints(), 4, "probed again within 1 s");
    for _ in 0..8 {
        let _ = call(&mut balance).await;
    }
    settle().await;
    assert_eq!(balance.usable_endpoints(), 3);
    // The second backoff is 2 s, jittered into [1 s, 2 s].
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        balance.usable_endpoints(),
        3,
        "the second backoff is longer"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(balance.usable_endpoints(), 4);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_avoids_a_slow_endpoint() {
    let fleet = Fleet::default();
    for port in 1..=4 {
        fleet.latency.lock().unwrap().insert(
            port,
            Duration::from_millis(if port == 4 { 200 } else { 10 }),
        );
    }
    let publisher = publisher(1..=4);
    let mut answers: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    for (name, policy) in [
        ("round_robin", Policy::round_robin()),
        ("p2c_peak_ewma", Policy::p2c_peak_ewma()),
    ] {
        let balance = balance(&publisher, &fleet, BalanceConfig::with_policy(policy));
        // 8 concurrent callers, 50 requests each.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let mut balance = balance.clone();
                tokio::spawn(async move { send(&mut balance, 50).await.0 })
            })
            .collect();
        let mut total = BTreeMap::new();
        for task in tasks {
            for (port, count) in task.await.unwrap() {
                *total.entry(port).or_insert(0) += count;
            }
        }
        answers.insert(name, total);
    }
    let slow_share = |name: &str| answers[name].get(&4).copied().unwrap_or(0) as f64 / 400.0;
    assert!((slow_share("round_robin") - 0.25).abs() < 0.01);
    assert!(slow_share("p2c_peak_ewma") < 0.08, "{answers:?}");
}

#[tokio::test(start_paused = true)]
async fn requests_wait_for_endpoints_then_fail_with_the_reason() {
    let fleet = Fleet::default();
    let mut publisher = Publisher::new("dns:///api:80");
    let config = BalanceConfig {
        wait_for_endpoints: Duration::from_secs(5),
        ..BalanceConfig::default()
    };
    let balance = balance(&publisher, &fleet, config);

    // Nothing yet: a request waits, and is served when an endpoint arrives in time.
    let waiting = tokio::spawn({
        let mut balance = balance.clone();
        async move { balance.ready().await.unwrap().call(()).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished());
    publisher.publish([Endpoint::new(addr(9))]);
    assert_eq!(waiting.await.unwrap().unwrap(), 9);

    // Endpoints that do not accept requests: a request fails after the deadline with
    // NoEndpoints.
    publisher.publish([Endpoint::new(addr(9)).with_weight(0)]);
    settle().await;
    let started = tokio::time::Instant::now();
    let error = balance.clone().oneshot(()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NoEndpoints);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(error.to_string().contains("dns:///api:80"), "{error}");

    // Discovery answered "none" (a confirmed NXDOMAIN): no waiting, the answer will not change
    // within a deadline.
    publisher.publish([]);
    settle().await;
    let started = tokio::time::Instant::now();
    let error = balance.clone().oneshot(()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NoEndpoints);
    assert_eq!(started.elapsed(), Duration::ZERO);

    // Discovery failing with an empty set: the discovery error is the cause.
    publisher.report_failure(DiscoveryError::new(
        "dns:///api:80",
        DiscoveryErrorKind::Resolve,
        "SERVFAIL",
    ));
    let error = balance.clone().oneshot(()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Discovery);
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(cause.contains("SERVFAIL"), "{cause}");
}

#[tokio::test(start_paused = true)]
async fn weight_zero_takes_no_new_requests() {
    let fleet = Fleet::default();
    let mut publisher = publisher(1..=3);
    let policies = [
        Policy::p2c_peak_ewma(),
        Policy::p2c_least_pending(),
        Policy::round_robin(),
        Policy::weighted_round_robin(),
        Policy::weighted_random(),
        Policy::maglev(),
        Policy::ring_hash(),
    ];
    publisher.publish([
        Endpoint::new(addr(1)),
        Endpoint::new(addr(2)).with_weight(0),
        Endpoint::new(addr(3)).with_weight(2),
    ]);
    for policy in policies {
        let mut balance = balance(&publisher, &fleet, BalanceConfig::with_policy(policy));
        assert!(!shares(&mut balance, 500).contains_key(&2), "{policy:?}");
    }
    publisher.publish([Endpoint::new(addr(1)).with_weight(0)]);
    let config = BalanceConfig {
        wait_for_endpoints: Duration::from_millis(100),
        ..BalanceConfig::default()
    };
    let balance = balance(&publisher, &fleet, config);
    assert_eq!(
        balance.oneshot(()).await.unwrap_err().kind(),
        ErrorKind::NoEndpoints
    );
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_sends_traffic_to_endpoints_that_join_later() {
    let fleet = Fleet::default();
    for port in 1..=6 {
        fleet
            .latency
            .lock()
            .unwrap()
            .insert(port, Duration::from_micros(300));
    }
    let mut publisher = publisher(1..=2);
    let balance = balance(&publisher, &fleet, BalanceConfig::default());
    let run = |balance: &Balance<BoxService>, n: usize| {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut balance = balance.clone();
                tokio::spawn(async move { send(&mut balance, n).await.0 })
            })
            .collect();
        async move {
            let mut total: BTreeMap<u16, usize> = BTreeMap::new();
            for task in tasks {
                for (port, count) in task.await.unwrap() {
                    *total.entry(port).or_default() += count;
                }
            }
            total
        }
    };
    run(&balance, 300).await;
    publisher.publish((1..=6).map(|p| Endpoint::new(addr(p))));
    settle().await;
    let after = run(&balance, 150).await;
    let new: usize = (3..=6).map(|p| after.get(&p).copied().unwrap_or(0)).sum();
    assert!(
        new > 150,
        "the four new endpoints take a fair part of 600 requests: {after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_pick_independently() {
    // Programs clone a client per request; every clone must not repeat the same choices.
    let fleet = Fleet::default();
    let publisher = publisher(1..=6);
    for seed in [None, Some(9)] {
        let balance = Balance::builder(publisher.endpoints())
            .config(BalanceConfig {
                seed,
                ..BalanceConfig::with_policy(Policy::p2c_least_pending())
            })
            .build(WithConnectivity(fleet.make()))
            .unwrap();
        let mut picked = std::collections::BTreeSet::new();
        for _ in 0..200 {
            picked.insert(balance.clone().pick(None).unwrap().port());
        }
        assert_eq!(picked.len(), 6, "seed {seed:?}: {picked:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_asks_discovery_to_look_again() {
    let fleet = Fleet::default();
    let publisher = publisher(1..=2);
    let _balance = balance(&publisher, &fleet, BalanceConfig::default());
    let asked = tokio::time::timeout(Duration::from_secs(1), publisher.refresh_requested());
    fleet.report(1, Connectivity::Disconnected);
    asked
        .await
        .expect("a refresh is requested when a connection is lost");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_clone_stops_the_background_task_and_releases_services() {
    let fleet = Fleet::default();
    let mut publisher = publisher(1..=2);
    let balance = balance(&publisher, &fleet, BalanceConfig::default());
    let clone = balance.clone();
    settle().await;
    let reporter = fleet.reporters.lock().unwrap()[&1].clone();
    assert!(reporter.is_attached());
    drop(balance);
    drop(clone);
    settle().await;
    // The task is gone: nothing holds the endpoint slots any more.
    assert!(!reporter.is_attached());
    publisher.publish([Endpoint::new(addr(3))]);
    settle().await;
    assert!(
        !fleet.reporters.lock().unwrap().contains_key(&3),
        "no service is made after the end"
    );
}

#[tokio::test(start_paused = true)]
async fn a_health_check_takes_an_endpoint_out_and_brings_it_back() {
    let fleet = Fleet::default();
    let publisher = publisher([1, 2, 3, 4]);
    let mut balance = balance(
        &publisher,
        &fleet,
        BalanceConfig::with_policy(Policy::round_robin()),
    );
    settle().await;
    fleet.serving(2, false);
    settle().await;
    assert_eq!(balance.usable_endpoints(), 3);
    let (answers, failures) = send(&mut balance, 300).await;
    assert_eq!(failures, 0);
    assert_eq!(answers.get(&2), None, "not serving: no new requests");
    let snapshot = balance.snapshot().await;
    assert!(!snapshot.endpoints[1].serving && !snapshot.endpoints[1].usable);
    // Serving again: back in the next table.
    fleet.serving(2, true);
    settle().await;
    let (answers, _) = send(&mut balance, 400).await;
    assert_eq!(answers.get(&2), Some(&100));

    // Not serving counts as unhealthy for the panic threshold: with three of four out, the
    // balancer uses all four rather than overload the last one.
    for port in [1, 2, 3] {
        fleet.serving(port, false);
    }
    settle().await;
    assert!(balance.is_panic_mode());
    assert_eq!(balance.usable_endpoints(), 4);
    for port in [1, 2, 3] {
        fleet.serving(port, true);
    }
    settle().await;
    assert!(!balance.is_panic_mode());
}
