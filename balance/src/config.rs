//! Balancer configuration: the policy and the health rules, each with a documented default.
//!
//! | setting | default | meaning |
//! |---------|---------|---------|
//! | [`policy`](BalanceConfig::policy) | P2C + Peak EWMA | how an endpoint is chosen |
//! | [`outlier_detection`](BalanceConfig::outlier_detection) | 5 consecutive failures, 30 s base, 300 s max, 10% max | passive ejection of failing endpoints |
//! | [`panic_threshold_percent`](BalanceConfig::panic_threshold_percent) | 50 | below this share of healthy endpoints, use all of them |
//! | [`zone_preference`](BalanceConfig::zone_preference) | off | prefer the local zone, spill over when it lacks healthy capacity |
//! | [`slow_start`](BalanceConfig::slow_start) | off | ramp new endpoints' weight up over a window |
//! | [`wait_for_endpoints`](BalanceConfig::wait_for_endpoints) | 10 s | how long a request waits for a usable endpoint |
//! | [`reconnect_backoff`](BalanceConfig::reconnect_backoff) | 1 s doubling to 30 s | how long an unreachable endpoint is skipped |
//! | [`load_feedback`](BalanceConfig::load_feedback) | on: the server's pushback, else 1 s, at most 60 s | how long an endpoint that refused work as overloaded is passed over |
//! | [`concurrency_limit`](BalanceConfig::concurrency_limit) | off | the most requests in flight per endpoint, and what a request does when every endpoint is full |
//! | [`subsetting`](BalanceConfig::subsetting) | off | use (and connect to) only `k` of the endpoints, spread evenly over a fleet of clients |
//!
//! The health rules follow Envoy's outlier detection, panic threshold, zone-aware routing and
//! slow start, with the same defaults where Envoy has them.

use std::time::Duration;

use crate::error::ConfigError;
use crate::policy::Policy;
use crate::state::LatencyClock;
use crate::subset::Subsetting;

/// Passive outlier detection: eject endpoints whose requests fail, for a time that grows with
/// each ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// Eject after this many failures in a row. 0 disables this rule. Default 5.
    pub consecutive_failures: u32,
    /// The ejection time is this × the number of times the endpoint was ejected. Default 30 s.
    pub base_ejection_time: Duration,
    /// The longest ejection. Default 300 s.
    pub max_ejection_time: Duration,
    /// At most this share of the endpoints is ejected at once (one endpoint may always be
    /// ejected when none is). Default 10.
    pub max_ejection_percent: u8,
    /// How often failure percentages are evaluated and how long an endpoint must stay healthy
    /// for its ejection count to drop by one. Default 10 s.
    pub interval: Duration,
    /// Eject endpoints whose failure percentage over an interval reaches this. `None` disables
    /// the rule. Default 85.
    pub failure_percentage_threshold: Option<u8>,
    /// The failure-percentage rule runs only when at least this many endpoints had enough
    /// requests in the interval. Default 5.
    pub failure_percentage_minimum_hosts: u32,
    /// The least number of requests in an interval for an endpoint to be judged by the
    /// failure-percentage rule. Default 50.
    pub failure_percentage_request_volume: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            interval: Duration::from_secs(10),
            failure_percentage_threshold: Some(85),
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
        }
    }
}

impl OutlierDetection {
    /// Outlier detection that never ejects.
    pub fn disabled() -> Self {
        OutlierDetection {
            consecutive_failures: 0,
            failure_percentage_threshold: None,
            ..OutlierDetection::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_ejection_percent > 100 {
            return Err(ConfigError::new(
                "outlier_detection.max_ejection_percent",
                "must be at most 100",
            ));
        }
        if self.failure_percentage_threshold.is_some_and(|t| t > 100) {
            return Err(ConfigError::new(
                "outlier_detection.failure_percentage_threshold",
                "must be at most 100",
            ));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::new(
                "outlier_detection.interval",
                "must be longer than zero",
            ));
        }
        if self.max_ejection_time < self.base_ejection_time {
            return Err(ConfigError::new(
                "outlier_detection.max_ejection_time",
                "must not be shorter than base_ejection_time",
            ));
        }
        Ok(())
    }
}

/// Ramp the weight of endpoints that join after the balancer started.
///
/// A new endpoint's weight factor is `max(min_weight_percent, (age / window)^(1 / aggression))`,
/// as in Envoy. It applies to the P2C, round-robin and random policies; the hashing policies keep
/// placement stable and ignore it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowStart {
    /// How long the ramp lasts.
    pub window: Duration,
    /// The starting share of the full weight, in percent. Default 10.
    pub min_weight_percent: u8,
    /// 1.0 ramps linearly; larger values ramp faster at first. Default 1.0.
    pub aggression: f64,
}

impl SlowStart {
    /// A linear ramp over `window` from 10% of the weight.
    pub fn new(window: Duration) -> Self {
        SlowStart {
            window,
            min_weight_percent: 10,
            aggression: 1.0,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(ConfigError::new(
                "slow_start.window",
                "must be longer than zero",
            ));
        }
        if self.min_weight_percent == 0 || self.min_weight_percent > 100 {
            return Err(ConfigError::new(
                "slow_start.min_weight_percent",
                "must be from 1 to 100",
            ));
        }
        if !(self.aggression > 0.0 && self.aggression.is_finite()) {
            return Err(ConfigError::new(
                "slow_start.aggression",
                "must be a positive number",
            ));
        }
        Ok(())
    }

    /// The weight factor for an endpoint `age` old.
    pub(crate) fn factor(&self, age: Duration) -> f64 {
        let progress = (age.as_secs_f64() / self.window.as_secs_f64()).clamp(0.0, 1.0);
        progress
            .powf(1.0 / self.aggression)
            .max(f64::from(self.min_weight_percent) / 100.0)
    }
}

/// Prefer endpoints in the client's own zone, by one of two rules ([`ZoneMode`]).
///
/// - [`ZoneMode::ZoneAware`] (the default, what [`ZonePreference::new`] gives): local endpoints
///   are those whose `zone` is `zone`. While at least `min_healthy_percent` of them are healthy,
///   all traffic stays local; below that, the local share shrinks in proportion and the rest
///   spills over to the other zones (Envoy's zone-aware routing). Zone hints play no part.
/// - [`ZoneMode::Hints`] ([`ZonePreference::hints`]): Kubernetes topology hints, exactly
///   kube-proxy's rule ([`waypost_discovery::topology`]): with the client's `node` set
///   ([`ZonePreference::with_node`]), when every ready endpoint carries node hints and some are
///   hinted for `node`, only those are used (`trafficDistribution: PreferSameNode`); otherwise,
///   when every ready endpoint carries zone hints and some are hinted for `zone`, only the ready
///   endpoints hinted for `zone` are used; otherwise, and always for the serving-and-terminating
///   fallback, every endpoint is. `min_healthy_percent` does not apply; only when none of the
///   hinted endpoints is healthy do the others take the traffic, rather than failing it.
///
/// Zone preference as a whole is off by default ([`BalanceConfig::zone_preference`]), and it is
/// not applied in panic mode nor by the hashing policies.
#[derive(Debug, Clone, PartialEq)]
pub struct ZonePreference {
    /// The client's zone.
    pub zone: String,
    /// The share of healthy local endpoints under which traffic starts spilling over, in
    /// percent, in [`ZoneMode::ZoneAware`]. Default 70.
    pub min_healthy_percent: u8,
    /// Which rule decides what is local. Default [`ZoneMode::ZoneAware`].
    pub mode: ZoneMode,
    /// The client's node (Kubernetes `spec.nodeName`, through the downward API), for node
    /// hints in [`ZoneMode::Hints`]. Default `None`: node hints are not looked at.
    pub node: Option<String>,
}

/// How [`ZonePreference`] decides which endpoints are local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ZoneMode {
    /// By the endpoint's `zone` field, with spill-over when the local zone is short of healthy
    /// endpoints (Envoy's zone-aware routing). The default.
    #[default]
    ZoneAware,
    /// By Kubernetes topology hints (`hints.forNodes` for the client's node, then
    /// `hints.forZones`), exactly as kube-proxy uses them.
    Hints,
}

impl ZonePreference {
    /// Prefer `zone` by the endpoints' zone field ([`ZoneMode::ZoneAware`]), spilling over
    /// below 70% healthy.
    pub fn new(zone: impl Into<String>) -> Self {
        ZonePreference {
            zone: zone.into(),
            min_healthy_percent: 70,
            mode: ZoneMode::ZoneAware,
            node: None,
        }
    }

    /// Prefer `zone` by Kubernetes topology hints ([`ZoneMode::Hints`]).
    pub fn hints(zone: impl Into<String>) -> Self {
        ZonePreference {
            mode: ZoneMode::Hints,
            ..Self::new(zone)
        }
    }

    /// Sets the client's node, for node hints in [`ZoneMode::Hints`].
    #[must_use]
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.node.as_deref() == Some("") {
            return Err(ConfigError::new(
                "zone_preference.node",
                "must not be empty when set",
            ));
        }
        if self.zone.is_empty() {
            return Err(ConfigError::new(
                "zone_preference.zone",
                "must not be empty",
            ));
        }
        if self.min_healthy_percent == 0 || self.min_healthy_percent > 100 {
            return Err(ConfigError::new(
                "zone_preference.min_healthy_percent",
                "must be from 1 to 100",
            ));
        }
        Ok(())
    }
}

/// How long an endpoint that could not be reached is skipped before it is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectBackoff {
    /// The first wait. Default 1 s.
    pub initial: Duration,
    /// The longest wait; waits double up to it. Default 30 s.
    pub max: Duration,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        ReconnectBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// What the balancer does with an endpoint that refused work as overloaded
/// ([`Outcome::Overloaded`](crate::Outcome::Overloaded): HTTP 429 or 503, gRPC
/// `RESOURCE_EXHAUSTED` or a trailers-only `UNAVAILABLE`, as [`HttpStatus`](crate::HttpStatus)
/// classifies them).
///
/// Besides counting as a failure (outlier detection, and the Peak EWMA failure penalty), the
/// endpoint is *passed over* for a while: every policy treats it as it treats an endpoint whose
/// connection just went down. P2C compares the other candidate with a fresh draw, round-robin
/// and random pick again, consistent hashing walks on to the next endpoint. It still gets requests when every
/// candidate is passed over, so load feedback alone never fails a request; unlike an ejection
/// it holds in panic mode too.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadFeedback {
    /// How long an endpoint is passed over when the server did not say (no `Retry-After`, no
    /// `grpc-retry-pushback-ms`). It doubles with each failure in a row (1 s, 2 s, 4 s, ...,
    /// up to `max_backoff`), so a server that keeps refusing is asked less and less often; a
    /// success starts over. Zero: only when the server says. Default 1 s.
    pub default_backoff: Duration,
    /// The longest a server's pushback is honoured: at most 24 h. Default 60 s.
    pub max_backoff: Duration,
}

impl Default for LoadFeedback {
    fn default() -> Self {
        LoadFeedback {
            default_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl LoadFeedback {
    /// How long an endpoint that answered "overloaded" with `retry_after`, its `in_a_row`-th
    /// failure in a row, is passed over.
    pub(crate) fn backoff(&self, retry_after: Option<Duration>, in_a_row: u32) -> Duration {
        retry_after
            .unwrap_or_else(|| {
                let doublings = in_a_row.saturating_sub(1).min(20);
                self.default_backoff.saturating_mul(1 << doublings)
            })
            .min(self.max_backoff)
    }
}

/// A per-endpoint concurrency limit, as Envoy's `max_requests` circuit breaker: an endpoint
/// with `max_in_flight` requests in flight takes no more until one ends.
///
/// The limit is exact, whatever the number of clones and threads sending: a request reserves
/// its place with a compare-and-swap on the endpoint's counter. Picks pass full endpoints over
/// (as load feedback does); when every usable endpoint is full the request does what
/// [`when_full`](Self::when_full) says.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyLimit {
    /// The most requests in flight on one endpoint; at least 1.
    pub max_in_flight: u32,
    /// What a request does when every usable endpoint is full. Default [`WhenFull::Fail`].
    pub when_full: WhenFull,
}

impl ConcurrencyLimit {
    /// At most `max_in_flight` requests per endpoint; a request that finds them all full fails
    /// at once.
    pub fn new(max_in_flight: u32) -> Self {
        ConcurrencyLimit {
            max_in_flight,
            when_full: WhenFull::Fail,
        }
    }

    /// The same limit; a request that finds every endpoint full waits for room.
    pub fn waiting(self) -> Self {
        ConcurrencyLimit {
            when_full: WhenFull::Wait,
            ..self
        }
    }
}

/// What a request does when every usable endpoint is at its [`ConcurrencyLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Fail at once with [`ErrorKind::Overloaded`](crate::ErrorKind::Overloaded), unsent (so a
    /// caller may shed or queue it itself). The default.
    #[default]
    Fail,
    /// Wait for a request to end (or for another endpoint), up to
    /// [`wait_for_endpoints`](BalanceConfig::wait_for_endpoints) and within the caller's own
    /// deadline, then fail with [`ErrorKind::Overloaded`](crate::ErrorKind::Overloaded).
    Wait,
}

/// Everything a [`Balance`](crate::Balance) is configured with.
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// The balancing policy. Default [`Policy::p2c_peak_ewma`].
    pub policy: Policy,
    /// Passive outlier detection. Default [`OutlierDetection::default`].
    pub outlier_detection: OutlierDetection,
    /// When fewer than this percentage of the endpoints are healthy (not ejected, not
    /// unreachable), balance across all of them: better to spread load over a partly broken
    /// fleet than to overload the few that look healthy. 0 disables panic mode. Default 50.
    pub panic_threshold_percent: u8,
    /// Prefer the local zone. Default off.
    pub zone_preference: Option<ZonePreference>,
    /// Ramp new endpoints up. Default off.
    pub slow_start: Option<SlowStart>,
    /// How long a request waits for a usable endpoint before it fails with the reason.
    /// Default 10 s. A request does not wait when discovery answered that there are no
    /// endpoints (an empty set from a source that is not failing, such as a name confirmed
    /// NXDOMAIN): it fails at once with [`NoEndpoints`](crate::ErrorKind::NoEndpoints).
    pub wait_for_endpoints: Duration,
    /// How long an unreachable endpoint is skipped.
    pub reconnect_backoff: ReconnectBackoff,
    /// Passing over endpoints that refuse work as overloaded. Default on
    /// ([`LoadFeedback::default`]); `None` turns it off (an overloaded answer is then only a
    /// failure).
    pub load_feedback: Option<LoadFeedback>,
    /// The most requests in flight per endpoint. Default off.
    pub concurrency_limit: Option<ConcurrencyLimit>,
    /// Seeds the random choices, for reproducible tests. Default: seeded from the thread's
    /// random generator.
    pub seed: Option<u64>,
    /// The clock request latencies are measured with (Peak EWMA). Default
    /// [`LatencyClock::Tsc`]; use [`LatencyClock::Tokio`] in tests that pause tokio's clock.
    pub latency_clock: LatencyClock,
    /// Use only a subset of the discovered endpoints (and connect only to those), chosen so
    /// that a fleet of clients spreads evenly over them. Default off: every endpoint is used.
    pub subsetting: Option<Subsetting>,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            policy: Policy::default(),
            outlier_detection: OutlierDetection::default(),
            panic_threshold_percent: 50,
            zone_preference: None,
            slow_start: None,
            wait_for_endpoints: Duration::from_secs(10),
            reconnect_backoff: ReconnectBackoff::default(),
            load_feedback: Some(LoadFeedback::default()),
            concurrency_limit: None,
            seed: None,
            latency_clock: LatencyClock::default(),
            subsetting: None,
        }
    }
}

impl BalanceConfig {
    /// The defaults with another policy.
    pub fn with_policy(policy: Policy) -> Self {
        BalanceConfig {
            policy,
            ..BalanceConfig::default()
        }
    }

    /// `true` when a request that finds every endpoint full fails at once.
    pub(crate) fn concurrency_limit_fails(&self) -> bool {
        self.concurrency_limit
            .as_ref()
            .is_some_and(|limit| limit.when_full == WhenFull::Fail)
    }

    /// Checks every field; the error names the first one that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.outlier_detection.validate()?;
        if self.panic_threshold_percent > 100 {
            return Err(ConfigError::new(
                "panic_threshold_percent",
                "must be at most 100",
            ));
        }
        if let Some(zone) = &self.zone_preference {
            zone.validate()?;
        }
        if let Some(slow_start) = &self.slow_start {
            slow_start.validate()?;
        }
        if self.reconnect_backoff.initial.is_zero()
            || self.reconnect_backoff.max < self.reconnect_backoff.initial
        {
            return Err(ConfigError::new(
                "reconnect_backoff",
                "initial must be above zero and max at least initial",
            ));
        }
        if let Some(feedback) = &self.load_feedback {
            if feedback.max_backoff < feedback.default_backoff {
                return Err(ConfigError::new(
                    "load_feedback.max_backoff",
                    "must not be shorter than default_backoff",
                ));
            }
            // Shed periods end at a wrapping 32-bit millisecond stamp: 24 days at most.
            if feedback.max_backoff > Duration::from_secs(24 * 3600) {
                return Err(ConfigError::new(
                    "load_feedback.max_backoff",
                    "must be at most 24 hours",
                ));
            }
        }
        if self
            .concurrency_limit
            .as_ref()
            .is_some_and(|limit| limit.max_in_flight == 0)
        {
            return Err(ConfigError::new(
                "concurrency_limit.max_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BalanceConfig::default().validate().unwrap();
    }

    #[test]
    fn unsaid_pushbacks_double_with_refusals_in_a_row_and_a_said_one_is_kept() {
        let feedback = LoadFeedback::default();
        let backoffs: Vec<u64> = (1..=8)
            .map(|in_a_row| feedback.backoff(None, in_a_row).as_secs())
            .collect();
        assert_eq!(backoffs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(feedback.backoff(None, u32::MAX), Duration::from_secs(60));
        let said = Some(Duration::from_millis(250));
        assert_eq!(feedback.backoff(said, 5), Duration::from_millis(250));
        assert_eq!(
            feedback.backoff(Some(Duration::from_secs(600)), 1),
            Duration::from_secs(60)
        );
        let off = LoadFeedback {
            default_backoff: Duration::ZERO,
            ..LoadFeedback::default()
        };
        assert_eq!(off.backoff(None, 9), Duration::ZERO);
    }

    #[test]
    fn errors_name_the_field() {
        let mut config = BalanceConfig::default();
        config.outlier_detection.max_ejection_percent = 101;
        assert_eq!(
            config.validate().unwrap_err().field(),
            "outlier_detection.max_ejection_percent"
        );
        let config = BalanceConfig {
            slow_start: Some(SlowStart::new(Duration::ZERO)),
            ..BalanceConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field(), "slow_start.window");
    }

    #[test]
    fn slow_start_ramps() {
        let slow = SlowStart::new(Duration::from_secs(10));
        assert_eq!(slow.factor(Duration::ZERO), 0.1);
        assert!((slow.factor(Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(slow.factor(Duration::from_secs(20)), 1.0);
    }
}
