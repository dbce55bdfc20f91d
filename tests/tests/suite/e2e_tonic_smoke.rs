//! The tonic channel with a generated client against real tonic servers on loopback.

use std::collections::BTreeMap;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::Policy;
use waypost_tests::grpc::{self, answered_by};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_calls_every_backend_through_the_channel() {
    let backends = grpc::start_many(3).await.unwrap();
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .policy(Policy::round_robin())
        .tonic_channel()
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut answers: BTreeMap<std::net::SocketAddr, usize> = BTreeMap::new();
    for _ in 0..300 {
        let response = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(response.get_ref().status, 1, "SERVING");
        *answers.entry(answered_by(&response).unwrap()).or_default() += 1;
    }
    assert_eq!(
        answers.values().copied().collect::<Vec<_>>(),
        [100, 100, 100]
    );
}
