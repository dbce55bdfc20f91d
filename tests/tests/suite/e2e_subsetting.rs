//! End to end: deterministic subsetting with the waypost HTTP client against real hyper
//! servers on loopback, discovered through the in-process DNS server. Each client of a fleet
//! uses (and sends requests to) only its subset; no backend is shared by more clients than the
//! cap; when a backend leaves, the clients that had it take another.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use waypost::balance::{BalanceConfig, Policy, Subsetting};
use waypost::discovery::Endpoint;
use waypost::hyper::HttpClient;
use waypost_tests::backend::Backend;
use waypost_tests::dns::server::DnsServer;
use waypost_tests::dns::{PATIENCE, options_for, wait_until};

type Client = HttpClient<Empty<Bytes>>;

const CLIENTS: u32 = 4;
const SUBSET: usize = 2;
const NAME: &str = "api.prod.svc.cluster.local";

async fn get(client: &Client) -> SocketAddr {
    let request = http::Request::get("/").body(Empty::new()).unwrap();
    let response = client.request(request).await.expect("the subset answers");
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    std::str::from_utf8(&body).unwrap().parse().unwrap()
}

/// What `Subsetting::subset` chooses for client `index` among `addresses`.
fn expected(index: u32, addresses: &[SocketAddr]) -> BTreeSet<SocketAddr> {
    let endpoints: Vec<Endpoint> = addresses.iter().copied().map(Endpoint::new).collect();
    Subsetting::deterministic(index, CLIENTS, SUBSET)
        .unwrap()
        .subset(&endpoints)
        .into_iter()
        .map(Endpoint::address)
        .collect()
}

/// The endpoints client `client`'s balancer holds, once it holds `want`.
async fn holds(client: &Client, want: &BTreeSet<SocketAddr>) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let held: BTreeSet<SocketAddr> =
                client.in_flight().into_iter().map(|(a, _)| a).collect();
            if &held == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the balancer never held {want:?}: {:?}", client.in_flight()));
}

/// Sends requests until every endpoint of `subset` has answered; returns who answered.
async fn answers(client: &Client, subset: &BTreeSet<SocketAddr>) -> BTreeSet<SocketAddr> {
    let mut seen = BTreeSet::new();
    // Round-robin over the subset: each round reaches every member once.
    for _ in 0..subset.len() * 5 {
        seen.insert(get(client).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_clients_spreads_over_subsets_and_replaces_a_backend_that_leaves() {
    let server = DnsServer::start().await.unwrap();
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let first = Backend::start_on(SocketAddr::new(ip(2), 0)).await.unwrap();
    let port = first.port();
    let mut backends = vec![first];
    for last in 3..=9 {
        backends.push(
            Backend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    let mut addresses: Vec<SocketAddr> = backends.iter().map(Backend::address).collect();
    addresses.sort();
    let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
    server.set_addresses(NAME, &ips, 1);

    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        let client: Client = waypost::Builder::new(&format!("dns:///{NAME}.:{port}"))
            .unwrap()
            .dns_options(options_for(server.address()))
            .balance_config(BalanceConfig {
                subsetting: Some(Subsetting::deterministic(index, CLIENTS, SUBSET).unwrap()),
                ..BalanceConfig::with_policy(Policy::round_robin())
            })
            .http_client()
            .unwrap();
        client.endpoints().resolved().await.unwrap();
        clients.push(client);
    }

    // Each client holds its subset and sends only there.
    let mut subsets = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let subset = expected(index as u32, &addresses);
        assert_eq!(subset.len(), SUBSET);
        holds(client, &subset).await;
        let before: Vec<u64> = backends.iter().map(Backend::requests).collect();
        assert_eq!(answers(client, &subset).await, subset, "client {index}");
        for (backend, before) in backends.iter().zip(&before) {
            if !subset.contains(&backend.address()) {
                assert_eq!(
                    backend.requests(),
                    *before,
                    "client {index} reached {}",
                    backend.address()
                );
            }
        }
        subsets.push(subset);
    }
    // 4 clients x 2 of 8 backends: a mean of 1 client per backend, at most the cap of 2.
    for address in &addresses {
        let sharing = subsets.iter().filter(|s| s.contains(address)).count();
        assert!(
            sharing <= 2,
            "{address} is in {sharing} subsets: {subsets:?}"
        );
    }

    // A backend of client 0 leaves: client 0 takes another, as every client computes.
    let gone = *subsets[0].iter().next().unwrap();
    let remaining: Vec<SocketAddr> = addresses.iter().copied().filter(|a| *a != gone).collect();
    let ips: Vec<IpAddr> = remaining.iter().map(SocketAddr::ip).collect();
    server.set_addresses(NAME, &ips, 1);
    for (index, client) in clients.iter().enumerate() {
        wait_until(
            client.endpoints(),
            PATIENCE,
            "the backend gone",
            |current, _| !current.contains(&gone),
        )
        .await;
        let subset = expected(index as u32, &remaining);
        assert_eq!(subset.len(), SUBSET);
        holds(client, &subset).await;
        assert_eq!(
            answers(client, &subset).await,
            subset,
            "client {index} after the change"
        );
        if index == 0 {
            assert!(!subset.contains(&gone));
            assert_eq!(
                subset.intersection(&subsets[0]).count(),
                SUBSET - 1,
                "client 0 keeps its other backend"
            );
        }
    }
}
