//! Cross-crate integration tests for waypost, and the rigs they and the benchmarks run against.
//!
//! The tests live in `tests/`. The rigs live in this library so that tests, examples and
//! benchmarks share them; each speaks the real protocol on loopback addresses only:
//!
//! - [`backend`]: HTTP/1 and HTTP/2 servers that tests slow down, break, drain and kill.
//! - [`grpc`]: tonic gRPC servers (the standard health service) that tests slow down, turn
//!   `UNAVAILABLE`, drain and kill.
//! - [`kube_api`]: a fake Kubernetes API server for EndpointSlices that a real `kube::Client`
//!   talks to over HTTP on a loopback port, with fault injection.
//! - [`load`]: concurrent callers that count who answered and what failed.
//! - [`dns`]: an in-process authoritative DNS server (hickory-server) whose records a test
//!   changes while a resolver runs, a harness that runs a real Debian DNS server (unbound) on a
//!   loopback port, and helpers to wait on an endpoint handle.
//! - `xds` (feature `xds`, on by default): an xDS management server (aggregated discovery, state of the world) with
//!   resources a test changes, a log of ACKs and NACKs, and streams it cuts.
//!
//! The helpers below wait for conditions with a generous deadline ([`PATIENCE`]) instead of
//! sleeping for a guessed time, so the tests pass on a slow, shared machine and fail with a
//! message that says what never happened.

pub mod backend;
pub mod dns;
pub mod grpc;
pub mod kube_api;
pub mod load;
#[cfg(feature = "xds")]
pub mod xds;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waypost_discovery::{EndpointSet, Endpoints, Health};

/// How long a test waits for a condition before it fails. Far longer than any condition takes
/// on a healthy machine: waiting is by condition, so a long deadline costs nothing when things
/// work.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `condition` every 10 ms until it holds.
///
/// # Panics
///
/// When it does not hold within [`PATIENCE`]; the message names `what`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the current set of `endpoints` satisfies `condition`, and returns it.
///
/// # Panics
///
/// When no set satisfies it within [`PATIENCE`]; the message names `what` and shows the last
/// set and the source's health.
pub async fn wait_for_set(
    endpoints: &Endpoints,
    what: &str,
    mut condition: impl FnMut(&EndpointSet) -> bool,
) -> Arc<EndpointSet> {
    let deadline = Instant::now() + PATIENCE;
    let mut watcher = endpoints.watch();
    loop {
        let set = watcher.current();
        if condition(&set) {
            return set;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, watcher.notified()).await {
            Ok(true) => {}
            Ok(false) => {
                let set = watcher.current();
                assert!(
                    condition(&set),
                    "the source closed while waiting for {what}; last set: {set:?}"
                );
                return set;
            }
            Err(_) => panic!(
                "timed out after {PATIENCE:?} waiting for {what}; last set: {:?}; health: {:?}",
                endpoints.load(),
                endpoints.health()
            ),
        }
    }
}

/// Waits until the health of `endpoints` satisfies `condition`, and returns it.
///
/// # Panics
///
/// When it does not within [`PATIENCE`]; the message names `what`.
pub async fn wait_for_health(
    endpoints: &Endpoints,
    what: &str,
    mut condition: impl FnMut(&Health) -> bool,
) -> Health {
    let deadline = Instant::now() + PATIENCE;
    let mut watcher = endpoints.watch();
    loop {
        let health = endpoints.health();
        if condition(&health) {
            return health;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, watcher.notified()).await {
            Ok(true) => {}
            Ok(false) => panic!("the source closed while waiting for {what}; health: {health:?}"),
            Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}; health: {health:?}"),
        }
    }
}
