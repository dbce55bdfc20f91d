//! Why a DNS source could not be started.
//!
//! Only configuration problems stop a source from starting: a missing tokio runtime, a system
//! resolver configuration that cannot be read, no nameserver to ask, a search domain that is not
//! a DNS name. Everything that goes wrong later (timeouts, SERVFAIL, NXDOMAIN) is reported
//! through the handle's [`Health`](crate::Health) as a [`DiscoveryError`](crate::DiscoveryError)
//! while the source keeps retrying.

use std::error::Error as StdError;

/// A DNS source that cannot be started, with the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsSourceError {
    /// [`DnsSource::spawn`](super::DnsSource::spawn) was called outside a tokio runtime.
    #[error("the DNS source of `{target}` needs a tokio runtime: spawn it from within one")]
    NoRuntime {
        /// The target, as written in logs.
        target: String,
    },
    /// The system resolver configuration (resolv.conf) could not be read, and no nameserver
    /// was given.
    #[error(
        "the DNS source of `{target}` cannot read the system resolver configuration; give a nameserver or fix resolv.conf"
    )]
    SystemConfig {
        /// The target, as written in logs.
        target: String,
        /// What the resolver library reported.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Neither the target, the options nor the system configuration names a nameserver.
    #[error("the DNS source of `{target}` has no nameserver to ask")]
    NoNameserver {
        /// The target, as written in logs.
        target: String,
    },
    /// A name (the target's, or a search domain) that the resolver library does not accept.
    #[error("the DNS source of `{target}`: `{name}` is not a valid DNS name")]
    InvalidName {
        /// The target, as written in logs.
        target: String,
        /// The name that was rejected.
        name: String,
        /// What the resolver library reported.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The resolver could not be built.
    #[error("the DNS source of `{target}` cannot build its resolver")]
    Resolver {
        /// The target, as written in logs.
        target: String,
        /// What the resolver library reported.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl DnsSourceError {
    /// The target the source was for.
    pub fn target(&self) -> &str {
        match self {
            DnsSourceError::NoRuntime { target }
            | DnsSourceError::SystemConfig { target, .. }
            | DnsSourceError::NoNameserver { target }
            | DnsSourceError::InvalidName { target, .. }
            | DnsSourceError::Resolver { target, .. } => target,
        }
    }
}
