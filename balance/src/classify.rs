//! Deciding whether a response counts as a success or a failure for health and load.
//!
//! The balancer learns from every response: failures feed outlier detection and raise an
//! endpoint's Peak EWMA cost (a backend that fails fast must not look fast), and requests that
//! never reached the endpoint mark its connection down. A [`Classify`] says which is which.
//!
//! - [`ErrorIsFailure`] (the default): `Ok` is a success, `Err` a failure.
//! - [`HttpStatus`]: for `http::Response`: 429 and 503, and gRPC's `RESOURCE_EXHAUSTED` and
//!   `UNAVAILABLE` in a `grpc-status` header (trailers-only responses), say the endpoint is
//!   overloaded ([`Outcome::Overloaded`], with the server's `Retry-After` or
//!   `grpc-retry-pushback-ms`); other 5xx, and gRPC's `INTERNAL` and `DEADLINE_EXCEEDED`, are
//!   failures; everything else is a success.
//!
//! Implement [`Classify`] to recognise connection errors of your transport as
//! [`Outcome::Unreachable`].

use std::time::{Duration, SystemTime};

/// What a completed request says about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The endpoint answered as it should.
    Success,
    /// The endpoint failed the request.
    Failure,
    /// The endpoint refused work because it is overloaded (HTTP 429 or 503, gRPC
    /// `RESOURCE_EXHAUSTED` or a trailers-only `UNAVAILABLE`). It counts as a failure, and
    /// picks pass the endpoint over while another one is usable, for `retry_after` when the
    /// server said how long (see [`LoadFeedback`](crate::LoadFeedback)).
    Overloaded {
        /// How long the server asked clients to stay away, when it said.
        retry_after: Option<Duration>,
    },
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

/// gRPC status codes that say the server is overloaded: `UNAVAILABLE`, `RESOURCE_EXHAUSTED`.
const GRPC_OVERLOADED: [&[u8]; 2] = [b"14", b"8"];

/// gRPC status codes that say the server is unwell rather than the request wrong: `INTERNAL`,
/// `DEADLINE_EXCEEDED`.
const GRPC_FAILURES: [&[u8]; 2] = [b"13", b"4"];

impl<B, Error> Classify<http::Response<B>, Error> for HttpStatus {
    fn classify_response(&self, response: &http::Response<B>) -> Outcome {
        let status = response.status();
        let headers = response.headers();
        let overloaded = || Outcome::Overloaded {
            retry_after: match pushback(headers) {
                Some(Pushback::After(after)) => Some(after),
                _ => None,
            },
        };
        if status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::SERVICE_UNAVAILABLE
        {
            return overloaded();
        }
        if status.is_server_error() {
            return Outcome::Failure;
        }
        match headers.get("grpc-status").map(http::HeaderValue::as_bytes) {
            Some(code) if GRPC_OVERLOADED.contains(&code) => overloaded(),
            Some(code) if GRPC_FAILURES.contains(&code) => Outcome::Failure,
            _ => Outcome::Success,
        }
    }

    fn classify_error(&self, _: &Error) -> Outcome {
        Outcome::Failure
    }
}

/// What a server asked of the client's next attempt at a request it refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pushback {
    /// Try again no sooner than this.
    After(Duration),
    /// Do not try again: a `grpc-retry-pushback-ms` that is negative or not a number (gRFC A6).
    Never,
}

/// The pushback in a response's headers: gRPC's `grpc-retry-pushback-ms` (milliseconds; a
/// negative or malformed value means [`Pushback::Never`], as gRFC A6 says), else HTTP's
/// `Retry-After` (seconds, or an HTTP date: the time until it, zero when it has passed). `None`
/// when neither header is there, or `Retry-After` cannot be read (it is then ignored, as RFC 9110
/// lets a client do).
pub fn pushback(headers: &http::HeaderMap) -> Option<Pushback> {
    if let Some(value) = headers.get("grpc-retry-pushback-ms") {
        return Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map_or(Pushback::Never, |ms| {
                    Pushback::After(Duration::from_millis(ms))
                }),
        );
    }
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Pushback::After(Duration::from_secs(seconds)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(Pushback::After(
        date.duration_since(SystemTime::now()).unwrap_or_default(),
    ))
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
        let overloaded = Outcome::Overloaded { retry_after: None };
        assert_eq!(classify(&response(429, None)), overloaded);
        assert_eq!(classify(&response(503, None)), overloaded);
        assert_eq!(classify(&response(500, None)), Outcome::Failure);
        assert_eq!(classify(&response(502, None)), Outcome::Failure);
        assert_eq!(classify(&response(200, Some("14"))), overloaded);
        assert_eq!(classify(&response(200, Some("8"))), overloaded);
        assert_eq!(classify(&response(200, Some("13"))), Outcome::Failure);
        assert_eq!(classify(&response(200, Some("4"))), Outcome::Failure);
        assert_eq!(classify(&response(200, Some("5"))), Outcome::Success);
        assert_eq!(classify(&response(200, Some("0"))), Outcome::Success);
        assert_eq!(
            Classify::<http::Response<()>, ()>::classify_error(&c, &()),
            Outcome::Failure
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn overloaded_answers_carry_the_pushback() {
        let mut answer = response(503, None);
        answer
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("7"));
        assert_eq!(
            Classify::<_, ()>::classify_response(&HttpStatus, &answer),
            Outcome::Overloaded {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let mut answer = response(200, Some("8"));
        answer.headers_mut().insert(
            "grpc-retry-pushback-ms",
            http::HeaderValue::from_static("250"),
        );
        assert_eq!(
            Classify::<_, ()>::classify_response(&HttpStatus, &answer),
            Outcome::Overloaded {
                retry_after: Some(Duration::from_millis(250))
            }
        );
        // A pushback that says "never" gives the balancer no duration.
        let mut answer = response(200, Some("14"));
        answer.headers_mut().insert(
            "grpc-retry-pushback-ms",
            http::HeaderValue::from_static("-1"),
        );
        assert_eq!(
            Classify::<_, ()>::classify_response(&HttpStatus, &answer),
            Outcome::Overloaded { retry_after: None }
        );
    }

    #[test]
    fn pushback_headers() {
        assert_eq!(pushback(&headers(&[])), None);
        assert_eq!(
            pushback(&headers(&[("grpc-retry-pushback-ms", "1500")])),
            Some(Pushback::After(Duration::from_millis(1500)))
        );
        for never in ["-5", "soon", "1.5", ""] {
            assert_eq!(
                pushback(&headers(&[("grpc-retry-pushback-ms", never)])),
                Some(Pushback::Never),
                "{never:?}"
            );
        }
        // gRPC's header wins over HTTP's.
        assert_eq!(
            pushback(&headers(&[
                ("grpc-retry-pushback-ms", "10"),
                ("retry-after", "3")
            ])),
            Some(Pushback::After(Duration::from_millis(10)))
        );
        assert_eq!(
            pushback(&headers(&[("retry-after", " 120 ")])),
            Some(Pushback::After(Duration::from_secs(120)))
        );
        // A date: the time until it, nothing once it has passed.
        let later = SystemTime::now() + Duration::from_secs(3600);
        let Some(Pushback::After(until)) = pushback(&headers(&[(
            "retry-after",
            &httpdate::fmt_http_date(later),
        )])) else {
            panic!("a date in the future is a pushback");
        };
        assert!(until > Duration::from_secs(3500) && until <= Duration::from_secs(3600));
        assert_eq!(
            pushback(&headers(&[(
                "retry-after",
                "Sun, 06 Nov 1994 08:49:37 GMT"
            )])),
            Some(Pushback::After(Duration::ZERO))
        );
        // Unreadable values are ignored.
        for junk in ["-3", "tomorrow", "1e3"] {
            assert_eq!(
                pushback(&headers(&[("retry-after", junk)])),
                None,
                "{junk:?}"
            );
        }
    }
}
