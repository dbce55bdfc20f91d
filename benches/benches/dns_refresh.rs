//! The cost of one DNS refresh of a 1000-record answer: the query, the answer's parsing, the
//! 1000 endpoints built, sorted and compared with the current set, and the new set published.
//!
//! The server is unbound on a loopback port when it is installed (then the CPU time measured
//! in this process is the source's alone), otherwise the in-process hickory server (then it
//! includes encoding the answer). Each iteration switches the name between two disjoint sets
//! of 1000 A records (not timed), asks the source for an early refresh and waits until the new
//! set is published; the answer is 1000 × 16 bytes, so it comes over TCP after a truncated UDP
//! answer, as it would from CoreDNS.
//!
//! Criterion reports wall time per refresh. The CPU time of every thread of this process over
//! the timed sections (from `/proc/self/task/*/schedstat`, nanoseconds) is printed per refresh
//! at the end. A baseline publishes the same 1000 endpoints directly, without DNS.
//!
//! ```text
//! cargo bench -p waypost-benches --bench dns_refresh
//! ```

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use waypost_discovery::source::dns::{DnsOptions, DnsSource, IpFamilies};
use waypost_discovery::{DnsTarget, Endpoint, Endpoints, Publisher};
use waypost_tests::dns::server::DnsServer;
use waypost_tests::dns::unbound::{Binaries, Unbound};

const RECORDS: u32 = 1000;
const NAME: &str = "big.waypost.test.";

/// The `i`-th address of set 0 or 1: 127.{1|2}.x.y.
fn address(set: u32, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + set as u8, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn zone_lines(set: u32) -> Vec<String> {
    (0..RECORDS)
        .map(|i| format!("{NAME} 30 IN A {}", address(set, i)))
        .collect()
}

enum Server {
    Unbound(Unbound),
    InProcess(DnsServer),
}

impl Server {
    fn address(&self) -> SocketAddr {
        match self {
            Server::Unbound(unbound) => unbound.address(),
            Server::InProcess(server) => server.address(),
        }
    }

    async fn switch_to(&mut self, set: u32) {
        match self {
            Server::Unbound(unbound) => {
                let lines = zone_lines(set);
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                unbound.set_records(NAME, &lines).await.unwrap();
            }
            Server::InProcess(server) => {
                let ips: Vec<IpAddr> = (0..RECORDS).map(|i| address(set, i).into()).collect();
                server.set_addresses(NAME, &ips, 30);
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Server::Unbound(_) => "unbound (separate process)",
            Server::InProcess(_) => "in-process hickory server (its encoding is included)",
        }
    }
}

/// CPU time of every thread of this process so far.
fn process_cpu() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(on_cpu) = text.split_whitespace().next()
            {
                total += on_cpu.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

struct Rig {
    server: Server,
    endpoints: Endpoints,
    set: u32,
    cpu: Duration,
    refreshes: u64,
}

fn refresh(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let rig = runtime.block_on(async {
        let lines = zone_lines(0);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut server = match Binaries::find() {
            Ok(binaries) => Server::Unbound(Unbound::start(binaries, &lines).await.unwrap()),
            Err(reason) => {
                eprintln!("{reason}; using the in-process server");
                Server::InProcess(DnsServer::start().await.unwrap())
            }
        };
        server.switch_to(0).await;
        let target: DnsTarget = format!("dns:///{NAME}:80").parse().unwrap();
        let endpoints = DnsSource::new(target)
            .with_options(
                DnsOptions::default()
                    .without_system_config()
                    .nameserver(server.address())
                    .ip_families(IpFamilies::V4Only)
                    .refresh_bounds(Duration::from_secs(30), Duration::from_secs(30))
                    .early_refresh_interval(Duration::ZERO),
            )
            .spawn()
            .unwrap();
        assert_eq!(endpoints.resolved().await.unwrap().len(), RECORDS as usize);
        Rig {
            server,
            endpoints,
            set: 0,
            cpu: Duration::ZERO,
            refreshes: 0,
        }
    });
    let kind = rig.server.kind();
    let rig = Mutex::new(rig);

    let mut group = c.benchmark_group("dns_refresh_1000_records");
    group.sample_size(30);
    group.bench_function("refresh (changed answer)", |b| {
        b.iter_custom(|iters| {
            let mut rig = rig.lock().unwrap();
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rig.set = 1 - rig.set;
                    let set = rig.set;
                    rig.server.switch_to(set).await;
                    let mut watcher = rig.endpoints.watch();
                    let cpu_before = process_cpu();
                    let started = Instant::now();
                    rig.endpoints.request_refresh();
                    let published = watcher.changed().await.unwrap();
                    total += started.elapsed();
                    let cpu = process_cpu() - cpu_before;
                    rig.cpu += cpu;
                    rig.refreshes += 1;
                    assert_eq!(published.len(), RECORDS as usize);
                    assert_eq!(
                        published[0].address().ip(),
                        IpAddr::from(address(set, 0)),
                        "the new set"
                    );
                }
                total
            })
        });
    });

    let endpoints: Vec<Endpoint> = (0..RECORDS)
        .map(|i| Endpoint::new(SocketAddr::new(address(0, i).into(), 80)))
        .collect();
    let other: Vec<Endpoint> = (0..RECORDS)
        .map(|i| Endpoint::new(SocketAddr::new(address(1, i).into(), 80)))
        .collect();
    let mut publisher = Publisher::new("bench");
    let _reader = publisher.endpoints();
    let mut flip = false;
    group.bench_function("baseline: publish 1000 endpoints without DNS", |b| {
        b.iter(|| {
            flip = !flip;
            let next = if flip { &endpoints } else { &other };
            black_box(publisher.publish(next.iter().cloned()))
        });
    });
    group.finish();

    let rig = rig.lock().unwrap();
    if rig.refreshes > 0 {
        println!(
            "dns_refresh: server {kind}; {} refreshes; CPU time of this process per refresh: {:.3} ms",
            rig.refreshes,
            rig.cpu.as_secs_f64() * 1000.0 / rig.refreshes as f64
        );
    }
}

criterion_group!(benches, refresh);
criterion_main!(benches);
