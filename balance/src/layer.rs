//! [`BalanceLayer`]: a [`Balance`] as a tower layer over a [`MakeEndpoint`].
//!
//! For stacks built with `tower::ServiceBuilder`: the layer takes the per-endpoint maker (the
//! "inner service" of the stack) and returns the balancer over it.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Layer, ServiceBuilder, ServiceExt};
//! use waypost_balance::{BalanceConfig, BalanceLayer, Policy};
//! use waypost_discovery::{Endpoint, source};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let endpoints = source::from_addresses("static:///demo", ["127.0.0.1:8080".parse().unwrap()]);
//! let layer = BalanceLayer::new(endpoints, BalanceConfig::with_policy(Policy::round_robin())).unwrap();
//! let service = ServiceBuilder::new().layer(layer).service(|endpoint: &Endpoint| {
//!     let address = endpoint.address();
//!     tower::service_fn(move |_: ()| async move { Ok::<_, Infallible>(address) })
//! });
//! assert_eq!(service.oneshot(()).await.unwrap().port(), 8080);
//! # }
//! ```

use std::fmt;

use tower::Layer;
use waypost_discovery::Endpoints;

use crate::classify::ErrorIsFailure;
use crate::config::BalanceConfig;
use crate::error::ConfigError;
use crate::key::NoHashKey;
use crate::make::MakeEndpoint;
use crate::service::{Balance, Builder};

/// Wraps a [`MakeEndpoint`] into a [`Balance`] over an [`Endpoints`] handle.
#[derive(Clone)]
pub struct BalanceLayer<K = NoHashKey, C = ErrorIsFailure> {
    endpoints: Endpoints,
    config: BalanceConfig,
    key: K,
    classify: C,
}

impl BalanceLayer {
    /// A layer with `config`, checked now so that applying the layer cannot fail.
    pub fn new(endpoints: Endpoints, config: BalanceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(BalanceLayer {
            endpoints,
            config,
            key: NoHashKey,
            classify: ErrorIsFailure,
        })
    }
}

impl<K, C> BalanceLayer<K, C> {
    /// Finds each request's hash key with `key`.
    pub fn hash_key<K2>(self, key: K2) -> BalanceLayer<K2, C> {
        BalanceLayer {
            endpoints: self.endpoints,
            config: self.config,
            key,
            classify: self.classify,
        }
    }

    /// Classifies responses and errors with `classify`.
    pub fn classify<C2>(self, classify: C2) -> BalanceLayer<K, C2> {
        BalanceLayer {
            endpoints: self.endpoints,
            config: self.config,
            key: self.key,
            classify,
        }
    }
}

impl<M, K, C> Layer<M> for BalanceLayer<K, C>
where
    M: MakeEndpoint,
    K: Clone,
    C: Clone,
{
    type Service = Balance<M::Service, K, C>;

    /// # Panics
    ///
    /// Outside a tokio runtime.
    fn layer(&self, make: M) -> Self::Service {
        Builder::new(self.endpoints.clone())
            .config(self.config.clone())
            .hash_key(self.key.clone())
            .classify(self.classify.clone())
            .build(make)
            .expect("the configuration was validated when the layer was made")
    }
}

impl<K, C> fmt::Debug for BalanceLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("target", &self.endpoints.target())
            .field("config", &self.config)
            .finish()
    }
}
