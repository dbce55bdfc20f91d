//! CPU time of the client process per 100 000 requests, with the servers in another process:
//! what a client costs its application, without the servers' work on the same cores blurring it.
//!
//! - gRPC: unary `grpc.health.v1.Health/Check` through waypost's tonic channel over 3 servers,
//!   through a plain tonic `Channel` to one of them (no balancing: the floor), and through
//!   tonic's `Channel::balance_list` over the same 3.
//! - HTTP/1: GET through waypost's HTTP client over 3 servers and through a plain hyper-util
//!   client pinned to one of them.
//!
//! The bench starts itself again as the server process (3 gRPC and 3 HTTP servers on loopback),
//! then runs each client for the same number of requests with 16 concurrent callers on a
//! two-worker runtime, and reads the user + system CPU time of its own process
//! (`/proc/self/stat`) before and after. Each client runs `ROUNDS` times in turn; the table
//! shows the median round.
//!
//! ```text
//! cargo bench -p waypost-benches --bench client_cpu
//! cargo bench -p waypost-benches --bench client_cpu -- --requests 20000   # shorter
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost_tests::{backend, grpc};

#[path = "support/process.rs"]
mod process;
use process::{cpu_time, ticks_per_second};

const SERVER_VAR: &str = "WAYPOST_CLIENT_CPU_SERVER";
const CALLERS: usize = 16;
const ROUNDS: usize = 3;

/// The server process: prints its addresses, serves until its standard input closes.
fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let grpc = grpc::start_many(3).await.expect("gRPC servers start");
        let http = backend::start_many(3).await.expect("HTTP servers start");
        let line = |addresses: Vec<SocketAddr>| {
            addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        println!("{}", line(grpc.iter().map(|s| s.address()).collect()));
        println!("{}", line(http.iter().map(|s| s.address()).collect()));
        std::io::stdout().flush().expect("stdout");
        // Serve until the client process closes the pipe (or dies).
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await
        .expect("stdin reader");
        drop((grpc, http));
    });
}

struct Round {
    cpu: Duration,
    wall: Duration,
}

/// `requests` calls of `call` spread over `CALLERS` tasks; every call must succeed.
async fn round<F, Fut>(requests: usize, ticks: f64, call: F) -> Round
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cpu = cpu_time(ticks);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for caller in 0..CALLERS {
        let call = call.clone();
        let share = requests / CALLERS + usize::from(caller < requests % CALLERS);
        tasks.spawn(async move {
            for _ in 0..share {
                call().await;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("a caller does not panic");
    }
    Round {
        cpu: cpu_time(ticks).saturating_sub(cpu),
        wall: started.elapsed(),
    }
}

fn health<C>(
    channel: C,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Clone + Send + 'static
where
    C: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    move || {
        let mut client = HealthClient::new(channel.clone());
        Box::pin(async move {
            client
                .check(HealthCheckRequest::default())
                .await
                .expect("the call succeeds");
        })
    }
}

fn main() {
    if std::env::var_os(SERVER_VAR).is_some() {
        serve();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let requests = args
        .iter()
        .position(|arg| arg == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        // `cargo test --benches` runs benches without `--bench`: a short smoke run.
        .unwrap_or(if args.iter().any(|arg| arg == "--bench") {
            100_000
        } else {
            2_000
        });

    let mut server = Command::new(std::env::current_exe().expect("own path"))
        .env(SERVER_VAR, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process starts");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let mut addresses = || -> Vec<SocketAddr> {
        lines
            .next()
            .expect("the server prints its addresses")
            .expect("readable")
            .split(',')
            .map(|a| a.parse().expect("an address"))
            .collect()
    };
    let grpc_servers = addresses();
    let http_servers = addresses();

    let ticks = ticks_per_second();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let list = |servers: &[SocketAddr]| {
        servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };

    let results = runtime.block_on(async {
        let waypost_channel = waypost::Builder::new(&format!("static:///{}", list(&grpc_servers)))
            .expect("a valid target")
            .tonic_channel()
            .expect("a channel");
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", grpc_servers[0]))
            .expect("a valid endpoint")
            .connect()
            .await
            .expect("a connection");
        let balance_list = tonic::transport::Channel::balance_list(grpc_servers.iter().map(|s| {
            tonic::transport::Endpoint::from_shared(format!("http://{s}"))
                .expect("a valid endpoint")
        }));
        let waypost_http: waypost::hyper::HttpClient<Empty<Bytes>> =
            waypost::Builder::new(&format!("static:///{}", list(&http_servers)))
                .expect("a valid target")
                .http_client()
                .expect("a client");
        let hyper_plain: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let pinned: http::Uri = format!("http://{}/", http_servers[0])
            .parse()
            .expect("a URI");

        let waypost_http_call = move || {
            let client = waypost_http.clone();
            async move {
                let response = client
                    .request(
                        http::Request::get("/")
                            .body(Empty::new())
                            .expect("a request"),
                    )
                    .await
                    .expect("the request succeeds");
                response.into_body().collect().await.expect("a body");
            }
        };
        let hyper_call = move || {
            let (client, uri) = (hyper_plain.clone(), pinned.clone());
            async move {
                let response = client
                    .request(
                        http::Request::get(uri)
                            .body(Empty::new())
                            .expect("a request"),
                    )
                    .await
                    .expect("the request succeeds");
                response.into_body().collect().await.expect("a body");
            }
        };

        let names = [
            "gRPC tonic Channel, one server",
            "gRPC waypost channel, 3 servers",
            "gRPC tonic balance_list, 3 servers",
            "HTTP/1 hyper-util, one server",
            "HTTP/1 waypost client, 3 servers",
        ];
        let mut rounds: Vec<Vec<Round>> = (0..names.len()).map(|_| Vec::new()).collect();
        // Warm every client (connections, pools) before measuring.
        let warm = requests.min(2_000);
        round(warm, ticks, health(plain.clone())).await;
        round(warm, ticks, health(waypost_channel.clone())).await;
        round(warm, ticks, health(balance_list.clone())).await;
        round(warm, ticks, hyper_call.clone()).await;
        round(warm, ticks, waypost_http_call.clone()).await;
        for _ in 0..ROUNDS {
            rounds[0].push(round(requests, ticks, health(plain.clone())).await);
            rounds[1].push(round(requests, ticks, health(waypost_channel.clone())).await);
            rounds[2].push(round(requests, ticks, health(balance_list.clone())).await);
            rounds[3].push(round(requests, ticks, hyper_call.clone()).await);
            rounds[4].push(round(requests, ticks, waypost_http_call.clone()).await);
        }
        names.into_iter().zip(rounds).collect::<Vec<_>>()
    });

    drop(server.stdin.take());
    let _ = server.wait();

    println!(
        "client CPU per {requests} requests, {CALLERS} callers, median of {ROUNDS} rounds (servers in another process)"
    );
    println!(
        "{:<36} {:>10} {:>12} {:>14}",
        "client", "CPU s", "requests/s", "CPU vs base"
    );
    let mut base = None;
    for (index, (name, mut rounds)) in results.into_iter().enumerate() {
        rounds.sort_by_key(|round| round.cpu);
        let median = &rounds[rounds.len() / 2];
        let cpu = median.cpu.as_secs_f64();
        // Each transport is compared with its own unbalanced client: rows 0 and 3.
        if index == 0 || index == 3 {
            base = Some(cpu);
        }
        let ratio = base.map_or(String::new(), |b| format!("{:.3}x", cpu / b));
        println!(
            "{:<36} {:>10.3} {:>12.0} {:>14}",
            name,
            cpu,
            requests as f64 / median.wall.as_secs_f64(),
            ratio
        );
    }
}
