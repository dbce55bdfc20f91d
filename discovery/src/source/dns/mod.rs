//! The DNS source: `dns:///host:port` and `dns:///_port._proto.host` targets as a live
//! [`Endpoints`] handle (feature `dns`).
//!
//! # What it does
//!
//! A [`DnsSource`] spawns one tokio task per target. The task asks DNS, publishes what it
//! learns, and asks again when the answer's TTL runs out, so the endpoint set follows a
//! headless Service as pods come and go, without any request having to fail first (gRPC's own
//! DNS resolver only looks again after a connection fails, so scaled-up pods get no traffic).
//! The targets of one runtime with the same resolver settings (nameservers, search domains,
//! `ndots`, timeout, tries) share one hickory resolver: its connections, cache and hosts file
//! are paid once per process, not once per target.
//!
//! - **Address targets** (`dns:///api.prod.svc.cluster.local:8080`) ask for A and AAAA records;
//!   every address becomes an endpoint with the target's port. A headless Service answers one
//!   record per ready pod. CNAMEs are followed, so an ExternalName Service works.
//! - **SRV targets** (`dns:///_grpc._tcp.api.prod.svc.cluster.local`) ask for SRV records
//!   (Kubernetes publishes `_port._proto.service.namespace.svc.<zone>` for named ports). The
//!   lowest priority group with an address is used, SRV weights become endpoint weights, and
//!   the record's target becomes the endpoint's hostname; the details are in `srv.rs`.
//! - **IP literals** (`dns:///10.0.0.1:80`, `dns:///[::1]:80`) are published at once and
//!   never reach a resolver (hickory does not short-circuit them when `ndots` is above 4, as it
//!   is in every Kubernetes pod).
//!
//! # When it looks again
//!
//! After an answer, when its TTL runs out, clamped to a floor and a ceiling (1 s and 30 s by
//! default; CoreDNS answers with 5 s, kubeadm's setup with 30 s) and stretched by up to 10% so a
//! fleet of clients does not query in lockstep. Earlier when a reader calls
//! [`Endpoints::request_refresh`] (the balancer does on connection failures), at most once per
//! 2 s by default; requests in between collapse into one.
//!
//! # What a failure does
//!
//! Nothing to the set. A timeout, SERVFAIL, REFUSED or an unreachable nameserver keeps the last
//! good set, shows in the handle's [`Health`](crate::Health) as a
//! [`DiscoveryError`](crate::DiscoveryError) naming the target and the cause, and is retried
//! with exponential backoff (1 s doubling to 30 s, jittered). A lookup that gets no answer fails
//! after the query timeout times the tries (`DnsOptions::query_attempts`): about 10 s with the
//! defaults (5 s, 2 tries). A negative answer (NXDOMAIN, or no record of the asked type) empties
//! the set only when it is confirmed by several answers in a row (2 by default), never on the
//! first: a DNS server restarting with an empty zone must not take every endpoint away. The
//! confirmed empty set is published as gone ([`Health::is_gone`](crate::Health::is_gone)), with
//! an error that says the service is gone. If the very first lookup fails,
//! [`Endpoints::resolved`] returns that error at once, so a client that waits for its first set
//! learns why there is none.
//!
//! [`DnsSource::start`] also returns a [`SourceHandle`] that stops the task on request.
//!
//! # Resolver configuration
//!
//! By default the system's: resolv.conf nameservers, search domains and `ndots`, through
//! hickory-resolver. [`DnsOptions`] replaces the nameservers (`IP:port`, also possible in the
//! target: `dns://10.96.0.10:53/api:8080`), the search domains, `ndots`, the query timeout and
//! attempts, or skips the system configuration altogether. A short name (`api:8080`) is tried
//! with each search domain; in a pod (`ndots:5`) so is a four-dot name, and a name with a
//! trailing dot is asked as is, in one query. The source walks the search list itself, as
//! glibc's `res_search` does: the first name with an answer gives both address families,
//! NXDOMAIN or NODATA moves on to the next name, a SERVFAIL moves on too, and a timeout or a
//! refusal stops the search domains but not the name as given; a walk in which a name failed
//! and none answered is a failure (not an absence). So a search domain that fails (CoreDNS
//! before its kubernetes plugin has synced) keeps the last good set instead of counting as the
//! NXDOMAIN of the bare name. Only records of the asked name, and of the names its CNAMEs lead
//! to, are taken from an answer.
//!
//! # ClusterIP Services balance nothing
//!
//! A `dns:///` name of a **ClusterIP** Service resolves to one virtual IP. Client-side balancing
//! then has a single endpoint: kube-proxy spreads *connections* over the pods, and one HTTP/2
//! connection carries every request to one pod. Use a **headless** Service (`clusterIP: None`),
//! whose name resolves to every ready pod, or a `kubernetes:///` target. The source warns once
//! when a `service.namespace.svc.<zone>` name keeps answering a single address.
//!
//! # Observability
//!
//! `tracing` events under the `waypost::discovery` targets: every set change with its revision
//! and added, removed and changed counts (debug), the first failure of a run (warn), a confirmed
//! negative answer emptying the set (warn), recovery (info), and each answer with its TTL and
//! the wait before the next lookup (trace).
//!
//! # Example
//!
//! ```
//! use waypost_discovery::DnsTarget;
//! use waypost_discovery::source::dns::DnsSource;
//!
//! // An IP literal needs no resolver and no runtime.
//! let target: DnsTarget = "dns:///127.0.0.1:8080".parse().unwrap();
//! let endpoints = DnsSource::new(target).spawn().unwrap();
//! assert_eq!(endpoints.load().len(), 1);
//! ```
//!
//! A headless Service, from inside a tokio runtime:
//!
//! ```no_run
//! use std::time::Duration;
//! use waypost_discovery::DnsTarget;
//! use waypost_discovery::source::dns::{DnsOptions, DnsSource};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let target: DnsTarget = "dns:///api.prod.svc.cluster.local.:8080".parse()?;
//! let endpoints = DnsSource::new(target)
//!     .with_options(DnsOptions::default().refresh_bounds(Duration::from_secs(1), Duration::from_secs(10)))
//!     .spawn()?;
//! let first = endpoints.resolved().await?;
//! println!("{} endpoints", first.len());
//! # Ok(())
//! # }
//! ```

mod error;
mod options;
mod resolve;
mod schedule;
mod srv;

use std::sync::Arc;

pub use error::DnsSourceError;
pub use options::{
    DEFAULT_EARLY_REFRESH_INTERVAL, DEFAULT_EMPTY_CONFIRMATIONS, DEFAULT_JITTER,
    DEFAULT_REFRESH_CEILING, DEFAULT_REFRESH_FLOOR, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    DnsOptions, IpFamilies,
};

use super::SourceHandle;
use crate::endpoints::{Endpoints, Publisher};
use crate::target::DnsTarget;

/// A DNS discovery source for one `dns:` target; [`spawn`](Self::spawn) starts it.
///
/// The source runs until every [`Endpoints`] handle (and watcher) it returned is dropped.
#[derive(Debug, Clone)]
pub struct DnsSource {
    target: DnsTarget,
    options: DnsOptions,
}

impl DnsSource {
    /// A source for `target` with the default [`DnsOptions`].
    pub fn new(target: DnsTarget) -> Self {
        DnsSource {
            target,
            options: DnsOptions::default(),
        }
    }

    /// Replaces the options.
    #[must_use]
    pub fn with_options(mut self, options: DnsOptions) -> Self {
        self.options = options;
        self
    }

    /// The target.
    pub fn target(&self) -> &DnsTarget {
        &self.target
    }

    /// The options.
    pub fn options(&self) -> &DnsOptions {
        &self.options
    }

    /// Starts the source and returns its handle.
    ///
    /// An IP literal target is published at once (revision 1) and needs no runtime; the handle
    /// is then closed, as for a static target. Any other target spawns a task on the current
    /// tokio runtime that looks the name up right away; wait for the first answer with
    /// [`Endpoints::resolved`].
    ///
    /// # Errors
    ///
    /// [`DnsSourceError`] when there is no tokio runtime, the system resolver configuration
    /// cannot be read (and no nameserver was given), there is no nameserver, or a name is not
    /// valid. Lookup failures are not errors here: they show in the handle's health.
    pub fn spawn(self) -> Result<Endpoints, DnsSourceError> {
        self.start().map(|(endpoints, _)| endpoints)
    }

    /// Like [`spawn`](Self::spawn), and also returns a [`SourceHandle`] whose
    /// [`shutdown`](SourceHandle::shutdown) stops the task and waits for it. Without it the
    /// task runs while any handle or watcher exists; dropping the `SourceHandle` changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    pub fn start(self) -> Result<(Endpoints, SourceHandle), DnsSourceError> {
        let target_name: Arc<str> = Arc::from(self.target.to_string());
        if let Some(address) = self.target.socket_addr() {
            return Ok((
                super::from_addresses(target_name, [address]),
                SourceHandle::finished(),
            ));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DnsSourceError::NoRuntime {
                target: target_name.to_string(),
            })?;
        let lookup =
            resolve::HickoryLookup::new(&self.target, &self.options, Arc::clone(&target_name))?;
        let publisher = Publisher::new(target_name);
        let endpoints = publisher.endpoints();
        tracing::debug!(
            target: "waypost::discovery::dns",
            target = %publisher.target(),
            "DNS source started"
        );
        let schedule = schedule::Schedule::from_options(&self.options);
        let stop = publisher.stop_signal();
        let task = runtime.spawn(schedule::run(
            publisher,
            lookup,
            schedule,
            schedule.backoff(None),
        ));
        Ok((endpoints, SourceHandle::new(stop, task)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_are_published_without_a_runtime() {
        let target: DnsTarget = "dns:///[::1]:8080".parse().unwrap();
        let endpoints = DnsSource::new(target).spawn().unwrap();
        let set = endpoints.load();
        assert_eq!(set.revision(), 1);
        assert_eq!(set[0].address(), "[::1]:8080".parse().unwrap());
        assert!(endpoints.is_closed());
        assert_eq!(endpoints.target(), "dns:///[::1]:8080");
    }

    #[test]
    fn names_need_a_runtime() {
        let target: DnsTarget = "dns:///api.test:8080".parse().unwrap();
        let error = DnsSource::new(target)
            .with_options(
                DnsOptions::default()
                    .without_system_config()
                    .nameserver("127.0.0.1:53".parse().unwrap()),
            )
            .spawn()
            .unwrap_err();
        assert!(matches!(error, DnsSourceError::NoRuntime { .. }));
        assert_eq!(error.target(), "dns:///api.test:8080");
    }

    #[tokio::test]
    async fn a_nameserver_is_required() {
        let target: DnsTarget = "dns:///api.test:8080".parse().unwrap();
        let error = DnsSource::new(target)
            .with_options(DnsOptions::default().without_system_config())
            .spawn()
            .unwrap_err();
        assert!(matches!(error, DnsSourceError::NoNameserver { .. }));
    }

    #[tokio::test]
    async fn invalid_search_domains_are_reported() {
        let target: DnsTarget = "dns:///api:8080".parse().unwrap();
        let error = DnsSource::new(target)
            .with_options(
                DnsOptions::default()
                    .without_system_config()
                    .nameserver("127.0.0.1:53".parse().unwrap())
                    .search_domains(["bad..domain"]),
            )
            .spawn()
            .unwrap_err();
        let DnsSourceError::InvalidName { name, .. } = &error else {
            panic!("expected an invalid name, got {error:?}");
        };
        assert_eq!(name, "bad..domain");
    }

    #[tokio::test]
    async fn the_target_nameserver_is_enough_without_system_config() {
        let target: DnsTarget = "dns://127.0.0.1:1/api.test:8080".parse().unwrap();
        let endpoints = DnsSource::new(target)
            .with_options(DnsOptions::default().without_system_config())
            .spawn()
            .unwrap();
        assert_eq!(endpoints.target(), "dns://127.0.0.1:1/api.test:8080");
    }
}
