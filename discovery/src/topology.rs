//! Topology rules: which endpoints count as local to a client's zone, one implementation for
//! discovery and the balancer.
//!
//! Two different features go by "zone preference", and waypost keeps them apart:
//!
//! - **Topology hints** (Kubernetes topology-aware routing): the EndpointSlice controller writes
//!   `hints.forZones` on each endpoint. With `service.kubernetes.io/topology-mode: Auto` it
//!   chooses them so that every zone gets a share of endpoints in proportion to its capacity;
//!   with `trafficDistribution: PreferClose` (or `PreferSameZone`) each endpoint is hinted for
//!   its own zone, so a zone with few endpoints keeps all of its own traffic. kube-proxy uses
//!   them only when they are complete: when every *ready* endpoint has hints and at least one
//!   is hinted for the client's zone ([`hints_prefer_zone`]); then only the ready endpoints
//!   hinted for that zone take its traffic ([`is_hinted_local`]). Hints never filter the
//!   serving-and-terminating fallback (used when nothing is ready): with no ready endpoint the
//!   rule says the hints do not apply. Node hints (`hints.forNodes`, `trafficDistribution:
//!   PreferSameNode`) come first, by the same rule for the client's node
//!   ([`hints_prefer_node`], [`is_hinted_for_node_local`]); when they do not apply, the zone
//!   hints are looked at (kube-proxy's `topologyModeFromHints`).
//! - **Zone-aware routing** (Envoy's): an endpoint is local when its `zone` field is the
//!   client's zone ([`is_in_zone`]); traffic stays local while enough local endpoints are
//!   healthy and spills over to the other zones in proportion when they are not. Hints play no
//!   part.
//!
//! ```
//! use waypost_discovery::Endpoint;
//! use waypost_discovery::topology::{hints_prefer_zone, is_hinted_local};
//!
//! let endpoints = [
//!     Endpoint::new("10.0.0.1:80".parse().unwrap()).with_zone_hints(["a"]),
//!     Endpoint::new("10.0.0.2:80".parse().unwrap()).with_zone_hints(["b"]),
//! ];
//! assert!(hints_prefer_zone(&endpoints, "a"));
//! assert!(is_hinted_local(&endpoints[0], "a"));
//! assert!(!is_hinted_local(&endpoints[1], "a"));
//! // No endpoint is hinted for zone c: the hints do not apply there.
//! assert!(!hints_prefer_zone(&endpoints, "c"));
//! ```

use crate::endpoint::Endpoint;

/// kube-proxy's `topologyModeFromHints` for zones: `true` when every ready endpoint carries zone
/// hints and at least one is hinted for `zone`. Only then should a client keep to the endpoints
/// hinted for its zone; otherwise hints are incomplete (the controller is still assigning them,
/// or hints are off) and every endpoint is fair game.
///
/// Endpoints that are not ready are not looked at, as in kube-proxy, so the hints never filter
/// the serving-and-terminating fallback: with no ready endpoint the answer is `false`.
pub fn hints_prefer_zone<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    zone: &str,
) -> bool {
    hints_apply(endpoints, Endpoint::has_zone_hints, |endpoint| {
        endpoint.is_hinted_for(zone)
    })
}

/// kube-proxy's completeness test, for zone or node hints: every ready endpoint `has` hints of
/// the kind, and at least one is `hinted` for the client.
fn hints_apply<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    has: impl Fn(&Endpoint) -> bool,
    hinted: impl Fn(&Endpoint) -> bool,
) -> bool {
    let mut any_ready = false;
    let mut hinted_for_client = false;
    for endpoint in endpoints.into_iter().filter(|e| e.readiness().is_ready()) {
        any_ready = true;
        if !has(endpoint) {
            return false;
        }
        hinted_for_client |= hinted(endpoint);
    }
    any_ready && hinted_for_client
}

/// kube-proxy's `topologyModeFromHints` for nodes (`PreferSameNode`), looked at before the
/// zone rule: `true` when every ready endpoint carries node hints and at least one is hinted
/// for `node`. Then a client on `node` keeps to the ready endpoints hinted for it; otherwise
/// the zone hints decide ([`hints_prefer_zone`]).
///
/// ```
/// use waypost_discovery::Endpoint;
/// use waypost_discovery::topology::{hints_prefer_node, is_hinted_for_node_local};
///
/// let endpoints = [
///     Endpoint::new("10.0.0.1:80".parse().unwrap()).with_node_hints(["n1"]),
///     Endpoint::new("10.0.0.2:80".parse().unwrap()).with_node_hints(["n2"]),
/// ];
/// assert!(hints_prefer_node(&endpoints, "n1"));
/// assert!(is_hinted_for_node_local(&endpoints[0], "n1"));
/// assert!(!is_hinted_for_node_local(&endpoints[1], "n1"));
/// // No endpoint is hinted for node n3: the node hints do not apply there.
/// assert!(!hints_prefer_node(&endpoints, "n3"));
/// ```
pub fn hints_prefer_node<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    node: &str,
) -> bool {
    hints_apply(endpoints, Endpoint::has_node_hints, |endpoint| {
        endpoint.is_hinted_for_node(node)
    })
}

/// Whether `endpoint` takes the traffic of a client on `node` once [`hints_prefer_node`] said
/// the node hints apply: it is ready and hinted for `node`.
pub fn is_hinted_for_node_local(endpoint: &Endpoint, node: &str) -> bool {
    endpoint.readiness().is_ready() && endpoint.is_hinted_for_node(node)
}

/// Whether `endpoint` takes the traffic of `zone` once [`hints_prefer_zone`] said the hints
/// apply: it is ready and hinted for `zone`.
pub fn is_hinted_local(endpoint: &Endpoint, zone: &str) -> bool {
    endpoint.readiness().is_ready() && endpoint.is_hinted_for(zone)
}

/// Zone-aware routing's test: the endpoint's `zone` field is `zone`.
pub fn is_in_zone(endpoint: &Endpoint, zone: &str) -> bool {
    endpoint.zone() == Some(zone)
}
