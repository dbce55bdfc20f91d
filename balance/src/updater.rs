//! The balancer's background task: follows discovery and health, and rebuilds the pick table.
//!
//! One task per balancer (not per clone) owns everything that changes rarely: the map from
//! address to slot, ejections, reconnect backoffs, slow-start ramps and the outlier-detection
//! interval. It wakes when discovery publishes a set, when the request path reports that an
//! endpoint crossed the consecutive-failure threshold, became unreachable or said it was
//! overloaded (it ends the endpoint's shed period when due), when a connector
//! reports its connection state, and when a timer is due (an ejection ends, a backoff ends, a
//! ramp advances, an interval ends). Discovery therefore progresses whether or not requests
//! flow. The task ends when the last clone of the balancer is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use waypost_discovery::backoff::Backoff;
use waypost_discovery::{Endpoint, EndpointSet, Watcher};

use crate::config::BalanceConfig;
use crate::make::{ConnectivityCell, ConnectivityReporter, MakeEndpoint};
use crate::metrics::EndpointMetrics;
use crate::policy::round_robin::Stripes;
use crate::snapshot::{EndpointSnapshot, Snapshot};
use crate::state::{Connectivity, EndpointState, after};
use crate::table::{self, BuildEntry, Context, PickTable, Slot};

/// State shared by every clone of a balancer and its task.
pub(crate) struct Shared<S> {
    pub(crate) context: Arc<Context>,
    pub(crate) table: ArcSwap<PickTable<S>>,
    /// Tables installed so far.
    pub(crate) tables_built: std::sync::atomic::AtomicU64,
    /// Notified after every table build, for requests waiting for an endpoint.
    pub(crate) table_changed: Notify,
    pub(crate) stripes: Stripes,
    /// Clones made so far, to give seeded clones distinct sequences.
    pub(crate) clones: std::sync::atomic::AtomicU64,
    /// Requests waiting for a usable endpoint.
    pub(crate) waiting: std::sync::atomic::AtomicUsize,
    /// Requests for a [`Snapshot`], answered by the background task when it wakes.
    pub(crate) snapshots: Mutex<SnapshotRequests>,
    /// The per-endpoint concurrency limit (as in the context), read by `call` without going
    /// through the context.
    pub(crate) limit: Option<u32>,
}

impl<S> Drop for Shared<S> {
    /// The last clone of the balancer is gone: the background task wakes and ends.
    fn drop(&mut self) {
        self.context.wake.notify_one();
    }
}

impl<S> Shared<S> {
    /// Asks the background task for a snapshot and wakes it; `false` when the task is gone.
    pub(crate) fn request_snapshot(&self, reply: oneshot::Sender<Snapshot>) -> bool {
        {
            let mut requests = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if requests.closed {
                return false;
            }
            requests.pending.push(reply);
        }
        self.context.wake.notify_one();
        true
    }
}

/// Snapshot requests not answered yet. Nothing is allocated until one comes.
#[derive(Default)]
pub(crate) struct SnapshotRequests {
    pending: Vec<oneshot::Sender<Snapshot>>,
    /// The task ended without being asked to (it panicked): nothing will answer.
    closed: bool,
}

/// Held by the background task: when the task ends while the balancer is still in use (a
/// panic), pending and later snapshot requests are told so at once.
struct CloseSnapshots<S>(Weak<Shared<S>>);

impl<S> Drop for CloseSnapshots<S> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            let mut requests = shared
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            requests.closed = true;
            requests.pending.clear();
        }
    }
}

/// The task's record of one endpoint of the applied set (the endpoint itself is read from the
/// set: `tracked[i]` is `set[i]`).
struct Tracked<S> {
    slot: Arc<Slot<S>>,
    /// When the endpoint joined, for slow start; `None` for the balancer's first set.
    joined: Option<Joined>,
    ejections: u16,
    /// What the last table was built from for this endpoint: see [`build_input`].
    built_from: u16,
    /// The endpoint's finished-request count when the last interval ended.
    finished_mark: u32,
    /// Ejection and reachability timings: only endpoints that failed have them (most never
    /// do), so they are allocated when needed and dropped once everything is back at rest.
    episodes: Option<Box<Episodes>>,
}

/// When an endpoint joined: microseconds since the balancer's epoch, plus one. 8 bytes where an
/// `Option<Instant>` takes 16, in a record every endpoint has.
#[derive(Debug, Clone, Copy)]
struct Joined(std::num::NonZeroU64);

impl Joined {
    fn at(at: Instant, epoch: Instant) -> Self {
        let micros =
            u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX - 1);
        Joined(std::num::NonZeroU64::MIN.saturating_add(micros))
    }

    fn instant(self, epoch: Instant) -> Instant {
        after(epoch, Duration::from_micros(self.0.get() - 1))
    }
}

/// What the task remembers of an endpoint's ejections and unreachable periods.
struct Episodes {
    ejected_until: Option<Instant>,
    /// When the last ejection ended; the ejection count drops only after a whole interval
    /// without one.
    returned_at: Option<Instant>,
    unreachable_until: Option<Instant>,
    /// When the current unreachable period began.
    unreachable_since: Option<Instant>,
    /// Discovery answered with the endpoint during the current unreachable period: it is
    /// probed once the initial backoff has passed, as for waiting requests.
    reannounced: bool,
    /// How long the next unreachable period lasts: jittered, doubling, reset once connected.
    backoff: Backoff,
}

/// [`Tracked::built_from`] before the endpoint's first table: no input encodes to it.
const NOT_BUILT: u16 = u16::MAX;

/// An endpoint's inputs to the table in 16 bits: the top bit for healthy (not ejected, not
/// unreachable), the slow-start factor in thousandths below it (the table's own resolution:
/// weights are scaled by 100).
fn build_input(healthy: bool, ramp: f64) -> u16 {
    let ramp = if ramp >= 1.0 {
        1000
    } else {
        (ramp.max(0.0) * 1000.0).round() as u16
    };
    (u16::from(healthy) << 15) | ramp
}

/// The episodes of an endpoint, made at rest when it has none.
fn episodes_of<'a>(
    episodes: &'a mut Option<Box<Episodes>>,
    config: &BalanceConfig,
    address: SocketAddr,
) -> &'a mut Episodes {
    episodes.get_or_insert_with(|| {
        Box::new(Episodes {
            ejected_until: None,
            returned_at: None,
            unreachable_until: None,
            unreachable_since: None,
            reannounced: false,
            backoff: backoff_for(config, address),
        })
    })
}

/// The reconnect backoff of an endpoint: reproducible when the balancer is seeded.
fn backoff_for(config: &BalanceConfig, address: SocketAddr) -> Backoff {
    let reconnect = &config.reconnect_backoff;
    match config.seed {
        Some(seed) => {
            let salt = xxhash_rust::xxh64::xxh64(address.to_string().as_bytes(), seed);
            Backoff::seeded(reconnect.initial, reconnect.max, salt)
        }
        None => Backoff::new(reconnect.initial, reconnect.max),
    }
}

impl<S> Tracked<S> {
    fn address(&self) -> SocketAddr {
        self.slot.address()
    }

    fn ejected_until(&self) -> Option<Instant> {
        self.episodes.as_ref().and_then(|e| e.ejected_until)
    }

    fn returned_at(&self) -> Option<Instant> {
        self.episodes.as_ref().and_then(|e| e.returned_at)
    }

    fn unreachable_until(&self) -> Option<Instant> {
        self.episodes.as_ref().and_then(|e| e.unreachable_until)
    }

    /// When the endpoint may be probed early (before its backoff ends) because requests wait
    /// or discovery announced it again: the initial backoff after its unreachable period began.
    fn early_probe_at(&self, waiting: bool, initial: Duration) -> Option<Instant> {
        let episodes = self.episodes.as_deref()?;
        let since = episodes.unreachable_since?;
        (waiting || episodes.reannounced).then(|| after(since, initial))
    }

    fn is_ejected(&self) -> bool {
        self.ejected_until().is_some()
    }

    fn is_healthy(&self) -> bool {
        let state = &self.slot.state;
        !self.is_ejected() && !state.is_down() && state.is_serving()
    }
}

pub(crate) struct Updater<M: MakeEndpoint> {
    /// Weak, so that dropping the last balancer clone drops the shared state and stops the task.
    shared: Weak<Shared<M::Service>>,
    context: Arc<Context>,
    make: M,
    /// Sorted by address, as discovery sets are: a new set is merged in one pass.
    tracked: Vec<Tracked<M::Service>>,
    next_interval: Instant,
    last_panic: bool,
    /// The discovery set applied last; `tracked` holds one record per endpoint, in its order.
    set: Arc<EndpointSet>,
    /// The revision of the set the installed table was built from (with each endpoint's
    /// [`Tracked::built_from`], everything a table depends on besides the configuration: a
    /// wake that changes none of it rebuilds nothing); `None` before the first build.
    built_revision: Option<u64>,
}

impl<M: MakeEndpoint> Updater<M> {
    pub(crate) fn new(shared: &Arc<Shared<M::Service>>, make: M) -> Self {
        let next_interval = after(
            Instant::now(),
            shared.context.config.outlier_detection.interval,
        );
        Updater {
            shared: Arc::downgrade(shared),
            context: Arc::clone(&shared.context),
            make,
            tracked: Vec::new(),
            next_interval,
            last_panic: false,
            set: Arc::default(),
            built_revision: None,
        }
    }

    /// Applies a discovery set: new endpoints get a slot and a service, removed ones are
    /// dropped, kept ones keep their state and take the new attributes. The set and the tracked
    /// endpoints are both sorted by address: one pass over both finds what left and what
    /// joined, and the kept endpoints stay where they are.
    pub(crate) fn apply_set(&mut self, set: &Arc<EndpointSet>, first: bool) {
        // With subsetting the balancer only ever sees (and connects to) its subset, at the
        // discovery set's revision.
        let set = &match &self.context.config.subsetting {
            Some(subsetting) => Arc::new(set.keeping(&subsetting.select(set))),
            None => Arc::clone(set),
        };
        self.set = Arc::clone(set);
        let endpoints = set.as_slice();
        // Positions in `endpoints` of the endpoints not tracked yet.
        let mut joined = Vec::new();
        let mut next = 0;
        self.tracked.retain_mut(|tracked| {
            let address = tracked.address();
            while next < endpoints.len() && endpoints[next].address() < address {
                joined.push(next);
                next += 1;
            }
            match endpoints.get(next) {
                Some(endpoint) if endpoint.address() == address => {
                    next += 1;
                    true
                }
                _ => false,
            }
        });
        joined.extend(next..endpoints.len());
        if joined.is_empty() {
            return;
        }
        let now = Instant::now();
        let now_ms = self.context.clock.now_millis();
        let estimate =
            Self::initial_estimate(&self.context.config, &self.tracked, &self.context, now_ms);
        let since = (!first).then(|| Joined::at(now, self.context.epoch));
        let added: Vec<Tracked<M::Service>> = joined
            .into_iter()
            .map(|index| self.track(&endpoints[index], estimate, now_ms, since))
            .collect();
        if self.tracked.is_empty() {
            self.tracked = added;
        } else if added.len() <= 16 {
            for tracked in added {
                let (Ok(index) | Err(index)) = self.position(tracked.address());
                self.tracked.insert(index, tracked);
            }
        } else {
            let kept = std::mem::take(&mut self.tracked);
            let mut merged = Vec::with_capacity(kept.len() + added.len());
            let (mut kept, mut added) = (kept.into_iter().peekable(), added.into_iter().peekable());
            while let (Some(a), Some(b)) = (kept.peek(), added.peek()) {
                let from = if a.address() < b.address() {
                    &mut kept
                } else {
                    &mut added
                };
                merged.extend(from.next());
            }
            merged.extend(kept);
            merged.extend(added);
            self.tracked = merged;
        }
    }

    /// A new endpoint: its slot, its service and fresh health state.
    fn track(
        &mut self,
        endpoint: &Endpoint,
        initial_estimate: Duration,
        now_ms: u64,
        joined: Option<Joined>,
    ) -> Tracked<M::Service> {
        let address = endpoint.address();
        let context = &self.context;
        let state = EndpointState::new(
            address,
            initial_estimate,
            now_ms,
            context.peak_ewma.map_or(1.0, |(tau, _)| tau),
        );
        let make = &mut self.make;
        let slot = Arc::new_cyclic(|weak: &std::sync::Weak<Slot<M::Service>>| {
            let cell: std::sync::Weak<dyn ConnectivityCell> = weak.clone();
            let reporter = ConnectivityReporter::new(cell, &context.wake, &context.retry);
            Slot {
                state,
                service: make.make_endpoint(endpoint, reporter),
                context: Arc::clone(context),
                metrics: EndpointMetrics::new(&context.target, address),
            }
        });
        Tracked {
            slot,
            joined,
            ejections: 0,
            built_from: NOT_BUILT,
            finished_mark: 0,
            episodes: None,
        }
    }

    /// Where `address` is (or would be) among the tracked endpoints.
    fn position(&self, address: SocketAddr) -> Result<usize, usize> {
        self.tracked
            .binary_search_by_key(&address, Tracked::address)
    }

    fn get(&self, address: SocketAddr) -> Option<&Tracked<M::Service>> {
        self.position(address)
            .ok()
            .map(|index| &self.tracked[index])
    }

    /// The median current estimate of the endpoints kept from the previous set, or the
    /// configured default when there are none.
    fn initial_estimate(
        config: &BalanceConfig,
        kept: &[Tracked<M::Service>],
        context: &Context,
        now_ms: u64,
    ) -> Duration {
        let Some((tau, _)) = context.peak_ewma else {
            return Duration::ZERO;
        };
        let mut estimates: Vec<Duration> = kept
            .iter()
            .map(|t| t.slot.state.estimate(now_ms, tau))
            .collect();
        if estimates.is_empty() {
            return config
                .policy
                .peak_ewma()
                .map(|p| p.default_rtt)
                .unwrap_or_default();
        }
        let middle = estimates.len() / 2;
        *estimates.select_nth_unstable(middle).1
    }

    /// Ejections, returns from ejection, reconnect backoffs and the interval's failure
    /// percentages.
    fn evaluate_health(&mut self, now: Instant) {
        let waiting = self.requests_waiting();
        let config = &self.context.config;
        let outlier = &config.outlier_detection;
        let target = &self.context.target;
        let now_ms = self.context.millis_since_epoch(now);
        for tracked in self.tracked.iter_mut() {
            let address = tracked.address();
            if tracked.slot.state.end_shed_if_over(now_ms) {
                tracing::debug!(target: "waypost::balance", target = %target, endpoint = %address, "endpoint no longer passed over after it said it was overloaded");
            }
            if let Some(episodes) = tracked.episodes.as_deref_mut()
                && episodes.ejected_until.is_some_and(|until| until <= now)
            {
                episodes.ejected_until = None;
                episodes.returned_at = Some(now);
                tracked.slot.state.reset_consecutive_failures();
                tracing::info!(target: "waypost::balance", target = %target, endpoint = %address, "endpoint returns from ejection");
            }
            let state = &tracked.slot.state;
            if state.is_unreachable() {
                let episodes = episodes_of(&mut tracked.episodes, config, address);
                match episodes.unreachable_until {
                    None => {
                        let backoff = episodes.backoff.next_delay();
                        episodes.unreachable_until = Some(after(now, backoff));
                        episodes.unreachable_since = Some(now);
                        tracing::debug!(target: "waypost::balance", target = %target, endpoint = %address, ?backoff, "endpoint unreachable");
                    }
                    Some(until)
                        if until <= now
                            || ((waiting || episodes.reannounced)
                                && episodes.unreachable_since.is_some_and(|since| {
                                    after(since, config.reconnect_backoff.initial) <= now
                                })) =>
                    {
                        // Time to try again: the next request is the probe. Requests waiting
                        // for an endpoint, and discovery announcing it again, do not wait out a
                        // long backoff: the probe comes after the initial one.
                        episodes.unreachable_until = None;
                        episodes.unreachable_since = None;
                        episodes.reannounced = false;
                        state.end_unreachable();
                    }
                    Some(_) => {}
                }
            } else if let Some(episodes) = tracked.episodes.as_deref_mut() {
                episodes.unreachable_until = None;
                episodes.unreachable_since = None;
                episodes.reannounced = false;
                if state.connectivity() == Connectivity::Connected {
                    // Connected: the backoff starts over, and once no ejection is running or
                    // was recent, there is nothing left to remember.
                    episodes.backoff.reset();
                    let settled = episodes.ejected_until.is_none()
                        && episodes
                            .returned_at
                            .is_none_or(|returned| after(returned, outlier.interval) <= now);
                    if settled {
                        tracked.episodes = None;
                    }
                }
            }
        }

        if outlier.consecutive_failures > 0 {
            let over: Vec<SocketAddr> = self
                .tracked
                .iter()
                .filter(|t| {
                    !t.is_ejected()
                        && t.slot.state.consecutive_failures() >= outlier.consecutive_failures
                })
                .map(Tracked::address)
                .collect();
            for address in over {
                self.try_eject(address, now, "consecutive failures");
                if let Some(tracked) = self.get(address) {
                    tracked.slot.state.reset_consecutive_failures();
                }
            }
        }

        if now >= self.next_interval {
            self.end_interval(now);
        }
    }

    fn end_interval(&mut self, now: Instant) {
        let config = &self.context.config;
        let outlier = config.outlier_detection.clone();
        // Re-anchored at `now`: stepping by the interval could take ages for a tiny one.
        self.next_interval = after(now, outlier.interval);
        let context = &self.context;
        let now_ms = context.clock.now_millis();
        let mut judged = Vec::new();
        context.metrics.refresh();
        for tracked in self.tracked.iter_mut() {
            let (volume, failures) = tracked.slot.state.take_interval(&mut tracked.finished_mark);
            if let Some((tau, _)) = context.peak_ewma {
                tracked.slot.state.restamp(now_ms, tau);
            }
            tracked.slot.metrics.refresh();
            let clean_interval = tracked
                .returned_at()
                .is_none_or(|returned| after(returned, outlier.interval) <= now);
            if !tracked.is_ejected() && tracked.ejections > 0 && failures == 0 && clean_interval {
                tracked.ejections -= 1;
            }
            if volume >= outlier.failure_percentage_request_volume && volume > 0 {
                judged.push((
                    tracked.address(),
                    u64::from(failures) * 100 / u64::from(volume),
                ));
            }
        }
        if let Some(threshold) = outlier.failure_percentage_threshold
            && judged.len() as u32 >= outlier.failure_percentage_minimum_hosts
        {
            for (address, percent) in judged {
                if percent >= u64::from(threshold)
                    && !self.get(address).is_some_and(Tracked::is_ejected)
                {
                    self.try_eject(address, now, "failure percentage");
                }
            }
        }
    }

    fn try_eject(&mut self, address: SocketAddr, now: Instant, reason: &'static str) {
        let outlier = &self.context.config.outlier_detection;
        let total = self.tracked.len();
        let ejected = self.tracked.iter().filter(|t| t.is_ejected()).count();
        if ejected * 100 >= usize::from(outlier.max_ejection_percent) * total {
            tracing::debug!(
                target: "waypost::balance",
                target = %self.context.target,
                endpoint = %address,
                reason,
                ejected,
                "not ejecting: max_ejection_percent reached"
            );
            return;
        }
        let Ok(index) = self.position(address) else {
            return;
        };
        let tracked = &mut self.tracked[index];
        tracked.ejections = tracked.ejections.saturating_add(1);
        let duration = outlier
            .base_ejection_time
            .saturating_mul(u32::from(tracked.ejections))
            .min(outlier.max_ejection_time);
        episodes_of(&mut tracked.episodes, &self.context.config, address).ejected_until =
            Some(after(now, duration));
        tracked.slot.metrics.ejected();
        tracing::warn!(
            target: "waypost::balance",
            target = %self.context.target,
            endpoint = %address,
            reason,
            ejections = tracked.ejections,
            duration = ?duration,
            "endpoint ejected"
        );
    }

    /// The slow-start factor of `tracked` at `now`; 1 for the hashing policies, which ignore it.
    fn ramp(&self, tracked: &Tracked<M::Service>, now: Instant) -> f64 {
        match (&self.context.config.slow_start, tracked.joined) {
            (Some(slow), Some(joined)) if !self.context.config.policy.is_hashing() => {
                slow.factor(now.saturating_duration_since(joined.instant(self.context.epoch)))
            }
            _ => 1.0,
        }
    }

    /// Builds and installs the pick table, when an input changed since the last build.
    pub(crate) fn rebuild(&mut self, now: Instant) {
        let ramps: Vec<f64> = self
            .tracked
            .iter()
            .map(|tracked| self.ramp(tracked, now))
            .collect();
        // A table depends on the set (by revision) and, per endpoint, on its health and its
        // slow-start weight: rebuild only when one of them changed since the last build.
        let mut changed = self.built_revision != Some(self.set.revision());
        for (tracked, &ramp) in self.tracked.iter_mut().zip(&ramps) {
            let input = build_input(tracked.is_healthy(), ramp);
            changed |= tracked.built_from != input;
            tracked.built_from = input;
        }
        if !changed {
            return;
        }
        self.built_revision = Some(self.set.revision());
        let config = &self.context.config;
        let entries: Vec<BuildEntry<'_, M::Service>> = self
            .tracked
            .iter()
            .zip(self.set.as_slice())
            .zip(ramps)
            .map(|((tracked, endpoint), ramp)| BuildEntry {
                slot: &tracked.slot,
                endpoint,
                healthy: tracked.is_healthy(),
                ramp,
            })
            .collect();
        let previous = self.shared.upgrade().map(|shared| shared.table.load_full());
        let table = table::build(&entries, config, previous.as_deref());
        let target = &self.context.target;
        if table.panic != self.last_panic {
            if table.panic {
                tracing::warn!(target: "waypost::balance", target = %target, endpoints = entries.len(), "panic mode: too few healthy endpoints, balancing across all");
            } else {
                tracing::info!(target: "waypost::balance", target = %target, "panic mode over");
            }
            self.last_panic = table.panic;
        }
        tracing::debug!(
            target: "waypost::balance",
            target = %target,
            endpoints = entries.len(),
            usable = table.len(),
            panic = table.panic,
            status = ?table.status,
            "pick table rebuilt"
        );
        self.context
            .metrics
            .table_built(entries.len(), table.len(), table.panic);
        if let Some(shared) = self.shared.upgrade() {
            shared.table.store(Arc::new(table));
            shared
                .tables_built
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.table_changed.notify_waiters();
        }
    }

    /// `true` while requests wait for a usable endpoint.
    fn requests_waiting(&self) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|shared| shared.waiting.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut next = self.next_interval;
        let waiting = self.requests_waiting();
        let now_ms = self.context.millis_since_epoch(now);
        for tracked in self.tracked.iter() {
            if let Some(until) = tracked.slot.state.shed_deadline(now_ms) {
                next = next.min(after(self.context.epoch, Duration::from_millis(until)));
            }
            if let Some(at) =
                tracked.early_probe_at(waiting, self.context.config.reconnect_backoff.initial)
            {
                next = next.min(at);
            }
            for at in [tracked.ejected_until(), tracked.unreachable_until()]
                .into_iter()
                .flatten()
            {
                next = next.min(at);
            }
            if let (Some(slow), Some(joined)) = (&self.context.config.slow_start, tracked.joined)
                && !self.context.config.policy.is_hashing()
                && now.saturating_duration_since(joined.instant(self.context.epoch)) < slow.window
            {
                let step = (slow.window / 20).max(Duration::from_millis(50));
                next = next.min(after(now, step));
            }
        }
        next
    }

    /// Runs until every balancer clone is dropped (the shared state's drop wakes the task).
    pub(crate) async fn run(mut self, mut watcher: Watcher) {
        let _close_snapshots = CloseSnapshots(Weak::clone(&self.shared));
        let mut discovery_open = true;
        loop {
            let now = Instant::now();
            let deadline = self.next_deadline(now);
            let answered = tokio::select! {
                biased;
                answered = watcher.answered(), if discovery_open => Some(answered),
                _ = self.context.wake.notified() => None,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            if self.shared.strong_count() == 0 {
                self.context.metrics.balancer_dropped();
                return;
            }
            match answered {
                Some(Ok(set)) => {
                    if set.revision() > self.set.revision() {
                        self.apply_set(&set, false);
                    }
                    self.reannounced();
                }
                Some(Err(_)) => discovery_open = false,
                None => {}
            }
            self.answer_snapshots();
            let now = Instant::now();
            self.evaluate_health(now);
            self.rebuild(now);
        }
    }

    /// Discovery answered (with a new set or the same one): the endpoints it still announces
    /// and that could not be reached are tried again soon. Connectors backing off are asked to
    /// retry (no sooner than their initial delay), and unreachable endpoints are probed once the
    /// initial backoff has passed, instead of waiting out backoffs of up to
    /// [`reconnect_backoff`](crate::BalanceConfig::reconnect_backoff)'s maximum.
    fn reannounced(&mut self) {
        let mut disconnected = false;
        for tracked in self.tracked.iter_mut() {
            let state = &tracked.slot.state;
            disconnected |= state.connectivity() == Connectivity::Disconnected;
            if let Some(episodes) = tracked.episodes.as_deref_mut()
                && episodes.unreachable_since.is_some()
            {
                episodes.reannounced = true;
            }
        }
        if disconnected {
            self.context.retry.notify_waiters();
        }
    }

    /// Answers the snapshot requests that came since the last wake (each one wakes the task).
    fn answer_snapshots(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let pending = std::mem::take(
            &mut shared
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pending,
        );
        if pending.is_empty() {
            return;
        }
        let snapshot = self.snapshot(Instant::now());
        for reply in pending {
            let _ = reply.send(snapshot.clone());
        }
    }

    /// What the balancer knows now (see [`Snapshot`]).
    fn snapshot(&self, now: Instant) -> Snapshot {
        let Some(shared) = self.shared.upgrade() else {
            return Snapshot {
                target: self.context.target.to_string(),
                policy: self.context.config.policy.name(),
                mode: crate::snapshot::TableMode::Empty(crate::ErrorKind::NoEndpoints),
                usable_endpoints: 0,
                set_revision: self.set.revision(),
                discovery: self.context.endpoints.health(),
                requests_waiting: 0,
                endpoints: Vec::new(),
            };
        };
        let table = shared.table.load_full();
        let usable: std::collections::HashSet<*const Slot<M::Service>> =
            table.candidates().iter().map(Arc::as_ptr).collect();
        let left = |until: Option<Instant>| until.map(|until| until.saturating_duration_since(now));
        let now_ms = self.context.clock.now_millis();
        let epoch_ms = self.context.millis_since_epoch(now);
        let endpoints = self
            .tracked
            .iter()
            .zip(self.set.as_slice())
            .map(|(tracked, endpoint)| {
                let state = &tracked.slot.state;
                let ramp = self.ramp(tracked, now);
                EndpointSnapshot {
                    address: endpoint.address(),
                    zone: endpoint.zone().map(str::to_owned),
                    weight: endpoint.weight(),
                    readiness: endpoint.readiness(),
                    usable: usable.contains(&Arc::as_ptr(&tracked.slot)),
                    connectivity: state.connectivity(),
                    serving: state.is_serving(),
                    in_flight: state.in_flight(),
                    latency_estimate: self
                        .context
                        .peak_ewma
                        .map(|(tau, _)| state.estimate(now_ms, tau)),
                    consecutive_failures: state.consecutive_failures(),
                    ejections: tracked.ejections,
                    ejected_for: left(tracked.ejected_until()),
                    unreachable_for: left(tracked.unreachable_until()),
                    passed_over_for: state
                        .shed_deadline(epoch_ms)
                        .map(|until| Duration::from_millis(until.saturating_sub(epoch_ms))),
                    slow_start_percent: (ramp < 1.0).then(|| (ramp * 100.0).round() as u8),
                }
            })
            .collect();
        Snapshot {
            target: self.context.target.to_string(),
            policy: self.context.config.policy.name(),
            mode: table.mode(),
            usable_endpoints: table.len(),
            set_revision: self.set.revision(),
            discovery: self.context.endpoints.health(),
            requests_waiting: shared.waiting.load(std::sync::atomic::Ordering::Relaxed)
                + self
                    .context
                    .waiting_for_room
                    .load(std::sync::atomic::Ordering::Relaxed),
            endpoints,
        }
    }

    /// Health evaluation and a rebuild, for the first table.
    pub(crate) fn refresh(&mut self) {
        let now = Instant::now();
        self.evaluate_health(now);
        self.rebuild(now);
    }
}
