//! Target parsing: the forms of gRPC's naming document and kuberesolver's README, the mistakes
//! users make, and properties over generated input.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use waypost_discovery::{DnsHost, PortSelector, Target, TargetErrorReason as R, XdsTarget};

fn parse(input: &str) -> Target {
    input
        .parse()
        .unwrap_or_else(|error| panic!("`{input}` should parse: {error}"))
}

fn reason(input: &str) -> R {
    match input.parse::<Target>() {
        Ok(target) => panic!("`{input}` should not parse, got {target:?}"),
        Err(error) => {
            assert_eq!(error.target(), input);
            assert!(error.to_string().contains(input), "{error}");
            error.reason().clone()
        }
    }
}

/// Valid inputs and their canonical form.
const VALID: &[(&str, &str)] = &[
    // gRPC naming: dns:[//authority/]host[:port]
    (
        "dns:///foo.googleapis.com:8080",
        "dns:///foo.googleapis.com:8080",
    ),
    (
        "dns:foo.googleapis.com:8080",
        "dns:///foo.googleapis.com:8080",
    ),
    (
        "dns://8.8.8.8/foo.googleapis.com:8080",
        "dns://8.8.8.8:53/foo.googleapis.com:8080",
    ),
    ("dns://127.0.0.1:5353/api:80", "dns://127.0.0.1:5353/api:80"),
    ("dns://[::1]:5353/api:80", "dns://[::1]:5353/api:80"),
    (
        "DNS:///api.default.svc.cluster.local.:443",
        "dns:///api.default.svc.cluster.local.:443",
    ),
    ("dns:///10.0.0.1:80", "dns:///10.0.0.1:80"),
    ("dns:///[::1]:80", "dns:///[::1]:80"),
    ("dns:///[2001:db8::1]:443", "dns:///[2001:db8::1]:443"),
    // SRV names
    (
        "dns:///_grpc._tcp.api.default.svc.cluster.local",
        "dns:///_grpc._tcp.api.default.svc.cluster.local",
    ),
    ("dns:///_http._tcp.web", "dns:///_http._tcp.web"),
    // kuberesolver
    (
        "kubernetes:///service-name:8080",
        "kubernetes:///service-name:8080",
    ),
    (
        "kubernetes:///service-name:portname",
        "kubernetes:///service-name:portname",
    ),
    (
        "kubernetes:///service-name.namespace:8080",
        "kubernetes:///service-name.namespace:8080",
    ),
    (
        "kubernetes:///service-name.namespace.svc.cluster_name",
        "kubernetes:///service-name.namespace",
    ),
    (
        "kubernetes:///service-name.namespace.svc.cluster_name:8080",
        "kubernetes:///service-name.namespace:8080",
    ),
    (
        "kubernetes:///api.prod.svc.cluster.local:grpc",
        "kubernetes:///api.prod:grpc",
    ),
    (
        "kubernetes://namespace/service-name:8080",
        "kubernetes:///service-name.namespace:8080",
    ),
    (
        "kubernetes://service-name:8080/",
        "kubernetes:///service-name:8080",
    ),
    (
        "kubernetes://service-name.namespace:8080/",
        "kubernetes:///service-name.namespace:8080",
    ),
    (
        "kubernetes://service-name.namespace.svc.cluster_name",
        "kubernetes:///service-name.namespace",
    ),
    (
        "kubernetes://service-name.namespace.svc.cluster_name:8080",
        "kubernetes:///service-name.namespace:8080",
    ),
    ("kubernetes://service-name", "kubernetes:///service-name"),
    ("kubernetes:///service-name", "kubernetes:///service-name"),
    ("kubernetes://ns/svc.ns:80", "kubernetes:///svc.ns:80"),
    // static lists
    ("static:///10.0.0.1:80", "static:///10.0.0.1:80"),
    (
        "static:///10.0.0.1:80,10.0.0.2:80",
        "static:///10.0.0.1:80,10.0.0.2:80",
    ),
    (
        "static:///[::1]:80,127.0.0.1:81",
        "static:///[::1]:80,127.0.0.1:81",
    ),
    ("static:127.0.0.1:80", "static:///127.0.0.1:80"),
    // xDS listeners, named as the control plane names them
    (
        "xds:///api.payments.svc.cluster.local:8080",
        "xds:///api.payments.svc.cluster.local:8080",
    ),
    ("xds:///Listener_1", "xds:///Listener_1"),
    ("XDS:///api", "xds:///api"),
    ("xds:api:80", "xds:///api:80"),
];

#[test]
fn valid_targets_parse_to_their_canonical_form() {
    for (input, canonical) in VALID {
        let target = parse(input);
        assert_eq!(
            target.to_string(),
            *canonical,
            "canonical form of `{input}`"
        );
        assert_eq!(
            parse(canonical),
            target,
            "`{canonical}` parses back to the same target"
        );
    }
}

#[test]
fn parts_are_exposed() {
    let Target::Dns(dns) = parse("dns://10.0.0.10/api.prod.svc.cluster.local:8443") else {
        panic!("not dns")
    };
    assert_eq!(dns.nameserver(), Some("10.0.0.10:53".parse().unwrap()));
    assert_eq!(
        dns.host(),
        &DnsHost::Name("api.prod.svc.cluster.local".into())
    );
    assert_eq!(dns.port(), Some(8443));
    assert!(!dns.is_srv());
    assert_eq!(dns.socket_addr(), None);

    let Target::Dns(literal) = parse("dns:///[::1]:80") else {
        panic!("not dns")
    };
    assert_eq!(
        literal.host(),
        &DnsHost::Ip(IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]))
    );
    assert_eq!(literal.socket_addr(), Some("[::1]:80".parse().unwrap()));

    let Target::Dns(srv) = parse("dns:///_grpc._tcp.api") else {
        panic!("not dns")
    };
    assert!(srv.is_srv());
    assert_eq!(srv.port(), None);

    let Target::Kubernetes(k8s) = parse("kubernetes://payments/api:grpc") else {
        panic!("not kubernetes")
    };
    assert_eq!(k8s.service(), "api");
    assert_eq!(k8s.namespace(), Some("payments"));
    assert_eq!(k8s.port(), Some(&PortSelector::Name("grpc".into())));

    let Target::Kubernetes(k8s) = parse("kubernetes:///api:8080") else {
        panic!("not kubernetes")
    };
    assert_eq!(k8s.namespace(), None);
    assert_eq!(k8s.port(), Some(&PortSelector::Number(8080)));

    let Target::Static(list) = parse("static:///127.0.0.2:2,127.0.0.1:1") else {
        panic!("not static")
    };
    let expected: Vec<SocketAddr> = vec![
        "127.0.0.2:2".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    ];
    assert_eq!(list.addresses(), expected.as_slice());
}

#[test]
fn invalid_targets_name_the_wrong_part() {
    use R::*;
    let cases: Vec<(&str, R)> = vec![
        ("", Empty),
        ("api", MissingScheme),
        ("api:8080", MissingScheme),
        ("10.0.0.1:80", MissingScheme),
        ("[::1]:80", MissingScheme),
        ("unix:/tmp/socket", UnknownScheme("unix".into())),
        ("ipv4:10.0.0.1:80", UnknownScheme("ipv4".into())),
        ("http://api:80", UnknownScheme("http".into())),
        ("dns:///api", MissingPort("api".into())),
        ("dns:///10.0.0.1", MissingPort("10.0.0.1".into())),
        ("dns:///", MissingName("host")),
        ("xds:///", MissingName("xDS listener name")),
        ("xds:", MissingName("xDS listener name")),
        (
            "xds://control-plane/api",
            InvalidAuthority {
                authority: "control-plane".into(),
                detail: "xDS authorities (federation) are not supported: write `xds:///listener`",
            },
        ),
        (
            "xds:///api/v1",
            InvalidCharacter {
                part: "the xDS listener name",
                character: '/',
            },
        ),
        ("dns:", MissingName("host")),
        ("dns:///api:0", InvalidPort("0".into())),
        ("dns:///api:65536", InvalidPort("65536".into())),
        ("dns:///api:http", InvalidPort("http".into())),
        ("dns:///api:", InvalidPort("".into())),
        ("dns:///api:+80", InvalidPort("+80".into())),
        (
            "dns:///_grpc._tcp.api:80",
            PortOnSrvName("_grpc._tcp.api".into()),
        ),
        (
            "dns:///api com:80",
            InvalidCharacter {
                part: "the target",
                character: ' ',
            },
        ),
        (
            "dns:///api:80?x=1",
            InvalidCharacter {
                part: "the target",
                character: '?',
            },
        ),
        (
            "dns:///api:80#frag",
            InvalidCharacter {
                part: "the target",
                character: '#',
            },
        ),
        (
            "dns:///a%20b:80",
            InvalidCharacter {
                part: "the target",
                character: '%',
            },
        ),
        (
            "dns:///::1:80",
            InvalidHostName {
                name: "::1:80".into(),
                detail: "IPv6 addresses go in brackets: `[::1]:port`",
            },
        ),
        (
            "dns:///[::1:80",
            InvalidHostName {
                name: "[::1:80".into(),
                detail: "an IPv6 address opened with `[` is not closed with `]`",
            },
        ),
        (
            "dns:///[not-ip]:80",
            InvalidHostName {
                name: "not-ip".into(),
                detail: "not a valid IPv6 address",
            },
        ),
        (
            "dns:///a..b:80",
            InvalidHostName {
                name: "a..b".into(),
                detail: "empty label (two dots in a row, or a leading dot)",
            },
        ),
        (
            "dns:///-api:80",
            InvalidHostName {
                name: "-api".into(),
                detail: "a label cannot start or end with `-`",
            },
        ),
        (
            "dns:///999.1.1.1:80",
            InvalidHostName {
                name: "999.1.1.1".into(),
                detail: "looks like an IP address but is not a valid one (a name cannot end in a numeric label)",
            },
        ),
        (
            "dns:///a*b:80",
            InvalidHostName {
                name: "a*b".into(),
                detail: "only letters, digits, `-` and `_` are allowed in a label",
            },
        ),
        (
            "dns://api:80",
            InvalidAuthority {
                authority: "api:80".into(),
                detail: "write `dns:///host:port` (three slashes) or `dns://nameserver-ip:port/host:port`",
            },
        ),
        (
            "dns://ns.example.com/api:80",
            InvalidAuthority {
                authority: "ns.example.com".into(),
                detail: "the nameserver must be an IP address with an optional port, such as `10.0.0.10:53`",
            },
        ),
        ("dns://10.0.0.10:0/api:80", InvalidPort("0".into())),
        ("kubernetes:///", MissingName("service name")),
        ("kubernetes:///:8080", MissingName("service name")),
        (
            "kubernetes:///Api:80",
            InvalidServiceName {
                name: "Api".into(),
                detail: "must be lowercase",
            },
        ),
        (
            "kubernetes:///1api:80",
            InvalidServiceName {
                name: "1api".into(),
                detail: "must start with a letter",
            },
        ),
        (
            "kubernetes:///api_v2:80",
            InvalidServiceName {
                name: "api_v2".into(),
                detail: "only lowercase letters, digits and `-` are allowed",
            },
        ),
        (
            "kubernetes:///api.Prod:80",
            InvalidNamespace {
                name: "Prod".into(),
                detail: "must be lowercase",
            },
        ),
        (
            "kubernetes://Prod/api:80",
            InvalidNamespace {
                name: "Prod".into(),
                detail: "must be lowercase",
            },
        ),
        ("kubernetes:///api:0", InvalidPort("0".into())),
        (
            "kubernetes:///api:http_port",
            InvalidPortName {
                name: "http_port".into(),
                detail: "only lowercase letters, digits and `-` are allowed",
            },
        ),
        (
            "kubernetes:///api.prod.cluster.local:80",
            UnexpectedServiceLabels("cluster.local".into()),
        ),
        (
            "kubernetes:///api.prod.svc..x:80",
            UnexpectedServiceLabels("svc..x".into()),
        ),
        (
            "kubernetes://prod/api.staging:80",
            ConflictingNamespace("prod".into(), "staging".into()),
        ),
        (
            "kubernetes://prod/a/b:80",
            InvalidCharacter {
                part: "the service name",
                character: '/',
            },
        ),
        ("static:///", EmptyAddressList),
        ("static:", EmptyAddressList),
        ("static:///api:80", InvalidAddress("api:80".into())),
        ("static:///10.0.0.1", InvalidAddress("10.0.0.1".into())),
        ("static:///10.0.0.1:0", InvalidAddress("10.0.0.1:0".into())),
        ("static:///10.0.0.1:80,", InvalidAddress("".into())),
        ("static:///::1:80", InvalidAddress("::1:80".into())),
        (
            "static://host/10.0.0.1:80",
            InvalidAuthority {
                authority: "host".into(),
                detail: "static targets take no authority: write `static:///ip:port,ip:port`",
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(reason(input), expected, "reason for `{input}`");
    }
}

#[test]
fn an_srv_prefix_without_a_host_fails_at_parse_time() {
    for (input, prefix) in [
        ("dns:///_grpc._tcp.", "_grpc._tcp."),
        ("dns:///_grpc._tcp", "_grpc._tcp."),
        ("dns://10.0.0.10/_http._udp.", "_http._udp."),
    ] {
        let error = input.parse::<Target>().unwrap_err();
        assert_eq!(error.reason(), &R::MissingSrvHost(prefix.into()), "{input}");
        let message = error.to_string();
        assert!(message.contains("missing host"), "{message}");
        assert!(
            message.contains(&format!("dns:///{prefix}HOST")),
            "{message}"
        );
    }
}

#[test]
fn addresses_that_are_no_destination_are_rejected() {
    for (input, address, what) in [
        ("static:///0.0.0.0:80", "0.0.0.0:80", "unspecified"),
        ("static:///10.0.0.1:80,[::]:80", "[::]:80", "unspecified"),
        (
            "static:///255.255.255.255:80",
            "255.255.255.255:80",
            "broadcast",
        ),
        ("static:///224.0.0.1:80", "224.0.0.1:80", "multicast"),
        ("static:///[ff02::1]:80", "[ff02::1]:80", "multicast"),
        ("dns:///0.0.0.0:80", "0.0.0.0:80", "unspecified"),
        ("dns:///[ff02::1]:80", "[ff02::1]:80", "multicast"),
    ] {
        match reason(input) {
            R::UnusableAddress {
                address: written,
                detail,
            } => {
                assert_eq!(written, address, "{input}");
                assert!(detail.contains(what), "{input}: {detail}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }
    use waypost_discovery::StaticTarget;
    assert!(StaticTarget::new(["0.0.0.0:80".parse().unwrap()]).is_none());
    assert!(StaticTarget::new(["239.1.1.1:80".parse().unwrap()]).is_none());
    assert!(StaticTarget::new(["10.0.0.1:80".parse().unwrap()]).is_some());
    // A broadcast address of a subnet is an ordinary address to the parser.
    assert!("static:///10.0.0.255:80".parse::<Target>().is_ok());
}

#[test]
fn a_huge_rejected_target_is_echoed_capped() {
    let huge = format!("static:///{}", "1".repeat(100_000));
    let error = huge.parse::<Target>().unwrap_err();
    assert_eq!(error.target(), huge, "the accessor keeps the input");
    let message = error.to_string();
    assert!(message.len() < 1_000, "{} bytes", message.len());
    assert!(message.contains("bytes in all"), "{message}");
    // Multi-byte characters are cut at a boundary.
    let wide = format!("dns:///{}:80", "é".repeat(50_000));
    let message = wide.parse::<Target>().unwrap_err().to_string();
    assert!(message.len() < 1_000, "{} bytes", message.len());
}

#[test]
fn kubernetes_targets_are_built_without_strings() {
    use waypost_discovery::KubernetesTarget;
    let target = KubernetesTarget::new("api")
        .and_then(|t| t.with_namespace("prod"))
        .and_then(|t| t.with_port(8080))
        .unwrap();
    assert_eq!(target.service(), "api");
    assert_eq!(target.namespace(), Some("prod"));
    assert_eq!(target.port(), Some(&PortSelector::Number(8080)));
    assert_eq!(target, parse_kubernetes("kubernetes:///api.prod:8080"));

    let named = KubernetesTarget::new("api")
        .unwrap()
        .with_port_name("grpc")
        .unwrap();
    assert_eq!(named, parse_kubernetes("kubernetes:///api:grpc"));
    assert_eq!(
        named
            .clone()
            .with_port_selector(PortSelector::Number(9))
            .unwrap(),
        parse_kubernetes("kubernetes:///api:9")
    );

    // The empty port name: built, shown and parsed back.
    let unnamed = KubernetesTarget::new("api")
        .unwrap()
        .with_port_name("")
        .unwrap();
    assert_eq!(unnamed.port(), Some(&PortSelector::Name(String::new())));
    assert_eq!(unnamed.to_string(), "kubernetes:///api:");
    assert_eq!(parse_kubernetes("kubernetes:///api:"), unnamed);

    // Each part is checked as the parser checks it, and the error names it.
    let error = KubernetesTarget::new("Api").unwrap_err();
    assert!(matches!(error.reason(), R::InvalidServiceName { name, .. } if name == "Api"));
    let error = KubernetesTarget::new("").unwrap_err();
    assert_eq!(error.reason(), &R::MissingName("service name"));
    let error = KubernetesTarget::new("api")
        .unwrap()
        .with_namespace("a.b")
        .unwrap_err();
    assert!(matches!(error.reason(), R::InvalidNamespace { name, .. } if name == "a.b"));
    let error = KubernetesTarget::new("api")
        .unwrap()
        .with_port(0)
        .unwrap_err();
    assert_eq!(error.reason(), &R::InvalidPort("0".into()));
    for bad in ["Grpc", "-grpc", "123"] {
        let error = KubernetesTarget::new("api")
            .unwrap()
            .with_port_name(bad)
            .unwrap_err();
        assert!(
            matches!(error.reason(), R::InvalidPortName { name, .. } if name == bad),
            "{bad}: {error}"
        );
    }
}

fn parse_kubernetes(input: &str) -> waypost_discovery::KubernetesTarget {
    input.parse().unwrap()
}

#[test]
fn typed_parsers_reject_other_schemes() {
    use waypost_discovery::{DnsTarget, KubernetesTarget, StaticTarget};
    assert!("dns:///api:80".parse::<DnsTarget>().is_ok());
    assert!("kubernetes:///api:80".parse::<DnsTarget>().is_err());
    assert!("kubernetes:///api:80".parse::<KubernetesTarget>().is_ok());
    assert!("static:///127.0.0.1:1".parse::<KubernetesTarget>().is_err());
    assert!("static:///127.0.0.1:1".parse::<StaticTarget>().is_ok());
    assert!("dns:///api:80".parse::<StaticTarget>().is_err());
    assert!("xds:///api:80".parse::<XdsTarget>().is_ok());
    assert!("dns:///api:80".parse::<XdsTarget>().is_err());
}

#[test]
fn xds_targets_are_built_without_strings() {
    let target = XdsTarget::new("api.payments.svc.cluster.local:8080").unwrap();
    assert_eq!(target.listener(), "api.payments.svc.cluster.local:8080");
    assert_eq!(
        target.to_string(),
        "xds:///api.payments.svc.cluster.local:8080"
    );
    assert_eq!(
        Target::from(target.clone()),
        parse("xds:///api.payments.svc.cluster.local:8080")
    );
    let error = XdsTarget::new("a b").unwrap_err();
    assert_eq!(error.target(), "xds:///a b");
    assert!(matches!(
        error.reason(),
        R::InvalidCharacter { character: ' ', .. }
    ));
    assert!(XdsTarget::new("").is_err());
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?".prop_filter("numeric labels end names", |label| {
        !label.bytes().all(|b| b.is_ascii_digit())
    })
}

fn k8s_label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
}

/// Addresses a connection can go to (not unspecified, broadcast or multicast).
fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), 1..=u16::MAX)
        .prop_filter("a destination", |(ip, _)| {
            !ip.is_unspecified()
                && !ip.is_multicast()
                && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
        })
        .prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn target_string() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::option::of(socket_addr()),
            prop::collection::vec(dns_label(), 1..4),
            any::<bool>(),
            1..=u16::MAX
        )
            .prop_map(|(nameserver, labels, absolute, port)| {
                let authority = nameserver.map(|n| n.to_string()).unwrap_or_default();
                let dot = if absolute { "." } else { "" };
                format!("dns://{authority}/{}{dot}:{port}", labels.join("."))
            }),
        (socket_addr()).prop_map(|address| format!("dns:///{address}")),
        (
            dns_label(),
            dns_label(),
            prop::collection::vec(dns_label(), 1..3)
        )
            .prop_map(|(service, proto, name)| format!(
                "dns:///_{service}._{proto}.{}",
                name.join(".")
            )),
        (
            k8s_label(),
            prop::option::of(k8s_label()),
            prop::option::of(prop_oneof![
                (1..=u16::MAX).prop_map(|port| port.to_string()),
                k8s_label(),
            ])
        )
            .prop_map(|(service, namespace, port)| {
                let namespace = namespace.map(|ns| format!(".{ns}")).unwrap_or_default();
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("kubernetes:///{service}{namespace}{port}")
            }),
        (k8s_label(), k8s_label(), 1..=u16::MAX).prop_map(|(namespace, service, port)| format!(
            "kubernetes://{namespace}/{service}:{port}"
        )),
        prop::collection::vec(socket_addr(), 1..5).prop_map(|addresses| {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            format!("static:///{}", list.join(","))
        }),
        ("[A-Za-z0-9._:~-]{1,40}").prop_map(|listener| format!("xds:///{listener}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn display_then_parse_round_trips(input in target_string()) {
        let target: Target = input.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let shown = target.to_string();
        let again: Target = shown.parse().map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?;
        prop_assert_eq!(&again, &target);
        prop_assert_eq!(again.to_string(), shown);
    }

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>()) {
        if let Ok(target) = input.parse::<Target>() {
            let shown = target.to_string();
            prop_assert_eq!(shown.parse::<Target>().ok(), Some(target));
        }
    }

    #[test]
    fn target_like_strings_never_panic(
        input in "(dns|kubernetes|static|DNS|x)?:?/{0,4}[a-z0-9._:\\[\\],/-]{0,40}"
    ) {
        if let Ok(target) = input.parse::<Target>() {
            let shown = target.to_string();
            prop_assert_eq!(shown.parse::<Target>().ok(), Some(target));
        }
    }
}
