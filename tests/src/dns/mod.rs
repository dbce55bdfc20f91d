//! DNS test rigs: an in-process authoritative server ([`server`]), a harness around a real
//! Debian DNS server ([`unbound`]), a `tracing` event recorder ([`capture`]), and helpers to
//! wait on an [`Endpoints`] handle.
//!
//! Everything listens on 127.0.0.1 only. Tests wait on conditions with generous deadlines and
//! never on elapsed wall time, so a slow or loaded machine makes them slower, not red.

pub mod capture;
pub mod server;
pub mod unbound;

use std::net::SocketAddr;
use std::time::Duration;

use waypost_discovery::source::dns::DnsOptions;
use waypost_discovery::{Endpoints, Health};

/// How long a test waits for a condition: the rigs' one deadline, [`crate::PATIENCE`].
pub use crate::PATIENCE;

/// Options for a source that asks only `nameserver`, never the system configuration, with
/// short query timeouts and retries so fault tests move quickly.
pub fn options_for(nameserver: SocketAddr) -> DnsOptions {
    DnsOptions::default()
        .without_system_config()
        .nameserver(nameserver)
        .query_timeout(Duration::from_millis(500))
        .query_attempts(1)
        .retry_backoff(Duration::from_millis(200), Duration::from_secs(1))
}

/// The addresses of the current set, sorted.
pub fn addresses(endpoints: &Endpoints) -> Vec<SocketAddr> {
    endpoints.load().addresses().collect()
}

/// Waits until `condition` holds for the handle's current set and health, checking after
/// every change of either (and at least every 50 ms). Panics with `what` and the last state
/// after `deadline`.
pub async fn wait_until(
    endpoints: &Endpoints,
    deadline: Duration,
    what: &str,
    mut condition: impl FnMut(&[SocketAddr], &Health) -> bool,
) {
    let mut watcher = endpoints.watch();
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let current = addresses(endpoints);
        let health = endpoints.health();
        if condition(&current, &health) {
            return;
        }
        if tokio::time::Instant::now() >= until {
            panic!(
                "timed out after {deadline:?} waiting for {what}; addresses {current:?}, health {health:?}"
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), watcher.notified()).await;
    }
}

/// Waits until the set's addresses are exactly `expected` (in any order).
pub async fn wait_for_addresses(
    endpoints: &Endpoints,
    deadline: Duration,
    expected: &[SocketAddr],
) {
    let mut expected = expected.to_vec();
    expected.sort();
    expected.dedup();
    wait_until(
        endpoints,
        deadline,
        &format!("addresses {expected:?}"),
        |current, _| current == expected.as_slice(),
    )
    .await;
}

/// `addr("127.0.0.2", 8080)`: a socket address for assertions.
pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(
        ip.parse()
            .unwrap_or_else(|_| panic!("`{ip}` is not an IP address")),
        port,
    )
}
