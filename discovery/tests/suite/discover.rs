//! The tower `Discover` adapter: exactly the inserts and removes between snapshots, and tower's
//! own balancer following an `Endpoints` handle.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::Constant;
use tower::{Service, ServiceExt, service_fn};
use waypost_discovery::{Endpoint, Publisher, Readiness};

fn ep(port: u16) -> Endpoint {
    Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Insert(u16, u32),
    Remove(u16),
}

fn seen(change: Change<SocketAddr, (u16, u32)>) -> Seen {
    match change {
        Change::Insert(address, (port, weight)) => {
            assert_eq!(address.port(), port, "the key is the endpoint's address");
            Seen::Insert(port, weight)
        }
        Change::Remove(address) => Seen::Remove(address.port()),
    }
}

#[tokio::test]
async fn emits_exactly_the_changes_between_snapshots() {
    let mut publisher = Publisher::new("discover");
    publisher.publish([ep(1), ep(2), ep(3)]);
    let mut discover = publisher
        .endpoints()
        .discover(|endpoint: &Endpoint| (endpoint.address().port(), endpoint.weight()));

    let mut next = async || seen(discover.next().await.unwrap().unwrap());
    assert_eq!(next().await, Seen::Insert(1, 1));
    assert_eq!(next().await, Seen::Insert(2, 1));
    assert_eq!(next().await, Seen::Insert(3, 1));

    publisher.publish([ep(2), ep(3).with_weight(7), ep(4)]);
    assert_eq!(next().await, Seen::Remove(1));
    assert_eq!(next().await, Seen::Insert(4, 1));
    assert_eq!(
        next().await,
        Seen::Insert(3, 7),
        "a changed endpoint is re-inserted"
    );

    // Same endpoints again: no changes, so the next ones come from the following publication.
    publisher.publish([ep(2), ep(3).with_weight(7), ep(4)]);
    publisher.publish([ep(3).with_weight(7).with_readiness(Readiness::Terminating)]);
    assert_eq!(next().await, Seen::Remove(2));
    assert_eq!(next().await, Seen::Remove(4));
    assert_eq!(next().await, Seen::Insert(3, 7));

    drop(publisher);
    assert!(
        discover.next().await.is_none(),
        "the stream ends with the source"
    );
}

#[tokio::test]
async fn a_slow_consumer_gets_the_net_changes_to_the_newest_set() {
    let mut publisher = Publisher::new("discover");
    let mut discover = publisher
        .endpoints()
        .discover(|endpoint: &Endpoint| endpoint.address());
    for port in 1..=50 {
        publisher.publish((1..=port).map(ep));
    }
    publisher.publish([ep(10), ep(60)]);
    drop(publisher);
    let mut live = BTreeSet::new();
    while let Some(change) = discover.next().await {
        match change.unwrap() {
            Change::Insert(address, service) => {
                assert_eq!(address, service);
                live.insert(address.port());
            }
            Change::Remove(address) => assert!(live.remove(&address.port())),
        }
    }
    assert_eq!(live, BTreeSet::from([10, 60]));
}

#[tokio::test]
async fn tower_p2c_follows_the_endpoint_set() {
    let mut publisher = Publisher::new("discover");
    publisher.publish([ep(1), ep(2)]);
    let discover = publisher.endpoints().discover(|endpoint: &Endpoint| {
        let port = endpoint.address().port();
        Constant::new(
            service_fn(move |_: ()| async move { Ok::<_, Infallible>(port) }),
            0,
        )
    });
    let mut balance = Balance::new(discover);

    let mut ports = BTreeSet::new();
    for _ in 0..200 {
        ports.insert(balance.ready().await.unwrap().call(()).await.unwrap());
    }
    assert_eq!(ports, BTreeSet::from([1, 2]));

    publisher.publish([ep(3)]);
    // tower's balancer applies discovery changes when it is polled; after that only port 3 answers.
    let mut answered = Vec::new();
    for _ in 0..200 {
        let port = tokio::time::timeout(Duration::from_secs(5), async {
            balance.ready().await.unwrap().call(()).await.unwrap()
        })
        .await
        .expect("the balancer has a ready endpoint");
        answered.push(port);
    }
    assert!(answered.iter().all(|&port| port == 3), "{answered:?}");
}
