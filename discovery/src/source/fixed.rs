//! The static source: a fixed list of addresses, published once.

use std::net::SocketAddr;

use crate::endpoint::Endpoint;
use crate::endpoints::{Endpoints, Publisher};
use crate::target::StaticTarget;

/// A handle over the addresses of a `static:///` target.
///
/// The set is published at once as revision 1 and never changes; the source is closed, so
/// watchers return the set once and then end.
///
/// ```
/// use waypost_discovery::{source, StaticTarget};
///
/// let target: StaticTarget = "static:///127.0.0.1:8080,[::1]:8080".parse().unwrap();
/// let endpoints = source::from_static(&target);
/// assert_eq!(endpoints.load().len(), 2);
/// assert_eq!(endpoints.target(), "static:///127.0.0.1:8080,[::1]:8080");
/// ```
pub fn from_static(target: &StaticTarget) -> Endpoints {
    from_addresses(target.to_string(), target.addresses().iter().copied())
}

/// A handle over fixed `addresses`, named `target` in logs and errors.
pub fn from_addresses(
    target: impl Into<std::sync::Arc<str>>,
    addresses: impl IntoIterator<Item = SocketAddr>,
) -> Endpoints {
    let mut publisher = Publisher::new(target);
    publisher.publish(addresses.into_iter().map(Endpoint::new));
    publisher.endpoints()
}
