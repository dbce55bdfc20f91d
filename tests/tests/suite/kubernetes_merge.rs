//! The Kubernetes source against the fake API server: how EndpointSlices become one endpoint
//! set. These are kube-proxy's cases, and the ones other clients got wrong (kuberesolver used
//! only the slice that changed last).
//!
//! Slices carry any IPs as data; nothing here connects to them.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use waypost::discovery::{EndpointSet, Readiness};
use waypost_tests::kube_api::FakeApiServer;
use waypost_tests::kube_api::slices::{EndpointBuilder, SliceBuilder, endpoint_slice, ep};
use waypost_tests::{wait_for_health, wait_for_set};

fn ip(i: usize) -> String {
    format!("10.1.{}.{}", i / 200, i % 200 + 1)
}

fn http_slice(name: &str) -> SliceBuilder {
    endpoint_slice(name, "api").port("http", 8080)
}

fn addresses(set: &EndpointSet) -> BTreeSet<SocketAddr> {
    set.addresses().collect()
}

fn expected(ips: impl IntoIterator<Item = String>, port: u16) -> BTreeSet<SocketAddr> {
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_250_endpoints_over_3_slices_uses_all_of_them() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoints((0..100).map(|i| ep(&ip(i)).ready())));
    rig.apply(http_slice("api-b").endpoints((100..200).map(|i| ep(&ip(i)).ready())));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set.len(), 200);

    // A third slice arrives through the watch; the first two stay.
    rig.apply(http_slice("api-c").endpoints((200..250).map(|i| ep(&ip(i)).ready())));
    let set = wait_for_set(&endpoints, "250 endpoints", |set| set.len() == 250).await;
    assert_eq!(addresses(&set), expected((0..250).map(ip), 8080));

    // An update of one slice changes only that slice's part.
    rig.apply(http_slice("api-b").endpoints((100..150).map(|i| ep(&ip(i)).ready())));
    let set = wait_for_set(&endpoints, "200 endpoints", |set| set.len() == 200).await;
    assert_eq!(
        addresses(&set),
        expected((0..150).chain(200..250).map(ip), 8080)
    );
    assert!(endpoints.health().is_current());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_slice_removes_only_its_endpoints_and_a_moving_endpoint_survives() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoints((0..3).map(|i| ep(&ip(i)))));
    rig.apply(http_slice("api-b").endpoints((3..6).map(|i| ep(&ip(i)))));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    assert_eq!(endpoints.resolved().await.unwrap().len(), 6);

    rig.delete("default", "api-a").unwrap();
    let set = wait_for_set(&endpoints, "api-a's endpoints gone", |set| set.len() == 3).await;
    assert_eq!(addresses(&set), expected((3..6).map(ip), 8080));

    // The controller moves ip(5) from api-b to api-c: first added to api-c, then removed from
    // api-b. Each write makes one revision, and both hold ip(5): it never leaves the set.
    let moving: SocketAddr = format!("{}:8080", ip(5)).parse().unwrap();
    rig.apply(http_slice("api-c").endpoints([ep(&ip(5)), ep(&ip(6))]));
    let added = wait_for_set(&endpoints, "api-c added", |set| set.len() == 4).await;
    assert!(added.contains(&moving));
    // The same write also drops ip(4), so that it makes a revision to look at.
    rig.apply(http_slice("api-b").endpoints((3..4).map(|i| ep(&ip(i)))));
    let moved = wait_for_set(&endpoints, "ip(5) moved", |set| {
        set.revision() > added.revision()
    })
    .await;
    assert_eq!(moved.revision(), added.revision() + 1);
    assert_eq!(addresses(&moved), expected([3, 5, 6].map(ip), 8080));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_appear_once_and_a_terminating_duplicate_does_not_hide_a_ready_one() {
    let rig = FakeApiServer::start().await;
    // A rebalance in progress: ip(2..4) are in both slices.
    rig.apply(http_slice("api-a").endpoints((0..4).map(|i| ep(&ip(i)).ready())));
    rig.apply(http_slice("api-b").endpoints((2..6).map(|i| ep(&ip(i)).ready())));
    // ip(9) is ready in one slice and terminating in another (a stale copy).
    rig.apply(http_slice("api-c").endpoint(ep(&ip(9)).draining()));
    rig.apply(http_slice("api-d").endpoint(ep(&ip(9)).ready()));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected((0..6).chain([9]).map(ip), 8080));
    assert!(set.iter().all(|e| e.readiness() == Readiness::Ready));
}

/// One pod of the rolling update model: its endpoint as the controller writes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pod {
    Starting,
    Ready,
    Draining,
}

fn pod_endpoint(ip: &str, pod: Pod) -> EndpointBuilder {
    match pod {
        Pod::Starting => ep(ip).unready(),
        Pod::Ready => ep(ip).ready(),
        Pod::Draining => ep(ip).draining(),
    }
}

/// What the set must be for these pods: the ready ones, else the draining ones.
fn model(pods: &[(String, Pod)]) -> BTreeSet<(SocketAddr, Readiness)> {
    let pick = |state: Pod, readiness: Readiness| -> BTreeSet<(SocketAddr, Readiness)> {
        pods.iter()
            .filter(|(_, pod)| *pod == state)
            .map(|(ip, _)| (SocketAddr::new(ip.parse().unwrap(), 8080), readiness))
            .collect()
    };
    let ready = pick(Pod::Ready, Readiness::Ready);
    if ready.is_empty() {
        pick(Pod::Draining, Readiness::Terminating)
    } else {
        ready
    }
}

fn states(set: &EndpointSet) -> BTreeSet<(SocketAddr, Readiness)> {
    set.iter().map(|e| (e.address(), e.readiness())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_never_empties_the_set_while_a_pod_is_ready_or_serving() {
    let rig = FakeApiServer::start().await;
    // Old pods in slice api-old, new pods in slice api-new.
    let old: Vec<String> = (0..3).map(ip).collect();
    let new: Vec<String> = (10..13).map(ip).collect();
    let mut old_pods: Vec<(String, Pod)> = old.iter().map(|ip| (ip.clone(), Pod::Ready)).collect();
    let mut new_pods: Vec<(String, Pod)> = Vec::new();

    let write = |old_pods: &[(String, Pod)], new_pods: &[(String, Pod)]| {
        rig.apply(
            http_slice("api-old")
                .endpoints(old_pods.iter().map(|(ip, pod)| pod_endpoint(ip, *pod))),
        );
        rig.apply(
            http_slice("api-new")
                .endpoints(new_pods.iter().map(|(ip, pod)| pod_endpoint(ip, *pod))),
        );
    };
    write(&old_pods, &new_pods);
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let mut revision = endpoints.resolved().await.unwrap().revision();

    // Steps of the update; after each, the set must equal the model, and exactly one new
    // revision (or none, when the model did not change) may have been published: so no
    // revision in between could have been empty.
    let mut check = async |old_pods: &[(String, Pod)], new_pods: &[(String, Pod)], step: &str| {
        let all: Vec<(String, Pod)> = old_pods.iter().chain(new_pods).cloned().collect();
        let want = model(&all);
        let serving = all.iter().any(|(_, pod)| *pod != Pod::Starting);
        assert!(!serving || !want.is_empty(), "model of {step}");
        let set = wait_for_set(&endpoints, step, |set| states(set) == want).await;
        assert!(
            set.revision() <= revision + 1,
            "{step}: unexpected revisions between {revision} and {}",
            set.revision()
        );
        revision = set.revision();
        assert!(
            !serving || !set.is_empty(),
            "{step}: empty while a pod serves"
        );
    };

    // maxSurge 1, maxUnavailable 0: one new pod at a time.
    for i in 0..3 {
        new_pods.push((new[i].clone(), Pod::Starting));
        write(&old_pods, &new_pods);
        check(&old_pods, &new_pods, &format!("new pod {i} starting")).await;
        new_pods[i].1 = Pod::Ready;
        write(&old_pods, &new_pods);
        check(&old_pods, &new_pods, &format!("new pod {i} ready")).await;
        old_pods[0].1 = Pod::Draining;
        write(&old_pods, &new_pods);
        check(&old_pods, &new_pods, &format!("old pod {i} draining")).await;
        old_pods.remove(0);
        write(&old_pods, &new_pods);
        check(&old_pods, &new_pods, &format!("old pod {i} gone")).await;
    }

    // A harsher update: every pod drains before any replacement is ready. The draining pods
    // serve until the new ones are ready.
    old_pods = new_pods.clone();
    new_pods = (20..23).map(|i| (ip(i), Pod::Starting)).collect();
    write(&old_pods, &new_pods);
    check(&old_pods, &new_pods, "replacements starting").await;
    for pod in &mut old_pods {
        pod.1 = Pod::Draining;
    }
    write(&old_pods, &new_pods);
    check(&old_pods, &new_pods, "all old pods draining").await;
    let set = endpoints.load_full();
    assert_eq!(set.len(), 3);
    assert!(set.iter().all(|e| e.readiness() == Readiness::Terminating));
    new_pods[0].1 = Pod::Ready;
    write(&old_pods, &new_pods);
    check(&old_pods, &new_pods, "first replacement ready").await;
    assert_eq!(endpoints.load().len(), 1);
    old_pods.clear();
    for pod in &mut new_pods {
        pod.1 = Pod::Ready;
    }
    write(&old_pods, &new_pods);
    check(&old_pods, &new_pods, "update done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_endpoints_fall_back_to_draining_ones_and_none_serving_is_empty() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoints([
        ep(&ip(0)).draining(),
        ep(&ip(1)).unready(),
        ep(&ip(2)).gone(),
    ]));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected([ip(0)], 8080));
    assert_eq!(set[0].readiness(), Readiness::Terminating);

    // The draining pod stops serving: nothing can take traffic, and the set says so.
    rig.apply(http_slice("api-a").endpoints([ep(&ip(0)).gone(), ep(&ip(1)).unready()]));
    let set = wait_for_set(&endpoints, "an empty set", |set| set.is_empty()).await;
    assert!(set.revision() > 1);
    // Empty because nothing serves, not because something failed.
    assert!(endpoints.health().is_current());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_are_chosen_by_name_or_number() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("http", 8080)
            .port("grpc", 9090)
            .endpoints([ep("10.0.0.1"), ep("10.0.0.2")]),
    );
    let by_name = rig.source("kubernetes:///api:grpc").await.spawn();
    let by_number = rig.source("kubernetes:///api:8080").await.spawn();
    let by_name = by_name.resolved().await.unwrap();
    let by_number = by_number.resolved().await.unwrap();
    assert_eq!(
        addresses(&by_name),
        expected(["10.0.0.1".into(), "10.0.0.2".into()], 9090)
    );
    assert_eq!(
        addresses(&by_number),
        expected(["10.0.0.1".into(), "10.0.0.2".into()], 8080)
    );

    // Two ports and none named in the target: ambiguous, said in health.
    let ambiguous = rig.source("kubernetes:///api").await.spawn();
    assert!(ambiguous.resolved().await.unwrap().is_empty());
    let health = wait_for_health(&ambiguous, "a port error", |h| h.is_failing()).await;
    let error = health.last_error().unwrap();
    assert!(error.is_not_found(), "{error}");
    assert!(
        error.detail().contains("http:8080, grpc:9090")
            || error.detail().contains("grpc:9090, http:8080"),
        "{error}"
    );

    // A port the slices do not have.
    let missing = rig.source("kubernetes:///api:metrics").await.spawn();
    assert!(missing.resolved().await.unwrap().is_empty());
    let health = wait_for_health(&missing, "a port error", |h| h.is_failing()).await;
    assert!(
        health
            .last_error()
            .unwrap()
            .detail()
            .contains("has the target's port")
    );

    // The slices gain the port: the error clears.
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("http", 8080)
            .port("grpc", 9090)
            .port("metrics", 9100)
            .endpoints([ep("10.0.0.1")]),
    );
    let set = wait_for_set(&missing, "metrics endpoints", |set| set.len() == 1).await;
    assert_eq!(set[0].address(), "10.0.0.1:9100".parse().unwrap());
    assert!(missing.health().is_current());
}

/// A MODIFIED slice whose port list changed: the targetPort moves (new addresses), the port
/// is renamed away (the slice offers the target nothing, and health says so), and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modified_slice_with_new_ports_moves_its_endpoints() {
    let rig = FakeApiServer::start().await;
    let pods = || [ep("10.0.0.1"), ep("10.0.0.2")];
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("http", 8080)
            .endpoints(pods()),
    );
    rig.apply(
        endpoint_slice("api-b", "api")
            .port("http", 8080)
            .endpoint(ep("10.0.0.3")),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set.len(), 3);

    // The Service's targetPort changes; the controller rewrites api-a first.
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("http", 9090)
            .endpoints(pods()),
    );
    let set = wait_for_set(&endpoints, "api-a on 9090", |set| {
        set.contains(&"10.0.0.1:9090".parse().unwrap())
    })
    .await;
    assert_eq!(
        addresses(&set),
        [
            "10.0.0.1:9090".parse().unwrap(),
            "10.0.0.2:9090".parse().unwrap(),
            "10.0.0.3:8080".parse().unwrap()
        ]
        .into_iter()
        .collect()
    );

    // Both slices lose the port name: nothing for the target, and the reason in health.
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("web", 9090)
            .endpoints(pods()),
    );
    rig.apply(
        endpoint_slice("api-b", "api")
            .port("web", 9090)
            .endpoint(ep("10.0.0.3")),
    );
    wait_for_set(&endpoints, "no http port left", |set| set.is_empty()).await;
    let health = wait_for_health(&endpoints, "a port error", |h| h.is_failing()).await;
    let error = health.last_error().unwrap();
    assert!(error.is_not_found(), "{error}");
    assert!(error.detail().contains("web:9090"), "{error}");

    rig.apply(
        endpoint_slice("api-b", "api")
            .port("http", 9090)
            .endpoint(ep("10.0.0.3")),
    );
    let set = wait_for_set(&endpoints, "the port back", |set| set.len() == 1).await;
    assert_eq!(set[0].address(), "10.0.0.3:9090".parse().unwrap());
    assert!(endpoints.health().is_current());
}

/// A Service with a DNS port on UDP and TCP (kube-proxy keys ports by name and protocol): a
/// TCP client gets the TCP one, and a port that exists only on UDP is no port for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tcp_ports_count_for_a_tcp_client() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        endpoint_slice("dns-a", "dns")
            .raw_port(serde_json::json!({ "name": "dns", "port": 5353, "protocol": "UDP" }))
            .raw_port(serde_json::json!({ "name": "dns", "port": 53, "protocol": "TCP" }))
            .raw_port(serde_json::json!({ "name": "stats", "port": 9000, "protocol": "UDP" }))
            .endpoint(ep("10.0.0.1")),
    );
    let by_name = rig.source("kubernetes:///dns:dns").await.spawn();
    let set = by_name.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected(["10.0.0.1".into()], 53));
    // The only TCP port is the slice's only port for a TCP client.
    let unnamed = rig.source("kubernetes:///dns").await.spawn();
    let set = unnamed.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected(["10.0.0.1".into()], 53));

    let udp_only = rig.source("kubernetes:///dns:stats").await.spawn();
    assert!(udp_only.resolved().await.unwrap().is_empty());
    let health = wait_for_health(&udp_only, "a port error", |h| h.is_failing()).await;
    let error = health.last_error().unwrap();
    assert!(error.is_not_found(), "{error}");
    assert!(error.detail().contains("stats:9000/UDP"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_port_is_used_when_the_target_names_none() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("", 8080)
            .endpoint(ep("10.0.0.1")),
    );
    let endpoints = rig.source("kubernetes:///api").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set[0].address(), "10.0.0.1:8080".parse().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_services_give_both_families_and_fqdn_slices_are_skipped() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-v4").endpoint(ep("10.0.0.1")));
    rig.apply(
        http_slice("api-v6")
            .address_type("IPv6")
            .endpoint(ep("fd00::1"))
            .endpoint(ep("::1")),
    );
    rig.apply(
        http_slice("api-fqdn")
            .address_type("FQDN")
            .endpoint(ep("api.example.com")),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        addresses(&set),
        ["10.0.0.1:8080", "[fd00::1]:8080", "[::1]:8080"]
            .map(|a| a.parse().unwrap())
            .into()
    );
    assert!(endpoints.health().is_current());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_carried_to_every_endpoint() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        http_slice("api-a").endpoint(
            ep("10.0.0.1")
                .zone("eu-west-1a")
                .node("node-1")
                .hostname("api-0")
                .hints(["eu-west-1a"])
                .extra_address("10.0.0.99"),
        ),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    let endpoint = &set[0];
    assert_eq!(endpoint.address(), "10.0.0.1:8080".parse().unwrap());
    assert_eq!(endpoint.zone(), Some("eu-west-1a"));
    assert_eq!(endpoint.node(), Some("node-1"));
    assert_eq!(endpoint.hostname(), Some("api-0"));
    assert!(endpoint.is_hinted_for("eu-west-1a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_slices_are_skipped_and_nothing_else_is_lost() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-good").endpoint(ep("10.0.0.1")));
    rig.apply(http_slice("api-bad-ip").endpoint(ep("10.0.0.1000")));
    rig.apply(
        http_slice("api-no-ports")
            .without_ports()
            .endpoint(ep("10.0.0.3")),
    );
    rig.apply(
        http_slice("api-odd-type")
            .address_type("IPv7")
            .endpoint(ep("10.0.0.4")),
    );
    // Only a server that ignores the label selector would send these two.
    rig.ignore_label_selectors(true);
    rig.apply(
        http_slice("api-no-label")
            .without_label("kubernetes.io/service-name")
            .endpoint(ep("10.0.0.5")),
    );
    rig.apply(
        endpoint_slice("web-a", "web")
            .port("http", 8080)
            .endpoint(ep("10.0.0.6")),
    );

    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected(["10.0.0.1".into()], 8080));
    assert!(endpoints.health().is_current());

    // An endpoint with a bad address is skipped alone: the slice's others are used.
    rig.apply(http_slice("api-second").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "two endpoints", |set| set.len() == 2).await;
    rig.apply(
        http_slice("api-second")
            .endpoint(ep("10.0.0.2"))
            .endpoint(ep("10.0.0.999"))
            .endpoint(ep("10.0.0.7")),
    );
    let set = wait_for_set(&endpoints, "the bad endpoint skipped", |set| set.len() == 3).await;
    assert_eq!(
        addresses(&set),
        expected(
            ["10.0.0.1".into(), "10.0.0.2".into(), "10.0.0.7".into()],
            8080
        )
    );
    // A good slice turning bad as a whole loses only its own contribution, and recovers.
    rig.apply(
        http_slice("api-second")
            .address_type("IPv7")
            .endpoint(ep("10.0.0.2")),
    );
    wait_for_set(&endpoints, "the bad slice dropped", |set| set.len() == 1).await;
    rig.apply(http_slice("api-second").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "the slice back", |set| set.len() == 2).await;
}

/// A slice that is not even an EndpointSlice's shape (a server that does not validate, a field
/// of the wrong type) cannot be decoded. The watch goes on: the other slices' endpoints stay,
/// and later changes still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_slice_does_not_stop_the_watch() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-good").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected(["10.0.0.1".into()], 8080));

    let mut broken = http_slice("api-broken")
        .endpoint(ep("10.0.0.2"))
        .json()
        .clone();
    broken["endpoints"] = serde_json::json!("not a list");
    rig.apply_value_timed(broken);
    // A change after it still arrives.
    rig.apply(
        http_slice("api-good")
            .endpoint(ep("10.0.0.1"))
            .endpoint(ep("10.0.0.3")),
    );
    let set = wait_for_set(&endpoints, "the later change", |set| set.len() == 2).await;
    assert_eq!(
        addresses(&set),
        expected(["10.0.0.1".into(), "10.0.0.3".into()], 8080)
    );

    // A source that starts while the broken slice is stored lists it with the others.
    let late = rig.source("kubernetes:///api:http").await.spawn();
    let set = tokio::time::timeout(std::time::Duration::from_secs(20), late.resolved())
        .await
        .expect("the first list completes")
        .unwrap();
    assert_eq!(
        addresses(&set),
        expected(["10.0.0.1".into(), "10.0.0.3".into()], 8080)
    );

    // A good slice modified into an undecodable one: its endpoints go (the watch lists again,
    // each slice read on its own), the other slice's stay.
    rig.apply(http_slice("api-other").endpoint(ep("10.0.0.4")));
    wait_for_set(&endpoints, "the other slice", |set| set.len() == 3).await;
    let mut broken = http_slice("api-good")
        .endpoint(ep("10.0.0.1"))
        .json()
        .clone();
    broken["endpoints"] = serde_json::json!("not a list");
    rig.apply_value_timed(broken);
    let set = wait_for_set(&endpoints, "the broken slice's endpoints gone", |set| {
        set.len() == 1
    })
    .await;
    assert_eq!(addresses(&set), expected(["10.0.0.4".into()], 8080));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoint_slices_says_so_in_its_health() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///ghost:http").await.spawn();
    // An answer, not a wait: the empty set, and why.
    let set = endpoints.resolved().await.unwrap();
    assert!(set.is_empty());
    let health = wait_for_health(&endpoints, "no slices", |h| h.is_failing()).await;
    let error = health.last_error().unwrap();
    assert!(error.is_not_found());
    assert_eq!(error.target(), "kubernetes:///ghost:http");
    assert!(error.detail().contains("no EndpointSlices"), "{error}");

    rig.apply(
        endpoint_slice("ghost-a", "ghost")
            .port("http", 80)
            .endpoint(ep("10.0.0.9")),
    );
    wait_for_set(&endpoints, "ghost's endpoint", |set| set.len() == 1).await;
    assert!(endpoints.health().is_current());

    // Deleting the last slice says it again.
    rig.delete("default", "ghost-a");
    wait_for_set(&endpoints, "empty again", |set| set.is_empty()).await;
    wait_for_health(&endpoints, "no slices again", |h| h.is_failing()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_relabelled_to_another_service_leaves_the_set() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    assert_eq!(endpoints.resolved().await.unwrap().len(), 2);
    // The server turns the label change into a DELETED event for this watch.
    rig.apply(
        http_slice("api-b")
            .label("kubernetes.io/service-name", "web")
            .endpoint(ep("10.0.0.2")),
    );
    let set = wait_for_set(&endpoints, "api-b gone", |set| set.len() == 1).await;
    assert_eq!(set[0].address(), "10.0.0.1:8080".parse().unwrap());
    // And back: ADDED.
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "api-b back", |set| set.len() == 2).await;
}

/// A server (or proxy) that ignores the label selector sends every slice of the namespace, and
/// a relabelled slice as MODIFIED rather than DELETED: the other Services' slices are ignored,
/// the relabelled one leaves, and a Service with no slice of its own still says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaky_label_selector_changes_nothing() {
    let rig = FakeApiServer::start().await;
    rig.ignore_label_selectors(true);
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    rig.apply(
        endpoint_slice("web-a", "web")
            .port("http", 8080)
            .endpoint(ep("10.0.0.9")),
    );
    rig.apply(
        http_slice("orphan")
            .without_label("kubernetes.io/service-name")
            .endpoint(ep("10.0.0.8")),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        addresses(&set),
        expected(["10.0.0.1".into(), "10.0.0.2".into()], 8080)
    );

    rig.apply(
        http_slice("api-b")
            .label("kubernetes.io/service-name", "web")
            .endpoint(ep("10.0.0.2")),
    );
    let set = wait_for_set(&endpoints, "api-b gone", |set| set.len() == 1).await;
    assert_eq!(addresses(&set), expected(["10.0.0.1".into()], 8080));
    assert!(endpoints.health().is_current());

    let ghost = rig.source("kubernetes:///ghost:http").await.spawn();
    assert!(ghost.resolved().await.unwrap().is_empty());
    let health = wait_for_health(&ghost, "no slices", |h| h.is_failing()).await;
    let error = health.last_error().unwrap();
    assert!(error.is_not_found(), "{error}");
    assert!(error.detail().contains("has no EndpointSlices"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_with_null_endpoints_are_a_service_scaled_to_zero() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").null_endpoints());
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    assert!(endpoints.resolved().await.unwrap().is_empty());
    // Scaled to zero is an answer, not a failure.
    assert!(endpoints.health().is_current());
}

/// The EndpointSlice controller's placeholder for a Service without endpoints (no pod matches
/// its selector, or it was scaled to zero): a slice with neither ports nor endpoints. The set is
/// empty and the source is current, not failing over a slice "without ports".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_placeholder_slice_is_an_empty_service() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        endpoint_slice("api-placeholder", "api")
            .null_endpoints()
            .null_ports(),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    assert!(endpoints.resolved().await.unwrap().is_empty());
    let health = endpoints.health();
    assert!(health.is_current(), "{health:?}");
    assert!(health.last_error().is_none(), "{health:?}");

    // Pods come: the controller replaces the placeholder with a slice of endpoints.
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.delete("default", "api-placeholder");
    wait_for_set(&endpoints, "the new pod", |set| set.len() == 1).await;

    // Scaled to zero again: the placeholder, with `[]` for both lists this time, comes
    // before the last slice of endpoints goes.
    rig.apply(endpoint_slice("api-placeholder", "api"));
    rig.delete("default", "api-a");
    wait_for_set(&endpoints, "the empty Service", |set| set.is_empty()).await;
    let health = endpoints.health();
    assert!(health.is_current(), "{health:?}");
    assert!(health.last_error().is_none(), "{health:?}");
}

/// kubernetes issue 135266: a draining pod's IP went to a new pod that is not ready yet. The
/// address takes no traffic, not even as the draining fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unready_pod_on_a_draining_address_takes_no_traffic() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        http_slice("api-a")
            .endpoint(ep("10.0.0.1").draining())
            .endpoint(ep("10.0.0.2").draining()),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        addresses(&set),
        expected(["10.0.0.1".into(), "10.0.0.2".into()], 8080)
    );

    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.1").unready()));
    let set = wait_for_set(&endpoints, "the shadowed address gone", |set| {
        set.len() == 1
    })
    .await;
    assert_eq!(addresses(&set), expected(["10.0.0.2".into()], 8080));
    assert!(set.iter().all(|e| e.readiness() == Readiness::Terminating));
}

/// A server (or proxy) that ignores the request's namespace sends slices of another namespace,
/// one of them with the same name as ours: they are ignored, their deletion too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_of_another_namespace_are_ignored() {
    let rig = FakeApiServer::start().await;
    rig.ignore_namespaces(true);
    rig.apply(
        http_slice("api-a")
            .namespace("prod")
            .endpoint(ep("10.0.0.1")),
    );
    rig.apply(
        http_slice("api-a")
            .namespace("staging")
            .endpoint(ep("10.0.0.9")),
    );
    rig.apply(
        http_slice("api-b")
            .namespace("staging")
            .endpoint(ep("10.0.0.8")),
    );
    let endpoints = rig.source("kubernetes:///api.prod:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(addresses(&set), expected(["10.0.0.1".into()], 8080));

    rig.delete("staging", "api-a");
    rig.apply(
        http_slice("api-c")
            .namespace("prod")
            .endpoint(ep("10.0.0.3")),
    );
    let set = wait_for_set(&endpoints, "the next change", |set| set.len() == 2).await;
    assert_eq!(
        addresses(&set),
        expected(["10.0.0.1".into(), "10.0.0.3".into()], 8080)
    );
}

/// An endpoint without an address is skipped alone: the rest of its slice still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_addresses_costs_only_itself() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        http_slice("api-a")
            .endpoint(ep("10.0.0.1"))
            .endpoint(ep("10.0.0.9").without_addresses())
            .endpoint(ep("10.0.0.2")),
    );
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        addresses(&set),
        expected(["10.0.0.1".into(), "10.0.0.2".into()], 8080)
    );
    assert!(endpoints.health().is_current());
}
