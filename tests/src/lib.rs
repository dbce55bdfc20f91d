//! Cross-crate integration tests for waypost, and the rigs they run against.
//!
//! The tests live in `tests/`. The rigs live in this library so that tests, examples and
//! benchmarks share them:
//!
//! - [`dns`]: an in-process authoritative DNS server (hickory-server) whose records a test
//!   changes while a resolver runs, a harness that runs a real Debian DNS server (unbound) on a
//!   loopback port, and helpers to wait on an endpoint handle.

pub mod dns;
