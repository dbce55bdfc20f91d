//! Subsetting: each client connects to `k` of the `N` endpoints instead of all of them, so that
//! a fleet of `M` clients holds about `M × k` connections, not `M × N`.
//!
//! [`Subsetting::deterministic`] is for clients that know their index among their peers and
//! how many peers there are (a StatefulSet's pod ordinal and replica count, a worker number):
//! every endpoint then gets about `M × k / N` clients, and one endpoint or one client joining or
//! leaving moves few connections. [`Subsetting::random`] needs only a stable identity per
//! client (a hash of its pod name); it is the simple baseline of gRPC's random subsetting
//! (gRFC A68), with a wider spread of connections per endpoint.
//!
//! # The deterministic algorithm
//!
//! Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018), returning
//! a subset rather than one endpoint:
//!
//! - Every endpoint has a position on a circle of 64-bit numbers: the xxh64 hash of its hash key
//!   ([`Endpoint::hash_key`], the address when it has none), so every client places it in the
//!   same spot, and one endpoint joining or leaving moves no other.
//! - Client `i` starts at the bit-reversed `i` (the binary van der Corput sequence), so any
//!   number of clients `0..M` sits evenly around the circle, and a new client with the next
//!   index changes no other client's start.
//! - Clients in index order take, clockwise from their start, the next `k` endpoints that are
//!   not full; an endpoint is full once `ceil(1.05 × M × k / N)` clients took it. Each client
//!   computes the choices of the clients before it (from the same inputs), so all agree without
//!   talking to each other.
//!
//! Without the cap this is plain consistent subsetting, whose connections per endpoint spread
//! as widely as the gaps between hashed positions (max/mean about 2 at 10 per endpoint). With
//! it no endpoint gets more than the cap; a change of the set moves the connections of the
//! clients that had the endpoint that changed, and a few more where the cap pushes a client on
//! to its next endpoint. When `M × k / N` crosses a step of the cap (a whole client), more
//! move. `benches/README.md` (`subsetting`) has the figures.
//!
//! Subsetting looks at the discovery set only: every endpoint in it counts, ready or not, and
//! weights and zones play no part in the choice (the balancer applies them within the subset).

use std::fmt;

use waypost_discovery::Endpoint;
use xxhash_rust::xxh64::xxh64;

use crate::error::ConfigError;

/// The slack over the mean that the deterministic algorithm lets an endpoint's client count
/// reach: 5%, rounded up to a whole client.
const LOAD_SLACK: f64 = 1.05;

/// Which endpoints of the discovery set a balancer uses; see the [module docs](self).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Subsetting {
    kind: Kind,
    subset_size: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deterministic {
        client_index: u32,
        client_count: u32,
    },
    Random {
        client_id: u64,
    },
}

impl Subsetting {
    /// Deterministic subsetting: this client is number `client_index` of `client_count` peers
    /// (all using the same `subset_size` for the same target), and uses `subset_size`
    /// endpoints (all of them when there are fewer).
    pub fn deterministic(
        client_index: u32,
        client_count: u32,
        subset_size: usize,
    ) -> Result<Self, ConfigError> {
        if client_count == 0 {
            return Err(ConfigError::new(
                "subsetting.client_count",
                "must be at least 1",
            ));
        }
        if client_index >= client_count {
            return Err(ConfigError::new(
                "subsetting.client_index",
                "must be below client_count (indices count from 0)",
            ));
        }
        Self::new(
            Kind::Deterministic {
                client_index,
                client_count,
            },
            subset_size,
        )
    }

    /// Random subsetting: the `subset_size` endpoints whose hash with `client_id` is lowest
    /// (rendezvous hashing). `client_id` must be stable for the client (a hash of its pod
    /// name), and differ between clients.
    pub fn random(client_id: u64, subset_size: usize) -> Result<Self, ConfigError> {
        Self::new(Kind::Random { client_id }, subset_size)
    }

    fn new(kind: Kind, subset_size: usize) -> Result<Self, ConfigError> {
        if subset_size == 0 {
            return Err(ConfigError::new(
                "subsetting.subset_size",
                "must be at least 1",
            ));
        }
        Ok(Subsetting { kind, subset_size })
    }

    /// The number of endpoints a client uses (all of them when there are fewer).
    pub fn subset_size(&self) -> usize {
        self.subset_size
    }

    /// Which of `endpoints` this client uses: `true` at their positions. The same inputs give
    /// the same answer in every process.
    pub fn select(&self, endpoints: &[Endpoint]) -> Vec<bool> {
        let n = endpoints.len();
        if n <= self.subset_size {
            return vec![true; n];
        }
        let positions: Vec<u64> = endpoints.iter().map(position).collect();
        let chosen = match self.kind {
            Kind::Deterministic {
                client_index,
                client_count,
            } => deterministic(
                endpoints,
                &positions,
                client_index,
                client_count,
                self.subset_size,
            ),
            Kind::Random { client_id } => random(&positions, client_id, self.subset_size),
        };
        let mut selected = vec![false; n];
        for index in chosen {
            selected[index] = true;
        }
        selected
    }
}

impl Subsetting {
    /// The endpoints of `endpoints` this client uses, in their order: [`select`](Self::select)
    /// applied.
    pub fn subset<'a>(&self, endpoints: &'a [Endpoint]) -> Vec<&'a Endpoint> {
        endpoints
            .iter()
            .zip(self.select(endpoints))
            .filter_map(|(endpoint, selected)| selected.then_some(endpoint))
            .collect()
    }
}

impl fmt::Debug for Subsetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Deterministic {
                client_index,
                client_count,
            } => f
                .debug_struct("Subsetting::Deterministic")
                .field("client_index", &client_index)
                .field("client_count", &client_count)
                .field("subset_size", &self.subset_size)
                .finish(),
            Kind::Random { client_id } => f
                .debug_struct("Subsetting::Random")
                .field("client_id", &client_id)
                .field("subset_size", &self.subset_size)
                .finish(),
        }
    }
}

/// An endpoint's place on the circle: from its hash key, so the same in every process.
fn position(endpoint: &Endpoint) -> u64 {
    match endpoint.hash_key() {
        Some(key) => xxh64(key.as_bytes(), 0),
        None => xxh64(endpoint.address().to_string().as_bytes(), 0),
    }
}

/// The positions (indices into `positions`) client `index` of `count` takes.
fn deterministic(
    endpoints: &[Endpoint],
    positions: &[u64],
    index: u32,
    count: u32,
    k: usize,
) -> Vec<usize> {
    let n = positions.len();
    // The circle: endpoint indices by position (ties, two endpoints with one hash key, by
    // address, so that the order of `endpoints` does not matter).
    let mut circle: Vec<usize> = (0..n).collect();
    circle.sort_unstable_by_key(|&i| (positions[i], endpoints[i].address()));
    let sorted: Vec<u64> = circle.iter().map(|&i| positions[i]).collect();
    let mean = f64::from(count) * k as f64 / n as f64;
    let cap = ((mean * LOAD_SLACK).ceil() as u32).max(1);
    let mut load = vec![0u32; n];
    let mut mine = Vec::with_capacity(k);
    for client in 0..=index {
        let start = u64::from(client).reverse_bits();
        let first = sorted.partition_point(|&p| p < start);
        mine.clear();
        // One turn at most: every endpoint is looked at once.
        for step in 0..n {
            if mine.len() == k {
                break;
            }
            let at = (first + step) % n;
            if load[at] < cap {
                mine.push(at);
            }
        }
        // Fewer than `k` endpoints with room (when `k` is close to `N`, or more clients use
        // the target than `count` says): the least loaded of the rest.
        if mine.len() < k {
            let mut rest: Vec<usize> = (0..n).filter(|at| !mine.contains(at)).collect();
            rest.sort_by_key(|&at| (load[at], at));
            mine.extend(rest.into_iter().take(k - mine.len()));
        }
        for &at in &mine {
            load[at] += 1;
        }
    }
    mine.into_iter().map(|at| circle[at]).collect()
}

/// The `k` positions with the lowest hash combined with `client_id`.
fn random(positions: &[u64], client_id: u64, k: usize) -> Vec<usize> {
    let mut ranked: Vec<(u64, usize)> = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&client_id.to_le_bytes());
            bytes[8..].copy_from_slice(&p.to_le_bytes());
            (xxh64(&bytes, 0), i)
        })
        .collect();
    ranked.select_nth_unstable(k - 1);
    ranked.truncate(k);
    ranked.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;

    fn endpoints(n: u16) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                Endpoint::new(SocketAddr::from((
                    [127, 0, (i / 250) as u8, (i % 250) as u8 + 1],
                    8080,
                )))
            })
            .collect()
    }

    fn subsets(
        subsetting: impl Fn(u32) -> Subsetting,
        clients: u32,
        set: &[Endpoint],
    ) -> Vec<BTreeSet<SocketAddr>> {
        (0..clients)
            .map(|client| {
                subsetting(client)
                    .subset(set)
                    .into_iter()
                    .map(Endpoint::address)
                    .collect()
            })
            .collect()
    }

    fn max_per_endpoint(subsets: &[BTreeSet<SocketAddr>]) -> usize {
        let mut counts = std::collections::BTreeMap::new();
        for subset in subsets {
            for address in subset {
                *counts.entry(*address).or_insert(0) += 1;
            }
        }
        counts.values().copied().max().unwrap_or(0)
    }

    #[test]
    fn every_client_gets_its_size_and_no_endpoint_more_than_the_cap() {
        for (clients, n, k) in [
            (100u32, 1000u16, 10usize),
            (300, 300, 10),
            (1000, 100, 10),
            (100, 100, 25),
        ] {
            let set = endpoints(n);
            let all = subsets(
                |i| Subsetting::deterministic(i, clients, k).unwrap(),
                clients,
                &set,
            );
            assert!(
                all.iter().all(|subset| subset.len() == k),
                "{clients} {n} {k}"
            );
            let mean = f64::from(clients) * k as f64 / f64::from(n);
            let cap = (mean * LOAD_SLACK).ceil() as usize;
            assert!(max_per_endpoint(&all) <= cap, "{clients} {n} {k}");
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_subset_in_any_order() {
        let set = endpoints(200);
        let mut shuffled = set.clone();
        shuffled.reverse();
        let subsetting = Subsetting::deterministic(17, 50, 10).unwrap();
        let pick = |set: &[Endpoint]| -> BTreeSet<SocketAddr> {
            subsetting
                .subset(set)
                .into_iter()
                .map(Endpoint::address)
                .collect()
        };
        assert_eq!(pick(&set), pick(&shuffled));
    }

    #[test]
    fn an_endpoint_leaving_moves_the_connections_of_about_its_clients() {
        let (clients, k) = (300u32, 10usize);
        let set = endpoints(300);
        let before = subsets(
            |i| Subsetting::deterministic(i, clients, k).unwrap(),
            clients,
            &set,
        );
        let gone = set[100].address();
        let had_it = before.iter().filter(|s| s.contains(&gone)).count();
        let rest: Vec<Endpoint> = set
            .iter()
            .filter(|e| e.address() != gone)
            .cloned()
            .collect();
        let after = subsets(
            |i| Subsetting::deterministic(i, clients, k).unwrap(),
            clients,
            &rest,
        );
        let opened: usize = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.difference(b).count())
            .sum();
        // Each client that had it opens one; the cap moves a few more.
        assert!(
            opened >= had_it && opened <= 3 * had_it,
            "opened {opened}, had it {had_it}"
        );
    }

    #[test]
    fn a_client_with_the_next_index_moves_no_other() {
        let (clients, k) = (100u32, 10usize);
        let set = endpoints(1000);
        let before = subsets(
            |i| Subsetting::deterministic(i, clients, k).unwrap(),
            clients,
            &set,
        );
        let after = subsets(
            |i| Subsetting::deterministic(i, clients + 1, k).unwrap(),
            clients,
            &set,
        );
        assert_eq!(before, after);
    }

    #[test]
    fn random_subsets_are_stable_and_sized() {
        let set = endpoints(100);
        let a = subsets(
            |i| Subsetting::random(u64::from(i) * 7919, 10).unwrap(),
            20,
            &set,
        );
        let b = subsets(
            |i| Subsetting::random(u64::from(i) * 7919, 10).unwrap(),
            20,
            &set,
        );
        assert_eq!(a, b);
        assert!(a.iter().all(|subset| subset.len() == 10));
        // Removing an endpoint changes only the subsets that had it.
        let gone = set[5].address();
        let rest: Vec<Endpoint> = set
            .iter()
            .filter(|e| e.address() != gone)
            .cloned()
            .collect();
        let c = subsets(
            |i| Subsetting::random(u64::from(i) * 7919, 10).unwrap(),
            20,
            &rest,
        );
        for (before, after) in a.iter().zip(&c) {
            if !before.contains(&gone) {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn fewer_endpoints_than_the_size_are_all_used() {
        let set = endpoints(3);
        assert_eq!(
            Subsetting::deterministic(0, 5, 10).unwrap().select(&set),
            vec![true; 3]
        );
        assert_eq!(
            Subsetting::random(1, 3).unwrap().select(&set),
            vec![true; 3]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let field = |e: ConfigError| e.to_string();
        assert!(field(Subsetting::deterministic(0, 0, 1).unwrap_err()).contains("client_count"));
        assert!(field(Subsetting::deterministic(3, 3, 1).unwrap_err()).contains("client_index"));
        assert!(field(Subsetting::random(0, 0).unwrap_err()).contains("subset_size"));
    }
}
