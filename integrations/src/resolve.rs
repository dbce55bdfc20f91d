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
        Target::Kubernetes(_) => {
            let _ = options;
            Err(Error::new(
                ErrorKind::FeatureDisabled,
                "`kubernetes:///` targets need the `kubernetes` feature of waypost",
            )
            .with_target(name))
        }
    }
}
