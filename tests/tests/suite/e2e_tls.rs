//! TLS between the tonic channel and gRPC servers on loopback: a certificate that matches the
//! name works, one that does not gives a clear error without hanging.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::tls::TlsConfig;
use waypost_tests::dns::PATIENCE;
use waypost_tests::grpc::{GrpcBackend, TlsIdentity, answered_by};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_name_works_and_the_wrong_one_says_why() {
    let identity = TlsIdentity::self_signed(&["greeter.test"]);
    let backend = GrpcBackend::start_tls("127.0.0.1:0".parse().unwrap(), &identity)
        .await
        .unwrap();
    let target = format!("static:///{}", backend.address());
    let roots = TlsConfig::with_root_certificates_pem(identity.certificate_pem()).unwrap();

    let channel = waypost::Builder::new(&target)
        .unwrap()
        .tls(roots.clone().server_name("greeter.test"))
        .tonic_channel()
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(answered_by(&response), Some(backend.address()));

    let channel = waypost::Builder::new(&target)
        .unwrap()
        .tls(roots.server_name("other.test"))
        .connect_timeout(Duration::from_secs(2))
        .wait_for_endpoints(Duration::from_secs(1))
        .tonic_channel()
        .unwrap();
    let status = tokio::time::timeout(
        PATIENCE,
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let message = status.message();
    assert!(
        message.contains("TLS handshake failed") && message.contains("certificate"),
        "the status says the TLS name does not match: {message}"
    );
}

#[test]
fn a_bad_root_certificate_is_a_clear_error() {
    let error = TlsConfig::with_root_certificates_pem(b"not a certificate").unwrap_err();
    assert_eq!(error.kind(), waypost::ErrorKind::Tls);
    assert!(
        error.to_string().contains("no CERTIFICATE block"),
        "{error}"
    );
}
