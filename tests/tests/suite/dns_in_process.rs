//! The DNS source against the in-process authoritative server: records change while the source
//! runs, and the handle follows.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use tracing::Level;
use waypost::discovery::source::dns::{DnsOptions, DnsSource, DnsSourceError, IpFamilies};
use waypost::discovery::{DnsTarget, Endpoints, Status};
use waypost_tests::dns::capture::Capture;
use waypost_tests::dns::server::{DnsServer, Mode, Srv};
use waypost_tests::dns::{PATIENCE, addr, addresses, options_for, wait_for_addresses, wait_until};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn spawn(target: &str, options: DnsOptions) -> Endpoints {
    let target: DnsTarget = target.parse().unwrap();
    DnsSource::new(target)
        .with_options(options)
        .spawn()
        .unwrap()
}

/// TTL (1 s) + jitter (10%) + slack for a slow machine.
const WITHIN_TTL: Duration = Duration::from_millis(1100 + 8000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_and_down_within_the_ttl() {
    let server = DnsServer::start().await.unwrap();
    let name = "api.prod.svc.cluster.local";
    server.set_addresses(name, &[ip("127.0.0.2"), ip("127.0.0.3")], 1);
    let endpoints = spawn(
        "dns:///api.prod.svc.cluster.local.:8080",
        options_for(server.address()),
    );

    let first = endpoints.resolved().await.unwrap();
    assert_eq!(
        first.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 8080), addr("127.0.0.3", 8080)]
    );
    assert!(endpoints.health().is_current());

    // Scale up: two pods more.
    server.add_address(name, ip("127.0.0.4"), 1);
    server.add_address(name, ip("127.0.0.5"), 1);
    wait_for_addresses(
        &endpoints,
        WITHIN_TTL,
        &[
            addr("127.0.0.2", 8080),
            addr("127.0.0.3", 8080),
            addr("127.0.0.4", 8080),
            addr("127.0.0.5", 8080),
        ],
    )
    .await;

    // Scale down to one.
    server.set_addresses(name, &[ip("127.0.0.5")], 1);
    wait_for_addresses(&endpoints, WITHIN_TTL, &[addr("127.0.0.5", 8080)]).await;
    assert!(endpoints.health().is_current());
    assert_eq!(endpoints.health().total_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_ttl_is_honoured_and_a_shorter_one_takes_over() {
    let server = DnsServer::start().await.unwrap();
    let name = "slow.waypost.test";
    server.set_addresses(name, &[ip("127.0.0.2")], 3600);
    let endpoints = spawn(
        "dns:///slow.waypost.test.:80",
        options_for(server.address())
            .refresh_bounds(Duration::from_secs(1), Duration::from_secs(3)),
    );
    endpoints.resolved().await.unwrap();
    let queries = server.query_count();
    // TTL 3600 is clamped to the 3 s ceiling: the source still comes back.
    server.set_addresses(name, &[ip("127.0.0.3")], 1);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 80)]).await;
    assert!(server.query_count() > queries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_mixed_families() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("v6.waypost.test", &[ip("::1")], 1);
    server.set_addresses("dual.waypost.test", &[ip("127.0.0.2"), ip("::1")], 1);

    let v6 = spawn(
        "dns:///v6.waypost.test.:9000",
        options_for(server.address()),
    );
    let set = v6.resolved().await.unwrap();
    assert_eq!(set.addresses().collect::<Vec<_>>(), [addr("::1", 9000)]);

    let dual = spawn(
        "dns:///dual.waypost.test.:9000",
        options_for(server.address()),
    );
    let set = dual.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 9000), addr("::1", 9000)]
    );

    let v4_only = spawn(
        "dns:///dual.waypost.test.:9000",
        options_for(server.address()).ip_families(IpFamilies::V4Only),
    );
    let set = v4_only.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 9000)]
    );

    // The IPv4 address goes; the IPv6 one stays.
    server.set_addresses("dual.waypost.test", &[ip("::1")], 1);
    wait_for_addresses(&dual, WITHIN_TTL, &[addr("::1", 9000)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_priorities_and_weights() {
    let server = DnsServer::start().await.unwrap();
    let srv = "_grpc._tcp.api.prod.svc.cluster.local";
    server.set_addresses("a.api.prod.svc.cluster.local", &[ip("127.0.0.2")], 1);
    server.set_addresses("b.api.prod.svc.cluster.local", &[ip("127.0.0.3")], 1);
    server.set_addresses("backup.api.prod.svc.cluster.local", &[ip("127.0.0.9")], 1);
    server.set_srv(
        srv,
        &[
            Srv::new(10, 60, 7001, "a.api.prod.svc.cluster.local"),
            Srv::new(10, 20, 7002, "b.api.prod.svc.cluster.local"),
            Srv::new(20, 100, 7009, "backup.api.prod.svc.cluster.local"),
        ],
        1,
    );
    let endpoints = spawn(
        "dns:///_grpc._tcp.api.prod.svc.cluster.local.",
        options_for(server.address()),
    );
    let set = endpoints.resolved().await.unwrap();
    // Only the lowest priority group; weights carried; hostnames from the targets.
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 7001), addr("127.0.0.3", 7002)]
    );
    let a = set.get(&addr("127.0.0.2", 7001)).unwrap();
    assert_eq!(a.weight(), 60);
    assert_eq!(a.hostname(), Some("a.api.prod.svc.cluster.local"));
    assert_eq!(set.get(&addr("127.0.0.3", 7002)).unwrap().weight(), 20);

    // Both preferred targets lose their addresses: the backup group takes over.
    server.remove("a.api.prod.svc.cluster.local");
    server.remove("b.api.prod.svc.cluster.local");
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.9", 7009)]).await;
    assert_eq!(endpoints.load()[0].weight(), 100);

    // One comes back: the preferred group again.
    server.set_addresses("b.api.prod.svc.cluster.local", &[ip("127.0.0.3")], 1);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 7002)]).await;

    // A weight change is an endpoint change.
    server.set_srv(
        srv,
        &[Srv::new(10, 5, 7002, "b.api.prod.svc.cluster.local")],
        1,
    );
    wait_until(&endpoints, PATIENCE, "weight 5", |_, _| {
        endpoints.load().first().map(|endpoint| endpoint.weight()) == Some(5)
    })
    .await;
}

/// A short SRV name walks the search list as an address name does, and a SERVFAIL of the
/// first search name is a failure, not an absence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_srv_name_walks_the_search_list() {
    let server = DnsServer::start().await.unwrap();
    let srv = "_grpc._tcp.api.prod.svc.cluster.local";
    server.set_addresses("a.api.prod.svc.cluster.local", &[ip("127.0.0.2")], 1);
    // A record with port 0 is broken: skipped alone.
    server.set_srv(
        srv,
        &[
            Srv::new(10, 60, 7001, "a.api.prod.svc.cluster.local"),
            Srv::new(10, 60, 0, "a.api.prod.svc.cluster.local"),
        ],
        1,
    );
    let endpoints = spawn(
        "dns:///_grpc._tcp.api",
        options_for(server.address())
            .search_domains(["prod.svc.cluster.local", "svc.cluster.local"])
            .ndots(5)
            .refresh_bounds(Duration::from_secs(1), Duration::from_secs(30)),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 7001)]
    );

    server.set_name_mode(srv, Some(Mode::ServFail));
    wait_until(&endpoints, PATIENCE, "a failing lookup", |_, health| {
        health.is_failing()
    })
    .await;
    let before = server.query_count();
    wait_until(&endpoints, PATIENCE, "more lookups", |_, _| {
        server.query_count() >= before + 6
    })
    .await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 7001)]);
    assert!(!endpoints.health().last_error().unwrap().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_are_looked_up_when_the_additional_section_is_empty() {
    let server = DnsServer::start().await.unwrap();
    server.set_srv_additionals(false);
    server.set_addresses("pod-0.api.waypost.test", &[ip("127.0.0.2"), ip("::1")], 1);
    server.set_addresses("pod-1.api.waypost.test", &[ip("127.0.0.3")], 1);
    server.set_srv(
        "_http._tcp.api.waypost.test",
        &[
            Srv::new(0, 0, 8080, "pod-0.api.waypost.test"),
            Srv::new(0, 0, 8081, "pod-1.api.waypost.test"),
        ],
        1,
    );
    let endpoints = spawn(
        "dns:///_http._tcp.api.waypost.test.",
        options_for(server.address()),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [
            addr("127.0.0.2", 8080),
            addr("127.0.0.3", 8081),
            addr("::1", 8080)
        ]
    );
    // Weight 0 everywhere: equal shares, never "no requests".
    assert!(set.iter().all(|endpoint| endpoint.weight() == 1));
    let followed_up = server
        .queries()
        .iter()
        .any(|(name, _)| name == "pod-0.api.waypost.test.");
    assert!(followed_up, "the target was asked for its addresses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_run_keeps_the_set_and_recovers() {
    let server = DnsServer::start().await.unwrap();
    let name = "api.waypost.test";
    server.set_addresses(name, &[ip("127.0.0.2"), ip("127.0.0.3")], 1);
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    let first = endpoints.resolved().await.unwrap();
    let revision = first.revision();

    server.stop().await;
    wait_until(
        &endpoints,
        PATIENCE,
        "the failure in the health",
        |_, health| health.is_failing(),
    )
    .await;
    let health = endpoints.health();
    let error = health.last_error().unwrap();
    assert!(error.is_resolve(), "{error}");
    assert_eq!(error.target(), "dns:///api.waypost.test.:80");
    assert!(error.detail().contains("api.waypost.test"), "{error}");
    assert!(health.failing_since().is_some());
    // Nothing changed in the set.
    assert_eq!(endpoints.revision(), revision);
    assert_eq!(
        addresses(&endpoints),
        [addr("127.0.0.2", 80), addr("127.0.0.3", 80)]
    );

    // While it is down, the service scales; when it is back, the source catches up.
    server.set_addresses(name, &[ip("127.0.0.4")], 1);
    server.restart().await.unwrap();
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.4", 80)]).await;
    wait_until(&endpoints, PATIENCE, "recovery", |_, health| {
        health.is_current()
    })
    .await;
    assert!(endpoints.health().total_failures() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_refused_and_silence_keep_the_last_good_set() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    endpoints.resolved().await.unwrap();

    for mode in [Mode::ServFail, Mode::Refused, Mode::Silent] {
        server.set_mode(mode);
        wait_until(
            &endpoints,
            PATIENCE,
            &format!("failing on {mode:?}"),
            |_, health| health.is_failing(),
        )
        .await;
        assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 80)], "{mode:?}");
        assert!(endpoints.health().last_error().unwrap().is_resolve());
        server.set_mode(Mode::Answer);
        wait_until(&endpoints, PATIENCE, "recovery", |_, health| {
            health.is_current()
        })
        .await;
    }
}

/// `query_attempts(n)` means n tries in all (hickory's own `attempts` counts the retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_attempts_counts_every_try() {
    for tries in [1, 3] {
        let server = DnsServer::start().await.unwrap();
        server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
        server.set_mode(Mode::Silent);
        let endpoints = spawn(
            "dns:///api.waypost.test.:80",
            options_for(server.address())
                .ip_families(IpFamilies::V4Only)
                .query_timeout(Duration::from_millis(300))
                .query_attempts(tries)
                // No second lookup while the test counts the first one's queries.
                .retry_backoff(Duration::from_secs(600), Duration::from_secs(600)),
        );
        let error = endpoints.resolved().await.unwrap_err();
        assert!(error.is_resolve(), "{error}");
        let asked = server
            .queries()
            .into_iter()
            .filter(|(name, kind)| name == "api.waypost.test." && *kind == RecordType::A)
            .count();
        assert_eq!(asked, tries, "query_attempts({tries})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_then_recover() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(server.address()).query_timeout(Duration::from_millis(300)),
    );
    endpoints.resolved().await.unwrap();
    server.set_delay(Duration::from_secs(2));
    wait_until(&endpoints, PATIENCE, "a timeout", |_, health| {
        health.is_failing()
    })
    .await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 80)]);
    server.set_addresses("api.waypost.test", &[ip("127.0.0.3")], 1);
    server.set_delay(Duration::ZERO);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 80)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_empties_the_set_only_when_confirmed() {
    let server = DnsServer::start().await.unwrap();
    let name = "api.waypost.test";
    server.set_addresses(name, &[ip("127.0.0.2"), ip("127.0.0.3")], 1);
    // A 2 s floor leaves the test ample time to see the state between the two answers.
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(server.address())
            .refresh_bounds(Duration::from_secs(2), Duration::from_secs(30)),
    );
    endpoints.resolved().await.unwrap();
    let revision = endpoints.revision();

    server.remove(name);
    // First NXDOMAIN: the set stays, the health says why.
    wait_until(
        &endpoints,
        PATIENCE,
        "the first negative answer",
        |_, health| {
            health
                .last_error()
                .is_some_and(|error| error.is_not_found())
        },
    )
    .await;
    let health = endpoints.health();
    assert_eq!(health.status(), Status::Failing);
    let error = health.last_error().unwrap();
    assert!(error.detail().contains("NXDOMAIN"), "{error}");
    assert!(error.detail().contains("1 of the 2"), "{error}");
    assert_eq!(
        endpoints.revision(),
        revision,
        "one NXDOMAIN changes nothing"
    );
    assert_eq!(addresses(&endpoints).len(), 2);

    // Second NXDOMAIN: confirmed, emptied.
    wait_until(
        &endpoints,
        PATIENCE,
        "the confirmed empty set",
        |current, health| current.is_empty() && health.is_current(),
    )
    .await;
    assert_eq!(endpoints.revision(), revision + 1);

    // The name comes back.
    server.set_addresses(name, &[ip("127.0.0.4")], 1);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.4", 80)]).await;
}

/// The messages of a deleted name: the NXDOMAIN detail once (A and AAAA agree), and after the
/// confirmation "gone", not "recovered" with an error about kept endpoints. A current-thread
/// runtime, so the source's events reach the capture.
#[tokio::test]
async fn a_deleted_name_is_reported_gone() {
    let capture = Capture::new();
    let _guard = capture.install();
    let server = DnsServer::start().await.unwrap();
    let name = "api.waypost.test";
    server.set_addresses(name, &[ip("127.0.0.2")], 1);
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(server.address())
            .refresh_bounds(Duration::from_secs(1), Duration::from_secs(30)),
    );
    endpoints.resolved().await.unwrap();
    server.remove(name);
    wait_until(&endpoints, PATIENCE, "the first negative answer", |_, h| {
        h.last_error().is_some_and(|e| e.is_not_found())
    })
    .await;
    let health = endpoints.health();
    let detail = health.last_error().unwrap().detail().to_owned();
    assert_eq!(
        detail.matches("does not exist (NXDOMAIN)").count(),
        1,
        "{detail}"
    );

    wait_until(&endpoints, PATIENCE, "the confirmation", |set, h| {
        set.is_empty() && h.is_current()
    })
    .await;
    let health = endpoints.health();
    assert!(health.is_gone());
    let error = health.last_error().unwrap();
    assert!(error.is_not_found(), "{error}");
    assert!(error.detail().contains("the service is gone"), "{error}");
    assert!(!error.detail().contains("keeping"), "{error}");
    assert_eq!(error.detail().matches("NXDOMAIN").count(), 1, "{error}");
    assert!(
        capture.matching(Level::INFO, "recovered").is_empty(),
        "{:?}",
        capture.events()
    );
    assert_eq!(capture.matching(Level::WARN, "gone").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodata_counts_as_a_negative_answer() {
    let server = DnsServer::start().await.unwrap();
    server.set_negative_ttl(Some(1));
    let srv = "_http._tcp.api.waypost.test";
    server.set_addresses("pod.api.waypost.test", &[ip("127.0.0.2")], 1);
    server.set_srv(srv, &[Srv::new(0, 1, 80, "pod.api.waypost.test")], 1);
    let endpoints = spawn(
        "dns:///_http._tcp.api.waypost.test.",
        options_for(server.address())
            .empty_confirmations(3)
            .refresh_bounds(Duration::from_secs(2), Duration::from_secs(30)),
    );
    endpoints.resolved().await.unwrap();
    // The name keeps an A record, but no SRV: NODATA.
    server.set_srv(srv, &[], 1);
    server.set_addresses(srv, &[ip("127.0.0.7")], 1);
    wait_until(
        &endpoints,
        PATIENCE,
        "the second negative answer",
        |_, health| {
            health
                .last_error()
                .is_some_and(|error| error.detail().contains("2 of the 3"))
        },
    )
    .await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 80)]);
    wait_until(
        &endpoints,
        PATIENCE,
        "the confirmed empty set",
        |current, _| current.is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_resolution_error_names_the_target_and_the_cause() {
    // Nothing listens on this port.
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(port));
    let error = endpoints.resolved().await.unwrap_err();
    assert!(error.is_resolve(), "{error}");
    assert_eq!(error.target(), "dns:///api.waypost.test.:80");
    let text = error.to_string();
    assert!(text.contains("dns:///api.waypost.test.:80"), "{text}");
    assert!(
        text.contains("lookup of `api.waypost.test` failed"),
        "{text}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "the cause is kept"
    );
    assert_eq!(endpoints.revision(), 0);

    // A name that does not exist is reported as such.
    let server = DnsServer::start().await.unwrap();
    let endpoints = spawn(
        "dns:///missing.waypost.test.:80",
        options_for(server.address()),
    );
    let error = endpoints.resolved().await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert!(error.detail().contains("does not exist"), "{error}");
    // Once confirmed, the answer is "no endpoints".
    wait_until(&endpoints, PATIENCE, "a confirmed empty set", |_, _| {
        endpoints.revision() == 1
    })
    .await;
    assert!(endpoints.resolved().await.unwrap().is_empty());
}

/// A hosts file written for one test, removed when dropped.
struct HostsFile(std::path::PathBuf);

impl HostsFile {
    fn new(test: &str, content: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("waypost-hosts-{}-{test}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        HostsFile(path)
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_the_hosts_file_is_answered_before_dns() {
    // As glibc's `hosts: files dns`: the name as given is looked up in the hosts file first
    // (Kubernetes writes a pod's `hostAliases` there), so neither the search domains nor an
    // unreachable server delay or fail it.
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("legacy-db.prod.svc.cluster.local", &[ip("127.0.0.3")], 1);
    server.set_mode(Mode::Silent);
    let hosts = HostsFile::new(
        "answered-before-dns",
        "# aliases\n127.0.0.9 legacy-db legacy-db.example\n::1 legacy-db\n127.0.0.10 other\n",
    );
    let options = options_for(server.address())
        .search_domains(["prod.svc.cluster.local", "svc.cluster.local"])
        .ndots(5)
        .hosts_file(&hosts.0);

    let endpoints = spawn("dns:///legacy-db:5432", options.clone());
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.9", 5432), addr("::1", 5432)]
    );
    // Names are matched without regard to case, and one family can be asked alone.
    let endpoints = spawn(
        "dns:///LEGACY-DB.example:5432",
        options.clone().ip_families(IpFamilies::V4Only),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.9", 5432)]
    );
    assert_eq!(server.query_count(), 0, "{:?}", server.queries());

    // A name the file does not hold goes to DNS, search domains first.
    server.set_mode(Mode::Answer);
    let hosts_without = HostsFile::new("answered-before-dns-2", "127.0.0.10 other\n");
    let endpoints = spawn(
        "dns:///legacy-db:5432",
        options_for(server.address())
            .search_domains(["prod.svc.cluster.local", "svc.cluster.local"])
            .ndots(5)
            .hosts_file(&hosts_without.0),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.3", 5432)]
    );
    assert!(
        server
            .queries()
            .iter()
            .any(|(name, _)| name == "legacy-db.prod.svc.cluster.local."),
        "{:?}",
        server.queries()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_name_resolves_through_search_domains_and_ndots() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.prod.svc.cluster.local", &[ip("127.0.0.2")], 1);
    let options = options_for(server.address())
        .search_domains([
            "prod.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ])
        .ndots(5);

    let endpoints = spawn("dns:///api:8080", options.clone());
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 8080)]
    );
    let queries = server.queries();
    assert!(
        queries
            .iter()
            .any(|(name, _)| name == "api.prod.svc.cluster.local."),
        "{queries:?}"
    );
    // With ndots 5 the search list comes first, and the first domain answers: both families
    // are taken from that name, and no other name is asked.
    assert!(
        !queries
            .iter()
            .any(|(name, record_type)| name == "api." && *record_type == RecordType::A),
        "{queries:?}"
    );

    // `api.prod` has one dot, fewer than 5: completed with `svc.cluster.local`.
    let endpoints = spawn("dns:///api.prod:8080", options);
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 8080)]
    );

    // With ndots 1, a one-dot name is asked as is first.
    let before = server.query_count();
    let endpoints = spawn(
        "dns:///api.prod:8080",
        options_for(server.address())
            .search_domains(["svc.cluster.local"])
            .ndots(1),
    );
    endpoints.resolved().await.unwrap();
    let queries = server.queries();
    assert_eq!(queries[before].0, "api.prod.", "{queries:?}");
}

/// A search domain that answers SERVFAIL (CoreDNS's kubernetes plugin before it has synced)
/// while the name as given is NXDOMAIN upstream: a failure, which keeps the last good set, not
/// an absence, which would empty it after two answers. An answer from a later name of the
/// list, after a SERVFAIL, is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servfail_in_the_search_list_is_a_failure_not_an_absence() {
    let server = DnsServer::start().await.unwrap();
    let full = "api.prod.svc.cluster.local";
    server.set_addresses(full, &[ip("127.0.0.2")], 1);
    let options = options_for(server.address())
        .search_domains(["prod.svc.cluster.local", "svc.cluster.local"])
        .ndots(5)
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(30));
    let endpoints = spawn("dns:///api:8080", options);
    endpoints.resolved().await.unwrap();
    let revision = endpoints.revision();

    // The first search name fails; the second and `api.` do not exist.
    server.set_name_mode(full, Some(Mode::ServFail));
    wait_until(&endpoints, PATIENCE, "a failing lookup", |_, health| {
        health.is_failing()
    })
    .await;
    let before = server.query_count();
    // Several lookups later the set is still there, and the error is no absence.
    wait_until(&endpoints, PATIENCE, "three more lookups", |_, _| {
        server.query_count() >= before + 12
    })
    .await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 8080)]);
    assert_eq!(endpoints.revision(), revision);
    let health = endpoints.health();
    let error = health.last_error().unwrap();
    assert!(!error.is_not_found(), "{error}");

    // A later name of the list answers after the SERVFAIL: its addresses are used.
    server.set_addresses("api.svc.cluster.local", &[ip("127.0.0.3")], 1);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 8080)]).await;

    // The first name recovers: it comes first again.
    server.set_name_mode(full, None);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 8080)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_cnames_are_followed() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("backend-a.waypost.test", &[ip("127.0.0.2")], 1);
    server.set_addresses("backend-b.waypost.test", &[ip("127.0.0.3")], 1);
    server.set_cname("ext.prod.svc.cluster.local", "backend-a.waypost.test", 1);
    let endpoints = spawn(
        "dns:///ext.prod.svc.cluster.local.:443",
        options_for(server.address()),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 443)]
    );
    // The ExternalName changes.
    server.set_cname("ext.prod.svc.cluster.local", "backend-b.waypost.test", 1);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 443)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_resolve_now_is_rate_limited() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 30);
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(server.address())
            .ip_families(IpFamilies::V4Only)
            .early_refresh_interval(Duration::from_millis(500)),
    );
    endpoints.resolved().await.unwrap();
    let after_first = server.query_count();
    assert_eq!(after_first, 1);

    // A record appears; the TTL of 30 s would hide it, an early refresh finds it.
    server.add_address("api.waypost.test", ip("127.0.0.3"), 30);
    endpoints.request_refresh();
    wait_for_addresses(
        &endpoints,
        PATIENCE,
        &[addr("127.0.0.2", 80), addr("127.0.0.3", 80)],
    )
    .await;

    // A burst of requests: lookups stay at most one per interval. A slow machine only makes
    // fewer lookups, never more.
    let before = server.query_count();
    let started = tokio::time::Instant::now();
    for _ in 0..200 {
        endpoints.request_refresh();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let lookups = server.query_count() - before;
    let allowed = (elapsed.as_millis() / 500) as usize + 2;
    assert!(lookups >= 1, "the burst caused a lookup");
    assert!(
        lookups <= allowed,
        "{lookups} lookups in {elapsed:?} with a 500 ms rate limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_comes_over_tcp() {
    let server = DnsServer::start().await.unwrap();
    let ips: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect();
    server.set_addresses("big.waypost.test", &ips, 1);
    let endpoints = spawn(
        "dns:///big.waypost.test.:80",
        options_for(server.address()).ip_families(IpFamilies::V4Only),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_stops_when_every_reader_is_gone() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let target: DnsTarget = "dns:///api.waypost.test.:80".parse().unwrap();
    // The handle stops nothing when dropped and reads nothing: it only shows when the task ends.
    let (endpoints, handle) = DnsSource::new(target)
        .with_options(options_for(server.address()))
        .start()
        .unwrap();
    endpoints.resolved().await.unwrap();
    drop(endpoints);
    // The task ends once nobody reads (a lookup under way finishes first); then no more come.
    waypost_tests::eventually("the source's task ended", || handle.is_finished()).await;
    let count = server.query_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.query_count(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_stops_on_request_while_handles_remain() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let target: DnsTarget = "dns:///api.waypost.test.:80".parse().unwrap();
    let (endpoints, handle) = DnsSource::new(target)
        .with_options(options_for(server.address()))
        .start()
        .unwrap();
    endpoints.resolved().await.unwrap();
    let mut watcher = endpoints.watch();
    assert!(!handle.is_finished());

    handle.shutdown().await;
    // The task has ended: the handle keeps the last set, watchers see the source closed, and
    // no lookup follows.
    assert!(endpoints.is_closed());
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 80)]);
    assert!(watcher.changed().await.unwrap_err().is_closed());
    let count = server.query_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.query_count(), count);

    // An IP literal has no task; its handle is finished from the start.
    let literal: DnsTarget = "dns:///127.0.0.9:80".parse().unwrap();
    let (endpoints, handle) = DnsSource::new(literal).start().unwrap();
    assert!(handle.is_finished());
    handle.shutdown().await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.9", 80)]);
}

#[tokio::test]
async fn a_cluster_ip_service_name_is_warned_about_once() {
    let capture = Capture::new();
    let _guard = capture.install();
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.prod.svc.cluster.local", &[ip("127.0.0.2")], 0);
    let endpoints = spawn(
        "dns:///api.prod.svc.cluster.local.:8080",
        options_for(server.address())
            .ip_families(IpFamilies::V4Only)
            .refresh_bounds(Duration::from_millis(50), Duration::from_millis(50)),
    );
    endpoints.resolved().await.unwrap();
    let until = tokio::time::Instant::now() + PATIENCE;
    while capture.matching(Level::WARN, "ClusterIP").is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "no ClusterIP warning: {:?}",
            capture.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More single answers: still one warning.
    let queries = server.query_count();
    while server.query_count() < queries + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warnings = capture.matching(Level::WARN, "ClusterIP");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].text.contains("headless"), "{:?}", warnings[0]);

    // A headless Service with one pod is a different name shape: no warning.
    let headless = Capture::new();
    drop(_guard);
    let _guard = headless.install();
    server.set_addresses("pod-0.api.waypost.test", &[ip("127.0.0.3")], 0);
    let endpoints = spawn(
        "dns:///pod-0.api.waypost.test.:8080",
        options_for(server.address())
            .ip_families(IpFamilies::V4Only)
            .refresh_bounds(Duration::from_millis(50), Duration::from_millis(50)),
    );
    endpoints.resolved().await.unwrap();
    let queries = server.query_count();
    while server.query_count() < queries + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(headless.matching(Level::WARN, "ClusterIP").is_empty());
}

#[tokio::test]
async fn set_changes_are_traced_with_counts_and_revision() {
    let capture = Capture::new();
    let _guard = capture.install();
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    endpoints.resolved().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.3"), ip("127.0.0.4")], 1);
    wait_for_addresses(
        &endpoints,
        PATIENCE,
        &[addr("127.0.0.3", 80), addr("127.0.0.4", 80)],
    )
    .await;
    let updates = capture.matching(Level::DEBUG, "endpoint set updated");
    let last = updates.last().expect("a set-change event");
    assert!(last.text.contains("revision=2"), "{last:?}");
    assert!(last.text.contains("added=2"), "{last:?}");
    assert!(last.text.contains("removed=1"), "{last:?}");
}

#[tokio::test]
async fn spawning_reports_configuration_errors() {
    let target: DnsTarget = "dns:///api.waypost.test:80".parse().unwrap();
    let error = DnsSource::new(target)
        .with_options(DnsOptions::default().without_system_config())
        .spawn()
        .unwrap_err();
    assert!(
        matches!(error, DnsSourceError::NoNameserver { .. }),
        "{error}"
    );
}

/// A CNAME chain of two hops (an ExternalName to a name that is itself an alias), and an alias
/// answered alone (its target in a zone the server does not serve): the resolver follows both,
/// and the CNAME's short TTL, not the address's long one, decides when to look again, so a
/// changed ExternalName is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_chains_are_followed_and_their_ttl_counts() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("backend-a.waypost.test", &[ip("127.0.0.2")], 3600);
    server.set_addresses("backend-b.waypost.test", &[ip("127.0.0.3")], 3600);
    server.set_cname("lb.waypost.test", "backend-a.waypost.test", 1);
    server.set_cname("ext.prod.svc.cluster.local", "lb.waypost.test", 1);
    // A long ceiling: the 3600 s of the addresses would hide every change for 10 minutes.
    let options = options_for(server.address())
        .ip_families(IpFamilies::V4Only)
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(600));
    let endpoints = spawn("dns:///ext.prod.svc.cluster.local.:443", options.clone());
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 443)]
    );
    server.set_cname("lb.waypost.test", "backend-b.waypost.test", 1);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 443)]).await;

    // The alias alone: the resolver asks for the target itself.
    server.set_cname_only(true);
    let queries = server.query_count();
    let alone = spawn("dns:///ext.prod.svc.cluster.local.:443", options);
    let set = alone.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.3", 443)]
    );
    let asked: Vec<String> = server.queries()[queries..]
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        asked.iter().any(|name| name == "backend-b.waypost.test."),
        "{asked:?}"
    );
    server.set_cname("ext.prod.svc.cluster.local", "backend-a.waypost.test", 1);
    wait_for_addresses(&alone, PATIENCE, &[addr("127.0.0.2", 443)]).await;
    assert!(alone.health().is_current());
}

/// An SRV group where one target has no address record (NODATA) and another does not exist
/// (NXDOMAIN): the target with addresses is the set, the lower priority is not used, and
/// nothing is reported as failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_without_addresses_are_skipped() {
    let server = DnsServer::start().await.unwrap();
    server.set_srv_additionals(false);
    server.set_addresses("pod-0.api.waypost.test", &[ip("127.0.0.2")], 1);
    // pod-1 has only an SRV record of its own: no A, no AAAA.
    server.set_srv(
        "pod-1.api.waypost.test",
        &[Srv::new(0, 0, 1, "pod-0.api.waypost.test")],
        1,
    );
    server.set_addresses("backup.api.waypost.test", &[ip("127.0.0.9")], 1);
    server.set_srv(
        "_http._tcp.api.waypost.test",
        &[
            Srv::new(10, 10, 8080, "pod-0.api.waypost.test"),
            Srv::new(10, 10, 8081, "pod-1.api.waypost.test"),
            Srv::new(10, 10, 8082, "pod-2.api.waypost.test"),
            Srv::new(20, 10, 8089, "backup.api.waypost.test"),
        ],
        1,
    );
    let endpoints = spawn(
        "dns:///_http._tcp.api.waypost.test.",
        options_for(server.address()),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 8080)]
    );
    assert!(endpoints.health().is_current());
    assert_eq!(endpoints.health().total_failures(), 0);

    // pod-2 appears: it joins at the next refresh.
    server.set_addresses("pod-2.api.waypost.test", &[ip("127.0.0.4")], 1);
    wait_for_addresses(
        &endpoints,
        PATIENCE,
        &[addr("127.0.0.2", 8080), addr("127.0.0.4", 8082)],
    )
    .await;
    // Every preferred target loses its addresses: the backup group serves.
    server.remove("pod-0.api.waypost.test");
    server.remove("pod-2.api.waypost.test");
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.9", 8089)]).await;
    assert_eq!(endpoints.health().total_failures(), 0);
}

/// TTL 0 is clamped to the floor: the source does not ask in a loop. A loaded machine only
/// makes fewer lookups, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ttl_is_clamped_to_the_floor() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 0);
    let floor = Duration::from_millis(500);
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(server.address())
            .ip_families(IpFamilies::V4Only)
            .jitter(0.0)
            .refresh_bounds(floor, Duration::from_secs(30)),
    );
    endpoints.resolved().await.unwrap();
    let started = tokio::time::Instant::now();
    let before = server.query_count();
    // The source keeps looking (TTL 0 is not "never again")...
    wait_until(&endpoints, PATIENCE, "three more lookups", |_, _| {
        server.query_count() >= before + 3
    })
    .await;
    server.add_address("api.waypost.test", ip("127.0.0.3"), 0);
    wait_for_addresses(
        &endpoints,
        PATIENCE,
        &[addr("127.0.0.2", 80), addr("127.0.0.3", 80)],
    )
    .await;
    // ...but at most once per floor.
    let elapsed = started.elapsed();
    let lookups = server.query_count() - before;
    // One lookup may have started just before the count was taken.
    let allowed = (elapsed.as_millis() / floor.as_millis()) as usize + 2;
    assert!(
        lookups <= allowed,
        "{lookups} lookups in {elapsed:?} with a {floor:?} floor"
    );
}

/// An answer that grows from 1 to 50 records (a scale-up) and back to 1: every step is
/// followed, and the one-address answers of a non-Service name raise no ClusterIP warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_grows_to_50_records_and_shrinks_is_followed() {
    let server = DnsServer::start().await.unwrap();
    let name = "api.waypost.test";
    let ips: Vec<IpAddr> = (1..=50u8).map(|i| IpAddr::from([127, 0, 1, i])).collect();
    server.set_addresses(name, &ips[..1], 1);
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    assert_eq!(endpoints.resolved().await.unwrap().len(), 1);
    for size in [10, 50, 1] {
        server.set_addresses(name, &ips[..size], 1);
        let wanted: Vec<_> = ips[..size]
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, 80))
            .collect();
        wait_for_addresses(&endpoints, PATIENCE, &wanted).await;
    }
    assert_eq!(endpoints.health().total_failures(), 0);
}

/// SERVFAIL after a good answer: the set stays, health is failing and counts the failures;
/// once the server answers again, health is current with no failure in a row, and changes made
/// meanwhile arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_after_a_good_answer_then_recovery() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2"), ip("::1")], 1);
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    let first = endpoints.resolved().await.unwrap();
    server.set_mode(Mode::ServFail);
    wait_until(&endpoints, PATIENCE, "two failures", |_, health| {
        health.is_failing() && health.consecutive_failures() >= 2
    })
    .await;
    let health = endpoints.health();
    let error = health.last_error().unwrap();
    assert!(error.is_resolve(), "{error}");
    assert!(error.detail().contains("Server Failure"), "{error}");
    assert_eq!(endpoints.revision(), first.revision());
    assert_eq!(
        addresses(&endpoints),
        [addr("127.0.0.2", 80), addr("::1", 80)]
    );

    server.set_addresses("api.waypost.test", &[ip("127.0.0.3")], 1);
    server.set_mode(Mode::Answer);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 80)]).await;
    let health = endpoints.health();
    assert!(health.is_current());
    assert_eq!(health.consecutive_failures(), 0);
    assert!(health.failing_since().is_none());
    assert!(!health.is_gone());
}

/// IP literals are endpoints as written: no query reaches the nameserver, whatever ndots says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_never_query_dns() {
    let server = DnsServer::start().await.unwrap();
    for (target, expected) in [
        ("dns:///127.0.0.7:8080", addr("127.0.0.7", 8080)),
        ("dns:///[::1]:8080", addr("::1", 8080)),
        (
            "dns:///[::ffff:127.0.0.8]:8080",
            addr("::ffff:127.0.0.8", 8080),
        ),
    ] {
        let endpoints = spawn(
            target,
            options_for(server.address())
                .ndots(5)
                .search_domains(["prod.svc.cluster.local", "svc.cluster.local"]),
        );
        let set = endpoints.resolved().await.unwrap();
        assert_eq!(set.addresses().collect::<Vec<_>>(), [expected], "{target}");
        assert!(endpoints.health().is_current(), "{target}");
    }
    assert_eq!(server.query_count(), 0, "{:?}", server.queries());
}

/// Sources with the same settings share one resolver, and with it one response cache: each
/// still follows its own name, and an early refresh of one reaches the server although the
/// other's answer, with a TTL of an hour, was cached in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_sharing_a_resolver_each_follow_their_own_name() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("one.waypost.test", &[ip("127.0.0.2")], 3600);
    server.set_addresses("two.waypost.test", &[ip("127.0.0.3")], 3600);
    let options = options_for(server.address())
        .ip_families(IpFamilies::V4Only)
        .early_refresh_interval(Duration::from_millis(200));
    let one = spawn("dns:///one.waypost.test.:80", options.clone());
    let two = spawn("dns:///two.waypost.test.:81", options);
    assert_eq!(
        one.resolved()
            .await
            .unwrap()
            .addresses()
            .collect::<Vec<_>>(),
        [addr("127.0.0.2", 80)]
    );
    assert_eq!(
        two.resolved()
            .await
            .unwrap()
            .addresses()
            .collect::<Vec<_>>(),
        [addr("127.0.0.3", 81)]
    );

    // Both names change; the TTL would hide it for an hour, early refreshes find it.
    server.set_addresses("one.waypost.test", &[ip("127.0.0.4")], 3600);
    server.set_addresses("two.waypost.test", &[ip("127.0.0.5")], 3600);
    one.request_refresh();
    wait_for_addresses(&one, PATIENCE, &[addr("127.0.0.4", 80)]).await;
    assert_eq!(
        addresses(&two),
        [addr("127.0.0.3", 81)],
        "nothing asked for two yet"
    );
    two.request_refresh();
    wait_for_addresses(&two, PATIENCE, &[addr("127.0.0.5", 81)]).await;
    assert_eq!(addresses(&one), [addr("127.0.0.4", 80)]);

    let asked = |name: &str| {
        server
            .queries()
            .iter()
            .filter(|(asked, kind)| asked.starts_with(name) && *kind == RecordType::A)
            .count()
    };
    assert!(asked("one.waypost.test") >= 2, "{:?}", server.queries());
    assert!(asked("two.waypost.test") >= 2, "{:?}", server.queries());
    assert!(one.health().is_current() && two.health().is_current());
}

/// An answer that carries records of another name beside the queried name's (a misconfigured
/// or forging server): only the queried name's records, and those of the names its CNAMEs lead
/// to, are endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_other_names_in_an_answer_are_ignored() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    server.add_foreign_address(
        "api.waypost.test",
        "other.waypost.test",
        ip("127.0.0.66"),
        1,
    );
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;

    // Through a CNAME: the alias's target counts, the stranger still does not.
    server.set_cname("alias.waypost.test", "api.waypost.test", 1);
    server.add_foreign_address(
        "alias.waypost.test",
        "other.waypost.test",
        ip("127.0.0.67"),
        1,
    );
    let endpoints = spawn(
        "dns:///alias.waypost.test.:80",
        options_for(server.address()),
    );
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;

    // SRV: a record of another service name is no target of this one.
    let srv = "_http._tcp.api.waypost.test";
    server.set_addresses("a.waypost.test", &[ip("127.0.0.3")], 1);
    server.set_addresses("b.waypost.test", &[ip("127.0.0.4")], 1);
    server.set_srv(srv, &[Srv::new(10, 1, 7001, "a.waypost.test")], 1);
    server.add_foreign_srv(
        srv,
        "_http._tcp.other.waypost.test",
        &Srv::new(10, 1, 7002, "b.waypost.test"),
        1,
    );
    let endpoints = spawn(&format!("dns:///{srv}."), options_for(server.address()));
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.3", 7001)]).await;
}

/// glibc's `res_search` after a failure that is not a negative answer: when the name as given
/// is asked first and times out, the search domains are still asked; when a search domain's
/// name times out, the remaining search domains are not, but the name as given still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_in_the_walk_still_asks_the_names_glibc_asks() {
    let server = DnsServer::start().await.unwrap();
    // `api.prod` has more labels than ndots 1: asked as given first, silent there.
    server.set_name_mode("api.prod", Some(Mode::Silent));
    server.set_addresses("api.prod.svc.test", &[ip("127.0.0.2")], 1);
    let endpoints = spawn(
        "dns:///api.prod:80",
        options_for(server.address())
            .search_domains(["svc.test"])
            .ndots(1),
    );
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;

    // `api` has fewer labels than ndots 5: the search domains first. The first one is silent:
    // the second is not asked, the name as given is, and answers.
    server.set_name_mode("api.a.test", Some(Mode::Silent));
    server.set_addresses("api.b.test", &[ip("127.0.0.3")], 1);
    server.set_addresses("api", &[ip("127.0.0.4")], 1);
    let endpoints = spawn(
        "dns:///api:80",
        options_for(server.address())
            .search_domains(["a.test", "b.test"])
            .ndots(5),
    );
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.4", 80)]).await;
    let queries = server.queries();
    assert!(
        queries.iter().any(|(name, _)| name == "api.a.test."),
        "{queries:?}"
    );
    assert!(
        !queries.iter().any(|(name, _)| name == "api.b.test."),
        "{queries:?}"
    );

    // Nothing answers and one name timed out: a failure (the set is kept), not an absence,
    // though every other name said NXDOMAIN.
    server.remove("api");
    wait_until(&endpoints, PATIENCE, "a failing lookup", |_, health| {
        health.is_failing()
    })
    .await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.4", 80)]);
    assert!(!endpoints.health().last_error().unwrap().is_not_found());
}

/// A zero query timeout cannot be met by any server: it counts as one second, as
/// resolv.conf's `timeout:0` does in glibc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_query_timeout_counts_as_one_second() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(server.address()).query_timeout(Duration::ZERO),
    );
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;
}

/// With several nameservers, one answering SERVFAIL and one REFUSED: the next is asked, as
/// glibc does (hickory's pool returned the first such answer as the lookup's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_nameserver_passes_the_query_to_the_next() {
    let servfail = DnsServer::start().await.unwrap();
    servfail.set_mode(Mode::ServFail);
    let refused = DnsServer::start().await.unwrap();
    refused.set_mode(Mode::Refused);
    let good = DnsServer::start().await.unwrap();
    good.set_addresses("api.waypost.test", &[ip("127.0.0.2")], 1);
    let nameservers = [servfail.address(), refused.address(), good.address()];
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(good.address()).nameservers(nameservers),
    );
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;
    assert!(servfail.query_count() > 0 || refused.query_count() > 0);

    // The good server's NXDOMAIN is an answer: after confirmation the set is gone.
    good.remove("api.waypost.test");
    wait_until(&endpoints, PATIENCE, "the name gone", |set, health| {
        set.is_empty() && health.is_gone()
    })
    .await;
}

/// An SRV answer whose only record has the target `.` says the service is decidedly not
/// available (RFC 2782): a negative answer that stands for the record's TTL, not one asked
/// again at the refresh floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srv_answer_of_target_dot_stands_for_its_ttl() {
    let server = DnsServer::start().await.unwrap();
    let srv = "_http._tcp.none.waypost.test";
    server.set_srv(srv, &[Srv::new(0, 0, 0, ".")], 6);
    let endpoints = spawn(
        &format!("dns:///{srv}."),
        options_for(server.address())
            .refresh_bounds(Duration::from_secs(1), Duration::from_secs(60)),
    );
    // The second negative answer, 6 s after the first, confirms the absence.
    wait_until(&endpoints, PATIENCE, "the confirmed answer", |_, health| {
        health.answers() >= 1
    })
    .await;
    let asked = server.query_count();
    // The next lookup is due 6 s later; at the floor (1 s) there would be three by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.query_count(), asked, "{:?}", server.queries());
    assert!(endpoints.load().is_empty());
}

/// resolv.conf read as glibc reads it, through `DnsOptions::resolv_conf`: its last `search` or
/// `domain` line is the search list (a `domain` line before it is not searched) and its
/// `ndots` counts, also when the nameserver comes from the options and the file names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolv_conf_search_and_ndots_are_read_as_glibc_reads_them() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("api.prod.corp.test", &[ip("127.0.0.3")], 1);
    server.set_addresses("api.prod.svc.test", &[ip("127.0.0.2")], 1);
    let conf = HostsFile::new(
        "resolv-conf",
        "domain corp.test\nsearch svc.test\noptions ndots:2 timeout:1\n",
    );
    let hosts = HostsFile::new("resolv-conf-hosts", "");
    let options = options_for(server.address())
        .resolv_conf(&conf.0)
        .hosts_file(&hosts.0);
    // `api.prod` has two labels, not more than ndots 2: the search list first.
    let endpoints = spawn("dns:///api.prod:80", options);
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;
    let queries = server.queries();
    assert_eq!(queries[0].0, "api.prod.svc.test.", "{queries:?}");
    assert!(
        !queries.iter().any(|(name, _)| name.contains("corp")),
        "{queries:?}"
    );
}

/// An SRV name that is an alias (a CNAME to another SRV name, answered together with the
/// records of its target, as authoritative servers do): the target's records are the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srv_name_that_is_a_cname_is_followed() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("a.waypost.test", &[ip("127.0.0.2")], 1);
    server.set_srv(
        "_grpc._tcp.real.waypost.test",
        &[Srv::new(10, 1, 7001, "a.waypost.test")],
        1,
    );
    server.set_cname(
        "_grpc._tcp.alias.waypost.test",
        "_grpc._tcp.real.waypost.test",
        1,
    );
    let endpoints = spawn(
        "dns:///_grpc._tcp.alias.waypost.test.",
        options_for(server.address()),
    );
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 7001)]).await;
    // Several refreshes later it is still there (not confirmed absent).
    let before = server.query_count();
    wait_until(&endpoints, PATIENCE, "more lookups", |_, _| {
        server.query_count() >= before + 6
    })
    .await;
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 7001)]);
    assert!(
        endpoints.health().last_error().is_none(),
        "{:?}",
        endpoints.health()
    );
}

/// Addresses no connection can go to (unspecified, broadcast, multicast) in an answer are left
/// out, as the same addresses are refused as `dns:///` literals; they are never connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_addresses_that_are_no_destination_are_left_out() {
    let server = DnsServer::start().await.unwrap();
    let ips = [
        "127.0.0.2",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "ff02::1",
    ]
    .map(ip);
    server.set_addresses("api.waypost.test", &ips, 1);
    let endpoints = spawn("dns:///api.waypost.test.:80", options_for(server.address()));
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.2", 80)]).await;
}
