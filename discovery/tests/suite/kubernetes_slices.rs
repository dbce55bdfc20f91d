//! EndpointSlice conversion and merging, without a server: the kube-proxy cases on plain data.
#![cfg(feature = "kubernetes")]

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::{Value, json};
use waypost_discovery::source::kubernetes::{
    Applied, CacheStatus, SERVICE_NAME_LABEL, SliceCache, UnusableReason, convert_slice,
    hints_prefer_zone,
};
use waypost_discovery::{Endpoint, PortSelector, Readiness};

fn slice_json(name: &str, address_type: &str, ports: Value, endpoints: Value) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": "api" }
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    })
}

fn parse(value: Value) -> EndpointSlice {
    serde_json::from_value(value).expect("a valid EndpointSlice")
}

fn http_port() -> Value {
    json!([{ "name": "http", "port": 8080, "protocol": "TCP" }])
}

/// A slice of `api` with port `http:8080` and ready endpoints at `ips`.
fn ready_slice(name: &str, ips: impl IntoIterator<Item = String>) -> EndpointSlice {
    let endpoints: Vec<Value> = ips
        .into_iter()
        .map(|ip| json!({ "addresses": [ip], "conditions": { "ready": true } }))
        .collect();
    parse(slice_json(
        name,
        "IPv4",
        http_port(),
        Value::from(endpoints),
    ))
}

fn endpoint_json(
    ip: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Value {
    let mut conditions = serde_json::Map::new();
    for (key, value) in [
        ("ready", ready),
        ("serving", serving),
        ("terminating", terminating),
    ] {
        if let Some(value) = value {
            conditions.insert(key.into(), Value::Bool(value));
        }
    }
    json!({ "addresses": [ip], "conditions": conditions })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn http() -> PortSelector {
    PortSelector::Name("http".into())
}

fn cache() -> SliceCache {
    let mut cache = SliceCache::new("api", Some(http()));
    cache.finish_relist();
    cache
}

fn addresses(cache: &SliceCache) -> Vec<SocketAddr> {
    cache.endpoint_set().addresses().collect()
}

fn ip(i: usize) -> String {
    format!("10.1.{}.{}", i / 250, i % 250 + 1)
}

// ---- conversion ----

#[test]
fn conditions_default_as_the_api_says() {
    let slice = parse(slice_json(
        "api-1",
        "IPv4",
        http_port(),
        json!([
            // No conditions: ready.
            { "addresses": ["10.0.0.1"] },
            // Explicitly ready.
            endpoint_json("10.0.0.2", Some(true), None, None),
            // Unready, not terminating: starting up. Left out.
            endpoint_json("10.0.0.3", Some(false), None, None),
            // Unready, serving and terminating: draining.
            endpoint_json("10.0.0.4", Some(false), Some(true), Some(true)),
            // Terminating, serving missing: serving defaults to true (the API's rule, and
            // kube-proxy's). Draining.
            endpoint_json("10.0.0.5", Some(false), None, Some(true)),
            // Ready missing (true) although terminating: ready wins.
            endpoint_json("10.0.0.6", None, None, Some(true)),
            // Terminating and not serving: left out.
            endpoint_json("10.0.0.7", Some(false), Some(false), Some(true)),
        ]),
    ));
    let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
    let got: Vec<(SocketAddr, Readiness)> = contribution
        .endpoints()
        .iter()
        .map(|e| (e.address(), e.readiness()))
        .collect();
    assert_eq!(
        got,
        [
            (addr("10.0.0.1:8080"), Readiness::Ready),
            (addr("10.0.0.2:8080"), Readiness::Ready),
            (addr("10.0.0.4:8080"), Readiness::Terminating),
            (addr("10.0.0.5:8080"), Readiness::Terminating),
            (addr("10.0.0.6:8080"), Readiness::Ready),
        ]
    );
    assert_eq!(contribution.not_serving(), 2);
    // Which ready endpoints are terminating: 10.0.0.6 (ready missing, terminating).
    let terminating: Vec<(SocketAddr, bool)> = contribution
        .endpoints_terminating()
        .map(|(e, terminating)| (e.address(), terminating))
        .collect();
    assert_eq!(
        terminating,
        [
            (addr("10.0.0.1:8080"), false),
            (addr("10.0.0.2:8080"), false),
            (addr("10.0.0.4:8080"), true),
            (addr("10.0.0.5:8080"), true),
            (addr("10.0.0.6:8080"), true),
        ]
    );
}

#[test]
fn topology_is_carried() {
    let slice = parse(slice_json(
        "api-1",
        "IPv4",
        http_port(),
        json!([{
            "addresses": ["10.0.0.1", "10.0.0.99"],
            "zone": "eu-west-1a",
            "nodeName": "node-7",
            "hostname": "api-0",
            "hints": {
                "forZones": [{ "name": "eu-west-1a" }, { "name": "eu-west-1b" }],
                "forNodes": [{ "name": "node-7" }],
            },
        }]),
    ));
    let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
    let [endpoint] = contribution.endpoints() else {
        panic!("one endpoint expected: {contribution:?}");
    };
    // The first address is the endpoint.
    assert_eq!(endpoint.address(), addr("10.0.0.1:8080"));
    assert_eq!(endpoint.zone(), Some("eu-west-1a"));
    assert_eq!(endpoint.node(), Some("node-7"));
    assert_eq!(endpoint.hostname(), Some("api-0"));
    assert_eq!(
        endpoint.zone_hints().collect::<Vec<_>>(),
        ["eu-west-1a", "eu-west-1b"]
    );
    assert_eq!(endpoint.node_hints().collect::<Vec<_>>(), ["node-7"]);
}

#[test]
fn ports_are_selected_by_name_or_number() {
    let ports = json!([
        { "name": "http", "port": 8080, "protocol": "TCP" },
        { "name": "grpc", "port": 9090 },
        { "name": "dns-udp", "port": 53, "protocol": "UDP" },
        { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
    ]);
    let slice = parse(slice_json(
        "api-1",
        "IPv4",
        ports,
        json!([{ "addresses": ["10.0.0.1"] }]),
    ));
    let port_of = |selector: Option<PortSelector>| {
        convert_slice(&slice, "api", selector.as_ref())
            .unwrap()
            .port()
    };
    assert_eq!(port_of(Some(PortSelector::Name("grpc".into()))), Some(9090));
    assert_eq!(port_of(Some(PortSelector::Name("http".into()))), Some(8080));
    assert_eq!(port_of(Some(PortSelector::Number(9090))), Some(9090));
    // Numbers match the slice's (target) port; two protocols on one number: TCP.
    assert_eq!(port_of(Some(PortSelector::Number(53))), Some(53));
    assert_eq!(
        port_of(Some(PortSelector::Name("dns-tcp".into()))),
        Some(53)
    );
    // A UDP port is another Service port: a TCP client never selects it, even by its name.
    assert_eq!(port_of(Some(PortSelector::Name("dns-udp".into()))), None);
    assert_eq!(port_of(Some(PortSelector::Name("metrics".into()))), None);
    assert_eq!(port_of(Some(PortSelector::Number(80))), None);
    // No port in the target and several in the slice: ambiguous, nothing selected.
    assert_eq!(port_of(None), None);

    let contribution = convert_slice(&slice, "api", Some(&PortSelector::Number(80))).unwrap();
    assert!(contribution.endpoints().is_empty());
    assert_eq!(
        contribution.offered_ports(),
        ["http:8080", "grpc:9090", "dns-udp:53/UDP", "dns-tcp:53"]
    );
}

/// kube-proxy keys a slice's ports by name and protocol: a UDP or SCTP port with the name or
/// number a TCP client asks for is a different Service port, and the only TCP port of a slice
/// is its only port for a TCP client.
#[test]
fn only_tcp_ports_are_selected() {
    let endpoints = json!([{ "addresses": ["10.0.0.1"] }]);
    let slice = |ports: Value| parse(slice_json("api-1", "IPv4", ports, endpoints.clone()));
    let port_of = |slice: &EndpointSlice, selector: Option<PortSelector>| {
        convert_slice(slice, "api", selector.as_ref())
            .unwrap()
            .port()
    };

    // The same name on two protocols, UDP first: the TCP number.
    let same_name = slice(json!([
        { "name": "dns", "port": 5353, "protocol": "UDP" },
        { "name": "dns", "port": 53, "protocol": "TCP" },
    ]));
    assert_eq!(
        port_of(&same_name, Some(PortSelector::Name("dns".into()))),
        Some(53)
    );
    assert_eq!(port_of(&same_name, Some(PortSelector::Number(5353))), None);
    assert_eq!(port_of(&same_name, None), Some(53));

    // One TCP port beside UDP and SCTP ones: the only port a TCP client has.
    let mixed = slice(json!([
        { "name": "stats", "port": 9000, "protocol": "UDP" },
        { "name": "http", "port": 8080 },
        { "name": "sig", "port": 3868, "protocol": "SCTP" },
    ]));
    assert_eq!(port_of(&mixed, None), Some(8080));
    assert_eq!(
        port_of(&mixed, Some(PortSelector::Name("sig".into()))),
        None
    );

    // Only UDP: a valid slice, with no port for this client; the ports say why.
    let udp_only = slice(json!([{ "name": "dns", "port": 53, "protocol": "UDP" }]));
    let contribution = convert_slice(&udp_only, "api", None).unwrap();
    assert_eq!(contribution.port(), None);
    assert!(contribution.endpoints().is_empty());
    assert_eq!(contribution.offered_ports(), ["dns:53/UDP"]);
    let mut cache = SliceCache::new("api", Some(PortSelector::Name("dns".into())));
    cache.begin_relist();
    cache.apply(&udp_only);
    cache.finish_relist();
    assert!(cache.endpoint_set().is_empty());
    assert_eq!(
        cache.status(),
        CacheStatus::NoMatchingPort {
            offered: vec!["dns:53/UDP".into()]
        }
    );
}

#[test]
fn a_single_port_is_used_without_a_selector_and_invalid_ports_are_ignored() {
    let ports = json!([
        { "port": 8081 },                   // no name: ignored
        { "name": "nil-number" },           // no number: ignored
        { "name": "zero", "port": 0 },      // not a port: ignored
        { "name": "big", "port": 70000 },   // not a port: ignored
        { "name": "", "port": 8080 },       // unnamed Service port: the only usable one
    ]);
    let slice = parse(slice_json(
        "api-1",
        "IPv4",
        ports,
        json!([{ "addresses": ["10.0.0.1"] }]),
    ));
    let contribution = convert_slice(&slice, "api", None).unwrap();
    assert_eq!(contribution.port(), Some(8080));
    assert_eq!(contribution.endpoints()[0].address(), addr("10.0.0.1:8080"));
    assert_eq!(contribution.offered_ports(), ["8080"]);
}

#[test]
fn ipv6_slices_and_legacy_ipv4_spellings() {
    let v6 = parse(slice_json(
        "api-v6",
        "IPv6",
        http_port(),
        json!([{ "addresses": ["fd00::1"] }, { "addresses": ["::1"] }]),
    ));
    let contribution = convert_slice(&v6, "api", Some(&http())).unwrap();
    let got: Vec<SocketAddr> = contribution
        .endpoints()
        .iter()
        .map(Endpoint::address)
        .collect();
    assert_eq!(got, [addr("[fd00::1]:8080"), addr("[::1]:8080")]);

    let legacy = parse(slice_json(
        "api-old",
        "IPv4",
        http_port(),
        json!([{ "addresses": ["010.000.000.001"] }]),
    ));
    let contribution = convert_slice(&legacy, "api", Some(&http())).unwrap();
    assert_eq!(contribution.endpoints()[0].address(), addr("10.0.0.1:8080"));
}

#[test]
fn fqdn_slices_are_skipped_quietly() {
    let slice = parse(slice_json(
        "api-fqdn",
        "FQDN",
        http_port(),
        json!([{ "addresses": ["api.example.com"] }]),
    ));
    let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
    assert!(contribution.is_fqdn());
    assert!(contribution.endpoints().is_empty());
    assert_eq!(contribution.port(), None);
}

#[test]
fn the_controllers_placeholder_is_an_empty_slice() {
    // What the EndpointSlice controller writes for a Service without endpoints.
    for (ports, endpoints) in [(Value::Null, Value::Null), (json!([]), json!([]))] {
        let slice = parse(slice_json("api-placeholder", "IPv4", ports, endpoints));
        let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
        assert!(contribution.is_placeholder());
        assert!(contribution.endpoints().is_empty());
        assert_eq!(contribution.port(), None);
    }
}

#[test]
fn malformed_slices_are_named_and_explained() {
    let one = json!([{ "addresses": ["10.0.0.1"] }]);
    let cases: Vec<(Value, UnusableReason)> = vec![
        (
            slice_json("no-ports", "IPv4", Value::Null, one.clone()),
            UnusableReason::MissingPorts,
        ),
        (
            slice_json("empty-ports", "IPv4", json!([]), one.clone()),
            UnusableReason::MissingPorts,
        ),
        (
            slice_json("odd-type", "IPv5", http_port(), one.clone()),
            UnusableReason::UnknownAddressType("IPv5".into()),
        ),
        (
            json!({
                "metadata": { "name": "no-label" },
                "addressType": "IPv4",
                "ports": http_port(),
                "endpoints": one.clone(),
            }),
            UnusableReason::MissingServiceLabel,
        ),
        (
            json!({
                "metadata": { "name": "other", "labels": { "kubernetes.io/service-name": "web" } },
                "addressType": "IPv4",
                "ports": http_port(),
                "endpoints": one.clone(),
            }),
            UnusableReason::OtherService("web".into()),
        ),
        (
            json!({
                "metadata": { "labels": { "kubernetes.io/service-name": "api" } },
                "addressType": "IPv4",
                "ports": http_port(),
                "endpoints": one,
            }),
            UnusableReason::MissingName,
        ),
    ];
    for (value, reason) in cases {
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let error = convert_slice(&parse(value), "api", Some(&http())).unwrap_err();
        assert_eq!(error.reason(), &reason, "{name}");
        assert_eq!(error.slice(), name);
        if !name.is_empty() {
            assert!(error.to_string().contains(&format!("`{name}`")), "{error}");
        }
    }
}

/// An endpoint whose address is not an IP of the slice's family is skipped alone, as kube-proxy
/// skips an endpoint of the wrong family: the slice's other endpoints are kept.
#[test]
fn an_endpoint_with_an_invalid_address_is_skipped_alone() {
    for (address_type, bad, good) in [
        ("IPv4", "10.0.0.300", "10.0.0.1"),
        ("IPv4", "fd00::1", "10.0.0.1"),
        ("IPv4", "", "10.0.0.1"),
        ("IPv6", "10.0.0.1", "fd00::1"),
        ("IPv6", "fd00::1%eth0", "fd00::2"),
    ] {
        let slice = parse(slice_json(
            "api-a",
            address_type,
            http_port(),
            json!([{ "addresses": [bad] }, { "addresses": [good] }]),
        ));
        let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
        let got: Vec<IpAddr> = contribution
            .endpoints()
            .iter()
            .map(|e| e.address().ip())
            .collect();
        assert_eq!(
            got,
            [good.parse::<IpAddr>().unwrap()],
            "{address_type} {bad}"
        );
        assert_eq!(contribution.invalid_addresses(), [bad.to_owned()]);
        assert_eq!(contribution.address_type(), Some(address_type));
    }
}

#[test]
fn null_endpoints_mean_none() {
    // The API server writes `"endpoints": null` for a Service scaled to zero.
    let slice = parse(slice_json("api-1", "IPv4", http_port(), Value::Null));
    let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
    assert_eq!(contribution.port(), Some(8080));
    assert!(contribution.endpoints().is_empty());
}

#[test]
fn zone_hints_apply_only_when_every_ready_endpoint_has_them() {
    let e = |port: u16, zones: &[&str]| {
        Endpoint::new(SocketAddr::from(([10, 0, 0, 1], port)))
            .with_zone_hints(zones.iter().copied())
    };
    let all_hinted = [e(1, &["a"]), e(2, &["b"]), e(3, &["a", "c"])];
    assert!(hints_prefer_zone(&all_hinted, "a"));
    assert!(hints_prefer_zone(&all_hinted, "c"));
    // No endpoint for this zone: the hints do not apply.
    assert!(!hints_prefer_zone(&all_hinted, "d"));
    // One ready endpoint without hints: the controller is not done; hints do not apply.
    let partial = [e(1, &["a"]), e(2, &[])];
    assert!(!hints_prefer_zone(&partial, "a"));
    // Endpoints that are not ready are not looked at.
    let draining = [
        e(1, &["a"]),
        e(2, &[]).with_readiness(Readiness::Terminating),
    ];
    assert!(hints_prefer_zone(&draining, "a"));
    assert!(!hints_prefer_zone(&[], "a"));
}

// ---- merging ----

#[test]
fn a_service_with_250_endpoints_over_3_slices_uses_every_slice() {
    let mut cache = cache();
    cache.apply(&ready_slice("api-a", (0..100).map(ip)));
    cache.apply(&ready_slice("api-b", (100..200).map(ip)));
    cache.apply(&ready_slice("api-c", (200..250).map(ip)));
    let set = cache.endpoint_set();
    assert_eq!(set.len(), 250);
    for i in 0..250 {
        assert!(
            set.contains(&format!("{}:8080", ip(i)).parse().unwrap()),
            "{}",
            ip(i)
        );
    }
    assert_eq!(cache.status(), CacheStatus::Ready);
}

#[test]
fn deleting_a_slice_removes_only_its_endpoints() {
    let mut cache = cache();
    cache.apply(&ready_slice("api-a", (0..3).map(ip)));
    cache.apply(&ready_slice("api-b", (3..5).map(ip)));
    assert!(cache.delete("api-a"));
    assert!(!cache.delete("api-a"));
    let expected: Vec<SocketAddr> = (3..5)
        .map(|i| format!("{}:8080", ip(i)).parse().unwrap())
        .collect();
    assert_eq!(addresses(&cache), expected);
}

#[test]
fn an_endpoint_moving_between_slices_survives_in_either_order() {
    let moving = "10.9.9.9".to_string();
    // Added to the new slice first, then removed from the old one.
    let mut cache = cache();
    cache.apply(&ready_slice("api-a", [ip(0), moving.clone()]));
    cache.apply(&ready_slice("api-b", [ip(1)]));
    cache.apply(&ready_slice("api-b", [ip(1), moving.clone()]));
    assert_eq!(cache.endpoint_set().len(), 3);
    cache.apply(&ready_slice("api-a", [ip(0)]));
    assert!(cache.endpoint_set().contains(&addr("10.9.9.9:8080")));
    assert_eq!(cache.endpoint_set().len(), 3);

    // Removed from the old slice first: gone until the new slice lists it (what the API said).
    let mut cache = cache_with(&[("api-a", &[0, 9]), ("api-b", &[1])]);
    cache.apply(&ready_slice("api-a", [ip(0)]));
    assert_eq!(cache.endpoint_set().len(), 2);
    cache.apply(&ready_slice("api-b", [ip(1), ip(9)]));
    assert_eq!(cache.endpoint_set().len(), 3);
}

fn cache_with(slices: &[(&str, &[usize])]) -> SliceCache {
    let mut cache = cache();
    for (name, members) in slices {
        cache.apply(&ready_slice(name, members.iter().map(|&i| ip(i))));
    }
    cache
}

#[test]
fn duplicates_during_a_rebalance_appear_once() {
    let mut cache = cache();
    cache.apply(&ready_slice("api-a", (0..10).map(ip)));
    cache.apply(&ready_slice("api-b", (5..15).map(ip)));
    let set = cache.endpoint_set();
    assert_eq!(set.len(), 15);
    assert!(set.iter().all(|e| e.readiness() == Readiness::Ready));
}

#[test]
fn a_terminating_duplicate_of_a_ready_endpoint_stays_ready() {
    for (first, second) in [("api-a", "api-b"), ("api-b", "api-a")] {
        let mut cache = cache();
        cache.apply(&ready_slice(first, [ip(0)]));
        cache.apply(&parse(slice_json(
            second,
            "IPv4",
            http_port(),
            json!([endpoint_json(&ip(0), Some(false), Some(true), Some(true))]),
        )));
        let set = cache.endpoint_set();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set[0].readiness(),
            Readiness::Ready,
            "{first} then {second}"
        );
    }
}

#[test]
fn without_ready_endpoints_the_draining_ones_serve() {
    let mut cache = cache();
    cache.apply(&parse(slice_json(
        "api-a",
        "IPv4",
        http_port(),
        json!([
            endpoint_json("10.0.0.1", Some(false), Some(true), Some(true)),
            endpoint_json("10.0.0.2", Some(false), Some(false), Some(false)),
        ]),
    )));
    cache.apply(&parse(slice_json(
        "api-b",
        "IPv4",
        http_port(),
        json!([endpoint_json(
            "10.0.0.3",
            Some(false),
            Some(true),
            Some(true)
        )]),
    )));
    let set = cache.endpoint_set();
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [addr("10.0.0.1:8080"), addr("10.0.0.3:8080")]
    );
    assert!(set.iter().all(|e| e.readiness() == Readiness::Terminating));

    // One ready endpoint anywhere: only ready endpoints.
    cache.apply(&ready_slice("api-c", ["10.0.0.4".to_string()]));
    assert_eq!(addresses(&cache), [addr("10.0.0.4:8080")]);

    // Nothing ready or serving: empty, and still a valid answer.
    let mut cache = cache_with_one(json!([
        endpoint_json("10.0.0.1", Some(false), Some(false), Some(true)),
        endpoint_json("10.0.0.2", Some(false), None, None),
    ]));
    assert!(cache.endpoint_set().is_empty());
    assert_eq!(cache.status(), CacheStatus::Ready);
    cache.delete("api-a");
    assert_eq!(cache.status(), CacheStatus::NoSlices);
}

/// kubernetes issue 135266: a new pod got the IP of a draining one and is not ready yet. The
/// address must not be used, not even as the draining fallback, whichever slice lists which.
#[test]
fn an_unready_address_shadows_its_draining_duplicate() {
    let draining = || endpoint_json("10.0.0.1", Some(false), Some(true), Some(true));
    let unready = || endpoint_json("10.0.0.1", Some(false), Some(false), Some(false));
    let other_draining = || endpoint_json("10.0.0.2", Some(false), Some(true), Some(true));

    // In one slice, in either order.
    for endpoints in [
        json!([draining(), unready(), other_draining()]),
        json!([unready(), draining(), other_draining()]),
    ] {
        let cache = cache_with_one(endpoints);
        assert_eq!(addresses(&cache), [addr("10.0.0.2:8080")]);
    }
    // Across slices, in either order of names and events.
    for (first, second) in [("api-a", "api-b"), ("api-b", "api-a")] {
        let mut cache = cache();
        cache.apply(&parse(slice_json(
            first,
            "IPv4",
            http_port(),
            json!([draining(), other_draining()]),
        )));
        cache.apply(&parse(slice_json(
            second,
            "IPv4",
            http_port(),
            json!([unready()]),
        )));
        assert_eq!(
            addresses(&cache),
            [addr("10.0.0.2:8080")],
            "{first}, {second}"
        );
    }
    // A ready duplicate still wins over an unready one; a terminating, not serving entry
    // (the old pod, gone) does not shadow anything.
    let cache = cache_with_one(json!([
        unready(),
        endpoint_json("10.0.0.1", Some(true), None, None)
    ]));
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);
    let cache = cache_with_one(json!([
        draining(),
        endpoint_json("10.0.0.1", Some(false), Some(false), Some(true))
    ]));
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);

    let contribution = convert_slice(
        &parse(slice_json(
            "api-a",
            "IPv4",
            http_port(),
            json!([unready(), draining()]),
        )),
        "api",
        Some(&http()),
    )
    .unwrap();
    assert_eq!(contribution.unready(), [addr("10.0.0.1:8080")]);
    assert_eq!(contribution.not_serving(), 1);
}

/// kube-proxy lets a non-terminating entry of an address replace a terminating one (kubernetes
/// PR 135593), whatever their readiness. With `publishNotReadyAddresses` every entry is ready,
/// so the old pod's entry is ready and terminating, and the new pod's wins.
#[test]
fn a_terminating_entry_gives_way_to_a_non_terminating_one_of_its_address() {
    let zoned = |mut endpoint: Value, zone: &str| {
        endpoint["zone"] = Value::from(zone);
        endpoint
    };
    // The old pod: ready (published not ready), terminating, in zone "old".
    let old = || {
        zoned(
            endpoint_json("10.0.0.1", Some(true), Some(false), Some(true)),
            "old",
        )
    };
    let other = || endpoint_json("10.0.0.2", Some(true), None, None);
    for (first, second) in [("api-a", "api-b"), ("api-b", "api-a")] {
        // The new pod ready and not terminating: its entry is the one used.
        let mut replaced = cache();
        replaced.apply(&parse(slice_json(
            first,
            "IPv4",
            http_port(),
            json!([old(), other()]),
        )));
        replaced.apply(&parse(slice_json(
            second,
            "IPv4",
            http_port(),
            json!([zoned(
                endpoint_json("10.0.0.1", Some(true), None, None),
                "new"
            )]),
        )));
        let set = replaced.endpoint_set();
        let zones: Vec<(SocketAddr, Option<&str>)> =
            set.iter().map(|e| (e.address(), e.zone())).collect();
        assert_eq!(
            zones,
            [
                (addr("10.0.0.1:8080"), Some("new")),
                (addr("10.0.0.2:8080"), None)
            ],
            "{first}, {second}"
        );

        // The new pod not ready yet: the address is not used at all.
        let mut cache = cache();
        cache.apply(&parse(slice_json(
            first,
            "IPv4",
            http_port(),
            json!([old(), other()]),
        )));
        cache.apply(&parse(slice_json(
            second,
            "IPv4",
            http_port(),
            json!([endpoint_json(
                "10.0.0.1",
                Some(false),
                Some(false),
                Some(false)
            )]),
        )));
        assert_eq!(
            addresses(&cache),
            [addr("10.0.0.2:8080")],
            "{first}, {second}"
        );
    }
    // Alone, the ready and terminating entry is used.
    let cache = cache_with_one(json!([old()]));
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);
    // And when the only ready endpoint gives way, the draining ones are the fallback.
    let cache = cache_with_one(json!([
        old(),
        endpoint_json("10.0.0.1", Some(false), Some(false), Some(false)),
        endpoint_json("10.0.0.3", Some(false), Some(true), Some(true)),
    ]));
    assert_eq!(addresses(&cache), [addr("10.0.0.3:8080")]);
}

#[test]
fn an_endpoint_without_an_address_is_skipped_alone() {
    let slice = parse(slice_json(
        "api-a",
        "IPv4",
        http_port(),
        json!([
            { "addresses": [] },
            { "addresses": ["10.0.0.1"] },
            { "addresses": [], "conditions": { "ready": true } },
            { "addresses": ["10.0.0.2"] },
        ]),
    ));
    let contribution = convert_slice(&slice, "api", Some(&http())).unwrap();
    assert_eq!(contribution.without_address(), 2);
    assert_eq!(
        contribution
            .endpoints()
            .iter()
            .map(Endpoint::address)
            .collect::<Vec<_>>(),
        [addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]
    );
    let mut cache = cache();
    cache.apply(&slice);
    assert_eq!(addresses(&cache).len(), 2);
}

fn in_namespace(namespace: &str, name: &str, ip: &str) -> EndpointSlice {
    let mut value = slice_json(name, "IPv4", http_port(), json!([{ "addresses": [ip] }]));
    value["metadata"]["namespace"] = json!(namespace);
    parse(value)
}

#[test]
fn slices_are_keyed_by_namespace_and_foreign_ones_are_ignored() {
    let mut cache = SliceCache::new("api", Some(http())).in_namespace("prod");
    cache.finish_relist();
    assert!(
        cache
            .apply(&in_namespace("prod", "api-a", "10.0.0.1"))
            .is_changed()
    );
    // Same name in another namespace: ignored, even for deletion.
    let applied = cache.apply(&in_namespace("staging", "api-a", "10.0.0.9"));
    match applied {
        Applied::Unusable { error, changed } => {
            assert!(!changed);
            assert_eq!(
                error.reason(),
                &UnusableReason::OtherNamespace("staging".into())
            );
            assert!(error.to_string().contains("staging"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);
    assert!(!cache.delete_slice(&in_namespace("staging", "api-a", "10.0.0.9")));
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);
    assert_eq!(cache.slice_count(), 1);

    // Without a namespace, the cache keys by namespace and name: two namespaces, two slices.
    let mut cache = self::cache();
    cache.apply(&in_namespace("prod", "api-a", "10.0.0.1"));
    cache.apply(&in_namespace("staging", "api-a", "10.0.0.2"));
    assert_eq!(cache.slice_count(), 2);
    assert!(cache.delete_slice(&in_namespace("staging", "api-a", "10.0.0.2")));
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);
}

fn of_service(name: &str, service: Option<&str>, ip: &str) -> EndpointSlice {
    let mut value = slice_json(name, "IPv4", http_port(), json!([{ "addresses": [ip] }]));
    match service {
        Some(service) => value["metadata"]["labels"][SERVICE_NAME_LABEL] = json!(service),
        None => {
            value["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove(SERVICE_NAME_LABEL);
        }
    }
    parse(value)
}

/// A server that ignores the label selector sends every slice of the namespace: those of other
/// Services are not slices of this one (the status still says it has none), and a slice of
/// ours relabelled to another Service leaves, during a relist too.
#[test]
fn slices_of_other_services_are_not_kept() {
    let mut cache = cache();
    cache.begin_relist();
    let applied = cache.apply(&of_service("web-a", Some("web"), "10.0.0.9"));
    assert!(
        matches!(&applied, Applied::Unusable { error, changed: false }
            if error.reason() == &UnusableReason::OtherService("web".into())),
        "{applied:?}"
    );
    cache.apply(&of_service("unlabelled", None, "10.0.0.8"));
    cache.finish_relist();
    assert_eq!(cache.slice_count(), 0);
    assert_eq!(cache.status(), CacheStatus::NoSlices);

    assert!(
        cache
            .apply(&of_service("api-a", Some("api"), "10.0.0.1"))
            .is_changed()
    );
    assert!(
        cache
            .apply(&of_service("api-b", Some("api"), "10.0.0.2"))
            .is_changed()
    );
    // api-b moves to Service web (a MODIFIED event, as a leaky selector sends it).
    let applied = cache.apply(&of_service("api-b", Some("web"), "10.0.0.2"));
    assert!(applied.is_changed(), "{applied:?}");
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")]);
    assert_eq!(cache.slice_count(), 1);

    // In a relist, a slice listed with another Service's label is gone at the swap.
    cache.begin_relist();
    assert!(
        cache
            .apply(&of_service("api-a", Some("web"), "10.0.0.1"))
            .is_changed()
    );
    assert_eq!(addresses(&cache), [addr("10.0.0.1:8080")], "until the swap");
    assert!(cache.finish_relist());
    assert!(cache.endpoint_set().is_empty());
    assert_eq!(cache.status(), CacheStatus::NoSlices);
}

fn cache_with_one(endpoints: Value) -> SliceCache {
    let mut cache = cache();
    cache.apply(&parse(slice_json("api-a", "IPv4", http_port(), endpoints)));
    cache
}

#[test]
fn dual_stack_services_contribute_both_families() {
    let mut cache = cache();
    cache.apply(&ready_slice("api-v4", ["10.0.0.1".to_string()]));
    cache.apply(&parse(slice_json(
        "api-v6",
        "IPv6",
        http_port(),
        json!([{ "addresses": ["fd00::1"] }]),
    )));
    assert_eq!(
        addresses(&cache),
        [addr("10.0.0.1:8080"), addr("[fd00::1]:8080")]
    );
}

#[test]
fn an_unusable_slice_drops_its_own_contribution_and_nothing_else() {
    let mut cache = cache();
    cache.apply(&ready_slice("api-a", [ip(0)]));
    cache.apply(&ready_slice("api-b", [ip(1)]));
    let applied = cache.apply(&parse(slice_json(
        "api-b",
        "IPv7",
        http_port(),
        json!([{ "addresses": ["10.1.0.2"] }]),
    )));
    let Applied::Unusable { error, changed } = applied else {
        panic!("expected an unusable slice, got {applied:?}");
    };
    assert!(changed);
    assert_eq!(error.slice(), "api-b");
    assert_eq!(addresses(&cache), [addr("10.1.0.1:8080")]);
    assert_eq!(cache.status(), CacheStatus::Ready);
}

#[test]
fn statuses_explain_an_empty_answer() {
    let mut cache = SliceCache::new("api", Some(PortSelector::Name("grpc".into())));
    assert_eq!(cache.status(), CacheStatus::Unlisted);
    cache.finish_relist();
    assert_eq!(cache.status(), CacheStatus::NoSlices);
    cache.apply(&ready_slice("api-a", [ip(0)]));
    assert_eq!(
        cache.status(),
        CacheStatus::NoMatchingPort {
            offered: vec!["http:8080".into()]
        }
    );
    cache.apply(&parse(slice_json(
        "api-a",
        "IPv7",
        http_port(),
        json!([{ "addresses": ["10.1.0.1"] }]),
    )));
    assert_eq!(cache.status(), CacheStatus::NoUsableSlice { slices: 1 });
}

#[test]
fn a_relist_swaps_the_map_at_the_end_only() {
    let mut cache = cache();
    cache.apply(&ready_slice("api-a", (0..3).map(ip)));
    cache.apply(&ready_slice("api-b", (3..6).map(ip)));
    let before = cache.endpoint_set();

    cache.begin_relist();
    assert!(cache.is_relisting());
    // The first page lists only one slice: the current set is untouched.
    cache.apply(&ready_slice("api-b", (3..6).map(ip)));
    assert!(cache.endpoint_set().same_endpoints(&before));
    cache.apply(&ready_slice("api-c", (6..7).map(ip)));
    assert!(cache.endpoint_set().same_endpoints(&before));

    // Done: api-a was not listed (deleted meanwhile), api-c is new.
    assert!(cache.finish_relist());
    assert!(!cache.is_relisting());
    let expected: Vec<SocketAddr> = (3..7)
        .map(|i| format!("{}:8080", ip(i)).parse().unwrap())
        .collect();
    assert_eq!(addresses(&cache), expected);

    // A relist that finds the same slices changes nothing.
    cache.begin_relist();
    cache.apply(&ready_slice("api-b", (3..6).map(ip)));
    cache.apply(&ready_slice("api-c", (6..7).map(ip)));
    assert!(!cache.finish_relist());
}

#[test]
fn unchanged_contributions_are_reported_as_such() {
    let mut cache = cache();
    assert_eq!(
        cache.apply(&ready_slice("api-a", [ip(0)])),
        Applied::Changed
    );
    assert_eq!(
        cache.apply(&ready_slice("api-a", [ip(0)])),
        Applied::Unchanged
    );
    assert_eq!(
        cache.apply(&ready_slice("api-a", [ip(1)])),
        Applied::Changed
    );
}

// ---- properties ----

fn arb_condition() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![Just(None), Just(Some(true)), Just(Some(false))]
}

fn arb_address() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
        (0u16..4).prop_map(|a| format!("fd00::{a}")),
        "[0-9a-f:.]{0,12}",
        Just(String::new()),
    ]
}

fn arb_endpoint() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(arb_address(), 0..3),
        arb_condition(),
        arb_condition(),
        arb_condition(),
        prop::option::of("[a-c]"),
        prop::collection::vec("[a-c]", 0..3),
    )
        .prop_map(|(addresses, ready, serving, terminating, zone, hints)| {
            let mut endpoint = endpoint_json("", ready, serving, terminating);
            endpoint["addresses"] = Value::from(addresses);
            if let Some(zone) = zone {
                endpoint["zone"] = Value::from(zone);
            }
            let hints: Vec<Value> = hints
                .into_iter()
                .map(|name| json!({ "name": name }))
                .collect();
            endpoint["hints"] = json!({ "forZones": hints });
            endpoint
        })
}

fn arb_port() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![Just("http"), Just("grpc"), Just("")]),
        prop::option::of(prop_oneof![
            Just(8080i64),
            Just(9090),
            Just(0),
            Just(-1),
            Just(70000)
        ]),
        prop::option::of(prop_oneof![Just("TCP"), Just("UDP")]),
    )
        .prop_map(|(name, port, protocol)| {
            let mut value = json!({});
            if let Some(name) = name {
                value["name"] = Value::from(name);
            }
            if let Some(port) = port {
                value["port"] = Value::from(port);
            }
            if let Some(protocol) = protocol {
                value["protocol"] = Value::from(protocol);
            }
            value
        })
}

fn arb_slice(name: &'static str) -> impl Strategy<Value = EndpointSlice> {
    (
        prop_oneof![Just("IPv4"), Just("IPv6"), Just("FQDN"), Just("IPv5")],
        prop::option::of(prop::collection::vec(arb_port(), 0..4)),
        prop::collection::vec(arb_endpoint(), 0..6),
        prop_oneof![Just(Some("api")), Just(Some("web")), Just(None)],
    )
        .prop_map(move |(address_type, ports, endpoints, service)| {
            let mut value = slice_json(
                name,
                address_type,
                Value::from(ports),
                Value::from(endpoints),
            );
            match service {
                Some(service) => {
                    value["metadata"]["labels"]["kubernetes.io/service-name"] = Value::from(service)
                }
                None => value["metadata"]["labels"] = json!({}),
            }
            parse(value)
        })
}

fn arb_selector() -> impl Strategy<Value = Option<PortSelector>> {
    prop_oneof![
        Just(None),
        Just(Some(PortSelector::Name("http".into()))),
        Just(Some(PortSelector::Number(9090))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever a slice holds, conversion does not panic, and what it returns obeys the rules.
    #[test]
    fn conversion_never_panics_and_keeps_its_promises(
        slice in arb_slice("api-x"),
        selector in arb_selector(),
    ) {
        match convert_slice(&slice, "api", selector.as_ref()) {
            Ok(contribution) => {
                if contribution.port().is_none() {
                    prop_assert!(contribution.endpoints().is_empty());
                }
                for endpoint in contribution.endpoints() {
                    prop_assert_eq!(Some(endpoint.address().port()), contribution.port());
                    prop_assert!(endpoint.address().port() != 0);
                    match slice.address_type.as_str() {
                        "IPv4" => prop_assert!(endpoint.address().is_ipv4()),
                        "IPv6" => prop_assert!(endpoint.address().is_ipv6()),
                        other => prop_assert!(false, "endpoints from a {} slice", other),
                    }
                }
            }
            Err(error) => prop_assert_eq!(error.slice(), "api-x"),
        }
    }

    /// The merged set depends on the slices, not on the order their events arrived in; and it
    /// is empty only when no slice has a ready or draining endpoint.
    #[test]
    fn the_merge_ignores_event_order(
        a in arb_slice("api-a"),
        b in arb_slice("api-b"),
        c in arb_slice("api-c"),
        selector in arb_selector(),
    ) {
        let slices = [a, b, c];
        let orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0]];
        let sets: Vec<_> = orders
            .iter()
            .map(|order| {
                let mut cache = SliceCache::new("api", selector.clone());
                cache.finish_relist();
                for &i in order {
                    cache.apply(&slices[i]);
                }
                cache.endpoint_set()
            })
            .collect();
        prop_assert!(sets.windows(2).all(|pair| pair[0].same_endpoints(&pair[1])));

        let contributions: Vec<_> = slices
            .iter()
            .filter_map(|slice| convert_slice(slice, "api", selector.as_ref()).ok())
            .collect();
        // The merge rule, written out: a terminating entry of an address that some slice
        // lists as not terminating (ready, or not ready yet) is passed over; of the rest, the
        // ready entries, or when none is ready the draining ones; one per address.
        let entries: Vec<(Endpoint, bool)> = contributions
            .iter()
            .flat_map(|c| c.endpoints_terminating().map(|(e, t)| (e.clone(), t)).collect::<Vec<_>>())
            .collect();
        let not_terminating: Vec<SocketAddr> = entries
            .iter()
            .filter(|(_, t)| !t)
            .map(|(e, _)| e.address())
            .chain(contributions.iter().flat_map(|c| c.unready().to_vec()))
            .collect();
        let kept: Vec<&Endpoint> = entries
            .iter()
            .filter(|(e, t)| !(*t && not_terminating.contains(&e.address())))
            .map(|(e, _)| e)
            .collect();
        let any_ready = kept.iter().any(|e| e.readiness().is_ready());
        let mut expected: Vec<SocketAddr> = kept
            .iter()
            .filter(|e| e.readiness().is_ready() == any_ready)
            .map(|e| e.address())
            .collect();
        expected.sort();
        expected.dedup();
        let got: Vec<SocketAddr> = sets[0].iter().map(Endpoint::address).collect();
        prop_assert_eq!(got, expected);
    }
}
