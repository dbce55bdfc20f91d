//! An admin endpoint an application mounts on its own server: what each of its waypost clients
//! knows now, as JSON for people and tools, and as Prometheus text for scrapers.
//!
//! [`Admin`] is a tower service over `http::Request<B>`. Register the clients to show with
//! [`Admin::with`] (a tonic [`Channel`](crate::tonic::Channel), an
//! [`HttpClient`](crate::hyper::HttpClient), a [`Balance`]), then route a path of your server
//! to it:
//!
//! - a path ending in `/metrics` answers Prometheus text (gauges per balancer and endpoint,
//!   labelled with [`target_label`] and the endpoint address);
//! - any other path answers JSON: `{"balancers": [...]}`, one object per client with its mode,
//!   discovery health and endpoints (the fields of [`Snapshot`] and [`EndpointSnapshot`];
//!   durations in milliseconds).
//!
//! Only `GET` and `HEAD` are served (others get 405). `waypost status URL` (the `cli` feature)
//! reads the JSON and prints it as a table.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = waypost::Builder::new("dns:///greeter.prod.svc.cluster.local:50051")?
//!     .tonic_channel()?;
//! let admin = waypost::admin::Admin::new().with(channel.clone());
//! // Serve `admin` on a port of its own, or under a path of your server (with axum:
//! // `Router::new().nest_service("/waypost", admin)`).
//! # let _ = admin; Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use waypost_balance::metrics::target_label;
use waypost_balance::{Balance, EndpointSnapshot, Snapshot, TableMode};
use waypost_discovery::Status;

/// A boxed snapshot future.
pub type SnapshotFuture = Pin<Box<dyn Future<Output = Snapshot> + Send>>;

/// Something whose balancer [`Admin`] can show.
pub trait Snapshots: Send + Sync + 'static {
    /// What the balancer knows now.
    fn snapshot(&self) -> SnapshotFuture;
}

#[cfg(feature = "tonic")]
impl Snapshots for crate::tonic::Channel {
    fn snapshot(&self) -> SnapshotFuture {
        Box::pin(crate::tonic::Channel::snapshot(self))
    }
}

#[cfg(feature = "hyper")]
impl<B> Snapshots for crate::hyper::HttpClient<B>
where
    B: hyper::body::Body + Send + Sync + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    fn snapshot(&self) -> SnapshotFuture {
        Box::pin(crate::hyper::HttpClient::snapshot(self))
    }
}

impl<S, K, C> Snapshots for Balance<S, K, C>
where
    S: Send + Sync + 'static,
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    fn snapshot(&self) -> SnapshotFuture {
        Box::pin(Balance::snapshot(self))
    }
}

/// The admin service: see the [module docs](self).
#[derive(Clone, Default)]
pub struct Admin {
    clients: Arc<Vec<Arc<dyn Snapshots>>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl Admin {
    /// An admin service showing no client yet.
    pub fn new() -> Self {
        Admin::default()
    }

    /// Shows `client` too (pass a clone; clients are cheap to clone).
    pub fn with(mut self, client: impl Snapshots) -> Self {
        Arc::make_mut(&mut self.clients).push(Arc::new(client));
        self
    }

    /// A snapshot of every client, in the order they were added.
    pub async fn snapshots(&self) -> Vec<Snapshot> {
        let mut snapshots = Vec::with_capacity(self.clients.len());
        for client in self.clients.iter() {
            snapshots.push(client.snapshot().await);
        }
        snapshots
    }

    async fn answer(self, method: http::Method, path: String) -> http::Response<Full<Bytes>> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return respond(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only GET and HEAD\n".to_owned(),
            );
        }
        let snapshots = self.snapshots().await;
        if path.trim_end_matches('/').ends_with("/metrics") {
            respond(
                http::StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus(&snapshots),
            )
        } else {
            respond(
                http::StatusCode::OK,
                "application/json",
                json_of(&snapshots).to_string(),
            )
        }
    }
}

fn respond(
    status: http::StatusCode,
    content_type: &'static str,
    body: String,
) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

impl<B> tower::Service<http::Request<B>> for Admin {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let admin = self.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        Box::pin(async move { Ok(admin.answer(method, path).await) })
    }
}

fn millis(duration: Option<Duration>) -> Value {
    duration.map_or(Value::Null, |duration| json!(duration.as_secs_f64() * 1e3))
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Initial => "initial",
        Status::Current => "current",
        Status::Failing => "failing",
    }
}

fn connectivity_name(connectivity: waypost_balance::Connectivity) -> &'static str {
    match connectivity {
        waypost_balance::Connectivity::Unknown => "unknown",
        waypost_balance::Connectivity::Connected => "connected",
        waypost_balance::Connectivity::Disconnected => "disconnected",
    }
}

fn endpoint_json(endpoint: &EndpointSnapshot) -> Value {
    json!({
        "address": endpoint.address.to_string(),
        "zone": endpoint.zone,
        "weight": endpoint.weight,
        "readiness": endpoint.readiness.to_string(),
        "usable": endpoint.usable,
        "connectivity": connectivity_name(endpoint.connectivity),
        "serving": endpoint.serving,
        "in_flight": endpoint.in_flight,
        "latency_estimate_ms": millis(endpoint.latency_estimate),
        "consecutive_failures": endpoint.consecutive_failures,
        "ejections": endpoint.ejections,
        "ejected_for_ms": millis(endpoint.ejected_for),
        "unreachable_for_ms": millis(endpoint.unreachable_for),
        "passed_over_for_ms": millis(endpoint.passed_over_for),
        "slow_start_percent": endpoint.slow_start_percent,
    })
}

/// The JSON document the service answers with: `{"balancers": [...]}`.
pub fn json_of(snapshots: &[Snapshot]) -> Value {
    let balancers: Vec<Value> = snapshots
        .iter()
        .map(|snapshot| {
            let (remote_share, empty_reason) = match snapshot.mode {
                TableMode::ZoneSpillOver { remote_share } => (json!(remote_share), Value::Null),
                TableMode::Empty(reason) => (Value::Null, json!(format!("{reason:?}"))),
                _ => (Value::Null, Value::Null),
            };
            let discovery = &snapshot.discovery;
            json!({
                "target": snapshot.target,
                "policy": snapshot.policy,
                "mode": snapshot.mode.name(),
                "remote_share": remote_share,
                "empty_reason": empty_reason,
                "usable_endpoints": snapshot.usable_endpoints,
                "set_revision": snapshot.set_revision,
                "requests_waiting": snapshot.requests_waiting,
                "discovery": {
                    "status": status_name(discovery.status()),
                    "consecutive_failures": discovery.consecutive_failures(),
                    "last_error": discovery.last_error().map(ToString::to_string),
                },
                "endpoints": snapshot.endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "balancers": balancers })
}

/// A Prometheus label value, escaped as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text the service answers with under `/metrics`.
pub fn prometheus(snapshots: &[Snapshot]) -> String {
    type Per<T> = fn(&T) -> f64;
    let balancer_gauges: [(&str, &str, Per<Snapshot>); 4] = [
        (
            "waypost_balancer_usable_endpoints",
            "Endpoints the balancer may pick now.",
            |s| s.usable_endpoints as f64,
        ),
        (
            "waypost_balancer_panic",
            "1 while the balancer is in panic mode.",
            |s| f64::from(u8::from(s.mode == TableMode::Panic)),
        ),
        (
            "waypost_balancer_requests_waiting",
            "Requests waiting for a usable endpoint.",
            |s| s.requests_waiting as f64,
        ),
        (
            "waypost_discovery_failing",
            "1 while the target's discovery source is failing.",
            |s| f64::from(u8::from(s.discovery.is_failing())),
        ),
    ];
    let endpoint_gauges: [(&str, &str, Per<EndpointSnapshot>); 7] = [
        (
            "waypost_endpoint_usable",
            "1 when the balancer may pick the endpoint.",
            |e| f64::from(u8::from(e.usable)),
        ),
        (
            "waypost_endpoint_serving",
            "0 while the endpoint's health check reports it not serving.",
            |e| f64::from(u8::from(e.serving)),
        ),
        (
            "waypost_endpoint_in_flight",
            "Requests in flight on the endpoint.",
            |e| f64::from(e.in_flight),
        ),
        (
            "waypost_endpoint_latency_estimate_seconds",
            "The endpoint's Peak EWMA latency estimate (NaN without Peak EWMA).",
            |e| e.latency_estimate.map_or(f64::NAN, |d| d.as_secs_f64()),
        ),
        (
            "waypost_endpoint_consecutive_failures",
            "Failures in a row since the endpoint's last success.",
            |e| f64::from(e.consecutive_failures),
        ),
        (
            "waypost_endpoint_ejected",
            "1 while the endpoint is ejected by outlier detection.",
            |e| f64::from(u8::from(e.ejected_for.is_some())),
        ),
        (
            "waypost_endpoint_passed_over",
            "1 while the endpoint is passed over after it said it was overloaded.",
            |e| f64::from(u8::from(e.passed_over_for.is_some())),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in balancer_gauges {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for snapshot in snapshots {
            let target = escape(&target_label(&snapshot.target));
            let _ = writeln!(text, "{name}{{target=\"{target}\"}} {}", value(snapshot));
        }
    }
    for (name, help, value) in endpoint_gauges {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for snapshot in snapshots {
            let target = escape(&target_label(&snapshot.target));
            for endpoint in &snapshot.endpoints {
                let _ = writeln!(
                    text,
                    "{name}{{target=\"{target}\",endpoint=\"{}\"}} {}",
                    endpoint.address,
                    value(endpoint)
                );
            }
        }
    }
    text
}
