//! Active gRPC health checks of the tonic channel's endpoints: one
//! `grpc.health.v1.Health/Watch` stream per endpoint, over the endpoint's own connection, as
//! grpc-go's client-side health checking does.
//!
//! [`Builder::grpc_health_check`](crate::Builder::grpc_health_check) names the service to
//! watch (`""` is the server as a whole). For each connection the endpoint's task makes, a
//! watcher opens the stream on that connection and reports every status the server sends:
//!
//! - `SERVING`: the endpoint takes new calls;
//! - `NOT_SERVING`, `SERVICE_UNKNOWN` or `UNKNOWN`: it takes none (calls in flight finish)
//!   until the server says `SERVING` again; it counts as unhealthy for the panic threshold;
//! - `UNIMPLEMENTED` (the server has no health service): the endpoint is treated as healthy,
//!   with one warning for the endpoint;
//! - any other failure of the stream while the connection is up (such as the `NOT_FOUND` with
//!   which tonic-health answers for a service it does not know): not serving, and the stream
//!   is opened again after a jittered, doubling backoff (the balancer's reconnect backoff), so
//!   that many clients do not retry in step.
//!
//! The watcher ends with its connection; the next connection starts a new one. An endpoint
//! starts as serving: its first status arrives one round trip after the connection is made.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use tonic::body::Body;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use waypost_balance::ConnectivityReporter;
use waypost_discovery::backoff::Backoff;

/// What a watcher needs besides its connection.
#[derive(Debug)]
pub(crate) struct GrpcHealthCheck {
    /// The service name in the `HealthCheckRequest`.
    pub(crate) service: String,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

/// Sends requests on one HTTP/2 connection, aimed at its endpoint.
struct OnConnection {
    sender: SendRequest<Body>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    address: SocketAddr,
}

type ConnectionFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, crate::BoxError>> + Send>>;

impl tower::Service<http::Request<Body>> for OnConnection {
    type Response = http::Response<Incoming>;
    type Error = crate::BoxError;
    type Future = ConnectionFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Err(error) =
            crate::connect::aim(&mut request, &self.scheme, &self.authority, self.address)
        {
            return Box::pin(std::future::ready(Err(error.into())));
        }
        let sent = self.sender.send_request(request);
        Box::pin(async move { sent.await.map_err(Into::into) })
    }
}

/// How one stream ended.
enum Ended {
    /// The server has no health service: healthy, and no more streams on this connection.
    Unimplemented,
    /// The stream failed or ended; `delivered` when it brought at least one status.
    Failed { delivered: bool, why: String },
}

impl GrpcHealthCheck {
    /// Watches the endpoint's health over `sender`'s connection until it closes (the caller
    /// also aborts the task then).
    pub(crate) async fn watch(
        self: Arc<Self>,
        sender: SendRequest<Body>,
        scheme: http::uri::Scheme,
        authority: http::uri::Authority,
        address: SocketAddr,
        reporter: ConnectivityReporter,
        warned: Arc<AtomicBool>,
    ) {
        let mut backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        loop {
            let connection = OnConnection {
                sender: sender.clone(),
                scheme: scheme.clone(),
                authority: authority.clone(),
                address,
            };
            match self.stream(connection, &reporter).await {
                Ended::Unimplemented => {
                    if !warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            target: "waypost::health",
                            endpoint = %address,
                            service = %self.service,
                            "the endpoint does not implement grpc.health.v1.Health/Watch; treated as healthy"
                        );
                    }
                    reporter.report_serving(true);
                    return;
                }
                Ended::Failed { delivered, why } => {
                    if sender.is_closed() {
                        // The connection is gone: its task reports that, and the next
                        // connection starts a new watcher.
                        return;
                    }
                    if delivered {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::debug!(target: "waypost::health", endpoint = %address, %why, ?delay, "health stream failed; not serving until it answers again");
                    reporter.report_serving(false);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One `Watch` stream: reports each status until the stream ends.
    async fn stream(&self, connection: OnConnection, reporter: &ConnectivityReporter) -> Ended {
        let mut client = HealthClient::new(connection);
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        let mut stream = match client.watch(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                return Ended::Unimplemented;
            }
            Err(status) => {
                return Ended::Failed {
                    delivered: false,
                    why: format!("{:?}: {}", status.code(), status.message()),
                };
            }
        };
        let mut delivered = false;
        loop {
            match stream.message().await {
                Ok(Some(answer)) => {
                    delivered = true;
                    let serving = answer.status() == ServingStatus::Serving;
                    reporter.report_serving(serving);
                }
                Ok(None) => {
                    return Ended::Failed {
                        delivered,
                        why: "the stream ended".to_owned(),
                    };
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    return Ended::Unimplemented;
                }
                Err(status) => {
                    return Ended::Failed {
                        delivered,
                        why: format!("{:?}: {}", status.code(), status.message()),
                    };
                }
            }
        }
    }
}
