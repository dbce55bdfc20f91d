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

/// The descriptive attributes, all in one allocation: a header of lengths, then the zone, node,
/// hostname, hash key, zone hints and node hints, one after another.
///
/// A 100-endpoint Kubernetes slice gives each endpoint a zone, a node, a hostname and a zone
/// hint; as five boxed strings behind a struct of options, that was six allocations and about 270
/// bytes of heap per endpoint, as one string about 80. The header is ASCII, so the whole is a
/// `str`: each length is written in 6-bit groups, low group first, with `0x40` set on every
/// group but the last. The four named attributes come first, each as `0` when absent and its
/// length plus one otherwise, then for each of the two lists (zone hints, node hints) the number
/// of entries and each entry's length.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Attributes(Arc<str>);

/// The named attributes, in the header's order.
const ZONE: usize = 0;
const NODE: usize = 1;
const HOSTNAME: usize = 2;
const HASH_KEY: usize = 3;

/// The lists, in the header's order.
const ZONE_HINTS: usize = 0;
const NODE_HINTS: usize = 1;

/// The attributes of an endpoint that has none: four absent attributes and two empty lists.
const EMPTY_ATTRIBUTES: &str = "\0\0\0\0\0\0";

impl Attributes {
    /// Built in one pass over the lists' lengths and one over their text, so that a source
    /// that sets every attribute at once allocates once.
    fn from_parts<'z, 'n, Z, N>(named: [Option<&str>; 4], zone_hints: Z, node_hints: N) -> Self
    where
        Z: Iterator<Item = &'z str> + Clone,
        N: Iterator<Item = &'n str> + Clone,
    {
        let lists = [zone_hints.clone().count(), node_hints.clone().count()];
        let body: usize = named
            .iter()
            .flatten()
            .map(|value| value.len())
            .sum::<usize>()
            + zone_hints.clone().map(str::len).sum::<usize>()
            + node_hints.clone().map(str::len).sum::<usize>();
        let mut text = String::with_capacity(body + 6 + lists[0] + lists[1]);
        for attribute in named {
            push_length(&mut text, attribute.map_or(0, |value| value.len() + 1));
        }
        push_length(&mut text, lists[ZONE_HINTS]);
        for entry in zone_hints.clone() {
            push_length(&mut text, entry.len());
        }
        push_length(&mut text, lists[NODE_HINTS]);
        for entry in node_hints.clone() {
            push_length(&mut text, entry.len());
        }
        for value in named.iter().flatten() {
            text.push_str(value);
        }
        zone_hints.for_each(|value| text.push_str(value));
        node_hints.for_each(|value| text.push_str(value));
        Attributes(Arc::from(text))
    }

    /// The named attributes and the two lists.
    fn parts(&self) -> ([Option<&str>; 4], [Hints<'_>; 2]) {
        let text = &*self.0;
        let bytes = text.as_bytes();
        let mut at = 0;
        let mut lengths = [0; 4];
        for length in &mut lengths {
            *length = read_length(bytes, &mut at);
        }
        let mut lists = [(0, 0); 2];
        for (count, first) in &mut lists {
            *count = read_length(bytes, &mut at);
            *first = at;
            for _ in 0..*count {
                read_length(bytes, &mut at);
            }
        }
        let mut named = [None; 4];
        for (value, length) in named.iter_mut().zip(lengths) {
            if length > 0 {
                *value = Some(&text[at..at + length - 1]);
                at += length - 1;
            }
        }
        let zone_hints = Hints {
            text,
            lengths: lists[ZONE_HINTS].1,
            next: at,
            remaining: lists[ZONE_HINTS].0,
        };
        // The node hints follow the zone hints in the body.
        let node_start = at + zone_hints.clone().map(str::len).sum::<usize>();
        let node_hints = Hints {
            text,
            lengths: lists[NODE_HINTS].1,
            next: node_start,
            remaining: lists[NODE_HINTS].0,
        };
        (named, [zone_hints, node_hints])
    }

    fn named(&self, which: usize) -> Option<&str> {
        self.parts().0[which]
    }

    fn list(&self, which: usize) -> Hints<'_> {
        let [zone_hints, node_hints] = self.parts().1;
        match which {
            ZONE_HINTS => zone_hints,
            _ => node_hints,
        }
    }

    /// The same attributes with one named attribute set.
    fn with_named(&self, which: usize, value: &str) -> Self {
        let (mut named, [zone_hints, node_hints]) = self.parts();
        named[which] = Some(value);
        Attributes::from_parts(named, zone_hints, node_hints)
    }

    /// The same attributes with another list `which`.
    fn with_list<'a>(&self, which: usize, entries: impl Iterator<Item = &'a str> + Clone) -> Self {
        let (named, [zone_hints, node_hints]) = self.parts();
        match which {
            ZONE_HINTS => Attributes::from_parts(named, entries, node_hints),
            _ => Attributes::from_parts(named, zone_hints, entries),
        }
    }
}

fn push_length(text: &mut String, mut length: usize) {
    loop {
        let group = (length & 0x3F) as u8;
        length >>= 6;
        if length == 0 {
            text.push(char::from(group));
            return;
        }
        text.push(char::from(group | 0x40));
    }
}

fn read_length(bytes: &[u8], at: &mut usize) -> usize {
    let mut length = 0;
    let mut shift = 0;
    loop {
        let group = bytes[*at];
        *at += 1;
        length |= usize::from(group & 0x3F) << shift;
        if group & 0x40 == 0 {
            return length;
        }
        shift += 6;
    }
}

/// The zone or node hints of [`Endpoint::zone_hints`] and [`Endpoint::node_hints`].
#[derive(Clone)]
struct Hints<'a> {
    text: &'a str,
    /// Where the next hint's length is, in the header.
    lengths: usize,
    /// Where the next hint starts.
    next: usize,
    remaining: usize,
}

impl<'a> Iterator for Hints<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let length = read_length(self.text.as_bytes(), &mut self.lengths);
        let hint = &self.text[self.next..self.next + length];
        self.next += length;
        Some(hint)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Hints<'_> {}

/// Shared by every endpoint built without descriptive attributes, so that
/// [`Endpoint::new`] does not allocate.
static NO_ATTRIBUTES: LazyLock<Attributes> =
    LazyLock::new(|| Attributes(Arc::from(EMPTY_ATTRIBUTES)));

/// A backend address with the attributes balancers use.
///
/// Built with [`Endpoint::new`] and the `with_*` methods. Two endpoints are equal when every
/// field is equal; use [`Endpoint::address`] for identity.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    address: SocketAddr,
    weight: u32,
    readiness: Readiness,
    attributes: Attributes,
}

impl Endpoint {
    /// A ready endpoint at `address` with [`DEFAULT_WEIGHT`] and no other attributes.
    pub fn new(address: SocketAddr) -> Self {
        Endpoint {
            address,
            weight: DEFAULT_WEIGHT,
            readiness: Readiness::Ready,
            attributes: NO_ATTRIBUTES.clone(),
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
        self.attributes = self.attributes.with_named(ZONE, &zone.into());
        self
    }

    /// Sets the node the endpoint runs on.
    #[must_use]
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.attributes = self.attributes.with_named(NODE, &node.into());
        self
    }

    /// Sets the endpoint's hostname (a pod's hostname, an SRV target).
    #[must_use]
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.attributes = self.attributes.with_named(HOSTNAME, &hostname.into());
        self
    }

    /// Sets the key consistent-hashing policies place this endpoint by, instead of its
    /// address. A stable name (a StatefulSet pod name) keeps placement when the IP changes.
    #[must_use]
    pub fn with_hash_key(mut self, key: impl Into<String>) -> Self {
        self.attributes = self.attributes.with_named(HASH_KEY, &key.into());
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
        let zones: Vec<String> = zones.into_iter().map(Into::into).collect();
        self.attributes = self
            .attributes
            .with_list(ZONE_HINTS, zones.iter().map(String::as_str));
        self
    }

    /// Sets the nodes the topology controller hinted this endpoint for
    /// (EndpointSlice `hints.forNodes`, written for `trafficDistribution: PreferSameNode`).
    #[must_use]
    pub fn with_node_hints<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        self.attributes = self
            .attributes
            .with_list(NODE_HINTS, nodes.iter().map(String::as_str));
        self
    }

    /// Sets the zone, node, hostname, zone hints and node hints at once, building the attributes
    /// once (a source converting many endpoints calls this instead of five `with_*`). `None`
    /// and empty lists leave an attribute unset.
    #[cfg(feature = "kubernetes")]
    #[must_use]
    pub(crate) fn with_topology<'a, Z, N>(
        mut self,
        zone: Option<&str>,
        node: Option<&str>,
        hostname: Option<&str>,
        zone_hints: Z,
        node_hints: N,
    ) -> Self
    where
        Z: Iterator<Item = &'a str> + Clone,
        N: Iterator<Item = &'a str> + Clone,
    {
        let hash_key = self.attributes.named(HASH_KEY);
        let attributes =
            Attributes::from_parts([zone, node, hostname, hash_key], zone_hints, node_hints);
        self.attributes = attributes;
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
        self.attributes.named(ZONE)
    }

    /// The node, when known.
    pub fn node(&self) -> Option<&str> {
        self.attributes.named(NODE)
    }

    /// The hostname, when known.
    pub fn hostname(&self) -> Option<&str> {
        self.attributes.named(HOSTNAME)
    }

    /// The explicit hash key, when one was set. Hashing policies fall back to the address.
    pub fn hash_key(&self) -> Option<&str> {
        self.attributes.named(HASH_KEY)
    }

    /// The zones this endpoint is hinted for; empty when there are no hints.
    pub fn zone_hints(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.attributes.list(ZONE_HINTS)
    }

    /// `true` when the endpoint carries at least one zone hint.
    pub fn has_zone_hints(&self) -> bool {
        self.attributes.list(ZONE_HINTS).len() > 0
    }

    /// `true` when the endpoint is hinted for `zone`.
    pub fn is_hinted_for(&self, zone: &str) -> bool {
        self.attributes.list(ZONE_HINTS).any(|hint| hint == zone)
    }

    /// The nodes this endpoint is hinted for; empty when there are no node hints.
    pub fn node_hints(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.attributes.list(NODE_HINTS)
    }

    /// `true` when the endpoint carries at least one node hint.
    pub fn has_node_hints(&self) -> bool {
        self.attributes.list(NODE_HINTS).len() > 0
    }

    /// `true` when the endpoint is hinted for `node`.
    pub fn is_hinted_for_node(&self, node: &str) -> bool {
        self.attributes.list(NODE_HINTS).any(|hint| hint == node)
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
        let ([zone, node, hostname, hash_key], [zone_hints, node_hints]) = self.attributes.parts();
        for (name, value) in [
            ("zone", zone),
            ("node", node),
            ("hostname", hostname),
            ("hash_key", hash_key),
        ] {
            if let Some(value) = value {
                debug.field(name, &value);
            }
        }
        if zone_hints.len() > 0 {
            debug.field("zone_hints", &zone_hints.collect::<Vec<_>>());
        }
        if node_hints.len() > 0 {
            debug.field("node_hints", &node_hints.collect::<Vec<_>>());
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
        assert!(Arc::ptr_eq(&a.attributes.0, &b.attributes.0));
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
    fn attributes_of_every_length_read_back() {
        // Lengths around each 6-bit group boundary, and text that is not ASCII.
        for length in [0, 1, 62, 63, 64, 65, 4095, 4096, 4097, 300_000] {
            let long = "é".repeat(length / 2) + &"z".repeat(length % 2);
            let endpoint = Endpoint::new(addr("127.0.0.1:1"))
                .with_hostname(long.clone())
                .with_zone("")
                .with_zone_hints([long.as_str(), "", "b"])
                .with_hash_key("k");
            assert_eq!(endpoint.hostname(), Some(long.as_str()));
            assert_eq!(endpoint.zone(), Some(""));
            assert_eq!(endpoint.node(), None);
            assert_eq!(endpoint.hash_key(), Some("k"));
            assert_eq!(endpoint.zone_hints().len(), 3);
            assert_eq!(
                endpoint.zone_hints().collect::<Vec<_>>(),
                [long.as_str(), "", "b"]
            );
            assert!(endpoint.is_hinted_for("b") && endpoint.has_zone_hints());
            assert!(!endpoint.has_node_hints());
            let endpoint = endpoint.with_node_hints(["n1", long.as_str()]);
            assert_eq!(
                endpoint.node_hints().collect::<Vec<_>>(),
                ["n1", long.as_str()]
            );
            assert_eq!(
                endpoint.zone_hints().collect::<Vec<_>>(),
                [long.as_str(), "", "b"]
            );
            assert!(endpoint.is_hinted_for_node("n1") && !endpoint.is_hinted_for_node("n2"));
            assert_eq!(endpoint.hostname(), Some(long.as_str()));
        }
    }

    proptest::proptest! {
        #[test]
        fn attributes_set_in_any_order_read_back(
            named in proptest::array::uniform4(proptest::option::of(".{0,80}")),
            hints in proptest::collection::vec(".{0,80}", 0..4),
            node_hints in proptest::collection::vec(".{0,80}", 0..3),
            hints_first in proptest::bool::ANY,
        ) {
            let mut endpoint = Endpoint::new(addr("10.0.0.1:80"));
            if hints_first {
                endpoint = endpoint
                    .with_node_hints(node_hints.iter().cloned())
                    .with_zone_hints(hints.iter().cloned());
            }
            let [zone, node, hostname, hash_key] = named.clone();
            if let Some(zone) = &zone {
                endpoint = endpoint.with_zone("overwritten").with_zone(zone.clone());
            }
            if let Some(node) = &node {
                endpoint = endpoint.with_node(node.clone());
            }
            if let Some(hostname) = &hostname {
                endpoint = endpoint.with_hostname(hostname.clone());
            }
            if let Some(hash_key) = &hash_key {
                endpoint = endpoint.with_hash_key(hash_key.clone());
            }
            if !hints_first {
                endpoint = endpoint
                    .with_zone_hints(hints.iter().cloned())
                    .with_node_hints(node_hints.iter().cloned());
            }
            proptest::prop_assert_eq!(endpoint.zone(), zone.as_deref());
            proptest::prop_assert_eq!(endpoint.node(), node.as_deref());
            proptest::prop_assert_eq!(endpoint.hostname(), hostname.as_deref());
            proptest::prop_assert_eq!(endpoint.hash_key(), hash_key.as_deref());
            proptest::prop_assert_eq!(endpoint.zone_hints().collect::<Vec<_>>(), hints.iter().map(String::as_str).collect::<Vec<_>>());
            proptest::prop_assert_eq!(endpoint.has_zone_hints(), !hints.is_empty());
            proptest::prop_assert_eq!(endpoint.node_hints().collect::<Vec<_>>(), node_hints.iter().map(String::as_str).collect::<Vec<_>>());
            // Equal attributes are equal however they were set.
            let again = Endpoint::new(addr("10.0.0.1:80"))
                .with_zone_hints(hints.iter().cloned())
                .with_node_hints(node_hints.iter().cloned());
            let again = named.iter().zip([ZONE, NODE, HOSTNAME, HASH_KEY]).fold(again, |e, (value, which)| match (value, which) {
                (None, _) => e,
                (Some(v), ZONE) => e.with_zone(v.clone()),
                (Some(v), NODE) => e.with_node(v.clone()),
                (Some(v), HOSTNAME) => e.with_hostname(v.clone()),
                (Some(v), _) => e.with_hash_key(v.clone()),
            });
            proptest::prop_assert_eq!(again, endpoint);
        }
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn topology_set_at_once_equals_topology_set_one_by_one() {
        let base = Endpoint::new(addr("10.0.0.1:80")).with_hash_key("pod-0");
        let at_once = base.clone().with_topology(
            Some("a"),
            None,
            Some("api-0"),
            ["a", "b"].into_iter(),
            ["n1"].into_iter(),
        );
        let one_by_one = base
            .with_zone("a")
            .with_hostname("api-0")
            .with_zone_hints(["a", "b"])
            .with_node_hints(["n1"]);
        assert_eq!(at_once, one_by_one);
        assert_eq!(at_once.hash_key(), Some("pod-0"));
        assert_eq!(at_once.node(), None);
    }

    #[test]
    fn weight_zero_takes_no_new_requests() {
        let endpoint = Endpoint::new(addr("[::1]:80")).with_weight(0);
        assert!(!endpoint.accepts_new_requests());
        assert_eq!(endpoint.to_string(), "[::1]:80");
    }
}
