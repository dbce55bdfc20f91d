//! Shared watches against the fake API server: the targets of one namespace fed by one watch,
//! how targets join and leave it, and that each target still sees exactly its own Service.
//!
//! Everything waits on conditions with a generous deadline; nothing is timed.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use waypost::discovery::source::kubernetes::SharedWatches;
use waypost::discovery::{EndpointSet, Endpoints};
use waypost_tests::kube_api::slices::{SliceBuilder, endpoint_slice, ep};
use waypost_tests::kube_api::{FakeApiServer, RequestKind};
use waypost_tests::{eventually, wait_for_health, wait_for_set};

const SERVICES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

fn slice(name: &str, service: &str) -> SliceBuilder {
    endpoint_slice(name, service).port("http", 8080)
}

fn addresses(set: &EndpointSet) -> BTreeSet<SocketAddr> {
    set.iter().map(|endpoint| endpoint.address()).collect()
}

fn at(ips: &[&str]) -> BTreeSet<SocketAddr> {
    ips.iter()
        .map(|ip| format!("{ip}:8080").parse().unwrap())
        .collect()
}

/// One slice per Service, `10.0.<i>.1` for the `i`-th.
fn seed(rig: &FakeApiServer) {
    for (i, service) in SERVICES.iter().enumerate() {
        rig.apply(slice(&format!("{service}-a"), service).endpoint(ep(&format!("10.0.{i}.1"))));
    }
}

/// A target of `service` (port `http`) through `watches`.
fn shared(rig: &FakeApiServer, watches: &SharedWatches, service: &str) -> Endpoints {
    rig.shared_source(watches, &format!("kubernetes:///{service}:http"))
        .spawn()
}

fn last_watch_selector(rig: &FakeApiServer) -> String {
    let watches = rig.requests_of(RequestKind::Watch);
    let query = watches.last().and_then(|watch| watch.query.clone());
    query
        .and_then(|query| query.label_selector)
        .map(|selector| format!("{selector:?}"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targets_of_one_namespace_share_one_watch_and_each_sees_its_own_service() {
    let rig = FakeApiServer::start().await;
    seed(&rig);
    rig.apply(
        slice("alpha-a", "alpha")
            .namespace("other")
            .endpoint(ep("10.9.0.1")),
    );
    let watches = rig.shared_watches().await;
    let targets: Vec<Endpoints> = SERVICES
        .iter()
        .map(|service| shared(&rig, &watches, service))
        .collect();
    for (i, endpoints) in targets.iter().enumerate() {
        let set = endpoints.resolved().await.unwrap();
        assert_eq!(addresses(&set), at(&[&format!("10.0.{i}.1")]), "{i}");
    }
    // Four Services make one group whatever the timing: the groups merge as a binary counter.
    assert_eq!(watches.namespace_watch_count("default"), 1);
    eventually("one watch on the server", || rig.live_watches() == 1).await;
    let selector = last_watch_selector(&rig);
    for service in SERVICES {
        assert!(selector.contains(service), "{selector}");
    }

    // A change reaches its Service's target only.
    let revisions: Vec<u64> = targets.iter().map(Endpoints::revision).collect();
    rig.apply(
        slice("bravo-a", "bravo")
            .endpoint(ep("10.0.1.1"))
            .endpoint(ep("10.0.1.2")),
    );
    wait_for_set(&targets[1], "bravo's new endpoint", |set| set.len() == 2).await;
    rig.apply(slice("delta-b", "delta").endpoint(ep("10.0.3.2")));
    wait_for_set(&targets[3], "delta's new slice", |set| set.len() == 2).await;
    for i in [0, 2] {
        assert_eq!(
            targets[i].revision(),
            revisions[i],
            "target {i} saw no change"
        );
    }

    // Another namespace is another watch; it sees only its own namespace's slices.
    let other = rig
        .shared_source(&watches, "kubernetes:///alpha.other:http")
        .spawn();
    let set = other.resolved().await.unwrap();
    assert_eq!(addresses(&set), at(&["10.9.0.1"]));
    assert_eq!(watches.namespace_watch_count("other"), 1);
    assert_eq!(watches.watch_count(), 2);
    eventually("two watches on the server", || rig.live_watches() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_joins_later_merges_without_disturbing_the_others() {
    let rig = FakeApiServer::start().await;
    seed(&rig);
    let watches = rig.shared_watches().await;
    let alpha = shared(&rig, &watches, "alpha");
    let first = alpha.resolved().await.unwrap();
    eventually("alpha's watch", || rig.live_watches() == 1).await;

    // Bravo's group of one merges into alpha's at once: one new list, for both.
    let bravo = shared(&rig, &watches, "bravo");
    let set = bravo.resolved().await.unwrap();
    assert_eq!(addresses(&set), at(&["10.0.1.1"]));
    assert_eq!(watches.watch_count(), 1);
    eventually("one watch again", || {
        rig.live_watches() == 1 && last_watch_selector(&rig).contains("bravo")
    })
    .await;
    assert_eq!(
        rig.list_count(),
        2,
        "one list for alpha, one for both: {:#?}",
        rig.requests()
    );
    assert_eq!(
        alpha.revision(),
        first.revision(),
        "the relist found alpha's set unchanged and published nothing"
    );
    assert_eq!(alpha.health().total_failures(), 0);

    // A third Service makes a second group (1 < 2), a fourth merges everything (2 = 2).
    let charlie = shared(&rig, &watches, "charlie");
    charlie.resolved().await.unwrap();
    let delta = shared(&rig, &watches, "delta");
    delta.resolved().await.unwrap();
    assert_eq!(watches.watch_count(), 1);
    eventually("one watch for four Services", || {
        rig.live_watches() == 1
            && SERVICES
                .iter()
                .all(|service| last_watch_selector(&rig).contains(service))
    })
    .await;
    assert_eq!(alpha.revision(), first.revision());

    // Everyone still follows changes.
    rig.apply(slice("charlie-b", "charlie").endpoint(ep("10.0.2.2")));
    wait_for_set(&charlie, "charlie's new slice", |set| set.len() == 2).await;
    rig.delete("default", "alpha-a");
    wait_for_set(&alpha, "alpha's slice deleted", |set| set.is_empty()).await;
    assert_eq!(bravo.load().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_target_of_a_watched_service_copies_or_relists_by_port() {
    let rig = FakeApiServer::start().await;
    rig.apply(
        endpoint_slice("api-a", "api")
            .port("http", 8080)
            .port("grpc", 9090)
            .endpoint(ep("10.0.0.1")),
    );
    let watches = rig.shared_watches().await;
    let http = shared(&rig, &watches, "api");
    http.resolved().await.unwrap();
    eventually("the watch", || rig.live_watches() == 1).await;

    // The same Service and port: the slices are already there, no request.
    let again = rig
        .shared_source(&watches, "kubernetes:///api:http")
        .name("api-again")
        .spawn();
    let set = again.resolved().await.unwrap();
    assert_eq!(addresses(&set), at(&["10.0.0.1"]));
    assert_eq!(again.target(), "api-again");
    assert_eq!(rig.list_count(), 1);

    // Another port of it: a relist converts the slices for that port too.
    let grpc = rig
        .shared_source(&watches, "kubernetes:///api:grpc")
        .spawn();
    let set = grpc.resolved().await.unwrap();
    assert_eq!(
        addresses(&set),
        BTreeSet::from(["10.0.0.1:9090".parse().unwrap()])
    );
    assert_eq!(rig.list_count(), 2);
    assert_eq!(watches.watch_count(), 1);

    rig.apply(
        endpoint_slice("api-a", "api")
            .port("http", 8080)
            .port("grpc", 9090)
            .endpoint(ep("10.0.0.1"))
            .endpoint(ep("10.0.0.2")),
    );
    for endpoints in [&http, &again, &grpc] {
        wait_for_set(endpoints, "the second endpoint", |set| set.len() == 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_relabelled_to_another_service_moves_between_targets() {
    let rig = FakeApiServer::start().await;
    seed(&rig);
    let watches = rig.shared_watches().await;
    let alpha = shared(&rig, &watches, "alpha");
    let bravo = shared(&rig, &watches, "bravo");
    alpha.resolved().await.unwrap();
    bravo.resolved().await.unwrap();

    // Both Services are in the watch's selector, so the server sends a MODIFIED event with the
    // new label: alpha must drop the slice although the event is bravo's now.
    rig.apply(slice("alpha-a", "bravo").endpoint(ep("10.0.0.1")));
    wait_for_set(&alpha, "alpha lost the slice", |set| set.is_empty()).await;
    let set = wait_for_set(&bravo, "bravo got it", |set| set.len() == 2).await;
    assert_eq!(addresses(&set), at(&["10.0.0.1", "10.0.1.1"]));

    // Relabelled to a Service nobody watches: the server sends DELETED.
    rig.apply(slice("alpha-a", "zulu").endpoint(ep("10.0.0.1")));
    let set = wait_for_set(&bravo, "bravo lost it", |set| set.len() == 1).await;
    assert_eq!(addresses(&set), at(&["10.0.1.1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_relists_reach_every_target_of_the_watch() {
    let rig = FakeApiServer::start().await;
    seed(&rig);
    let watches = rig.shared_watches().await;
    let alpha = shared(&rig, &watches, "alpha");
    let bravo = shared(&rig, &watches, "bravo");
    let revisions = [
        alpha.resolved().await.unwrap().revision(),
        bravo.resolved().await.unwrap().revision(),
    ];
    eventually("one watch", || rig.live_watches() == 1).await;

    rig.reset_connections();
    for (endpoints, name) in [(&alpha, "alpha"), (&bravo, "bravo")] {
        let health = wait_for_health(endpoints, "a reported failure, then recovery", |h| {
            h.total_failures() >= 1 && h.is_current()
        })
        .await;
        let error = health.last_error().unwrap();
        assert!(error.is_api(), "{error}");
        assert_eq!(error.target(), format!("kubernetes:///{name}:http"));
        assert!(
            error.to_string().contains(&format!("Service `{name}`")),
            "{error}"
        );
    }

    // The in-stream 410: one relist for both, and neither set flaps.
    let lists = rig.list_count();
    rig.expire_watches();
    eventually("a relist", || rig.list_count() == lists + 1).await;
    eventually("a new watch", || rig.live_watches() == 1).await;
    assert_eq!(alpha.revision(), revisions[0]);
    assert_eq!(bravo.revision(), revisions[1]);
    rig.apply(slice("bravo-b", "bravo").endpoint(ep("10.0.1.2")));
    wait_for_set(&bravo, "bravo's new slice", |set| set.len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_leaves_alone_and_the_watch_ends_with_its_last_target() {
    let rig = FakeApiServer::start().await;
    seed(&rig);
    let watches = rig.shared_watches().await;
    let (alpha, alpha_handle) = rig
        .shared_source(&watches, "kubernetes:///alpha:http")
        .start();
    let bravo = shared(&rig, &watches, "bravo");
    alpha.resolved().await.unwrap();
    bravo.resolved().await.unwrap();
    let mut alpha_watcher = alpha.watch();

    alpha_handle.shutdown().await;
    assert!(alpha.is_closed());
    assert!(alpha_watcher.changed().await.unwrap_err().is_closed());
    assert_eq!(alpha.load().len(), 1, "the last set stays readable");

    rig.apply(slice("bravo-b", "bravo").endpoint(ep("10.0.1.2")));
    wait_for_set(&bravo, "bravo goes on", |set| set.len() == 2).await;
    assert_eq!(watches.watch_count(), 1);

    drop(bravo);
    eventually("the group gone", || watches.watch_count() == 0).await;
    eventually("the watch closed", || rig.live_watches() == 0).await;

    // A new target starts a new group.
    let charlie = shared(&rig, &watches, "charlie");
    let set = charlie.resolved().await.unwrap();
    assert_eq!(addresses(&set), at(&["10.0.2.1"]));
    assert_eq!(watches.watch_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_watch_costs_the_server_less_than_a_watch_per_target() {
    let rig = FakeApiServer::start().await;
    seed(&rig);
    let watches = rig.shared_watches().await;
    let targets: Vec<Endpoints> = SERVICES
        .iter()
        .map(|service| shared(&rig, &watches, service))
        .collect();
    for endpoints in &targets {
        endpoints.resolved().await.unwrap();
    }
    eventually("one watch", || rig.live_watches() == 1).await;
    let shared_watches = rig.watch_count();

    let own_rig = FakeApiServer::start().await;
    seed(&own_rig);
    let mut own = Vec::new();
    for service in SERVICES {
        let endpoints = own_rig
            .source(&format!("kubernetes:///{service}:http"))
            .await
            .spawn();
        endpoints.resolved().await.unwrap();
        own.push(endpoints);
    }
    eventually("a watch per target", || own_rig.live_watches() == 4).await;
    // Open watches, not watch requests made: targets joining one by one may each start a group
    // before the groups merge, so the shared side can make as many requests while starting.
    assert_eq!(rig.live_watches(), 1);
    assert!(
        shared_watches <= own_rig.watch_count(),
        "{shared_watches} watch requests shared, {} own",
        own_rig.watch_count()
    );

    // One change is sent once to the shared watch; the own watches send it to its target's
    // watch only, so the byte counts match: the saving is in watches, not in events.
    let (shared_before, own_before) = (rig.watch_bytes(), own_rig.watch_bytes());
    for server in [&rig, &own_rig] {
        server.apply(slice("alpha-b", "alpha").endpoint(ep("10.0.0.2")));
    }
    wait_for_set(&targets[0], "shared alpha", |set| set.len() == 2).await;
    wait_for_set(&own[0], "own alpha", |set| set.len() == 2).await;
    assert_eq!(
        rig.watch_bytes() - shared_before,
        own_rig.watch_bytes() - own_before
    );
}
