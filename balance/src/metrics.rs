//! Counters, gauges and a latency histogram through the `metrics` facade (feature `metrics`).
//!
//! Per endpoint (labels `target`, `endpoint`):
//!
//! | name | kind | extra label | meaning |
//! |------|------|-------------|---------|
//! | `waypost_picks_total` | counter | | requests sent to the endpoint |
//! | `waypost_in_flight` | gauge | | requests in flight on the endpoint |
//! | `waypost_responses_total` | counter | `outcome` | requests ended, by [`Outcome`](crate::Outcome): `success`, `failure`, `overloaded`, `unreachable`, or `cancelled` (dropped before an outcome) |
//! | `waypost_request_duration_seconds` | histogram | | from the pick to the outcome (the response head, or the error) |
//! | `waypost_ejections_total` | counter | | outlier ejections |
//! | `waypost_connect_failures_total` | counter | | failed connection attempts ([`ConnectivityReporter::report_connect_failure`](crate::ConnectivityReporter::report_connect_failure)) |
//! | `waypost_health_transitions_total` | counter | `to` | active health check changes: `to="not_serving"`, `to="serving"` |
//!
//! Per target (label `target`):
//!
//! | name | kind | meaning |
//! |------|------|---------|
//! | `waypost_endpoints` | gauge | endpoints in the discovery set |
//! | `waypost_endpoints_usable` | gauge | endpoints that may be picked |
//! | `waypost_panic_mode` | gauge | 1 while balancing across all endpoints in panic mode |
//! | `waypost_table_builds_total` | counter | pick tables built (set or health changes) |
//! | `waypost_retries_total` | counter | requests a client sent again after they may have been processed, or after a refusal ([`ClientMetrics::retried`]) |
//! | `waypost_unsent_resends_total` | counter | requests a client sent again because they never reached a server ([`ClientMetrics::resent_unsent`]) |
//!
//! Handles are registered when an endpoint joins and when the balancer is built, so recording
//! on the request path does not allocate. Without the feature every call here compiles to
//! nothing.
//!
//! **Series of what is gone.** The `metrics` facade cannot remove a series. What it allows:
//! every series of a live balancer is written at least once per outlier-detection
//! [`interval`](crate::OutlierDetection::interval) (10 s by default; counters by 0, gauges with
//! their value, histogram handles fetched again), and nothing writes those of an endpoint that
//! left or of a balancer whose last clone was dropped (its gauges are set to 0 first). An
//! exporter that drops series idle for longer than the interval
//! (`metrics-exporter-prometheus`'s `idle_timeout`, set to a minute, say) therefore keeps
//! every series of the live clients and drops those of the dropped ones.
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

/// Counters a client built on a balancer records for the balancer's target: its retry engine's
/// resends (see the [module docs](self) for the series). Get one with
/// [`Balance::client_metrics`](crate::Balance::client_metrics); cheap to clone. Without the
/// `metrics` feature, or [`detached`](Self::detached), it records nothing.
#[derive(Clone, Debug, Default)]
pub struct ClientMetrics {
    #[cfg(feature = "metrics")]
    inner: Option<std::sync::Arc<enabled::ClientHandles>>,
}

impl ClientMetrics {
    /// Records nothing.
    pub fn detached() -> Self {
        ClientMetrics::default()
    }

    /// A request was sent again after it may have been processed, or after the server refused
    /// it (`waypost_retries_total`).
    #[inline]
    pub fn retried(&self) {
        #[cfg(feature = "metrics")]
        if let Some(inner) = &self.inner {
            inner.retries.increment(1);
        }
    }

    /// A request was sent again because it never reached a server
    /// (`waypost_unsent_resends_total`).
    #[inline]
    pub fn resent_unsent(&self) {
        #[cfg(feature = "metrics")]
        if let Some(inner) = &self.inner {
            inner.unsent_resends.increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use metrics::{Counter, Gauge, Histogram, Label};

    use super::ClientMetrics;

    /// The `outcome` label values of `waypost_responses_total`, by index.
    const OUTCOMES: [&str; 5] = [
        "success",
        "failure",
        "overloaded",
        "unreachable",
        "cancelled",
    ];
    /// The index of a request dropped before its outcome was known.
    const CANCELLED: usize = 4;

    fn outcome_index(outcome: &crate::Outcome) -> usize {
        match outcome {
            crate::Outcome::Success => 0,
            crate::Outcome::Failure => 1,
            crate::Outcome::Overloaded { .. } => 2,
            crate::Outcome::Unreachable => 3,
        }
    }

    const DURATION: &str = "waypost_request_duration_seconds";

    /// Per-endpoint handles.
    #[derive(Debug)]
    pub(crate) struct EndpointMetrics {
        labels: Vec<Label>,
        picks: Counter,
        in_flight: Gauge,
        outcomes: [Counter; OUTCOMES.len()],
        /// Fetched again every interval: a recorder that dropped the idle series has a new
        /// one by then.
        duration: ArcSwap<Histogram>,
        ejections: Counter,
        connect_failures: Counter,
        /// To not serving, to serving.
        health: [Counter; 2],
    }

    impl EndpointMetrics {
        pub(crate) fn new(target: &str, endpoint: SocketAddr) -> Self {
            let labels = vec![
                Label::new("target", super::target_label(target).into_owned()),
                Label::new("endpoint", endpoint.to_string()),
            ];
            let with = |key: &'static str, value: &'static str| {
                let mut labels = labels.clone();
                labels.push(Label::new(key, value));
                labels
            };
            EndpointMetrics {
                picks: metrics::counter!("waypost_picks_total", labels.clone()),
                in_flight: metrics::gauge!("waypost_in_flight", labels.clone()),
                outcomes: OUTCOMES.map(|outcome| {
                    metrics::counter!("waypost_responses_total", with("outcome", outcome))
                }),
                duration: ArcSwap::from_pointee(metrics::histogram!(DURATION, labels.clone())),
                ejections: metrics::counter!("waypost_ejections_total", labels.clone()),
                connect_failures: metrics::counter!(
                    "waypost_connect_failures_total",
                    labels.clone()
                ),
                health: ["not_serving", "serving"].map(|to| {
                    metrics::counter!("waypost_health_transitions_total", with("to", to))
                }),
                labels,
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

        #[inline]
        pub(crate) fn outcome(&self, outcome: &crate::Outcome, latency: Duration) {
            self.outcomes[outcome_index(outcome)].increment(1);
            self.duration.load().record(latency.as_secs_f64());
        }

        pub(crate) fn cancelled(&self) {
            self.outcomes[CANCELLED].increment(1);
        }

        pub(crate) fn ejected(&self) {
            self.ejections.increment(1);
        }

        pub(crate) fn connect_failed(&self) {
            self.connect_failures.increment(1);
        }

        pub(crate) fn serving_changed(&self, serving: bool) {
            self.health[usize::from(serving)].increment(1);
        }

        /// Writes every series (see the module docs: a recorder that drops idle series keeps
        /// the live ones).
        pub(crate) fn refresh(&self) {
            for counter in [&self.picks, &self.ejections, &self.connect_failures]
                .into_iter()
                .chain(&self.outcomes)
                .chain(&self.health)
            {
                counter.increment(0);
            }
            self.in_flight.increment(0.0);
            self.duration
                .store(Arc::new(metrics::histogram!(DURATION, self.labels.clone())));
        }
    }

    #[derive(Debug)]
    pub(crate) struct ClientHandles {
        pub(crate) retries: Counter,
        pub(crate) unsent_resends: Counter,
    }

    /// Per-target handles.
    #[derive(Debug)]
    pub(crate) struct TargetMetrics {
        endpoints: Gauge,
        usable: Gauge,
        panic: Gauge,
        builds: Counter,
        client: Arc<ClientHandles>,
    }

    impl TargetMetrics {
        pub(crate) fn new(target: &str) -> Self {
            describe();
            let labels = vec![Label::new(
                "target",
                super::target_label(target).into_owned(),
            )];
            TargetMetrics {
                endpoints: metrics::gauge!("waypost_endpoints", labels.clone()),
                usable: metrics::gauge!("waypost_endpoints_usable", labels.clone()),
                panic: metrics::gauge!("waypost_panic_mode", labels.clone()),
                builds: metrics::counter!("waypost_table_builds_total", labels.clone()),
                client: Arc::new(ClientHandles {
                    retries: metrics::counter!("waypost_retries_total", labels.clone()),
                    unsent_resends: metrics::counter!("waypost_unsent_resends_total", labels),
                }),
            }
        }

        pub(crate) fn client(&self) -> ClientMetrics {
            ClientMetrics {
                inner: Some(Arc::clone(&self.client)),
            }
        }

        pub(crate) fn table_built(&self, endpoints: usize, usable: usize, panic: bool) {
            self.endpoints.set(endpoints as f64);
            self.usable.set(usable as f64);
            self.panic.set(if panic { 1.0 } else { 0.0 });
            self.builds.increment(1);
        }

        /// Writes every series (see the module docs).
        pub(crate) fn refresh(&self) {
            for gauge in [&self.endpoints, &self.usable, &self.panic] {
                gauge.increment(0.0);
            }
            for counter in [
                &self.builds,
                &self.client.retries,
                &self.client.unsent_resends,
            ] {
                counter.increment(0);
            }
        }

        /// The balancer's last clone is gone: its gauges say so before they go idle.
        pub(crate) fn balancer_dropped(&self) {
            for gauge in [&self.endpoints, &self.usable, &self.panic] {
                gauge.set(0.0);
            }
        }
    }

    /// Units and help texts, for recorders that show them.
    fn describe() {
        use metrics::Unit;
        metrics::describe_counter!("waypost_picks_total", "Requests sent to the endpoint");
        metrics::describe_gauge!("waypost_in_flight", "Requests in flight on the endpoint");
        metrics::describe_counter!(
            "waypost_responses_total",
            "Requests ended, by outcome (success, failure, overloaded, unreachable, cancelled)"
        );
        metrics::describe_histogram!(
            DURATION,
            Unit::Seconds,
            "Time from the pick to the request's outcome (the response head, or the error)"
        );
        metrics::describe_counter!("waypost_ejections_total", "Outlier ejections");
        metrics::describe_counter!(
            "waypost_connect_failures_total",
            "Failed connection attempts to the endpoint"
        );
        metrics::describe_counter!(
            "waypost_health_transitions_total",
            "Active health check changes, by the state changed to"
        );
        metrics::describe_gauge!("waypost_endpoints", "Endpoints in the discovery set");
        metrics::describe_gauge!("waypost_endpoints_usable", "Endpoints that may be picked");
        metrics::describe_gauge!("waypost_panic_mode", "1 while balancing in panic mode");
        metrics::describe_counter!("waypost_table_builds_total", "Pick tables built");
        metrics::describe_counter!(
            "waypost_retries_total",
            "Requests sent again after they may have been processed or were refused"
        );
        metrics::describe_counter!(
            "waypost_unsent_resends_total",
            "Requests sent again because they never reached a server"
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod enabled {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::ClientMetrics;

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

        #[inline]
        pub(crate) fn outcome(&self, _: &crate::Outcome, _: Duration) {}

        pub(crate) fn cancelled(&self) {}

        pub(crate) fn ejected(&self) {}

        pub(crate) fn connect_failed(&self) {}

        pub(crate) fn serving_changed(&self, _: bool) {}

        pub(crate) fn refresh(&self) {}
    }

    #[derive(Debug)]
    pub(crate) struct TargetMetrics;

    impl TargetMetrics {
        pub(crate) fn new(_: &str) -> Self {
            TargetMetrics
        }

        pub(crate) fn client(&self) -> ClientMetrics {
            ClientMetrics::default()
        }

        pub(crate) fn table_built(&self, _: usize, _: usize, _: bool) {}

        pub(crate) fn refresh(&self) {}

        pub(crate) fn balancer_dropped(&self) {}
    }
}

pub(crate) use enabled::{EndpointMetrics, TargetMetrics};

/// `true` when the request path times requests for the latency histogram.
pub(crate) const TIMES_REQUESTS: bool = cfg!(feature = "metrics");

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
