//! Runnable examples of waypost; see the `examples/` directory of this crate.
//!
//! - `quickstart`: builds an endpoint set from an embedded `static:///` target, publishes the
//!   changes a rolling update makes and shows each one arriving at a watcher, with no cluster
//!   and no setup: `cargo run -p waypost-examples --example quickstart`.
