//! Counters and gauges through the `metrics` facade (feature `metrics`).
//!
//! | name | kind | labels | meaning |
//! |------|------|--------|---------|
//! | `waypost_picks_total` | counter | target, endpoint | requests sent to the endpoint |
//! | `waypost_in_flight` | gauge | target, endpoint | requests in flight on the endpoint |
//! | `waypost_ejections_total` | counter | target, endpoint | outlier ejections |
//! | `waypost_endpoints` | gauge | target | endpoints in the discovery set |
//! | `waypost_endpoints_usable` | gauge | target | endpoints that may be picked |
//! | `waypost_panic_mode` | gauge | target | 1 while balancing across all endpoints in panic mode |
//! | `waypost_table_builds_total` | counter | target | pick tables built (set or health changes) |
//!
//! Handles are registered when an endpoint joins, so recording on the request path does not
//! allocate. Without the feature every call here compiles to nothing.

#[cfg(feature = "metrics")]
mod enabled {
    use std::net::SocketAddr;

    /// Per-endpoint handles.
    #[derive(Debug)]
    pub(crate) struct EndpointMetrics {
        picks: metrics::Counter,
        in_flight: metrics::Gauge,
        ejections: metrics::Counter,
    }

    impl EndpointMetrics {
        pub(crate) fn new(target: &str, endpoint: SocketAddr) -> Self {
            let labels = [
                ("target", target.to_owned()),
                ("endpoint", endpoint.to_string()),
            ];
            EndpointMetrics {
                picks: metrics::counter!("waypost_picks_total", &labels),
                in_flight: metrics::gauge!("waypost_in_flight", &labels),
                ejections: metrics::counter!("waypost_ejections_total", &labels),
            }
        }

        #[inline]
        pub(crate) fn request_started(&self) {
            self.picks.increment(1);
            self.in_flight.increment(1.0);
        }

        #[inline]
        pub(crate) fn request_ended(&self) {
            self.in_flight.decrement(1.0);
        }

        pub(crate) fn ejected(&self) {
            self.ejections.increment(1);
        }
    }

    pub(crate) fn table_built(target: &str, endpoints: usize, usable: usize, panic: bool) {
        let labels = [("target", target.to_owned())];
        metrics::gauge!("waypost_endpoints", &labels).set(endpoints as f64);
        metrics::gauge!("waypost_endpoints_usable", &labels).set(usable as f64);
        metrics::gauge!("waypost_panic_mode", &labels).set(if panic { 1.0 } else { 0.0 });
        metrics::counter!("waypost_table_builds_total", &labels).increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod enabled {
    use std::net::SocketAddr;

    #[derive(Debug)]
    pub(crate) struct EndpointMetrics;

    impl EndpointMetrics {
        pub(crate) fn new(_: &str, _: SocketAddr) -> Self {
            EndpointMetrics
        }

        #[inline]
        pub(crate) fn request_started(&self) {}

        #[inline]
        pub(crate) fn request_ended(&self) {}

        pub(crate) fn ejected(&self) {}
    }

    pub(crate) fn table_built(_: &str, _: usize, _: usize, _: bool) {}
}

pub(crate) use enabled::{EndpointMetrics, table_built};
