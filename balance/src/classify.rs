//! Deciding whether a response counts as a success or a failure for health and load.
//!
//! The balancer learns from every response: failures feed outlier detection and raise an
//! endpoint's Peak EWMA cost (a backend that fails fast must not look fast), and requests that
//! never reached the endpoint mark its connection down. A [`Classify`] says which is which.
//!
//! - [`ErrorIsFailure`] (the default): `Ok` is a success, `Err` a failure.
//! - [`HttpStatus`]: for `http::Response`: 5xx and 429, and gRPC's `UNAVAILABLE`,
//!   `RESOURCE_EXHAUSTED`, `INTERNAL` and `DEADLINE_EXCEEDED` in a `grpc-status` header
//!   (trailers-only responses), are failures; everything else is a success.
//!
//! Implement [`Classify`] to recognise connection errors of your transport as
//! [`Outcome::Unreachable`].

/// What a completed request says about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The endpoint answered as it should.
    Success,
    /// The endpoint failed the request or is overloaded.
    Failure,
    /// The request never reached the endpoint (refused or reset connection): the endpoint is
    /// skipped until its reconnect backoff ends and discovery is asked to look again.
    Unreachable,
}

/// Classifies responses and errors of an endpoint service.
pub trait Classify<Response, Error>: Clone + Send + Sync + 'static {
    /// The outcome of a response.
    fn classify_response(&self, response: &Response) -> Outcome;
    /// The outcome of an error.
    fn classify_error(&self, error: &Error) -> Outcome;
}

/// Every response is a success, every error a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorIsFailure;

impl<Response, Error> Classify<Response, Error> for ErrorIsFailure {
    fn classify_response(&self, _: &Response) -> Outcome {
        Outcome::Success
    }

    fn classify_error(&self, _: &Error) -> Outcome {
        Outcome::Failure
    }
}

/// HTTP and gRPC status classification; errors are failures.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatus;

/// gRPC status codes that say the server is unwell rather than the request wrong.
const GRPC_FAILURES: [&[u8]; 4] = [b"14", b"8", b"13", b"4"];

impl<B, Error> Classify<http::Response<B>, Error> for HttpStatus {
    fn classify_response(&self, response: &http::Response<B>) -> Outcome {
        let status = response.status();
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Outcome::Failure;
        }
        match response.headers().get("grpc-status") {
            Some(code) if GRPC_FAILURES.contains(&code.as_bytes()) => Outcome::Failure,
            _ => Outcome::Success,
        }
    }

    fn classify_error(&self, _: &Error) -> Outcome {
        Outcome::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, grpc: Option<&str>) -> http::Response<()> {
        let mut builder = http::Response::builder().status(status);
        if let Some(code) = grpc {
            builder = builder.header("grpc-status", code);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http_statuses() {
        let c = HttpStatus;
        let classify = |r: &http::Response<()>| Classify::<_, ()>::classify_response(&c, r);
        assert_eq!(classify(&response(200, None)), Outcome::Success);
        assert_eq!(classify(&response(404, None)), Outcome::Success);
        assert_eq!(classify(&response(429, None)), Outcome::Failure);
        assert_eq!(classify(&response(503, None)), Outcome::Failure);
        assert_eq!(classify(&response(200, Some("14"))), Outcome::Failure);
        assert_eq!(classify(&response(200, Some("5"))), Outcome::Success);
        assert_eq!(
            Classify::<http::Response<()>, ()>::classify_error(&c, &()),
            Outcome::Failure
        );
    }
}
