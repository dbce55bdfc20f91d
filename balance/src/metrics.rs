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
//!
//! The `target` label is [`target_label`]: the target string, except that a `static:///` list
//! of several addresses is named by its first address and how many follow, so the label stays
//! short however long the list.

use std::borrow::Cow;

/// The longest `target` label; longer targets are cut (at a character boundary).
pub const MAX_TARGET_LABEL: usize = 128;

/// The `target` label of a target string: `static:///10.0.0.1:80,10.0.0.2:80,10.0.0.3:80`
/// becomes `static:///10.0.0.1:80+2`; other targets keep their text, cut to
/// [`MAX_TARGET_LABEL`] bytes.
pub fn target_label(target: &str) -> Cow<'_, str> {
    let label: Cow<'_, str> = match target.strip_prefix("static:///") {
        Some(list) if list.contains(',') => {
            let mut addresses = list.split(',');
            let first = addresses.next().unwrap_or_default();
            Cow::Owned(format!("static:///{first}+{}", addresses.count()))
        }
        _ => Cow::Borrowed(target),
    };
    if label.len() <= MAX_TARGET_LABEL {
        return label;
    }
    let mut end = MAX_TARGET_LABEL;
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(label[..end].to_owned())
}

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
                ("target", super::target_label(target).into_owned()),
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
        let labels = [("target", super::target_label(target).into_owned())];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_labels_stay_short() {
        assert_eq!(
            target_label("dns:///api.prod.svc.cluster.local:80"),
            "dns:///api.prod.svc.cluster.local:80"
        );
        assert_eq!(
            target_label("static:///10.0.0.1:80"),
            "static:///10.0.0.1:80"
        );
        let list: Vec<String> = (1..=200).map(|i| format!("10.0.{i}.1:8080")).collect();
        let target = format!("static:///{}", list.join(","));
        assert_eq!(target_label(&target), "static:///10.0.1.1:8080+199");
        let long = format!("dns:///{}.example:80", "é".repeat(100));
        let label = target_label(&long);
        assert!(label.len() <= MAX_TARGET_LABEL && long.starts_with(label.as_ref()));
    }
}
