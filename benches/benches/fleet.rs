//! Many Services in one process: 200 `kubernetes:///` targets (`WAYPOST_FLEET_SERVICES`) of
//! 100 endpoints each, each with its own `Balance` (P2C Peak EWMA, no-op endpoint services, so
//! no connections), against the fake API server running in a child process (so that its memory
//! and CPU are not counted here). The targets share one watch of their namespace
//! (`SharedWatches`); `WAYPOST_FLEET_WATCHES=own` gives each its own watch instead (one shared
//! `kube::Client` either way).
//!
//! - memory: what discovery and the balancers hold once every target is resolved, counted by an
//!   instrumented allocator (exact), and the resident set's growth (allocator overhead, thread
//!   stacks and buffers included);
//! - a change reaching picks: one endpoint of one Service turns not ready; the time from the
//!   write being asked for (before the child applies it) until the Service's balancer no longer
//!   picks it, over 200 changes spread over the Services;
//! - churn: 1% of all endpoints replaced per second (the child writes one slice per replaced
//!   endpoint, round robin over the Services) for a minute; the CPU time this process spends
//!   on it, and that every balancer ends with the new endpoints.
//!
//! ```text
//! cargo bench -p waypost-benches --bench fleet
//! ```
//!
//! Without `--bench` (as `cargo test --benches` runs it): 20 Services, a short churn.

use std::alloc::System;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use waypost_balance::Balance;
use waypost_benches::kubernetes::{endpoint_ip, service_slice_json};
use waypost_discovery::source::kubernetes::{KubernetesSource, SharedWatches};
use waypost_discovery::{Endpoint, Endpoints, KubernetesTarget};
use waypost_tests::kube_api::FakeApiServer;

#[path = "support/noop.rs"]
mod noop;
use noop::Noop;

#[path = "support/memory.rs"]
mod memory;
use memory::live_bytes;

#[path = "support/process.rs"]
mod process;

#[path = "support/child.rs"]
mod child;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SERVER_VAR: &str = "WAYPOST_FLEET_SERVER";
const PER_SERVICE: usize = 100;
/// Endpoint indices of Service `s` start at `s × SPACING`: room for the replacements.
const SPACING: usize = 10_000;
const CHANGES: usize = 200;

fn service_name(service: usize) -> String {
    format!("svc-{service:04}")
}

/// Service `s`'s only slice after `shift` replacements: endpoints `s × SPACING + shift ..` (each
/// shift drops the lowest and adds a new one); `generation` odd makes the last one not ready.
fn slice(service: usize, shift: usize, generation: u64) -> serde_json::Value {
    service_slice_json(
        &service_name(service),
        0,
        service * SPACING + shift,
        PER_SERVICE,
        generation,
    )
}

fn address(index: usize) -> SocketAddr {
    format!("{}:8080", endpoint_ip(index)).parse().unwrap()
}

/// The child: the fake API server with every Service, driven by lines on stdin.
fn serve(services: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let rig = Arc::new(FakeApiServer::start().await);
        for service in 0..services {
            rig.apply(slice(service, 0, 0));
        }
        // The rig keeps every write as a JSON value: keep its history short.
        rig.compact();
        child::announce(&rig.kubeconfig());
        let rig_for_lines = Arc::clone(&rig);
        tokio::task::spawn_blocking(move || {
            let rig = rig_for_lines;
            let mut shifts = vec![0usize; services];
            let mut compacted = 0u64;
            for line in std::io::stdin().lines() {
                let line = line.expect("stdin");
                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    // Flip the readiness of Service S's last endpoint (generation G).
                    ["flip", service, generation] => {
                        let service: usize = service.parse().unwrap();
                        let generation: u64 = generation.parse().unwrap();
                        rig.apply(slice(service, shifts[service], generation));
                    }
                    // Replace endpoints at RATE a second for SECONDS, round robin.
                    ["churn", rate, seconds] => {
                        let rate: u64 = rate.parse().unwrap();
                        let seconds: u64 = seconds.parse().unwrap();
                        let started = Instant::now();
                        for write in 0..rate * seconds {
                            let service = write as usize % services;
                            shifts[service] += 1;
                            rig.apply(slice(service, shifts[service], 0));
                            if write % 100 == 99 {
                                compacted += 1;
                                rig.compact();
                            }
                            let due =
                                started + Duration::from_secs_f64((write + 1) as f64 / rate as f64);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                    _ => panic!("unknown command {line:?}"),
                }
                println!("done {compacted}");
            }
        })
        .await
        .expect("the command loop");
    });
}

type Balancer = Balance<Noop>;

/// The resident set size, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Waits until `balance` picks `address` (`present`) or no longer does.
async fn until_picked(balance: &Balancer, address: SocketAddr, present: bool) {
    while balance.in_flight().iter().any(|(a, _)| *a == address) != present {
        tokio::task::yield_now().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    // 200 by default: with 1000, the sources had not all resolved after 5 minutes against the
    // fake API server (see benches/README.md); WAYPOST_FLEET_SERVICES sets another count.
    let (services, churn_seconds) = if full { (200, 60) } else { (20, 2) };
    let services = std::env::var("WAYPOST_FLEET_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(services);
    if std::env::var_os(SERVER_VAR).is_some() {
        serve(services);
        return;
    }
    let own_watches = std::env::var("WAYPOST_FLEET_WATCHES").is_ok_and(|mode| mode == "own");
    let child::ServerProcess {
        mut child,
        mut commands,
        mut lines,
        kubeconfig,
    } = child::start(SERVER_VAR);
    let mut command = move |line: String| {
        writeln!(commands, "{line}").expect("the child reads commands");
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = resident();
    let region = Region::new(GLOBAL);
    let (balancers, sources, watches) = runtime.block_on(async {
        let client = child::client(&kubeconfig).await;
        let watches = SharedWatches::new(client.clone());
        let mut all_endpoints: Vec<Endpoints> = Vec::new();
        for service in 0..services {
            let target: KubernetesTarget =
                format!("kubernetes:///{}.default:http", service_name(service))
                    .parse()
                    .expect("a target");
            all_endpoints.push(if own_watches {
                KubernetesSource::new(client.clone(), target).spawn()
            } else {
                watches.source(target).spawn()
            });
        }
        let mut balancers = Vec::new();
        for endpoints in &all_endpoints {
            // A first list the server could not answer (1000 connections opening at once) is
            // retried by the source: wait for the set, not for the first answer.
            while endpoints.load_full().len() != PER_SERVICE {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            balancers.push(
                Balance::builder(endpoints.clone())
                    .build(|_: &Endpoint| Noop)
                    .unwrap(),
            );
        }
        for (service, balance) in balancers.iter().enumerate() {
            until_picked(balance, address(service * SPACING), true).await;
        }
        (balancers, all_endpoints, watches)
    });
    let retried: u64 = sources.iter().map(|e| e.health().total_failures()).sum();
    let watch_count = if own_watches {
        services
    } else {
        watches.watch_count()
    };
    let held = live_bytes(&region);
    let grown = resident().saturating_sub(before);
    let endpoints = services * PER_SERVICE;
    println!(
        "{services} Services, {watch_count} watches ({}): {retried} failed API requests while starting, retried by the sources",
        if own_watches {
            "a watch per target"
        } else {
            "shared"
        }
    );
    println!(
        "{services} Services x {PER_SERVICE} endpoints: discovery + balancers hold {:.1} MiB ({:.0} B per endpoint); resident set grew {:.1} MiB",
        held as f64 / 1048576.0,
        held as f64 / endpoints as f64,
        grown as f64 / 1048576.0,
    );

    // A change reaching picks.
    let mut samples = Vec::with_capacity(CHANGES);
    runtime.block_on(async {
        for change in 0..CHANGES {
            let service = change * 7919 % services;
            let last = address(service * SPACING + PER_SERVICE - 1);
            let generation = (change / services) as u64 * 2 + 1;
            let asked = Instant::now();
            command(format!("flip {service} {generation}"));
            until_picked(&balancers[service], last, false).await;
            samples.push(asked.elapsed());
            // Back to ready, before the next change.
            command(format!("flip {service} {}", generation + 1));
            until_picked(&balancers[service], last, true).await;
        }
    });
    // Every flip answered.
    for _ in 0..CHANGES * 2 {
        lines.next().expect("an answer").expect("readable");
    }
    samples.sort();
    println!(
        "a change reaching picks, {CHANGES} changes: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );

    // Churn: 1% of the endpoints replaced per second.
    let rate = endpoints / 100;
    let ticks = process::ticks_per_second();
    let cpu = process::cpu_time(ticks);
    let started = Instant::now();
    command(format!("churn {rate} {churn_seconds}"));
    lines.next().expect("the churn ends").expect("readable");
    // Every balancer ends with its last replacement.
    runtime.block_on(async {
        let writes = rate * churn_seconds;
        for (service, balance) in balancers.iter().enumerate() {
            let shifts = writes / services + usize::from(service < writes % services);
            let newest = address(service * SPACING + shifts + PER_SERVICE - 1);
            until_picked(balance, newest, true).await;
        }
    });
    let spent = process::cpu_time(ticks) - cpu;
    let wall = started.elapsed();
    println!(
        "churn of {rate} endpoints/s for {churn_seconds} s: {:.2} s of CPU in {:.1} s ({:.1}% of one core; {:.1} CPU-s per minute)",
        spent.as_secs_f64(),
        wall.as_secs_f64(),
        spent.as_secs_f64() / wall.as_secs_f64() * 100.0,
        spent.as_secs_f64() / wall.as_secs_f64() * 60.0,
    );
    drop(command);
    let _ = child.wait();
}
