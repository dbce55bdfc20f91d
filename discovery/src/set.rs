//! Immutable snapshots of a target's endpoints.
//!
//! An [`EndpointSet`] is what a source publishes and what every request reads: a sorted,
//! deduplicated list of [`Endpoint`]s with the revision it was published as. It never changes
//! after it is built, so any number of readers can hold it while the source builds the next one
//! off the hot path.
//!
//! Deduplication keeps one endpoint per address. When two entries share an address (normal while
//! the Kubernetes EndpointSlice controller moves endpoints between slices), the
//! [`Ready`](Readiness::Ready) one wins over a [`Terminating`](Readiness::Terminating) one; among
//! equals the first one given wins, so the result does not depend on anything but the input.
//!
//! ```
//! use waypost_discovery::{Endpoint, EndpointSet, Readiness};
//!
//! let a: std::net::SocketAddr = "10.0.0.2:80".parse().unwrap();
//! let b: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
//! let set = EndpointSet::new([
//!     Endpoint::new(a).with_readiness(Readiness::Terminating),
//!     Endpoint::new(b),
//!     Endpoint::new(a),
//! ]);
//! assert_eq!(set.len(), 2);
//! assert_eq!(set.addresses().collect::<Vec<_>>(), [b, a]);
//! assert_eq!(set.get(&a).unwrap().readiness(), Readiness::Ready);
//! ```

use std::net::SocketAddr;
use std::ops::Deref;

use crate::endpoint::{Endpoint, Readiness};

/// A sorted, deduplicated, immutable list of endpoints with a revision.
///
/// Dereferences to `[Endpoint]`, sorted by address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EndpointSet {
    revision: u64,
    endpoints: Box<[Endpoint]>,
}

impl EndpointSet {
    /// Builds a set at revision 0 from any endpoints, sorting them by address and keeping one
    /// per address (ready before terminating, then the first given).
    pub fn new<I>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = Endpoint>,
    {
        let mut endpoints: Vec<Endpoint> = endpoints.into_iter().collect();
        // A stable sort keeps input order among equal keys, so "first given wins" holds.
        endpoints.sort_by_key(|endpoint| (endpoint.address(), rank(endpoint.readiness())));
        endpoints.dedup_by_key(|endpoint| endpoint.address());
        EndpointSet {
            revision: 0,
            endpoints: endpoints.into_boxed_slice(),
        }
    }

    /// The empty set at revision 0, which every [`Endpoints`](crate::Endpoints) handle starts
    /// with.
    pub fn empty() -> Self {
        EndpointSet {
            revision: 0,
            endpoints: Box::default(),
        }
    }

    pub(crate) fn with_revision(mut self, revision: u64) -> Self {
        self.revision = revision;
        self
    }

    /// The revision this set was published as; 0 for a set that was never published.
    /// Every publication that changes the endpoints increases it by one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The endpoints, sorted by address.
    pub fn as_slice(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint at `address`, if any. `O(log n)`.
    pub fn get(&self, address: &SocketAddr) -> Option<&Endpoint> {
        self.index_of(address).map(|index| &self.endpoints[index])
    }

    /// The position of the endpoint at `address` in [`as_slice`](Self::as_slice), if any.
    pub fn index_of(&self, address: &SocketAddr) -> Option<usize> {
        self.endpoints
            .binary_search_by(|endpoint| endpoint.address().cmp(address))
            .ok()
    }

    /// `true` when an endpoint has this address.
    pub fn contains(&self, address: &SocketAddr) -> bool {
        self.index_of(address).is_some()
    }

    /// The addresses, in order.
    pub fn addresses(&self) -> impl ExactSizeIterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(Endpoint::address)
    }

    /// The endpoints at the positions where `keep` is `true` (positions beyond `keep` are
    /// dropped), at this set's revision: a consumer's view of a published set, such as a
    /// balancer's subset, that changes exactly when the set does.
    pub fn keeping(&self, keep: &[bool]) -> EndpointSet {
        EndpointSet {
            revision: self.revision,
            endpoints: self
                .endpoints
                .iter()
                .zip(keep)
                .filter(|(_, keep)| **keep)
                .map(|(endpoint, _)| endpoint.clone())
                .collect(),
        }
    }

    /// `true` when both sets hold the same endpoints with the same attributes, whatever their
    /// revisions.
    pub fn same_endpoints(&self, other: &EndpointSet) -> bool {
        self.endpoints == other.endpoints
    }

    /// What changed from `self` to `next`: endpoints added, removed, and kept at the same address
    /// with different attributes (weight, readiness, zone, ...).
    pub fn diff<'a>(&'a self, next: &'a EndpointSet) -> Diff<'a> {
        let mut diff = Diff::default();
        let (old, new) = (&*self.endpoints, &*next.endpoints);
        let (mut i, mut j) = (0, 0);
        while i < old.len() && j < new.len() {
            match old[i].address().cmp(&new[j].address()) {
                std::cmp::Ordering::Less => {
                    diff.removed.push(&old[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    diff.added.push(&new[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if old[i] != new[j] {
                        diff.changed.push((&old[i], &new[j]));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        diff.removed.extend(&old[i..]);
        diff.added.extend(&new[j..]);
        diff
    }
}

fn rank(readiness: Readiness) -> u8 {
    match readiness {
        Readiness::Ready => 0,
        Readiness::Terminating => 1,
    }
}

impl Default for EndpointSet {
    fn default() -> Self {
        EndpointSet::empty()
    }
}

impl Deref for EndpointSet {
    type Target = [Endpoint];

    fn deref(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

impl<'a> IntoIterator for &'a EndpointSet {
    type Item = &'a Endpoint;
    type IntoIter = std::slice::Iter<'a, Endpoint>;

    fn into_iter(self) -> Self::IntoIter {
        self.endpoints.iter()
    }
}

impl FromIterator<Endpoint> for EndpointSet {
    fn from_iter<I: IntoIterator<Item = Endpoint>>(iter: I) -> Self {
        EndpointSet::new(iter)
    }
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSet")
            .field("revision", &self.revision)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// The difference between two [`EndpointSet`]s, from [`EndpointSet::diff`]. Each list is in
/// address order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff<'a> {
    /// Endpoints only in the newer set.
    pub added: Vec<&'a Endpoint>,
    /// Endpoints only in the older set.
    pub removed: Vec<&'a Endpoint>,
    /// Endpoints at the same address whose attributes changed, as `(old, new)`.
    pub changed: Vec<(&'a Endpoint, &'a Endpoint)>,
}

impl Diff<'_> {
    /// `true` when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn diff_reports_added_removed_and_changed() {
        let old = EndpointSet::new([ep(1), ep(2), ep(3)]);
        let new = EndpointSet::new([ep(2).with_weight(5), ep(3), ep(4)]);
        let diff = old.diff(&new);
        assert_eq!(diff.removed, [&ep(1)]);
        assert_eq!(diff.added, [&ep(4)]);
        assert_eq!(diff.changed, [(&ep(2), &ep(2).with_weight(5))]);
        assert!(old.diff(&old).is_empty());
    }

    #[test]
    fn first_of_equals_wins() {
        let set = EndpointSet::new([ep(1).with_zone("a"), ep(1).with_zone("b")]);
        assert_eq!(set[0].zone(), Some("a"));
    }

    #[test]
    fn keeping_a_subset_keeps_order_and_revision() {
        let set = EndpointSet::new([ep(1), ep(2), ep(3)]).with_revision(7);
        let kept = set.keeping(&[true, false, true]);
        assert_eq!(
            kept.addresses().collect::<Vec<_>>(),
            [ep(1).address(), ep(3).address()]
        );
        assert_eq!(kept.revision(), 7);
        assert_eq!(set.keeping(&[false]).len(), 0);
    }

    #[test]
    fn lookup_by_address() {
        let set = EndpointSet::new([ep(3), ep(1)]);
        assert_eq!(set.index_of(&ep(3).address()), Some(1));
        assert!(!set.contains(&ep(2).address()));
        assert!(EndpointSet::empty().get(&ep(1).address()).is_none());
    }
}
