//! Requests per second and latency through the clients applications use, side by side in one
//! run, against 3 servers on loopback in the same process:
//!
//! - unary gRPC health checks through waypost's tonic channel vs tonic's own
//!   `Channel::balance_list` over the same 3 servers;
//! - HTTP GETs through waypost's HTTP client vs a plain hyper-util client pinned to one server.
//!
//! Closed loop: 1, 16 and 256 concurrent callers for a fixed time each. Reports requests per
//! second and the p50/p99 latency of one request.
//!
//! ```text
//! cargo bench -p waypost-benches --bench client_throughput
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost_tests::{backend, grpc};

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let index =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }
}

/// Runs `callers` loops of `call` for `length`; every call must succeed.
async fn closed_loop<F, Fut>(callers: usize, length: Duration, call: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = JoinSet::new();
    for _ in 0..callers {
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                call().await;
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result.expect("a caller does not panic"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Run {
        requests: latencies.len(),
        elapsed,
        latencies,
    }
}

fn print(name: &str, callers: usize, run: &Run, baseline: Option<&Run>) {
    let ratio = baseline.map_or(String::new(), |b| format!("{:.2}x", run.rps() / b.rps()));
    println!(
        "{:<34} {:>7} {:>12.0} {:>10.0?} {:>10.0?} {:>8}",
        name,
        callers,
        run.rps(),
        run.percentile(0.50),
        run.percentile(0.99),
        ratio
    );
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let length = if full {
        Duration::from_secs(4)
    } else {
        Duration::from_millis(300)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{:<34} {:>7} {:>12} {:>10} {:>10} {:>8}",
            "client", "callers", "requests/s", "p50", "p99", "vs base"
        );

        let servers = grpc::start_many(3).await.expect("gRPC servers start");
        let list = servers
            .iter()
            .map(|s| s.address().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let waypost = waypost::Builder::new(&format!("static:///{list}"))
            .expect("a valid target")
            .tonic_channel()
            .expect("a channel");
        let tonic = tonic::transport::Channel::balance_list(servers.iter().map(|s| {
            tonic::transport::Endpoint::from_shared(format!("http://{}", s.address()))
                .expect("a valid endpoint")
        }));
        for callers in [1, 16, 256] {
            let base = {
                let channel = tonic.clone();
                closed_loop(callers, length, move || {
                    let mut client = HealthClient::new(channel.clone());
                    async move {
                        client
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .expect("tonic call succeeds");
                    }
                })
                .await
            };
            print("gRPC tonic balance_list", callers, &base, None);
            let run = {
                let channel = waypost.clone();
                closed_loop(callers, length, move || {
                    let mut client = HealthClient::new(channel.clone());
                    async move {
                        client
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .expect("waypost call succeeds");
                    }
                })
                .await
            };
            print("gRPC waypost channel", callers, &run, Some(&base));
        }

        let backends = backend::start_many(3).await.expect("HTTP servers start");
        let list = backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let waypost: waypost::hyper::HttpClient<Empty<Bytes>> =
            waypost::Builder::new(&format!("static:///{list}"))
                .expect("a valid target")
                .http_client()
                .expect("a client");
        let plain: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let pinned: http::Uri = format!("http://{}/", backends[0].address())
            .parse()
            .unwrap();
        for callers in [1, 16, 256] {
            let base = {
                let (client, uri) = (plain.clone(), pinned.clone());
                closed_loop(callers, length, move || {
                    let (client, uri) = (client.clone(), uri.clone());
                    async move {
                        let response = client
                            .request(http::Request::get(uri).body(Empty::new()).unwrap())
                            .await
                            .expect("hyper-util request succeeds");
                        response.into_body().collect().await.expect("a body");
                    }
                })
                .await
            };
            print("HTTP/1 hyper-util, one server", callers, &base, None);
            let run = {
                let client = waypost.clone();
                closed_loop(callers, length, move || {
                    let client = client.clone();
                    async move {
                        let response = client
                            .request(http::Request::get("/").body(Empty::new()).unwrap())
                            .await
                            .expect("waypost request succeeds");
                        response.into_body().collect().await.expect("a body");
                    }
                })
                .await
            };
            print(
                "HTTP/1 waypost client, 3 servers",
                callers,
                &run,
                Some(&base),
            );
        }
    });
}
