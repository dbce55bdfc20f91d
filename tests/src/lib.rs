//! Cross-crate integration tests for waypost, and the rigs they run against.
//!
//! The tests live in `tests/`. The rigs (an in-process DNS server, a fake Kubernetes API server
//! speaking the real HTTP protocol, loopback backends) will live in this library so that tests,
//! examples and benchmarks share them; none is written yet, because the discovery sources that
//! need them are not.
