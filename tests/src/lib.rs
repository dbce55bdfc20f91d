//! Cross-crate integration tests for waypost, and the rigs they and the benchmarks run against.
//!
//! The tests live in `tests/`. The rigs live in this library so that tests, examples and
//! benchmarks share them; each speaks the real protocol on loopback addresses only:
//!
//! - [`backend`]: HTTP/1 and HTTP/2 servers that tests slow down, break, drain and kill.

pub mod backend;
