//! waypost: client-side service discovery and load balancing for Rust microservices.
//!
//! This is the crate applications depend on. Today it re-exports the discovery layer
//! ([`discovery`]): endpoint sets readable without a lock, target strings, and the static
//! source. The balancer ([`balance`]) and the tonic, hyper and tower integrations that turn a
//! target string into a ready client are not written yet.
//!
//! ```
//! use waypost::discovery::{source, Target};
//!
//! let Target::Static(list) = "static:///127.0.0.1:8080".parse::<Target>().unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!(source::from_static(&list).load().len(), 1);
//! ```
//!
//! # Features
//!
//! - `kubernetes`: the Kubernetes EndpointSlice source of the discovery layer
//!   (`discovery::source::kubernetes`).

pub use waypost_balance as balance;
pub use waypost_discovery as discovery;
