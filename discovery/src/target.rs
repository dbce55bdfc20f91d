//! Target strings: what users put in configuration to name a service.
//!
//! A [`Target`] says where endpoints come from. The forms follow gRPC's naming document and the
//! Kubernetes resolver used by Go gRPC clients (kuberesolver), so existing configuration keeps
//! working:
//!
//! | form | meaning |
//! |------|---------|
//! | `dns:///host:port` | A and AAAA records of `host`, each with `port` |
//! | `dns:///_grpc._tcp.host` | SRV records (ports, priorities and weights from DNS) |
//! | `dns://10.0.0.10:53/host:port` | the same, asking this nameserver instead of the system's |
//! | `dns:///10.0.0.1:80`, `dns:///[::1]:80` | an IP literal, never sent to a resolver |
//! | `kubernetes:///service:port` | the EndpointSlices of `service` in the client's namespace |
//! | `kubernetes:///service.namespace:portname` | a named port, in another namespace |
//! | `kubernetes:///service.namespace.svc.cluster.local:port` | the same; the cluster domain is ignored |
//! | `kubernetes://namespace/service:port` | kuberesolver's form with the namespace as authority |
//! | `static:///10.0.0.1:80,[fd00::1]:80` | a fixed list of addresses |
//! | `xds:///api.payments.svc.cluster.local:8080` | the xDS listener of that name, from the bootstrap's control plane |
//!
//! `dns:host:port` (no slashes) is accepted as in gRPC. [`Display`](std::fmt::Display) writes the
//! canonical form, and parsing what it writes gives back an equal target.
//!
//! Errors are [`InvalidTarget`] values whose [`reason`](InvalidTarget::reason) names the part
//! that is wrong:
//!
//! ```
//! use waypost_discovery::{Target, TargetErrorReason};
//!
//! let target: Target = "kubernetes://payments/api:grpc".parse().unwrap();
//! assert_eq!(target.to_string(), "kubernetes:///api.payments:grpc");
//!
//! let error = "dns:///api".parse::<Target>().unwrap_err();
//! assert_eq!(error.reason(), &TargetErrorReason::MissingPort("api".into()));
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::error::{InvalidTarget, TargetErrorReason as Reason};

/// Where a target's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `dns:` — DNS A/AAAA or SRV records.
    Dns(DnsTarget),
    /// `kubernetes:` — the EndpointSlices of a Service.
    Kubernetes(KubernetesTarget),
    /// `static:` — a fixed list of addresses.
    Static(StaticTarget),
    /// `xds:` — the endpoints an xDS control plane gives for a listener, as gRPC's xDS naming.
    Xds(XdsTarget),
}

impl Target {
    /// The scheme: `"dns"`, `"kubernetes"`, `"static"` or `"xds"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Target::Dns(_) => "dns",
            Target::Kubernetes(_) => "kubernetes",
            Target::Static(_) => "static",
            Target::Xds(_) => "xds",
        }
    }
}

/// The host part of a [`DnsTarget`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsHost {
    /// An IP literal: resolved without asking DNS.
    Ip(IpAddr),
    /// A name to look up; a trailing dot (absolute name) is kept.
    Name(String),
}

impl fmt::Display for DnsHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            DnsHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            DnsHost::Name(name) => f.write_str(name),
        }
    }
}

/// A `dns:` target: an address lookup with a port, or an SRV lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsTarget {
    nameserver: Option<SocketAddr>,
    host: DnsHost,
    port: Option<u16>,
}

impl DnsTarget {
    /// The nameserver named in the target's authority, if any.
    pub fn nameserver(&self) -> Option<SocketAddr> {
        self.nameserver
    }

    /// The host: an IP literal or a name.
    pub fn host(&self) -> &DnsHost {
        &self.host
    }

    /// The port for address lookups; `None` for SRV lookups.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `true` when the target asks for SRV records (`_service._proto.name`).
    pub fn is_srv(&self) -> bool {
        self.port.is_none()
    }

    /// The address, when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match (&self.host, self.port) {
            (DnsHost::Ip(ip), Some(port)) => Some(SocketAddr::new(*ip, port)),
            _ => None,
        }
    }
}

impl fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dns://")?;
        if let Some(nameserver) = self.nameserver {
            write!(f, "{nameserver}")?;
        }
        write!(f, "/{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Which port of a Kubernetes Service a target uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortSelector {
    /// A port number, matched against the EndpointSlice's ports (which carry target ports).
    Number(u16),
    /// A port name, as in the Service and its EndpointSlices.
    Name(String),
}

impl fmt::Display for PortSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSelector::Number(number) => write!(f, "{number}"),
            PortSelector::Name(name) => f.write_str(name),
        }
    }
}

/// A `kubernetes:` target: a Service, its namespace and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesTarget {
    service: String,
    namespace: Option<String>,
    port: Option<PortSelector>,
}

impl KubernetesTarget {
    /// A target for Service `service` (a DNS-1035 label), in the source's default namespace and
    /// with no port: a Service with one port uses it. Add the rest with
    /// [`with_namespace`](Self::with_namespace), [`with_port`](Self::with_port) and
    /// [`with_port_name`](Self::with_port_name); nothing is formatted and parsed again.
    ///
    /// ```
    /// use waypost_discovery::{KubernetesTarget, PortSelector};
    ///
    /// let target = KubernetesTarget::new("api")?
    ///     .with_namespace("payments")?
    ///     .with_port_name("grpc")?;
    /// assert_eq!(target.to_string(), "kubernetes:///api.payments:grpc");
    /// assert_eq!(target, "kubernetes:///api.payments:grpc".parse()?);
    ///
    /// // The unnamed port of a Service, as its EndpointSlices write it.
    /// let unnamed = KubernetesTarget::new("api")?.with_port_name("")?;
    /// assert_eq!(unnamed.port(), Some(&PortSelector::Name(String::new())));
    /// assert_eq!(unnamed, unnamed.to_string().parse()?);
    ///
    /// assert!(KubernetesTarget::new("API").is_err());
    /// # Ok::<(), waypost_discovery::InvalidTarget>(())
    /// ```
    pub fn new(service: impl Into<String>) -> Result<Self, InvalidTarget> {
        let service = service.into();
        validate_service(&service)
            .map_err(|reason| InvalidTarget::new(&format!("kubernetes:///{service}"), reason))?;
        Ok(KubernetesTarget {
            service,
            namespace: None,
            port: None,
        })
    }

    /// The same target in `namespace` (a DNS-1123 label).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Result<Self, InvalidTarget> {
        let namespace = namespace.into();
        if let Err(reason) = validate_namespace(&namespace) {
            self.namespace = Some(namespace);
            return Err(InvalidTarget::new(&self.to_string(), reason));
        }
        self.namespace = Some(namespace);
        Ok(self)
    }

    /// The same target on port number `port` (matched against the EndpointSlices' ports, which
    /// carry the pods' target ports); 0 is an error.
    pub fn with_port(mut self, port: u16) -> Result<Self, InvalidTarget> {
        self.port = Some(PortSelector::Number(port));
        if port == 0 {
            return Err(InvalidTarget::new(
                &self.to_string(),
                Reason::InvalidPort("0".into()),
            ));
        }
        Ok(self)
    }

    /// The same target on the port named `name` (a DNS-1123 label, or `""` for a Service's
    /// unnamed port).
    pub fn with_port_name(mut self, name: impl Into<String>) -> Result<Self, InvalidTarget> {
        let name = name.into();
        let checked = if name.is_empty() {
            Ok(())
        } else if name.bytes().all(|b| b.is_ascii_digit()) {
            Err("a port name cannot be all digits: use `with_port` for a number")
        } else {
            validate_label(&name, false)
        }
        .map_err(|detail| Reason::InvalidPortName {
            name: name.clone(),
            detail,
        });
        self.port = Some(PortSelector::Name(name));
        match checked {
            Ok(()) => Ok(self),
            Err(reason) => Err(InvalidTarget::new(&self.to_string(), reason)),
        }
    }

    /// The same target with `port` as given, checked as [`with_port`](Self::with_port) and
    /// [`with_port_name`](Self::with_port_name) check it.
    pub fn with_port_selector(self, port: PortSelector) -> Result<Self, InvalidTarget> {
        match port {
            PortSelector::Number(number) => self.with_port(number),
            PortSelector::Name(name) => self.with_port_name(name),
        }
    }

    /// The Service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The namespace, when the target names one. Sources default to the pod's own namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The port, when the target names one. Without it a Service with exactly one port is used.
    pub fn port(&self) -> Option<&PortSelector> {
        self.port.as_ref()
    }
}

impl fmt::Display for KubernetesTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kubernetes:///{}", self.service)?;
        if let Some(namespace) = &self.namespace {
            write!(f, ".{namespace}")?;
        }
        if let Some(port) = &self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// A `static:` target: a fixed, non-empty list of addresses, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaticTarget {
    addresses: Vec<SocketAddr>,
}

impl StaticTarget {
    /// A static target over `addresses`; `None` when the list is empty, holds port 0, or an
    /// address that cannot be a destination (unspecified, broadcast, multicast).
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Option<Self> {
        let addresses: Vec<SocketAddr> = addresses.into_iter().collect();
        if addresses.is_empty()
            || addresses
                .iter()
                .any(|address| address.port() == 0 || check_destination(address.ip(), "").is_err())
        {
            return None;
        }
        Some(StaticTarget { addresses })
    }

    /// The addresses, in the order given.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

impl fmt::Display for StaticTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("static:///")?;
        for (i, address) in self.addresses.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

/// An `xds:` target: the name of a listener on the xDS control plane (gRPC's `xds:///NAME`).
/// Istio's proxyless mode names listeners `service.namespace.svc.cluster.local:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XdsTarget {
    listener: String,
}

impl XdsTarget {
    /// A target for the listener `name`: not empty, without `/`, whitespace or the characters
    /// no target may hold.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidTarget> {
        let name = name.into();
        let target = format!("xds:///{name}");
        match parse(&target) {
            Ok(Target::Xds(parsed)) => Ok(parsed),
            Ok(_) => unreachable!("an `xds:` string parses as an xDS target"),
            Err(reason) => Err(InvalidTarget::new(&target, reason)),
        }
    }

    /// The listener's name, which is also the target's default authority.
    pub fn listener(&self) -> &str {
        &self.listener
    }
}

impl fmt::Display for XdsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "xds:///{}", self.listener)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dns(target) => target.fmt(f),
            Target::Kubernetes(target) => target.fmt(f),
            Target::Static(target) => target.fmt(f),
            Target::Xds(target) => target.fmt(f),
        }
    }
}

impl FromStr for Target {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, InvalidTarget> {
        parse(input).map_err(|reason| InvalidTarget::new(input, reason))
    }
}

impl FromStr for DnsTarget {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, InvalidTarget> {
        match input.parse()? {
            Target::Dns(target) => Ok(target),
            other => Err(InvalidTarget::new(
                input,
                Reason::UnknownScheme(other.scheme().to_owned()),
            )),
        }
    }
}

impl FromStr for KubernetesTarget {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, InvalidTarget> {
        match input.parse()? {
            Target::Kubernetes(target) => Ok(target),
            other => Err(InvalidTarget::new(
                input,
                Reason::UnknownScheme(other.scheme().to_owned()),
            )),
        }
    }
}

impl FromStr for StaticTarget {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, InvalidTarget> {
        match input.parse()? {
            Target::Static(target) => Ok(target),
            other => Err(InvalidTarget::new(
                input,
                Reason::UnknownScheme(other.scheme().to_owned()),
            )),
        }
    }
}

impl FromStr for XdsTarget {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, InvalidTarget> {
        match input.parse()? {
            Target::Xds(target) => Ok(target),
            other => Err(InvalidTarget::new(
                input,
                Reason::UnknownScheme(other.scheme().to_owned()),
            )),
        }
    }
}

impl From<XdsTarget> for Target {
    fn from(target: XdsTarget) -> Self {
        Target::Xds(target)
    }
}

impl From<DnsTarget> for Target {
    fn from(target: DnsTarget) -> Self {
        Target::Dns(target)
    }
}

impl From<KubernetesTarget> for Target {
    fn from(target: KubernetesTarget) -> Self {
        Target::Kubernetes(target)
    }
}

impl From<StaticTarget> for Target {
    fn from(target: StaticTarget) -> Self {
        Target::Static(target)
    }
}

fn parse(input: &str) -> Result<Target, Reason> {
    if input.is_empty() {
        return Err(Reason::Empty);
    }
    if let Some(character) = input
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '@'))
    {
        return Err(Reason::InvalidCharacter {
            part: "the target",
            character,
        });
    }
    let Some((scheme, rest)) = input.split_once(':') else {
        return Err(Reason::MissingScheme);
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => match after.split_once('/') {
            Some((authority, path)) => (Some(authority), Some(path)),
            None => (Some(after), None),
        },
        None => (None, Some(rest)),
    };
    match scheme.to_ascii_lowercase().as_str() {
        "dns" => parse_dns(authority, path).map(Target::Dns),
        "kubernetes" => parse_kubernetes(authority, path).map(Target::Kubernetes),
        "static" => parse_static(authority, path).map(Target::Static),
        "xds" => parse_xds(authority, path).map(Target::Xds),
        _ if looks_like_host_port(scheme, rest) => Err(Reason::MissingScheme),
        _ => Err(Reason::UnknownScheme(scheme.to_owned())),
    }
}

/// `10.0.0.1:80`, `[::1]:80` or `api:8080` given without a scheme.
fn looks_like_host_port(scheme: &str, rest: &str) -> bool {
    let valid_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    !valid_scheme || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_xds(authority: Option<&str>, path: Option<&str>) -> Result<XdsTarget, Reason> {
    if let Some(authority) = authority.filter(|authority| !authority.is_empty()) {
        return Err(Reason::InvalidAuthority {
            authority: authority.to_owned(),
            detail: "xDS authorities (federation) are not supported: write `xds:///listener`",
        });
    }
    let listener = path.unwrap_or_default();
    if listener.is_empty() {
        return Err(Reason::MissingName("xDS listener name"));
    }
    if let Some(character) = listener.chars().find(|&c| c == '/') {
        return Err(Reason::InvalidCharacter {
            part: "the xDS listener name",
            character,
        });
    }
    Ok(XdsTarget {
        listener: listener.to_owned(),
    })
}

fn parse_dns(authority: Option<&str>, path: Option<&str>) -> Result<DnsTarget, Reason> {
    let nameserver = match authority {
        None | Some("") => None,
        Some(authority) => Some(parse_nameserver(authority, path.is_none())?),
    };
    let path = path.unwrap_or_default();
    if path.is_empty() {
        return Err(Reason::MissingName("host"));
    }
    let (host, port) = split_host_port(path)?;
    let port = port.map(parse_port).transpose()?;
    if let Some(prefix) = srv_prefix_without_host(host) {
        return Err(Reason::MissingSrvHost(prefix));
    }
    let host = parse_dns_host(host)?;
    if let DnsHost::Ip(ip) = &host {
        check_destination(*ip, path)?;
    }
    if let DnsHost::Name(name) = &host {
        if is_srv_name(name) {
            if port.is_some() {
                return Err(Reason::PortOnSrvName(name.clone()));
            }
        } else if port.is_none() {
            return Err(Reason::MissingPort(name.clone()));
        }
    } else if port.is_none() {
        return Err(Reason::MissingPort(host.to_string()));
    }
    Ok(DnsTarget {
        nameserver,
        host,
        port,
    })
}

fn parse_nameserver(authority: &str, no_path: bool) -> Result<SocketAddr, Reason> {
    let invalid = |detail| Reason::InvalidAuthority {
        authority: authority.to_owned(),
        detail,
    };
    let (host, port) = split_host_port(authority).map_err(|_| {
        invalid(
            "the nameserver must be an IP address with an optional port, such as `10.0.0.10:53`",
        )
    })?;
    let ip: IpAddr = host.parse().map_err(|_| {
        if no_path {
            invalid("write `dns:///host:port` (three slashes) or `dns://nameserver-ip:port/host:port`")
        } else {
            invalid("the nameserver must be an IP address with an optional port, such as `10.0.0.10:53`")
        }
    })?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => 53,
    };
    if no_path {
        return Err(Reason::MissingName("host"));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Splits `host[:port]` and `[v6][:port]`; the port is returned unparsed.
fn split_host_port(input: &str) -> Result<(&str, Option<&str>), Reason> {
    if let Some(after_bracket) = input.strip_prefix('[') {
        let Some((ip, rest)) = after_bracket.split_once(']') else {
            return Err(Reason::InvalidHostName {
                name: input.to_owned(),
                detail: "an IPv6 address opened with `[` is not closed with `]`",
            });
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Reason::InvalidHostName {
                name: ip.to_owned(),
                detail: "not a valid IPv6 address",
            });
        }
        return match rest {
            "" => Ok((ip, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((ip, Some(port))),
                None => Err(Reason::InvalidHostName {
                    name: input.to_owned(),
                    detail: "expected `:port` after the IPv6 address",
                }),
            },
        };
    }
    match input.split_once(':') {
        None => Ok((input, None)),
        Some((host, port)) if !port.contains(':') => Ok((host, Some(port))),
        Some(_) => Err(Reason::InvalidHostName {
            name: input.to_owned(),
            detail: "IPv6 addresses go in brackets: `[::1]:port`",
        }),
    }
}

fn parse_port(port: &str) -> Result<u16, Reason> {
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(number) if digits && number != 0 => Ok(number),
        _ => Err(Reason::InvalidPort(port.to_owned())),
    }
}

fn parse_dns_host(host: &str) -> Result<DnsHost, Reason> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(DnsHost::Ip(ip));
    }
    let invalid = |detail| Reason::InvalidHostName {
        name: host.to_owned(),
        detail,
    };
    if host.is_empty() {
        return Err(Reason::MissingName("host"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(invalid("a name cannot be only `.`"));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label (two dots in a row, or a leading dot)"));
        }
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "only letters, digits, `-` and `_` are allowed in a label",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot start or end with `-`"));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "looks like an IP address but is not a valid one (a name cannot end in a numeric label)",
        ));
    }
    Ok(DnsHost::Name(host.to_owned()))
}

/// `_service._proto` or `_service._proto.` with no host after it: the prefix, with its dot.
fn srv_prefix_without_host(host: &str) -> Option<String> {
    let mut labels = host.split('.');
    match (labels.next(), labels.next(), labels.next(), labels.next()) {
        (Some(service), Some(proto), None | Some(""), None)
            if service.len() > 1
                && proto.len() > 1
                && service.starts_with('_')
                && proto.starts_with('_') =>
        {
            Some(format!("{service}.{proto}."))
        }
        _ => None,
    }
}

/// `false` for addresses that no connection can go to: `0.0.0.0` and `::` mean "any" (and
/// reach the local host on some systems), broadcast and multicast are not for TCP.
pub(crate) fn is_destination(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()))
}

/// Rejects addresses that no connection can go to (see [`is_destination`]).
fn check_destination(ip: IpAddr, written: &str) -> Result<(), Reason> {
    if is_destination(ip) {
        return Ok(());
    }
    let detail = if ip.is_unspecified() {
        "the unspecified address (`0.0.0.0`, `::`) means \"any\" and is not a destination"
    } else if ip.is_multicast() {
        "a multicast address is not a destination for TCP"
    } else {
        "the broadcast address is not a destination for TCP"
    };
    Err(Reason::UnusableAddress {
        address: written.to_owned(),
        detail,
    })
}

fn is_srv_name(name: &str) -> bool {
    let mut labels = name.split('.');
    matches!(
        (labels.next(), labels.next(), labels.next()),
        (Some(service), Some(proto), Some(_)) if service.starts_with('_') && proto.starts_with('_')
    )
}

fn parse_kubernetes(
    authority: Option<&str>,
    path: Option<&str>,
) -> Result<KubernetesTarget, Reason> {
    let (authority_namespace, endpoint) = match (authority, path) {
        // kubernetes:///service.namespace:port, kubernetes:service:port
        (None | Some(""), Some(endpoint)) => (None, endpoint),
        // kubernetes://service.namespace:port and kubernetes://service.namespace:port/
        (Some(endpoint), None | Some("")) => (None, endpoint),
        // kubernetes://namespace/service:port
        (Some(namespace), Some(endpoint)) => {
            validate_namespace(namespace)?;
            (Some(namespace), endpoint)
        }
        (None, None) => (None, ""),
    };
    if endpoint.contains('/') {
        return Err(Reason::InvalidCharacter {
            part: "the service name",
            character: '/',
        });
    }
    let (name, port) = match endpoint.split_once(':') {
        Some((name, port)) => (name, Some(parse_port_selector(port)?)),
        None => (endpoint, None),
    };
    if name.is_empty() {
        return Err(Reason::MissingName("service name"));
    }
    let mut labels = name.split('.');
    let service = labels.next().unwrap_or_default();
    validate_service(service)?;
    let path_namespace = labels.next();
    if let Some(namespace) = path_namespace {
        validate_namespace(namespace)?;
    }
    let rest: Vec<&str> = labels.collect();
    if !rest.is_empty() && (rest[0] != "svc" || rest[1..].iter().any(|label| label.is_empty())) {
        return Err(Reason::UnexpectedServiceLabels(rest.join(".")));
    }
    let namespace = match (authority_namespace, path_namespace) {
        (Some(a), Some(b)) if a != b => {
            return Err(Reason::ConflictingNamespace(a.to_owned(), b.to_owned()));
        }
        (a, b) => a.or(b).map(str::to_owned),
    };
    Ok(KubernetesTarget {
        service: service.to_owned(),
        namespace,
        port,
    })
}

fn parse_port_selector(port: &str) -> Result<PortSelector, Reason> {
    if port.is_empty() {
        // `svc:` names the unnamed port (a Service's only port may have the empty name).
        return Ok(PortSelector::Name(String::new()));
    }
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return parse_port(port).map(PortSelector::Number);
    }
    validate_label(port, false).map_err(|detail| Reason::InvalidPortName {
        name: port.to_owned(),
        detail,
    })?;
    Ok(PortSelector::Name(port.to_owned()))
}

fn validate_service(name: &str) -> Result<(), Reason> {
    if name.is_empty() {
        return Err(Reason::MissingName("service name"));
    }
    validate_label(name, true).map_err(|detail| Reason::InvalidServiceName {
        name: name.to_owned(),
        detail,
    })
}

fn validate_namespace(name: &str) -> Result<(), Reason> {
    validate_label(name, false).map_err(|detail| Reason::InvalidNamespace {
        name: name.to_owned(),
        detail,
    })
}

/// DNS-1035 (`must_start_with_letter`) or DNS-1123 label rules, as Kubernetes applies them.
fn validate_label(label: &str, must_start_with_letter: bool) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty");
    }
    if label.len() > 63 {
        return Err("longer than 63 characters");
    }
    if label.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lowercase");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and `-` are allowed");
    }
    if must_start_with_letter && !label.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a letter");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("cannot start or end with `-`");
    }
    Ok(())
}

fn parse_static(authority: Option<&str>, path: Option<&str>) -> Result<StaticTarget, Reason> {
    match (authority, path) {
        (None | Some(""), Some(list)) => {
            if list.is_empty() {
                return Err(Reason::EmptyAddressList);
            }
            let addresses = list
                .split(',')
                .map(|entry| match entry.parse::<SocketAddr>() {
                    Ok(address) if address.port() != 0 => {
                        check_destination(address.ip(), entry)?;
                        Ok(address)
                    }
                    _ => Err(Reason::InvalidAddress(entry.to_owned())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StaticTarget { addresses })
        }
        (Some(authority), _) => Err(Reason::InvalidAuthority {
            authority: authority.to_owned(),
            detail: "static targets take no authority: write `static:///ip:port,ip:port`",
        }),
        (None, None) => Err(Reason::EmptyAddressList),
    }
}

impl FromStr for DnsHost {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, InvalidTarget> {
        parse_dns_host(input).map_err(|reason| InvalidTarget::new(input, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_needs_two_underscore_labels_and_a_name() {
        assert!(is_srv_name("_grpc._tcp.api"));
        assert!(!is_srv_name("_grpc._tcp"));
        assert!(!is_srv_name("_grpc.tcp.api"));
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        assert!(validate_label("a-1", true).is_ok());
        assert!(validate_label("1a", true).is_err());
        assert!(validate_label("1a", false).is_ok());
        assert!(validate_label(&"a".repeat(64), false).is_err());
    }
}
