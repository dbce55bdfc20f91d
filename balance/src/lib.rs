//! Load balancing for waypost: policies, per-endpoint health, and a tower balancer that every
//! clone shares without a lock, a queue or a worker task.
//!
//! [`Balance`] follows an [`Endpoints`](waypost_discovery::Endpoints) handle and spreads
//! requests over its endpoints:
//!
//! - **Policies** ([`Policy`]): power of two choices with Peak EWMA (default) or least pending,
//!   round-robin without a shared hot counter, smooth weighted round-robin, weighted random,
//!   Maglev and ring hash consistent hashing with optional bounded loads. Weight 0 means "no
//!   new requests" everywhere.
//! - **Health** ([`BalanceConfig`]): passive outlier detection (consecutive failures and failure
//!   percentage, growing ejection times, a cap on ejected endpoints), load feedback (endpoints
//!   that answer "overloaded" are passed over for their `Retry-After`), per-endpoint
//!   concurrency limits, a panic threshold, zone preference with spill-over, slow start, and
//!   per-endpoint connectivity (an unreachable endpoint is skipped with backoff, never dropped
//!   for good).
//! - **Subsetting** ([`Subsetting`]): a client of a large fleet uses, and connects to, only `k`
//!   of the endpoints, chosen so that every endpoint gets about the same number of clients.
//! - **The pick path** reads an immutable table through an `ArcSwap` and atomics: no lock, no
//!   allocation, no channel hop, no clock read (Peak EWMA costs are compared in the log domain).
//!   Per-endpoint state (latency, in-flight, failures, ejections) survives every set update.
//! - **Waiting**: with nothing usable, a request waits for an endpoint up to a deadline, then
//!   fails with an [`Error`] naming the target and the reason ([`ErrorKind::NoEndpoints`],
//!   [`ErrorKind::AllEjected`], [`ErrorKind::Discovery`]); it never hangs. A background task
//!   follows discovery, so a new endpoint is used without any request having to drive it.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, ServiceExt};
//! use waypost_balance::{Balance, BalanceConfig, Policy};
//! use waypost_discovery::{Endpoint, source};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let endpoints = source::from_addresses(
//!     "static:///demo",
//!     ["127.0.0.1:8080".parse().unwrap(), "127.0.0.1:8081".parse().unwrap()],
//! );
//! let mut balance = Balance::builder(endpoints)
//!     .config(BalanceConfig::with_policy(Policy::round_robin()))
//!     .build(|endpoint: &Endpoint| {
//!         let port = endpoint.address().port();
//!         tower::service_fn(move |_: ()| async move { Ok::<_, Infallible>(port) })
//!     })
//!     .unwrap();
//! let first = balance.ready().await.unwrap().call(()).await.unwrap();
//! let second = balance.ready().await.unwrap().call(()).await.unwrap();
//! assert_ne!(first, second, "round-robin alternates");
//! # }
//! ```
//!
//! # Features
//!
//! - `metrics`: counters, gauges and a latency histogram through the
//!   [`metrics`](https://docs.rs/metrics) facade (per endpoint: picks, in flight, outcomes,
//!   latency, ejections, connect failures, health transitions; per target: retries, unsent
//!   resends, set size, panic mode); see [`metrics`].

mod classify;
mod config;
mod error;
mod key;
mod layer;
mod make;
pub mod metrics;
pub mod policy;
mod service;
pub mod snapshot;
mod state;
pub mod subset;
mod table;
mod updater;

pub use classify::{Classify, ErrorIsFailure, HttpStatus, Outcome, Pushback, pushback};
pub use config::{
    BalanceConfig, ConcurrencyLimit, LoadFeedback, OutlierDetection, ReconnectBackoff, SlowStart,
    WhenFull, ZoneMode, ZonePreference,
};
pub use error::{BoxError, ConfigError, Error, ErrorKind};
pub use key::{ExtensionKey, HashKey, HeaderKey, KeyFn, NoHashKey, RequestHashKey, hash_key_bytes};
pub use layer::BalanceLayer;
pub use make::{ConnectivityReporter, MakeEndpoint, WithConnectivity};
pub use policy::{PeakEwma, Policy};
pub use service::{Balance, Builder, ResponseFuture};
pub use snapshot::{EndpointSnapshot, Snapshot, TableMode};
pub use state::{Connectivity, LatencyClock};
pub use subset::Subsetting;
