//! A hyper HTTP client that balances each request across a target's endpoints.
//!
//! [`HttpClient`] sends each request to the endpoint the balancer picks, over hyper's
//! connections to that endpoint (HTTP/1 keep-alive connections, pooled per endpoint, or one
//! HTTP/2 connection per endpoint with [`http2_only`](crate::Builder::http2_only)). The
//! request's URI only needs a path (and query): the request goes to the chosen endpoint's
//! address; a `Host` header the caller set is kept (HTTP/1 sends the endpoint's address
//! otherwise).
//!
//! When a request is sent again:
//!
//! - A request that never left the client (the connection could not be made, or it closed
//!   before the request was written) is sent to another endpoint, up to three sends in all (the
//!   retry budget's `max_attempts` for idempotent requests with a budget and a replayable body).
//!   hyper hands such a request back unsent, so this needs no copy and works for any body.
//! - With [`retry_idempotent`](crate::Builder::retry_idempotent), requests with an idempotent
//!   method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) that failed after they may have been sent,
//!   or were answered 503, are sent again within a retry budget (tower's `TpsBudget`), when
//!   their body can be replayed: a client made by [`http_client`](crate::Builder::http_client)
//!   (bodies that are `Clone`) keeps one copy of such a request while it is in flight.
//! - Over HTTP/2, a request the server refused unprocessed after its stream opened (a GOAWAY's
//!   last stream id below it, or `REFUSED_STREAM`) was consumed by hyper; it is sent to another
//!   endpoint from the copy a client with `Clone` bodies keeps over HTTP/2, and fails otherwise.
//! - The timeout covers waiting for an endpoint, resends and the response head.
//!
//! Bodies that are not `Clone` (a streaming `StreamBody`, a proxied `hyper::body::Incoming`)
//! go through a client made by
//! [`streaming_http_client`](crate::Builder::streaming_http_client): they get the resends of
//! requests that never left the client, and are never sent twice otherwise. Over HTTP/1, a
//! request that cannot be retried is sent without any copy.
//!
//! A runnable example: two hyper servers on loopback, and a GET through the balanced client.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut addresses = Vec::new();
//! # for _ in 0..2 {
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! #     addresses.push(listener.local_addr()?.to_string());
//! #     tokio::spawn(async move {
//! #         loop {
//! #             let (stream, _) = listener.accept().await.unwrap();
//! #             tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
//! #                 hyper_util::rt::TokioIo::new(stream),
//! #                 hyper::service::service_fn(|_| async {
//! #                     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
//! #                 }),
//! #             ));
//! #         }
//! #     });
//! # }
//! let target = format!("static:///{}", addresses.join(","));   // or dns:///, kubernetes:///
//! let client = waypost::Builder::new(&target)?.http_client::<Empty<Bytes>>()?;
//! let request = http::Request::get("/health").body(Empty::new())?;
//! let response = client.request(request).await?;
//! assert!(response.status().is_success());
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "ok");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, Classify, ConnectivityReporter, HttpStatus, Outcome};
use waypost_discovery::Endpoints;

use crate::builder::UNSENT_ATTEMPTS;
use crate::connect::Connector;
use crate::endpoint_error::EndpointError;
use crate::error::{BoxError, Error, ErrorKind};
use crate::key::RequestKey;
use crate::retry::{Plan, Retries, Sent};

pub use crate::http_probe::HttpProbe;
pub use crate::retry::RetryBudget;

/// How long an HTTP/1 connection may stay idle in an endpoint's pool and still be reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The per-endpoint service: connections to one endpoint, shared by the client's clones.
pub(crate) struct HyperEndpoint<B> {
    pool: Arc<EndpointPool<B>>,
}

impl<B> Clone for HyperEndpoint<B> {
    fn clone(&self) -> Self {
        HyperEndpoint {
            pool: Arc::clone(&self.pool),
        }
    }
}

/// One endpoint's connections.
struct EndpointPool<B> {
    connector: Connector,
    address: SocketAddr,
    /// Told of failed connection attempts (they are counted).
    reporter: ConnectivityReporter,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The `Host` header HTTP/1 requests without one get: the endpoint's address.
    host: http::HeaderValue,
    connections: Connections<B>,
}

enum Connections<B> {
    /// Connections made, each either busy (its response still being read) or idle; a request
    /// takes an idle one, else makes a new one.
    Http1(Mutex<Vec<Parked<B>>>),
    /// The one multiplexed connection, once made.
    Http2(Mutex<Option<http2::SendRequest<B>>>),
}

/// An HTTP/1 connection back in the pool, and since when.
struct Parked<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

impl<B> HyperEndpoint<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The pool of one endpoint; `reporter` is told of failed connection attempts.
    pub(crate) fn new(
        connector: Connector,
        address: SocketAddr,
        http2_only: bool,
        reporter: ConnectivityReporter,
    ) -> Self {
        let scheme = if connector.is_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let text = address.to_string();
        let authority = text.parse().expect("a socket address is a valid authority");
        let host = http::HeaderValue::try_from(text).expect("a socket address is a valid header");
        let connections = if http2_only {
            Connections::Http2(Mutex::new(None))
        } else {
            Connections::Http1(Mutex::new(Vec::new()))
        };
        HyperEndpoint {
            pool: Arc::new(EndpointPool {
                connector,
                address,
                reporter,
                scheme,
                authority,
                host,
                connections,
            }),
        }
    }
}

/// The error of a request that never left the client: the connection closed first.
fn closed_before_sent(address: SocketAddr, source: hyper::Error) -> Error {
    Error::new(
        ErrorKind::Unreachable,
        "the connection closed before the request was sent",
    )
    .with_endpoint(address)
    .with_source(source)
}

impl<B> EndpointPool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(&self) -> Result<TokioIo<Box<dyn crate::connect::Stream>>, Error> {
        match self.connector.connect(self.address).await {
            Ok(stream) => Ok(TokioIo::new(stream)),
            Err(error) => {
                self.reporter.report_connect_failure();
                Err(error)
            }
        }
    }

    fn handshake_failed(&self, source: hyper::Error) -> Error {
        self.reporter.report_connect_failure();
        Error::new(ErrorKind::Unreachable, "the HTTP handshake failed")
            .with_endpoint(self.address)
            .with_source(source)
    }

    /// An idle HTTP/1 connection; closed and long idle ones are dropped on the way.
    fn idle_http1(parked: &Mutex<Vec<Parked<B>>>) -> Option<http1::SendRequest<B>> {
        let mut parked = parked.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now = None;
        let mut index = parked.len();
        while index > 0 {
            index -= 1;
            let connection = &parked[index];
            if connection.sender.is_closed() {
                parked.swap_remove(index);
            } else if connection.sender.is_ready() {
                let now = *now.get_or_insert_with(Instant::now);
                let connection = parked.swap_remove(index);
                if now.saturating_duration_since(connection.since) <= IDLE_TIMEOUT {
                    return Some(connection.sender);
                }
            }
        }
        None
    }

    async fn connect_http1(&self) -> Result<http1::SendRequest<B>, Error> {
        let io = self.connect().await?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|error| self.handshake_failed(error))?;
        let address = self.address;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(target: "waypost::hyper", %address, %error, "HTTP/1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn send_http1(
        &self,
        parked: &Mutex<Vec<Parked<B>>>,
        mut request: http::Request<B>,
    ) -> Result<http::Response<Incoming>, EndpointError<http::Request<B>>> {
        if let Err(error) = origin_form(&mut request, self.address) {
            return Err(EndpointError::Failed(error));
        }
        request
            .headers_mut()
            .entry(http::header::HOST)
            .or_insert_with(|| self.host.clone());
        loop {
            let (mut sender, reused) = match Self::idle_http1(parked) {
                Some(sender) => (sender, true),
                // Boxed: the connect future (TCP, TLS) would otherwise make every request's
                // future that much larger, and it is rarely needed.
                None => match Box::pin(self.connect_http1()).await {
                    Ok(sender) => (sender, false),
                    Err(error) => return Err(EndpointError::unsent(request, error)),
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // Busy until the response body has been read; the next request that finds
                    // it ready takes it.
                    if !sender.is_closed() {
                        parked
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(Parked {
                                sender,
                                since: Instant::now(),
                            });
                    }
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    // An idle connection the server had closed: the same request on another
                    // connection to this endpoint.
                    Some(unsent) if reused => request = unsent,
                    Some(unsent) => {
                        return Err(EndpointError::unsent(
                            unsent,
                            closed_before_sent(self.address, failed.into_error()),
                        ));
                    }
                    None => {
                        return Err(EndpointError::Failed(
                            Error::new(ErrorKind::Transport, "the request failed")
                                .with_endpoint(self.address)
                                .with_source(failed.into_error()),
                        ));
                    }
                },
            }
        }
    }

    /// The HTTP/2 connection, when there is one and it is open.
    fn open_http2(shared: &Mutex<Option<http2::SendRequest<B>>>) -> Option<http2::SendRequest<B>> {
        let current = shared.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    /// A new HTTP/2 connection, shared from now on; or the one another request made meanwhile.
    async fn connect_http2(
        &self,
        shared: &Mutex<Option<http2::SendRequest<B>>>,
    ) -> Result<(http2::SendRequest<B>, bool), Error> {
        let io = self.connect().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|error| self.handshake_failed(error))?;
        let address = self.address;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(target: "waypost::hyper", %address, %error, "HTTP/2 connection ended");
            }
        });
        let mut current = shared.lock().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref().filter(|sender| !sender.is_closed()) {
            // Another request made one meanwhile: share it, and let this one close.
            Some(theirs) => Ok((theirs.clone(), true)),
            None => {
                *current = Some(sender.clone());
                Ok((sender, false))
            }
        }
    }

    async fn send_http2(
        &self,
        shared: &Mutex<Option<http2::SendRequest<B>>>,
        mut request: http::Request<B>,
    ) -> Result<http::Response<Incoming>, EndpointError<http::Request<B>>> {
        if let Err(error) =
            crate::connect::aim(&mut request, &self.scheme, &self.authority, self.address)
        {
            return Err(EndpointError::Failed(error));
        }
        loop {
            let (mut sender, reused) = match Self::open_http2(shared) {
                Some(sender) => (sender, true),
                // Boxed, as for HTTP/1: the connect future is large and rarely needed.
                None => match Box::pin(self.connect_http2(shared)).await {
                    Ok(sender) => sender,
                    Err(error) => return Err(EndpointError::unsent(request, error)),
                },
            };
            let failed = match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            };
            let mut failed = failed;
            match failed.take_message() {
                // The shared connection had closed: the same request on a new one.
                Some(unsent) if reused => request = unsent,
                Some(unsent) => {
                    return Err(EndpointError::unsent(
                        unsent,
                        closed_before_sent(self.address, failed.into_error()),
                    ));
                }
                None => {
                    let error = failed.into_error();
                    return Err(if crate::connect::refused_by_server(&error) {
                        EndpointError::Refused(
                            Error::new(
                                ErrorKind::Unreachable,
                                "the server refused the request before processing it (GOAWAY)",
                            )
                            .with_endpoint(self.address)
                            .with_source(error),
                        )
                    } else {
                        EndpointError::Failed(
                            Error::new(ErrorKind::Transport, "the request failed")
                                .with_endpoint(self.address)
                                .with_source(error),
                        )
                    });
                }
            }
        }
    }
}

/// HTTP/1 sends the path and query only (`/` when there is none).
fn origin_form<B>(request: &mut http::Request<B>, endpoint: SocketAddr) -> Result<(), Error> {
    let uri = request.uri();
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return Ok(());
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|error| {
        Error::new(ErrorKind::Transport, "the request URI is invalid")
            .with_endpoint(endpoint)
            .with_source(error)
    })?;
    Ok(())
}

type EndpointFuture<B> = Pin<
    Box<
        dyn Future<Output = Result<http::Response<Incoming>, EndpointError<http::Request<B>>>>
            + Send,
    >,
>;

impl<B> Service<http::Request<B>> for HyperEndpoint<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Incoming>;
    type Error = EndpointError<http::Request<B>>;
    type Future = EndpointFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let pool = Arc::clone(&self.pool);
        Box::pin(async move {
            match &pool.connections {
                Connections::Http1(parked) => pool.send_http1(parked, request).await,
                Connections::Http2(shared) => pool.send_http2(shared, request).await,
            }
        })
    }
}

/// Requests that never left the client and connect failures make the endpoint unreachable;
/// statuses as [`HttpStatus`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HyperClassify;

impl<B> Classify<http::Response<Incoming>, EndpointError<http::Request<B>>> for HyperClassify
where
    B: Send + 'static,
{
    fn classify_response(&self, response: &http::Response<Incoming>) -> Outcome {
        Classify::<_, ()>::classify_response(&HttpStatus, response)
    }

    fn classify_error(&self, error: &EndpointError<http::Request<B>>) -> Outcome {
        match error {
            EndpointError::Unsent { .. } | EndpointError::Refused(_) => Outcome::Unreachable,
            EndpointError::Failed(error) if error.kind() == ErrorKind::Unreachable => {
                Outcome::Unreachable
            }
            EndpointError::Failed(_) => Outcome::Failure,
        }
    }
}

pub(crate) type ClientBalance<B> = Balance<HyperEndpoint<B>, RequestKey, HyperClassify>;

/// Makes a copy of a body, for a client whose bodies can be replayed.
pub(crate) type Replay<B> = fn(&B) -> B;

/// A balanced HTTP client. Cheap to clone; clones share the balancer and the connections.
///
/// Which requests may be sent more than once:
///
/// - A request that never left the client (no connection could be made, or the connection
///   closed before the request was written) goes to another endpoint, whatever its body: hyper
///   hands it back, nothing is copied.
/// - With [`retry_idempotent`](crate::Builder::retry_idempotent), an idempotent request that
///   failed after it may have been sent, or was answered 503, is sent again only when its body
///   can be replayed: the client was made by [`http_client`](crate::Builder::http_client), whose
///   bodies are `Clone`, and a copy is kept while the request is in flight. A client made by
///   [`streaming_http_client`](crate::Builder::streaming_http_client) accepts any body and
///   never sends a request twice after it may have been sent.
/// - Over HTTP/2, a request a server refused after its stream opened (GOAWAY, `REFUSED_STREAM`)
///   is sent again from that copy; a client with `Clone` bodies keeps one over HTTP/2 for this.
///
/// Requests that cannot be retried, over HTTP/1, are sent without any copy.
pub struct HttpClient<B> {
    balance: ClientBalance<B>,
    timeout: Option<Duration>,
    retry: Option<Retries>,
    replay: Option<Replay<B>>,
    http2: bool,
}

impl<B> Clone for HttpClient<B> {
    fn clone(&self) -> Self {
        HttpClient {
            balance: self.balance.clone(),
            timeout: self.timeout,
            retry: self.retry.clone(),
            replay: self.replay,
            http2: self.http2,
        }
    }
}

impl<B> fmt::Debug for HttpClient<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("balance", &self.balance)
            .field("timeout", &self.timeout)
            .field(
                "retry_idempotent",
                &self.retry.as_ref().map(|retries| retries.max_attempts),
            )
            .field("replayable_bodies", &self.replay.is_some())
            .field("http2_only", &self.http2)
            .finish()
    }
}

fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

impl<B> HttpClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        balance: ClientBalance<B>,
        timeout: Option<Duration>,
        retry: Option<Retries>,
        replay: Option<Replay<B>>,
        http2: bool,
    ) -> Self {
        HttpClient {
            balance,
            timeout,
            retry,
            replay,
            http2,
        }
    }

    /// The target this client serves.
    pub fn target(&self) -> &str {
        self.balance.target()
    }

    /// The discovery handle the client follows.
    pub fn endpoints(&self) -> &Endpoints {
        self.balance.endpoints()
    }

    /// The number of endpoints requests may go to now.
    pub fn usable_endpoints(&self) -> usize {
        self.balance.usable_endpoints()
    }

    /// Requests in flight per endpoint the balancer may pick now.
    pub fn in_flight(&self) -> Vec<(SocketAddr, u32)> {
        self.balance.in_flight()
    }

    /// What the balancer knows now: per endpoint its connectivity, in-flight count, latency
    /// estimate, failures, ejection and pushback, and the table's mode. See
    /// [`Snapshot`](waypost_balance::Snapshot); [`Admin`](crate::admin::Admin) serves it.
    pub fn snapshot(&self) -> impl Future<Output = waypost_balance::Snapshot> + Send + 'static {
        self.balance.snapshot()
    }

    /// Sends `request` to the endpoint the balancer picks; see the [type docs](HttpClient) for
    /// when it is sent again, and the [module docs](self) for the timeout.
    pub async fn request(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<Incoming>, Error> {
        let send = self.send(request);
        match self.timeout {
            Some(timeout) => tokio::time::timeout(timeout, send)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::timeout(
                        Arc::from(self.balance.target()),
                        timeout,
                        self.balance.why_unavailable(timeout),
                    ))
                }),
            None => send.await,
        }
    }

    async fn send(&self, request: http::Request<B>) -> Result<http::Response<Incoming>, Error> {
        let balance = &self.balance;
        let sends = tower::service_fn(move |request: http::Request<B>| {
            let balance = balance.clone();
            async move { Ok::<_, std::convert::Infallible>(send_once(balance, request).await) }
        });
        let retries = self
            .retry
            .as_ref()
            .filter(|_| is_idempotent(request.method()));
        match self.replay {
            // A copy is kept only when it can be used: for an idempotent retry, or for a stream
            // an HTTP/2 server refuses after it opened.
            Some(replay) if retries.is_some() || self.http2 => {
                let plan = Plan::new(UNSENT_ATTEMPTS, retries.cloned())
                    .within(self.timeout)
                    .counted(balance.client_metrics());
                let original = copy_request(&request, replay);
                let copy = move || Some(copy_request(&original, replay));
                crate::retry::run(sends, request, plan, copy).await
            }
            // Only requests hyper hands back unsent go again: no copy.
            _ => {
                let plan = Plan::new(UNSENT_ATTEMPTS, None).counted(balance.client_metrics());
                crate::retry::run(sends, request, plan, || None).await
            }
        }
    }
}

fn copy_request<B>(request: &http::Request<B>, replay: Replay<B>) -> http::Request<B> {
    let mut copy = http::Request::new(replay(request.body()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// One send through the balancer, as the retry engine sees it.
async fn send_once<B>(
    mut balance: ClientBalance<B>,
    request: http::Request<B>,
) -> Sent<http::Request<B>, http::Response<Incoming>>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let result = match balance.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(error) => Err(error),
    };
    let error = match result {
        Ok(response) => {
            let refusing = response.status() == http::StatusCode::SERVICE_UNAVAILABLE;
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
    let named = |error: Error| error.with_target(target.as_str());
    let Some(source) = error.into_source() else {
        return Sent::Failed(named(Error::new(
            ErrorKind::Transport,
            "the endpoint failed",
        )));
    };
    match source.downcast::<EndpointError<http::Request<B>>>() {
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

/// The response future of [`HttpClient`] as a tower service.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, Error>> + Send>>;

impl<B> Service<http::Request<B>> for HttpClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Incoming>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.request(request).await })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Frame;
    use tokio::net::TcpListener;

    use super::*;

    /// A body that counts its copies.
    struct Counted {
        inner: Full<Bytes>,
        clones: Arc<AtomicUsize>,
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Counted {
                inner: self.inner.clone(),
                clones: Arc::clone(&self.clones),
            }
        }
    }

    impl Body for Counted {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Pin::new(&mut self.inner).poll_frame(cx)
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            self.inner.size_hint()
        }
    }

    /// A body that is not `Clone`, with its text.
    struct Once(Full<Bytes>);

    impl Body for Once {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Pin::new(&mut self.0).poll_frame(cx)
        }
    }

    /// A loopback HTTP/1 and HTTP/2 server answering "ok".
    async fn server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|request: http::Request<Incoming>| async move {
                            request.into_body().collect().await?;
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        });
                    let mut http1 = hyper::server::conn::http1::Builder::new();
                    let mut peek = [0u8; 3];
                    // HTTP/2's preface starts with "PRI".
                    let h2 = matches!(stream.peek(&mut peek).await, Ok(3) if &peek == b"PRI");
                    let io = TokioIo::new(stream);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = http1.keep_alive(true).serve_connection(io, service).await;
                    }
                });
            }
        });
        address
    }

    fn connector() -> Connector {
        Connector {
            timeout: Duration::from_secs(5),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    #[tokio::test]
    async fn an_unsent_request_comes_back_whole_with_a_body_that_is_not_clone() {
        // Nothing listens there once the listener is dropped: the connection is refused.
        let refusing = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        for http2 in [false, true] {
            let mut endpoint = HyperEndpoint::new(
                connector(),
                refusing,
                http2,
                ConnectivityReporter::detached(),
            );
            let request = http::Request::post("/orders")
                .header("x-order", "42")
                .body(Once(Full::new(Bytes::from_static(b"the order"))))
                .unwrap();
            let Err(error) = endpoint.call(request).await else {
                panic!("nothing listens at {refusing}");
            };
            assert!(matches!(error, EndpointError::Unsent { .. }), "{error:?}");
            assert!(error.is_not_processed());
            let back = error.take_request().expect("the request is handed back");
            assert_eq!(back.method(), http::Method::POST);
            assert_eq!(back.headers()["x-order"], "42");
            let body = back.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "the order", "the body was not consumed");
        }
    }

    /// Sends one request with a counted body through a client over `address`; the copies made.
    async fn copies(
        address: SocketAddr,
        method: http::Method,
        retries: bool,
        http2: bool,
    ) -> usize {
        let mut builder = crate::Builder::new(&format!("static:///{address}"))
            .unwrap()
            .http2_only(http2);
        if retries {
            builder = builder.retry_idempotent(RetryBudget::default());
        }
        let client: HttpClient<Counted> = builder.http_client().unwrap();
        let clones = Arc::new(AtomicUsize::new(0));
        let request = http::Request::builder()
            .method(method)
            .uri("/")
            .body(Counted {
                inner: Full::new(Bytes::from_static(b"body")),
                clones: Arc::clone(&clones),
            })
            .unwrap();
        let response = client.request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        clones.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_retried_is_not_copied() {
        let address = server().await;
        use http::Method;
        // HTTP/1: a copy only for an idempotent request with a retry budget.
        assert_eq!(copies(address, Method::GET, false, false).await, 0);
        assert_eq!(copies(address, Method::POST, false, false).await, 0);
        assert_eq!(copies(address, Method::POST, true, false).await, 0);
        assert_eq!(copies(address, Method::GET, true, false).await, 1);
        // HTTP/2: one copy kept for a stream a server refuses after it opened.
        assert_eq!(copies(address, Method::POST, false, true).await, 1);
        assert_eq!(copies(address, Method::GET, true, true).await, 1);
    }
}
