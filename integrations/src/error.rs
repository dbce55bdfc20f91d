//! The error type of the `waypost` crate.
//!
//! [`Error`] covers building a client (a bad target string, a feature that is not enabled, a
//! discovery source that cannot start, a bad configuration) and sending a request through one
//! (no endpoint before the deadline, a timeout, an endpoint that could not be reached, a
//! transport failure). It names the target and, when one was chosen, the endpoint; the cause is
//! its [`source`](std::error::Error::source).

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use waypost_balance::BoxError;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The target string cannot be parsed.
    InvalidTarget,
    /// The target needs a cargo feature of `waypost` that is not enabled.
    FeatureDisabled,
    /// A configuration value cannot work.
    Config,
    /// The discovery source could not start.
    DiscoveryStart,
    /// No endpoint was known before the wait deadline.
    NoEndpoints,
    /// Every endpoint was ejected or unreachable before the wait deadline.
    AllEjected,
    /// Discovery was failing and had no endpoints before the wait deadline.
    Discovery,
    /// Every usable endpoint was at its concurrency limit
    /// ([`Builder::concurrency_limit`](crate::Builder::concurrency_limit)); the request was not
    /// sent.
    Overloaded,
    /// The request's deadline passed (waiting for an endpoint included).
    Timeout,
    /// The request could not reach an endpoint (no connection, refused, reset before sending);
    /// it was not processed. Returned only when retrying on other endpoints did not help.
    Unreachable,
    /// The request failed on its way to or from the endpoint after it may have been processed.
    Transport,
    /// TLS setup failed (bad certificate, name mismatch).
    Tls,
}

/// An error of `waypost`, naming the target and the endpoint when known.
pub struct Error {
    kind: ErrorKind,
    target: Option<Arc<str>>,
    endpoint: Option<SocketAddr>,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            target: None,
            endpoint: None,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_target(mut self, target: impl Into<Arc<str>>) -> Self {
        self.target = Some(target.into());
        self
    }

    #[cfg_attr(not(any(feature = "tonic", feature = "hyper")), allow(dead_code))]
    pub(crate) fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The request's deadline passed; `reason` is why no endpoint could take it, when it was
    /// still waiting for one (it becomes the error's source).
    #[cfg_attr(not(any(feature = "tonic", feature = "hyper")), allow(dead_code))]
    pub(crate) fn timeout(
        target: Arc<str>,
        after: Duration,
        reason: Option<waypost_balance::Error>,
    ) -> Self {
        match reason {
            None => Error::new(ErrorKind::Timeout, format!("deadline of {after:?} passed"))
                .with_target(target),
            Some(reason) => {
                let mut reason = Error::from_balance(reason);
                // The outer error names the target; its cause need not again.
                reason.target = None;
                Error::new(
                    ErrorKind::Timeout,
                    format!("deadline of {after:?} passed while waiting for an endpoint"),
                )
                .with_target(target)
                .with_source(reason)
            }
        }
    }

    #[cfg_attr(not(any(feature = "tonic", feature = "hyper")), allow(dead_code))]
    /// Converts a balancer error, unwrapping what the endpoint service reported.
    pub(crate) fn from_balance(error: waypost_balance::Error) -> Self {
        let target: Arc<str> = Arc::from(error.target());
        let endpoint = error.endpoint_address();
        let kind = match error.kind() {
            waypost_balance::ErrorKind::NoEndpoints => ErrorKind::NoEndpoints,
            waypost_balance::ErrorKind::AllEjected => ErrorKind::AllEjected,
            waypost_balance::ErrorKind::Discovery => ErrorKind::Discovery,
            waypost_balance::ErrorKind::Overloaded => ErrorKind::Overloaded,
            _ => ErrorKind::Transport,
        };
        if kind != ErrorKind::Transport {
            // The balancer's own text names the target; this error names it in its prefix.
            let waited = error
                .waited()
                .map(|waited| format!(" after waiting {waited:?}"))
                .unwrap_or_default();
            let message = match kind {
                ErrorKind::NoEndpoints => format!("no endpoints{waited}"),
                ErrorKind::AllEjected => {
                    format!("every endpoint is ejected or unreachable{waited}")
                }
                ErrorKind::Overloaded => match error.limit() {
                    Some(limit) => format!(
                        "every endpoint is at its limit of {limit} requests in flight{waited}; \
                         not sent"
                    ),
                    None => format!("every endpoint is at its concurrency limit{waited}; not sent"),
                },
                _ => format!("discovery is failing{waited}"),
            };
            let mut converted = Error::new(kind, message).with_target(target);
            if let Some(source) = error.into_source() {
                converted.source = Some(source);
            }
            return converted;
        }
        let source = error.into_source();
        // An endpoint service of this crate reports its own errors already classified.
        match source.map(|source| source.downcast::<Error>()) {
            Some(Ok(inner)) => {
                let mut inner = *inner;
                inner.target.get_or_insert(target);
                if inner.endpoint.is_none() {
                    inner.endpoint = endpoint;
                }
                inner
            }
            Some(Err(other)) => {
                let mut converted =
                    Error::new(ErrorKind::Transport, "the endpoint failed").with_target(target);
                converted.endpoint = endpoint;
                converted.source = Some(other);
                converted
            }
            None => Error::new(ErrorKind::Transport, "the endpoint failed").with_target(target),
        }
    }

    /// The message and the causes, without the target and endpoint prefix: for messages that
    /// wrap this error.
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(crate) fn detail(&self) -> String {
        let mut text = self.message.clone();
        append_causes(&mut text, self.source());
        text
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The target, when the error concerns one.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The endpoint, when one was chosen.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// `true` for [`ErrorKind::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// `true` when no endpoint could take the request before the wait deadline
    /// ([`NoEndpoints`](ErrorKind::NoEndpoints), [`AllEjected`](ErrorKind::AllEjected),
    /// [`Discovery`](ErrorKind::Discovery) or [`Overloaded`](ErrorKind::Overloaded)).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::NoEndpoints
                | ErrorKind::AllEjected
                | ErrorKind::Discovery
                | ErrorKind::Overloaded
        )
    }

    /// `true` when the request certainly was not processed, so sending it again is safe.
    pub fn is_not_processed(&self) -> bool {
        self.is_unavailable() || self.kind == ErrorKind::Unreachable
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("endpoint", &self.endpoint)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.target, self.endpoint) {
            (Some(target), Some(endpoint)) => write!(f, "`{target}` ({endpoint}): ")?,
            (Some(target), None) => write!(f, "`{target}`: ")?,
            (None, Some(endpoint)) => write!(f, "{endpoint}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// `error: cause: cause's cause`, for messages that must carry the whole story. A cause whose
/// text the message already holds is not repeated.
#[cfg(feature = "tonic")]
pub(crate) fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    append_causes(&mut text, error.source());
    text
}

fn append_causes(text: &mut String, mut source: Option<&(dyn StdError + 'static)>) {
    while let Some(cause) = source {
        // A discovery error names the target, as the error it causes already does.
        let cause_text = match cause.downcast_ref::<waypost_discovery::DiscoveryError>() {
            Some(discovery) => format!("{}: {}", discovery.kind(), discovery.detail()),
            None => cause.to_string(),
        };
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_target_and_endpoint() {
        let error = Error::new(ErrorKind::Unreachable, "connection refused")
            .with_target("dns:///api:80")
            .with_endpoint("127.0.0.1:80".parse().unwrap());
        assert_eq!(
            error.to_string(),
            "`dns:///api:80` (127.0.0.1:80): connection refused"
        );
        assert!(error.is_not_processed());
        let timeout = Error::timeout(Arc::from("t"), Duration::from_millis(5), None);
        assert!(timeout.is_timeout() && !timeout.is_not_processed());
    }
}
