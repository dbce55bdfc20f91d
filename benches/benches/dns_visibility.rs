//! How long a DNS record change takes to become visible in `Endpoints`, over many changes, with
//! a TTL of 1 s and the default refresh settings (floor 1 s, ceiling 30 s, 10% jitter).
//!
//! The in-process hickory server holds one name with a 1 s TTL. Each round waits a random
//! 0-1.5 s (so changes land at every phase of the refresh cycle), replaces the name's address,
//! and measures the time until a watcher of the handle sees the new address. The expected
//! bound is one refresh period (TTL stretched by the jitter, 1.0-1.1 s) plus one lookup;
//! the expected mean about half of that.
//!
//! This is a distribution, not a throughput: criterion's statistics do not fit it, so the
//! bench prints percentiles itself. `WAYPOST_BENCH_CHANGES` sets the number of changes
//! (default 60).
//!
//! ```text
//! cargo bench -p waypost-benches --bench dns_visibility
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use waypost_discovery::DnsTarget;
use waypost_discovery::source::dns::{DnsOptions, DnsSource};
use waypost_tests::dns::server::DnsServer;

const NAME: &str = "api.waypost.test";

/// xorshift64*, enough to spread the change instants.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs bench binaries with `--test`-like arguments: do nothing then.
    if std::env::args().any(|argument| argument == "--list" || argument == "--test") {
        return;
    }
    let changes: usize = std::env::var("WAYPOST_BENCH_CHANGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60);
    let server = DnsServer::start().await.expect("start the DNS server");
    server.set_addresses(NAME, &[IpAddr::from([127, 0, 0, 1])], 1);
    let target: DnsTarget = format!("dns:///{NAME}.:80").parse().unwrap();
    let endpoints = DnsSource::new(target)
        .with_options(
            DnsOptions::default()
                .without_system_config()
                .nameserver(server.address()),
        )
        .spawn()
        .unwrap();
    endpoints.resolved().await.unwrap();

    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut latencies = Vec::with_capacity(changes);
    for round in 0..changes {
        tokio::time::sleep(Duration::from_millis(random.below(1500))).await;
        let ip = Ipv4Addr::new(127, 0, 1, (round % 250 + 1) as u8);
        let expected = SocketAddr::new(ip.into(), 80);
        let mut watcher = endpoints.watch();
        server.set_addresses(NAME, &[ip.into()], 1);
        let changed = Instant::now();
        loop {
            let set = watcher.changed().await.expect("the source runs");
            if set.contains(&expected) {
                break;
            }
        }
        latencies.push(changed.elapsed());
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "dns_visibility: {} changes, TTL 1 s, floor 1 s, jitter 10%: min {}, p50 {}, p90 {}, p99 {}, max {}, mean {}",
        latencies.len(),
        ms(latencies[0]),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
        ms(mean),
    );
    println!(
        "dns_visibility: mean / TTL = {:.2}, max / TTL = {:.2}",
        mean.as_secs_f64(),
        latencies[latencies.len() - 1].as_secs_f64()
    );
}
