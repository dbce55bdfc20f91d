//! Many Services in one process: 200 targets (`WAYPOST_FLEET_SERVICES`) of 100 endpoints each,
//! each with its own `Balance` (P2C Peak EWMA, no-op endpoint services, so no connections),
//! against a server running in a child process (so that its memory and CPU are not counted
//! here). Two sources (`WAYPOST_FLEET_SOURCE`):
//!
//! - `kubernetes` (the default): `kubernetes:///` targets against the fake API server, one
//!   EndpointSlice per Service. The targets share one watch of their namespace
//!   (`SharedWatches`); `WAYPOST_FLEET_WATCHES=own` gives each its own watch instead (one shared
//!   `kube::Client` either way); `WAYPOST_FLEET_PAGE_SIZE` sets the list page size.
//! - `dns`: `dns:///` targets against the rig's hickory DNS server, 100 A records per name with a
//!   TTL of 5 s (CoreDNS's default), so each source asks again about every 5 s; the answers are
//!   larger than a UDP answer may be, so each lookup ends on TCP, as it would from CoreDNS.
//! - `xds`: `xds:///` targets against the rig's xDS management server, each Service its own
//!   listener, route configuration, cluster and endpoint assignment (1000 Services are 1000
//!   clusters of 100 endpoints), all over the one ADS stream the sources share.
//!
//! What it measures:
//!
//! - memory: what discovery and the balancers hold once every target is resolved, counted by an
//!   instrumented allocator (exact), and the resident set's growth (allocator overhead, thread
//!   stacks and buffers included);
//! - a change reaching picks (Kubernetes and xDS; a DNS change waits for the next lookup, which
//!   the TTL sets, see `dns_visibility`): one endpoint of one Service turns not ready (for xDS,
//!   UNHEALTHY in a new assignment); the time
//!   from the write being asked for (before the child applies it) until the source publishes
//!   the new set (waited for without spinning), and until the Service's balancer no longer
//!   picks it (spinning for 200 µs, then looking every 20 µs), over 200 changes spread over the
//!   Services; and the same two from the server accepting the write (the child's wall-clock
//!   time, which leaves the rig's own building and storing of the object out);
//! - quiet: the CPU time this process spends over 20 s without any change (the DNS sources'
//!   lookups go on);
//! - churn: 1% of all endpoints replaced per second (the child replaces one endpoint of one
//!   Service per write, round robin over the Services) for a minute; the CPU time this process
//!   spends on it, and that every balancer ends with the new endpoints.
//!
//! ```text
//! cargo bench -p waypost-benches --bench fleet
//! WAYPOST_FLEET_SOURCE=dns cargo bench -p waypost-benches --bench fleet
//! WAYPOST_FLEET_SOURCE=xds cargo bench -p waypost-benches --bench fleet
//! ```
//!
//! Without `--bench` (as `cargo test --benches` runs it): 20 Services, short phases.

use std::alloc::System;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use waypost_balance::Balance;
use waypost_benches::kubernetes::{endpoint_ip, endpoint_json, service_slice_json};
use waypost_discovery::source::dns::{DnsOptions, DnsSource, IpFamilies};
use waypost_discovery::source::kubernetes::{DEFAULT_PAGE_SIZE, KubernetesSource, SharedWatches};
use waypost_discovery::{DnsTarget, Endpoint, Endpoints, KubernetesTarget};
use waypost_tests::dns::server::DnsServer;
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
/// The DNS records' TTL, in seconds.
const TTL: u32 = 5;

/// Where the targets come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Kubernetes,
    Dns,
    Xds,
}

impl Source {
    fn from_env() -> Self {
        match std::env::var("WAYPOST_FLEET_SOURCE").as_deref() {
            Ok("dns") => Source::Dns,
            Ok("xds") => Source::Xds,
            Ok("kubernetes") | Err(_) => Source::Kubernetes,
            Ok(other) => {
                panic!("WAYPOST_FLEET_SOURCE is `kubernetes`, `dns` or `xds`, not `{other}`")
            }
        }
    }
}

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

/// Service `s`'s slice after `shift` replacements with `generation`, the same as [`slice`]
/// makes, changed from the one written last (`last`: its shift and object). Building a slice
/// anew took the child about 1 ms of its core, which the client's measurements then shared.
fn next_slice(last: &mut (usize, Value), service: usize, shift: usize, generation: u64) -> Value {
    let name = service_name(service);
    let endpoints = last.1["endpoints"]
        .as_array_mut()
        .expect("a slice has endpoints");
    while last.0 < shift {
        last.0 += 1;
        endpoints.remove(0);
        endpoints.push(endpoint_json(
            &name,
            service * SPACING + last.0 + PER_SERVICE - 1,
            true,
        ));
    }
    // Only the last endpoint's readiness changes with the generation; the one before it was
    // last before a replacement.
    let count = endpoints.len();
    for (position, endpoint) in endpoints.iter_mut().enumerate().skip(count - 2) {
        let ready = !(generation % 2 == 1 && position == count - 1);
        endpoint["conditions"] = json!({ "ready": ready, "serving": ready, "terminating": false });
    }
    last.1["metadata"]["resourceVersion"] = Value::from(format!("{}", 1000 + generation));
    last.1.clone()
}

/// `at` as nanoseconds since the Unix epoch, for the parent to compare with its own clock.
fn unix_nanos(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// `at`, an `Instant` of this process, on the wall clock the two processes share.
fn wall_clock(at: Instant) -> SystemTime {
    SystemTime::now() - at.elapsed()
}

fn address(index: usize) -> SocketAddr {
    format!("{}:8080", endpoint_ip(index)).parse().unwrap()
}

/// The DNS name of Service `s`.
fn dns_name(service: usize) -> String {
    format!("{}.fleet.test.", service_name(service))
}

/// Service `s`'s A records after `shift` replacements, as in [`slice`].
fn records(service: usize, shift: usize) -> Vec<IpAddr> {
    let first = service * SPACING + shift;
    (first..first + PER_SERVICE)
        .map(|index| endpoint_ip(index).parse().unwrap())
        .collect()
}

/// The xDS listener of Service `s`.
fn listener_name(service: usize) -> String {
    format!("{}.fleet.test:8080", service_name(service))
}

/// Service `s`'s endpoint assignment after `shift` replacements, as in [`slice`]: `generation`
/// odd makes the last endpoint UNHEALTHY.
fn xds_assignment(
    service: usize,
    shift: usize,
    generation: u64,
) -> envoy_types::pb::google::protobuf::Any {
    use waypost_tests::xds::{HostSpec, LocalitySpec};
    let first = service * SPACING + shift;
    let hosts = (first..first + PER_SERVICE)
        .map(|index| {
            let host = HostSpec::healthy(address(index));
            if generation % 2 == 1 && index == first + PER_SERVICE - 1 {
                host.with_health(envoy_types::pb::envoy::config::core::v3::HealthStatus::Unhealthy)
            } else {
                host
            }
        })
        .collect();
    let name = format!("{}-eds", listener_name(service));
    waypost_tests::xds::assignment(&name, &[LocalitySpec::new("fleet-a", hosts)])
}

/// What one write in the child does: Service, shift, generation; returns when the server
/// accepted it (before any client can see it).
type Writer = Box<dyn FnMut(usize, usize, u64) -> SystemTime + Send>;
/// The counter each of the child's answers reports.
type Counter = Box<dyn Fn() -> u64 + Send>;

/// The child: the server with every Service, driven by lines on stdin (`flip S G`, `churn
/// RATE SECONDS`), each answered with `done N` (N: compactions of the fake API server, or DNS
/// queries answered so far), a flip with `done N T` (T: when the server accepted the write, in
/// nanoseconds since the Unix epoch).
fn serve(services: usize, source: Source) {
    child::runtime().block_on(async {
        // What one write does, and the counter each answer reports.
        let (mut write, count): (Writer, Counter) = match source {
            Source::Kubernetes => {
                let rig = Arc::new(FakeApiServer::start().await);
                // Each Service's last slice, changed in place by each write.
                let mut written: Vec<(usize, Value)> = (0..services)
                    .map(|service| (0, slice(service, 0, 0)))
                    .collect();
                for (_, object) in &written {
                    rig.apply_value_timed(object.clone());
                }
                let mut check = (0, slice(0, 0, 0));
                assert_eq!(
                    next_slice(&mut check, 0, 2, 1),
                    slice(0, 2, 1),
                    "a slice changed in place is the one built anew"
                );
                // The rig keeps every write as a JSON value: keep its history short.
                rig.compact();
                child::announce(&rig.kubeconfig());
                let writes = AtomicU64::new(0);
                let compactions = Arc::new(AtomicU64::new(0));
                let counted = Arc::clone(&compactions);
                let writer = Arc::clone(&rig);
                (
                    Box::new(move |service, shift, generation| {
                        let object = next_slice(&mut written[service], service, shift, generation);
                        let (_, accepted) = writer.apply_value_timed(object);
                        let accepted = wall_clock(accepted);
                        // Compacted during the churn only (its writes are generation 0): a
                        // compaction while changes are timed could make a watch that resumes
                        // after its timeout relist, which the timing would then include.
                        if generation == 0 && writes.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
                            compactions.fetch_add(1, Ordering::Relaxed);
                            writer.compact();
                        }
                        accepted
                    }),
                    Box::new(move || counted.load(Ordering::Relaxed)),
                )
            }
            Source::Dns => {
                let server = Arc::new(DnsServer::start().await.expect("the DNS server starts"));
                for service in 0..services {
                    server.set_addresses(&dns_name(service), &records(service, 0), TTL);
                }
                child::announce(&server.address().to_string());
                let writer = Arc::clone(&server);
                (
                    Box::new(move |service, shift, generation| {
                        let mut ips = records(service, shift);
                        // An odd generation takes the last endpoint out, as a not-ready pod
                        // leaves a headless Service's answer.
                        if generation % 2 == 1 {
                            ips.pop();
                        }
                        writer.set_addresses(&dns_name(service), &ips, TTL);
                        SystemTime::now()
                    }),
                    Box::new(move || server.query_count() as u64),
                )
            }
            Source::Xds => {
                use waypost_tests::xds::{ControlPlane, ENDPOINTS, publish_chain};
                let plane = Arc::new(
                    ControlPlane::start()
                        .await
                        .expect("the control plane starts"),
                );
                for service in 0..services {
                    let first = service * SPACING;
                    let addresses: Vec<SocketAddr> =
                        (first..first + PER_SERVICE).map(address).collect();
                    publish_chain(&plane, &listener_name(service), &addresses);
                }
                child::announce(&plane.address().to_string());
                let writer = Arc::clone(&plane);
                (
                    Box::new(move |service, shift, generation| {
                        let name = format!("{}-eds", listener_name(service));
                        let assignment = xds_assignment(service, shift, generation);
                        // Taken before the server has it: never too late.
                        let accepted = SystemTime::now();
                        writer.set(ENDPOINTS, &name, assignment);
                        accepted
                    }),
                    Box::new(move || plane.request_count() as u64),
                )
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut shifts = vec![0usize; services];
            for line in std::io::stdin().lines() {
                let line = line.expect("stdin");
                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    // Flip the readiness of Service S's last endpoint (generation G).
                    ["flip", service, generation] => {
                        let service: usize = service.parse().unwrap();
                        let accepted = write(service, shifts[service], generation.parse().unwrap());
                        println!("done {} {}", count(), unix_nanos(accepted));
                        continue;
                    }
                    // Replace endpoints at RATE a second for SECONDS, round robin.
                    ["churn", rate, seconds] => {
                        let rate: u64 = rate.parse().unwrap();
                        let seconds: u64 = seconds.parse().unwrap();
                        let started = Instant::now();
                        for index in 0..rate * seconds {
                            let service = index as usize % services;
                            shifts[service] += 1;
                            write(service, shifts[service], 0);
                            let due =
                                started + Duration::from_secs_f64((index + 1) as f64 / rate as f64);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                    // Nothing: answers with the counter.
                    ["count"] => {}
                    _ => panic!("unknown command {line:?}"),
                }
                println!("done {}", count());
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

/// Whether `balance` picks `address`.
fn picks(balance: &Balancer, address: SocketAddr) -> bool {
    balance.in_flight().iter().any(|(a, _)| *a == address)
}

/// Waits until `balance` picks `address` (`present`) or no longer does: spinning for the first
/// `SPIN` (most changes arrive within microseconds), then looking every `LOOK` with the thread
/// asleep, so that the probe does not hold a core from the runtime that has to make the change
/// (spinning all along, the balancer's share measured 3-4 ms at p99 on two cores, under 1 ms
/// this way).
async fn until_picked(balance: &Balancer, address: SocketAddr, present: bool) {
    const SPIN: Duration = Duration::from_micros(200);
    const LOOK: Duration = Duration::from_micros(20);
    let started = Instant::now();
    while picks(balance, address) != present {
        if started.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            // The probe runs on the thread that blocks on the runtime, not on a worker.
            std::thread::sleep(LOOK);
        }
    }
}

/// Waits until `balance` picks `address`, looking every millisecond: where the CPU time is
/// measured and the wait may be long (a DNS source sees a change at its next lookup).
async fn until_picking(balance: &Balancer, address: SocketAddr) {
    while !picks(balance, address) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The child's command lines.
struct Server(child::Channel);

impl Server {
    fn command(&mut self, line: &str) {
        self.0.send(line);
    }

    /// The counter in the child's answer to the oldest unanswered command.
    fn answer(&mut self) -> u64 {
        let line = self.0.reply();
        line.strip_prefix("done ")
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("the child answered {line:?}"))
    }

    /// When the server accepted the write of the oldest unanswered `flip`.
    fn accepted(&mut self) -> SystemTime {
        let line = self.0.reply();
        let nanos: u64 = line
            .strip_prefix("done ")
            .and_then(|rest| rest.split(' ').nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("the child answered {line:?}"));
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// The child's counter now.
    fn count(&mut self) -> u64 {
        self.command("count");
        self.answer()
    }
}

/// What a phase cost this process, and the DNS queries the child answered meanwhile.
struct Phase {
    spent: Duration,
    wall: Duration,
    queries: u64,
}

impl Phase {
    fn measure(server: &mut Server, run: impl FnOnce(&mut Server)) -> Phase {
        let ticks = process::ticks_per_second();
        let queries = server.count();
        let cpu = process::cpu_time(ticks);
        let started = Instant::now();
        run(server);
        let spent = process::cpu_time(ticks) - cpu;
        let wall = started.elapsed();
        Phase {
            spent,
            wall,
            queries: server.count() - queries,
        }
    }

    fn per_minute(&self) -> f64 {
        self.spent.as_secs_f64() / self.wall.as_secs_f64() * 60.0
    }

    /// The DNS queries per second, for the report line.
    fn queries(&self, source: Source) -> String {
        match source {
            Source::Dns => format!(
                "; {:.0} DNS queries answered per second",
                self.queries as f64 / self.wall.as_secs_f64()
            ),
            Source::Xds => format!(
                "; {:.0} xDS requests (ACKs) received per second",
                self.queries as f64 / self.wall.as_secs_f64()
            ),
            Source::Kubernetes => String::new(),
        }
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (services, quiet_seconds, churn_seconds) = if full { (200, 20, 60) } else { (20, 1, 2) };
    let services = std::env::var("WAYPOST_FLEET_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(services);
    let source = Source::from_env();
    if std::env::var_os(SERVER_VAR).is_some() {
        serve(services, source);
        return;
    }
    let own_watches = std::env::var("WAYPOST_FLEET_WATCHES").is_ok_and(|mode| mode == "own");
    let page_size = std::env::var("WAYPOST_FLEET_PAGE_SIZE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let child::ServerProcess {
        mut child,
        channel,
        announced,
    } = child::start(SERVER_VAR);
    let mut server = Server(channel);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = resident();
    let region = Region::new(GLOBAL);
    let (balancers, sources, watches, discovery) = runtime.block_on(async {
        let mut all_endpoints: Vec<Endpoints> = Vec::new();
        let mut shared_watches = None;
        match source {
            Source::Kubernetes => {
                let client = child::client(&announced).await;
                let watches = SharedWatches::new(client.clone());
                for service in 0..services {
                    let target: KubernetesTarget =
                        format!("kubernetes:///{}.default:http", service_name(service))
                            .parse()
                            .expect("a target");
                    let source = if own_watches {
                        KubernetesSource::new(client.clone(), target)
                    } else {
                        watches.source(target)
                    };
                    all_endpoints.push(source.page_size(page_size).spawn());
                }
                shared_watches = Some(watches);
            }
            Source::Xds => {
                let bootstrap =
                    waypost_discovery::source::xds::Bootstrap::new(announced.trim(), "fleet")
                        .expect("a bootstrap");
                for service in 0..services {
                    let target: waypost_discovery::XdsTarget =
                        format!("xds:///{}", listener_name(service))
                            .parse()
                            .expect("a target");
                    let source = waypost_discovery::source::xds::XdsSource::new(target)
                        .with_bootstrap(bootstrap.clone());
                    all_endpoints.push(source.spawn().expect("an xDS source"));
                }
            }
            Source::Dns => {
                let nameserver: SocketAddr = announced.parse().expect("the server's address");
                let options = DnsOptions::default()
                    .without_system_config()
                    .nameserver(nameserver)
                    .ip_families(IpFamilies::V4Only);
                for service in 0..services {
                    let target: DnsTarget = format!("dns:///{}:8080", dns_name(service))
                        .parse()
                        .expect("a target");
                    let source = DnsSource::new(target).with_options(options.clone());
                    all_endpoints.push(source.spawn().expect("a DNS source"));
                }
            }
        }
        for endpoints in &all_endpoints {
            // A first answer the server could not give (1000 sources asking at once) is
            // retried by the source: wait for the set, not for the first answer.
            while endpoints.load_full().len() != PER_SERVICE {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let discovery = live_bytes(&region);
        let mut balancers = Vec::new();
        for endpoints in &all_endpoints {
            balancers.push(
                Balance::builder(endpoints.clone())
                    .build(|_: &Endpoint| Noop)
                    .unwrap(),
            );
        }
        for (service, balance) in balancers.iter().enumerate() {
            until_picked(balance, address(service * SPACING), true).await;
        }
        (balancers, all_endpoints, shared_watches, discovery)
    });
    let retried: u64 = sources.iter().map(|e| e.health().total_failures()).sum();
    let held = live_bytes(&region);
    let grown = resident().saturating_sub(before);
    let endpoints = services * PER_SERVICE;
    match (&watches, own_watches) {
        (Some(watches), false) => println!(
            "{services} Services (Kubernetes), {} watches (shared): {retried} failed requests while starting, retried by the sources",
            watches.watch_count()
        ),
        (Some(_), true) => println!(
            "{services} Services (Kubernetes), {services} watches (a watch per target): {retried} failed requests while starting, retried by the sources"
        ),
        (None, _) if source == Source::Xds => println!(
            "{services} Services (xDS, one ADS stream): {retried} failures while starting, retried by the sources"
        ),
        (None, _) => println!(
            "{services} Services (DNS, TTL {TTL} s): {retried} failed lookups while starting, retried by the sources"
        ),
    }
    println!(
        "{services} Services x {PER_SERVICE} endpoints: discovery + balancers hold {:.1} MiB ({:.0} B per endpoint); resident set grew {:.1} MiB",
        held as f64 / 1048576.0,
        held as f64 / endpoints as f64,
        grown as f64 / 1048576.0,
    );
    println!(
        "of which discovery (client, sources, sets) {:.1} MiB ({:.0} B per endpoint), balancers {:.1} MiB ({:.0} B per endpoint)",
        discovery as f64 / 1048576.0,
        discovery as f64 / endpoints as f64,
        (held - discovery) as f64 / 1048576.0,
        (held - discovery) as f64 / endpoints as f64,
    );

    // A change reaching picks.
    if source != Source::Dns {
        // Per change: from asking the child (its building and storing the object included) to
        // the set changing and to the picks; the same from the server accepting the write.
        let mut samples = Vec::with_capacity(CHANGES);
        runtime.block_on(async {
            for change in 0..CHANGES {
                let service = change * 7919 % services;
                let last = address(service * SPACING + PER_SERVICE - 1);
                let generation = (change / services) as u64 * 2 + 1;
                // Waiting for the set sleeps; the wait for the balancer spins first (`until_picked`).
                let mut watcher = sources[service].watch();
                let asked = Instant::now();
                server.command(&format!("flip {service} {generation}"));
                watcher.changed().await.expect("the set changes");
                let published = asked.elapsed();
                let published_at = SystemTime::now();
                until_picked(&balancers[service], last, false).await;
                let picked = asked.elapsed();
                let picked_at = SystemTime::now();
                let accepted = server.accepted();
                let since = |at: SystemTime| at.duration_since(accepted).unwrap_or_default();
                samples.push([
                    published,
                    picked,
                    picked - published,
                    since(published_at),
                    since(picked_at),
                ]);
                // Back to ready, before the next change.
                server.command(&format!("flip {service} {}", generation + 1));
                watcher.changed().await.expect("the set changes");
                until_picked(&balancers[service], last, true).await;
                server.accepted();
            }
        });
        for (column, what) in [
            "a change in the Endpoints handle",
            "a change reaching picks",
            "of which the balancer (published -> picks)",
            "from the server accepting the write: in the Endpoints handle",
            "from the server accepting the write: reaching picks",
        ]
        .into_iter()
        .enumerate()
        {
            let mut samples: Vec<Duration> = samples.iter().map(|sample| sample[column]).collect();
            samples.sort();
            println!(
                "{what}, {CHANGES} changes: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
                percentile(&samples, 0.5),
                percentile(&samples, 0.9),
                percentile(&samples, 0.99),
                samples[samples.len() - 1],
            );
        }
    }

    // Quiet: no change at all.
    let quiet = Phase::measure(&mut server, |_| {
        runtime.block_on(async { tokio::time::sleep(Duration::from_secs(quiet_seconds)).await });
    });
    println!(
        "quiet for {quiet_seconds} s: {:.2} s of CPU ({:.1} CPU-s per minute){}",
        quiet.spent.as_secs_f64(),
        quiet.per_minute(),
        quiet.queries(source),
    );

    // Churn: 1% of the endpoints replaced per second.
    let rate = endpoints / 100;
    let churn = Phase::measure(&mut server, |server| {
        server.command(&format!("churn {rate} {churn_seconds}"));
        server.answer();
        // Every balancer ends with its last replacement (a DNS source sees it at its next
        // lookup).
        runtime.block_on(async {
            let writes = rate * churn_seconds as usize;
            for (service, balance) in balancers.iter().enumerate() {
                let shifts = writes / services + usize::from(service < writes % services);
                let newest = address(service * SPACING + shifts + PER_SERVICE - 1);
                until_picking(balance, newest).await;
            }
        });
    });
    println!(
        "churn of {rate} endpoints/s for {churn_seconds} s: {:.2} s of CPU in {:.1} s ({:.1}% of one core; {:.1} CPU-s per minute){}",
        churn.spent.as_secs_f64(),
        churn.wall.as_secs_f64(),
        churn.per_minute() / 60.0 * 100.0,
        churn.per_minute(),
        churn.queries(source),
    );
    drop(server);
    let _ = child.wait();
}
