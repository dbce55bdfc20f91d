//! A hyper HTTP client that balances each request across a target's endpoints.
//!
//! [`HttpClient`] sends each request to the endpoint the balancer picks, over hyper-util's
//! pooled client (HTTP/1 keep-alive pooling, or HTTP/2 with
//! [`http2_only`](crate::Builder::http2_only)). The request's URI only needs a path (and query):
//! the scheme and authority are set to the chosen endpoint's address; a `Host` header the caller
//! set is kept.
//!
//! - A request that could not reach an endpoint (connection refused or timed out, or refused
//!   unprocessed by a server's GOAWAY) is sent to another endpoint, up to three sends in all
//!   (the retry budget's `max_attempts` for idempotent requests with a budget).
//! - With [`retry_idempotent`](crate::Builder::retry_idempotent), requests with an idempotent
//!   method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) that failed after they may have been sent,
//!   or were answered 503, are sent again within a retry budget (tower's `TpsBudget`).
//! - The timeout covers waiting for an endpoint, retries and the response head.
//!
//! Bodies must be `Clone` (`Full<Bytes>`, `Empty<Bytes>`, `String`, ...), so that a request can
//! be sent again.
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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, Classify, HttpStatus, Outcome};
use waypost_discovery::Endpoints;

use crate::connect::{Connector, Stream};
use crate::error::{BoxError, Error, ErrorKind};
use crate::key::RequestKey;

use crate::retry::Retries;
pub use crate::retry::RetryBudget;

/// A connection made by [`Connector`], for hyper-util's pool.
pub(crate) struct PooledStream {
    inner: Box<dyn Stream>,
    h2: bool,
}

impl tokio::io::AsyncRead for PooledStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PooledStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connection for PooledStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

/// hyper-util's connector: our TCP and TLS connector, addressed by the URI's authority (always
/// an endpoint address here).
#[derive(Clone)]
pub(crate) struct PoolConnector {
    connector: Connector,
    http2_only: bool,
}

impl Service<http::Uri> for PoolConnector {
    type Response = TokioIo<PooledStream>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.connector.clone();
        let h2 = self.http2_only;
        Box::pin(async move {
            let address: SocketAddr = uri
                .authority()
                .and_then(|authority| authority.as_str().parse().ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Transport,
                        format!("`{uri}` has no endpoint address"),
                    )
                })?;
            let inner = connector.connect(address).await?;
            Ok(TokioIo::new(PooledStream { inner, h2 }))
        })
    }
}

/// The per-endpoint service: the shared pooled client, aimed at one endpoint.
pub(crate) struct HyperEndpoint<B> {
    client: Client<PoolConnector, B>,
    origin: Arc<(http::uri::Scheme, http::uri::Authority)>,
    address: SocketAddr,
}

impl<B> Clone for HyperEndpoint<B> {
    fn clone(&self) -> Self {
        HyperEndpoint {
            client: self.client.clone(),
            origin: Arc::clone(&self.origin),
            address: self.address,
        }
    }
}

impl<B> HyperEndpoint<B> {
    pub(crate) fn new(client: Client<PoolConnector, B>, address: SocketAddr, tls: bool) -> Self {
        let scheme = if tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let authority = address
            .to_string()
            .parse()
            .expect("a socket address is a valid authority");
        HyperEndpoint {
            client,
            origin: Arc::new((scheme, authority)),
            address,
        }
    }
}

pub(crate) fn pool<B>(connector: Connector, http2_only: bool) -> Client<PoolConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(PoolConnector {
            connector,
            http2_only,
        })
}

impl<B> Service<http::Request<B>> for HyperEndpoint<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Incoming>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let address = self.address;
        if let Err(error) =
            crate::connect::aim(&mut request, &self.origin.0, &self.origin.1, address)
        {
            return Box::pin(std::future::ready(Err(error)));
        }
        let response = self.client.request(request);
        Box::pin(async move {
            response.await.map_err(|error| {
                let (kind, message) = if error.is_connect() {
                    (ErrorKind::Unreachable, "could not connect")
                } else if crate::connect::refused_by_server(&error) {
                    (
                        ErrorKind::Unreachable,
                        "the server refused the request before processing it (GOAWAY)",
                    )
                } else {
                    (ErrorKind::Transport, "the request failed")
                };
                Error::new(kind, message)
                    .with_endpoint(address)
                    .with_source(error)
            })
        })
    }
}

/// Connect failures make the endpoint unreachable; statuses as [`HttpStatus`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HyperClassify;

impl Classify<http::Response<Incoming>, Error> for HyperClassify {
    fn classify_response(&self, response: &http::Response<Incoming>) -> Outcome {
        Classify::<_, ()>::classify_response(&HttpStatus, response)
    }

    fn classify_error(&self, error: &Error) -> Outcome {
        if error.kind() == ErrorKind::Unreachable {
            Outcome::Unreachable
        } else {
            Outcome::Failure
        }
    }
}

pub(crate) type ClientBalance<B> = Balance<HyperEndpoint<B>, RequestKey, HyperClassify>;

/// A balanced HTTP client. Cheap to clone; clones share the balancer and the connection pool.
pub struct HttpClient<B> {
    balance: ClientBalance<B>,
    timeout: Option<Duration>,
    retry: Option<Retries>,
}

impl<B> Clone for HttpClient<B> {
    fn clone(&self) -> Self {
        HttpClient {
            balance: self.balance.clone(),
            timeout: self.timeout,
            retry: self.retry.clone(),
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
            .finish()
    }
}

use crate::builder::UNSENT_ATTEMPTS;

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
    B: Body + Clone + Send + Sync + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        balance: ClientBalance<B>,
        timeout: Option<Duration>,
        retry: Option<Retries>,
    ) -> Self {
        HttpClient {
            balance,
            timeout,
            retry,
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

    /// Sends `request` to the endpoint the balancer picks; see the [module docs](self) for
    /// retries and the timeout.
    pub async fn request(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<Incoming>, Error> {
        let balance = self.balance.clone();
        let retry = self.retry.clone();
        let send = send(balance, retry, request);
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
}

async fn send<B>(
    balance: ClientBalance<B>,
    retry: Option<Retries>,
    request: http::Request<B>,
) -> Result<http::Response<Incoming>, Error>
where
    B: Body + Clone + Send + Sync + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let retry = retry.filter(|_| is_idempotent(request.method()));
    let plan = crate::retry::Plan::new(UNSENT_ATTEMPTS, retry);
    // Bodies are `Clone`: every resend is a copy of the original request.
    let original = copy_request(&request);
    let copy = move || Some(copy_request(&original));
    let send = tower::service_fn(move |request: http::Request<B>| {
        let balance = balance.clone();
        async move { Ok::<_, std::convert::Infallible>(send_once(balance, request).await) }
    });
    crate::retry::run(send, request, plan, copy).await
}

fn copy_request<B: Clone>(request: &http::Request<B>) -> http::Request<B> {
    let mut copy = http::Request::new(request.body().clone());
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
) -> crate::retry::Sent<http::Request<B>, http::Response<Incoming>>
where
    B: Body + Clone + Send + Sync + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    use crate::retry::Sent;
    let result = match balance.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(response) => {
            let refusing = response.status() == http::StatusCode::SERVICE_UNAVAILABLE;
            Sent::Answer { response, refusing }
        }
        Err(error) => {
            let error = Error::from_balance(error);
            if error.is_unavailable() {
                Sent::Final(error)
            } else if error.is_not_processed() {
                Sent::NotProcessed {
                    request: None,
                    error,
                }
            } else {
                Sent::Failed(error)
            }
        }
    }
}

/// The response future of [`HttpClient`] as a tower service.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, Error>> + Send>>;

impl<B> Service<http::Request<B>> for HttpClient<B>
where
    B: Body + Clone + Send + Sync + Unpin + 'static,
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
