//! gRPC backends on loopback: a real tonic service (the standard health service) that tests
//! slow down, turn `UNAVAILABLE`, drain and kill.
//!
//! Every response carries the backend's address in the `x-backend` metadata entry, so a client can
//! tell who answered. A failing backend answers every call at once with a trailers-only
//! `UNAVAILABLE` status, as a server refusing work does; an overloaded one answers with the
//! status and the `grpc-retry-pushback-ms` a test chose, encoded by tonic itself
//! (`Status::into_http`). The backend counts its calls in flight and the most it ever had. Its
//! health service (tonic-health's, with `Check` and `Watch`) reports what a test sets, or
//! answers `UNIMPLEMENTED` as a server without one.

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
    refusal: std::sync::Mutex<Option<(tonic::Code, Option<String>)>>,
    /// Answers the health service's calls with `UNIMPLEMENTED`, as a server without it does.
    no_health_service: AtomicBool,
    /// Calls of the health service's `Watch` received so far.
    watches: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
}

/// A running gRPC backend serving `grpc.health.v1.Health` on loopback.
#[derive(Debug)]
pub struct GrpcBackend {
    address: SocketAddr,
    control: Arc<Control>,
    health: tonic_health::server::HealthReporter,
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
        GrpcBackend::start_with(address, None).await
    }

    /// Starts a backend that serves TLS with `identity` (see [`TlsIdentity`]).
    pub async fn start_tls(
        address: SocketAddr,
        identity: &TlsIdentity,
    ) -> std::io::Result<GrpcBackend> {
        GrpcBackend::start_with(address, Some(identity.acceptor())).await
    }

    async fn start_with(
        address: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<GrpcBackend> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let (reporter, health) = tonic_health::server::health_reporter();
        let (stop_accepting, stopped) = watch::channel(false);
        let service_control = Arc::clone(&control);
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let control = Arc::clone(&service_control);
            let health = health.clone();
            async move {
                control.requests.fetch_add(1, Ordering::Relaxed);
                let now = control.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                control.most_in_flight.fetch_max(now, Ordering::SeqCst);
                let refusal = control
                    .refusal
                    .lock()
                    .expect("the refusal lock is never poisoned")
                    .clone();
                let health_call = request.uri().path().starts_with("/grpc.health.v1.Health/");
                if request.uri().path() == "/grpc.health.v1.Health/Watch" {
                    control.watches.fetch_add(1, Ordering::SeqCst);
                }
                let mut response =
                    if health_call && control.no_health_service.load(Ordering::Relaxed) {
                        tonic::Status::unimplemented("no health service").into_http::<Body>()
                    } else if let Some((code, pushback)) = refusal {
                        let mut status = tonic::Status::new(code, "backend overloaded");
                        if let Some(pushback) = pushback {
                            status.metadata_mut().insert(
                                "grpc-retry-pushback-ms",
                                pushback.parse().expect("a valid metadata value"),
                            );
                        }
                        status.into_http::<Body>()
                    } else if control.unavailable.load(Ordering::Relaxed) {
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
                control.in_flight.fetch_sub(1, Ordering::SeqCst);
                response.headers_mut().insert(
                    "x-backend",
                    http::HeaderValue::from_str(&address.to_string())
                        .expect("an address is a valid header value"),
                );
                Ok::<_, Infallible>(response)
            }
        });
        let tasks = crate::backend::serve(listener, service, stopped, true, tls);
        Ok(GrpcBackend {
            address,
            control,
            health: reporter,
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

    /// Answers every call at once with `code` (a trailers-only response, as tonic encodes a
    /// handler's error) and, when given, `grpc-retry-pushback-ms: pushback`; `None` goes back to
    /// serving.
    pub fn set_refusing(&self, refusal: Option<(tonic::Code, Option<&str>)>) {
        *self
            .control
            .refusal
            .lock()
            .expect("the refusal lock is never poisoned") =
            refusal.map(|(code, pushback)| (code, pushback.map(str::to_owned)));
    }

    /// Sets what the backend's health service says of `service` (`""`: the server as a whole),
    /// to `Check` calls and to every `Watch` stream open on it.
    pub async fn set_serving(&self, service: &str, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status(service, status).await;
    }

    /// While set, the health service's calls are answered `UNIMPLEMENTED`.
    pub fn set_health_service_missing(&self, missing: bool) {
        self.control
            .no_health_service
            .store(missing, Ordering::Relaxed);
    }

    /// `grpc.health.v1.Health/Watch` calls received so far (a client's health checks).
    pub fn watches(&self) -> u64 {
        self.control.watches.load(Ordering::SeqCst)
    }

    /// The most calls this backend ever had in flight at once.
    pub fn most_in_flight(&self) -> u64 {
        self.control.most_in_flight.load(Ordering::SeqCst)
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

/// A self-signed certificate and key for test servers, made at run time.
#[derive(Clone)]
pub struct TlsIdentity {
    certificate: rustls::pki_types::CertificateDer<'static>,
    key: Arc<rustls::pki_types::PrivateKeyDer<'static>>,
    pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A self-signed certificate valid for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[&str]) -> TlsIdentity {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let certified =
            rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
        let pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        TlsIdentity {
            certificate: certified.cert.der().clone(),
            key: Arc::new(key),
            pem,
        }
    }

    /// The certificate as PEM, for a client's trusted roots.
    pub fn certificate_pem(&self) -> &[u8] {
        self.pem.as_bytes()
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_no_client_auth()
        .with_single_cert(vec![self.certificate.clone()], self.key.clone_key())
        .expect("a fresh self-signed certificate and its key match");
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
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
