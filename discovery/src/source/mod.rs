//! Discovery sources: the tasks that keep an [`Endpoints`](crate::Endpoints) handle up to date.
//!
//! A source owns a [`Publisher`](crate::Publisher) and follows three rules:
//!
//! - it builds each new [`EndpointSet`](crate::EndpointSet) off the hot path and publishes it in
//!   one swap; readers never wait for it;
//! - a failure keeps the last good set and is reported through
//!   [`Publisher::report_failure`](crate::Publisher::report_failure), so it shows in the handle's
//!   [`Health`](crate::Health); the source owns its retries and backoff;
//! - it stops when the last handle is gone, or when asked to through its `SourceHandle`
//!   ([`Publisher::should_stop`](crate::Publisher::should_stop)).
//!
//! This module holds the static source, for `static:///` targets and fixed lists, the DNS
//! source (`dns`, feature `dns`), the EndpointSlice source for `kubernetes:///` targets
//! (`kubernetes`, feature `kubernetes`), and the xDS source for `xds:///` targets (`xds`,
//! feature `xds`).

#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod dns;
mod fixed;
#[cfg(any(feature = "dns", feature = "kubernetes", feature = "xds"))]
mod handle;
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod kubernetes;
#[cfg(feature = "xds")]
#[cfg_attr(docsrs, doc(cfg(feature = "xds")))]
pub mod xds;

pub use fixed::{from_addresses, from_static};
#[cfg(any(feature = "dns", feature = "kubernetes", feature = "xds"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "dns", feature = "kubernetes", feature = "xds")))
)]
pub use handle::SourceHandle;
