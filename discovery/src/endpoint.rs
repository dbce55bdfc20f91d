//! One backend a request can be sent to.
//!
//! An [`Endpoint`] is a socket address plus everything a balancer needs to decide how much
//! traffic the address should get: a weight, where it runs (zone, node), its name (hostname, hash
//! key), whether it is fully ready or only serving while it terminates, and the zones the
//! topology controller hinted it for.
//!
//! The address is the endpoint's identity: an [`EndpointSet`](crate::EndpointSet) holds at most
//! one endpoint per address, and balancers key their per-endpoint state (latency, in-flight
//! requests, ejection) by it, so that state survives every update that keeps the address.
//!
//! Endpoints are cloned whenever a snapshot is rebuilt, so a clone is cheap: the address, weight
//! and readiness are copied and every descriptive attribute lives behind one shared [`Arc`].
//!
//! ```
//! use waypost_discovery::{Endpoint, Readiness};
//!
//! let endpoint = Endpoint::new("10.1.2.3:8080".parse().unwrap())
//!     .with_weight(3)
//!     .with_zone("eu-west-1a")
//!     .with_hostname("api-0");
//! assert_eq!(endpoint.weight(), 3);
//! assert_eq!(endpoint.zone(), Some("eu-west-1a"));
//! assert_eq!(endpoint.readiness(), Readiness::Ready);
//! assert!(endpoint.accepts_new_requests());
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

/// Whether an endpoint is fully ready or only still serving while it shuts down.
///
/// Kubernetes marks a pod that is being deleted `terminating`; while its readiness probe still
/// passes it is also `serving`. Such an endpoint finishes the work it has, and is used only when
/// no [`Ready`](Readiness::Ready) endpoint is left (kube-proxy's graceful-drain rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Readiness {
    /// Ready to take new requests.
    #[default]
    Ready,
    /// Shutting down but still serving; use only when nothing is [`Ready`](Readiness::Ready).
    Terminating,
}

impl Readiness {
    /// Returns `true` for [`Readiness::Ready`].
    pub fn is_ready(self) -> bool {
        self == Readiness::Ready
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Readiness::Ready => "ready",
            Readiness::Terminating => "terminating",
        })
    }
}

/// The weight an endpoint gets when its source says nothing about it.
pub const DEFAULT_WEIGHT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Attributes {
    zone: Option<Box<str>>,
    node: Option<Box<str>>,
    hostname: Option<Box<str>>,
    hash_key: Option<Box<str>>,
    zone_hints: Box<[Box<str>]>,
}

/// Shared by every endpoint built without descriptive attributes, so that
/// [`Endpoint::new`] does not allocate.
static NO_ATTRIBUTES: LazyLock<Arc<Attributes>> = LazyLock::new(Arc::default);

/// A backend address with the attributes balancers use.
///
/// Built with [`Endpoint::new`] and the `with_*` methods. Two endpoints are equal when every
/// field is equal; use [`Endpoint::address`] for identity.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    address: SocketAddr,
    weight: u32,
    readiness: Readiness,
    attributes: Arc<Attributes>,
}

impl Endpoint {
    /// A ready endpoint at `address` with [`DEFAULT_WEIGHT`] and no other attributes.
    pub fn new(address: SocketAddr) -> Self {
        Endpoint {
            address,
            weight: DEFAULT_WEIGHT,
            readiness: Readiness::Ready,
            attributes: Arc::clone(&NO_ATTRIBUTES),
        }
    }

    /// Sets the relative weight. `0` keeps the endpoint known (requests already sent to it
    /// finish) but gives it no new requests.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets whether the endpoint is ready or serving while terminating.
    #[must_use]
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Sets the zone the endpoint runs in (Kubernetes `topology.kubernetes.io/zone`).
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.attributes).zone = Some(zone.into().into_boxed_str());
        self
    }

    /// Sets the node the endpoint runs on.
    #[must_use]
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.attributes).node = Some(node.into().into_boxed_str());
        self
    }

    /// Sets the endpoint's hostname (a pod's hostname, an SRV target).
    #[must_use]
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.attributes).hostname = Some(hostname.into().into_boxed_str());
        self
    }

    /// Sets the key consistent-hashing policies place this endpoint by, instead of its
    /// address. A stable name (a StatefulSet pod name) keeps placement when the IP changes.
    #[must_use]
    pub fn with_hash_key(mut self, key: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.attributes).hash_key = Some(key.into().into_boxed_str());
        self
    }

    /// Sets the zones the topology controller hinted this endpoint for
    /// (EndpointSlice `hints.forZones`).
    #[must_use]
    pub fn with_zone_hints<I, S>(mut self, zones: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Arc::make_mut(&mut self.attributes).zone_hints = zones
            .into_iter()
            .map(|zone| zone.into().into_boxed_str())
            .collect();
        self
    }

    /// The socket address, which is also the endpoint's identity.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The relative weight; `0` means "no new requests".
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether the endpoint is ready or serving while terminating.
    pub fn readiness(&self) -> Readiness {
        self.readiness
    }

    /// `true` when the endpoint may be given new requests: its weight is not zero.
    ///
    /// A [`Terminating`](Readiness::Terminating) endpoint still accepts requests when it is
    /// in a set: sources only publish terminating endpoints when nothing is ready.
    pub fn accepts_new_requests(&self) -> bool {
        self.weight > 0
    }

    /// The zone, when known.
    pub fn zone(&self) -> Option<&str> {
        self.attributes.zone.as_deref()
    }

    /// The node, when known.
    pub fn node(&self) -> Option<&str> {
        self.attributes.node.as_deref()
    }

    /// The hostname, when known.
    pub fn hostname(&self) -> Option<&str> {
        self.attributes.hostname.as_deref()
    }

    /// The explicit hash key, when one was set. Hashing policies fall back to the address.
    pub fn hash_key(&self) -> Option<&str> {
        self.attributes.hash_key.as_deref()
    }

    /// The zones this endpoint is hinted for; empty when there are no hints.
    pub fn zone_hints(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.attributes.zone_hints.iter().map(|zone| &**zone)
    }

    /// `true` when the endpoint carries at least one zone hint.
    pub fn has_zone_hints(&self) -> bool {
        !self.attributes.zone_hints.is_empty()
    }

    /// `true` when the endpoint is hinted for `zone`.
    pub fn is_hinted_for(&self, zone: &str) -> bool {
        self.attributes
            .zone_hints
            .iter()
            .any(|hint| &**hint == zone)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(address: SocketAddr) -> Self {
        Endpoint::new(address)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Endpoint");
        debug
            .field("address", &self.address)
            .field("weight", &self.weight)
            .field("readiness", &self.readiness);
        let attributes = &*self.attributes;
        if let Some(zone) = &attributes.zone {
            debug.field("zone", zone);
        }
        if let Some(node) = &attributes.node {
            debug.field("node", node);
        }
        if let Some(hostname) = &attributes.hostname {
            debug.field("hostname", hostname);
        }
        if let Some(hash_key) = &attributes.hash_key {
            debug.field("hash_key", hash_key);
        }
        if !attributes.zone_hints.is_empty() {
            debug.field("zone_hints", &attributes.zone_hints);
        }
        debug.finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.address, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn new_endpoints_share_empty_attributes() {
        let a = Endpoint::new(addr("127.0.0.1:1"));
        let b = Endpoint::new(addr("127.0.0.1:2"));
        assert!(Arc::ptr_eq(&a.attributes, &b.attributes));
    }

    #[test]
    fn setting_an_attribute_does_not_touch_other_endpoints() {
        let a = Endpoint::new(addr("127.0.0.1:1"));
        let b = a.clone().with_zone("z1").with_zone_hints(["z1", "z2"]);
        assert_eq!(a.zone(), None);
        assert_eq!(b.zone(), Some("z1"));
        assert!(b.is_hinted_for("z2"));
        assert!(!b.is_hinted_for("z3"));
        assert_eq!(b.zone_hints().collect::<Vec<_>>(), ["z1", "z2"]);
        assert_ne!(a, b);
    }

    #[test]
    fn weight_zero_takes_no_new_requests() {
        let endpoint = Endpoint::new(addr("[::1]:80")).with_weight(0);
        assert!(!endpoint.accepts_new_requests());
        assert_eq!(endpoint.to_string(), "[::1]:80");
    }
}
