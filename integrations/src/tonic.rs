//! A tonic channel that balances every call across a target's endpoints.
//!
//! [`Channel`] is what tonic's generated clients take (`GreeterClient::new(channel)`): a
//! `Clone + Send + Sync` service over HTTP/2 requests. Behind it, discovery follows the target,
//! each endpoint has its own HTTP/2 connection made and kept in the background (with backoff and
//! optional TLS), and the balancer picks an endpoint per call, with no worker task and no
//! channel hop in between.
//!
//! - Calls that never reached an endpoint (no connection, a connection that closed before the
//!   call was written) go to another endpoint, transparently. Calls that may have been processed
//!   are never sent twice.
//! - The call's deadline (its `grpc-timeout`, or the channel's timeout, the earlier) covers the
//!   wait for an endpoint as well as the call.
//! - Failures come back as [`tonic::Status`]: `UNAVAILABLE` when no endpoint
//!   could take the call (the message names the target and the reason), `DEADLINE_EXCEEDED` when
//!   the deadline passed. The `waypost` [`Error`] is the status's source.
//!
//! A runnable example: two tonic servers on loopback (the standard health service), and the
//! generated health client calling them through one channel.
//!
//! ```
//! use tonic_health::pb::HealthCheckRequest;
//! use tonic_health::pb::health_client::HealthClient;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut addresses = Vec::new();
//! # for _ in 0..2 {
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! #     addresses.push(listener.local_addr()?.to_string());
//! #     let (_reporter, health) = tonic_health::server::health_reporter();
//! #     tokio::spawn(tonic::transport::Server::builder().add_service(health)
//! #         .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
//! # }
//! let target = format!("static:///{}", addresses.join(","));   // or dns:///, kubernetes:///
//! let channel = waypost::Builder::new(&target)?
//!     .timeout(std::time::Duration::from_secs(2))
//!     .tonic_channel()?;
//! let mut client = HealthClient::new(channel);
//! let response = client.check(HealthCheckRequest { service: String::new() }).await?;
//! assert_eq!(response.get_ref().status, 1); // SERVING
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::tonic::body::Body;
use hyper::body::Incoming;
use tower::Service;
use waypost_balance::Balance;
use waypost_discovery::Endpoints;

use crate::error::{Error, ErrorKind};
use crate::h2::{H2Classify, H2Endpoint};
use crate::key::RequestKey;

pub(crate) type ChannelBalance = Balance<H2Endpoint<Body>, RequestKey, H2Classify>;

/// A balanced tonic channel. Cheap to clone; every clone shares one balancer and one set of
/// connections.
#[derive(Clone)]
pub struct Channel {
    balance: ChannelBalance,
    target: Arc<str>,
    timeout: Option<Duration>,
    attempts: usize,
}

impl Channel {
    pub(crate) fn new(balance: ChannelBalance, timeout: Option<Duration>, attempts: usize) -> Self {
        Channel {
            target: Arc::from(balance.target()),
            balance,
            timeout,
            attempts,
        }
    }

    /// The target this channel serves.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The discovery handle the channel follows.
    pub fn endpoints(&self) -> &Endpoints {
        self.balance.endpoints()
    }

    /// The number of endpoints calls may go to now.
    pub fn usable_endpoints(&self) -> usize {
        self.balance.usable_endpoints()
    }

    /// Calls in flight per endpoint the balancer may pick now.
    pub fn in_flight(&self) -> Vec<(std::net::SocketAddr, u32)> {
        self.balance.in_flight()
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.target)
            .field("balance", &self.balance)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The response future of [`Channel`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, ::tonic::Status>> + Send>>;

impl Service<http::Request<Body>> for Channel {
    type Response = http::Response<Incoming>;
    type Error = ::tonic::Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per call; a call with no usable endpoint waits within its
        // deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let deadline = crate::grpc_timeout::deadline(request.headers(), self.timeout);
        let balance = self.balance.clone();
        let target = Arc::clone(&self.target);
        let attempts = self.attempts;
        Box::pin(async move {
            let send = crate::unsent::send(balance, request, attempts);
            let result = match deadline {
                Some(deadline) => tokio::time::timeout(deadline, send)
                    .await
                    .unwrap_or_else(|_| Err(Error::timeout(Arc::clone(&target), deadline))),
                None => send.await,
            };
            result.map_err(status)
        })
    }
}

/// The gRPC status for a `waypost` error, with the error as its source.
pub(crate) fn status(error: Error) -> ::tonic::Status {
    use ::tonic::Code;
    let code = match error.kind() {
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::NoEndpoints
        | ErrorKind::AllEjected
        | ErrorKind::Discovery
        | ErrorKind::Unreachable
        | ErrorKind::Transport => Code::Unavailable,
        ErrorKind::Tls => Code::Unavailable,
        _ => Code::Internal,
    };
    let mut status = ::tonic::Status::new(code, error.to_string());
    status.set_source(Arc::new(error));
    status
}
