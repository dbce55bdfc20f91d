//! From a [`Target`] to a live [`Endpoints`] handle, through the source its scheme names.

use waypost_discovery::{Endpoints, Target, source};

use crate::builder::DiscoveryOptions;
use crate::error::{Error, ErrorKind};

/// Starts the discovery source for `target`.
pub(crate) fn resolve(target: &Target, options: &DiscoveryOptions) -> Result<Endpoints, Error> {
    let name = target.to_string();
    match target {
        Target::Static(list) => Ok(source::from_static(list)),
        #[cfg(feature = "dns")]
        Target::Dns(dns) => source::dns::DnsSource::new(dns.clone())
            .with_options(options.dns.clone())
            .spawn()
            .map_err(|error| {
                Error::new(ErrorKind::DiscoveryStart, "the DNS source could not start")
                    .with_target(name)
                    .with_source(error)
            }),
        #[cfg(not(feature = "dns"))]
        Target::Dns(dns) => match dns.socket_addr() {
            // An IP literal needs no resolver.
            Some(address) => Ok(source::from_addresses(name, [address])),
            None => Err(Error::new(
                ErrorKind::FeatureDisabled,
                "`dns:///` targets need the `dns` feature of waypost",
            )
            .with_target(name)),
        },
        #[cfg(feature = "kubernetes")]
        Target::Kubernetes(k8s) => {
            use waypost_discovery::source::kubernetes::KubernetesSource;
            // The watch is a task of the runtime (and so is the client's connection pool).
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(Error::new(
                    ErrorKind::Config,
                    "`kubernetes:///` targets are watched by a task: start them inside a tokio \
                     runtime",
                )
                .with_target(name));
            }
            if let Some(watches) = &options.kube_watches {
                return Ok(watches.source(k8s.clone()).spawn());
            }
            let client = match &options.kube_client {
                Some(client) => client.clone(),
                None => in_cluster_client().map_err(|error| error.with_target(name))?,
            };
            Ok(KubernetesSource::new(client, k8s.clone()).spawn())
        }
        #[cfg(not(feature = "kubernetes"))]
        Target::Kubernetes(_) => {
            let _ = options;
            Err(Error::new(
                ErrorKind::FeatureDisabled,
                "`kubernetes:///` targets need the `kubernetes` feature of waypost",
            )
            .with_target(name))
        }
        #[cfg(feature = "xds")]
        Target::Xds(xds) => {
            let mut source = source::xds::XdsSource::new(xds.clone());
            if let Some(bootstrap) = &options.xds_bootstrap {
                source = source.with_bootstrap(bootstrap.clone());
            }
            source.spawn().map_err(|error| {
                Error::new(ErrorKind::DiscoveryStart, "the xDS source could not start")
                    .with_target(name)
                    .with_source(error)
            })
        }
        #[cfg(not(feature = "xds"))]
        Target::Xds(_) => Err(Error::new(
            ErrorKind::FeatureDisabled,
            "`xds:///` targets need the `xds` feature of waypost",
        )
        .with_target(name)),
    }
}

/// A client from the pod's service account, when running in a cluster. Outside one, the
/// kubeconfig needs an async read: the caller passes a client instead.
#[cfg(feature = "kubernetes")]
fn in_cluster_client() -> Result<waypost_discovery::source::kubernetes::kube::Client, Error> {
    use waypost_discovery::source::kubernetes::kube;
    let config = kube::Config::incluster().map_err(|error| {
        Error::new(
            ErrorKind::DiscoveryStart,
            "no Kubernetes client: not running in a cluster; pass one with \
             `Builder::kube_client(waypost::discovery::source::kubernetes::default_client().await?)`, \
             which also reads the kubeconfig",
        )
        .with_source(error)
    })?;
    kube::Client::try_from(config).map_err(|error| {
        Error::new(
            ErrorKind::DiscoveryStart,
            "the in-cluster Kubernetes client could not be built",
        )
        .with_source(error)
    })
}
