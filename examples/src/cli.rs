//! The `waypost` debug command: what does a target resolve to, and how does it change?
//!
//! ```text
//! waypost resolve dns:///api.prod.svc.cluster.local:8080
//! waypost watch kubernetes:///api.prod:grpc
//! waypost resolve dns:///api.test:80 --nameserver 127.0.0.1:5353
//! ```
//!
//! `resolve` waits for the source's first answer and prints the endpoint set as a table
//! (address, zone, node, state, weight); `watch` prints every new revision with what changed,
//! until interrupted. Discovery uses the same sources as the clients: DNS through the system
//! resolver (or `--nameserver`), Kubernetes through the in-cluster config or the kubeconfig.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use waypost::discovery::{EndpointSet, Endpoints};

/// Command-line arguments of `waypost`.
#[derive(Debug, Parser)]
#[command(name = "waypost", about = "Resolve and watch waypost targets")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Ask this DNS server (IP:port) instead of the system's.
    #[arg(long, global = true)]
    nameserver: Option<SocketAddr>,
    /// Give up when the source has not answered within this many seconds.
    #[arg(long, global = true, default_value = "10")]
    timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the target's current endpoints.
    Resolve {
        /// Any target: dns:///host:port, kubernetes:///svc.ns:port, static:///ip:port,...
        target: String,
    },
    /// Print every change of the target's endpoints, with its revision.
    Watch {
        /// Any target.
        target: String,
        /// Stop after this many revisions (0: run until interrupted).
        #[arg(long, default_value = "0")]
        revisions: u64,
    },
}

/// Runs the command described by `arguments` (without the program name), writing to `out`.
pub async fn run<I, S>(arguments: I, out: &mut (dyn Write + Send)) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(
        std::iter::once(std::ffi::OsString::from("waypost"))
            .chain(arguments.into_iter().map(Into::into)),
    )
    .map_err(|error| error.to_string())?;
    let timeout = Duration::from_secs(cli.timeout_secs);
    match &cli.command {
        Command::Resolve { target } => {
            let endpoints = endpoints(target, cli.nameserver).await?;
            let set = first_answer(&endpoints, timeout).await?;
            write!(out, "{}", table(&set)).map_err(|e| e.to_string())?;
            Ok(())
        }
        Command::Watch { target, revisions } => {
            let endpoints = endpoints(target, cli.nameserver).await?;
            // Watch before the first answer: a set published right after it is reported, not
            // taken as already seen.
            let mut watcher = endpoints.watch();
            let mut previous = first_answer(&endpoints, timeout).await?;
            writeln!(out, "revision {}", previous.revision()).map_err(|e| e.to_string())?;
            write!(out, "{}", table(&previous)).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            let mut seen = 1;
            while *revisions == 0 || seen < *revisions {
                let Ok(set) = watcher.changed().await else {
                    writeln!(out, "the source stopped").map_err(|e| e.to_string())?;
                    return Ok(());
                };
                if set.revision() <= previous.revision() {
                    continue;
                }
                let diff = previous.diff(&set);
                writeln!(
                    out,
                    "revision {}: +{} -{} ~{}",
                    set.revision(),
                    diff.added.len(),
                    diff.removed.len(),
                    diff.changed.len()
                )
                .map_err(|e| e.to_string())?;
                write!(out, "{}", table(&set)).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
                previous = set;
                seen += 1;
            }
            Ok(())
        }
    }
}

async fn endpoints(target: &str, nameserver: Option<SocketAddr>) -> Result<Endpoints, String> {
    let mut builder = crate::builder(target).await?;
    if let Some(nameserver) = nameserver {
        builder = builder.dns_options(
            waypost::discovery::source::dns::DnsOptions::default()
                .without_system_config()
                .nameserver(nameserver),
        );
    }
    builder.endpoints().map_err(|error| error.to_string())
}

async fn first_answer(
    endpoints: &Endpoints,
    timeout: Duration,
) -> Result<std::sync::Arc<EndpointSet>, String> {
    match tokio::time::timeout(timeout, endpoints.resolved()).await {
        Ok(Ok(set)) => Ok(set),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no answer for `{}` within {timeout:?}",
            endpoints.target()
        )),
    }
}

/// The endpoint set as a table: address, zone, node, state, weight.
pub fn table(set: &EndpointSet) -> String {
    let mut text = format!(
        "{:<42} {:<14} {:<14} {:<12} {:>6}\n",
        "ADDRESS", "ZONE", "NODE", "STATE", "WEIGHT"
    );
    for endpoint in set.iter() {
        text.push_str(&format!(
            "{:<42} {:<14} {:<14} {:<12} {:>6}\n",
            endpoint.address().to_string(),
            endpoint.zone().unwrap_or("-"),
            endpoint.node().unwrap_or("-"),
            endpoint.readiness().to_string(),
            endpoint.weight()
        ));
    }
    if set.is_empty() {
        text.push_str("(no endpoints)\n");
    }
    text
}
