//! Cross-crate integration tests for waypost, and the rigs they and the benchmarks run against.
//!
//! The tests live in `tests/`. The rigs live in this library so that tests, examples and
//! benchmarks share them; each speaks the real protocol on loopback addresses only:
//!
//! - [`backend`]: HTTP/1 and HTTP/2 servers that tests slow down, break, drain and kill.
//! - [`grpc`]: tonic gRPC servers (the standard health service) that tests slow down, turn
//!   `UNAVAILABLE`, drain and kill.
//! - [`load`]: concurrent callers that count who answered and what failed.
//! - [`dns`]: an in-process authoritative DNS server (hickory-server) whose records a test
//!   changes while a resolver runs, a harness that runs a real Debian DNS server (unbound) on a
//!   loopback port, and helpers to wait on an endpoint handle.

pub mod backend;
pub mod dns;
pub mod grpc;
pub mod load;
