//! The quickstart: waypost balancing live traffic, with no cluster and no setup.
//!
//! Starts an in-process DNS server and HTTP backends on loopback addresses that share one port,
//! as the pods behind a headless Kubernetes Service do, then sends traffic through a waypost
//! HTTP client built from `dns:///web.demo.svc.cluster.local:PORT` while the fleet changes:
//!
//! 1. steady: three backends;
//! 2. scale up: two more appear in DNS;
//! 3. one backend slowed to 80 ms: Peak EWMA sends it little;
//! 4. one backend killed without warning: requests in flight are retried (GETs are idempotent);
//! 5. one backend terminating: it leaves DNS, drains and shuts down gracefully.
//!
//! After each phase it prints who answered (share, p50/p99 latency, errors, state), what the
//! balancer knows of each backend from its `snapshot()` (the Peak EWMA latency estimate, and
//! whether it may pick the backend or why not), and checks what waypost promises; it exits with
//! an error if a check fails.
//!
//! ```text
//! cargo run -p waypost-examples --example quickstart
//! ```
//!
//! Everything it runs is in this file and in `quickstart/`, and uses waypost's public API only:
//! the DNS server (`quickstart/dns.rs`, hickory-server), the backends (`quickstart/backend.rs`,
//! hyper) and the callers (`quickstart/load.rs`) stand in for what a cluster would provide.

#[path = "quickstart/backend.rs"]
mod backend;
#[path = "quickstart/dns.rs"]
mod dns;
#[path = "quickstart/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use waypost::discovery::source::dns::DnsOptions;
use waypost::hyper::{HttpClient, RetryBudget};

use backend::Backend;
use dns::DnsServer;
use load::{Failure, Load, Tally};

const NAME: &str = "web.demo.svc.cluster.local";
const CALLERS: usize = 8;
const PHASE: Duration = Duration::from_secs(3);
const BASE_LATENCY: Duration = Duration::from_millis(2);

type Client = HttpClient<Empty<Bytes>>;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn get(client: Client) -> Result<SocketAddr, Failure> {
    let request = http::Request::get("/")
        .body(Empty::new())
        .expect("a valid request");
    let response = client.request(request).await.map_err(|error| Failure {
        backend: error.endpoint(),
        message: error.to_string(),
    })?;
    let backend: Option<SocketAddr> = response
        .headers()
        .get("x-backend")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok());
    if !response.status().is_success() {
        return Err(Failure {
            backend,
            message: format!("status {}", response.status()),
        });
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| Failure {
            backend,
            message: error.to_string(),
        })?;
    backend
        .filter(|_| !body.to_bytes().is_empty())
        .ok_or_else(|| Failure {
            backend: None,
            message: "the answer does not say who sent it".to_owned(),
        })
}

struct Fleet {
    backends: BTreeMap<SocketAddr, (Backend, &'static str)>,
    gone: BTreeMap<SocketAddr, &'static str>,
}

impl Fleet {
    fn state(&self, address: &SocketAddr) -> &'static str {
        self.backends
            .get(address)
            .map(|(_, state)| *state)
            .or_else(|| self.gone.get(address).copied())
            .unwrap_or("?")
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => {
            println!("\nok: every check passed");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("\nfailed: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let dns = DnsServer::start()
        .await
        .map_err(|e| format!("DNS server: {e}"))?;
    let first = Backend::start_on(SocketAddr::new(ip(2), 0))
        .await
        .map_err(|e| format!("backend: {e}"))?;
    let port = first.port();
    let mut fleet = Fleet {
        backends: BTreeMap::new(),
        gone: BTreeMap::new(),
    };
    fleet.backends.insert(first.address(), (first, "serving"));
    for last in [3, 4] {
        let backend = Backend::start_on(SocketAddr::new(ip(last), port))
            .await
            .map_err(|e| format!("backend: {e}"))?;
        fleet
            .backends
            .insert(backend.address(), (backend, "serving"));
    }
    for (backend, _) in fleet.backends.values() {
        backend.set_latency(BASE_LATENCY);
    }
    dns.set_addresses(NAME, &[ip(2), ip(3), ip(4)], 1);

    let target = format!("dns:///{NAME}.:{port}");
    println!("waypost quickstart: {CALLERS} callers, target {target}");
    println!(
        "(an in-process DNS server on {} answers for {NAME}; backends on 127.0.0.x:{port})",
        dns.address()
    );
    let client: Client = waypost::Builder::new(&target)
        .map_err(|e| e.to_string())?
        // Ask the local DNS server only, not the system's resolver configuration.
        .dns_options(
            DnsOptions::default()
                .without_system_config()
                .nameserver(dns.address()),
        )
        .retry_idempotent(RetryBudget::default())
        .http_client()
        .map_err(|e| e.to_string())?;
    client
        .endpoints()
        .resolved()
        .await
        .map_err(|e| format!("first resolution: {e}"))?;

    let load = {
        let client = client.clone();
        Load::start(CALLERS, Duration::ZERO, move || get(client.clone()))
    };

    // 1. Steady.
    let tally = phase(&load, "1/5 steady: three backends", PHASE).await;
    report(&fleet, &tally, &client).await;
    check(tally.failed == 0, "no request fails while nothing changes")?;
    check(tally.answers.len() == 3, "all three backends answer")?;

    // 2. Scale up.
    for last in [5, 6] {
        let backend = Backend::start_on(SocketAddr::new(ip(last), port))
            .await
            .map_err(|e| format!("backend: {e}"))?;
        backend.set_latency(BASE_LATENCY);
        fleet.backends.insert(backend.address(), (backend, "new"));
        dns.add_address(NAME, ip(last), 1);
    }
    let tally = phase(
        &load,
        "2/5 scale up: two backends added to DNS",
        PHASE + Duration::from_secs(1),
    )
    .await;
    report(&fleet, &tally, &client).await;
    check(tally.failed == 0, "no request fails while the fleet grows")?;
    check(
        [5, 6]
            .iter()
            .all(|&last| tally.answers.contains_key(&SocketAddr::new(ip(last), port))),
        "the new backends take traffic after one DNS refresh",
    )?;
    for (_, state) in fleet.backends.values_mut() {
        *state = "serving";
    }

    // 3. One backend slowed.
    let slow = SocketAddr::new(ip(2), port);
    if let Some((backend, state)) = fleet.backends.get_mut(&slow) {
        backend.set_latency(Duration::from_millis(80));
        *state = "slow";
    }
    let tally = phase(&load, "3/5 one backend slowed to 80 ms", PHASE).await;
    report(&fleet, &tally, &client).await;
    check(
        tally.failed == 0,
        "no request fails because of a slow backend",
    )?;
    check(
        tally.share(slow) < 0.2 / 2.0,
        "Peak EWMA sends the slow backend less than half its fair share (20%)",
    )?;
    if let Some((backend, state)) = fleet.backends.get_mut(&slow) {
        backend.set_latency(BASE_LATENCY);
        *state = "serving";
    }

    // 4. One backend killed: no graceful shutdown, still in DNS at first.
    let killed = SocketAddr::new(ip(3), port);
    if let Some((backend, _)) = fleet.backends.remove(&killed) {
        backend.kill();
        fleet.gone.insert(killed, "killed");
    }
    let tally = phase(&load, "4/5 one backend killed", PHASE).await;
    report(&fleet, &tally, &client).await;
    println!(
        "   ({slow} serves at full speed again, but its latency estimate decays over Peak \
         EWMA's 10 s: its share grows back gradually, not at once)"
    );
    check(
        tally.failed == 0,
        "no request fails: requests cut off by the kill are retried (GET is idempotent)",
    )?;
    dns.remove_address(NAME, ip(3));

    // 5. One backend terminating: out of DNS first, then a graceful shutdown.
    let leaving = SocketAddr::new(ip(4), port);
    if let Some((_, state)) = fleet.backends.get_mut(&leaving) {
        *state = "terminating";
    }
    dns.remove_address(NAME, ip(4));
    println!("\n== 5/5 one backend terminating: out of DNS, drained, shut down gracefully");
    // Discovery drops it, then the balancer (on its own task); then the requests it still has
    // finish before the server shuts down.
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while client.endpoints().load().contains(&leaving)
            || client
                .in_flight()
                .iter()
                .any(|(address, _)| *address == leaving)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while fleet
            .backends
            .get(&leaving)
            .is_some_and(|(backend, _)| backend.in_flight() > 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    check(
        drained.is_ok(),
        "the terminating backend leaves the endpoint set and the balancer",
    )?;
    // Requests it received from now on would have been sent after it left.
    let received = fleet
        .backends
        .get(&leaving)
        .map(|(backend, _)| backend.requests())
        .unwrap_or(0);
    let mut late = 0;
    if let Some((backend, _)) = fleet.backends.remove(&leaving) {
        late = backend.shutdown().await - received;
        fleet.gone.insert(leaving, "gone");
    }
    let tally = phase(&load, "", PHASE).await;
    report(&fleet, &tally, &client).await;
    check(
        tally.failed == 0,
        "no request fails during a graceful termination",
    )?;
    check(
        late == 0,
        "nothing goes to the terminating backend after it left",
    )?;

    let total = load.stop().await;
    check(total.failed == 0, "no failed request after the last phase")?;
    Ok(())
}

/// Runs the load for `length` with a progress line; returns what happened during it.
async fn phase(load: &Load, title: &str, length: Duration) -> Tally {
    if !title.is_empty() {
        println!("\n== {title}");
    }
    load.take();
    let terminal = std::io::stdout().is_terminal();
    let started = tokio::time::Instant::now();
    let mut ticks = 0u32;
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ticks += 1;
        let tally = load.tally();
        let line = format!(
            "   {:>4.1} s  {:>6} requests  {:>3} errors",
            started.elapsed().as_secs_f64(),
            tally.succeeded() + tally.failed,
            tally.failed
        );
        // Redraw in place on a terminal; a log gets one line a second.
        if terminal {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if ticks.is_multiple_of(4) {
            println!("{line}");
        }
    }
    if terminal {
        println!();
    }
    load.take()
}

/// What the balancer thinks of an endpoint, in a word or two.
fn balancer_view(endpoint: &waypost::balance::EndpointSnapshot) -> String {
    use waypost::balance::Connectivity;
    if endpoint.ejected_for.is_some() {
        "ejected".to_owned()
    } else if endpoint.unreachable_for.is_some()
        || endpoint.connectivity == Connectivity::Disconnected
    {
        "unreachable".to_owned()
    } else if endpoint.passed_over_for.is_some() {
        "passed over".to_owned()
    } else if !endpoint.usable {
        "not usable".to_owned()
    } else if endpoint.consecutive_failures > 0 && endpoint.connectivity != Connectivity::Connected
    {
        // Its backoff ended: the next request to it is a probe.
        "probing".to_owned()
    } else {
        "usable".to_owned()
    }
}

async fn report(fleet: &Fleet, tally: &Tally, client: &Client) {
    let snapshot = client.snapshot().await;
    let known: BTreeMap<SocketAddr, &waypost::balance::EndpointSnapshot> = snapshot
        .endpoints
        .iter()
        .map(|endpoint| (endpoint.address, endpoint))
        .collect();
    println!(
        "   {:<18} {:>7} {:>9} {:>9} {:>7}  {:<12} {:>9}  balancer",
        "backend", "share", "p50", "p99", "errors", "state", "estimate"
    );
    let mut rows: Vec<SocketAddr> = fleet.backends.keys().copied().collect();
    rows.extend(fleet.gone.keys().copied());
    rows.extend(tally.answers.keys().copied());
    rows.sort();
    rows.dedup();
    for address in rows {
        let mut latencies = tally.latencies.get(&address).cloned().unwrap_or_default();
        latencies.sort_unstable();
        let percentile = |p: f64| {
            if latencies.is_empty() {
                "-".to_owned()
            } else {
                let index =
                    ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
                format!("{:.1?}", latencies[index])
            }
        };
        let (estimate, view) = match known.get(&address) {
            Some(endpoint) => (
                endpoint
                    .latency_estimate
                    .map_or("-".to_owned(), |estimate| format!("{estimate:.1?}")),
                balancer_view(endpoint),
            ),
            None => ("-".to_owned(), "left the set".to_owned()),
        };
        println!(
            "   {:<18} {:>6.1}% {:>9} {:>9} {:>7}  {:<12} {:>9}  {}",
            address.to_string(),
            tally.share(address) * 100.0,
            percentile(0.50),
            percentile(0.99),
            tally.errors.get(&address).copied().unwrap_or(0),
            fleet.state(&address),
            estimate,
            view
        );
    }
    println!(
        "   total: {} requests, {} failed{}",
        tally.succeeded() + tally.failed,
        tally.failed,
        tally
            .failures
            .first()
            .map(|first| format!(" (first: {first})"))
            .unwrap_or_default()
    );
}

fn check(ok: bool, promise: &str) -> Result<(), String> {
    if ok {
        println!("   check: {promise}: yes");
        Ok(())
    } else {
        Err(promise.to_owned())
    }
}
