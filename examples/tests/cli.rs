//! The `waypost` debug command against the in-process DNS server.

use std::net::IpAddr;

use waypost_tests::dns::server::DnsServer;

async fn run(arguments: &[&str]) -> Result<String, String> {
    let mut out = Vec::new();
    waypost_examples::cli::run(arguments.iter().copied(), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_prints_the_endpoint_table() {
    let server = DnsServer::start().await.unwrap();
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    server.set_addresses(
        "api.prod.svc.cluster.local",
        &[ip("127.0.0.3"), ip("127.0.0.2")],
        5,
    );
    let nameserver = server.address().to_string();
    let output = run(&[
        "resolve",
        "dns:///api.prod.svc.cluster.local.:8080",
        "--nameserver",
        &nameserver,
    ])
    .await
    .unwrap();
    let expected = "\
ADDRESS                                    ZONE           NODE           STATE        WEIGHT
127.0.0.2:8080                             -              -              ready             1
127.0.0.3:8080                             -              -              ready             1
";
    assert_eq!(output, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_revision() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("web.test", &["127.0.0.2".parse().unwrap()], 1);
    let nameserver = server.address().to_string();
    let watching = tokio::spawn(async move {
        run(&[
            "watch",
            "dns:///web.test.:80",
            "--nameserver",
            &nameserver,
            "--revisions",
            "2",
        ])
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    server.add_address("web.test", "127.0.0.3".parse().unwrap(), 1);
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), watching)
        .await
        .expect("the second revision arrives")
        .unwrap()
        .unwrap();
    assert!(output.starts_with("revision 1\n"), "{output}");
    assert!(output.contains("revision 2: +1 -0 ~0"), "{output}");
    assert!(output.contains("127.0.0.3:80"), "{output}");
}

#[tokio::test]
async fn a_bad_target_says_which_part_is_wrong() {
    let error = run(&["resolve", "kubernetes:///Api:80"]).await.unwrap_err();
    assert!(
        error.contains("invalid Kubernetes service name `Api`"),
        "{error}"
    );
}
