//! Integration tests of waypost-discovery: targets, endpoint sets, the Discover stream,
//! concurrency and EndpointSlice conversion.
//!
//! One binary for the whole suite: each file below is a module, so the suite links once
//! instead of once per file (less disk, less link time).

mod concurrency;
mod discover;
mod endpoint_set;
mod kubernetes_slices;
mod targets;
