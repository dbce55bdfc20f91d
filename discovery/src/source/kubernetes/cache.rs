//! The merge: every EndpointSlice of a Service, by name, and the endpoint set they make together.
//!
//! The EndpointSlice controller spreads a Service over several slices and moves endpoints
//! between them as pods come and go; a consumer that keeps only "the slice that changed last"
//! loses every other slice (Go's kuberesolver did, in its issue 66). [`SliceCache`] keeps what
//! each slice contributes under the slice's name, the way kube-proxy's `EndpointSliceCache`
//! does:
//!
//! - an added or modified slice replaces its own entry, a deleted slice removes only its own
//!   entry, and the merged set is rebuilt from all entries after every change;
//! - a relist (the watcher's `Init`, `InitApply`..., `InitDone`) fills a separate map and swaps
//!   it in whole at `InitDone`, so a half-listed Service is never merged: until the list is
//!   complete, the previous slices keep serving;
//! - the merge uses the ready endpoints of all slices; only when none is ready anywhere does it
//!   fall back to the endpoints that are serving while terminating (kube-proxy's graceful
//!   drain). An endpoint listed by two slices at once (normal while the controller rebalances)
//!   appears once, and a ready entry wins over a terminating one; an entry that is neither
//!   ready nor terminating (a new pod that got the IP of a draining one) wins over a
//!   terminating one, so that address is not used even as the draining fallback (kube-proxy
//!   since kubernetes PR 135593). Among equal entries the slice whose key sorts first wins, so
//!   the result depends only on the slices, not on the order of events;
//! - slices are keyed by namespace and name; a cache made
//!   [`in_namespace`](SliceCache::in_namespace) ignores slices from any other namespace, as
//!   kube-proxy does (a defence against a server or proxy that ignores the request's scope).
//!
//! Slices are converted once, when they arrive ([`convert_slice`]); a rebuild only clones the
//! converted endpoints (one reference-count increment each) and sorts them. The cache is plain
//! data with no I/O: the watch task feeds it, and so can any other source of slices (a
//! reflector of your own, a test).
//!
//! ```
//! use k8s_openapi::api::discovery::v1::EndpointSlice;
//! use waypost_discovery::source::kubernetes::{CacheStatus, SliceCache};
//!
//! fn slice(name: &str, ips: &[&str]) -> EndpointSlice {
//!     let endpoints: Vec<_> = ips.iter().map(|ip| serde_json::json!({ "addresses": [ip] })).collect();
//!     serde_json::from_value(serde_json::json!({
//!         "metadata": { "name": name, "labels": { "kubernetes.io/service-name": "api" } },
//!         "addressType": "IPv4",
//!         "ports": [{ "name": "", "port": 8080 }],
//!         "endpoints": endpoints,
//!     }))
//!     .unwrap()
//! }
//!
//! let mut cache = SliceCache::new("api", None);
//! // A complete list first, as the watcher's Init, InitApply..., InitDone.
//! cache.begin_relist();
//! cache.apply(&slice("api-a", &["10.0.0.1", "10.0.0.2"]));
//! cache.apply(&slice("api-b", &["10.0.0.3"]));
//! cache.finish_relist();
//! assert_eq!(cache.endpoint_set().len(), 3);
//!
//! // Deleting one slice removes only its endpoints.
//! cache.delete("api-a");
//! assert_eq!(cache.endpoint_set().len(), 1);
//! assert_eq!(cache.status(), CacheStatus::Ready);
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::convert::{SliceEndpoints, UnusableReason, UnusableSlice, convert_slice};
use crate::endpoint::Endpoint;
use crate::set::EndpointSet;
use crate::target::PortSelector;

/// What one slice holds in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Usable(SliceEndpoints),
    Unusable(UnusableSlice),
}

/// Slices by namespace, then name.
type Slices = BTreeMap<(String, String), Entry>;

/// Every EndpointSlice of one Service, as contributions for one target, and their merge.
///
/// The rules are kube-proxy's:
///
/// - each slice is converted once, by [`convert_slice`], and kept under its name; an added or
///   modified slice replaces its own entry, a deleted slice removes only its own entry;
/// - a relist ([`begin_relist`](Self::begin_relist), [`apply`](Self::apply) for every listed
///   slice, [`finish_relist`](Self::finish_relist)) fills a separate map that replaces the
///   current one in one step at the end, so a half-listed Service is never merged;
/// - the merge ([`endpoint_set`](Self::endpoint_set)) takes the ready endpoints of every slice,
///   or, only when none is ready anywhere, the ones serving while terminating; an address listed
///   by several slices appears once (ready before terminating, then the slice whose key sorts
///   first), and an address that some slice lists as neither ready nor terminating is never a
///   draining fallback, so the result depends only on the slices, not on the order of events;
/// - slices are keyed by namespace and name; with [`in_namespace`](Self::in_namespace) a slice
///   of another namespace is ignored, and a slice of another Service (or without the
///   `kubernetes.io/service-name` label) is never kept: applying it removes the slice of that
///   name, as a watch with a working label selector would have sent its deletion.
///
/// The cache is plain data without I/O: the watch task feeds it, and so can any other source of
/// slices (a reflector of your own, a test).
#[derive(Debug, Clone)]
pub struct SliceCache {
    service: String,
    namespace: Option<String>,
    port: Option<PortSelector>,
    slices: Slices,
    relist: Option<Slices>,
    listed: bool,
}

/// What [`SliceCache::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The slice's contribution changed: rebuild the set.
    Changed,
    /// The slice changed nothing the target sees.
    Unchanged,
    /// The slice is unusable and contributes nothing; `changed` says whether that removed a
    /// previous contribution.
    Unusable {
        /// Why.
        error: UnusableSlice,
        /// Whether the merged set may have changed.
        changed: bool,
    },
}

impl Applied {
    /// `true` when the merged set may have changed.
    pub fn is_changed(&self) -> bool {
        match self {
            Applied::Changed => true,
            Applied::Unchanged => false,
            Applied::Unusable { changed, .. } => *changed,
        }
    }
}

/// Whether the merged set is a usable answer, and if not, why: what a source reports in its
/// health.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    /// No complete list has been received yet.
    Unlisted,
    /// At least one slice selects the target's port: the set (possibly empty, when no pod is
    /// ready or serving) is the answer.
    Ready,
    /// The Service has no EndpointSlice at all: it does not exist, is an `ExternalName`
    /// Service, or has no selector and nobody wrote slices for it.
    NoSlices,
    /// Slices exist, but none has the target's port (or the target names no port and the
    /// slices have several).
    NoMatchingPort {
        /// The ports the slices offer, as `name:number` or `number` (with `/UDP` or `/SCTP`
        /// after ports of other protocols, which a TCP client never uses), sorted and
        /// deduplicated.
        offered: Vec<String>,
    },
    /// Slices exist, but every one is unusable (malformed, or `FQDN`).
    NoUsableSlice {
        /// How many slices there are.
        slices: usize,
    },
}

impl SliceCache {
    /// An empty cache for Service `service` and a target that selects `port` (`None`: the
    /// slices' only port).
    pub fn new(service: impl Into<String>, port: Option<PortSelector>) -> Self {
        SliceCache {
            service: service.into(),
            namespace: None,
            port,
            slices: Slices::new(),
            relist: None,
            listed: false,
        }
    }

    /// Only slices of `namespace` count: a slice that names another namespace is ignored (its
    /// [`apply`](Self::apply) returns [`Applied::Unusable`] and changes nothing). Slices that name
    /// no namespace are taken to be in it.
    #[must_use]
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The Service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The port the target selects (`None`: the slices' only port).
    pub fn port(&self) -> Option<&PortSelector> {
        self.port.as_ref()
    }

    /// The namespace set with [`in_namespace`](Self::in_namespace).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The key of `slice`, or the error when it belongs to another namespace.
    fn key(&self, slice: &EndpointSlice) -> Result<(String, String), UnusableSlice> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        match (
            slice.metadata.namespace.as_deref(),
            self.namespace.as_deref(),
        ) {
            (Some(theirs), Some(ours)) if theirs != ours => Err(UnusableSlice::new(
                &name,
                UnusableReason::OtherNamespace(theirs.to_owned()),
            )),
            (Some(theirs), _) => Ok((theirs.to_owned(), name)),
            (None, ours) => Ok((ours.unwrap_or_default().to_owned(), name)),
        }
    }

    /// Adds or replaces a slice (a watch `Apply` event).
    ///
    /// During a relist (after [`begin_relist`](Self::begin_relist)) the slice goes into the
    /// list being built instead, and the result says whether it differs from the slice's entry
    /// in the current map.
    pub fn apply(&mut self, slice: &EndpointSlice) -> Applied {
        let converted = convert_slice(slice, &self.service, self.port.as_ref());
        self.apply_converted(slice, converted)
    }

    /// Adds or replaces a slice that could not be decoded (`detail`: what the decoder said),
    /// known by the metadata that could be read (`slice`): an unusable entry, which takes the
    /// place of the slice's earlier contribution, as any unusable update does.
    pub fn apply_undecodable(&mut self, slice: &EndpointSlice, detail: &str) -> Applied {
        // The name and label checks first: a foreign or nameless object is treated as such.
        let converted = match convert_slice(slice, &self.service, self.port.as_ref()) {
            Err(error)
                if is_foreign(&error) || matches!(error.reason(), UnusableReason::MissingName) =>
            {
                Err(error)
            }
            _ => Err(UnusableSlice::new(
                slice.metadata.name.as_deref().unwrap_or_default(),
                UnusableReason::Undecodable(detail.to_owned()),
            )),
        };
        self.apply_converted(slice, converted)
    }

    fn apply_converted(
        &mut self,
        slice: &EndpointSlice,
        converted: Result<SliceEndpoints, UnusableSlice>,
    ) -> Applied {
        let name = match self.key(slice) {
            Ok(key) => key,
            Err(error) => {
                return Applied::Unusable {
                    error,
                    changed: false,
                };
            }
        };
        let entry = match converted {
            Ok(contribution) => Entry::Usable(contribution),
            Err(error) if is_foreign(&error) => {
                // Not a slice of this Service (a server that ignores the label selector, or a
                // slice relabelled away): it leaves the map if it was there, and does not count
                // as one of the Service's slices.
                let was_there = match &mut self.relist {
                    Some(relist) => {
                        relist.remove(&name);
                        self.slices.contains_key(&name)
                    }
                    None => self.slices.remove(&name).is_some(),
                };
                return Applied::Unusable {
                    error,
                    changed: was_there,
                };
            }
            Err(error) => Entry::Unusable(error),
        };
        // During a relist, compare with the current map: that is what the swap will change.
        let previous = self.slices.get(&name);
        let changed = previous != Some(&entry) && contributes(previous, &entry);
        let applied = match &entry {
            Entry::Usable(_) if changed => Applied::Changed,
            Entry::Usable(_) => Applied::Unchanged,
            Entry::Unusable(error) => Applied::Unusable {
                error: error.clone(),
                changed,
            },
        };
        match &mut self.relist {
            Some(relist) => relist.insert(name, entry),
            None => self.slices.insert(name, entry),
        };
        applied
    }

    /// What `slice`'s entry contributes now (during a relist, in the list being built); `None`
    /// when the cache has no usable entry for it.
    pub fn contribution(&self, slice: &EndpointSlice) -> Option<&SliceEndpoints> {
        let key = self.key(slice).ok()?;
        let slices = self.relist.as_ref().unwrap_or(&self.slices);
        match slices.get(&key)? {
            Entry::Usable(contribution) => Some(contribution),
            Entry::Unusable(_) => None,
        }
    }

    /// Removes a slice (a watch `Delete` event); `true` when it was there. Only that slice's
    /// contribution goes: an endpoint that another slice also lists stays. A slice of another
    /// namespace removes nothing.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> bool {
        let Ok(key) = self.key(slice) else {
            return false;
        };
        let slices = self.relist.as_mut().unwrap_or(&mut self.slices);
        slices.remove(&key).is_some()
    }

    /// Removes the slice named `name` in the cache's namespace (in every namespace when the
    /// cache has none); `true` when one was there. See [`delete_slice`](Self::delete_slice).
    pub fn delete(&mut self, name: &str) -> bool {
        let namespace = self.namespace.clone();
        let slices = self.relist.as_mut().unwrap_or(&mut self.slices);
        let before = slices.len();
        slices.retain(|(ns, slice), _| {
            slice != name || namespace.as_deref().is_some_and(|ours| ours != ns)
        });
        slices.len() != before
    }

    /// Starts a relist (the watcher's `Init`): slices applied from now on fill a new map, and the
    /// current one keeps serving until [`finish_relist`](Self::finish_relist).
    pub fn begin_relist(&mut self) {
        self.relist = Some(Slices::new());
    }

    /// Ends a relist (the watcher's `InitDone`): the listed slices replace the current map in
    /// one step; slices that were not listed are gone. Returns `true` when the map changed.
    /// Without a relist in progress, only marks the cache listed.
    pub fn finish_relist(&mut self) -> bool {
        let first = !self.listed;
        self.listed = true;
        match self.relist.take() {
            Some(listed) => {
                let changed = listed != self.slices;
                self.slices = listed;
                changed || first
            }
            None => first,
        }
    }

    /// `true` between [`begin_relist`](Self::begin_relist) and
    /// [`finish_relist`](Self::finish_relist).
    pub fn is_relisting(&self) -> bool {
        self.relist.is_some()
    }

    /// `true` once a complete list has been received.
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// How many slices the current map holds, usable or not.
    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// The merged endpoints of the current map: the ready endpoints of every slice, or, when
    /// none is ready, the ones serving while terminating.
    pub fn endpoint_set(&self) -> EndpointSet {
        EndpointSet::new(self.merged_endpoints())
    }

    /// The endpoints [`endpoint_set`](Self::endpoint_set) is built from, in slice order
    /// (namespace, then name), before sorting and deduplication.
    ///
    /// A terminating entry (ready or draining) of an address that some slice lists as not
    /// terminating (ready, or not ready yet) is passed over, as kube-proxy lets a
    /// non-terminating entry replace a terminating one. Of the rest, the ready entries are used,
    /// or, when none is ready, the draining ones.
    pub fn merged_endpoints(&self) -> Vec<Endpoint> {
        let usable = || {
            self.slices.values().filter_map(|entry| match entry {
                Entry::Usable(contribution) => Some(contribution),
                Entry::Unusable(_) => None,
            })
        };
        // The addresses with a terminating entry; usually none, and then nothing is passed over.
        let terminating: HashSet<SocketAddr> = usable()
            .flat_map(SliceEndpoints::endpoints_terminating)
            .filter(|&(_, terminating)| terminating)
            .map(|(endpoint, _)| endpoint.address())
            .collect();
        // Of those, the ones some slice also lists as not terminating.
        let shadowed: HashSet<SocketAddr> = if terminating.is_empty() {
            HashSet::new()
        } else {
            usable()
                .flat_map(|c| {
                    c.endpoints_terminating()
                        .filter(|&(_, terminating)| !terminating)
                        .map(|(endpoint, _)| endpoint.address())
                        .chain(c.unready().iter().copied())
                })
                .filter(|address| terminating.contains(address))
                .collect()
        };
        let kept = |&(endpoint, terminating): &(&Endpoint, bool)| {
            !(terminating && shadowed.contains(&endpoint.address()))
        };
        let any_ready = usable().any(|c| {
            c.endpoints_terminating()
                .filter(kept)
                .any(|(endpoint, _)| endpoint.readiness().is_ready())
        });
        let total = usable().map(|c| c.endpoints().len()).sum();
        let mut endpoints = Vec::with_capacity(total);
        for contribution in usable() {
            endpoints.extend(
                contribution
                    .endpoints_terminating()
                    .filter(kept)
                    .filter(|(endpoint, _)| endpoint.readiness().is_ready() == any_ready)
                    .map(|(endpoint, _)| endpoint.clone()),
            );
        }
        endpoints
    }

    /// Whether the merged set is a usable answer; see [`CacheStatus`].
    pub fn status(&self) -> CacheStatus {
        if !self.listed {
            return CacheStatus::Unlisted;
        }
        if self.slices.is_empty() {
            return CacheStatus::NoSlices;
        }
        let mut offered = Vec::new();
        let mut usable = false;
        let mut placeholder = false;
        for entry in self.slices.values() {
            match entry {
                Entry::Usable(contribution) if contribution.port().is_some() => {
                    return CacheStatus::Ready;
                }
                Entry::Usable(contribution) if contribution.is_placeholder() => {
                    placeholder = true;
                }
                Entry::Usable(contribution) if !contribution.is_fqdn() => {
                    usable = true;
                    offered.extend(contribution.offered_ports().iter().cloned());
                }
                Entry::Usable(_) | Entry::Unusable(_) => {}
            }
        }
        if usable {
            offered.sort();
            offered.dedup();
            CacheStatus::NoMatchingPort { offered }
        } else if placeholder {
            // The Service has no endpoints: an empty, valid answer.
            CacheStatus::Ready
        } else {
            CacheStatus::NoUsableSlice {
                slices: self.slices.len(),
            }
        }
    }
}

/// `true` for a slice that belongs to no Service or to another one: not part of this
/// Service's map at all.
fn is_foreign(error: &UnusableSlice) -> bool {
    matches!(
        error.reason(),
        UnusableReason::OtherService(_) | UnusableReason::MissingServiceLabel
    )
}

/// Whether replacing `previous` with `entry` can change the merge: an unusable slice
/// replacing nothing or another unusable slice does not.
fn contributes(previous: Option<&Entry>, entry: &Entry) -> bool {
    !matches!(
        (previous, entry),
        (None | Some(Entry::Unusable(_)), Entry::Unusable(_))
    )
}
