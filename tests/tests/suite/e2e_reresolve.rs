//! A connection failure asks discovery to look again early: with a one-hour TTL (and refresh
//! ceiling), DNS is queried again soon after an endpoint becomes unreachable, long before the
//! TTL runs out, however slow the machine.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
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
