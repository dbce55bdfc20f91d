//! What an endpoint service fails with, shared by the gRPC channel's and the HTTP client's
//! endpoints: the request back when it was never sent, so that it can go elsewhere without a
//! copy.

use std::fmt;
use std::sync::Mutex;

use crate::error::Error;

/// What an endpoint service fails with: the request back when it was never sent, or the
/// failure.
pub(crate) enum EndpointError<Request> {
    /// The request was not written to any connection; it can go elsewhere.
    Unsent {
        request: Mutex<Option<Request>>,
        error: Error,
    },
    /// The server refused the request before processing it (a stream above its GOAWAY's last
    /// stream id, or reset with `REFUSED_STREAM`); the request itself was consumed, so only the
    /// caller's copy can go elsewhere.
    Refused(Error),
    /// The request failed after it may have been processed.
    Failed(Error),
}

impl<Request> EndpointError<Request> {
    pub(crate) fn unsent(request: Request, error: Error) -> Self {
        EndpointError::Unsent {
            request: Mutex::new(Some(request)),
            error,
        }
    }

    /// Takes the unsent request out, when there is one.
    pub(crate) fn take_request(&self) -> Option<Request> {
        match self {
            EndpointError::Unsent { request, .. } => request
                .lock()
                .map(|mut request| request.take())
                .ok()
                .flatten(),
            EndpointError::Refused(_) | EndpointError::Failed(_) => None,
        }
    }

    pub(crate) fn into_error(self) -> Error {
        match self {
            EndpointError::Unsent { error, .. }
            | EndpointError::Refused(error)
            | EndpointError::Failed(error) => error,
        }
    }

    /// `true` when the request was not processed: never sent, or refused unprocessed.
    pub(crate) fn is_not_processed(&self) -> bool {
        !matches!(self, EndpointError::Failed(_))
    }

    fn error(&self) -> &Error {
        match self {
            EndpointError::Unsent { error, .. }
            | EndpointError::Refused(error)
            | EndpointError::Failed(error) => error,
        }
    }
}

impl<Request> fmt::Debug for EndpointError<Request> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Unsent { error, .. } => f.debug_tuple("Unsent").field(error).finish(),
            EndpointError::Refused(error) => f.debug_tuple("Refused").field(error).finish(),
            EndpointError::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
        }
    }
}

impl<Request> fmt::Display for EndpointError<Request> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.error(), f)
    }
}

impl<Request> std::error::Error for EndpointError<Request> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.error())
    }
}
