//! Sending a request again on another endpoint when it never reached the first one.
//!
//! A request that found no connection, or a connection that closed before the request was
//! written (a GOAWAY from a draining server, a refused reconnect), comes back from the endpoint
//! service unsent. It cannot have been processed, so it goes through the balancer again; the
//! endpoint it failed on is already marked unreachable and the next pick avoids it.

use tower::{Service, ServiceExt};

use crate::error::{Error, ErrorKind};
use crate::h2::EndpointError;

/// Sends `request` through `balance`, again while it comes back unsent or refused by the server
/// before processing, at most `attempts` times in all. A refused request was consumed on its way;
/// `replay` makes its copy, when it can.
pub(crate) async fn send<S, Request, Response>(
    mut balance: S,
    mut request: Request,
    attempts: usize,
    mut replay: impl FnMut() -> Option<Request>,
) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = waypost_balance::Error>,
    Request: Send + 'static,
{
    let mut attempt = 1;
    loop {
        let result = match balance.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(error) => return Err(Error::from_balance(error)),
        };
        let error = match result {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        if !error.is_endpoint() {
            return Err(Error::from_balance(error));
        }
        let target = error.target().to_owned();
        let endpoint = error.endpoint_address();
        let Some(source) = error.into_source() else {
            return Err(Error::new(ErrorKind::Transport, "the endpoint failed").with_target(target));
        };
        match source.downcast::<EndpointError<Request>>() {
            Ok(failure) => {
                let again = if attempt < attempts {
                    failure
                        .take_request()
                        .or_else(|| failure.is_refused().then(&mut replay).flatten())
                } else {
                    None
                };
                if let Some(unsent) = again {
                    tracing::debug!(
                        target: "waypost::retry",
                        target = %target,
                        endpoint = ?endpoint,
                        attempt,
                        "request not sent or refused unprocessed; trying another endpoint"
                    );
                    request = unsent;
                    attempt += 1;
                    continue;
                }
                let mut error = failure.into_error().with_target(target);
                if let Some(endpoint) = endpoint {
                    error = error.with_endpoint(endpoint);
                }
                return Err(error);
            }
            Err(other) => {
                let mut error = Error::new(ErrorKind::Transport, "the endpoint failed")
                    .with_target(target)
                    .with_source(other);
                if let Some(endpoint) = endpoint {
                    error = error.with_endpoint(endpoint);
                }
                return Err(error);
            }
        }
    }
}
