//! gRPC backends on loopback: a real tonic service (the standard health service) that tests
//! slow down, turn `UNAVAILABLE`, drain and kill.
//!
//! Every response carries the backend's address in the `x-backend` metadata entry, so a client can
//! tell who answered. A failing backend answers every call at once with a trailers-only
//! `UNAVAILABLE` status, as a server refusing work does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body;
use tower::ServiceExt;

#[derive(Debug, Default)]
struct Control {
    latency_us: AtomicU64,
    unavailable: AtomicBool,
    requests: AtomicU64,
}

/// A running gRPC backend serving `grpc.health.v1.Health` on loopback.
#[derive(Debug)]
pub struct GrpcBackend {
    address: SocketAddr,
    control: Arc<Control>,
    stop_accepting: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl GrpcBackend {
    /// Starts a backend on a fresh loopback port.
    pub async fn start() -> std::io::Result<GrpcBackend> {
        GrpcBackend::start_on("127.0.0.1:0".parse().expect("a loopback address")).await
    }

    /// Starts a backend on `address` (a loopback address; port 0 picks a free one).
    pub async fn start_on(address: SocketAddr) -> std::io::Result<GrpcBackend> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop_accepting, stopped) = watch::channel(false);
        let service_control = Arc::clone(&control);
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let control = Arc::clone(&service_control);
            let health = health.clone();
            async move {
                control.requests.fetch_add(1, Ordering::Relaxed);
                let mut response = if control.unavailable.load(Ordering::Relaxed) {
                    http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "14")
                        .header("grpc-message", "backend refusing work")
                        .body(Body::empty())
                        .expect("a valid response")
                } else {
                    let latency = control.latency_us.load(Ordering::Relaxed);
                    if latency > 0 {
                        tokio::time::sleep(Duration::from_micros(latency)).await;
                    }
                    match health.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                };
                response.headers_mut().insert(
                    "x-backend",
                    http::HeaderValue::from_str(&address.to_string())
                        .expect("an address is a valid header value"),
                );
                Ok::<_, Infallible>(response)
            }
        });
        let tasks = crate::backend::serve(listener, service, stopped, true);
        Ok(GrpcBackend {
            address,
            control,
            stop_accepting,
            tasks,
        })
    }

    /// The backend's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Waits this long before answering each call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.control
            .latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Answers every call with `UNAVAILABLE` at once while `unavailable` is set.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.control
            .unavailable
            .store(unavailable, Ordering::Relaxed);
    }

    /// Calls received so far.
    pub fn requests(&self) -> u64 {
        self.control.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting, finishes the calls in flight, sends GOAWAY on every connection and
    /// returns once all are closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop_accepting.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Drops the listener and every connection at once, as a crashed process would.
    pub fn kill(mut self) {
        self.tasks.abort_all();
    }
}

/// The backend address a response reports, from its `x-backend` metadata.
pub fn answered_by<T>(response: &tonic::Response<T>) -> Option<SocketAddr> {
    response
        .metadata()
        .get("x-backend")
        .and_then(|value| value.to_str().ok())
        .and_then(|address| address.parse().ok())
}

/// Starts `n` gRPC backends.
pub async fn start_many(n: usize) -> std::io::Result<Vec<GrpcBackend>> {
    let mut backends = Vec::with_capacity(n);
    for _ in 0..n {
        backends.push(GrpcBackend::start().await?);
    }
    Ok(backends)
}
