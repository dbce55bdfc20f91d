//! Instruction counts per pick and per call, from valgrind's callgrind: the same on every run
//! and on a busy machine, so a regression shows where wall-clock benchmarks drift by 2x.
//!
//! Each case runs its operation in a loop inside one function (`measured_loop`); callgrind
//! counts only the instructions executed inside that function and what it calls
//! (`--toggle-collect`), so setup (building a balancer, a ring, a runtime) is left out. Each case
//! runs twice, with `SHORT` and `LONG` iterations, and the figure is the difference divided by
//! `LONG - SHORT`: what one more operation costs, without the loop's fixed cost.
//!
//! Cases, at N = 100, 1000 and 10000 endpoints:
//!
//! - `floor`: the least a lock-free P2C balancer can do: one `ArcSwap` load, two distinct random
//!   candidates among inline 36-byte entries (address and in-flight counter), the less loaded
//!   one's counter +1 and -1.
//! - `waypost pick POLICY`: `Balance::pick`, the pick a call makes, without sending.
//! - `waypost call POLICY`: `poll_ready` + `call` + the response future to completion, on a
//!   no-op endpoint service; for the hashing policies each request has its own hash key.
//! - `tower p2c call`: tower 0.5's `p2c::Balance` over a `ServiceList` of `PendingRequests`
//!   (least pending) no-op services, driven the same way, without a `Buffer`.
//! - `pingora select round_robin` / `consistent`: pingora-load-balancing 0.9's
//!   `LoadBalancer::select(key, 256)`.
//! - `waypost rebuild POLICY`: one endpoint leaves or joins the discovery set (alternately)
//!   until the balancer's new table is visible to picks: the publication (the new
//!   `EndpointSet`) and the background rebuild, on a current-thread runtime.
//! - `pingora rebuild round_robin` / `consistent`: the same change through
//!   `LoadBalancer::update` with a discovery that returns the two sets alternately.
//!
//! ```text
//! apt-get install valgrind
//! cargo bench --manifest-path benches/peers/Cargo.toml --bench instructions
//! cargo bench --manifest-path benches/peers/Cargo.toml --bench instructions -- pick   # filter
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use tower::Service;
use tower::balance::p2c;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use waypost_balance::{Balance, BalanceConfig, HashKey, NoHashKey, Policy};
use waypost_bench_peers::{addresses, alternating_backends};
use waypost_discovery::{Endpoint, Publisher};

const SIZES: [usize; 3] = [100, 1000, 10_000];
const SHORT: u64 = 2_000;
const LONG: u64 = 22_000;
/// Rebuilds cost millions of instructions each: fewer iterations.
const REBUILD_SHORT: u64 = 1;
const REBUILD_LONG: u64 = 3;
/// Set in the child process: which case to run, at which N, for how many iterations.
const CASE_VAR: &str = "WAYPOST_INSTRUCTIONS_CASE";

fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The loop callgrind measures: everything `step` executes, and nothing else.
#[inline(never)]
fn measured_loop(iters: u64, mut step: impl FnMut(u64)) {
    for i in 0..iters {
        step(black_box(i));
    }
}

/// A no-op endpoint service: cloning it is free and its future is ready at once.
#[derive(Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

/// `poll_ready`, `call` and the response future, each polled once: every service here is
/// ready at once and answers at once.
fn call_once<S: Service<u64>>(service: &mut S, request: u64, cx: &mut Context<'_>) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    match service.poll_ready(cx) {
        Poll::Ready(result) => result.expect("ready"),
        Poll::Pending => panic!("a no-op service was not ready at once"),
    }
    let future = pin!(service.call(request));
    match future.poll(cx) {
        Poll::Ready(result) => result.expect("answered"),
        Poll::Pending => panic!("a no-op service did not answer at once"),
    }
}

struct FloorEntry {
    address: SocketAddr,
    in_flight: AtomicU32,
}

fn floor(n: usize, iters: u64) {
    let entries: Vec<FloorEntry> = addresses(n)
        .into_iter()
        .map(|address| FloorEntry {
            address,
            in_flight: AtomicU32::new(0),
        })
        .collect();
    let table = ArcSwap::from_pointee(entries);
    let mut rng = fastrand::Rng::with_seed(1);
    measured_loop(iters, |_| {
        let entries = table.load();
        let a = rng.usize(..entries.len());
        let mut b = rng.usize(..entries.len() - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (&entries[a], &entries[b]);
        let chosen = if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
            b
        } else {
            a
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        black_box(chosen.address);
        chosen.in_flight.fetch_sub(1, Ordering::Relaxed);
    });
}

fn policy(name: &str) -> Policy {
    match name {
        "p2c_peak_ewma" => Policy::p2c_peak_ewma(),
        "p2c_least_pending" => Policy::p2c_least_pending(),
        "round_robin" => Policy::round_robin(),
        "maglev" => Policy::maglev(),
        "ring_hash" => Policy::ring_hash(),
        other => panic!("unknown policy {other}"),
    }
}

/// The hash key of a request: the request (a number) mixed, as a header's hash would be.
#[derive(Clone, Copy)]
struct RequestKey;

impl HashKey<u64> for RequestKey {
    fn hash_key(&self, request: &u64) -> Option<u64> {
        Some(key(*request))
    }
}

fn waypost(runtime: &tokio::runtime::Runtime, policy: Policy, n: usize) -> Balance<Noop> {
    waypost_keyed(runtime, policy, n, NoHashKey)
}

fn waypost_keyed<K: HashKey<u64>>(
    runtime: &tokio::runtime::Runtime,
    policy: Policy,
    n: usize,
    hash_key: K,
) -> Balance<Noop, K> {
    let _guard = runtime.enter();
    let mut publisher = Publisher::new("bench");
    publisher.publish(addresses(n).into_iter().map(Endpoint::new));
    let balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig::with_policy(policy))
        .hash_key(hash_key)
        .build(|_: &Endpoint| Noop)
        .expect("valid configuration");
    // Let the background task build the first table.
    runtime.block_on(async {
        while balance.usable_endpoints() < n {
            tokio::task::yield_now().await;
        }
    });
    drop(publisher);
    balance
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn waypost_pick(name: &str, n: usize, iters: u64) {
    let runtime = runtime();
    let policy = policy(name);
    let hashing = policy.is_hashing();
    let mut balance = waypost(&runtime, policy, n);
    let _guard = runtime.enter();
    measured_loop(iters, |i| {
        black_box(balance.pick(hashing.then(|| key(i))));
    });
}

fn waypost_call(name: &str, n: usize, iters: u64) {
    let runtime = runtime();
    let policy = policy(name);
    if policy.is_hashing() {
        // Each request hashes to its own key (the request is the loop's counter).
        let balance = waypost_keyed(&runtime, policy, n, RequestKey);
        drive_calls(&runtime, balance, iters);
    } else {
        let balance = waypost(&runtime, policy, n);
        drive_calls(&runtime, balance, iters);
    }
}

fn drive_calls<K: HashKey<u64>>(
    runtime: &tokio::runtime::Runtime,
    mut balance: Balance<Noop, K>,
    iters: u64,
) {
    let _guard = runtime.enter();
    let mut cx = Context::from_waker(Waker::noop());
    measured_loop(iters, |i| {
        black_box(call_once(&mut balance, i, &mut cx));
    });
}

fn tower_call(n: usize, iters: u64) {
    let services: Vec<_> = (0..n)
        .map(|_| PendingRequests::new(Noop, CompleteOnResponse::default()))
        .collect();
    let mut balance = p2c::Balance::new(ServiceList::new(services));
    let mut cx = Context::from_waker(Waker::noop());
    // The first poll moves every service from discovery into the ready cache.
    let _ = balance.poll_ready(&mut cx);
    measured_loop(iters, |i| {
        black_box(call_once(&mut balance, i, &mut cx));
    });
}

fn pingora_select(consistent: bool, n: usize, iters: u64) {
    let addresses: Vec<String> = addresses(n).iter().map(ToString::to_string).collect();
    if consistent {
        let lb: LoadBalancer<Consistent> =
            LoadBalancer::try_from_iter(addresses.iter().map(String::as_str)).expect("static");
        measured_loop(iters, |i| {
            black_box(lb.select(&key(i).to_le_bytes(), 256));
        });
    } else {
        let lb: LoadBalancer<RoundRobin> =
            LoadBalancer::try_from_iter(addresses.iter().map(String::as_str)).expect("static");
        measured_loop(iters, |_| {
            black_box(lb.select(b"", 256));
        });
    }
}

fn waypost_rebuild(name: &str, n: usize, iters: u64) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let full: Vec<Endpoint> = addresses(n).into_iter().map(Endpoint::new).collect();
    let less = full[..n - 1].to_vec();
    let mut publisher = Publisher::new("bench");
    publisher.publish(full.iter().cloned());
    let balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig::with_policy(policy(name)))
        .build(|_: &Endpoint| Noop)
        .expect("valid configuration");
    let visible = |expected: usize| {
        runtime.block_on(async {
            while balance.usable_endpoints() != expected {
                tokio::task::yield_now().await;
            }
        })
    };
    visible(n);
    measured_loop(iters, |i| {
        let (set, expected) = if i % 2 == 0 {
            (&less, n - 1)
        } else {
            (&full, n)
        };
        publisher.publish(set.iter().cloned());
        visible(expected);
    });
}

fn pingora_rebuild(consistent: bool, n: usize, iters: u64) {
    let backends = alternating_backends(n);
    let mut cx = Context::from_waker(Waker::noop());
    macro_rules! run {
        ($selection:ty) => {{
            let lb = LoadBalancer::<$selection>::from_backends(backends);
            let mut update = || match pin!(lb.update()).poll(&mut cx) {
                Poll::Ready(result) => result.expect("static discovery"),
                Poll::Pending => panic!("a static discovery did not answer at once"),
            };
            update();
            measured_loop(iters, |_| update());
            black_box(lb.select(b"", 256));
        }};
    }
    if consistent {
        run!(Consistent)
    } else {
        run!(RoundRobin)
    }
}

/// Runs one case in this process (the child under valgrind).
fn run_case(case: &str, n: usize, iters: u64) {
    let words: Vec<&str> = case.split(' ').collect();
    match words.as_slice() {
        ["floor"] => floor(n, iters),
        ["waypost", "pick", name] => waypost_pick(name, n, iters),
        ["waypost", "call", name] => waypost_call(name, n, iters),
        ["tower", "p2c", "call"] => tower_call(n, iters),
        ["pingora", "select", "round_robin"] => pingora_select(false, n, iters),
        ["pingora", "select", "consistent"] => pingora_select(true, n, iters),
        ["waypost", "rebuild", name] => waypost_rebuild(name, n, iters),
        ["pingora", "rebuild", "round_robin"] => pingora_rebuild(false, n, iters),
        ["pingora", "rebuild", "consistent"] => pingora_rebuild(true, n, iters),
        _ => panic!("unknown case {case:?}"),
    }
}

fn cases() -> Vec<String> {
    const POLICIES: [&str; 5] = [
        "p2c_peak_ewma",
        "p2c_least_pending",
        "round_robin",
        "maglev",
        "ring_hash",
    ];
    let mut cases = vec!["floor".to_string()];
    for operation in ["pick", "call"] {
        for name in POLICIES {
            cases.push(format!("waypost {operation} {name}"));
        }
    }
    cases.push("tower p2c call".to_string());
    cases.push("pingora select round_robin".to_string());
    cases.push("pingora select consistent".to_string());
    for name in ["p2c_least_pending", "round_robin", "maglev", "ring_hash"] {
        cases.push(format!("waypost rebuild {name}"));
    }
    cases.push("pingora rebuild round_robin".to_string());
    cases.push("pingora rebuild consistent".to_string());
    cases
}

/// Instructions callgrind counted inside `measured_loop` for one run of the case.
fn count(case: &str, n: usize, iters: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            "--toggle-collect=*measured_loop*",
        ])
        .arg(exe)
        .env(CASE_VAR, format!("{case}/{n}/{iters}"))
        .output()
        .map_err(|e| {
            format!("valgrind could not be started ({e}); install it: apt-get install valgrind")
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{case} at N={n}: {}", stderr.trim()));
    }
    stderr
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("Collected :")?;
            rest.trim().parse().ok()
        })
        .ok_or_else(|| format!("{case} at N={n}: no callgrind summary in {stderr}"))
}

fn main() {
    if let Ok(spec) = std::env::var(CASE_VAR) {
        let mut parts = spec.rsplitn(3, '/');
        let iters = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("iterations");
        let n = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("endpoints");
        let case = parts.next().expect("case");
        run_case(case, n, iters);
        return;
    }
    // `cargo bench` passes `--bench`; anything else filters the cases by substring.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let selected: Vec<String> = cases()
        .into_iter()
        .filter(|case| filters.is_empty() || filters.iter().any(|f| case.contains(f.as_str())))
        .collect();

    println!(
        "instructions per operation (callgrind; {LONG} - {SHORT} iterations, rebuilds {REBUILD_LONG} - {REBUILD_SHORT})"
    );
    print!("{:<34}", "case");
    for n in SIZES {
        print!("{:>14}", format!("N={n}"));
    }
    println!("{:>20}", "x floor (N=1000)");
    let mut floor_at_1000 = None;
    let mut failed = false;
    for case in &selected {
        print!("{case:<34}");
        let mut at_1000 = None;
        for n in SIZES {
            let (short, long) = if case.contains("rebuild") {
                (REBUILD_SHORT, REBUILD_LONG)
            } else {
                (SHORT, LONG)
            };
            let per_op = count(case, n, short).and_then(|short_count| {
                count(case, n, long).map(|long_count| {
                    long_count.saturating_sub(short_count) as f64 / (long - short) as f64
                })
            });
            match per_op {
                Ok(per_op) => {
                    if n == 1000 {
                        at_1000 = Some(per_op);
                    }
                    print!("{per_op:>14.1}");
                }
                Err(error) => {
                    failed = true;
                    print!("{:>14}", "error");
                    eprintln!("{error}");
                }
            }
        }
        if case == "floor" {
            floor_at_1000 = at_1000;
        }
        match (at_1000, floor_at_1000) {
            (Some(value), Some(floor)) if floor > 0.0 && !case.contains("rebuild") => {
                println!("{:>20.2}", value / floor)
            }
            _ => println!(),
        }
    }
    if failed {
        std::process::exit(1);
    }
}
