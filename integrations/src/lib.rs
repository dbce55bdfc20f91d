//! waypost: client-side service discovery and load balancing for Rust microservices.
//!
//! This is the crate applications add. From one target string it builds a client that follows
//! the target's endpoints (DNS, a Kubernetes EndpointSlice watch, or a static list) and balances
//! every request across them inside the process, with no sidecar and no proxy hop:
//!
//! - [`tonic::Channel`]: for tonic's generated gRPC clients (`GreeterClient::new(channel)`),
//!   one HTTP/2 connection per endpoint kept in the background;
//! - [`hyper::HttpClient`]: an HTTP client (HTTP/1 pooling or HTTP/2);
//! - [`Builder::balance`] and [`Builder::balance_layer`]: the tower balancer over services you
//!   make yourself.
//!
//! Requests that never reached an endpoint are sent to another one; requests that may have been
//! processed are not, unless idempotent retries are enabled with a budget. A request's deadline
//! covers the wait for an endpoint. Connection failures ask discovery to look again early.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), waypost::Error> {
//! use waypost::balance::Policy;
//!
//! let builder = waypost::Builder::new("static:///127.0.0.1:50051,127.0.0.1:50052")?
//!     .policy(Policy::round_robin());
//! # #[cfg(feature = "tonic")] {
//! let channel = builder.tonic_channel()?;
//! // let client = GreeterClient::new(channel);
//! assert_eq!(channel.target(), "static:///127.0.0.1:50051,127.0.0.1:50052");
//! # }
//! # Ok(()) }
//! ```
//!
//! The discovery layer ([`discovery`]) and the balancer ([`balance`]) are re-exported for
//! programs that use them directly.
//!
//! # Features
//!
//! - `dns` (default): `dns:///` targets through hickory-resolver (A/AAAA, SRV, TTL refresh).
//! - `tonic` (default): [`tonic::Channel`].
//! - `hyper` (default): [`hyper::HttpClient`] over hyper's connections, pooled per endpoint.
//! - `kubernetes`: `kubernetes:///` targets through a watch of the Service's EndpointSlices
//!   (kube; the application picks the k8s-openapi version feature, as with kube).
//! - `xds`: `xds:///` targets from a service-mesh control plane over one ADS stream
//!   (see [`discovery::source::xds`]); the bootstrap is gRPC's, or [`Builder::xds_bootstrap`].
//! - `tls`: TLS to endpoints with rustls and the *ring* provider ([`tls::TlsConfig`]).
//! - `metrics`: balancer and client counters, gauges and a latency histogram through the `metrics`
//!   facade (see [`balance::metrics`]).
//! - `admin`: [`admin::Admin`], a tower service answering each client's
//!   [`snapshot`](tonic::Channel::snapshot) as JSON and Prometheus text.
//! - `cli`: the `waypost` command ([`cli`]: `resolve`, `watch`, `status`), installed with
//!   `cargo install --path integrations --features cli` from a clone.
//!
//! Without `dns`, `dns:///` targets with an IP address still work; other names are an
//! [`ErrorKind::FeatureDisabled`] error.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod builder;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
#[cfg(any(feature = "tonic", feature = "hyper"))]
mod connect;
#[cfg(any(feature = "tonic", feature = "hyper"))]
mod endpoint_error;
mod error;
#[cfg(feature = "tonic")]
mod grpc_timeout;
#[cfg(feature = "tonic")]
mod h2;
#[cfg(feature = "tonic")]
mod health_check;
#[cfg(feature = "hyper")]
mod http_probe;
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod hyper;
mod key;
#[cfg(feature = "tonic")]
mod replay;
mod resolve;
#[cfg(any(feature = "tonic", feature = "hyper"))]
mod retry;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use builder::{
    Builder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT,
};
pub use error::{BoxError, Error, ErrorKind};
pub use key::RequestKey;
#[cfg(any(feature = "tonic", feature = "hyper"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tonic", feature = "hyper"))))]
pub use retry::RetryBudget;
pub use waypost_balance as balance;
pub use waypost_discovery as discovery;

/// The README's code blocks, compiled (and the self-contained ones run) as doc tests so that
/// they cannot drift from the API.
#[cfg(all(
    doctest,
    feature = "dns",
    feature = "tonic",
    feature = "hyper",
    feature = "kubernetes",
    feature = "xds",
    feature = "admin"
))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
