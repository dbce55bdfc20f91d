//! Subsetting, simulated: `M` clients each choose `k` of `N` endpoints (deterministic
//! subsetting with client indices `0..M`, and random subsetting with one hashed id per client),
//! and the table shows how evenly the endpoints are shared and how many connections move when
//! one endpoint or one client leaves.
//!
//! ```text
//! cargo bench -p waypost-benches --bench subsetting
//! ```
//!
//! Columns:
//! - `conn max/mean`: the most clients one endpoint has, over the mean `M × k / N`; `bound`:
//!   the least any assignment can reach, `ceil(mean) / mean`.
//! - `req max/mean`: the same for requests, each client sending the same traffic spread evenly
//!   over its subset.
//! - `endpoint leaves`: connections opened by the clients when one endpoint leaves (the median
//!   over 5 endpoints), and the minimum: one per client that had it.
//! - `client leaves`: connections the other clients open when the client with the last index
//!   leaves (`M - 1` clients). Random subsetting does not depend on `M`: always 0.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use waypost_balance::Subsetting;
use waypost_discovery::Endpoint;

type Subsets = Vec<BTreeSet<SocketAddr>>;
/// Builds client `i` of `m`'s subsetting.
type Make = Box<dyn Fn(u32, u32) -> Subsetting>;

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let [_, _, hi, lo] = (i as u32).to_be_bytes();
            Endpoint::new(SocketAddr::from(([10, 1, hi, lo], 8080)))
        })
        .collect()
}

fn subsets(make: &dyn Fn(u32) -> Subsetting, clients: u32, set: &[Endpoint]) -> Subsets {
    (0..clients)
        .map(|client| {
            make(client)
                .subset(set)
                .into_iter()
                .map(Endpoint::address)
                .collect()
        })
        .collect()
}

fn opened(before: &Subsets, after: &Subsets) -> usize {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.difference(b).count())
        .sum()
}

struct Row {
    conn: f64,
    bound: f64,
    requests: f64,
    endpoint_opened: usize,
    endpoint_minimum: usize,
    client_opened: usize,
}

fn measure(make: &dyn Fn(u32, u32) -> Subsetting, m: u32, n: usize) -> Row {
    let set = endpoints(n);
    let all = subsets(&|i| make(i, m), m, &set);
    let mut connections = vec![0usize; n];
    let mut requests = vec![0f64; n];
    let index = |address: &SocketAddr| set.iter().position(|e| e.address() == *address).unwrap();
    for subset in &all {
        for address in subset {
            let i = index(address);
            connections[i] += 1;
            requests[i] += 1.0 / subset.len() as f64;
        }
    }
    let mean = all.iter().map(BTreeSet::len).sum::<usize>() as f64 / n as f64;
    let conn = *connections.iter().max().unwrap() as f64 / mean;
    let requests = requests.iter().copied().fold(0.0, f64::max) / (f64::from(m) / n as f64);
    // Five endpoints spread over the set leave, one at a time: the median of what moved.
    let mut moves: Vec<(usize, usize)> = (0..5)
        .map(|step| {
            let gone = set[step * n / 5].address();
            let rest: Vec<Endpoint> = set
                .iter()
                .filter(|e| e.address() != gone)
                .cloned()
                .collect();
            let after = subsets(&|i| make(i, m), m, &rest);
            let had = all.iter().filter(|s| s.contains(&gone)).count();
            (opened(&all, &after), had)
        })
        .collect();
    moves.sort_unstable();
    let (endpoint_opened, endpoint_minimum) = moves[2];
    let fewer = subsets(&|i| make(i, m - 1), m - 1, &set);
    Row {
        conn,
        bound: mean.ceil() / mean,
        requests,
        endpoint_opened,
        endpoint_minimum,
        client_opened: opened(&all[..m as usize - 1].to_vec(), &fewer),
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let grid: Vec<(u32, usize, usize)> = if full {
        let mut grid = Vec::new();
        for m in [100, 300, 1000] {
            for n in [10, 100, 300, 1000] {
                for k in [10, 25, 50] {
                    if k < n {
                        grid.push((m, n, k));
                    }
                }
            }
        }
        grid
    } else {
        vec![(50, 100, 10)]
    };
    println!(
        "{:>5} {:>5} {:>3}  {:<13} {:>13} {:>6} {:>12} {:>22} {:>14}",
        "M",
        "N",
        "k",
        "subsetting",
        "conn max/mean",
        "bound",
        "req max/mean",
        "endpoint leaves (min)",
        "client leaves"
    );
    for (m, n, k) in grid {
        let kinds: [(&str, Make); 2] = [
            (
                "deterministic",
                Box::new(move |i, m| Subsetting::deterministic(i, m, k).unwrap()),
            ),
            (
                "random",
                Box::new(move |i, _| {
                    Subsetting::random(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15), k).unwrap()
                }),
            ),
        ];
        for (name, make) in &kinds {
            let row = measure(make.as_ref(), m, n);
            println!(
                "{:>5} {:>5} {:>3}  {:<13} {:>13.2} {:>6.2} {:>12.2} {:>15} ({:>4}) {:>14}",
                m,
                n,
                k,
                name,
                row.conn,
                row.bound,
                row.requests,
                row.endpoint_opened,
                row.endpoint_minimum,
                row.client_opened
            );
        }
    }
}
