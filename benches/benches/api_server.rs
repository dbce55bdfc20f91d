//! The API server's side of a fleet: `M` client processes each resolving the same `S = 20`
//! Services of one namespace, simulated as `M` clients (each its own `kube::Client`, so its own
//! connections, as separate pods would have) in this process, against the fake API server in
//! a child process. Two ways to watch, in the same run:
//!
//! - **own**: a watch per target (`KubernetesSource::new`), `M × S` watches;
//! - **shared**: one [`SharedWatches`] per client, one watch per client for its namespace.
//!
//! For each: the watches and list requests the server answered, the bytes it sent while the
//! clients started, and per change (one endpoint of one Service turning not ready) the bytes it
//! sent, the CPU time the server process spent, and the time until every client saw it.
//!
//! ```text
//! cargo bench -p waypost-benches --bench api_server
//! ```
//!
//! `WAYPOST_API_CLIENTS` sets `M` (default 500 for both modes, then 1000 for shared watches
//! only: at `M × S = 20 000` watches a watch per target needs more file descriptors than the
//! limit of 20 000 here, in both processes). Without `--bench` (as `cargo test --benches` runs
//! it): 10 clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use waypost_benches::kubernetes::service_slice_json;
use waypost_discovery::source::kubernetes::{KubernetesSource, SharedWatches};
use waypost_discovery::{Endpoints, KubernetesTarget};
use waypost_tests::kube_api::FakeApiServer;

#[path = "support/process.rs"]
mod process;

#[path = "support/child.rs"]
mod child;

const SERVER_VAR: &str = "WAYPOST_API_SERVER";
const SERVICES: usize = 20;
const PER_SERVICE: usize = 10;
const CHANGES: usize = 20;

fn service_name(service: usize) -> String {
    format!("svc-{service:02}")
}

fn slice(service: usize, generation: u64) -> serde_json::Value {
    service_slice_json(
        &service_name(service),
        0,
        service * 100,
        PER_SERVICE,
        generation,
    )
}

/// The child: the fake API server with every Service, driven by lines on stdin.
fn serve() {
    child::runtime().block_on(async {
        let rig = Arc::new(FakeApiServer::start().await);
        for service in 0..SERVICES {
            rig.apply(slice(service, 0));
        }
        rig.compact();
        child::announce(&rig.kubeconfig());
        let ticks = process::ticks_per_second();
        let rig_for_lines = Arc::clone(&rig);
        tokio::task::spawn_blocking(move || {
            let rig = rig_for_lines;
            for line in std::io::stdin().lines() {
                let line = line.expect("stdin");
                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    ["change", service, generation] => {
                        rig.apply(slice(service.parse().unwrap(), generation.parse().unwrap()));
                        rig.compact();
                        println!("done");
                    }
                    ["stats"] => println!(
                        "{} {} {} {} {} {}",
                        rig.list_count(),
                        rig.watch_count(),
                        rig.live_watches(),
                        rig.list_bytes(),
                        rig.watch_bytes(),
                        process::cpu_time(ticks).as_secs_f64(),
                    ),
                    _ => panic!("unknown command {line:?}"),
                }
            }
        })
        .await
        .expect("the command loop");
    });
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    lists: usize,
    watches: usize,
    live: usize,
    list_bytes: u64,
    watch_bytes: u64,
    cpu: f64,
}

struct Server(child::Channel);

impl Server {
    fn ask(&mut self, line: &str) -> String {
        self.0.send(line);
        self.0.reply()
    }

    fn stats(&mut self) -> Stats {
        let answer = self.ask("stats");
        let fields: Vec<&str> = answer.split(' ').collect();
        Stats {
            lists: fields[0].parse().unwrap(),
            watches: fields[1].parse().unwrap(),
            live: fields[2].parse().unwrap(),
            list_bytes: fields[3].parse().unwrap(),
            watch_bytes: fields[4].parse().unwrap(),
            cpu: fields[5].parse().unwrap(),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts `clients` clients that each resolve every Service, measures, and stops them.
fn run(
    runtime: &tokio::runtime::Runtime,
    server: &mut Server,
    kubeconfig: &str,
    clients: usize,
    shared: bool,
    generations: &mut [u64],
) {
    let mode = if shared { "shared" } else { "own" };
    let before = server.stats();
    let targets: Vec<Vec<Endpoints>> = runtime.block_on(async {
        let mut all = Vec::with_capacity(clients);
        for _ in 0..clients {
            let client = child::client(kubeconfig).await;
            let watches = SharedWatches::new(client.clone());
            let endpoints: Vec<Endpoints> = (0..SERVICES)
                .map(|service| {
                    let target: KubernetesTarget =
                        format!("kubernetes:///{}.default:http", service_name(service))
                            .parse()
                            .expect("a target");
                    if shared {
                        watches.source(target).spawn()
                    } else {
                        KubernetesSource::new(client.clone(), target).spawn()
                    }
                })
                .collect();
            all.push(endpoints);
        }
        for endpoints in all.iter().flatten() {
            // A first list the server could not answer at once is retried by the source.
            while endpoints.revision() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        all
    });
    // Every watch open: the server counts a watch once its stream task runs.
    let expected = if shared { clients } else { clients * SERVICES };
    let mut started = server.stats();
    while started.live < expected || started.watches - before.watches < expected {
        std::thread::sleep(Duration::from_millis(50));
        started = server.stats();
    }
    println!(
        "{mode:>6}, M = {clients}: {} watches open ({} watch requests), {} lists, {:.1} MiB listed, {:.1} MiB of watch events while starting",
        started.live,
        started.watches - before.watches,
        started.lists - before.lists,
        (started.list_bytes - before.list_bytes) as f64 / 1048576.0,
        (started.watch_bytes - before.watch_bytes) as f64 / 1048576.0,
    );

    let mut samples = Vec::with_capacity(CHANGES);
    let first = server.stats();
    for change in 0..CHANGES {
        let service = change % SERVICES;
        generations[service] += 1;
        let generation = generations[service];
        let ready = if generation % 2 == 1 {
            PER_SERVICE - 1
        } else {
            PER_SERVICE
        };
        let asked = Instant::now();
        server.ask(&format!("change {service} {generation}"));
        runtime.block_on(async {
            for endpoints in &targets {
                while endpoints[service].load().len() != ready {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        });
        samples.push(asked.elapsed());
    }
    let last = server.stats();
    samples.sort();
    println!(
        "{mode:>6}, M = {clients}: per change {:.1} KiB sent, {:.2} ms of server CPU; every client saw it after p50 {:?}, p99 {:?} ({CHANGES} changes; {} relists)",
        (last.watch_bytes - first.watch_bytes) as f64 / CHANGES as f64 / 1024.0,
        (last.cpu - first.cpu) * 1000.0 / CHANGES as f64,
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        last.lists - first.lists,
    );
    drop(targets);
    let mut stopped = server.stats();
    while stopped.live > 0 {
        std::thread::sleep(Duration::from_millis(50));
        stopped = server.stats();
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    if std::env::var_os(SERVER_VAR).is_some() {
        serve();
        return;
    }
    let clients: Vec<(usize, bool)> = match std::env::var("WAYPOST_API_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(m) => vec![(m, false), (m, true)],
        None if full => vec![(500, false), (500, true), (1000, true)],
        None => vec![(10, false), (10, true)],
    };
    let child::ServerProcess {
        mut child,
        channel,
        announced: kubeconfig,
    } = child::start(SERVER_VAR);
    let mut server = Server(channel);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("S = {SERVICES} Services x {PER_SERVICE} endpoints in one namespace");
    // Per Service: an odd generation has its last endpoint not ready.
    let mut generations = [0u64; SERVICES];
    for (m, shared) in clients {
        run(
            &runtime,
            &mut server,
            &kubeconfig,
            m,
            shared,
            &mut generations,
        );
    }
    drop(server);
    let _ = child.wait();
}
