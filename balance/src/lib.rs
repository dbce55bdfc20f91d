//! Load balancing for waypost.
//!
//! This crate will hold the balancing policies (power-of-two-choices with PeakEWMA,
//! round-robin, weighted, consistent hashing), per-endpoint load and health state, and a tower
//! `Balance` service that every clone shares without a lock. It is not written yet: this release
//! contains only the discovery layer it will build on, re-exported here as [`discovery`].

pub use waypost_discovery as discovery;
