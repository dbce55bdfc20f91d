//! From one EndpointSlice to the endpoints it contributes: pure functions, no I/O.
//!
//! A Service's endpoints are spread over several EndpointSlices (at most 100 endpoints each by
//! default), and each slice is read on its own: [`convert_slice`] turns one slice into the
//! [`SliceEndpoints`] it contributes for one target, and the
//! [`SliceCache`](super::SliceCache) merges the contributions of all slices. The rules follow
//! kube-proxy, the reference consumer of the API:
//!
//! - **Port.** A target's port selects one port of the slice: by name (`:grpc`), or by number
//!   (`:8080`, matched against `ports[].port`, which carries the *target* port of the pods, not
//!   the Service port). Without a port in the target, a slice with exactly one port uses it.
//!   Ports with a missing name or number are ignored, as kube-proxy ignores them. Only TCP
//!   ports (`protocol` missing means TCP) are selected: every client of waypost speaks TCP, and
//!   kube-proxy keys a slice's ports by name *and* protocol, so a UDP or SCTP port of the same
//!   name or number belongs to another Service port, not to the one a TCP client reaches.
//! - **Address.** An endpoint is its first address (`addresses[0]`); IPv4 and IPv6 slices both
//!   count, so a dual-stack Service contributes both families. `FQDN` slices are deprecated and
//!   carry names, not addresses: they are skipped, without a warning.
//! - **Conditions.** `ready` missing means ready, `serving` missing means serving (as the API
//!   documents it and kube-proxy reads it), `terminating` missing means not terminating. A
//!   ready endpoint is [`Readiness::Ready`]; one that is serving and terminating is
//!   [`Readiness::Terminating`] (used by the merge only when nothing is ready: kube-proxy's
//!   graceful-drain fallback); any other endpoint cannot take traffic and is left out. The
//!   address of one that is neither ready nor terminating is remembered
//!   ([`SliceEndpoints::unready`]), and so is which ready endpoints are also terminating
//!   ([`SliceEndpoints::endpoints_terminating`]). An address that some slice lists as not
//!   terminating is taken from that entry alone: the merge passes over every terminating entry
//!   of it, ready or draining (kube-proxy since kubernetes PR 135593: the address usually
//!   belongs to a new pod that got the IP of a draining one).
//! - **Endpoints without an address**, or whose address is not an IP of the slice's family
//!   (`10.0.0.300`, an IPv6 address in an `IPv4` slice), break the API's rules; each is skipped
//!   alone ([`SliceEndpoints::without_address`], [`SliceEndpoints::invalid_addresses`]; the
//!   source logs the addresses) and the rest of the slice is kept: one malformed address does
//!   not cost the slice's valid endpoints (kube-proxy relies on the API's validation here, and
//!   drops only a whole slice of the other address type).
//! - **Topology.** Zone, node, hostname, zone hints (`hints.forZones`) and node hints
//!   (`hints.forNodes`, written for `trafficDistribution: PreferSameNode`) are carried on every
//!   endpoint. The source does not filter by hints; the balancer does, in its hints mode, with
//!   the rule in [`topology`](crate::topology) (kube-proxy's).
//!
//! A slice that breaks the API's own rules as a whole (no usable port, an unknown address type,
//! a missing or foreign `kubernetes.io/service-name` label) contributes nothing: the result is an [`UnusableSlice`]
//! that names the slice and says what is wrong, and the caller logs it and keeps every other
//! slice.
//!
//! ```
//! use k8s_openapi::api::discovery::v1::EndpointSlice;
//! use waypost_discovery::PortSelector;
//! use waypost_discovery::source::kubernetes::convert_slice;
//!
//! let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
//!     "metadata": {
//!         "name": "api-x1",
//!         "labels": { "kubernetes.io/service-name": "api" }
//!     },
//!     "addressType": "IPv4",
//!     "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
//!     "endpoints": [
//!         { "addresses": ["10.0.0.1"], "zone": "a" },
//!         { "addresses": ["10.0.0.2"], "conditions": { "ready": false } }
//!     ]
//! }))
//! .unwrap();
//!
//! let port = PortSelector::Name("http".into());
//! let contribution = convert_slice(&slice, "api", Some(&port)).unwrap();
//! assert_eq!(contribution.port(), Some(8080));
//! // The unready endpoint is neither ready nor serving-while-terminating: left out.
//! assert_eq!(contribution.endpoints().len(), 1);
//! assert_eq!(contribution.endpoints()[0].zone(), Some("a"));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointPort, EndpointSlice};

use crate::endpoint::{Endpoint, Readiness};
use crate::target::PortSelector;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What one EndpointSlice contributes to a target: the port it selected and the endpoints that
/// can take traffic, each [`Ready`](Readiness::Ready) or
/// [`Terminating`](Readiness::Terminating) (serving while it shuts down).
///
/// Made by [`convert_slice`]. Equal contributions mean an update of the slice changed nothing
/// the target sees (labels, annotations, an unready endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoints {
    port: Option<u16>,
    endpoints: Vec<Endpoint>,
    not_serving: usize,
    unready: Vec<SocketAddr>,
    /// Positions in `endpoints`, ascending, of the ready endpoints that are also terminating
    /// (a Service with `publishNotReadyAddresses`, or a pod whose readiness outlives its
    /// deletion): the merge passes them over when another slice lists the address as not
    /// terminating.
    ready_terminating: Vec<u32>,
    without_address: usize,
    /// The first address of each endpoint skipped because it is not an IP of the slice's
    /// family, as written.
    invalid_addresses: Vec<String>,
    offered_ports: Vec<String>,
    fqdn: bool,
    /// Neither ports nor endpoints: the EndpointSlice controller's placeholder for a Service
    /// without endpoints.
    placeholder: bool,
    family: Option<Family>,
}

impl SliceEndpoints {
    /// A slice of `family` that contributes no endpoint and skipped nothing.
    fn nothing(family: Option<Family>) -> Self {
        SliceEndpoints {
            port: None,
            endpoints: Vec::new(),
            not_serving: 0,
            unready: Vec::new(),
            ready_terminating: Vec::new(),
            without_address: 0,
            invalid_addresses: Vec::new(),
            offered_ports: Vec::new(),
            fqdn: false,
            placeholder: false,
            family,
        }
    }

    /// The slice's port the target selected; `None` when the slice has no such port (then it
    /// contributes no endpoint), or for an `FQDN` slice.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The endpoints that can take traffic, in the slice's order: ready ones and ones that are
    /// serving while terminating.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// How many endpoints of the slice were left out because they are neither ready nor
    /// serving while terminating.
    pub fn not_serving(&self) -> usize {
        self.not_serving
    }

    /// The addresses of the endpoints that are neither ready nor terminating (a pod that is not
    /// ready yet), in the slice's order. The merge never uses these addresses as a draining
    /// fallback, whichever slice lists them as draining.
    pub fn unready(&self) -> &[SocketAddr] {
        &self.unready
    }

    /// How many endpoints of the slice were skipped because they have no address.
    pub fn without_address(&self) -> usize {
        self.without_address
    }

    /// The addresses of the endpoints skipped because they are not IPs of the slice's family
    /// (`10.0.0.300`, an IPv6 address in an `IPv4` slice), as written; the slice's other
    /// endpoints are kept.
    pub fn invalid_addresses(&self) -> &[String] {
        &self.invalid_addresses
    }

    /// The slice's address type, as its endpoints' addresses are checked against:
    /// `IPv4` or `IPv6`; `None` for an `FQDN` slice.
    pub fn address_type(&self) -> Option<&'static str> {
        self.family.map(Family::name)
    }

    /// The slice's usable ports, as `name:number` (or `number` for an unnamed port), with
    /// `/UDP` or `/SCTP` after ports of other protocols than TCP (never selected), for
    /// messages that explain why no port matched.
    pub fn offered_ports(&self) -> &[String] {
        &self.offered_ports
    }

    /// `true` for a slice of the deprecated `FQDN` address type, which contributes nothing.
    pub fn is_fqdn(&self) -> bool {
        self.fqdn
    }

    /// `true` for a slice with neither ports nor endpoints, which the EndpointSlice controller
    /// writes for a Service that has no endpoints (scaled to zero, or no pod matching its
    /// selector): it contributes nothing, and a Service that has only such slices is empty.
    pub fn is_placeholder(&self) -> bool {
        self.placeholder
    }

    /// `true` when any endpoint is ready.
    pub fn has_ready(&self) -> bool {
        self.endpoints
            .iter()
            .any(|endpoint| endpoint.readiness().is_ready())
    }

    /// Each endpoint of [`endpoints`](Self::endpoints) with whether the slice marks it
    /// terminating: every [`Terminating`](Readiness::Terminating) one, and the ready ones whose
    /// `terminating` condition is set.
    pub fn endpoints_terminating(&self) -> impl Iterator<Item = (&Endpoint, bool)> + '_ {
        let mut ready_terminating = self.ready_terminating.iter().copied().peekable();
        self.endpoints
            .iter()
            .enumerate()
            .map(move |(position, endpoint)| {
                let marked = ready_terminating.next_if_eq(&(position as u32)).is_some();
                (endpoint, marked || !endpoint.readiness().is_ready())
            })
    }
}

/// An EndpointSlice that contributes nothing because it breaks the API's rules, with the slice's
/// name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EndpointSlice `{slice}` skipped: {reason}")]
pub struct UnusableSlice {
    slice: String,
    reason: UnusableReason,
}

impl UnusableSlice {
    pub(super) fn new(slice: &str, reason: UnusableReason) -> Self {
        UnusableSlice {
            slice: slice.to_owned(),
            reason,
        }
    }

    /// The slice's name (`metadata.name`; empty when the slice has none).
    pub fn slice(&self) -> &str {
        &self.slice
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &UnusableReason {
        &self.reason
    }
}

/// Why an EndpointSlice is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnusableReason {
    /// The slice has no `metadata.name`, so it cannot be tracked.
    #[error("the slice has no name")]
    MissingName,
    /// The `kubernetes.io/service-name` label is missing.
    #[error("no `kubernetes.io/service-name` label")]
    MissingServiceLabel,
    /// The `kubernetes.io/service-name` label names another Service.
    #[error("it belongs to Service `{0}`")]
    OtherService(String),
    /// The slice is in another namespace than the target's (a server or proxy that ignores
    /// the request's scope).
    #[error("it is in namespace `{0}`, not the target's")]
    OtherNamespace(String),
    /// An `addressType` other than `IPv4`, `IPv6` or `FQDN`.
    #[error("unknown address type `{0}`")]
    UnknownAddressType(String),
    /// The object could not be read as an EndpointSlice (a field of the wrong type, another
    /// kind): what the decoder said. The name, namespace and labels are from its metadata.
    #[error("it cannot be read as an EndpointSlice: {0}")]
    Undecodable(String),
    /// No port with both a name and a number from 1 to 65535.
    #[error("no usable port (a port needs a name, which may be empty, and a number)")]
    MissingPorts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Converts one EndpointSlice of Service `service` into what it contributes for a target that
/// selects `port` (`None`: the slice's only port).
///
/// - The port is chosen by name, or by number against `ports[].port` (the pods' target port);
///   without a selector a slice with a single TCP port uses it. Ports without a name or a
///   number are ignored, and so are ports of other protocols than TCP (UDP, SCTP): they are
///   other Service ports, which a TCP client cannot reach.
/// - Each endpoint is its first address. `IPv4` and `IPv6` slices count; an `FQDN` slice
///   contributes nothing ([`SliceEndpoints::is_fqdn`]).
/// - Conditions: `ready` missing means true, `serving` missing means true, `terminating`
///   missing means false. Ready endpoints are [`Readiness::Ready`], serving-and-terminating ones
///   [`Readiness::Terminating`], the others are left out; the addresses of those neither ready
///   nor terminating are kept in [`SliceEndpoints::unready`].
/// - An endpoint without an address, or whose address is not an IP of the slice's family, is
///   skipped alone ([`SliceEndpoints::invalid_addresses`]).
/// - Zone, node, hostname, `hints.forZones` and `hints.forNodes` are carried.
///
/// Returns an [`UnusableSlice`] when the slice breaks the API's rules (no name, missing or
/// foreign `kubernetes.io/service-name` label, unknown address type, no usable port). Never
/// panics, whatever the slice holds.
pub fn convert_slice(
    slice: &EndpointSlice,
    service: &str,
    port: Option<&PortSelector>,
) -> Result<SliceEndpoints, UnusableSlice> {
    let name = slice.metadata.name.as_deref().unwrap_or_default();
    let unusable = |reason| Err(UnusableSlice::new(name, reason));
    if name.is_empty() {
        return unusable(UnusableReason::MissingName);
    }
    match slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
    {
        None => return unusable(UnusableReason::MissingServiceLabel),
        Some(owner) if owner != service => {
            return unusable(UnusableReason::OtherService(owner.clone()));
        }
        Some(_) => {}
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        "FQDN" => {
            return Ok(SliceEndpoints {
                fqdn: true,
                ..SliceEndpoints::nothing(None)
            });
        }
        other => return unusable(UnusableReason::UnknownAddressType(other.to_owned())),
    };
    let ports: Vec<(&str, u16, Option<&str>)> = slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(usable_port)
        .collect();
    if ports.is_empty() {
        // The controller writes a slice with neither ports nor endpoints for a Service that
        // has no endpoints (scaled to zero, or no pod matches its selector): an empty answer.
        if slice.endpoints.api_endpoints().is_empty()
            && slice.ports.as_deref().unwrap_or_default().is_empty()
        {
            return Ok(SliceEndpoints {
                placeholder: true,
                ..SliceEndpoints::nothing(Some(family))
            });
        }
        return unusable(UnusableReason::MissingPorts);
    }
    let offered_ports = ports
        .iter()
        .map(|&(name, number, protocol)| {
            let port = if name.is_empty() {
                number.to_string()
            } else {
                format!("{name}:{number}")
            };
            match protocol {
                None => port,
                Some(protocol) => format!("{port}/{protocol}"),
            }
        })
        .collect();
    // An endpoint without any address, or whose address is not an IP of the slice's family, is
    // skipped alone: the rest of the slice is kept.
    let api_endpoints = slice.endpoints.api_endpoints();
    let mut addressed = Vec::with_capacity(api_endpoints.len());
    let mut without_address = 0;
    let mut invalid_addresses = Vec::new();
    for api_endpoint in api_endpoints {
        let Some(address) = api_endpoint.addresses.first() else {
            without_address += 1;
            continue;
        };
        let Some(ip) = parse_ip(address, family) else {
            invalid_addresses.push(address.clone());
            continue;
        };
        addressed.push((ip, api_endpoint));
    }
    let Some(number) = select_port(&ports, port) else {
        return Ok(SliceEndpoints {
            without_address,
            invalid_addresses,
            offered_ports,
            ..SliceEndpoints::nothing(Some(family))
        });
    };

    let mut endpoints = Vec::with_capacity(addressed.len());
    let mut not_serving = 0;
    let mut unready = Vec::new();
    let mut ready_terminating = Vec::new();
    for (ip, api_endpoint) in addressed {
        let address = SocketAddr::new(ip, number);
        match conditions(api_endpoint) {
            Conditions::Usable(readiness) => {
                if readiness.is_ready() && is_terminating(api_endpoint) {
                    // At most the slice's endpoint count, which the API caps far below u32.
                    ready_terminating.push(u32::try_from(endpoints.len()).unwrap_or(u32::MAX));
                }
                endpoints.push(endpoint(address, readiness, api_endpoint));
            }
            Conditions::Unready => {
                not_serving += 1;
                unready.push(address);
            }
            Conditions::Gone => not_serving += 1,
        }
    }
    Ok(SliceEndpoints {
        port: Some(number),
        endpoints,
        not_serving,
        unready,
        ready_terminating,
        without_address,
        invalid_addresses,
        offered_ports,
        fqdn: false,
        placeholder: false,
        family: Some(family),
    })
}

/// What an endpoint's conditions make of it.
enum Conditions {
    /// Ready, or serving while terminating.
    Usable(Readiness),
    /// Neither ready nor terminating: a pod that is not ready yet. Its address shadows a
    /// draining duplicate.
    Unready,
    /// Terminating and no longer serving.
    Gone,
}

/// The conditions rule: ready (missing = true) wins; else serving (missing = true, as the API
/// and kube-proxy read it) and terminating (missing = false) together make a draining endpoint;
/// else unusable.
fn conditions(endpoint: &ApiEndpoint) -> Conditions {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = is_terminating(endpoint);
    if ready {
        Conditions::Usable(Readiness::Ready)
    } else if serving && terminating {
        Conditions::Usable(Readiness::Terminating)
    } else if terminating {
        Conditions::Gone
    } else {
        Conditions::Unready
    }
}

/// The `terminating` condition (missing = false).
fn is_terminating(endpoint: &ApiEndpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.terminating)
        .unwrap_or(false)
}

fn endpoint(address: SocketAddr, readiness: Readiness, api: &ApiEndpoint) -> Endpoint {
    fn present(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|value| !value.is_empty())
    }
    let hints = api.hints.as_ref();
    let zone_hints = hints
        .and_then(|hints| hints.for_zones.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|zone| zone.name.as_str());
    let node_hints = hints
        .and_then(|hints| hints.for_nodes.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|node| node.name.as_str());
    Endpoint::new(address)
        .with_readiness(readiness)
        .with_topology(
            present(&api.zone),
            present(&api.node_name),
            present(&api.hostname),
            zone_hints,
            node_hints,
        )
}

/// A port with a name (possibly empty) and a number from 1 to 65535, as
/// `(name, number, protocol)` where `protocol` is `None` for TCP (or missing, which the API
/// reads as TCP) and the protocol's name otherwise; `None` for ports kube-proxy ignores.
fn usable_port(port: &EndpointPort) -> Option<(&str, u16, Option<&str>)> {
    let name = port.name.as_deref()?;
    let number = u16::try_from(port.port?)
        .ok()
        .filter(|&number| number != 0)?;
    let protocol = port
        .protocol
        .as_deref()
        .filter(|&protocol| protocol != "TCP");
    Some((name, number, protocol))
}

/// The TCP port the selector picks: by name, by number, or the only one. Ports of other
/// protocols are never picked, whatever their name or number.
fn select_port(
    ports: &[(&str, u16, Option<&str>)],
    selector: Option<&PortSelector>,
) -> Option<u16> {
    let mut candidates = ports
        .iter()
        .filter(|(_, _, protocol)| protocol.is_none())
        .filter(|&&(name, number, _)| match selector {
            Some(PortSelector::Name(wanted)) => name == wanted,
            Some(PortSelector::Number(wanted)) => number == *wanted,
            None => true,
        });
    let first = candidates.next()?.1;
    // Several different TCP ports and the target names none: ambiguous.
    (selector.is_some() || candidates.all(|&(_, number, _)| number == first)).then_some(first)
}

fn parse_ip(address: &str, family: Family) -> Option<IpAddr> {
    match family {
        Family::V4 => address
            .parse::<Ipv4Addr>()
            .ok()
            .or_else(|| parse_ipv4_leading_zeros(address))
            .map(IpAddr::V4),
        Family::V6 => match address.parse::<IpAddr>().ok()? {
            IpAddr::V6(ip) => Some(IpAddr::V6(ip)),
            IpAddr::V4(_) => None,
        },
    }
}

/// Kubernetes once accepted IPv4 octets with leading zeros (`010.000.000.001`) and reads them as
/// decimal (Go's `ParseIPSloppy`); objects written then may still exist. Rust's parser rejects
/// them, so they are read here the way Kubernetes reads them.
fn parse_ipv4_leading_zeros(address: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = address.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// `EndpointSlice.endpoints` is a `Vec` in k8s-openapi's `v1_33`..`v1_35` features and an
/// `Option<Vec>` from `v1_36`; the application picks the feature, so both shapes are read.
trait ApiEndpoints {
    fn api_endpoints(&self) -> &[ApiEndpoint];
}

impl ApiEndpoints for Vec<ApiEndpoint> {
    fn api_endpoints(&self) -> &[ApiEndpoint] {
        self
    }
}

impl ApiEndpoints for Option<Vec<ApiEndpoint>> {
    fn api_endpoints(&self) -> &[ApiEndpoint] {
        self.as_deref().unwrap_or_default()
    }
}

impl fmt::Display for SliceEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(
                f,
                "{} endpoints on port {port} ({} not serving)",
                self.endpoints.len(),
                self.not_serving
            ),
            None if self.fqdn => f.write_str("FQDN slice, skipped"),
            None => write!(f, "no matching port (offers {:?})", self.offered_ports),
        }
    }
}
