//! The DNS source against a real DNS server (unbound from Debian) on a loopback port, with
//! records changed while both run. Skipped with a printed reason when unbound is missing,
//! except under `CI=true`, where that is a failure.

use std::time::Duration;

use waypost::discovery::source::dns::{DnsOptions, DnsSource};
use waypost::discovery::{DnsTarget, Endpoints};
use waypost_tests::dns::unbound::Unbound;
use waypost_tests::dns::{PATIENCE, addr, addresses, options_for, wait_for_addresses, wait_until};

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
async fn unbound_scale_up_and_down_with_ipv6() {
    let binaries = Unbound::require("unbound_scale_up_and_down_with_ipv6");
    let mut unbound = Unbound::start(
        binaries,
        &[
            "api.waypost.test. 1 IN A 127.0.0.2",
            "api.waypost.test. 1 IN A 127.0.0.3",
        ],
    )
    .await
    .unwrap();
    let endpoints = spawn(
        "dns:///api.waypost.test.:8080",
        options_for(unbound.address()),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 8080), addr("127.0.0.3", 8080)]
    );

    unbound
        .set_records(
            "api.waypost.test.",
            &[
                "api.waypost.test. 1 IN A 127.0.0.2",
                "api.waypost.test. 1 IN A 127.0.0.3",
                "api.waypost.test. 1 IN A 127.0.0.4",
                "api.waypost.test. 1 IN AAAA ::1",
            ],
        )
        .await
        .unwrap();
    wait_for_addresses(
        &endpoints,
        WITHIN_TTL,
        &[
            addr("127.0.0.2", 8080),
            addr("127.0.0.3", 8080),
            addr("127.0.0.4", 8080),
            addr("::1", 8080),
        ],
    )
    .await;

    unbound
        .set_records("api.waypost.test.", &["api.waypost.test. 1 IN AAAA ::1"])
        .await
        .unwrap();
    wait_for_addresses(&endpoints, WITHIN_TTL, &[addr("::1", 8080)]).await;
    // Replacing records removes the name for a moment; a lone NXDOMAIN must not have emptied
    // the set, and the answer that followed leaves the source current.
    wait_until(&endpoints, PATIENCE, "a current source", |_, health| {
        health.is_current()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_srv_priorities_and_weights() {
    let binaries = Unbound::require("unbound_srv_priorities_and_weights");
    let mut unbound = Unbound::start(
        binaries,
        &[
            "_grpc._tcp.api.waypost.test. 1 IN SRV 10 70 7001 a.api.waypost.test.",
            "_grpc._tcp.api.waypost.test. 1 IN SRV 10 30 7002 b.api.waypost.test.",
            "_grpc._tcp.api.waypost.test. 1 IN SRV 20 50 7009 backup.api.waypost.test.",
            "a.api.waypost.test. 1 IN A 127.0.0.2",
            "b.api.waypost.test. 1 IN A 127.0.0.3",
            "backup.api.waypost.test. 1 IN A 127.0.0.9",
        ],
    )
    .await
    .unwrap();
    let endpoints = spawn(
        "dns:///_grpc._tcp.api.waypost.test.",
        options_for(unbound.address()),
    );
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 7001), addr("127.0.0.3", 7002)]
    );
    assert_eq!(set.get(&addr("127.0.0.2", 7001)).unwrap().weight(), 70);
    assert_eq!(set.get(&addr("127.0.0.3", 7002)).unwrap().weight(), 30);
    assert_eq!(
        set.get(&addr("127.0.0.3", 7002)).unwrap().hostname(),
        Some("b.api.waypost.test")
    );

    // The preferred targets disappear: the backup group is used.
    unbound
        .set_records("a.api.waypost.test.", &[])
        .await
        .unwrap();
    unbound
        .set_records("b.api.waypost.test.", &[])
        .await
        .unwrap();
    wait_for_addresses(&endpoints, PATIENCE, &[addr("127.0.0.9", 7009)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_nxdomain_confirmation_and_restart() {
    let binaries = Unbound::require("unbound_nxdomain_confirmation_and_restart");
    let mut unbound = Unbound::start(binaries, &["api.waypost.test. 1 IN A 127.0.0.2"])
        .await
        .unwrap();
    let endpoints = spawn(
        "dns:///api.waypost.test.:80",
        options_for(unbound.address())
            .refresh_bounds(Duration::from_secs(2), Duration::from_secs(30)),
    );
    endpoints.resolved().await.unwrap();
    let revision = endpoints.revision();

    // The server goes away: the set stays, the health says so.
    unbound.stop().await.unwrap();
    wait_until(&endpoints, PATIENCE, "the failure", |_, health| {
        health.is_failing()
    })
    .await;
    assert!(endpoints.health().last_error().unwrap().is_resolve());
    assert_eq!(addresses(&endpoints), [addr("127.0.0.2", 80)]);
    assert_eq!(endpoints.revision(), revision);

    // It comes back with the same records: recovery without a set change.
    unbound.restart().await.unwrap();
    wait_until(&endpoints, PATIENCE, "recovery", |_, health| {
        health.is_current()
    })
    .await;
    assert_eq!(endpoints.revision(), revision);

    // The name is deleted: one NXDOMAIN keeps the set, the next empties it. unbound's static
    // zone sends an SOA with a 1 s negative TTL.
    unbound.set_records("api.waypost.test.", &[]).await.unwrap();
    wait_until(
        &endpoints,
        PATIENCE,
        "the first NXDOMAIN",
        |current, health| {
            !current.is_empty()
                && health
                    .last_error()
                    .is_some_and(|error| error.is_not_found())
        },
    )
    .await;
    wait_until(
        &endpoints,
        PATIENCE,
        "the confirmed empty set",
        |current, _| current.is_empty(),
    )
    .await;
    assert_eq!(endpoints.revision(), revision + 1);
}

/// A real server's answers for an ExternalName (a CNAME to a name with an address) and an
/// IPv6-only name (NODATA with the zone's SOA for A): the alias is followed and a change of it
/// seen, and the IPv6 name gives its AAAA records alone, with nothing failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_cnames_and_ipv6_only_names() {
    let binaries = Unbound::require("unbound_cnames_and_ipv6_only_names");
    let mut unbound = Unbound::start(
        binaries,
        &[
            "ext.waypost.test. 1 IN CNAME backend-a.waypost.test.",
            "backend-a.waypost.test. 1 IN A 127.0.0.2",
            "backend-b.waypost.test. 1 IN A 127.0.0.3",
            "v6.waypost.test. 1 IN AAAA ::1",
        ],
    )
    .await
    .unwrap();
    let external = spawn(
        "dns:///ext.waypost.test.:443",
        options_for(unbound.address()),
    );
    let set = external.resolved().await.unwrap();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("127.0.0.2", 443)]
    );
    let v6 = spawn("dns:///v6.waypost.test.:80", options_for(unbound.address()));
    let set = v6.resolved().await.unwrap();
    assert_eq!(set.addresses().collect::<Vec<_>>(), [addr("::1", 80)]);

    unbound
        .set_records(
            "ext.waypost.test.",
            &["ext.waypost.test. 1 IN CNAME backend-b.waypost.test."],
        )
        .await
        .unwrap();
    wait_for_addresses(&external, PATIENCE, &[addr("127.0.0.3", 443)]).await;
    for endpoints in [&external, &v6] {
        let health = endpoints.health();
        assert!(health.is_current(), "{health:?}");
        assert_eq!(health.total_failures(), 0, "{health:?}");
    }
}
