//! A tonic greeter, server and client, to copy into your own service.
//!
//! The server answers `SayHello` with its own name (its pod name in Kubernetes), serves the
//! standard gRPC health service for readiness probes, and drains gracefully on SIGTERM. The
//! client builds a waypost channel from `--target` (any target form: `dns:///`, `kubernetes:///`,
//! `static:///`) and prints, every few seconds, how its calls spread over the servers.
//!
//! ```text
//! cargo run -p waypost-examples --example greeter -- server --listen 127.0.0.1:50051 &
//! cargo run -p waypost-examples --example greeter -- server --listen 127.0.0.1:50052 &
//! cargo run -p waypost-examples --example greeter -- client \
//!     --target static:///127.0.0.1:50051,127.0.0.1:50052 --count 1000
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use tonic::Status;
use waypost_examples::greeter::{Cli, Command, say_hello, serve};

async fn sigterm_or_ctrl_c() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Server {
            listen,
            name,
            drain_delay_secs,
        } => {
            let name = name
                .or_else(|| std::env::var("POD_NAME").ok())
                .unwrap_or_else(|| listen.to_string());
            println!("greeter {name} listening on {listen}");
            let shutdown = async move {
                sigterm_or_ctrl_c().await;
                println!("terminating: serving {drain_delay_secs} s more, then draining");
                tokio::time::sleep(Duration::from_secs(drain_delay_secs)).await;
            };
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("error: cannot listen on {listen}: {error}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match serve(listener, name, shutdown).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Client {
            target,
            count,
            concurrency,
            interval_ms,
            report_secs,
        } => client(target, count, concurrency, interval_ms, report_secs).await,
    }
}

async fn client(
    target: String,
    count: u64,
    concurrency: usize,
    interval_ms: u64,
    report_secs: u64,
) -> std::process::ExitCode {
    let channel = match channel(&target).await {
        Ok(channel) => channel,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("calling {target} with {concurrency} callers");
    let (sender, mut answers) = tokio::sync::mpsc::unbounded_channel::<Result<String, Status>>();
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for caller in 0..concurrency {
        let (channel, sender, issued) = (channel.clone(), sender.clone(), issued.clone());
        tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if count > 0 && n >= count {
                    return;
                }
                let result = say_hello(channel.clone(), &format!("caller-{caller}")).await;
                if sender.send(result).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
        });
    }
    drop(sender);
    let mut window: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = 0u64;
    let mut total_errors = 0u64;
    let mut last_report = Instant::now();
    while let Some(result) = answers.recv().await {
        match result {
            Ok(server) => *window.entry(server).or_default() += 1,
            Err(status) => {
                errors += 1;
                total_errors += 1;
                if errors <= 3 {
                    eprintln!("call failed: {:?}: {}", status.code(), status.message());
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(report_secs) {
            report(&window, errors, channel.usable_endpoints());
            window.clear();
            errors = 0;
            last_report = Instant::now();
        }
    }
    report(&window, errors, channel.usable_endpoints());
    if total_errors == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// A waypost channel for `target`; `kubernetes:///` targets use the in-cluster configuration in
/// a pod, else the local kubeconfig.
async fn channel(target: &str) -> Result<waypost::tonic::Channel, String> {
    waypost_examples::builder(target)
        .await?
        .timeout(Duration::from_secs(5))
        .tonic_channel()
        .map_err(|error| error.to_string())
}

fn report(window: &BTreeMap<String, u64>, errors: u64, endpoints: usize) {
    let total: u64 = window.values().sum();
    println!("--- {total} calls, {errors} errors, {endpoints} endpoints");
    for (server, calls) in window {
        let share = if total == 0 {
            0.0
        } else {
            *calls as f64 * 100.0 / total as f64
        };
        println!("  {server:<40} {calls:>7} {share:>6.1}%");
    }
}
