//! Active HTTP health probes of the HTTP client's endpoints, as Envoy's HTTP health checker
//! does: every `interval`, a `GET path` to each endpoint on a connection of its own, within
//! `timeout`; a 2xx answer is a pass, anything else (another status, no answer in time, no
//! connection) a failure. `unhealthy_threshold` failures in a row take the endpoint out of new
//! requests (those in flight finish; the panic threshold still applies), `healthy_threshold`
//! passes in a row bring it back. Endpoints start healthy.
//!
//! Probes are jittered: the first one comes at a random point of the first interval and each
//! later wait is the interval ±10%, so many clients started together do not probe in step. A
//! probe task ends within one interval once its endpoint left the balancer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tower::{Service, ServiceExt};
use waypost_balance::ConnectivityReporter;

use crate::error::{Error, ErrorKind};
use crate::hyper::HyperEndpoint;

/// The most of a probe's answer read (then dropped), so that its connection can be reused.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// An HTTP health probe for [`Builder::http_health_check`](crate::Builder::http_health_check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// The path (and query) probed, such as `/healthz`; must start with `/`.
    pub path: String,
    /// Time between probes of one endpoint (jittered by ±10%). Default 10 s.
    pub interval: Duration,
    /// How long a probe waits for the answer's head. Default 1 s.
    pub timeout: Duration,
    /// Passes in a row that bring an unhealthy endpoint back. Default 2.
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy endpoint out. Default 3.
    pub unhealthy_threshold: u32,
}

impl HttpProbe {
    /// Probes `path` with the defaults: every 10 s, 1 s timeout, out after 3 failures, back
    /// after 2 passes.
    pub fn new(path: impl Into<String>) -> Self {
        HttpProbe {
            path: path.into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    /// Checks every field; the error is a [`Config`](ErrorKind::Config) error naming it.
    pub fn validate(&self) -> Result<(), Error> {
        let field = |name: &str, why: &str| {
            Err(Error::new(
                ErrorKind::Config,
                format!("`HttpProbe::{name}` {why}"),
            ))
        };
        if !self.path.starts_with('/') || self.path.parse::<http::uri::PathAndQuery>().is_err() {
            return field(
                "path",
                &format!("must be a path starting with `/`, not {:?}", self.path),
            );
        }
        if self.interval.is_zero() {
            return field("interval", "must be longer than zero");
        }
        if self.timeout.is_zero() {
            return field("timeout", "must be longer than zero");
        }
        if self.healthy_threshold == 0 {
            return field("healthy_threshold", "must be at least 1");
        }
        if self.unhealthy_threshold == 0 {
            return field("unhealthy_threshold", "must be at least 1");
        }
        Ok(())
    }

    /// Probes the endpoint at `address` through `endpoint` (a connection pool of its own) until
    /// it leaves the balancer, reporting to `reporter`.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut endpoint: HyperEndpoint<Empty<Bytes>>,
        address: SocketAddr,
        reporter: ConnectivityReporter,
    ) {
        // Jitter is computed on at most a year: `Duration::mul_f64` panics beyond `Duration::MAX`.
        let interval = self.interval.min(Duration::from_secs(365 * 24 * 3600));
        tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
        let (mut passes, mut failures) = (0u32, 0u32);
        let mut serving = true;
        while reporter.is_attached() {
            match self.probe(&mut endpoint).await {
                Ok(()) => {
                    failures = 0;
                    passes = passes.saturating_add(1);
                    if !serving && passes >= self.healthy_threshold {
                        serving = true;
                        tracing::info!(target: "waypost::health", endpoint = %address, path = %self.path, "probe passes again: endpoint back");
                        reporter.report_serving(true);
                    }
                }
                Err(why) => {
                    passes = 0;
                    failures = failures.saturating_add(1);
                    if serving && failures >= self.unhealthy_threshold {
                        serving = false;
                        tracing::warn!(target: "waypost::health", endpoint = %address, path = %self.path, %why, failures, "probe failing: endpoint out");
                        reporter.report_serving(false);
                    }
                }
            }
            tokio::time::sleep(interval.mul_f64(0.9 + 0.2 * fastrand::f64())).await;
        }
    }

    /// One probe: `Ok` for a 2xx answer within the timeout, else why not.
    async fn probe(&self, endpoint: &mut HyperEndpoint<Empty<Bytes>>) -> Result<(), String> {
        let request = http::Request::get(self.path.as_str())
            .header(http::header::USER_AGENT, "waypost-health-probe")
            .body(Empty::new())
            .map_err(|error| error.to_string())?;
        let answer = async {
            let ready = endpoint.ready().await.map_err(|error| error.to_string())?;
            ready.call(request).await.map_err(|error| error.to_string())
        };
        let response = tokio::time::timeout(self.timeout, answer)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        let status = response.status();
        // Read the (small) answer, so that an HTTP/1 connection can carry the next probe.
        let _ = Limited::new(response.into_body(), MAX_PROBE_BODY)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_probes_name_the_field() {
        HttpProbe::new("/healthz").validate().unwrap();
        let cases = [
            (HttpProbe::new("healthz"), "path"),
            (
                HttpProbe {
                    interval: Duration::ZERO,
                    ..HttpProbe::new("/")
                },
                "interval",
            ),
            (
                HttpProbe {
                    timeout: Duration::ZERO,
                    ..HttpProbe::new("/")
                },
                "timeout",
            ),
            (
                HttpProbe {
                    healthy_threshold: 0,
                    ..HttpProbe::new("/")
                },
                "healthy_threshold",
            ),
            (
                HttpProbe {
                    unhealthy_threshold: 0,
                    ..HttpProbe::new("/")
                },
                "unhealthy_threshold",
            ),
        ];
        for (probe, field) in cases {
            let error = probe.validate().unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config);
            assert!(error.to_string().contains(field), "{error}");
        }
    }
}
