//! End to end over Kubernetes discovery: the tonic channel built from a `kubernetes:///` target,
//! a real `kube::Client` talking to the fake API server, and tonic servers on loopback that a
//! rolling update replaces one by one in the order Kubernetes uses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::tonic::Channel;
use waypost_tests::grpc::{GrpcBackend, answered_by};
use waypost_tests::kube_api::FakeApiServer;
use waypost_tests::kube_api::slices::{EndpointBuilder, endpoint_slice, ep};
use waypost_tests::load::Load;
use waypost_tests::wait_for_set;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn check(channel: Channel) -> Result<SocketAddr, String> {
    match HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(response) => answered_by(&response).ok_or_else(|| "no x-backend".to_owned()),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Publishes the Service's one EndpointSlice with these pods.
fn publish(rig: &FakeApiServer, port: u16, pods: &[EndpointBuilder]) {
    rig.apply(
        endpoint_slice("greeter-abc12", "greeter")
            .port("grpc", port)
            .endpoints(pods.iter().cloned()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_over_endpointslices_fails_no_call() {
    let rig = FakeApiServer::start().await;
    let first = GrpcBackend::start_on(SocketAddr::new(ip(2), 0))
        .await
        .unwrap();
    let port = first.port();
    let mut old = vec![first];
    for last in [3, 4] {
        old.push(
            GrpcBackend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    let pod = |last: u8| ep(&ip(last).to_string());
    let mut ready: Vec<u8> = vec![2, 3, 4];
    publish(
        &rig,
        port,
        &ready.iter().map(|&i| pod(i).ready()).collect::<Vec<_>>(),
    );

    let channel = waypost::Builder::new("kubernetes:///greeter.default:grpc")
        .unwrap()
        .kube_client(rig.client().await)
        .tonic_channel()
        .unwrap();
    channel.endpoints().resolved().await.unwrap();
    let load = {
        let channel = channel.clone();
        Load::start(4, Duration::ZERO, move || check(channel.clone()))
    };
    load.wait_for(200).await;

    let mut new = Vec::new();
    for (step, replacement) in [5u8, 6, 7].into_iter().enumerate() {
        let leaving = 2 + step as u8;
        // The new pod starts and turns ready.
        let backend = GrpcBackend::start_on(SocketAddr::new(ip(replacement), port))
            .await
            .unwrap();
        ready.push(replacement);
        publish(
            &rig,
            port,
            &ready.iter().map(|&i| pod(i).ready()).collect::<Vec<_>>(),
        );
        let added = backend.address();
        wait_for_set(channel.endpoints(), "the new pod", |set| {
            set.contains(&added)
        })
        .await;
        new.push(backend);

        // The old pod is deleted: terminating, still serving while its preStop runs...
        ready.retain(|&i| i != leaving);
        let mut pods: Vec<EndpointBuilder> = ready.iter().map(|&i| pod(i).ready()).collect();
        pods.push(pod(leaving).draining());
        publish(&rig, port, &pods);
        let leaving_address = SocketAddr::new(ip(leaving), port);
        wait_for_set(channel.endpoints(), "the old pod out of the set", |set| {
            !set.contains(&leaving_address)
        })
        .await;
        load.wait_for(300).await;
        // ...then its server drains and exits, and the slice drops it.
        old.remove(0).shutdown().await;
        publish(
            &rig,
            port,
            &ready.iter().map(|&i| pod(i).ready()).collect::<Vec<_>>(),
        );
        load.wait_for(300).await;
    }
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "failed calls: {:?}", tally.failures);
    assert!(tally.succeeded() >= 1000, "{} calls", tally.succeeded());
    for backend in &new {
        assert!(
            tally.answers.contains_key(&backend.address()),
            "{} took calls",
            backend.address()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_target_without_a_client_outside_a_cluster_says_what_to_do() {
    let error = waypost::Builder::new("kubernetes:///greeter:grpc")
        .unwrap()
        .endpoints()
        .unwrap_err();
    assert_eq!(error.kind(), waypost::ErrorKind::DiscoveryStart);
    assert!(error.to_string().contains("kube_client"), "{error}");
}

/// Started outside a tokio runtime, a `kubernetes:///` target is a configuration error that
/// says so, not a panic of the watch task's spawn.
#[test]
fn a_kubernetes_target_outside_a_runtime_is_an_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (rig, client) = runtime.block_on(async {
        let rig = FakeApiServer::start().await;
        let client = rig.client().await;
        (rig, client)
    });
    let error = waypost::Builder::new("kubernetes:///greeter:grpc")
        .unwrap()
        .kube_client(client)
        .endpoints()
        .unwrap_err();
    assert_eq!(error.kind(), waypost::ErrorKind::Config);
    assert!(error.to_string().contains("tokio runtime"), "{error}");
    drop(rig);
    drop(runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_share_one_watch_and_each_channel_reaches_its_own_pods() {
    let rig = FakeApiServer::start().await;
    // Two Services of one namespace, two real gRPC servers each, on one port.
    let first = GrpcBackend::start_on(SocketAddr::new(ip(20), 0))
        .await
        .unwrap();
    let port = first.port();
    let mut backends = vec![first];
    for last in [21, 30, 31] {
        backends.push(
            GrpcBackend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    for (service, pods) in [("greeter", [20u8, 21]), ("farewell", [30, 31])] {
        rig.apply(
            endpoint_slice(&format!("{service}-abc12"), service)
                .port("grpc", port)
                .endpoints(pods.map(|last| ep(&ip(last).to_string()).ready())),
        );
    }

    let watches = waypost::discovery::source::kubernetes::SharedWatches::new(rig.client().await);
    let channel = |service: &str| {
        waypost::Builder::new(&format!("kubernetes:///{service}.default:grpc"))
            .unwrap()
            .kube_watches(watches.clone())
            .tonic_channel()
            .unwrap()
    };
    let greeter = channel("greeter");
    let farewell = channel("farewell");
    greeter.endpoints().resolved().await.unwrap();
    farewell.endpoints().resolved().await.unwrap();
    assert_eq!(watches.watch_count(), 1);
    waypost_tests::eventually("one watch on the API server", || rig.live_watches() == 1).await;

    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let by = check(greeter.clone()).await.unwrap();
        assert!(
            [ip(20), ip(21)].contains(&by.ip()),
            "greeter answered by {by}"
        );
        answered.insert(by);
        let by = check(farewell.clone()).await.unwrap();
        assert!(
            [ip(30), ip(31)].contains(&by.ip()),
            "farewell answered by {by}"
        );
        answered.insert(by);
    }
    assert_eq!(answered.len(), 4, "every pod of both Services answered");

    // A scale-up of one Service reaches its channel through the shared watch.
    let added = GrpcBackend::start_on(SocketAddr::new(ip(32), port))
        .await
        .unwrap();
    rig.apply(
        endpoint_slice("farewell-abc12", "farewell")
            .port("grpc", port)
            .endpoints([30u8, 31, 32].map(|last| ep(&ip(last).to_string()).ready())),
    );
    wait_for_set(farewell.endpoints(), "the third farewell pod", |set| {
        set.len() == 3
    })
    .await;
    let mut reached = false;
    for _ in 0..200 {
        if check(farewell.clone()).await.unwrap() == added.address() {
            reached = true;
            break;
        }
    }
    assert!(reached, "the new pod gets calls");
    assert_eq!(greeter.endpoints().load().len(), 2);
}
