//! The resolve loop: when to look again, and what each outcome does to the published set.
//!
//! One task per target runs [`run`]. It looks the target up at once, then:
//!
//! - after a positive answer, publishes it and waits the answer's TTL, clamped to
//!   `[floor, ceiling]` and stretched by up to `jitter` of itself;
//! - after a negative answer (NXDOMAIN, NODATA), counts it; only the `empty_confirmations`-th
//!   negative answer in a row empties the set (a set that is already empty is simply kept
//!   current). Before that the set stays and the handle's health reports the negative answer.
//!   The wait is the negative TTL from the SOA (clamped the same way), or the floor;
//! - after a failure (timeout, SERVFAIL, refused, unreachable), keeps the set, reports the
//!   failure, and waits with the crate's [`Backoff`] (`retry_initial`, doubling up to
//!   `retry_max`, each wait jittered into `[wait / 2, wait]`);
//! - when a reader calls [`Endpoints::request_refresh`](crate::Endpoints::request_refresh),
//!   moves the next lookup forward to no sooner than `early_refresh_interval` after the start
//!   of the previous one. While the source is failing, requests do not shorten the backoff:
//!   readers that see connection errors would otherwise hammer a nameserver that is down.
//! - stops as soon as every reader is gone, even in the middle of a lookup.
//!
//! The loop also watches for a mistake that makes client-side balancing useless: a
//! `name.namespace.svc.<zone>` name that keeps answering exactly one address is a ClusterIP
//! Service (one virtual IP; kube-proxy spreads connections, not requests). It says so once, as a
//! warning.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::options::DnsOptions;
use super::resolve::{Answer, Negative, Outcome, Resolve};
use crate::backoff::Backoff;
use crate::endpoints::Publisher;
use crate::error::{DiscoveryError, DiscoveryErrorKind};

/// How many single-address answers in a row for a Service name trigger the ClusterIP warning.
const CLUSTER_IP_ANSWERS: u32 = 3;

/// The timing and confirmation settings the loop needs, copied from [`DnsOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) floor: Duration,
    pub(crate) ceiling: Duration,
    pub(crate) jitter: f64,
    pub(crate) confirmations: u32,
    pub(crate) early_refresh_interval: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
}

impl Schedule {
    pub(crate) fn from_options(options: &DnsOptions) -> Self {
        Schedule {
            floor: options.refresh_floor,
            ceiling: options.refresh_ceiling,
            jitter: options.jitter,
            confirmations: options.empty_confirmations,
            early_refresh_interval: options.early_refresh_interval,
            retry_initial: options.retry_initial,
            retry_max: options.retry_max,
        }
    }

    fn clamp(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.floor, self.ceiling)
    }

    /// The failure backoff, also the random source for the TTL jitter; `seed` makes both
    /// reproducible.
    pub(crate) fn backoff(&self, seed: Option<u64>) -> Backoff {
        match seed {
            Some(seed) => Backoff::seeded(self.retry_initial, self.retry_max, seed),
            None => Backoff::new(self.retry_initial, self.retry_max),
        }
    }
}

/// What the loop remembers between lookups.
#[derive(Debug, Default)]
struct State {
    /// Negative answers in a row (failures in between do not reset it).
    negatives: u32,
    /// Single-address answers in a row for a Service name.
    single_address_answers: u32,
    cluster_ip_warned: bool,
}

/// Runs the lookups of one target until every reader is gone.
pub(crate) async fn run<R: Resolve>(
    mut publisher: Publisher,
    mut resolver: R,
    schedule: Schedule,
    mut backoff: Backoff,
) {
    let mut state = State::default();
    let mut next = Instant::now();
    let mut last_start: Option<Instant> = None;
    loop {
        loop {
            tokio::select! {
                biased;
                () = publisher.should_stop() => return stopped(&publisher),
                () = sleep_until(next) => break,
                () = publisher.refresh_requested() => {
                    if backoff.failures() > 0 {
                        tracing::debug!(
                            target: "waypost::discovery::dns",
                            target = %publisher.target(),
                            "refresh requested while failing; keeping the retry backoff"
                        );
                        continue;
                    }
                    let now = Instant::now();
                    let earliest = last_start
                        .map_or(now, |start| later(start, schedule.early_refresh_interval))
                        .max(now);
                    if earliest < next {
                        tracing::debug!(
                            target: "waypost::discovery::dns",
                            target = %publisher.target(),
                            in_ms = earliest.saturating_duration_since(now).as_millis() as u64,
                            "early refresh requested"
                        );
                        next = earliest;
                    }
                }
            }
        }
        last_start = Some(Instant::now());
        let current = publisher.current();
        let outcome = tokio::select! {
            biased;
            () = publisher.should_stop() => return stopped(&publisher),
            outcome = resolver.resolve(&current) => outcome,
        };
        let wait = state.apply(outcome, &mut publisher, &schedule, &mut backoff);
        next = later(Instant::now(), wait);
    }
}

/// `at + delay`, saturating about 30 years out: an option may be as long as `Duration::MAX`
/// (`early_refresh_interval(Duration::MAX)` to turn early refreshes off), which `+` would
/// overflow.
fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .unwrap_or_else(|| at + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

fn stopped(publisher: &Publisher) {
    tracing::debug!(
        target: "waypost::discovery::dns",
        target = %publisher.target(),
        "DNS source stopped (no readers left, or shut down)"
    );
}

impl State {
    /// Applies one outcome and returns how long to wait before the next lookup.
    fn apply(
        &mut self,
        outcome: Outcome,
        publisher: &mut Publisher,
        schedule: &Schedule,
        backoff: &mut Backoff,
    ) -> Duration {
        match outcome {
            Outcome::Found(answer) if answer.endpoints.is_empty() => {
                let negative = Negative {
                    nxdomain: false,
                    ttl: Some(answer.ttl),
                    detail: format!("`{}` answered no usable address", answer.name),
                };
                self.missing(negative, publisher, schedule, backoff)
            }
            Outcome::Found(answer) => self.found(answer, publisher, schedule, backoff),
            Outcome::Missing(negative) => self.missing(negative, publisher, schedule, backoff),
            Outcome::Failed(error) => {
                publisher.report_failure(error);
                backoff.next_delay()
            }
        }
    }

    fn found(
        &mut self,
        answer: Answer,
        publisher: &mut Publisher,
        schedule: &Schedule,
        backoff: &mut Backoff,
    ) -> Duration {
        self.negatives = 0;
        backoff.reset();
        let count = answer.endpoints.len();
        let wait = backoff.stretch(schedule.clamp(answer.ttl), schedule.jitter);
        let service_name = match answer.endpoints.as_slice() {
            [only] => Some(only.hostname().unwrap_or(&answer.name).to_owned()),
            _ => None,
        };
        let publication = publisher.publish(answer.endpoints);
        tracing::trace!(
            target: "waypost::discovery::dns",
            target = %publisher.target(),
            name = %answer.name,
            endpoints = count,
            ttl_s = answer.ttl.as_secs(),
            revision = publication.revision(),
            next_in_ms = wait.as_millis() as u64,
            "DNS answer"
        );
        self.watch_cluster_ip(service_name.as_deref(), publisher.target());
        wait
    }

    fn missing(
        &mut self,
        negative: Negative,
        publisher: &mut Publisher,
        schedule: &Schedule,
        backoff: &mut Backoff,
    ) -> Duration {
        self.negatives = self.negatives.saturating_add(1);
        backoff.reset();
        self.single_address_answers = 0;
        let wait = backoff.stretch(
            schedule.clamp(negative.ttl.unwrap_or(schedule.floor)),
            schedule.jitter,
        );
        let current = publisher.current();
        let already_empty = current.revision() > 0 && current.is_empty();
        if already_empty || self.negatives >= schedule.confirmations {
            // Confirmed (or nothing left to lose): the service is gone, and health says so
            // instead of "recovered" with an error about kept endpoints.
            let publication = publisher.publish_gone(DiscoveryError::new(
                publisher.target_arc(),
                DiscoveryErrorKind::NotFound,
                format!(
                    "{}, {} negative answers in a row: the service is gone",
                    negative.detail, self.negatives
                ),
            ));
            tracing::debug!(
                target: "waypost::discovery::dns",
                target = %publisher.target(),
                confirmations = self.negatives,
                revision = publication.revision(),
                "negative DNS answer confirmed"
            );
        } else {
            let kept = if current.revision() > 0 {
                format!("keeping the last {} endpoints", current.len())
            } else {
                "nothing published yet".to_owned()
            };
            publisher.report_failure(DiscoveryError::new(
                publisher.target_arc(),
                DiscoveryErrorKind::NotFound,
                format!(
                    "{} (negative answer {} of the {} needed to empty the set; {kept})",
                    negative.detail, self.negatives, schedule.confirmations
                ),
            ));
        }
        wait
    }

    fn watch_cluster_ip(&mut self, single: Option<&str>, target: &str) {
        if self.cluster_ip_warned {
            return;
        }
        match single {
            Some(name) if is_service_name(name) => {
                self.single_address_answers += 1;
                if self.single_address_answers >= CLUSTER_IP_ANSWERS {
                    self.cluster_ip_warned = true;
                    tracing::warn!(
                        target: "waypost::discovery::dns",
                        target = %target,
                        name = %name,
                        "`{name}` keeps answering a single address: it looks like a ClusterIP \
                         Service, whose one virtual IP leaves nothing to balance (kube-proxy \
                         spreads connections, not requests). Use a headless Service \
                         (clusterIP: None) or a kubernetes:/// target."
                    );
                }
            }
            _ => self.single_address_answers = 0,
        }
    }
}

/// `true` for `service.namespace.svc.<zone>`: the name of a Service (not of one pod).
pub(crate) fn is_service_name(name: &str) -> bool {
    let mut labels = name.trim_end_matches('.').split('.');
    matches!(
        (labels.next(), labels.next(), labels.next(), labels.next()),
        (Some(service), Some(namespace), Some(svc), Some(_zone))
            if !service.is_empty() && !namespace.is_empty() && svc.eq_ignore_ascii_case("svc")
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::endpoint::Endpoint;
    use crate::endpoints::{Endpoints, Status};
    use crate::set::EndpointSet;

    #[test]
    fn a_delay_as_long_as_duration_max_saturates() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(60 * 60 * 24 * 365));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    /// A resolver that plays back scripted outcomes and records when it was asked.
    #[derive(Clone, Default)]
    struct Script {
        outcomes: Arc<Mutex<VecDeque<Outcome>>>,
        asked: Arc<Mutex<Vec<Instant>>>,
    }

    impl Script {
        fn push(&self, outcome: Outcome) {
            self.outcomes.lock().unwrap().push_back(outcome);
        }

        fn asked(&self) -> Vec<Instant> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Resolve for Script {
        fn resolve<'a>(
            &'a mut self,
            _current: &'a EndpointSet,
        ) -> impl Future<Output = Outcome> + Send + 'a {
            self.asked.lock().unwrap().push(Instant::now());
            let next = self.outcomes.lock().unwrap().pop_front();
            async move {
                match next {
                    Some(outcome) => outcome,
                    // Out of script: no answer ever.
                    None => std::future::pending().await,
                }
            }
        }
    }

    fn found(ports: &[u16], ttl: u64) -> Outcome {
        Outcome::Found(Answer {
            endpoints: ports
                .iter()
                .map(|port| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], *port))))
                .collect(),
            ttl: Duration::from_secs(ttl),
            name: "api.test".into(),
        })
    }

    fn nxdomain() -> Outcome {
        Outcome::Missing(Negative {
            nxdomain: true,
            ttl: None,
            detail: "`api.test` does not exist (NXDOMAIN)".into(),
        })
    }

    fn failed() -> Outcome {
        Outcome::Failed(DiscoveryError::new(
            "dns:///api.test:80",
            DiscoveryErrorKind::Resolve,
            "no answer before the timeout",
        ))
    }

    fn schedule() -> Schedule {
        Schedule {
            floor: Duration::from_secs(1),
            ceiling: Duration::from_secs(30),
            jitter: 0.0,
            confirmations: 2,
            early_refresh_interval: Duration::from_secs(2),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
        }
    }

    fn start(script: &Script, schedule: Schedule) -> Endpoints {
        let publisher = Publisher::new("dns:///api.test:80");
        let endpoints = publisher.endpoints();
        tokio::spawn(run(
            publisher,
            script.clone(),
            schedule,
            schedule.backoff(Some(7)),
        ));
        endpoints
    }

    fn ports(endpoints: &Endpoints) -> Vec<u16> {
        endpoints
            .load()
            .iter()
            .map(|endpoint| endpoint.address().port())
            .collect()
    }

    /// Lets the source task run until it waits on its timer again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_when_the_ttl_expires_clamped_to_the_bounds() {
        let script = Script::default();
        script.push(found(&[1], 5));
        script.push(found(&[1, 2], 0));
        script.push(found(&[2], 3600));
        let endpoints = start(&script, schedule());
        let set = endpoints.resolved().await.unwrap();
        assert_eq!(set.len(), 1);
        let began = Instant::now();
        tokio::time::sleep(Duration::from_secs(45)).await;
        let asked = script.asked();
        assert_eq!(ports(&endpoints), [2]);
        // First at once, then after the TTL of 5 s, then after the floor (TTL 0), then after
        // the ceiling (TTL 3600).
        let gaps: Vec<Duration> = asked.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert_eq!(
            gaps,
            [
                Duration::from_secs(5),
                Duration::from_secs(1),
                Duration::from_secs(30)
            ]
        );
        assert!(asked[0] <= began);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stretches_waits_within_the_fraction() {
        let script = Script::default();
        for _ in 0..20 {
            script.push(found(&[1], 10));
        }
        let mut jittered = schedule();
        jittered.jitter = 0.5;
        let _endpoints = start(&script, jittered);
        tokio::time::sleep(Duration::from_secs(300)).await;
        let asked = script.asked();
        let gaps: Vec<Duration> = asked.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(gaps.len() >= 10);
        assert!(
            gaps.iter()
                .all(|gap| *gap >= Duration::from_secs(10) && *gap <= Duration::from_secs(15))
        );
        assert!(
            gaps.windows(2).any(|pair| pair[0] != pair[1]),
            "waits differ: {gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_negative_answer_empties_the_set_only_when_confirmed() {
        let script = Script::default();
        script.push(found(&[1, 2], 1));
        script.push(nxdomain());
        script.push(failed());
        script.push(nxdomain());
        script.push(found(&[3], 3600));
        let endpoints = start(&script, schedule());
        endpoints.resolved().await.unwrap();
        assert_eq!(ports(&endpoints), [1, 2]);

        // First NXDOMAIN: kept, health reports it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(ports(&endpoints), [1, 2]);
        let health = endpoints.health();
        assert_eq!(health.status(), Status::Failing);
        let error = health.last_error().unwrap();
        assert!(error.is_not_found());
        assert!(error.detail().contains("1 of the 2"), "{error}");

        // A failure in between (at 2 s) neither counts nor resets.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(ports(&endpoints), [1, 2]);
        assert!(endpoints.health().last_error().unwrap().is_resolve());
        assert!(!endpoints.health().is_gone());

        // Second NXDOMAIN (after the backoff, at most 1 s): confirmed, emptied, current, and
        // the health says the service is gone rather than that endpoints are kept.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(endpoints.load().is_empty());
        let health = endpoints.health();
        assert!(health.is_current());
        assert!(health.is_gone());
        let error = health.last_error().unwrap();
        assert!(error.is_not_found());
        assert!(error.detail().contains("the service is gone"), "{error}");
        assert!(!error.detail().contains("keeping"), "{error}");
        let emptied = endpoints.revision();

        // The name comes back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(ports(&endpoints), [3]);
        assert_eq!(endpoints.revision(), emptied + 1);
        assert!(!endpoints.health().is_gone());
    }

    #[tokio::test(start_paused = true)]
    async fn a_negative_answer_waits_for_its_soa_ttl() {
        let script = Script::default();
        script.push(found(&[1], 1));
        script.push(Outcome::Missing(Negative {
            nxdomain: false,
            ttl: Some(Duration::from_secs(7)),
            detail: "`api.test` has no A record".into(),
        }));
        script.push(Outcome::Missing(Negative {
            nxdomain: false,
            ttl: Some(Duration::from_secs(3600)),
            detail: "`api.test` has no A record".into(),
        }));
        let endpoints = start(&script, schedule());
        endpoints.resolved().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let gaps: Vec<u64> = script
            .asked()
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).as_secs())
            .collect();
        // 1 s TTL, then the 7 s negative TTL, then the 30 s ceiling.
        assert_eq!(gaps, [1, 7, 30]);
        assert!(
            endpoints.load().is_empty(),
            "two negative answers confirmed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_confirmation_can_be_configured() {
        let script = Script::default();
        script.push(found(&[1], 1));
        script.push(nxdomain());
        let mut eager = schedule();
        eager.confirmations = 1;
        let endpoints = start(&script, eager);
        endpoints.resolved().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(endpoints.load().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_is_reported_to_whoever_waits() {
        let script = Script::default();
        script.push(failed());
        script.push(found(&[1], 3600));
        let endpoints = start(&script, schedule());
        let error = endpoints.resolved().await.unwrap_err();
        assert!(error.is_resolve());
        assert_eq!(error.target(), "dns:///api.test:80");
        assert_eq!(endpoints.revision(), 0);
        // The source retries by itself after the backoff.
        let set = endpoints.watch().changed().await.unwrap();
        assert_eq!(set.len(), 1);
        assert!(endpoints.health().is_current());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_up_to_the_maximum() {
        let script = Script::default();
        for _ in 0..7 {
            script.push(failed());
        }
        let endpoints = start(&script, schedule());
        tokio::time::sleep(Duration::from_secs(60)).await;
        let gaps: Vec<Duration> = script
            .asked()
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .collect();
        // 1 s doubling to 8 s, each jittered into [delay / 2, delay].
        for (gap, nominal) in gaps.iter().zip([1, 2, 4, 8, 8, 8, 8]) {
            let nominal = Duration::from_secs(nominal);
            assert!(
                *gap <= nominal && *gap >= nominal / 2,
                "{gap:?} for {nominal:?} in {gaps:?}"
            );
        }
        assert_eq!(gaps.len(), 7);
        assert_eq!(endpoints.health().consecutive_failures(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn early_refresh_is_rate_limited_and_requests_collapse() {
        let script = Script::default();
        for _ in 0..10 {
            script.push(found(&[1], 30));
        }
        let endpoints = start(&script, schedule());
        endpoints.resolved().await.unwrap();
        let first = script.asked()[0];

        // Asked at once after the first lookup: waits until 2 s after its start.
        endpoints.request_refresh();
        endpoints.request_refresh();
        settle().await;
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert_eq!(script.asked().len(), 1, "not before the rate limit");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = script.asked();
        assert_eq!(asked.len(), 2, "one early lookup for both requests");
        assert_eq!(asked[1] - first, Duration::from_secs(2));

        // A burst of requests much later: one lookup at once, the rest held back.
        tokio::time::sleep(Duration::from_secs(10)).await;
        for _ in 0..50 {
            endpoints.request_refresh();
            settle().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = script.asked();
        assert_eq!(asked.len(), 3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let asked = script.asked();
        assert_eq!(
            asked.len(),
            4,
            "the requests after the first collapse into one"
        );
        assert_eq!(asked[3] - asked[2], Duration::from_secs(2));

        // Without requests, the TTL rules again: 30 s after the last lookup.
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(script.asked().len(), 4);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let asked = script.asked();
        assert_eq!(asked.len(), 5);
        assert_eq!(asked[4] - asked[3], Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn early_refresh_does_not_cut_the_backoff() {
        let script = Script::default();
        script.push(found(&[1], 1));
        for _ in 0..5 {
            script.push(failed());
        }
        let endpoints = start(&script, schedule());
        endpoints.resolved().await.unwrap();
        // Four failures: the next try waits the fourth delay, 8 s jittered into [4 s, 8 s].
        while script.asked().len() < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        endpoints.request_refresh();
        settle().await;
        // An early refresh would come 2 s after the last lookup at the latest.
        tokio::time::sleep(Duration::from_millis(3900)).await;
        assert_eq!(script.asked().len(), 5, "the request waits for the backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_every_reader_is_gone() {
        let script = Script::default();
        script.push(found(&[1], 1));
        let endpoints = start(&script, schedule());
        endpoints.resolved().await.unwrap();
        drop(endpoints);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(script.asked().len(), 1);
    }

    #[test]
    fn service_names_are_recognised() {
        assert!(is_service_name("api.prod.svc.cluster.local"));
        assert!(is_service_name("api.prod.svc.cluster.local."));
        assert!(is_service_name("api.prod.SVC.example"));
        assert!(!is_service_name("pod-0.api.prod.svc.cluster.local"));
        assert!(!is_service_name("api.prod.svc"));
        assert!(!is_service_name("api.example.com"));
    }

    #[test]
    fn the_cluster_ip_warning_needs_repeated_single_answers() {
        let mut state = State::default();
        state.watch_cluster_ip(Some("api.prod.svc.cluster.local"), "t");
        state.watch_cluster_ip(None, "t");
        state.watch_cluster_ip(Some("api.prod.svc.cluster.local"), "t");
        state.watch_cluster_ip(Some("api.prod.svc.cluster.local"), "t");
        assert!(!state.cluster_ip_warned);
        state.watch_cluster_ip(Some("api.prod.svc.cluster.local"), "t");
        assert!(state.cluster_ip_warned);
        let mut other = State::default();
        for _ in 0..5 {
            other.watch_cluster_ip(Some("api.example.com"), "t");
        }
        assert!(!other.cluster_ip_warned);
    }
}
