//! Criterion benchmarks for waypost; the benchmarks are in `benches/`, the figures and the
//! commands that produced them in `README.md`.
//!
//! This library holds what several benchmarks share: [`kubernetes`] makes EndpointSlices shaped
//! like the ones the EndpointSlice controller writes.

pub mod kubernetes;
