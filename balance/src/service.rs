//! The tower service: a balancer every clone shares without a lock, a queue or a worker task.
//!
//! tower's own `p2c::Balance` needs `&mut self` to update its ready cache, so services shared
//! between tasks wrap it in a `Buffer`: one worker task, a channel hop and an allocation per
//! request, all picks serialized on one core. [`Balance`] instead keeps everything a pick reads
//! in an immutable [`PickTable`](crate::table::PickTable) behind an `ArcSwap`, rebuilt by a
//! background task when discovery or health changes, and per-endpoint counters in atomics. Every
//! clone picks on its own thread: a `call` loads the table, picks an endpoint, bumps its
//! in-flight counter and calls a clone of its service. `poll_ready` is always ready; a request
//! that finds no usable endpoint waits in its response future for one, up to
//! [`wait_for_endpoints`](crate::BalanceConfig::wait_for_endpoints), then fails with an
//! [`Error`] that says why.
//!
//! The balancer must be created inside a tokio runtime: it spawns its background task there.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, ServiceExt};
//! use waypost_balance::Balance;
//! use waypost_discovery::{Endpoint, source};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let endpoints = source::from_addresses(
//!     "static:///demo",
//!     ["127.0.0.1:8080".parse().unwrap(), "127.0.0.1:8081".parse().unwrap()],
//! );
//! // A real program makes a client for the endpoint's address here.
//! let mut balance = Balance::new(endpoints, |endpoint: &Endpoint| {
//!     let address = endpoint.address();
//!     tower::service_fn(move |request: &'static str| async move {
//!         Ok::<_, Infallible>(format!("{request} from {address}"))
//!     })
//! });
//! let answer = balance.ready().await.unwrap().call("hello").await.unwrap();
//! assert!(answer.starts_with("hello from 127.0.0.1:808"));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use pin_project::pin_project;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tower::Service;
use tower::util::Oneshot;
use waypost_discovery::Endpoints;

use crate::classify::{Classify, ErrorIsFailure, Outcome};
use crate::config::BalanceConfig;
use crate::error::{BoxError, ConfigError, Error, ErrorKind};
use crate::key::{HashKey, NoHashKey};
use crate::make::MakeEndpoint;
use crate::policy::round_robin::Stripes;
use crate::snapshot::{EndpointSnapshot, Snapshot};
use crate::state::{Clock, EndpointState};
use crate::table::{self, PickTable, Slot, TableStatus};
use crate::updater::{Shared, Updater};

/// A load balancer over the endpoints of an [`Endpoints`] handle: `Clone + Send + Sync`, every
/// clone sharing one state.
///
/// `S` is the per-endpoint service, `K` finds a request's hash key, `C` classifies outcomes.
pub struct Balance<S, K = NoHashKey, C = ErrorIsFailure> {
    shared: Arc<Shared<S>>,
    rng: fastrand::Rng,
    key: K,
    classify: C,
}

impl<S> Balance<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// A balancer with the default configuration over `endpoints`, making each endpoint's
    /// service with `make`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new<M>(endpoints: Endpoints, make: M) -> Self
    where
        M: MakeEndpoint<Service = S>,
    {
        Builder::new(endpoints)
            .build(make)
            .expect("the default configuration is valid")
    }
}

impl Balance<()> {
    /// A builder for a configured balancer (the same as [`Builder::new`]).
    pub fn builder(endpoints: Endpoints) -> Builder {
        Builder::new(endpoints)
    }
}

/// Builds a [`Balance`]: configuration, hash key extractor and response classifier.
#[derive(Debug, Clone)]
pub struct Builder<K = NoHashKey, C = ErrorIsFailure> {
    endpoints: Endpoints,
    config: BalanceConfig,
    key: K,
    classify: C,
}

impl Builder {
    /// A builder with the default configuration, no hash key and [`ErrorIsFailure`].
    pub fn new(endpoints: Endpoints) -> Self {
        Builder {
            endpoints,
            config: BalanceConfig::default(),
            key: NoHashKey,
            classify: ErrorIsFailure,
        }
    }
}

impl<K, C> Builder<K, C> {
    /// Uses `config`.
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// Finds each request's hash key with `key` (for the hashing policies).
    pub fn hash_key<K2>(self, key: K2) -> Builder<K2, C> {
        Builder {
            endpoints: self.endpoints,
            config: self.config,
            key,
            classify: self.classify,
        }
    }

    /// Classifies responses and errors with `classify`.
    pub fn classify<C2>(self, classify: C2) -> Builder<K, C2> {
        Builder {
            endpoints: self.endpoints,
            config: self.config,
            key: self.key,
            classify,
        }
    }

    /// Builds the balancer: makes the services of the current endpoints, builds the first table
    /// and spawns the background task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build<M>(self, make: M) -> Result<Balance<M::Service, K, C>, ConfigError>
    where
        M: MakeEndpoint,
    {
        self.config.validate()?;
        let config = self.config;
        let endpoints = self.endpoints;
        let watcher = endpoints.watch();
        let set = endpoints.load_full();
        let target: Arc<str> = Arc::from(endpoints.target());
        let metrics = crate::metrics::TargetMetrics::new(&target);
        let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
        let context = Arc::new(table::Context {
            target,
            endpoints,
            clock: Clock::new(config.latency_clock),
            peak_ewma: config
                .policy
                .peak_ewma()
                .map(|p| (p.decay.as_secs_f64() * 1000.0, p.failure_penalty)),
            consecutive_failures: config.outlier_detection.consecutive_failures,
            wake: Arc::new(Notify::new()),
            retry: Arc::new(Notify::new()),
            total_in_flight: config
                .policy
                .bounded_load
                .map(|_| Box::new(CachePadded::new(AtomicU64::new(0)))),
            limit: config
                .concurrency_limit
                .as_ref()
                .map(|limit| limit.max_in_flight),
            waiting_for_room: AtomicUsize::new(0),
            room: Notify::new(),
            load_feedback: config.load_feedback.clone(),
            epoch: Instant::now(),
            metrics,
            config,
        });
        let context_limit = context.limit;
        let uses_stripes = context.config.policy.uses_stripes();
        let shared = Arc::new(Shared {
            context,
            table: ArcSwap::from_pointee(PickTable::empty(ErrorKind::NoEndpoints)),
            tables_built: AtomicU64::new(0),
            table_changed: Notify::new(),
            stripes: if uses_stripes {
                Stripes::new(seed)
            } else {
                Stripes::unused()
            },
            clones: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            snapshots: Default::default(),
            limit: context_limit,
        });
        let mut updater = Updater::new(&shared, make);
        updater.apply_set(&set, true);
        updater.refresh();
        tokio::spawn(updater.run(watcher));
        Ok(Balance {
            shared,
            rng: fastrand::Rng::with_seed(seed),
            key: self.key,
            classify: self.classify,
        })
    }
}

impl<S, K, C> Balance<S, K, C> {
    /// The target this balancer serves.
    pub fn target(&self) -> &str {
        &self.shared.context.target
    }

    /// The counters a client built on this balancer records for its target (its retries and
    /// resends; feature `metrics`, see [`metrics`](crate::metrics)).
    pub fn client_metrics(&self) -> crate::metrics::ClientMetrics {
        self.shared.context.metrics.client()
    }

    /// The discovery handle this balancer follows.
    pub fn endpoints(&self) -> &Endpoints {
        &self.shared.context.endpoints
    }

    /// The number of endpoints that may be picked now.
    pub fn usable_endpoints(&self) -> usize {
        self.shared.table.load().len()
    }

    /// `true` while too few endpoints are healthy and the balancer uses all of them.
    pub fn is_panic_mode(&self) -> bool {
        self.shared.table.load().panic
    }

    /// The configuration.
    pub fn config(&self) -> &BalanceConfig {
        &self.shared.context.config
    }

    /// The endpoint a request with hash `key` would be sent to now, without sending anything:
    /// the same pick a [`call`](Service::call) makes (no lock, no allocation), but it does not
    /// count as a request (nor reserve a place under a concurrency limit). `None` when no
    /// endpoint is usable.
    #[inline]
    pub fn pick(&mut self, key: Option<u64>) -> Option<std::net::SocketAddr> {
        self.pick_slot(key, |slot| slot.address())
    }

    /// Picks from the current table and hands the slot to `with` while the table is loaded.
    #[inline]
    fn pick_slot<T>(
        &mut self,
        key: Option<u64>,
        with: impl FnOnce(&Arc<Slot<S>>) -> T,
    ) -> Option<T> {
        let shared = &self.shared;
        let table = shared.table.load();
        table
            .pick(key, &mut self.rng, &shared.stripes, &shared.context)
            .map(with)
    }

    /// Why a request could not be sent now: the error a request that waited `waited` for an
    /// endpoint would fail with (no endpoints, all ejected, discovery failing with its error),
    /// or `None` when an endpoint is usable. Clients whose own deadline ends while a request
    /// waits use it to say why.
    pub fn why_unavailable(&self, waited: std::time::Duration) -> Option<Error> {
        let table = self.shared.table.load();
        match table.status {
            TableStatus::Ready => {
                let limit = self.shared.context.limit?;
                let full = table
                    .pick_with_room(&mut fastrand::Rng::new(), limit)
                    .is_none();
                full.then(|| overloaded(&self.shared, limit, waited))
            }
            TableStatus::Empty(reason) => Some(unavailable(&self.shared, reason, waited)),
        }
    }

    /// How many tables were installed so far.
    #[cfg(test)]
    pub(crate) fn tables_built(&self) -> u64 {
        self.shared.tables_built.load(Ordering::Relaxed)
    }

    /// Requests in flight per usable endpoint, for diagnostics and tests.
    pub fn in_flight(&self) -> Vec<(std::net::SocketAddr, u32)> {
        self.shared
            .table
            .load()
            .candidates()
            .iter()
            .map(|slot| (slot.address(), slot.state.in_flight()))
            .collect()
    }
}

impl<S, K, C> Balance<S, K, C>
where
    S: Send + Sync + 'static,
{
    /// What the balancer knows now, per endpoint and for its table: see [`Snapshot`]. Answered
    /// by the balancer's background task, between two of its updates; requests are not slowed.
    pub fn snapshot(&self) -> impl Future<Output = Snapshot> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let asked = self.shared.request_snapshot(reply);
        let shared = Arc::clone(&self.shared);
        async move {
            if asked && let Ok(snapshot) = answer.await {
                return snapshot;
            }
            // The task is gone (it panicked): what the request path can see.
            table_only_snapshot(&shared)
        }
    }
}

impl<S, K: Clone, C: Clone> Clone for Balance<S, K, C> {
    fn clone(&self) -> Self {
        // Every clone needs its own random sequence: programs clone a client per request, and
        // clones sharing one sequence would all pick the same pair. The thread's generator
        // seeds it without touching shared state; a configured seed stays reproducible.
        let rng = match self.shared.context.config.seed {
            None => fastrand::Rng::with_seed(fastrand::u64(..)),
            Some(seed) => {
                let clone = self.shared.clones.fetch_add(1, Ordering::Relaxed);
                fastrand::Rng::with_seed(
                    seed ^ clone.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            }
        };
        Balance {
            shared: Arc::clone(&self.shared),
            rng,
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, K, C> fmt::Debug for Balance<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.shared.table.load();
        f.debug_struct("Balance")
            .field("target", &self.shared.context.target)
            .field("policy", &self.shared.context.config.policy)
            .field("usable_endpoints", &table.len())
            .field("panic", &table.panic)
            .finish()
    }
}

impl<S, K, C, Request> Service<Request> for Balance<S, K, C>
where
    S: Service<Request> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    K: HashKey<Request>,
    C: Classify<S::Response, S::Error>,
    Request: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, Request, C>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Readiness is decided per request, from the table current when it is called.
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, request: Request) -> Self::Future {
        let key = self.key.hash_key(&request);
        let Some(limit) = self.shared.limit else {
            return match self.pick_slot(key, Arc::clone) {
                Some(slot) => {
                    ResponseFuture::calling(InFlight::start(slot), request, self.classify.clone())
                }
                None => ResponseFuture::waiting(
                    Arc::clone(&self.shared),
                    key,
                    self.rng.fork(),
                    request,
                    self.classify.clone(),
                ),
            };
        };
        let shared = &self.shared;
        match begin_limited(shared, &shared.table.load(), key, &mut self.rng, limit) {
            Begin::Started(in_flight) => {
                ResponseFuture::calling(in_flight, request, self.classify.clone())
            }
            Begin::Full(limit) if shared.context.config.concurrency_limit_fails() => {
                ResponseFuture::failed(
                    overloaded(shared, limit, std::time::Duration::ZERO),
                    request,
                    self.classify.clone(),
                )
            }
            Begin::Full(_) | Begin::Empty => ResponseFuture::waiting(
                Arc::clone(shared),
                key,
                self.rng.fork(),
                request,
                self.classify.clone(),
            ),
        }
    }
}

/// What a request found when it tried to start on an endpoint.
enum Begin<S> {
    /// Counted in flight on its endpoint.
    Started(InFlight<S>),
    /// Every usable endpoint is at the concurrency limit (the limit).
    Full(u32),
    /// Nothing usable.
    Empty,
}

/// Picks from `table` and starts the request there, under the concurrency `limit`: when the
/// policy's pick is full, another endpoint with room is taken; [`Begin::Full`] when none has.
fn begin_limited<S>(
    shared: &Shared<S>,
    table: &PickTable<S>,
    key: Option<u64>,
    rng: &mut fastrand::Rng,
    limit: u32,
) -> Begin<S> {
    let Some(slot) = table.pick(key, rng, &shared.stripes, &shared.context) else {
        return Begin::Empty;
    };
    if let Some(in_flight) = InFlight::try_start(slot, limit) {
        return Begin::Started(in_flight);
    }
    // Other requests may take the room found before this one does: a few tries.
    for _ in 0..4 {
        match table.pick_with_room(rng, limit) {
            Some(slot) => {
                if let Some(in_flight) = InFlight::try_start(slot, limit) {
                    return Begin::Started(in_flight);
                }
            }
            None => break,
        }
    }
    Begin::Full(limit)
}

/// Picks from `table` and starts the request there, with or without a concurrency limit.
fn begin<S>(
    shared: &Shared<S>,
    table: &PickTable<S>,
    key: Option<u64>,
    rng: &mut fastrand::Rng,
) -> Begin<S> {
    match shared.context.limit {
        Some(limit) => begin_limited(shared, table, key, rng, limit),
        None => match table.pick(key, rng, &shared.stripes, &shared.context) {
            Some(slot) => Begin::Started(InFlight::start(Arc::clone(slot))),
            None => Begin::Empty,
        },
    }
}

/// A snapshot from the current table alone, without the task's records.
fn table_only_snapshot<S>(shared: &Shared<S>) -> Snapshot {
    let table = shared.table.load();
    let context = &shared.context;
    Snapshot {
        target: context.target.to_string(),
        policy: shared.context.config.policy.name(),
        mode: table.mode(),
        usable_endpoints: table.len(),
        set_revision: context.endpoints.revision(),
        discovery: context.endpoints.health(),
        requests_waiting: shared.waiting.load(Ordering::Relaxed),
        endpoints: table
            .candidates()
            .iter()
            .map(|slot| EndpointSnapshot {
                address: slot.address(),
                zone: None,
                weight: 0,
                readiness: waypost_discovery::Readiness::Ready,
                usable: true,
                connectivity: slot.state.connectivity(),
                serving: slot.state.is_serving(),
                in_flight: slot.state.in_flight(),
                latency_estimate: None,
                consecutive_failures: slot.state.consecutive_failures(),
                ejections: 0,
                ejected_for: None,
                unreachable_for: None,
                passed_over_for: None,
                slow_start_percent: None,
            })
            .collect(),
    }
}

/// Counts a request in flight on its endpoint until it completes or is dropped.
struct InFlight<S> {
    slot: Arc<Slot<S>>,
    /// A reading of the balancer's clock, for Peak EWMA.
    started: Option<u64>,
    /// The endpoint's connectivity when the request started: its failure to reach the endpoint
    /// counts only if no connector report came since.
    connectivity: u32,
    finished: bool,
}

impl<S> InFlight<S> {
    #[inline(always)]
    fn start(slot: Arc<Slot<S>>) -> Self {
        let started = Self::before_start(&slot);
        slot.state.start_request();
        Self::started(slot, started)
    }

    /// Starts a request on `slot` if it has fewer than `limit` in flight.
    #[inline]
    fn try_start(slot: &Arc<Slot<S>>, limit: u32) -> Option<Self> {
        let started = Self::before_start(slot);
        slot.state
            .try_start_request(limit)
            .then(|| Self::started(Arc::clone(slot), started))
    }

    /// The clock reading a request starts at, when something measures it; for Peak EWMA, the
    /// endpoint's requests in flight are looked at first (see [`EndpointState::before_start`]).
    #[inline(always)]
    fn before_start(slot: &Slot<S>) -> Option<u64> {
        let context = &slot.context;
        match context.peak_ewma {
            None => crate::metrics::TIMES_REQUESTS.then(|| context.clock.now()),
            Some((tau, _)) => Some(peak_ewma_start(&slot.state, context, tau)),
        }
    }

    /// The bookkeeping of a request already counted in the endpoint's started requests.
    #[inline]
    fn started(slot: Arc<Slot<S>>, started: Option<u64>) -> Self {
        slot.metrics.request_started();
        if let Some(total) = &slot.context.total_in_flight {
            total.fetch_add(1, Ordering::Relaxed);
        }
        let connectivity = slot.state.connectivity_stamp();
        InFlight {
            slot,
            started,
            connectivity,
            finished: false,
        }
    }

    #[inline(always)]
    fn finish(&mut self, outcome: Outcome) {
        self.finished = true;
        let slot = &self.slot;
        let context = &slot.context;
        let state = &slot.state;
        self.end();
        if let Some(started) = self.started {
            let now = context.clock.now();
            let latency_ns = context.clock.nanos_between(started, now);
            slot.metrics
                .outcome(&outcome, std::time::Duration::from_nanos(latency_ns));
            if let Some((tau, penalty)) = context.peak_ewma {
                let latency_ns = if outcome == Outcome::Success {
                    latency_ns
                } else {
                    latency_ns.max(u64::try_from(penalty.as_nanos()).unwrap_or(u64::MAX))
                };
                let now_ms = context.clock.millis_at(now);
                state.progressed(now_ms);
                state.observe_nanos(latency_ns, now_ms, tau);
            }
        }
        match outcome {
            Outcome::Success => {
                state.record_success();
                state.after_success();
            }
            unwell => self.record_unwell(unwell),
        }
    }

    /// What a failed, overloaded or unreachable outcome does to the endpoint's state: off the
    /// common path, so a success stays short.
    #[cold]
    #[inline(never)]
    fn record_unwell(&self, outcome: Outcome) {
        let context = &self.slot.context;
        let state = &self.slot.state;
        if outcome == Outcome::Success {
            return;
        }
        let in_a_row = state.record_failure();
        state.mark_suspect();
        match outcome {
            Outcome::Success => {}
            // An overloaded answer is a failure too, and it also passes the endpoint over.
            Outcome::Failure | Outcome::Overloaded { .. } => {
                if in_a_row == context.consecutive_failures {
                    context.wake.notify_one();
                }
            }
            Outcome::Unreachable => {
                if state.mark_unreachable_since(self.connectivity) {
                    context.wake.notify_one();
                    context.endpoints.request_refresh();
                }
            }
        }
        if let (Outcome::Overloaded { retry_after }, Some(feedback)) =
            (outcome, &context.load_feedback)
        {
            let backoff = feedback.backoff(retry_after, in_a_row);
            if !backoff.is_zero() {
                let until = context
                    .millis_since_epoch(Instant::now())
                    .saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
                if state.shed_until(until) {
                    // The task learns when the period ends.
                    context.wake.notify_one();
                }
            }
        }
    }

    fn end(&self) {
        let context = &self.slot.context;
        self.slot.state.end_request();
        self.slot.metrics.request_ended();
        if let Some(total) = &context.total_in_flight {
            total.fetch_sub(1, Ordering::Relaxed);
        }
        if context.limit.is_some() {
            wake_one_waiting_for_room(context);
        }
    }
}

/// The clock reading a Peak EWMA request starts at, after the endpoint's requests in flight
/// were looked at ([`EndpointState::before_start`]).
#[inline]
fn peak_ewma_start(state: &EndpointState, context: &crate::table::Context, tau: f64) -> u64 {
    let now = context.clock.now();
    state.before_start(context.clock.millis_at(now), tau);
    now
}

/// After a request ended under a concurrency limit: wakes one request waiting for room.
#[cold]
#[inline(never)]
fn wake_one_waiting_for_room(context: &crate::table::Context) {
    // Pairs with the fence of a request that starts waiting for room: either it sees this end,
    // or this sees it waiting and wakes it.
    fence(Ordering::SeqCst);
    if context.waiting_for_room.load(Ordering::Relaxed) > 0 {
        context.room.notify_one();
    }
}

impl<S> Drop for InFlight<S> {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            self.cancelled();
        }
    }
}

impl<S> InFlight<S> {
    /// Dropped before its outcome: the request no longer loads the endpoint, and it is no
    /// success or failure of the endpoint's. For Peak EWMA, though, the endpoint took at least
    /// this long: a request its caller gave up on after a deadline shows a slow endpoint.
    #[cold]
    #[inline(never)]
    fn cancelled(&self) {
        self.end();
        self.slot.metrics.cancelled();
        let context = &self.slot.context;
        if let (Some(started), Some((tau, _))) = (self.started, context.peak_ewma) {
            let now = context.clock.now();
            let elapsed = context.clock.between(started, now);
            let now_ms = context.clock.millis_at(now);
            self.slot.state.progressed(now_ms);
            if self.slot.state.observe_at_least(elapsed, now_ms, tau) {
                self.slot.state.mark_suspect();
            }
        }
    }
}

type WaitFuture<S> = Pin<Box<dyn Future<Output = Result<InFlight<S>, Error>> + Send>>;

#[pin_project(project = StateProj)]
enum State<S, Request>
where
    S: Service<Request>,
{
    Calling {
        #[pin]
        call: Oneshot<S, Request>,
        in_flight: InFlight<S>,
    },
    Waiting {
        wait: WaitFuture<S>,
        request: Option<Request>,
    },
}

/// The response future of [`Balance`].
#[pin_project]
pub struct ResponseFuture<S, Request, C>
where
    S: Service<Request>,
{
    #[pin]
    state: State<S, Request>,
    classify: C,
}

impl<S, Request, C> ResponseFuture<S, Request, C>
where
    S: Service<Request> + Clone + Send + Sync + 'static,
    Request: Send + 'static,
{
    #[inline(always)]
    fn calling(in_flight: InFlight<S>, request: Request, classify: C) -> Self {
        ResponseFuture {
            state: Self::call_state(in_flight, request),
            classify,
        }
    }

    /// A future that fails at once with `error` (every endpoint full, [`WhenFull::Fail`]). It
    /// reuses the waiting state, so that the common states keep their size; the box is made
    /// only on this path.
    ///
    /// [`WhenFull::Fail`]: crate::WhenFull::Fail
    fn failed(error: Error, request: Request, classify: C) -> Self {
        ResponseFuture {
            state: State::Waiting {
                wait: Box::pin(std::future::ready(Err(error))),
                request: Some(request),
            },
            classify,
        }
    }

    #[inline(always)]
    fn call_state(in_flight: InFlight<S>, request: Request) -> State<S, Request> {
        let slot = &in_flight.slot;
        // No span per request: even a disabled one costs its checks at creation, at each poll
        // and at drop, about 40 instructions per call (a tenth of the call). An endpoint's
        // failure names the target and the endpoint in its error.
        let call = Oneshot::new(slot.service.clone(), request);
        State::Calling { call, in_flight }
    }

    fn waiting(
        shared: Arc<Shared<S>>,
        key: Option<u64>,
        mut rng: fastrand::Rng,
        request: Request,
        classify: C,
    ) -> Self {
        let wait = Box::pin(async move {
            let started = Instant::now();
            // Counted while it waits: the background task probes unreachable endpoints early
            // for waiting requests instead of letting them wait out a long backoff.
            let _waiting = Waiting::start(&shared);
            let deadline = crate::state::after(started, shared.context.config.wait_for_endpoints);
            let mut waiting_for_room = None;
            loop {
                // Registered before the table is read: a table installed after the read wakes
                // this request.
                let changed = shared.table_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let room = shared.context.room.notified();
                tokio::pin!(room);
                if waiting_for_room.is_some() {
                    room.as_mut().enable();
                }
                let table = shared.table.load_full();
                let limit = match begin(&shared, &table, key, &mut rng) {
                    Begin::Started(in_flight) => return Ok(in_flight),
                    Begin::Full(limit) => Some(limit),
                    Begin::Empty => None,
                };
                if let Some(limit) = limit {
                    let waited = Instant::now().saturating_duration_since(started);
                    if shared.context.config.concurrency_limit_fails() {
                        return Err(overloaded(&shared, limit, waited));
                    }
                    if waiting_for_room.is_none() {
                        // Counted first, then looked again: an end that came before the count
                        // is seen by the next look, one after it wakes this request.
                        waiting_for_room = Some(RoomWaiting::start(&shared.context));
                        continue;
                    }
                    tokio::select! {
                        _ = &mut room => continue,
                        _ = &mut changed => continue,
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                    let waited = Instant::now().saturating_duration_since(started);
                    return Err(overloaded(&shared, limit, waited));
                }
                let reason = match table.status {
                    TableStatus::Empty(reason) => reason,
                    TableStatus::Ready => ErrorKind::NoEndpoints,
                };
                if reason == ErrorKind::NoEndpoints && confirmed_empty(&shared.context.endpoints) {
                    // Discovery answered that there is nothing (a name confirmed NXDOMAIN, a
                    // Service without endpoints): waiting would not change the answer.
                    let waited = Instant::now().saturating_duration_since(started);
                    return Err(unavailable(&shared, reason, waited));
                }
                match tokio::time::timeout_at(deadline, &mut changed).await {
                    Ok(()) => continue,
                    _ => {
                        let waited = Instant::now().saturating_duration_since(started);
                        return Err(unavailable(&shared, reason, waited));
                    }
                }
            }
        });
        ResponseFuture {
            state: State::Waiting {
                wait,
                request: Some(request),
            },
            classify,
        }
    }
}

/// `true` when the source answered with an empty set and has not failed since.
fn confirmed_empty(endpoints: &Endpoints) -> bool {
    let set = endpoints.load();
    set.is_empty() && set.revision() > 0 && endpoints.health().is_current()
}

/// Counts a request waiting for room under the concurrency limit, until dropped.
struct RoomWaiting<'a> {
    context: &'a crate::table::Context,
}

impl<'a> RoomWaiting<'a> {
    fn start(context: &'a crate::table::Context) -> Self {
        context.waiting_for_room.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence after a request ends (see `InFlight::end`).
        fence(Ordering::SeqCst);
        RoomWaiting { context }
    }
}

impl Drop for RoomWaiting<'_> {
    fn drop(&mut self) {
        self.context
            .waiting_for_room
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The error for a request that found every usable endpoint at the concurrency limit.
fn overloaded<S>(shared: &Shared<S>, limit: u32, waited: std::time::Duration) -> Error {
    let context = &shared.context;
    tracing::debug!(target: "waypost::balance", target = %context.target, limit, "every usable endpoint is at its concurrency limit");
    Error::overloaded(Arc::clone(&context.target), limit, waited)
}

/// Counts a request waiting for an endpoint, until dropped.
struct Waiting<'a, S> {
    shared: &'a Shared<S>,
}

impl<'a, S> Waiting<'a, S> {
    fn start(shared: &'a Shared<S>) -> Self {
        if shared.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            shared.context.wake.notify_one();
        }
        Waiting { shared }
    }
}

impl<S> Drop for Waiting<'_, S> {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The error for a request that found nothing to pick, with discovery's failure when that is
/// the cause.
fn unavailable<S>(shared: &Shared<S>, reason: ErrorKind, waited: std::time::Duration) -> Error {
    let context = &shared.context;
    let health = context.endpoints.health();
    let set_empty = context.endpoints.load().is_empty();
    if reason == ErrorKind::NoEndpoints && set_empty && health.is_failing() {
        return Error::unavailable(
            ErrorKind::Discovery,
            Arc::clone(&context.target),
            waited,
            health.last_error().cloned(),
        );
    }
    tracing::debug!(target: "waypost::balance", target = %context.target, reason = ?reason, "no usable endpoint before the deadline");
    Error::unavailable(reason, Arc::clone(&context.target), waited, None)
}

/// Records a call's outcome on its endpoint and makes the balancer's answer.
#[inline(always)]
fn complete<S, Request, C>(
    in_flight: &mut InFlight<S>,
    classify: &C,
    result: Result<S::Response, S::Error>,
) -> Result<S::Response, Error>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    match result {
        Ok(response) => {
            in_flight.finish(classify.classify_response(&response));
            Ok(response)
        }
        Err(error) => {
            in_flight.finish(classify.classify_error(&error));
            let slot = &in_flight.slot;
            Err(Error::endpoint(
                Arc::clone(&slot.context.target),
                slot.address(),
                error.into(),
            ))
        }
    }
}

impl<S, Request, C> Future for ResponseFuture<S, Request, C>
where
    S: Service<Request> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    Request: Send + 'static,
{
    type Output = Result<S::Response, Error>;

    // The call, this poll and the completion are always inlined into the caller: left to the
    // compiler, they were inlined only where a program had one caller of the future's type,
    // and each function call cost about 15 instructions of saved registers and moves, 45 per
    // request (`instructions`).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (result, in_flight) = match this.state.as_mut().project() {
                StateProj::Calling { call, in_flight } => (ready!(call.poll(cx)), in_flight),
                StateProj::Waiting { wait, request } => {
                    let in_flight = ready!(wait.as_mut().poll(cx))?;
                    let request = request
                        .take()
                        .expect("the request is taken once, when the wait ends");
                    this.state.set(Self::call_state(in_flight, request));
                    continue;
                }
            };
            return Poll::Ready(complete(in_flight, this.classify, result));
        }
    }
}

impl<S, Request, C> fmt::Debug for ResponseFuture<S, Request, C>
where
    S: Service<Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { in_flight, .. } => format!("calling {}", in_flight.slot.address()),
            State::Waiting { .. } => "waiting for an endpoint".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use waypost_discovery::{Endpoint, Publisher};

    use super::*;
    use crate::config::SlowStart;
    use crate::policy::Policy;

    fn addr(port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn build(
        publisher: &Publisher,
        policy: Policy,
    ) -> Balance<tower::util::BoxCloneSyncService<(), u16, Infallible>> {
        Balance::builder(publisher.endpoints())
            .config(BalanceConfig {
                slow_start: Some(SlowStart::new(Duration::from_secs(10))),
                ..BalanceConfig::with_policy(policy)
            })
            .build(|endpoint: &Endpoint| {
                let port = endpoint.address().port();
                tower::util::BoxCloneSyncService::new(tower::service_fn(move |_: ()| async move {
                    Ok::<_, Infallible>(port)
                }))
            })
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn random_set_changes_keep_the_tracked_endpoints_and_their_state() {
        let mut publisher = Publisher::new("static:///test");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut current: Vec<u16> = (1..=40).collect();
        publisher.publish(current.iter().map(|&port| Endpoint::new(addr(port))));
        let mut balance = Balance::builder(publisher.endpoints())
            .config(BalanceConfig::with_policy(Policy::round_robin()))
            .build(|endpoint: &Endpoint| {
                let port = endpoint.address().port();
                tower::service_fn(move |()| async move {
                    // Never answers: each call stays in flight while the future lives.
                    std::future::pending::<()>().await;
                    Ok::<_, Infallible>(port)
                })
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        // One request in flight on every endpoint of the first set.
        let mut held: Vec<_> = Vec::new();
        while held.len() < current.len() {
            held.push(balance.call(()));
        }
        let first: Vec<u16> = current.clone();
        assert!(
            balance.in_flight().iter().all(|&(_, n)| n == 1),
            "one request on each endpoint"
        );
        // Endpoints present in every set so far: their request still counts.
        let mut continuous: std::collections::BTreeSet<u16> = first.into_iter().collect();
        for round in 0..200 {
            // Small changes mostly (one endpoint in or out), sometimes large ones.
            let next: Vec<u16> = if round % 10 == 9 {
                (1..=120).filter(|_| rng.bool()).collect()
            } else {
                let mut next = current.clone();
                let port = rng.u16(1..=120);
                match next.binary_search(&port) {
                    Ok(index) => {
                        next.remove(index);
                    }
                    Err(index) => next.insert(index, port),
                }
                next
            };
            publisher.publish(next.iter().map(|&port| Endpoint::new(addr(port))));
            tokio::time::sleep(Duration::from_millis(1)).await;
            let seen = balance.in_flight();
            let ports: Vec<u16> = seen.iter().map(|(address, _)| address.port()).collect();
            assert_eq!(
                ports, next,
                "round {round}: the table holds exactly the set, in order"
            );
            continuous.retain(|port| next.binary_search(port).is_ok());
            for (address, in_flight) in seen {
                // A kept endpoint keeps its state; one that left and came back starts afresh.
                let expected = u32::from(continuous.contains(&address.port()));
                assert_eq!(in_flight, expected, "round {round}: {address}");
            }
            current = next;
        }
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn tables_are_rebuilt_only_when_an_input_changed() {
        let mut publisher = Publisher::new("static:///test");
        publisher.publish([Endpoint::new(addr(1))]);
        let hashing = build(&publisher, Policy::maglev());
        let ramping = build(&publisher, Policy::round_robin());
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (hashing_before, ramping_before) = (hashing.tables_built(), ramping.tables_built());

        // A new endpoint: slow start ramps it over 10 s.
        publisher.publish([Endpoint::new(addr(1)), Endpoint::new(addr(2))]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            hashing.tables_built() - hashing_before,
            1,
            "a hashing policy ignores slow start: one table for the new set"
        );
        let ramped = ramping.tables_built() - ramping_before;
        assert!(ramped > 2, "the ramp is followed: {ramped} tables");

        // Wakes that change nothing (outlier intervals, an unchanged set) build nothing.
        let (hashing_before, ramping_before) = (hashing.tables_built(), ramping.tables_built());
        publisher.publish([Endpoint::new(addr(1)), Endpoint::new(addr(2))]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(hashing.tables_built(), hashing_before);
        assert_eq!(ramping.tables_built(), ramping_before);
    }
}
