//! The xDS source: endpoints from a service-mesh control plane, for `xds:///listener` targets,
//! as gRPC's proxyless xDS clients take them (from istiod, or any management server speaking
//! Envoy's aggregated discovery service).
//!
//! A target names a listener. The source follows its chain of resources over one ADS stream
//! per control plane, shared by every `xds:///` source of the process with the same
//! [`Bootstrap`] (and tokio runtime):
//!
//! - **Listener** (LDS): its `api_listener` must hold an `HttpConnectionManager`, whose routes
//!   are inline (`route_config`) or named (`rds`).
//! - **RouteConfiguration** (RDS): the virtual host whose domains match the listener's name best
//!   (exact, `*.suffix`, `prefix.*`, `*`), and in it the first route that matches every
//!   request (prefix `""` or `/`, no header or query matchers); its `cluster`, or its
//!   `weighted_clusters` split by weight.
//! - **Cluster** (CDS): an EDS cluster; its `eds_cluster_config.service_name` (or its name)
//!   names the assignment.
//! - **ClusterLoadAssignment** (EDS): each endpoint's socket address, `load_balancing_weight`
//!   and `health_status` (HEALTHY and UNKNOWN are used; DRAINING is kept as
//!   [`Terminating`](crate::Readiness::Terminating), used only when nothing else is; the
//!   others are left out), each locality's zone (as the endpoints'
//!   [`zone`](crate::Endpoint::zone)), weight and priority, and the policy's
//!   `overprovisioning_factor`.
//!
//! Priorities share the load as Envoy shares it: each takes
//! `min(what is left, healthy% × overprovisioning factor)`, from priority 0 on. The endpoints'
//! weights carry the result (cluster weight × priority share × locality weight × endpoint
//! weight), so weighted policies follow it.
//!
//! Everything else in the resources is ignored: per-route matching (every request takes the
//! default route), retry and timeout policies, the cluster's `lb_policy` (the balancer's own
//! policy applies), outlier detection, TLS and security settings, drop overloads, and
//! incremental (delta) xDS. The protocol is state of the world: a response is ACKed when every
//! resource in it validates, and NACKed with the reasons otherwise; each rejected resource keeps
//! its last good version. A listener or cluster missing from a response is deleted (the target
//! is then [gone](crate::Health::is_gone)), unless the bootstrap's server has the
//! `ignore_resource_deletion` feature. A lost stream keeps every endpoint set, shows in each
//! target's [`Health`](crate::Health), and is reopened with the project's jittered backoff.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use waypost_discovery::source::xds::{Bootstrap, XdsSource};
//!
//! // From GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG, as gRPC reads it:
//! let endpoints = XdsSource::new("xds:///api.payments.svc.cluster.local:8080".parse()?)
//!     .with_bootstrap(Bootstrap::from_env()?)
//!     .spawn()?;
//! let set = endpoints.resolved().await?;
//! # Ok(()) }
//! ```

mod bootstrap;
mod client;
mod resources;

use std::fmt;

use tokio::sync::watch;

pub use bootstrap::{
    BOOTSTRAP_CONFIG_VAR, BOOTSTRAP_FILE_VAR, Bootstrap, BootstrapError, XdsServer,
};

use crate::source::SourceHandle;
use crate::{Endpoints, Publisher, XdsTarget};

/// Follows one `xds:///` target.
#[derive(Debug, Clone)]
pub struct XdsSource {
    target: XdsTarget,
    bootstrap: Option<Bootstrap>,
}

/// Why an xDS source could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XdsError {
    /// No bootstrap was given and none could be read from the environment.
    #[error("{target}: {source}")]
    Bootstrap {
        /// The target.
        target: String,
        /// What is wrong with the bootstrap.
        #[source]
        source: BootstrapError,
    },
    /// Not called from a tokio runtime.
    #[error("{0}: the xDS source must be started inside a tokio runtime")]
    NoRuntime(String),
}

impl XdsSource {
    /// A source for `target`, with the bootstrap from the environment unless
    /// [`with_bootstrap`](Self::with_bootstrap) gives one.
    pub fn new(target: XdsTarget) -> Self {
        XdsSource {
            target,
            bootstrap: None,
        }
    }

    /// Uses `bootstrap` instead of reading `GRPC_XDS_BOOTSTRAP` or `GRPC_XDS_BOOTSTRAP_CONFIG`.
    pub fn with_bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = Some(bootstrap);
        self
    }

    /// Starts following the target on the current tokio runtime. It stops when the last
    /// handle is gone.
    pub fn spawn(self) -> Result<Endpoints, XdsError> {
        self.start().map(|(endpoints, _)| endpoints)
    }

    /// As [`spawn`](Self::spawn), with a handle that stops the source on request.
    pub fn start(self) -> Result<(Endpoints, SourceHandle), XdsError> {
        let name = self.target.to_string();
        let bootstrap = match self.bootstrap {
            Some(bootstrap) => bootstrap,
            None => Bootstrap::from_env().map_err(|source| XdsError::Bootstrap {
                target: name.clone(),
                source,
            })?,
        };
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| XdsError::NoRuntime(name.clone()))?;
        let publisher = Publisher::new(name);
        let endpoints = publisher.endpoints();
        let stop = publisher.stop_signal();
        let (ended, ended_receiver) = watch::channel(());
        client::register(
            &handle,
            &bootstrap,
            client::Watch {
                listener: self.target.listener().to_owned(),
                publisher,
                ended,
            },
        );
        Ok((endpoints, SourceHandle::part(stop, ended_receiver)))
    }
}

impl fmt::Display for XdsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.target.fmt(f)
    }
}
