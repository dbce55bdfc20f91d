//! Errors of target parsing and of discovery sources.
//!
//! [`InvalidTarget`] says which part of a target string is wrong. [`DiscoveryError`] is what a
//! source reports when it cannot produce a set (a DNS timeout, an API server error, a closed
//! source); it names the target and keeps the underlying cause as its
//! [`source`](std::error::Error::source). It is cheap to clone, because the same error is shown
//! to every holder of an [`Endpoints`](crate::Endpoints) handle.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A target string that cannot be parsed, with the part that is wrong.
///
/// Its message echoes the target and the offending part at most [`ECHO_LIMIT`] bytes each
/// (longer ones are cut, with their length noted), so a huge input does not make a huge error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target `{}`: {reason}", echo(target))]
pub struct InvalidTarget {
    target: String,
    reason: TargetErrorReason,
}

/// The most of one input string, in bytes, that an [`InvalidTarget`] message repeats.
pub const ECHO_LIMIT: usize = 128;

/// `text`, cut to [`ECHO_LIMIT`] bytes (at a character boundary) with a note of its length.
fn echo(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= ECHO_LIMIT {
        return text.into();
    }
    let mut end = ECHO_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len()).into()
}

impl InvalidTarget {
    pub(crate) fn new(target: &str, reason: TargetErrorReason) -> Self {
        InvalidTarget {
            target: target.to_owned(),
            reason: reason.capped(),
        }
    }

    /// The whole target string as given.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// What is wrong with it. Parts of the input it quotes are cut to [`ECHO_LIMIT`] bytes.
    pub fn reason(&self) -> &TargetErrorReason {
        &self.reason
    }
}

/// Why a target string was rejected; each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetErrorReason {
    /// The string is empty.
    #[error("the target is empty")]
    Empty,
    /// There is no `scheme:` in front.
    #[error(
        "no scheme: write `dns:///host:port`, `kubernetes:///service.namespace:port`, `static:///ip:port` or `xds:///listener`"
    )]
    MissingScheme,
    /// The scheme is not one waypost resolves.
    #[error("unknown scheme `{0}`: expected `dns`, `kubernetes`, `static` or `xds`")]
    UnknownScheme(String),
    /// A character that no target may contain (whitespace, `?`, `#`, `%`, ...).
    #[error("unexpected character {character:?} in {part}")]
    InvalidCharacter {
        /// The part of the target the character is in.
        part: &'static str,
        /// The character.
        character: char,
    },
    /// An authority (`scheme://authority/...`) where none is allowed, or one that is not valid.
    #[error("invalid authority `{authority}`: {detail}")]
    InvalidAuthority {
        /// The authority as written.
        authority: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The host or service name is missing.
    #[error("missing {0}")]
    MissingName(&'static str),
    /// A DNS name that is not valid (label too long, bad character, ...).
    #[error("invalid host name `{name}`: {detail}")]
    InvalidHostName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port `{0}`: expected a number from 1 to 65535")]
    InvalidPort(String),
    /// A `dns:///` address target without a port.
    #[error(
        "missing port for `{0}`: write `dns:///{0}:PORT`, or an SRV name such as `dns:///_http._tcp.{0}`"
    )]
    MissingPort(String),
    /// An SRV name (`_service._proto.name`) with a port, which SRV records supply themselves.
    #[error("SRV name `{0}` takes no port: the SRV records give the ports")]
    PortOnSrvName(String),
    /// A Kubernetes Service name that is not a valid DNS-1035 label.
    #[error("invalid Kubernetes service name `{name}`: {detail}")]
    InvalidServiceName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// A Kubernetes namespace that is not a valid DNS-1123 label.
    #[error("invalid Kubernetes namespace `{name}`: {detail}")]
    InvalidNamespace {
        /// The namespace as written.
        name: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// A Kubernetes port name that is not a valid DNS-1123 label.
    #[error("invalid port name `{name}`: {detail}")]
    InvalidPortName {
        /// The port name as written.
        name: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The namespace is given twice (`kubernetes://ns/svc.ns:port`).
    #[error("namespace given twice: `{0}` in the authority and `{1}` in the path")]
    ConflictingNamespace(String, String),
    /// A `kubernetes:///` name with more labels than `service.namespace.svc.<cluster domain>`.
    #[error(
        "unexpected `{0}`: write `service`, `service.namespace` or `service.namespace.svc.<cluster domain>`"
    )]
    UnexpectedServiceLabels(String),
    /// A `static:///` list with no address in it.
    #[error("the static address list is empty")]
    EmptyAddressList,
    /// An entry of a `static:///` list that is not `ip:port`.
    #[error("invalid address `{0}`: expected `ip:port`, with IPv6 in brackets (`[::1]:80`)")]
    InvalidAddress(String),
    /// An SRV name with nothing after `_service._proto.` (`dns:///_grpc._tcp.`).
    #[error(
        "missing host after the SRV prefix `{0}`: write `dns:///{0}HOST`, such as `dns:///{0}api.prod.svc.cluster.local`"
    )]
    MissingSrvHost(String),
    /// An IP address that cannot be a destination: unspecified (`0.0.0.0`, `::`), broadcast
    /// (`255.255.255.255`) or multicast.
    #[error("`{address}` cannot be an endpoint: {detail}")]
    UnusableAddress {
        /// The address as written.
        address: String,
        /// Why not.
        detail: &'static str,
    },
}

impl TargetErrorReason {
    /// The same reason with every quoted part of the input cut to [`ECHO_LIMIT`] bytes.
    fn capped(self) -> Self {
        let cap = |text: String| match echo(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(cut) => cut,
        };
        use TargetErrorReason as R;
        match self {
            R::UnknownScheme(scheme) => R::UnknownScheme(cap(scheme)),
            R::InvalidAuthority { authority, detail } => R::InvalidAuthority {
                authority: cap(authority),
                detail,
            },
            R::InvalidHostName { name, detail } => R::InvalidHostName {
                name: cap(name),
                detail,
            },
            R::InvalidPort(port) => R::InvalidPort(cap(port)),
            R::MissingPort(name) => R::MissingPort(cap(name)),
            R::PortOnSrvName(name) => R::PortOnSrvName(cap(name)),
            R::InvalidServiceName { name, detail } => R::InvalidServiceName {
                name: cap(name),
                detail,
            },
            R::InvalidNamespace { name, detail } => R::InvalidNamespace {
                name: cap(name),
                detail,
            },
            R::InvalidPortName { name, detail } => R::InvalidPortName {
                name: cap(name),
                detail,
            },
            R::ConflictingNamespace(a, b) => R::ConflictingNamespace(cap(a), cap(b)),
            R::UnexpectedServiceLabels(labels) => R::UnexpectedServiceLabels(cap(labels)),
            R::InvalidAddress(address) => R::InvalidAddress(cap(address)),
            R::MissingSrvHost(prefix) => R::MissingSrvHost(cap(prefix)),
            R::UnusableAddress { address, detail } => R::UnusableAddress {
                address: cap(address),
                detail,
            },
            other @ (R::Empty
            | R::MissingScheme
            | R::InvalidCharacter { .. }
            | R::MissingName(_)
            | R::EmptyAddressList) => other,
        }
    }
}

/// What kind of failure a [`DiscoveryError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiscoveryErrorKind {
    /// The name could not be resolved now (timeout, SERVFAIL, refused, unreachable server).
    Resolve,
    /// The name or Service does not exist, or has no endpoints, and that was confirmed.
    NotFound,
    /// The Kubernetes API server refused or failed a request.
    Api,
    /// An answer could not be used (a malformed record or object).
    InvalidData,
    /// The source stopped; no further updates will come.
    Closed,
    /// Anything else.
    Other,
}

impl fmt::Display for DiscoveryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiscoveryErrorKind::Resolve => "resolution failed",
            DiscoveryErrorKind::NotFound => "not found",
            DiscoveryErrorKind::Api => "API request failed",
            DiscoveryErrorKind::InvalidData => "invalid data",
            DiscoveryErrorKind::Closed => "source closed",
            DiscoveryErrorKind::Other => "failed",
        })
    }
}

/// A failure of a discovery source, naming the target.
///
/// Opaque: inspect it with [`kind`](Self::kind) and the `is_*` predicates, read the cause through
/// [`source`](std::error::Error::source). Cloning shares the cause.
#[derive(Clone)]
pub struct DiscoveryError {
    inner: Arc<Inner>,
}

struct Inner {
    target: Arc<str>,
    kind: DiscoveryErrorKind,
    detail: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl DiscoveryError {
    /// A new error for `target` with a human-readable `detail`.
    pub fn new(
        target: impl Into<Arc<str>>,
        kind: DiscoveryErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        DiscoveryError {
            inner: Arc::new(Inner {
                target: target.into(),
                kind,
                detail: detail.into(),
                source: None,
            }),
        }
    }

    /// A new error for `target` with a human-readable `detail` and the underlying cause.
    pub fn with_source(
        target: impl Into<Arc<str>>,
        kind: DiscoveryErrorKind,
        detail: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        DiscoveryError {
            inner: Arc::new(Inner {
                target: target.into(),
                kind,
                detail: detail.into(),
                source: Some(source.into()),
            }),
        }
    }

    pub(crate) fn closed(target: &Arc<str>) -> Self {
        DiscoveryError::new(
            Arc::clone(target),
            DiscoveryErrorKind::Closed,
            "the discovery source stopped",
        )
    }

    /// The target whose discovery failed.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The kind of failure.
    pub fn kind(&self) -> DiscoveryErrorKind {
        self.inner.kind
    }

    /// What went wrong, in words, without the cause.
    pub fn detail(&self) -> &str {
        &self.inner.detail
    }

    /// `true` for a failure to resolve right now (timeouts, SERVFAIL, unreachable servers).
    pub fn is_resolve(&self) -> bool {
        self.inner.kind == DiscoveryErrorKind::Resolve
    }

    /// `true` when the name or Service was confirmed not to exist or to have no endpoints.
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == DiscoveryErrorKind::NotFound
    }

    /// `true` for a Kubernetes API failure.
    pub fn is_api(&self) -> bool {
        self.inner.kind == DiscoveryErrorKind::Api
    }

    /// `true` for an answer that could not be used.
    pub fn is_invalid_data(&self) -> bool {
        self.inner.kind == DiscoveryErrorKind::InvalidData
    }

    /// `true` when the source stopped.
    pub fn is_closed(&self) -> bool {
        self.inner.kind == DiscoveryErrorKind::Closed
    }
}

impl fmt::Debug for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryError")
            .field("target", &self.inner.target)
            .field("kind", &self.inner.kind)
            .field("detail", &self.inner.detail)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "discovery of `{}`: {}: {}",
            self.inner.target, self.inner.kind, self.inner.detail
        )
    }
}

impl StdError for DiscoveryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_error_names_target_and_keeps_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let error = DiscoveryError::with_source(
            "dns:///api:80",
            DiscoveryErrorKind::Resolve,
            "no answer from 127.0.0.1:53",
            cause,
        );
        assert!(error.is_resolve());
        assert_eq!(
            error.to_string(),
            "discovery of `dns:///api:80`: resolution failed: no answer from 127.0.0.1:53"
        );
        assert_eq!(error.source().unwrap().to_string(), "timed out");
        let clone = error.clone();
        assert_eq!(clone.target(), "dns:///api:80");
    }
}
