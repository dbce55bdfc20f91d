//! Service discovery for waypost: the endpoint model, the lock-free endpoint handle, target
//! strings and discovery sources.
//!
//! waypost balances requests inside the client process. This crate answers "which endpoints
//! does this target have right now?" in a form every request can read without a lock:
//!
//! - [`Endpoint`]: an address plus what balancing needs (weight, zone, node, hostname, hash key,
//!   readiness, zone hints).
//! - [`EndpointSet`]: an immutable, sorted, deduplicated snapshot with a revision.
//! - [`Endpoints`]: the `Clone + Send + Sync` handle requests read; [`Publisher`]: the side a
//!   source writes. Reads are lock-free and allocation-free; watchers never miss the newest set;
//!   the handle reports the source's [`Health`].
//! - [`Target`]: `dns:///host:port`, `dns:///_grpc._tcp.host`, `kubernetes:///svc.ns:port`,
//!   `kubernetes://ns/svc:port`, `static:///ip:port,...`, `xds:///listener`, parsed with errors
//!   that name the bad part.
//! - [`source`]: the sources that publish sets: the static source, the DNS source
//!   (`source::dns`, feature `dns`) that follows A/AAAA or SRV records with TTL-driven refresh,
//!   the Kubernetes EndpointSlice source (`source::kubernetes`, feature `kubernetes`), and the
//!   xDS source (`source::xds`, feature `xds`) for a service-mesh control plane.
//! - [`topology`]: the topology-hints rule (kube-proxy's) and zone-aware routing's locality
//!   test, shared with the balancer.
//! - [`backoff`]: the jittered exponential backoff every waypost retry loop shares.
//! - [`DiscoverEndpoints`]: a [`tower::discover::Discover`] over a handle, for tower's own
//!   balancers.
//!
//! ```
//! use waypost_discovery::{source, Target};
//!
//! let target: Target = "static:///127.0.0.1:8080,127.0.0.1:8081".parse().unwrap();
//! let Target::Static(list) = target else { unreachable!() };
//! let endpoints = source::from_static(&list);
//!
//! // On the request path: no lock, no allocation.
//! let set = endpoints.load();
//! assert_eq!(set.len(), 2);
//! assert_eq!(set.revision(), 1);
//! ```
//!
//! # Features
//!
//! Without features the crate depends only on `arc-swap`, `tokio` (sync and time), `tower`
//! (discover) and `tracing`.
//!
//! - `dns`: the DNS source (`source::dns`) for `dns:///host:port` and `dns:///_port._proto.host`
//!   targets, through hickory-resolver on the tokio runtime. Note that the name of a ClusterIP
//!   Service resolves to one virtual IP, which leaves nothing to balance: use a headless
//!   Service or a `kubernetes:///` target.
//! - `kubernetes`: `source::kubernetes`, the EndpointSlice source for `kubernetes:///` targets
//!   (kube with its runtime's watcher, k8s-openapi; the application picks the k8s-openapi
//!   version feature).
//! - `xds`: `source::xds`, the xDS source for `xds:///listener` targets (envoy-types protos,
//!   tonic for the ADS stream, serde_json for the bootstrap).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
mod discover;
mod endpoint;
mod endpoints;
mod error;
mod set;
pub mod source;
mod target;
pub mod topology;

pub use discover::DiscoverEndpoints;
pub use endpoint::{DEFAULT_WEIGHT, Endpoint, Readiness};
pub use endpoints::{
    CachedEndpoints, Endpoints, Health, Publication, Publisher, SetGuard, Status, StopSignal,
    Watcher,
};
pub use error::{DiscoveryError, DiscoveryErrorKind, ECHO_LIMIT, InvalidTarget, TargetErrorReason};
pub use set::{Diff, EndpointSet};
pub use target::{
    DnsHost, DnsTarget, KubernetesTarget, PortSelector, StaticTarget, Target, XdsTarget,
};
