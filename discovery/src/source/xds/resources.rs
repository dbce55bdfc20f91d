//! xDS resources as the source uses them: each one decoded from its protobuf, validated, and
//! reduced to the fields waypost reads. Everything else in a resource is ignored (the README
//! lists what is read).
//!
//! A resource that fails validation is rejected with a [`Rejected`] that names the resource and
//! the field; the client NACKs it and keeps the last good version.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::{Endpoint, Readiness};

/// The four resource types of the chain from a listener to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// LDS: `Listener`.
    Listener,
    /// RDS: `RouteConfiguration`.
    Route,
    /// CDS: `Cluster`.
    Cluster,
    /// EDS: `ClusterLoadAssignment`.
    Endpoints,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Listener, Kind::Route, Kind::Cluster, Kind::Endpoints];

    pub(crate) fn type_url(self) -> &'static str {
        match self {
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    pub(crate) fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.type_url() == url)
    }

    /// In state-of-the-world, a response for this type lists every resource that exists: one
    /// left out was deleted. RDS and EDS responses may list only some.
    pub(crate) fn response_is_complete(self) -> bool {
        matches!(self, Kind::Listener | Kind::Cluster)
    }

    pub(crate) fn short_name(self) -> &'static str {
        match self {
            Kind::Listener => "LDS",
            Kind::Route => "RDS",
            Kind::Cluster => "CDS",
            Kind::Endpoints => "EDS",
        }
    }
}

const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";
const HTTP_CONNECTION_MANAGER: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A resource the client did not accept, and why; the NACK's error detail is its display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// The resource's name, when it could be read.
    pub(crate) name: Option<String>,
    pub(crate) problem: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

fn rejected(name: &str, problem: impl Into<String>) -> Rejected {
    Rejected {
        name: Some(name.to_owned()),
        problem: problem.into(),
    }
}

/// One decoded resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decoded {
    Listener(ListenerRoutes),
    Route(Routes),
    Cluster(ClusterEds),
    Endpoints(Assignment),
}

/// Where a listener's routes are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListenerRoutes {
    /// In the listener itself.
    Inline(Routes),
    /// In the `RouteConfiguration` of this name (RDS).
    Rds(String),
}

/// A route configuration, reduced to each virtual host's domains and where its default route
/// sends requests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Routes {
    hosts: Vec<Host>,
}

#[derive(Debug, Clone, PartialEq)]
struct Host {
    domains: Vec<String>,
    /// The default route's clusters and their weights; `Err` when the host has no usable
    /// default route (reported when a target selects this host).
    clusters: Result<Vec<(String, u32)>, String>,
}

/// The EDS service name a cluster's endpoints are published under.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterEds {
    pub(crate) service_name: String,
}

/// A `ClusterLoadAssignment`, reduced to what picks use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    localities: Vec<LocalityEndpoints>,
    /// Percent: a priority with `healthy / total * factor >= 100` takes all the load.
    overprovisioning_factor: u32,
}

#[derive(Debug, Clone, PartialEq)]
struct LocalityEndpoints {
    zone: Option<String>,
    /// `None` when the control plane set no weight.
    weight: Option<u32>,
    priority: u32,
    /// The usable and draining endpoints.
    endpoints: Vec<HostEndpoint>,
    /// Every endpoint the locality lists, unhealthy ones too: the priority's health is the
    /// share of these that are healthy.
    listed: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct HostEndpoint {
    address: SocketAddr,
    weight: u32,
    health: Health,
    hostname: Option<String>,
}

/// What an endpoint's health status means for picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// HEALTHY or UNKNOWN: used, and counted as healthy for priorities.
    Usable,
    /// DRAINING: used only when nothing else is, like a Kubernetes endpoint that is terminating
    /// but still serving.
    Draining,
}

/// Decodes one resource of a response of type `kind`: its name and the decoded resource, or why
/// it was rejected.
pub(crate) fn decode(kind: Kind, any: &Any) -> Result<(String, Decoded), Rejected> {
    let unwrapped;
    let any = if any.type_url == RESOURCE_WRAPPER {
        let resource = Resource::decode(any.value.as_slice()).map_err(|error| Rejected {
            name: None,
            problem: format!("a Resource wrapper that does not decode: {error}"),
        })?;
        unwrapped = resource.resource.ok_or_else(|| Rejected {
            name: Some(resource.name.clone()).filter(|name| !name.is_empty()),
            problem: "a Resource wrapper without a resource".into(),
        })?;
        &unwrapped
    } else {
        any
    };
    if any.type_url != kind.type_url() {
        return Err(Rejected {
            name: None,
            problem: format!(
                "a resource of type {} in a {} response",
                any.type_url,
                kind.short_name()
            ),
        });
    }
    let undecodable = |error: prost::DecodeError| Rejected {
        name: None,
        problem: format!("does not decode as {}: {error}", kind.type_url()),
    };
    match kind {
        Kind::Listener => {
            let listener = Listener::decode(any.value.as_slice()).map_err(undecodable)?;
            let routes = listener_routes(&listener)?;
            Ok((listener.name, Decoded::Listener(routes)))
        }
        Kind::Route => {
            let config = RouteConfiguration::decode(any.value.as_slice()).map_err(undecodable)?;
            if config.name.is_empty() {
                return Err(Rejected {
                    name: None,
                    problem: "a RouteConfiguration without a name".into(),
                });
            }
            let routes = routes(&config);
            Ok((config.name, Decoded::Route(routes)))
        }
        Kind::Cluster => {
            let cluster = Cluster::decode(any.value.as_slice()).map_err(undecodable)?;
            let eds = cluster_eds(&cluster)?;
            Ok((cluster.name, Decoded::Cluster(eds)))
        }
        Kind::Endpoints => {
            let assignment =
                ClusterLoadAssignment::decode(any.value.as_slice()).map_err(undecodable)?;
            let decoded = assignment_of(&assignment)?;
            Ok((assignment.cluster_name, Decoded::Endpoints(decoded)))
        }
    }
}

fn listener_routes(listener: &Listener) -> Result<ListenerRoutes, Rejected> {
    let name = &listener.name;
    if name.is_empty() {
        return Err(Rejected {
            name: None,
            problem: "a Listener without a name".into(),
        });
    }
    let api = listener
        .api_listener
        .as_ref()
        .and_then(|api| api.api_listener.as_ref())
        .ok_or_else(|| rejected(name, "api_listener is missing: not a listener for clients"))?;
    if api.type_url != HTTP_CONNECTION_MANAGER {
        return Err(rejected(
            name,
            format!(
                "api_listener.api_listener is a {}, not an HttpConnectionManager",
                api.type_url
            ),
        ));
    }
    let manager = HttpConnectionManager::decode(api.value.as_slice()).map_err(|error| {
        rejected(
            name,
            format!("api_listener's HttpConnectionManager does not decode: {error}"),
        )
    })?;
    match manager.route_specifier {
        Some(RouteSpecifier::Rds(rds)) if !rds.route_config_name.is_empty() => {
            Ok(ListenerRoutes::Rds(rds.route_config_name))
        }
        Some(RouteSpecifier::Rds(_)) => Err(rejected(
            name,
            "HttpConnectionManager.rds.route_config_name is empty",
        )),
        Some(RouteSpecifier::RouteConfig(config)) => Ok(ListenerRoutes::Inline(routes(&config))),
        Some(RouteSpecifier::ScopedRoutes(_)) => Err(rejected(
            name,
            "HttpConnectionManager.scoped_routes is not supported: use rds or route_config",
        )),
        None => Err(rejected(
            name,
            "HttpConnectionManager has neither rds nor route_config",
        )),
    }
}

fn routes(config: &RouteConfiguration) -> Routes {
    Routes {
        hosts: config
            .virtual_hosts
            .iter()
            .map(|host| Host {
                domains: host
                    .domains
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect(),
                clusters: default_route(host),
            })
            .collect(),
    }
}

/// The clusters of the virtual host's first route that matches every request (prefix `""` or
/// `/`, no header, query or runtime matchers), with their weights.
fn default_route(host: &VirtualHost) -> Result<Vec<(String, u32)>, String> {
    let route = host
        .routes
        .iter()
        .find(|route| {
            route.r#match.as_ref().is_some_and(|m| {
                matches!(&m.path_specifier, Some(PathSpecifier::Prefix(prefix)) if prefix.is_empty() || prefix == "/")
                    && m.headers.is_empty()
                    && m.query_parameters.is_empty()
                    && m.runtime_fraction.is_none()
            })
        })
        .ok_or_else(|| {
            format!(
                "virtual host `{}` has no route for every request (prefix \"\" or \"/\")",
                host.name
            )
        })?;
    let action = match &route.action {
        Some(Action::Route(action)) => action,
        _ => {
            return Err(format!(
                "the default route of virtual host `{}` does not route to a cluster",
                host.name
            ));
        }
    };
    match &action.cluster_specifier {
        Some(ClusterSpecifier::Cluster(cluster)) if !cluster.is_empty() => {
            Ok(vec![(cluster.clone(), 1)])
        }
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            let clusters: Vec<(String, u32)> = weighted
                .clusters
                .iter()
                .filter_map(|cluster| {
                    let weight = cluster.weight.as_ref().map_or(0, |w| w.value);
                    (weight > 0 && !cluster.name.is_empty()).then(|| (cluster.name.clone(), weight))
                })
                .collect();
            if clusters.is_empty() {
                Err(format!(
                    "the default route of virtual host `{}` has no weighted cluster with a weight",
                    host.name
                ))
            } else {
                Ok(clusters)
            }
        }
        _ => Err(format!(
            "the default route of virtual host `{}` names no cluster (cluster_header and \
             cluster_specifier_plugin are not supported)",
            host.name
        )),
    }
}

impl Routes {
    /// The clusters requests for `authority` go to: the virtual host whose domains match it best
    /// (exact, then the longest `*.suffix`, then the longest `prefix.*`, then `*`), as gRPC
    /// chooses.
    pub(crate) fn clusters_for(&self, authority: &str) -> Result<&[(String, u32)], String> {
        let authority = authority.to_ascii_lowercase();
        let mut best: Option<(u8, usize, &Host)> = None;
        for host in &self.hosts {
            for domain in &host.domains {
                let Some(rank) = domain_match(domain, &authority) else {
                    continue;
                };
                let better = best.is_none_or(|(best_rank, best_len, _)| {
                    rank < best_rank || (rank == best_rank && domain.len() > best_len)
                });
                if better {
                    best = Some((rank, domain.len(), host));
                }
            }
        }
        match best {
            Some((_, _, host)) => host.clusters.as_deref().map_err(Clone::clone),
            None => Err(format!("no virtual host matches `{authority}`")),
        }
    }
}

/// How well `domain` matches `authority`: 0 exact, 1 suffix wildcard, 2 prefix wildcard, 3 `*`.
fn domain_match(domain: &str, authority: &str) -> Option<u8> {
    if domain == "*" {
        return Some(3);
    }
    if let Some(suffix) = domain.strip_prefix('*') {
        return (authority.len() > suffix.len() && authority.ends_with(suffix)).then_some(1);
    }
    if let Some(prefix) = domain.strip_suffix('*') {
        return (authority.len() > prefix.len() && authority.starts_with(prefix)).then_some(2);
    }
    (domain == authority).then_some(0)
}

fn cluster_eds(cluster: &Cluster) -> Result<ClusterEds, Rejected> {
    let name = &cluster.name;
    if name.is_empty() {
        return Err(Rejected {
            name: None,
            problem: "a Cluster without a name".into(),
        });
    }
    match &cluster.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(kind)) if *kind == DiscoveryType::Eds as i32 => {}
        Some(ClusterDiscoveryType::Type(kind)) => {
            let kind = DiscoveryType::try_from(*kind)
                .map_or_else(|_| format!("type {kind}"), |k| k.as_str_name().to_owned());
            return Err(rejected(
                name,
                format!("cluster type {kind} is not supported: only EDS clusters are"),
            ));
        }
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(rejected(
                name,
                format!(
                    "custom cluster type `{}` is not supported: only EDS clusters are",
                    custom.name
                ),
            ));
        }
        None => {
            return Err(rejected(
                name,
                "cluster type STATIC is not supported: only EDS clusters are",
            ));
        }
    }
    let service_name = cluster
        .eds_cluster_config
        .as_ref()
        .map(|eds| eds.service_name.clone())
        .filter(|service| !service.is_empty())
        .unwrap_or_else(|| name.clone());
    Ok(ClusterEds { service_name })
}

fn assignment_of(assignment: &ClusterLoadAssignment) -> Result<Assignment, Rejected> {
    let name = &assignment.cluster_name;
    if name.is_empty() {
        return Err(Rejected {
            name: None,
            problem: "a ClusterLoadAssignment without a cluster_name".into(),
        });
    }
    let mut localities = Vec::with_capacity(assignment.endpoints.len());
    for (i, locality) in assignment.endpoints.iter().enumerate() {
        let mut endpoints = Vec::with_capacity(locality.lb_endpoints.len());
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}].lb_endpoints[{j}]");
            let health = match HealthStatus::try_from(lb.health_status) {
                Ok(HealthStatus::Healthy | HealthStatus::Unknown) => Health::Usable,
                Ok(HealthStatus::Draining) => Health::Draining,
                // UNHEALTHY, TIMEOUT, DEGRADED and unknown values: not used.
                _ => continue,
            };
            let endpoint = match &lb.host_identifier {
                Some(HostIdentifier::Endpoint(endpoint)) => endpoint,
                _ => return Err(rejected(name, format!("{field} has no endpoint"))),
            };
            let socket = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(socket)) => socket,
                _ => {
                    return Err(rejected(
                        name,
                        format!("{field}.endpoint.address is not a socket address"),
                    ));
                }
            };
            let ip: IpAddr = socket.address.parse().map_err(|_| {
                rejected(
                    name,
                    format!(
                        "{field}.endpoint.address.socket_address.address `{}` is not an IP address",
                        socket.address
                    ),
                )
            })?;
            let port = match socket.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(port)) => {
                    u16::try_from(port).ok().filter(|&port| port != 0)
                }
                _ => None,
            }
            .ok_or_else(|| {
                rejected(
                    name,
                    format!("{field}.endpoint.address.socket_address has no port from 1 to 65535"),
                )
            })?;
            let weight = match &lb.load_balancing_weight {
                Some(weight) if weight.value == 0 => {
                    return Err(rejected(
                        name,
                        format!("{field}.load_balancing_weight is 0"),
                    ));
                }
                Some(weight) => weight.value,
                None => 1,
            };
            endpoints.push(HostEndpoint {
                address: SocketAddr::new(ip, port),
                weight,
                health,
                hostname: Some(endpoint.hostname.clone()).filter(|h| !h.is_empty()),
            });
        }
        localities.push(LocalityEndpoints {
            zone: locality
                .locality
                .as_ref()
                .map(|l| l.zone.clone())
                .filter(|zone| !zone.is_empty()),
            weight: locality
                .load_balancing_weight
                .as_ref()
                .map(|w| w.value)
                .filter(|&w| w > 0),
            priority: locality.priority,
            endpoints,
            listed: locality.lb_endpoints.len(),
        });
    }
    let overprovisioning_factor = assignment
        .policy
        .as_ref()
        .and_then(|policy| policy.overprovisioning_factor.as_ref())
        .map_or(140, |factor| factor.value);
    if overprovisioning_factor == 0 {
        return Err(rejected(name, "policy.overprovisioning_factor is 0"));
    }
    Ok(Assignment {
        localities,
        overprovisioning_factor,
    })
}

/// The total weight a target's endpoints share; each endpoint gets its part of it.
const WEIGHT_SCALE: f64 = 1_000_000.0;

impl Assignment {
    /// This cluster's endpoints with their shares of the cluster's load (summing to 1).
    ///
    /// Priorities: each priority takes `min(remaining, healthy% × overprovisioning factor)` of
    /// the load, in order from priority 0, as Envoy distributes it; when even all of them
    /// together have too few healthy endpoints, the shares are scaled up to the whole load.
    /// Within a priority, localities share by their weights (localities without one are left
    /// out when others have one; equal shares when none has); within a locality, endpoints
    /// share by their weights. Draining endpoints come with a share as the others, marked
    /// terminating: the balancer uses them only when nothing else is left.
    fn shares(&self) -> Vec<(&LocalityEndpoints, &HostEndpoint, f64)> {
        let mut priorities: BTreeMap<u32, Vec<&LocalityEndpoints>> = BTreeMap::new();
        for locality in &self.localities {
            if !locality.endpoints.is_empty() {
                priorities
                    .entry(locality.priority)
                    .or_default()
                    .push(locality);
            }
        }
        let mut loads = Vec::with_capacity(priorities.len());
        let mut remaining = 1.0f64;
        for localities in priorities.values() {
            let total: usize = localities.iter().map(|l| l.listed).sum();
            let healthy = localities
                .iter()
                .flat_map(|l| &l.endpoints)
                .filter(|e| e.health == Health::Usable)
                .count();
            let health =
                healthy as f64 / total as f64 * f64::from(self.overprovisioning_factor) / 100.0;
            let load = health.min(1.0).min(remaining);
            remaining -= load;
            loads.push(load);
        }
        let assigned: f64 = loads.iter().sum();
        let mut shares = Vec::new();
        for (localities, load) in priorities.values().zip(&loads) {
            // No healthy endpoint anywhere: every priority keeps an equal say, so draining
            // endpoints stay as a last resort.
            let load = if assigned > 0.0 {
                load / assigned
            } else {
                1.0 / priorities.len() as f64
            };
            if load <= 0.0 {
                continue;
            }
            // Localities left with no endpoint to use share nothing out.
            let localities: Vec<&LocalityEndpoints> = localities
                .iter()
                .copied()
                .filter(|l| !l.endpoints.is_empty())
                .collect();
            let weighted = localities.iter().any(|l| l.weight.is_some());
            let locality_total: f64 = localities
                .iter()
                .map(|l| match (weighted, l.weight) {
                    (true, Some(w)) => f64::from(w),
                    (true, None) => 0.0,
                    (false, _) => 1.0,
                })
                .sum();
            for locality in &localities {
                let locality_weight = match (weighted, locality.weight) {
                    (true, Some(w)) => f64::from(w),
                    (true, None) => continue,
                    (false, _) => 1.0,
                };
                let endpoint_total: f64 =
                    locality.endpoints.iter().map(|e| f64::from(e.weight)).sum();
                for endpoint in &locality.endpoints {
                    let share = load * locality_weight / locality_total
                        * f64::from(endpoint.weight)
                        / endpoint_total;
                    shares.push((*locality, endpoint, share));
                }
            }
        }
        shares
    }
}

/// The endpoints of `clusters` (each with its route weight and its assignment), weighted by
/// their share of the target's load. An address in two clusters is kept once, with the sum of
/// its shares. Draining endpoints are in the result, as terminating, only when no endpoint is
/// usable.
pub(crate) fn endpoints_of(clusters: &[(u32, &Assignment)]) -> Vec<Endpoint> {
    let total: f64 = clusters.iter().map(|(weight, _)| f64::from(*weight)).sum();
    // The endpoint, its share, and whether any cluster has it usable (not only draining).
    let mut merged: BTreeMap<SocketAddr, (Endpoint, f64, bool)> = BTreeMap::new();
    for (cluster_weight, assignment) in clusters {
        let cluster_share = f64::from(*cluster_weight) / total;
        for (locality, endpoint, share) in assignment.shares() {
            let entry = merged.entry(endpoint.address).or_insert_with(|| {
                let mut built = Endpoint::new(endpoint.address);
                if let Some(zone) = &locality.zone {
                    built = built.with_zone(zone.clone());
                }
                if let Some(hostname) = &endpoint.hostname {
                    built = built.with_hostname(hostname.clone());
                }
                (built, 0.0, false)
            });
            entry.1 += share * cluster_share;
            entry.2 |= endpoint.health == Health::Usable;
        }
    }
    // Draining endpoints serve only when nothing else can, as terminating Kubernetes endpoints
    // do: a set holds terminating endpoints only when none is ready.
    let any_usable = merged.values().any(|(_, _, usable)| *usable);
    merged
        .into_values()
        .filter(|(_, _, usable)| *usable || !any_usable)
        .map(|(endpoint, share, usable)| {
            let weight = (share * WEIGHT_SCALE)
                .round()
                .clamp(1.0, f64::from(u32::MAX)) as u32;
            let readiness = if usable {
                Readiness::Ready
            } else {
                Readiness::Terminating
            };
            endpoint.with_weight(weight).with_readiness(readiness)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, Locality, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        LbEndpoint, LocalityLbEndpoints, cluster_load_assignment,
    };
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn lb(ip: &str, port: u32, health: HealthStatus, weight: Option<u32>) -> LbEndpoint {
        LbEndpoint {
            health_status: health as i32,
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            host_identifier: Some(HostIdentifier::Endpoint(
                envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: ip.into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    fn locality(
        zone: &str,
        weight: Option<u32>,
        priority: u32,
        endpoints: Vec<LbEndpoint>,
    ) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: Some(Locality {
                zone: zone.into(),
                ..Default::default()
            }),
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            priority,
            lb_endpoints: endpoints,
            ..Default::default()
        }
    }

    fn cla(localities: Vec<LocalityLbEndpoints>) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: localities,
            ..Default::default()
        }
    }

    fn weights(assignment: &ClusterLoadAssignment) -> Vec<(u16, u32, Readiness)> {
        let decoded = assignment_of(assignment).unwrap();
        endpoints_of(&[(1, &decoded)])
            .iter()
            .map(|e| (e.address().port(), e.weight(), e.readiness()))
            .collect()
    }

    #[test]
    fn localities_and_endpoints_share_by_weight() {
        let assignment = cla(vec![
            locality(
                "a",
                Some(3),
                0,
                vec![
                    lb("127.0.0.1", 1, HealthStatus::Healthy, Some(1)),
                    lb("127.0.0.1", 2, HealthStatus::Unknown, Some(2)),
                ],
            ),
            locality(
                "b",
                Some(1),
                0,
                vec![lb("127.0.0.1", 3, HealthStatus::Healthy, None)],
            ),
        ]);
        assert_eq!(
            weights(&assignment),
            vec![
                (1, 250_000, Readiness::Ready),
                (2, 500_000, Readiness::Ready),
                (3, 250_000, Readiness::Ready)
            ]
        );
        let decoded = assignment_of(&assignment).unwrap();
        let zones: Vec<_> = endpoints_of(&[(1, &decoded)])
            .iter()
            .map(|e| e.zone().unwrap().to_owned())
            .collect();
        assert_eq!(zones, ["a", "a", "b"]);
    }

    #[test]
    fn unhealthy_endpoints_are_dropped_and_draining_ones_kept_only_when_nothing_else_is() {
        let assignment = cla(vec![locality(
            "a",
            None,
            0,
            vec![
                lb("127.0.0.1", 1, HealthStatus::Healthy, None),
                lb("127.0.0.1", 2, HealthStatus::Unhealthy, None),
                lb("127.0.0.1", 3, HealthStatus::Draining, None),
                lb("127.0.0.1", 4, HealthStatus::Timeout, None),
                lb("127.0.0.1", 5, HealthStatus::Degraded, None),
            ],
        )]);
        assert_eq!(weights(&assignment), vec![(1, 500_000, Readiness::Ready)]);
        // Nothing healthy: the draining endpoint serves, as terminating.
        let assignment = cla(vec![locality(
            "a",
            None,
            0,
            vec![
                lb("127.0.0.1", 2, HealthStatus::Unhealthy, None),
                lb("127.0.0.1", 3, HealthStatus::Draining, None),
            ],
        )]);
        assert_eq!(
            weights(&assignment),
            vec![(3, 1_000_000, Readiness::Terminating)]
        );
    }

    #[test]
    fn a_priority_with_enough_healthy_endpoints_takes_all_the_load() {
        // 3 of 4 healthy at 140%: 105% >= 100%, priority 1 gets nothing.
        let mut healthy = vec![
            lb("127.0.0.1", 1, HealthStatus::Healthy, None),
            lb("127.0.0.1", 2, HealthStatus::Healthy, None),
            lb("127.0.0.1", 3, HealthStatus::Healthy, None),
            lb("127.0.0.1", 4, HealthStatus::Draining, None),
        ];
        let assignment = cla(vec![
            locality("a", None, 0, healthy.clone()),
            locality(
                "b",
                None,
                1,
                vec![lb("127.0.0.1", 9, HealthStatus::Healthy, None)],
            ),
        ]);
        let ports: Vec<u16> = weights(&assignment).iter().map(|w| w.0).collect();
        assert_eq!(ports, [1, 2, 3], "the draining one is left out");
        // 1 of 4 healthy: 35% to priority 0, 65% fails over to priority 1.
        for e in &mut healthy[1..3] {
            e.health_status = HealthStatus::Unhealthy as i32;
        }
        let assignment = cla(vec![
            locality("a", None, 0, healthy),
            locality(
                "b",
                None,
                1,
                vec![lb("127.0.0.1", 9, HealthStatus::Healthy, None)],
            ),
        ]);
        assert_eq!(
            weights(&assignment),
            vec![
                (1, 175_000, Readiness::Ready),
                (9, 650_000, Readiness::Ready)
            ]
        );
    }

    #[test]
    fn weighted_clusters_split_the_load() {
        let one = assignment_of(&cla(vec![locality(
            "a",
            None,
            0,
            vec![
                lb("127.0.0.1", 1, HealthStatus::Healthy, None),
                lb("127.0.0.1", 2, HealthStatus::Healthy, None),
            ],
        )]))
        .unwrap();
        let two = assignment_of(&cla(vec![locality(
            "a",
            None,
            0,
            vec![lb("::1", 3, HealthStatus::Healthy, None)],
        )]))
        .unwrap();
        let endpoints = endpoints_of(&[(80, &one), (20, &two)]);
        let got: Vec<(String, u32)> = endpoints
            .iter()
            .map(|e| (e.address().to_string(), e.weight()))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1:1".to_owned(), 400_000),
                ("127.0.0.1:2".to_owned(), 400_000),
                ("[::1]:3".to_owned(), 200_000)
            ]
        );
    }

    #[test]
    fn bad_endpoints_reject_the_assignment_and_name_the_field() {
        let bad_ip = cla(vec![locality(
            "a",
            None,
            0,
            vec![lb("api.local", 1, HealthStatus::Healthy, None)],
        )]);
        let error = assignment_of(&bad_ip).unwrap_err();
        assert_eq!(error.name.as_deref(), Some("c"));
        assert!(
            error.problem.contains("endpoints[0].lb_endpoints[0]")
                && error.problem.contains("api.local"),
            "{error}"
        );
        let no_port = cla(vec![locality(
            "a",
            None,
            0,
            vec![lb("127.0.0.1", 70_000, HealthStatus::Healthy, None)],
        )]);
        assert!(
            assignment_of(&no_port)
                .unwrap_err()
                .problem
                .contains("no port")
        );
        let zero = cla(vec![locality(
            "a",
            None,
            0,
            vec![lb("127.0.0.1", 1, HealthStatus::Healthy, Some(0))],
        )]);
        assert!(
            assignment_of(&zero)
                .unwrap_err()
                .problem
                .contains("load_balancing_weight is 0")
        );
        let mut factor = cla(vec![]);
        factor.policy = Some(cluster_load_assignment::Policy {
            overprovisioning_factor: Some(UInt32Value { value: 0 }),
            ..Default::default()
        });
        assert!(
            assignment_of(&factor)
                .unwrap_err()
                .problem
                .contains("overprovisioning_factor")
        );
    }

    #[test]
    fn virtual_hosts_match_as_grpc_matches_them() {
        let host = |domains: &[&str], cluster: &str| Host {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            clusters: Ok(vec![(cluster.to_owned(), 1)]),
        };
        let routes = Routes {
            hosts: vec![
                host(&["*"], "any"),
                host(&["api.*"], "prefix"),
                host(&["*.example.com"], "suffix"),
                host(&["api.example.com", "api.example.com:8080"], "exact"),
            ],
        };
        let cluster = |authority: &str| routes.clusters_for(authority).unwrap()[0].0.clone();
        assert_eq!(cluster("api.example.com:8080"), "exact");
        assert_eq!(cluster("API.example.com"), "exact");
        assert_eq!(cluster("web.example.com"), "suffix");
        assert_eq!(cluster("api.other"), "prefix");
        assert_eq!(cluster("other"), "any");
        let none = Routes {
            hosts: vec![host(&["a"], "a")],
        };
        assert!(
            none.clusters_for("b")
                .unwrap_err()
                .contains("no virtual host matches `b`")
        );
    }

    #[test]
    fn resources_of_the_wrong_type_or_undecodable_are_rejected() {
        let any = Any {
            type_url: Kind::Cluster.type_url().into(),
            value: vec![],
        };
        let error = decode(Kind::Endpoints, &any).unwrap_err();
        assert!(
            error.problem.contains("in a EDS response") || error.problem.contains("EDS"),
            "{error}"
        );
        let garbage = Any {
            type_url: Kind::Listener.type_url().into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(
            decode(Kind::Listener, &garbage)
                .unwrap_err()
                .problem
                .contains("does not decode")
        );
        let static_cluster = Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::LogicalDns as i32,
            )),
            ..Default::default()
        };
        let error = cluster_eds(&static_cluster).unwrap_err();
        assert!(error.problem.contains("LOGICAL_DNS"), "{error}");
    }
}
