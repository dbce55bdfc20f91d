//! A tonic channel that balances every call across a target's endpoints.
//!
//! [`Channel`] is what tonic's generated clients take (`GreeterClient::new(channel)`): a
//! `Clone + Send + Sync` service over HTTP/2 requests. Behind it, discovery follows the target,
//! each endpoint has its own HTTP/2 connection made and kept in the background (with backoff and
//! optional TLS), and the balancer picks an endpoint per call, with no worker task and no
//! channel hop in between.
//!
//! - Calls that never reached an endpoint (no connection, a connection that closed before the
//!   call was written) go to another endpoint, transparently, and so do calls a draining server
//!   refused unprocessed (streams above its GOAWAY's last stream id, RFC 9113 section 6.8; their
//!   message, up to [`MAX_BUFFERED_MESSAGE`], is kept while it is sent). Calls that may have
//!   been processed are never sent twice.
//! - The call's deadline (its `grpc-timeout`, or the channel's timeout, the earlier) covers the
//!   wait for an endpoint as well as the call.
//! - Calls marked [`Idempotent`] (in the request's extensions) are sent again after a failure
//!   that may have reached a server (a connection reset mid-call, an `UNAVAILABLE` answer)
//!   when [`retry_idempotent`](crate::Builder::retry_idempotent) set a budget; their message
//!   is buffered for that (up to 4 MiB).
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
use crate::retry::Retries;

pub(crate) type ChannelBalance = Balance<H2Endpoint<Body>, RequestKey, H2Classify>;

/// Marks a call as safe to send twice (the method has no side effects, or they are idempotent),
/// so that the channel may resend it after a failure that may have reached a server, within the
/// budget set with [`retry_idempotent`](crate::Builder::retry_idempotent).
///
/// ```
/// let mut request = tonic::Request::new(());
/// request.extensions_mut().insert(waypost::tonic::Idempotent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idempotent;

/// The largest message an idempotent call buffers for resending.
pub const MAX_BUFFERED_MESSAGE: usize = 4 * 1024 * 1024;

/// A balanced tonic channel. Cheap to clone; every clone shares one balancer and one set of
/// connections.
#[derive(Clone)]
pub struct Channel {
    balance: ChannelBalance,
    target: Arc<str>,
    timeout: Option<Duration>,
    attempts: usize,
    retries: Option<Retries>,
}

impl Channel {
    pub(crate) fn new(
        balance: ChannelBalance,
        timeout: Option<Duration>,
        attempts: usize,
        retries: Option<Retries>,
    ) -> Self {
        Channel {
            target: Arc::from(balance.target()),
            balance,
            timeout,
            attempts,
            retries,
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

    /// What the balancer knows now: per endpoint its connectivity, in-flight count, latency
    /// estimate, failures, ejection and pushback, and the table's mode. See
    /// [`Snapshot`](waypost_balance::Snapshot); [`Admin`](crate::admin::Admin) serves it.
    pub fn snapshot(&self) -> impl Future<Output = waypost_balance::Snapshot> + Send + 'static {
        self.balance.snapshot()
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
        // Only a timeout needs the target and a handle to say why no endpoint took the call;
        // the common path leaves them alone.
        let timed = deadline.map(|_| (Arc::clone(&self.target), self.balance.clone()));
        let attempts = self.attempts;
        let retries = self
            .retries
            .clone()
            .filter(|_| request.extensions().get::<Idempotent>().is_some());
        Box::pin(async move {
            let send = async move {
                match retries {
                    Some(retries) => {
                        send_idempotent(balance, request, attempts, retries, deadline).await
                    }
                    None => send_replayable(balance, request, attempts).await,
                }
            };
            let result = match (deadline, timed) {
                (Some(deadline), Some((target, balance))) => tokio::time::timeout(deadline, send)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::timeout(
                            target,
                            deadline,
                            balance.why_unavailable(deadline),
                        ))
                    }),
                _ => send.await,
            };
            result.map_err(status)
        })
    }
}

/// Sends a call, again on another endpoint when it was not sent or a server refused it
/// unprocessed (GOAWAY). A message that is all there (a unary call's) is kept whole; another
/// is recorded as it is sent.
async fn send_replayable(
    balance: ChannelBalance,
    request: http::Request<Body>,
    attempts: usize,
) -> Result<http::Response<Incoming>, Error> {
    use crate::replay::Ready;
    let (parts, body) = request.into_parts();
    let plan = crate::retry::Plan::new(attempts, None).counted(balance.client_metrics());
    match crate::replay::read_ready(body) {
        // A unary call: the message is all there, so every send gets it.
        Ready::Whole(message) => {
            let full =
                |message: &bytes::Bytes| Body::new(http_body_util::Full::new(message.clone()));
            let request = http::Request::from_parts(parts.clone(), full(&message));
            let copy = move || Some(http::Request::from_parts(parts.clone(), full(&message)));
            crate::retry::run(endpoint_sends(balance), request, plan, copy).await
        }
        Ready::Partial(body) => {
            let recorded = crate::replay::Recorded::default();
            let request = http::Request::from_parts(parts.clone(), Body::new(recorded.wrap(body)));
            let copy = move || {
                recorded
                    .replay()
                    .map(|message| http::Request::from_parts(parts.clone(), Body::new(message)))
            };
            crate::retry::run(endpoint_sends(balance), request, plan, copy).await
        }
    }
}

/// Sends an idempotent call, again after failures that may have reached a server, within the
/// budget; every send, unsent resends included, counts against the budget's `max_attempts`.
async fn send_idempotent(
    balance: ChannelBalance,
    request: http::Request<Body>,
    attempts: usize,
    retries: Retries,
    deadline: Option<std::time::Duration>,
) -> Result<http::Response<Incoming>, Error> {
    use http_body_util::{BodyExt, Full, Limited};
    let (parts, body) = request.into_parts();
    let message = match Limited::new(body, MAX_BUFFERED_MESSAGE).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Err(Error::new(
                ErrorKind::Config,
                "an idempotent call's message could not be buffered for resending \
                 (larger than waypost::tonic::MAX_BUFFERED_MESSAGE?)",
            )
            .with_target(balance.target())
            .with_source(error));
        }
    };
    let first = http::Request::from_parts(parts.clone(), Body::new(Full::new(message.clone())));
    let copy = move || {
        Some(http::Request::from_parts(
            parts.clone(),
            Body::new(Full::new(message.clone())),
        ))
    };
    let plan = crate::retry::Plan::new(attempts, Some(retries))
        .within(deadline)
        .counted(balance.client_metrics());
    crate::retry::run(endpoint_sends(balance), first, plan, copy).await
}

/// The balancer as the retry engine sees it: each send's outcome classified.
fn endpoint_sends(
    balance: ChannelBalance,
) -> impl tower::Service<
    http::Request<Body>,
    Response = crate::retry::Sent<http::Request<Body>, http::Response<Incoming>>,
    Error = std::convert::Infallible,
    Future = impl Future + Send,
> + Send {
    tower::service_fn(move |request: http::Request<Body>| {
        let balance = balance.clone();
        async move { Ok(send_once(balance, request).await) }
    })
}

async fn send_once(
    mut balance: ChannelBalance,
    request: http::Request<Body>,
) -> crate::retry::Sent<http::Request<Body>, http::Response<Incoming>> {
    use crate::h2::EndpointError;
    use crate::retry::Sent;
    use tower::ServiceExt;
    let result = match balance.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(error) => Err(error),
    };
    let error = match result {
        Ok(response) => {
            let refusing = is_unavailable(&response);
            let pushback = waypost_balance::pushback(response.headers());
            return Sent::Answer {
                response,
                refusing,
                pushback,
            };
        }
        Err(error) => error,
    };
    if !error.is_endpoint() {
        return Sent::Final(Error::from_balance(error));
    }
    let target = error.target().to_owned();
    let endpoint = error.endpoint_address();
    let named = |mut error: Error| {
        error = error.with_target(target.as_str());
        if let Some(endpoint) = endpoint {
            error = error.with_endpoint(endpoint);
        }
        error
    };
    let Some(source) = error.into_source() else {
        return Sent::Failed(named(Error::new(
            ErrorKind::Transport,
            "the endpoint failed",
        )));
    };
    match source.downcast::<EndpointError<http::Request<Body>>>() {
        Ok(failure) => {
            let request = failure.take_request();
            let not_processed = failure.is_not_processed();
            let error = named(failure.into_error());
            if not_processed {
                Sent::NotProcessed { request, error }
            } else {
                Sent::Failed(error)
            }
        }
        Err(other) => Sent::Failed(named(
            Error::new(ErrorKind::Transport, "the endpoint failed").with_source(other),
        )),
    }
}

/// `true` for a trailers-only `UNAVAILABLE` answer (a server refusing work).
fn is_unavailable(response: &http::Response<Incoming>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"14")
}

/// The gRPC status for a `waypost` error, with the error as its source.
pub(crate) fn status(error: Error) -> ::tonic::Status {
    use ::tonic::Code;
    let code = match error.kind() {
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::NoEndpoints
        | ErrorKind::AllEjected
        | ErrorKind::Overloaded
        | ErrorKind::Discovery
        | ErrorKind::Unreachable
        | ErrorKind::Transport => Code::Unavailable,
        ErrorKind::Tls => Code::Unavailable,
        _ => Code::Internal,
    };
    // The whole story in the message (tonic's clients show only the message), each cause once.
    let mut status = ::tonic::Status::new(code, crate::error::chain(&error));
    status.set_source(Arc::new(error));
    status
}
