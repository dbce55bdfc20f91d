//! Benchmarks of waypost beside peers whose build needs system tools (pingora-load-balancing
//! needs cmake for zlib-ng). The benchmarks are in `benches/`; their figures and commands are in
//! the `benches/README.md` of the repository.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::{Backend, Backends};

/// `n` distinct loopback addresses. Data only: nothing connects to them.
pub fn addresses(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8 + 1], 8080)))
        .collect()
}

/// pingora backends whose discovery answers the `n` addresses and the same less the last one, in
/// turn: the first update takes the full set, then less, full, less, ... Each update is one
/// endpoint leaving or joining, as in waypost's rebuild cases.
pub fn alternating_backends(n: usize) -> Backends {
    let full: BTreeSet<Backend> = addresses(n)
        .iter()
        .map(|address| Backend::new(&address.to_string()).expect("a socket address"))
        .collect();
    let mut less = full.clone();
    less.pop_last();
    Backends::new(Box::new(Alternating {
        sets: [full, less],
        calls: AtomicUsize::new(0),
    }))
}

/// A discovery that answers its two sets in turn.
struct Alternating {
    sets: [BTreeSet<Backend>; 2],
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ServiceDiscovery for Alternating {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        Ok((self.sets[call % 2].clone(), HashMap::new()))
    }
}
