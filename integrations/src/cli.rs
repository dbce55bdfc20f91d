//! The `waypost` command (feature `cli`): what a target resolves to, how it changes, and what a
//! running application's balancers know.
//!
//! ```text
//! cargo install --path integrations --features cli    # from a clone of the repository
//! waypost resolve dns:///api.prod.svc.cluster.local:8080
//! waypost watch dns:///api.prod.svc.cluster.local:8080
//! waypost resolve dns:///api.test:80 --nameserver 127.0.0.1:5353
//! waypost status http://127.0.0.1:9090/waypost
//! ```
//!
//! - `resolve TARGET` waits for the source's first answer and prints the endpoint set as a
//!   table (address, zone, node, state, weight).
//! - `watch TARGET` prints every new revision with what changed, until interrupted (or
//!   `--revisions N`).
//! - `status URL` reads an application's [`Admin`](crate::admin::Admin) endpoint and prints
//!   each balancer's mode and endpoints as a table: usable or not, connectivity, requests in
//!   flight, latency estimate, failures, and how long an endpoint stays ejected, unreachable or
//!   passed over.
//!
//! Discovery uses the clients' own sources: DNS through the system resolver (or
//! `--nameserver`), and, when built with the `kubernetes` feature too, Kubernetes through the
//! in-cluster configuration or the kubeconfig. As for any application, the Kubernetes source
//! needs a k8s-openapi API version: `K8S_OPENAPI_ENABLED_VERSION=1.33 cargo install --path
//! integrations --features cli,kubernetes`.
//!
//! [`run`] is the command itself, for programs that embed it.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use waypost_discovery::{EndpointSet, Endpoints, Target};

/// Command-line arguments of `waypost`.
#[derive(Debug, Parser)]
#[command(
    name = "waypost",
    version,
    about = "Resolve and watch waypost targets, and read an application's balancer status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Ask this DNS server (IP:port) instead of the system's.
    #[arg(long, global = true)]
    nameserver: Option<SocketAddr>,
    /// Give up when there is no answer within this many seconds.
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
    /// Print the balancers of a running application, read from its admin endpoint.
    Status {
        /// The admin endpoint's URL, such as http://127.0.0.1:9090/waypost.
        url: String,
    },
}

/// Runs the command described by `arguments` (without the program name), writing to `out`.
/// `--help` and `--version` write their text to `out` and succeed; a usage error is the
/// `Err` text.
pub async fn run<I, S>(arguments: I, out: &mut (dyn Write + Send)) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(
        std::iter::once(std::ffi::OsString::from("waypost"))
            .chain(arguments.into_iter().map(Into::into)),
    ) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            return write!(out, "{error}").map_err(|e| e.to_string());
        }
        Err(error) => return Err(error.to_string()),
    };
    let timeout = Duration::from_secs(cli.timeout_secs);
    match &cli.command {
        Command::Resolve { target } => {
            let endpoints = endpoints(target, cli.nameserver).await?;
            let set = first_answer(&endpoints, timeout).await?;
            write!(out, "{}", table(&set)).map_err(|e| e.to_string())
        }
        Command::Watch { target, revisions } => {
            let endpoints = endpoints(target, cli.nameserver).await?;
            watch(&endpoints, *revisions, timeout, out).await
        }
        Command::Status { url } => {
            let document = fetch_status(url, cli.nameserver, timeout).await?;
            write!(out, "{}", status_table(&document)?).map_err(|e| e.to_string())
        }
    }
}

async fn watch(
    endpoints: &Endpoints,
    revisions: u64,
    timeout: Duration,
    out: &mut (dyn Write + Send),
) -> Result<(), String> {
    // Watch before the first answer: a set published right after it is reported, not taken
    // as already seen.
    let mut watcher = endpoints.watch();
    let mut previous = first_answer(endpoints, timeout).await?;
    writeln!(out, "revision {}", previous.revision()).map_err(|e| e.to_string())?;
    write!(out, "{}", table(&previous)).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let mut seen = 1;
    while revisions == 0 || seen < revisions {
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

/// The error text of a `waypost` error with its cause.
fn message(error: &crate::Error) -> String {
    let cause = std::error::Error::source(error)
        .map(|source| format!(": {source}"))
        .unwrap_or_default();
    format!("{error}{cause}")
}

/// A [`Builder`](crate::Builder) for `target` as the command makes it: `nameserver` answers
/// DNS targets when given, and a `kubernetes:///` target gets a client from the in-cluster
/// configuration in a pod, else from the local kubeconfig (with the `kubernetes` feature). The
/// error is the text the command prints, naming the target.
pub async fn builder(
    target: &str,
    nameserver: Option<SocketAddr>,
) -> Result<crate::Builder, String> {
    let mut builder = crate::Builder::new(target).map_err(|error| message(&error))?;
    if let Some(nameserver) = nameserver {
        builder = builder.dns_options(
            waypost_discovery::source::dns::DnsOptions::default()
                .without_system_config()
                .nameserver(nameserver),
        );
    }
    if !matches!(builder.target(), Target::Kubernetes(_)) {
        return Ok(builder);
    }
    kubernetes(builder, target).await
}

#[cfg(feature = "kubernetes")]
async fn kubernetes(builder: crate::Builder, target: &str) -> Result<crate::Builder, String> {
    // The client is made before any source exists, so its error cannot know the target: name
    // the whole target here, as every later discovery message does.
    let client = waypost_discovery::source::kubernetes::default_client()
        .await
        .map_err(|error| {
            let cause = std::error::Error::source(&error)
                .map(|source| format!(" ({source})"))
                .unwrap_or_default();
            format!(
                "discovery of `{target}`: {}: {}{cause}",
                error.kind(),
                error.detail()
            )
        })?;
    Ok(builder.kube_client(client))
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes(_: crate::Builder, target: &str) -> Result<crate::Builder, String> {
    Err(format!(
        "`{target}` needs the Kubernetes source: build waypost with `--features cli,kubernetes` \
         (and an API version, such as K8S_OPENAPI_ENABLED_VERSION=1.33)"
    ))
}

async fn endpoints(target: &str, nameserver: Option<SocketAddr>) -> Result<Endpoints, String> {
    builder(target, nameserver)
        .await?
        .endpoints()
        .map_err(|error| message(&error))
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

/// GETs the admin endpoint at `url` (through waypost's own HTTP client) and parses its JSON.
async fn fetch_status(
    url: &str,
    nameserver: Option<SocketAddr>,
    timeout: Duration,
) -> Result<Value, String> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = url
        .parse()
        .map_err(|error| format!("`{url}` is not a URL: {error}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{url}`: only http:// admin URLs are read"));
    }
    let host = uri.host().ok_or_else(|| format!("`{url}` names no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let target = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => format!("static:///{}", SocketAddr::new(ip, port)),
        Err(_) => format!("dns:///{host}:{port}"),
    };
    let client = builder(&target, nameserver)
        .await?
        .timeout(timeout)
        .wait_for_endpoints(timeout)
        .http_client::<Empty<bytes::Bytes>>()
        .map_err(|error| message(&error))?;
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("`{url}`: {}", message(&error)))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("`{url}`: the answer broke off: {error}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "`{url}` answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|error| format!("`{url}` did not answer waypost admin JSON: {error}"))
}

/// A number of milliseconds as a short duration (`850ms`, `12.3s`), `-` for none.
fn duration_text(value: &Value) -> String {
    match value.as_f64() {
        None => "-".to_owned(),
        Some(ms) if ms < 1.0 => format!("{:.0}us", ms * 1e3),
        Some(ms) if ms < 1000.0 => format!("{ms:.1}ms"),
        Some(ms) => format!("{:.1}s", ms / 1e3),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        other => other.to_string(),
    }
}

/// The admin JSON as tables: one header line per balancer, one row per endpoint.
pub fn status_table(document: &Value) -> Result<String, String> {
    let balancers = document
        .get("balancers")
        .and_then(Value::as_array)
        .ok_or("the answer has no `balancers` list: not a waypost admin endpoint")?;
    let mut out = String::new();
    if balancers.is_empty() {
        out.push_str("(no balancers registered with the admin service)\n");
    }
    for (index, balancer) in balancers.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let endpoints = balancer
            .get("endpoints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut mode = text(&balancer["mode"]);
        if let Some(share) = balancer["remote_share"].as_f64() {
            mode.push_str(&format!(" ({:.0}% to other zones)", share * 100.0));
        }
        if let Some(reason) = balancer["empty_reason"].as_str() {
            mode.push_str(&format!(" ({reason})"));
        }
        let discovery = &balancer["discovery"];
        let mut discovery_text = text(&discovery["status"]);
        if let Some(error) = discovery["last_error"].as_str() {
            discovery_text.push_str(&format!(": {error}"));
        }
        out.push_str(&format!(
            "{}  policy {}  mode {}  usable {}/{}  revision {}  discovery {}  waiting {}\n",
            text(&balancer["target"]),
            text(&balancer["policy"]),
            mode,
            text(&balancer["usable_endpoints"]),
            endpoints.len(),
            text(&balancer["set_revision"]),
            discovery_text,
            text(&balancer["requests_waiting"]),
        ));
        out.push_str(&format!(
            "{:<42} {:<10} {:<6} {:<13} {:>9} {:>9} {:>5} {:>8} {:>11} {:>11}\n",
            "ADDRESS",
            "ZONE",
            "USABLE",
            "CONNECTIVITY",
            "IN_FLIGHT",
            "LATENCY",
            "FAILS",
            "EJECTED",
            "UNREACHABLE",
            "PASSED_OVER"
        ));
        for endpoint in endpoints {
            out.push_str(&format!(
                "{:<42} {:<10} {:<6} {:<13} {:>9} {:>9} {:>5} {:>8} {:>11} {:>11}\n",
                text(&endpoint["address"]),
                text(&endpoint["zone"]),
                text(&endpoint["usable"]),
                text(&endpoint["connectivity"]),
                text(&endpoint["in_flight"]),
                duration_text(&endpoint["latency_estimate_ms"]),
                text(&endpoint["consecutive_failures"]),
                duration_text(&endpoint["ejected_for_ms"]),
                duration_text(&endpoint["unreachable_for_ms"]),
                duration_text(&endpoint["passed_over_for_ms"]),
            ));
        }
        if endpoints.is_empty() {
            out.push_str("(no endpoints)\n");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_tables_read_the_admin_json() {
        let document = serde_json::json!({"balancers": [{
            "target": "dns:///api:80", "policy": "p2c_peak_ewma", "mode": "zone_spill_over",
            "remote_share": 0.25, "empty_reason": null, "usable_endpoints": 1,
            "set_revision": 3, "requests_waiting": 0,
            "discovery": {"status": "failing", "consecutive_failures": 2,
                          "last_error": "timed out"},
            "endpoints": [
                {"address": "127.0.0.1:80", "zone": "a", "usable": true,
                 "connectivity": "connected", "in_flight": 2, "latency_estimate_ms": 1.5,
                 "consecutive_failures": 0, "ejected_for_ms": null,
                 "unreachable_for_ms": null, "passed_over_for_ms": 2500.0},
                {"address": "127.0.0.2:80", "zone": null, "usable": false,
                 "connectivity": "disconnected", "in_flight": 0, "latency_estimate_ms": 0.25,
                 "consecutive_failures": 5, "ejected_for_ms": 29000.0,
                 "unreachable_for_ms": 800.0, "passed_over_for_ms": null}
            ]
        }]});
        let table = status_table(&document).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "dns:///api:80  policy p2c_peak_ewma  mode zone_spill_over (25% to other zones)  \
             usable 1/2  revision 3  discovery failing: timed out  waiting 0"
        );
        assert!(lines[2].starts_with("127.0.0.1:80"), "{table}");
        assert!(
            lines[2].contains("connected") && lines[2].ends_with("2.5s"),
            "{table}"
        );
        assert!(
            lines[3].contains("29.0s") && lines[3].contains("800.0ms"),
            "{table}"
        );
        assert!(lines[3].contains("250us"), "{table}");
        assert!(status_table(&serde_json::json!({"other": 1})).is_err());
    }
}
