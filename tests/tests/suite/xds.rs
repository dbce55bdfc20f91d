//! The xDS source against the in-process management server: the chain from listener to
//! endpoints, updates, ACKs and NACKs, deletion, lost streams, and one stream for many targets;
//! end to end, a tonic client reaching loopback servers through `xds:///` and following every
//! kind of endpoint change under steady calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::google::protobuf::Any;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::Policy;
use waypost_discovery::source::xds::{Bootstrap, XdsSource};
use waypost_discovery::{Endpoints, Readiness};
use waypost_tests::xds::{
    self, CLUSTER, ControlPlane, ENDPOINTS, HostSpec, LISTENER, LocalitySpec, ROUTE,
};
use waypost_tests::{eventually, grpc, wait_for_health, wait_for_set};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn source(plane: &ControlPlane, listener: &str) -> Endpoints {
    let bootstrap = Bootstrap::from_json(&plane.bootstrap_json("test-node")).unwrap();
    XdsSource::new(format!("xds:///{listener}").parse().unwrap())
        .with_bootstrap(bootstrap)
        .spawn()
        .unwrap()
}

fn ports(set: &waypost_discovery::EndpointSet) -> Vec<u16> {
    set.iter().map(|e| e.address().port()).collect()
}

#[tokio::test]
async fn the_chain_from_listener_to_endpoints_is_followed_and_updated() {
    let plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "api.test:8080", &[addr(1), addr(2)]);
    let endpoints = source(&plane, "api.test:8080");
    wait_for_set(&endpoints, "the first endpoints", |set| {
        ports(set) == [1, 2]
    })
    .await;
    let first = endpoints.load_full();
    assert!(
        first
            .iter()
            .all(|e| e.zone() == Some("test-a") && e.readiness().is_ready())
    );

    // EDS: one endpoint replaced.
    plane.set(
        ENDPOINTS,
        "api.test:8080-eds",
        xds::healthy_assignment("api.test:8080-eds", &[addr(2), addr(3)]),
    );
    wait_for_set(&endpoints, "the replaced endpoint", |set| {
        ports(set) == [2, 3]
    })
    .await;

    // RDS: the route moves to another cluster, split 3:1 with the first.
    plane.set(
        ENDPOINTS,
        "other-eds",
        xds::healthy_assignment("other-eds", &[addr(9)]),
    );
    plane.set(CLUSTER, "other", xds::cluster("other", "other-eds"));
    plane.set(
        ROUTE,
        "api.test:8080-route",
        xds::route(
            "api.test:8080-route",
            &[("api.test:8080-cluster", 1), ("other", 3)],
        ),
    );
    let set = wait_for_set(&endpoints, "the weighted clusters", |set| {
        ports(set) == [2, 3, 9]
    })
    .await;
    let weights: Vec<u32> = set.iter().map(|e| e.weight()).collect();
    assert_eq!(weights, [125_000, 125_000, 750_000]);

    // Unhealthy endpoints go; draining ones too, while others are ready.
    plane.set(
        ENDPOINTS,
        "other-eds",
        xds::assignment(
            "other-eds",
            &[LocalitySpec::new(
                "test-b",
                vec![
                    HostSpec::healthy(addr(9)).with_health(HealthStatus::Draining),
                    HostSpec::healthy(addr(10)).with_health(HealthStatus::Unhealthy),
                    HostSpec::healthy(addr(11)).with_weight(3),
                ],
            )],
        ),
    );
    let set = wait_for_set(&endpoints, "draining and unhealthy endpoints", |set| {
        ports(set) == [2, 3, 11]
    })
    .await;
    let eleven = set.iter().find(|e| e.address().port() == 11).unwrap();
    assert_eq!(eleven.zone(), Some("test-b"));

    // Nothing but draining endpoints: they serve, as terminating.
    let draining = |service: &str, port: u16| {
        xds::assignment(
            service,
            &[LocalitySpec::new(
                "test-b",
                vec![HostSpec::healthy(addr(port)).with_health(HealthStatus::Draining)],
            )],
        )
    };
    plane.set(
        ENDPOINTS,
        "api.test:8080-eds",
        draining("api.test:8080-eds", 2),
    );
    plane.set(ENDPOINTS, "other-eds", draining("other-eds", 9));
    let set = wait_for_set(&endpoints, "only draining endpoints", |set| {
        ports(set) == [2, 9]
    })
    .await;
    assert!(set.iter().all(|e| e.readiness() == Readiness::Terminating));

    // Every response was ACKed.
    assert!(plane.nacks().is_empty(), "{:?}", plane.nacks());
}

#[tokio::test]
async fn priorities_fail_over_when_too_few_endpoints_are_healthy() {
    let plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "p", &[addr(1)]);
    let endpoints = source(&plane, "p");
    wait_for_set(&endpoints, "the first endpoints", |set| ports(set) == [1]).await;
    let localities = |healthy_in_primary: usize| {
        let primary = (0..4u16)
            .map(|i| {
                let host = HostSpec::healthy(addr(10 + i));
                if (i as usize) < healthy_in_primary {
                    host
                } else {
                    host.with_health(HealthStatus::Unhealthy)
                }
            })
            .collect();
        vec![
            LocalitySpec::new("near", primary),
            LocalitySpec::new("far", vec![HostSpec::healthy(addr(20))]).with_priority(1),
        ]
    };
    // 3 of 4 healthy, times the default overprovisioning of 1.4: priority 0 takes everything.
    plane.set(ENDPOINTS, "p-eds", xds::assignment("p-eds", &localities(3)));
    wait_for_set(&endpoints, "priority 0 alone", |set| {
        ports(set) == [10, 11, 12]
    })
    .await;
    // 1 of 4: priority 0 takes 35%, the rest fails over to priority 1.
    plane.set(ENDPOINTS, "p-eds", xds::assignment("p-eds", &localities(1)));
    let set = wait_for_set(&endpoints, "the failover", |set| ports(set) == [10, 20]).await;
    let weights: Vec<u32> = set.iter().map(|e| e.weight()).collect();
    assert_eq!(weights, [350_000, 650_000]);
}

#[tokio::test]
async fn an_invalid_resource_is_nacked_and_its_last_good_version_kept() {
    let plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "n", &[addr(1)]);
    let endpoints = source(&plane, "n");
    wait_for_set(&endpoints, "the first endpoints", |set| ports(set) == [1]).await;
    let bad = Any {
        type_url: ENDPOINTS.into(),
        value: vec![0x0a, 0x03, b'n', b'-', b'e', 0x12, 0xff],
    };
    plane.set(ENDPOINTS, "n-eds", bad);
    eventually("a NACK of the bad assignment", || !plane.nacks().is_empty()).await;
    let nack = plane.nacks().remove(0);
    assert_eq!(nack.type_url, ENDPOINTS);
    let detail = nack.error_detail.unwrap();
    assert_eq!(detail.code, 3, "INVALID_ARGUMENT");
    assert!(
        detail.message.contains("does not decode"),
        "{}",
        detail.message
    );
    // The version NACKed is not the one reported as accepted.
    let accepted: Vec<String> = plane
        .requests()
        .iter()
        .filter(|r| {
            r.type_url == ENDPOINTS && r.error_detail.is_none() && !r.version_info.is_empty()
        })
        .map(|r| r.version_info.clone())
        .collect();
    assert_eq!(nack.version_info, *accepted.last().unwrap());
    assert_eq!(ports(&endpoints.load()), [1]);
    assert!(endpoints.health().is_current());
    // A valid version after it is taken.
    plane.set(
        ENDPOINTS,
        "n-eds",
        xds::healthy_assignment("n-eds", &[addr(2)]),
    );
    wait_for_set(&endpoints, "the next good version", |set| ports(set) == [2]).await;
}

#[tokio::test]
async fn a_listener_that_is_deleted_makes_the_target_gone() {
    let plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "gone", &[addr(1)]);
    let endpoints = source(&plane, "gone");
    wait_for_set(&endpoints, "the first endpoints", |set| ports(set) == [1]).await;
    plane.remove(LISTENER, "gone");
    let health = wait_for_health(&endpoints, "the listener gone", |h| h.is_gone()).await;
    assert!(endpoints.load().is_empty());
    assert!(
        health
            .last_error()
            .unwrap()
            .to_string()
            .contains("no listener `gone`"),
        "{health:?}"
    );
    // It comes back.
    plane.set(
        LISTENER,
        "gone",
        xds::listener_inline("gone", "gone-cluster"),
    );
    wait_for_set(&endpoints, "the listener back", |set| ports(set) == [1]).await;
}

#[tokio::test]
async fn a_lost_stream_keeps_the_endpoints_and_subscribes_again() {
    let mut plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "lost", &[addr(1), addr(2)]);
    let endpoints = source(&plane, "lost");
    wait_for_set(&endpoints, "the first endpoints", |set| {
        ports(set) == [1, 2]
    })
    .await;
    plane.stop().await;
    let health = wait_for_health(&endpoints, "the stream reported lost", |h| h.is_failing()).await;
    assert!(
        health
            .last_error()
            .unwrap()
            .to_string()
            .contains("xDS control plane"),
        "{health:?}"
    );
    assert_eq!(ports(&endpoints.load()), [1, 2]);
    // While it is down, the resources change; back up, the new stream asks again.
    plane.set(
        ENDPOINTS,
        "lost-eds",
        xds::healthy_assignment("lost-eds", &[addr(3)]),
    );
    plane.restart().await.unwrap();
    wait_for_set(&endpoints, "the change made while down", |set| {
        ports(set) == [3]
    })
    .await;
    wait_for_health(&endpoints, "the health current again", |h| h.is_current()).await;
    assert!(plane.streams() >= 2);
    // The new stream's first request carried the node and the versions accepted before.
    let requests = plane.requests();
    let listener_requests: Vec<_> = requests.iter().filter(|r| r.type_url == LISTENER).collect();
    let resubscribed = listener_requests
        .iter()
        .filter(|r| r.node.is_some())
        .count();
    assert!(
        resubscribed >= 2,
        "each stream starts with the node: {listener_requests:?}"
    );
    // A cut stream (the control plane restarting) is the same.
    plane.cut_streams();
    plane.set(
        ENDPOINTS,
        "lost-eds",
        xds::healthy_assignment("lost-eds", &[addr(4)]),
    );
    wait_for_set(&endpoints, "the change after a cut", |set| {
        ports(set) == [4]
    })
    .await;
}

#[tokio::test]
async fn a_control_plane_on_a_unix_socket_is_reached_as_istio_s_agent_is() {
    let dir = std::env::temp_dir().join(format!("waypost-xds-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("XDS");
    let _ = std::fs::remove_file(&socket);
    let plane = ControlPlane::start_unix(&socket).await.unwrap();
    assert!(
        plane.server_uri().starts_with("unix:///"),
        "{}",
        plane.server_uri()
    );
    xds::publish_chain(&plane, "uds", &[addr(1)]);
    let endpoints = source(&plane, "uds");
    wait_for_set(&endpoints, "endpoints over the socket", |set| {
        ports(set) == [1]
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn targets_of_one_control_plane_share_one_stream() {
    let plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "a", &[addr(1)]);
    xds::publish_chain(&plane, "b", &[addr(2)]);
    let a = source(&plane, "a");
    let b = source(&plane, "b");
    wait_for_set(&a, "a's endpoints", |set| ports(set) == [1]).await;
    wait_for_set(&b, "b's endpoints", |set| ports(set) == [2]).await;
    assert_eq!(plane.streams(), 1);
    // Both listeners in one subscription.
    let last = plane
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.type_url == LISTENER)
        .unwrap();
    assert_eq!(last.resource_names, ["a", "b"]);
    // A change to a's endpoints publishes a, and leaves b's set (and its revision) alone.
    let b_revision = b.revision();
    plane.set(
        ENDPOINTS,
        "a-eds",
        xds::healthy_assignment("a-eds", &[addr(3)]),
    );
    wait_for_set(&a, "a's new endpoints", |set| ports(set) == [3]).await;
    assert_eq!(b.revision(), b_revision);
    // b leaves: its names are dropped from the subscriptions.
    drop(b);
    eventually("b unsubscribed", || {
        plane
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.type_url == LISTENER)
            .is_some_and(|r| r.resource_names == ["a"])
    })
    .await;
    assert_eq!(ports(&a.load()), [3]);
}

#[tokio::test]
async fn a_deleted_cluster_makes_the_target_gone() {
    let plane = ControlPlane::start().await.unwrap();
    xds::publish_chain(&plane, "r", &[addr(1)]);
    let endpoints = source(&plane, "r");
    wait_for_set(&endpoints, "the first endpoints", |set| ports(set) == [1]).await;
    plane.remove(CLUSTER, "r-cluster");
    let health = wait_for_health(&endpoints, "the missing cluster", |h| h.is_gone()).await;
    assert!(
        health
            .last_error()
            .unwrap()
            .to_string()
            .contains("no cluster `r-cluster`"),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_reaches_loopback_servers_through_xds() {
    let backends = grpc::start_many(3).await.unwrap();
    let plane = ControlPlane::start().await.unwrap();
    let listener = "health.test.svc.cluster.local:50051";
    let mut addresses: Vec<SocketAddr> = backends[..2].iter().map(|b| b.address()).collect();
    addresses.sort();
    xds::publish_chain(&plane, listener, &addresses);
    // From a bootstrap file, as gRPC's GRPC_XDS_BOOTSTRAP names it.
    let dir = std::env::temp_dir().join(format!("waypost-xds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bootstrap.json");
    std::fs::write(&file, plane.bootstrap_json("tonic-client")).unwrap();
    let channel = waypost::Builder::new(&format!("xds:///{listener}"))
        .unwrap()
        .xds_bootstrap(Bootstrap::from_file(&file).unwrap())
        .policy(Policy::round_robin())
        .tonic_channel()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut client = HealthClient::new(channel);
    let mut calls = async |n: usize| {
        let mut answers: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for _ in 0..n {
            let response = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
            *answers
                .entry(grpc::answered_by(&response).unwrap())
                .or_default() += 1;
        }
        answers
    };
    let answers = calls(40).await;
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        addresses,
        "{answers:?}"
    );
    // The control plane moves the service to the third backend: calls follow.
    let third = backends[2].address();
    plane.set(
        ENDPOINTS,
        &format!("{listener}-eds"),
        xds::healthy_assignment(&format!("{listener}-eds"), &[third]),
    );
    let deadline = tokio::time::Instant::now() + waypost_tests::PATIENCE;
    loop {
        let answers = calls(10).await;
        if answers.keys().eq([&third]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls never moved: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python interpreter with grpcio: `WAYPOST_XDS_PYTHON` (set by `.ci/test`, which installs
/// grpcio into a virtual environment), else `python3`.
fn grpcio_python() -> String {
    let python = std::env::var("WAYPOST_XDS_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "`{python}` cannot import grpcio, the real xDS client this test checks the rig with: \
         run the suite through `.ci/test`, which installs it, or `pip install grpcio`"
    );
    python
}

/// The rig is checked against a real xDS client, so that it is not a fake that only agrees with
/// waypost: gRPC C-core (Python's grpcio) resolves the same listener through it to the same
/// backends, and follows the same change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_grpc_xds_client_resolves_the_same_listener_through_the_rig() {
    let python = grpcio_python();
    let backends = grpc::start_many(3).await.unwrap();
    let plane = ControlPlane::start().await.unwrap();
    let listener = "real.test.svc.cluster.local:50051";
    let mut addresses: Vec<SocketAddr> = backends[..2].iter().map(|b| b.address()).collect();
    addresses.sort();
    xds::publish_chain(&plane, listener, &addresses);
    let dir = std::env::temp_dir().join(format!("waypost-grpcio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join("bootstrap.json");
    std::fs::write(&bootstrap, plane.bootstrap_json("grpcio-client")).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/xds/grpcio_client.py");
    let run = |calls: usize| {
        let python = python.clone();
        let bootstrap = bootstrap.clone();
        async move {
            let output = tokio::process::Command::new(&python)
                .arg(script)
                .arg(format!("xds:///{listener}"))
                .arg(calls.to_string())
                .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            assert!(
                output.status.success(),
                "grpcio failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let answers: BTreeMap<String, usize> = serde_json::from_slice(&output.stdout).unwrap();
            answers
        }
    };
    let answers = run(40).await;
    let mut expected: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(
        answers.keys().cloned().collect::<Vec<_>>(),
        expected,
        "{answers:?}"
    );
    // waypost, through the same rig, sees the same endpoints.
    let endpoints = source(&plane, listener);
    let set = wait_for_set(&endpoints, "waypost's endpoints", |set| set.len() == 2).await;
    assert_eq!(
        set.iter().map(|e| e.address()).collect::<Vec<_>>(),
        addresses
    );
    // The grpcio client ACKed what the rig sent: no NACK from either client.
    assert!(plane.nacks().is_empty(), "{:?}", plane.nacks());
    // A change reaches a new grpcio client as it reaches waypost.
    let third = backends[2].address();
    let eds = format!("{listener}-eds");
    plane.set(ENDPOINTS, &eds, xds::healthy_assignment(&eds, &[third]));
    wait_for_set(&endpoints, "the change in waypost", |set| set.len() == 1).await;
    let answers = run(10).await;
    assert_eq!(
        answers.keys().cloned().collect::<Vec<_>>(),
        [third.to_string()],
        "{answers:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The control plane down for 30 s while callers keep calling: no call fails, and the endpoints
/// learned before serve them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_down_for_30_s_under_load_fails_no_call() {
    let backends = grpc::start_many(2).await.unwrap();
    let mut plane = ControlPlane::start().await.unwrap();
    let listener = "down.test:50051";
    let watched = source(&plane, listener);
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address()).collect();
    xds::publish_chain(&plane, listener, &addresses);
    let channel = waypost::Builder::new(&format!("xds:///{listener}"))
        .unwrap()
        .xds_bootstrap(Bootstrap::from_json(&plane.bootstrap_json("down")).unwrap())
        .policy(Policy::round_robin())
        .tonic_channel()
        .unwrap();
    let client = HealthClient::new(channel);
    let load = waypost_tests::load::Load::start(4, Duration::from_millis(5), move || {
        let mut client = client.clone();
        async move {
            let response = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|status| status.to_string())?;
            grpc::answered_by(&response).ok_or_else(|| "no x-backend header".to_owned())
        }
    });
    load.wait_for(100).await;
    plane.stop().await;
    let before = load.sent();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = load.sent() - before;
    // The outage was noticed; the set stayed. (The stream coming back is the lost-stream
    // test's part.)
    assert!(watched.health().is_failing(), "{:?}", watched.health());
    assert_eq!(watched.load().len(), 2);
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{:?}", tally.failures);
    assert!(during > 0, "calls went on while the control plane was down");
    assert_eq!(tally.answers.keys().copied().collect::<Vec<_>>(), {
        let mut sorted = addresses.clone();
        sorted.sort();
        sorted
    });
}

/// Calls under `load` until a window of them was answered by exactly `expected`; the failures
/// seen on the way are added to `failures`.
async fn settle(
    load: &waypost_tests::load::Load,
    what: &str,
    expected: &[SocketAddr],
    failures: &mut Vec<String>,
) {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = tokio::time::Instant::now() + waypost_tests::PATIENCE;
    load.take();
    loop {
        load.wait_for(40).await;
        let window = load.take();
        failures.extend(window.failures);
        if window.answers.keys().eq(expected.iter()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: calls never went to exactly {expected:?}: {:?}",
            window.answers
        );
    }
}

/// Through the tonic channel, under steady calls: endpoints added, removed, re-weighted and
/// drained; failover by priority and back; an invalid assignment NACKed while calls go on to
/// the last good one. No call fails on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_every_endpoint_change_and_none_fails() {
    let backends = grpc::start_many(4).await.unwrap();
    let b: Vec<SocketAddr> = backends.iter().map(|b| b.address()).collect();
    let plane = ControlPlane::start().await.unwrap();
    let listener = "changes.test:50051";
    let eds = format!("{listener}-eds");
    xds::publish_chain(&plane, listener, &b[..2]);
    let watched = source(&plane, listener);
    let channel = waypost::Builder::new(&format!("xds:///{listener}"))
        .unwrap()
        .xds_bootstrap(Bootstrap::from_json(&plane.bootstrap_json("changes")).unwrap())
        .policy(Policy::weighted_round_robin())
        .tonic_channel()
        .unwrap();
    let client = HealthClient::new(channel);
    let load = waypost_tests::load::Load::start(4, Duration::from_millis(2), move || {
        let mut client = client.clone();
        async move {
            let response = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|status| status.to_string())?;
            grpc::answered_by(&response).ok_or_else(|| "no x-backend header".to_owned())
        }
    });
    let mut failures = Vec::new();
    settle(&load, "the first endpoints", &b[..2], &mut failures).await;

    // Added.
    plane.set(ENDPOINTS, &eds, xds::healthy_assignment(&eds, &b[..3]));
    settle(&load, "an endpoint added", &b[..3], &mut failures).await;

    // Removed.
    plane.set(ENDPOINTS, &eds, xds::healthy_assignment(&eds, &b[1..3]));
    settle(&load, "an endpoint removed", &b[1..3], &mut failures).await;

    // Re-weighted 1:3: the second takes about three quarters of the calls.
    plane.set(
        ENDPOINTS,
        &eds,
        xds::assignment(
            &eds,
            &[LocalitySpec::new(
                "test-a",
                vec![
                    HostSpec::healthy(b[1]).with_weight(1),
                    HostSpec::healthy(b[2]).with_weight(3),
                ],
            )],
        ),
    );
    wait_for_set(&watched, "the new weights", |set| {
        let weight = |address| {
            set.iter()
                .find(|e| e.address() == address)
                .map(|e| e.weight())
        };
        weight(b[1]) == Some(250_000) && weight(b[2]) == Some(750_000)
    })
    .await;
    let deadline = tokio::time::Instant::now() + waypost_tests::PATIENCE;
    load.take();
    loop {
        load.wait_for(400).await;
        let window = load.take();
        failures.extend(window.failures.iter().cloned());
        let share = window.share(b[2]);
        if (0.65..=0.85).contains(&share) && window.answers.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the weights were never followed: {:?}",
            window.answers
        );
    }

    // Drained: a DRAINING endpoint takes no new calls while another is healthy.
    plane.set(
        ENDPOINTS,
        &eds,
        xds::assignment(
            &eds,
            &[LocalitySpec::new(
                "test-a",
                vec![
                    HostSpec::healthy(b[1]).with_health(HealthStatus::Draining),
                    HostSpec::healthy(b[2]),
                ],
            )],
        ),
    );
    settle(&load, "an endpoint drained", &b[2..3], &mut failures).await;

    // Priority 0 healthy, then not: calls fail over to priority 1.
    let by_priority = |primary: HealthStatus| {
        xds::assignment(
            &eds,
            &[
                LocalitySpec::new("near", vec![HostSpec::healthy(b[2]).with_health(primary)]),
                LocalitySpec::new("far", vec![HostSpec::healthy(b[3])]).with_priority(1),
            ],
        )
    };
    plane.set(ENDPOINTS, &eds, by_priority(HealthStatus::Healthy));
    settle(&load, "priority 0", &b[2..3], &mut failures).await;
    plane.set(ENDPOINTS, &eds, by_priority(HealthStatus::Unhealthy));
    settle(&load, "the failover to priority 1", &b[3..4], &mut failures).await;

    // An assignment that does not decode is NACKed; calls go on to the last good endpoints.
    let bad = Any {
        type_url: ENDPOINTS.into(),
        value: vec![0x0a, 0x03, b'x', b'-', b'e', 0x12, 0xff],
    };
    plane.set(ENDPOINTS, &eds, bad);
    eventually("a NACK of the bad assignment", || !plane.nacks().is_empty()).await;
    load.take();
    load.wait_for(100).await;
    let window = load.take();
    failures.extend(window.failures);
    assert_eq!(
        window.answers.keys().collect::<Vec<_>>(),
        [&b[3]],
        "calls after the NACK"
    );

    // A good version after it: back to priority 0.
    plane.set(ENDPOINTS, &eds, by_priority(HealthStatus::Healthy));
    settle(&load, "priority 0 again", &b[2..3], &mut failures).await;
    let tally = load.stop().await;
    failures.extend(tally.failures);
    assert!(failures.is_empty(), "{failures:?}");
}

/// A control plane that answers slowly: a call whose deadline ends before the first endpoints
/// arrive fails with a timeout naming the target instead of hanging; one with a longer deadline
/// waits and is answered once they come. Updates held back the same way arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_control_plane_makes_calls_wait_within_their_deadline() {
    let backends = grpc::start_many(2).await.unwrap();
    let plane = ControlPlane::start().await.unwrap();
    let listener = "slow.test:50051";
    xds::publish_chain(&plane, listener, &[backends[0].address()]);
    // Held until released below: no answer can come before.
    plane.delay_responses(Duration::from_secs(3600));
    let channel = waypost::Builder::new(&format!("xds:///{listener}"))
        .unwrap()
        .xds_bootstrap(Bootstrap::from_json(&plane.bootstrap_json("slow")).unwrap())
        .tonic_channel()
        .unwrap();
    let client = HealthClient::new(channel);
    let check = |timeout: Duration| {
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            request.set_timeout(timeout);
            client.check(request).await
        }
    };
    let status = check(Duration::from_millis(200)).await.unwrap_err();
    assert!(
        status.message().contains(listener) && status.message().contains("deadline"),
        "{status:?}"
    );
    let waiting = tokio::spawn(check(waypost_tests::PATIENCE));
    eventually("the client asked for its listener", || {
        plane
            .requests()
            .iter()
            .any(|request| request.type_url == LISTENER)
    })
    .await;
    assert!(!waiting.is_finished(), "nothing can answer it yet");
    // The next version is held as well; released, both arrive in order.
    let eds = format!("{listener}-eds");
    plane.set(
        ENDPOINTS,
        &eds,
        xds::healthy_assignment(&eds, &[backends[1].address()]),
    );
    plane.delay_responses(Duration::from_millis(50));
    let response = waiting.await.unwrap().unwrap();
    assert!(grpc::answered_by(&response).is_some());
    let deadline = tokio::time::Instant::now() + waypost_tests::PATIENCE;
    loop {
        let response = check(waypost_tests::PATIENCE).await.unwrap();
        if grpc::answered_by(&response) == Some(backends[1].address()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held update never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(plane.nacks().is_empty(), "{:?}", plane.nacks());
}
