//! Errors of the balancer.
//!
//! [`Error`] is what a request through [`Balance`](crate::Balance) fails with: no endpoint could
//! be used before the wait deadline (with the reason: none discovered, all ejected or
//! unreachable, discovery failing), or the chosen endpoint's service failed (then the error
//! names the endpoint and keeps the service's error as its
//! [`source`](std::error::Error::source)). [`ConfigError`] names a configuration field whose
//! value cannot work.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use waypost_discovery::DiscoveryError;

/// A boxed error, as tower uses.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request failed in the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Discovery knows no endpoint that may take requests (empty set, or every weight is 0).
    NoEndpoints,
    /// Endpoints exist, but every one is ejected by outlier detection or unreachable, and panic
    /// mode is disabled.
    AllEjected,
    /// Discovery has not produced a set because its source is failing; the source's error is
    /// the [`source`](std::error::Error::source).
    Discovery,
    /// The endpoint's service failed; its error is the [`source`](std::error::Error::source).
    Endpoint,
    /// Every usable endpoint had as many requests in flight as the
    /// [`ConcurrencyLimit`](crate::ConcurrencyLimit) allows; the request was not sent.
    Overloaded,
}

/// A failed request, naming the target and, when one was chosen, the endpoint.
pub struct Error {
    kind: ErrorKind,
    target: Arc<str>,
    endpoint: Option<SocketAddr>,
    waited: Option<Duration>,
    /// The concurrency limit, for [`ErrorKind::Overloaded`].
    limit: Option<u32>,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn unavailable(
        kind: ErrorKind,
        target: Arc<str>,
        waited: Duration,
        discovery: Option<DiscoveryError>,
    ) -> Self {
        Error {
            kind,
            target,
            endpoint: None,
            waited: Some(waited),
            limit: None,
            source: discovery.map(|error| Box::new(error) as BoxError),
        }
    }

    pub(crate) fn overloaded(target: Arc<str>, limit: u32, waited: Duration) -> Self {
        Error {
            kind: ErrorKind::Overloaded,
            target,
            endpoint: None,
            waited: Some(waited),
            limit: Some(limit),
            source: None,
        }
    }

    pub(crate) fn endpoint(target: Arc<str>, endpoint: SocketAddr, source: BoxError) -> Self {
        Error {
            kind: ErrorKind::Endpoint,
            target,
            endpoint: Some(endpoint),
            waited: None,
            limit: None,
            source: Some(source),
        }
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The target the request was for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The endpoint the request was sent to, for [`ErrorKind::Endpoint`].
    pub fn endpoint_address(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// `true` when no endpoint was known.
    pub fn is_no_endpoints(&self) -> bool {
        self.kind == ErrorKind::NoEndpoints
    }

    /// `true` when every endpoint was ejected or unreachable.
    pub fn is_all_ejected(&self) -> bool {
        self.kind == ErrorKind::AllEjected
    }

    /// `true` when discovery was failing.
    pub fn is_discovery(&self) -> bool {
        self.kind == ErrorKind::Discovery
    }

    /// `true` when every usable endpoint was at its concurrency limit.
    pub fn is_overloaded(&self) -> bool {
        self.kind == ErrorKind::Overloaded
    }

    /// The per-endpoint concurrency limit every endpoint was at, for [`ErrorKind::Overloaded`].
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// `true` when the endpoint's service failed.
    pub fn is_endpoint(&self) -> bool {
        self.kind == ErrorKind::Endpoint
    }

    /// How long the request waited for a usable endpoint, for the kinds other than
    /// [`ErrorKind::Endpoint`].
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Takes the endpoint service's error out, for [`ErrorKind::Endpoint`].
    pub fn into_source(self) -> Option<BoxError> {
        self.source
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("endpoint", &self.endpoint)
            .field("waited", &self.waited)
            .field("limit", &self.limit)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waited = self
            .waited
            .map(|waited| format!(" after waiting {waited:?}"))
            .unwrap_or_default();
        match self.kind {
            ErrorKind::NoEndpoints => {
                write!(f, "no endpoints for `{}`{waited}", self.target)
            }
            ErrorKind::AllEjected => write!(
                f,
                "every endpoint of `{}` is ejected or unreachable{waited}",
                self.target
            ),
            ErrorKind::Discovery => {
                write!(f, "discovery of `{}` is failing{waited}", self.target)
            }
            ErrorKind::Endpoint => match self.endpoint {
                Some(endpoint) => {
                    write!(f, "request to {endpoint} of `{}` failed", self.target)
                }
                None => write!(f, "request to `{}` failed", self.target),
            },
            ErrorKind::Overloaded => {
                write!(f, "every endpoint of `{}` is at its limit", self.target)?;
                if let Some(limit) = self.limit {
                    write!(f, " of {limit} requests in flight")?;
                }
                write!(f, "{waited}; the request was not sent")
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// A configuration value that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid balancer configuration `{field}`: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: &'static str) -> Self {
        ConfigError { field, reason }
    }

    /// The field, such as `outlier_detection.max_ejection_percent`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with its value.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_error_names_the_limit() {
        let error = Error::overloaded(Arc::from("dns:///api:80"), 8, Duration::ZERO);
        assert!(error.is_overloaded());
        assert_eq!(error.limit(), Some(8));
        assert_eq!(
            error.to_string(),
            "every endpoint of `dns:///api:80` is at its limit of 8 requests in flight \
             after waiting 0ns; the request was not sent"
        );
    }

    #[test]
    fn messages_name_target_and_endpoint() {
        let error = Error::unavailable(
            ErrorKind::NoEndpoints,
            Arc::from("dns:///api:80"),
            Duration::from_secs(2),
            None,
        );
        assert_eq!(
            error.to_string(),
            "no endpoints for `dns:///api:80` after waiting 2s"
        );
        let error = Error::endpoint(
            Arc::from("dns:///api:80"),
            "127.0.0.1:80".parse().unwrap(),
            "connection refused".into(),
        );
        assert_eq!(
            error.to_string(),
            "request to 127.0.0.1:80 of `dns:///api:80` failed"
        );
        assert_eq!(error.source().unwrap().to_string(), "connection refused");
    }
}
