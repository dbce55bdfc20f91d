//! A connection failure asks discovery to look again early: with a one-hour TTL (and refresh
//! ceiling), DNS is queried again soon after an endpoint becomes unreachable, long before the
//! TTL runs out, however slow the machine. And the other way round: while DNS still announces
//! addresses whose servers are down, its answers bring the connectors back as soon as the
//! servers return, instead of leaving them in long reconnect backoffs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::{BalanceConfig, ReconnectBackoff};
use waypost_tests::dns::options_for;
use waypost_tests::dns::server::DnsServer;
use waypost_tests::grpc::GrpcBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_triggers_an_early_dns_refresh() {
    let server = DnsServer::start().await.unwrap();
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let first = GrpcBackend::start_on(SocketAddr::new(ip(2), 0))
        .await
        .unwrap();
    let port = first.port();
    let second = GrpcBackend::start_on(SocketAddr::new(ip(3), port))
        .await
        .unwrap();
    let name = "api.prod.svc.cluster.local";
    const HOUR: Duration = Duration::from_secs(3600);
    server.set_addresses(name, &[ip(2), ip(3)], HOUR.as_secs() as u32);

    let channel = waypost::Builder::new(&format!("dns:///{name}.:{port}"))
        .unwrap()
        .dns_options(options_for(server.address()).refresh_bounds(Duration::from_secs(1), HOUR))
        .tonic_channel()
        .unwrap();
    channel.endpoints().resolved().await.unwrap();
    let check = || {
        let channel = channel.clone();
        async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
        }
    };
    for _ in 0..20 {
        check().await.unwrap();
    }
    let queries_before = server.query_count();

    // The pod at .2 dies; its address stays in DNS (TTL one hour).
    first.kill();
    let refreshed = tokio::time::timeout(waypost_tests::PATIENCE, async {
        loop {
            let _ = check().await;
            if server.query_count() > queries_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        refreshed.is_ok(),
        "DNS was queried again long before the one-hour TTL ran out"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_dns_answers_bring_every_endpoint_back() {
    let server = DnsServer::start().await.unwrap();
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let mut backends = vec![
        GrpcBackend::start_on(SocketAddr::new(ip(2), 0))
            .await
            .unwrap(),
    ];
    let port = backends[0].port();
    for last in [3, 4] {
        backends.push(
            GrpcBackend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    let addresses: Vec<SocketAddr> = backends.iter().map(GrpcBackend::address).collect();
    let name = "outage.prod.svc.cluster.local";
    // The records never change; DNS is asked again every 200 ms.
    server.set_addresses(name, &[ip(2), ip(3), ip(4)], 0);
    let channel = waypost::Builder::new(&format!("dns:///{name}.:{port}"))
        .unwrap()
        .dns_options(
            options_for(server.address())
                .refresh_bounds(Duration::from_millis(200), Duration::from_millis(200)),
        )
        .balance_config(BalanceConfig {
            // Backoffs that reach minutes if nothing brings them forward.
            reconnect_backoff: ReconnectBackoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(600),
            },
            // No panic mode: a disconnected endpoint is not counted usable.
            panic_threshold_percent: 0,
            ..BalanceConfig::default()
        })
        .tonic_channel()
        .unwrap();
    channel.endpoints().resolved().await.unwrap();
    let wait_for_usable = |count: usize, within: Duration| {
        let channel = channel.clone();
        async move {
            let started = tokio::time::Instant::now();
            while channel.usable_endpoints() != count {
                assert!(
                    started.elapsed() < within,
                    "{} usable endpoints after {within:?}, waiting for {count}",
                    channel.usable_endpoints()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_usable(3, waypost_tests::PATIENCE).await;

    // Every server goes down; DNS keeps announcing them. No call is made from here on: only
    // discovery can bring the connectors back early.
    for backend in backends.drain(..) {
        backend.kill();
    }
    wait_for_usable(0, waypost_tests::PATIENCE).await;
    // Long enough for backoffs of 100 ms doubling to reach several seconds.
    tokio::time::sleep(Duration::from_secs(12)).await;

    for address in &addresses {
        backends.push(GrpcBackend::start_on(*address).await.unwrap());
    }
    // Within a few DNS answers, not after backoffs of several seconds.
    wait_for_usable(3, Duration::from_secs(5)).await;
    for backend in &backends {
        assert_eq!(backend.requests(), 0, "no call brought them back");
    }
}
