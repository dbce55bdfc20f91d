//! The lock-free endpoint handle that every request reads, and the publisher sources write with.
//!
//! A discovery source owns a [`Publisher`]; everything else holds [`Endpoints`] handles. The
//! current [`EndpointSet`] lives in an [`arc_swap::ArcSwap`]: [`Endpoints::load`] is a few atomic
//! operations on the reader's own thread-local slot, with no lock, no allocation and no
//! reference-count traffic shared with other readers, so request threads never wait on each other
//! nor on the source. The publisher builds the next snapshot off the hot path and installs it in
//! one swap; readers see either the old set or the new one, never a mix.
//!
//! Besides the set, the handle carries the source's [`Health`] (initial, current, or failing since
//! a given instant with the last error) and wakes [`Watcher`]s on every change. A watcher that is
//! slow may skip intermediate revisions, but it always ends on the newest one: it is woken after
//! the newest set is installed and then reads the current set, not a queued one.
//!
//! When the publisher is dropped the source is closed: the last set stays readable, and watchers
//! report [`DiscoveryErrorKind::Closed`](crate::DiscoveryErrorKind::Closed) once they have seen it.
//!
//! ```
//! use waypost_discovery::{Endpoint, Publisher};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut publisher = Publisher::new("static:///demo");
//! let endpoints = publisher.endpoints();
//! let mut watcher = endpoints.watch();
//!
//! publisher.publish([Endpoint::new("127.0.0.1:8080".parse().unwrap())]);
//! let set = watcher.changed().await.unwrap();
//! assert_eq!(set.revision(), 1);
//! assert_eq!(endpoints.load().len(), 1);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::{ArcSwap, Cache, Guard};
use futures_core::Stream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::error::DiscoveryError;
use crate::set::EndpointSet;

struct Shared {
    target: Arc<str>,
    current: ArcSwap<EndpointSet>,
    health: ArcSwap<Health>,
    closed: AtomicBool,
    refresh: Notify,
}

/// The read handle over a target's current endpoints: `Clone + Send + Sync`, and cheap to clone.
///
/// Made by [`Publisher::endpoints`] (or a source that owns the publisher).
#[derive(Clone)]
pub struct Endpoints {
    shared: Arc<Shared>,
    notify: watch::Receiver<u64>,
}

/// A loaded snapshot: dereferences to `Arc<EndpointSet>`. Hold it briefly (for one request);
/// use [`Endpoints::load_full`] to keep a set for longer.
pub type SetGuard = Guard<Arc<EndpointSet>>;

impl Endpoints {
    /// The current set, without a lock or an allocation.
    #[inline]
    pub fn load(&self) -> SetGuard {
        self.shared.current.load()
    }

    /// The current set as an owned `Arc`, for holding across awaits or long computations.
    pub fn load_full(&self) -> Arc<EndpointSet> {
        self.shared.current.load_full()
    }

    /// The revision of the current set; 0 until the source first publishes.
    pub fn revision(&self) -> u64 {
        self.shared.current.load().revision()
    }

    /// The source's health now.
    pub fn health(&self) -> Health {
        Health::clone(&self.shared.health.load())
    }

    /// The target this handle resolves, as written in logs and errors.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// `true` once the source has stopped: the set will not change any more.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Asks the source to look again soon, for instance after connections to an endpoint
    /// failed. Requests made before the source gets to them collapse into one; sources that
    /// follow a push stream (Kubernetes) may ignore them, and sources that poll (DNS) rate-limit
    /// them. Never blocks.
    pub fn request_refresh(&self) {
        self.shared.refresh.notify_one();
    }

    /// A reader that keeps the current set and checks it with one atomic load, for a caller that
    /// has `&mut` access on its hot path (a tower service's `call`).
    pub fn cached(&self) -> CachedEndpoints {
        CachedEndpoints {
            cache: Cache::new(SetCell(Arc::clone(&self.shared))),
            endpoints: self.clone(),
        }
    }

    /// A watcher that reports sets newer than the current one.
    pub fn watch(&self) -> Watcher {
        let mut notify = self.notify.clone();
        notify.borrow_and_update();
        let health = self.shared.health.load();
        Watcher {
            seen_health: health.generation,
            seen_answers: health.answers,
            shared: Arc::clone(&self.shared),
            seen: self.revision(),
            notify,
        }
    }

    /// Waits for the source's first answer.
    ///
    /// Returns the set once the source has published one (it may be empty when the source
    /// confirmed there are no endpoints). While the source has failed and never answered, returns
    /// its last error at once; the source keeps retrying in the background, so a caller that
    /// wants to wait longer can [`watch`](Self::watch) for the next outcome and ask again.
    /// Returns a [`Closed`](crate::DiscoveryErrorKind::Closed) error if the source stopped
    /// without ever answering.
    pub async fn resolved(&self) -> Result<Arc<EndpointSet>, DiscoveryError> {
        let mut notify = self.notify.clone();
        loop {
            notify.borrow_and_update();
            let set = self.load_full();
            if set.revision() > 0 {
                return Ok(set);
            }
            if let Some(error) = self.health().last_error {
                return Err(error);
            }
            if self.is_closed() || notify.changed().await.is_err() {
                let set = self.load_full();
                if set.revision() > 0 {
                    return Ok(set);
                }
                return Err(DiscoveryError::closed(&self.shared.target));
            }
        }
    }
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("target", &self.shared.target)
            .field("current", &self.shared.current.load())
            .field("health", &self.shared.health.load())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Lets [`arc_swap::Cache`] reach the set inside the shared state.
#[derive(Clone)]
struct SetCell(Arc<Shared>);

impl std::ops::Deref for SetCell {
    type Target = ArcSwap<EndpointSet>;

    fn deref(&self) -> &ArcSwap<EndpointSet> {
        &self.0.current
    }
}

/// An [`Endpoints`] handle that keeps the last set it loaded. Made by [`Endpoints::cached`].
///
/// [`load`](Self::load) compares the kept set's pointer with the current one (one atomic load)
/// and reloads only when a new set was published. It is for one owner with `&mut` access; clone
/// it to give each owner its own. The kept set stays alive until the next `load` that sees a
/// newer one.
#[derive(Clone)]
pub struct CachedEndpoints {
    cache: Cache<SetCell, Arc<EndpointSet>>,
    endpoints: Endpoints,
}

impl CachedEndpoints {
    /// The current set.
    #[inline]
    pub fn load(&mut self) -> &Arc<EndpointSet> {
        self.cache.load()
    }

    /// The shared handle this reader follows.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl fmt::Debug for CachedEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedEndpoints")
            .field("target", &self.endpoints.shared.target)
            .finish()
    }
}

/// Waits for new sets of one [`Endpoints`] handle. Made by [`Endpoints::watch`].
pub struct Watcher {
    shared: Arc<Shared>,
    seen: u64,
    seen_health: u64,
    seen_answers: u64,
    notify: watch::Receiver<u64>,
}

impl Watcher {
    /// Waits for a set newer than the last one this watcher returned, and returns the newest.
    ///
    /// Intermediate revisions may be skipped, the newest never is. After the source closes and
    /// its last set was returned, returns a [`Closed`](crate::DiscoveryErrorKind::Closed) error.
    pub async fn changed(&mut self) -> Result<Arc<EndpointSet>, DiscoveryError> {
        loop {
            // Mark the notification seen before reading, so a publish that lands after the read
            // wakes the next `changed().await`.
            self.notify.borrow_and_update();
            let set = self.shared.current.load_full();
            if set.revision() > self.seen {
                self.seen = set.revision();
                return Ok(set);
            }
            if self.notify.changed().await.is_err() {
                let set = self.shared.current.load_full();
                if set.revision() > self.seen {
                    self.seen = set.revision();
                    return Ok(set);
                }
                return Err(DiscoveryError::closed(&self.shared.target));
            }
        }
    }

    /// Waits for a change of the source's health since the last one this watcher returned (or
    /// since it was made): it turned current, failing or [gone](Health::is_gone), or failed
    /// again. A refresh that changes nothing is not a change. After the source closes, returns
    /// a [`Closed`](crate::DiscoveryErrorKind::Closed) error once the newest health was
    /// returned.
    pub async fn health_changed(&mut self) -> Result<Health, DiscoveryError> {
        loop {
            self.notify.borrow_and_update();
            if let Some(health) = self.unseen_health() {
                return Ok(health);
            }
            if self.notify.changed().await.is_err() {
                return self
                    .unseen_health()
                    .ok_or_else(|| DiscoveryError::closed(&self.shared.target));
            }
        }
    }

    /// Waits for the source's next successful answer since the last one this watcher saw (or
    /// since it was made), whether the answer changed the set or confirmed it unchanged, and
    /// returns the current set, marked seen as by [`changed`](Self::changed). Several answers
    /// between two calls are returned as one. A caller compares the set's revision with the
    /// last it applied to tell a change from a confirmation: a balancer uses a confirmation to
    /// try endpoints it could not reach again, since discovery still announces them. After the
    /// source closes, returns a [`Closed`](crate::DiscoveryErrorKind::Closed) error once the
    /// newest answer was returned.
    pub async fn answered(&mut self) -> Result<Arc<EndpointSet>, DiscoveryError> {
        loop {
            self.notify.borrow_and_update();
            if let Some(set) = self.unseen_answer() {
                return Ok(set);
            }
            if self.notify.changed().await.is_err() {
                return self
                    .unseen_answer()
                    .ok_or_else(|| DiscoveryError::closed(&self.shared.target));
            }
        }
    }

    fn unseen_answer(&mut self) -> Option<Arc<EndpointSet>> {
        // The health is stored after the set: an answer counted here has its set installed.
        let answers = self.shared.health.load().answers;
        let set = self.shared.current.load_full();
        if answers > self.seen_answers || set.revision() > self.seen {
            self.seen_answers = self.seen_answers.max(answers);
            self.seen = self.seen.max(set.revision());
            Some(set)
        } else {
            None
        }
    }

    fn unseen_health(&mut self) -> Option<Health> {
        let health = self.shared.health.load();
        (health.generation > self.seen_health).then(|| {
            self.seen_health = health.generation;
            Health::clone(&health)
        })
    }

    /// Returns the current set and marks it seen, so [`changed`](Self::changed) waits for a
    /// newer one.
    pub fn current(&mut self) -> Arc<EndpointSet> {
        self.notify.borrow_and_update();
        let set = self.shared.current.load_full();
        self.seen = self.seen.max(set.revision());
        set
    }

    /// Waits for any change of the set or of the source's health, or for the source to close
    /// (then returns `false`).
    pub async fn notified(&mut self) -> bool {
        self.notify.changed().await.is_ok()
    }

    /// The revision of the last set this watcher returned.
    pub fn seen_revision(&self) -> u64 {
        self.seen
    }

    /// The sets this watcher would return from [`changed`](Self::changed), as a stream that
    /// starts with the current set and ends when the source closes.
    pub fn into_stream(mut self) -> impl Stream<Item = Arc<EndpointSet>> + Send + Unpin + 'static {
        let first = self.current();
        Box::pin(futures_util::stream::unfold(
            (self, Some(first)),
            |(mut watcher, first)| async move {
                match first {
                    Some(set) => Some((set, (watcher, None))),
                    None => match watcher.changed().await {
                        Ok(set) => Some((set, (watcher, None))),
                        Err(_) => None,
                    },
                }
            },
        ))
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("target", &self.shared.target)
            .field("seen", &self.seen)
            .finish()
    }
}

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The source has neither answered nor failed yet.
    Initial,
    /// The source's last attempt succeeded: the set is up to date.
    Current,
    /// The source's last attempts failed; the set is the last good one (or the initial empty
    /// set if the source never answered).
    Failing,
}

/// A source's health, as seen through [`Endpoints::health`].
#[derive(Debug, Clone)]
pub struct Health {
    status: Status,
    last_update: Option<Instant>,
    failing_since: Option<Instant>,
    consecutive_failures: u32,
    failures: u64,
    last_error: Option<DiscoveryError>,
    gone: bool,
    /// Counts changes of status, failures and the gone flag, for [`Watcher::health_changed`].
    generation: u64,
    /// Counts successful answers, changed or not, for [`Watcher::answered`].
    answers: u64,
}

impl Health {
    fn initial() -> Self {
        Health {
            status: Status::Initial,
            last_update: None,
            failing_since: None,
            consecutive_failures: 0,
            failures: 0,
            last_error: None,
            gone: false,
            generation: 0,
            answers: 0,
        }
    }

    /// Initial, current or failing.
    pub fn status(&self) -> Status {
        self.status
    }

    /// `true` when the last attempt succeeded.
    pub fn is_current(&self) -> bool {
        self.status == Status::Current
    }

    /// `true` when the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.status == Status::Failing
    }

    /// When the source last answered successfully (even with an unchanged set).
    pub fn last_update(&self) -> Option<Instant> {
        self.last_update
    }

    /// When the current run of failures began, while failing.
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    /// How many attempts in a row failed; 0 after a success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many attempts failed since the source started.
    pub fn total_failures(&self) -> u64 {
        self.failures
    }

    /// The most recent failure, kept after recovery for diagnostics; after
    /// [`is_gone`](Self::is_gone), the confirmation that the target does not exist.
    pub fn last_error(&self) -> Option<&DiscoveryError> {
        self.last_error.as_ref()
    }

    /// How many times the source answered successfully since it started, whether the answer
    /// changed the set or confirmed it (a DNS refresh with the same records counts).
    pub fn answers(&self) -> u64 {
        self.answers
    }

    /// `true` when the source confirmed that its target does not exist (for DNS: the negative
    /// answer came `empty_confirmations` times in a row) and published the empty set for it.
    /// [`last_error`](Self::last_error) says why. The next set with endpoints clears it.
    pub fn is_gone(&self) -> bool {
        self.gone
    }
}

/// The writing side of an [`Endpoints`] handle, owned by a discovery source.
///
/// Dropping it closes the source: handles keep the last set, watchers see it end.
pub struct Publisher {
    shared: Arc<Shared>,
    notify: watch::Sender<u64>,
    stop: Arc<watch::Sender<bool>>,
}

/// What [`Publisher::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publication {
    /// The endpoints changed and were published as this revision.
    Changed(u64),
    /// The endpoints are the same as the current set; only the health was refreshed.
    Unchanged(u64),
}

impl Publication {
    /// The revision now current.
    pub fn revision(self) -> u64 {
        match self {
            Publication::Changed(revision) | Publication::Unchanged(revision) => revision,
        }
    }

    /// `true` when a new revision was published.
    pub fn is_changed(self) -> bool {
        matches!(self, Publication::Changed(_))
    }
}

impl Publisher {
    /// A publisher for `target` (the name used in logs and errors), with the empty set at
    /// revision 0 and [`Status::Initial`].
    pub fn new(target: impl Into<Arc<str>>) -> Self {
        let (notify, _) = watch::channel(0);
        Publisher {
            shared: Arc::new(Shared {
                target: target.into(),
                current: ArcSwap::from_pointee(EndpointSet::empty()),
                health: ArcSwap::from_pointee(Health::initial()),
                closed: AtomicBool::new(false),
                refresh: Notify::new(),
            }),
            notify,
            stop: Arc::new(watch::channel(false).0),
        }
    }

    /// A new read handle.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            shared: Arc::clone(&self.shared),
            notify: self.notify.subscribe(),
        }
    }

    /// The target name.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// The target name, shared.
    pub fn target_arc(&self) -> Arc<str> {
        Arc::clone(&self.shared.target)
    }

    /// The set currently published.
    pub fn current(&self) -> Arc<EndpointSet> {
        self.shared.current.load_full()
    }

    /// Publishes the endpoints of a successful answer and marks the source current.
    ///
    /// The endpoints are sorted and deduplicated as in [`EndpointSet::new`]. If they equal the
    /// current set (and the source has published before), the revision stays and
    /// [`Watcher::changed`] keeps waiting; [`Watcher::answered`] sees the confirmation. The
    /// first publication always creates revision 1, even when
    /// empty, so that [`Endpoints::resolved`] can tell "answered: nothing" from "not yet".
    pub fn publish<I>(&mut self, endpoints: I) -> Publication
    where
        I: IntoIterator<Item = Endpoint>,
    {
        self.publish_set(EndpointSet::new(endpoints))
    }

    /// Like [`publish`](Self::publish), with a set already built; its revision is replaced.
    pub fn publish_set(&mut self, set: EndpointSet) -> Publication {
        self.publish_with(set, None)
    }

    /// Publishes the empty set because the source confirmed that the target does not exist
    /// (a name deleted from DNS): the health is current, [`Health::is_gone`] is `true` and
    /// [`Health::last_error`] is `why`. Logged once as "gone", not as a recovery; publishing it
    /// again while gone only refreshes the health.
    pub fn publish_gone(&mut self, why: DiscoveryError) -> Publication {
        self.publish_with(EndpointSet::default(), Some(why))
    }

    fn publish_with(&mut self, set: EndpointSet, gone: Option<DiscoveryError>) -> Publication {
        let current = self.shared.current.load_full();
        let now = Instant::now();
        let was = self.shared.health.load();
        let is_gone = gone.is_some();
        let newly_gone = is_gone && !(was.gone && was.status == Status::Current);
        if let (true, Some(why)) = (newly_gone, &gone) {
            tracing::warn!(
                target: "waypost::discovery",
                target = %self.shared.target,
                dropped = current.len(),
                reason = %why.detail(),
                "the service is gone; endpoint set emptied"
            );
        }
        let status_changed = was.status != Status::Current || was.gone != is_gone;
        let health = Health {
            status: Status::Current,
            last_update: Some(now),
            failing_since: None,
            consecutive_failures: 0,
            failures: was.failures,
            last_error: gone.or_else(|| was.last_error.clone()),
            gone: is_gone,
            generation: was.generation + u64::from(status_changed),
            answers: was.answers + 1,
        };
        if current.revision() > 0 && current.same_endpoints(&set) {
            self.shared.health.store(Arc::new(health));
            if status_changed && !is_gone {
                tracing::info!(
                    target: "waypost::discovery",
                    target = %self.shared.target,
                    revision = current.revision(),
                    "discovery recovered; endpoint set unchanged"
                );
            }
            // Watchers waiting for a set change go back to sleep; `Watcher::answered` wakes
            // (the endpoints are confirmed: a connector backing off may try again).
            self.wake();
            return Publication::Unchanged(current.revision());
        }
        let revision = current.revision() + 1;
        let set = set.with_revision(revision);
        {
            let diff = current.diff(&set);
            tracing::debug!(
                target: "waypost::discovery",
                target = %self.shared.target,
                revision,
                endpoints = set.len(),
                added = diff.added.len(),
                removed = diff.removed.len(),
                changed = diff.changed.len(),
                "endpoint set updated"
            );
        }
        if was.status == Status::Failing && !is_gone {
            tracing::info!(
                target: "waypost::discovery",
                target = %self.shared.target,
                revision,
                "discovery recovered"
            );
        }
        self.shared.current.store(Arc::new(set));
        self.shared.health.store(Arc::new(health));
        self.wake();
        Publication::Changed(revision)
    }

    /// Records a failed attempt: the set stays as it is, the health turns
    /// [`Failing`](Status::Failing) with this error.
    pub fn report_failure(&mut self, error: DiscoveryError) {
        let was = self.shared.health.load();
        let now = Instant::now();
        let consecutive_failures = was.consecutive_failures.saturating_add(1);
        if consecutive_failures == 1 {
            tracing::warn!(
                target: "waypost::discovery",
                target = %self.shared.target,
                error = %error,
                "discovery failing; keeping the last good endpoint set"
            );
        } else {
            tracing::debug!(
                target: "waypost::discovery",
                target = %self.shared.target,
                error = %error,
                consecutive_failures,
                "discovery still failing"
            );
        }
        self.shared.health.store(Arc::new(Health {
            status: Status::Failing,
            last_update: was.last_update,
            failing_since: was.failing_since.or(Some(now)),
            consecutive_failures,
            failures: was.failures + 1,
            last_error: Some(error),
            gone: was.gone,
            generation: was.generation + 1,
            answers: was.answers,
        }));
        self.wake();
    }

    /// Completes when a reader called [`Endpoints::request_refresh`]. Requests made while nobody
    /// waits are kept (collapsed into one) for the next call.
    pub async fn refresh_requested(&self) {
        self.shared.refresh.notified().await
    }

    /// `true` while at least one [`Endpoints`] handle or [`Watcher`] exists.
    pub fn has_readers(&self) -> bool {
        self.notify.receiver_count() > 0
    }

    /// Completes when every [`Endpoints`] handle and [`Watcher`] is gone, so a source task can
    /// stop when nobody reads its results.
    pub async fn readers_gone(&self) {
        self.notify.closed().await
    }

    /// Completes when a [`StopSignal`] of this publisher asked the source to stop.
    pub async fn stop_requested(&self) {
        let mut stop = self.stop.subscribe();
        // The publisher holds a sender, so the channel never closes while it waits.
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// Completes when the source should end: every reader is gone
    /// ([`readers_gone`](Self::readers_gone)) or a stop was requested
    /// ([`stop_requested`](Self::stop_requested)). What a source task selects on.
    pub async fn should_stop(&self) {
        let readers_gone = std::pin::pin!(self.readers_gone());
        let stop_requested = std::pin::pin!(self.stop_requested());
        futures_util::future::select(readers_gone, stop_requested).await;
    }

    /// [`should_stop`](Self::should_stop) as a future that borrows nothing, for a task that owns
    /// many publishers and waits on all of them at once (the shared Kubernetes watch). While it
    /// exists it keeps the publisher's notification channel open, so drop it with the publisher.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let notify = self.notify.clone();
        let mut stop = self.stop.subscribe();
        async move {
            let readers_gone = std::pin::pin!(notify.closed());
            let stop_requested = std::pin::pin!(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            });
            futures_util::future::select(readers_gone, stop_requested).await;
        }
    }

    /// A signal that asks the source owning this publisher to stop
    /// ([`stop_requested`](Self::stop_requested)); the sources' `SourceHandle` holds one.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(Arc::clone(&self.stop))
    }

    fn wake(&self) {
        self.notify
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
    }
}

/// Asks a source to stop: made by [`Publisher::stop_signal`]. Dropping it asks nothing.
#[derive(Clone)]
pub struct StopSignal(Arc<watch::Sender<bool>>);

impl StopSignal {
    /// Asks the source to stop; [`Publisher::stop_requested`] completes.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// `true` once [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Dropping the sender wakes every watcher.
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("target", &self.shared.target)
            .field("revision", &self.shared.current.load().revision())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::DiscoveryErrorKind;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn cached_reader_follows_publications() {
        let mut publisher = Publisher::new("t");
        let mut cached = publisher.endpoints().cached();
        assert_eq!(cached.load().revision(), 0);
        publisher.publish([ep(1)]);
        assert_eq!(cached.load().revision(), 1);
        let mut other = cached.clone();
        publisher.publish([ep(2)]);
        assert_eq!(other.load().revision(), 2);
        assert_eq!(cached.load().as_slice(), &[ep(2)]);
    }

    #[tokio::test]
    async fn unchanged_publication_keeps_revision() {
        let mut publisher = Publisher::new("t");
        assert_eq!(publisher.publish([ep(1)]), Publication::Changed(1));
        assert_eq!(publisher.publish([ep(1)]), Publication::Unchanged(1));
        assert_eq!(publisher.publish([ep(2)]), Publication::Changed(2));
    }

    #[tokio::test]
    async fn first_empty_publication_counts_as_an_answer() {
        let mut publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        assert_eq!(publisher.publish([]), Publication::Changed(1));
        let set = endpoints.resolved().await.unwrap();
        assert!(set.is_empty());
        assert!(endpoints.health().is_current());
    }

    #[tokio::test]
    async fn resolved_reports_the_first_failure() {
        let mut publisher = Publisher::new("dns:///api:80");
        let endpoints = publisher.endpoints();
        let waiter = tokio::spawn({
            let endpoints = endpoints.clone();
            async move { endpoints.resolved().await }
        });
        tokio::task::yield_now().await;
        publisher.report_failure(DiscoveryError::new(
            publisher.target_arc(),
            DiscoveryErrorKind::Resolve,
            "timed out",
        ));
        let error = waiter.await.unwrap().unwrap_err();
        assert!(error.is_resolve());
        assert_eq!(error.target(), "dns:///api:80");
        let health = endpoints.health();
        assert!(health.is_failing());
        assert_eq!(health.consecutive_failures(), 1);
        assert!(health.failing_since().is_some());
        assert!(health.last_update().is_none());
    }

    #[tokio::test]
    async fn failure_keeps_the_set_and_recovery_clears_it() {
        let mut publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        publisher.publish([ep(1), ep(2)]);
        let error = DiscoveryError::new("t", DiscoveryErrorKind::Api, "500");
        publisher.report_failure(error.clone());
        publisher.report_failure(error);
        assert_eq!(endpoints.load().len(), 2);
        assert_eq!(endpoints.health().consecutive_failures(), 2);
        assert_eq!(publisher.publish([ep(1), ep(2)]), Publication::Unchanged(1));
        let health = endpoints.health();
        assert!(health.is_current());
        assert_eq!(health.consecutive_failures(), 0);
        assert!(health.last_error().is_some());
    }

    #[tokio::test]
    async fn watcher_ends_after_the_last_set_when_closed() {
        let mut publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        let mut watcher = endpoints.watch();
        publisher.publish([ep(1)]);
        publisher.publish([ep(2)]);
        drop(publisher);
        assert!(endpoints.is_closed());
        assert_eq!(watcher.changed().await.unwrap().revision(), 2);
        assert!(watcher.changed().await.unwrap_err().is_closed());
        assert_eq!(endpoints.load().revision(), 2);
    }

    #[tokio::test]
    async fn resolved_on_a_closed_unanswered_source_is_an_error() {
        let publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        drop(publisher);
        assert!(endpoints.resolved().await.unwrap_err().is_closed());
    }

    #[tokio::test]
    async fn refresh_requests_collapse_and_are_kept_until_taken() {
        let publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        endpoints.request_refresh();
        endpoints.request_refresh();
        publisher.refresh_requested().await;
        let second = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            publisher.refresh_requested(),
        );
        assert!(
            second.await.is_err(),
            "two early requests collapse into one"
        );
    }

    #[tokio::test]
    async fn readers_gone_completes_when_handles_drop() {
        let publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        let watcher = endpoints.watch();
        assert!(publisher.has_readers());
        drop(endpoints);
        drop(watcher);
        publisher.readers_gone().await;
        assert!(!publisher.has_readers());
    }

    #[tokio::test]
    async fn a_stop_request_ends_should_stop_while_readers_remain() {
        let publisher = Publisher::new("t");
        let _endpoints = publisher.endpoints();
        let signal = publisher.stop_signal();
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            publisher.should_stop(),
        );
        assert!(pending.await.is_err(), "readers and no request: keep going");
        assert!(!signal.is_stopped());
        signal.stop();
        publisher.should_stop().await;
        publisher.stop_requested().await;
        assert!(signal.is_stopped());
    }

    #[tokio::test]
    async fn watchers_wait_for_health_changes() {
        let mut publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        let mut watcher = endpoints.watch();
        let failure = || DiscoveryError::new("t", DiscoveryErrorKind::Resolve, "timeout");

        publisher.report_failure(failure());
        assert!(watcher.health_changed().await.unwrap().is_failing());
        publisher.report_failure(failure());
        assert_eq!(
            watcher
                .health_changed()
                .await
                .unwrap()
                .consecutive_failures(),
            2
        );
        publisher.publish([ep(1)]);
        assert!(watcher.health_changed().await.unwrap().is_current());
        // The set watcher still sees the set it has not returned yet.
        assert_eq!(watcher.changed().await.unwrap().revision(), 1);

        // A refresh that changes nothing is not a health change; a later failure is.
        publisher.publish([ep(1)]);
        let quiet = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            watcher.health_changed(),
        );
        assert!(quiet.await.is_err());
        publisher.report_failure(failure());
        assert!(watcher.health_changed().await.unwrap().is_failing());

        let gone = DiscoveryError::new("t", DiscoveryErrorKind::NotFound, "gone");
        publisher.publish_gone(gone);
        let health = watcher.health_changed().await.unwrap();
        assert!(health.is_gone() && health.is_current());

        drop(publisher);
        assert!(watcher.health_changed().await.unwrap_err().is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_see_answers_that_change_nothing() {
        let mut publisher = Publisher::new("t");
        let endpoints = publisher.endpoints();
        let mut watcher = endpoints.watch();
        let mut sets = endpoints.watch();
        let failure = || DiscoveryError::new("t", DiscoveryErrorKind::Resolve, "timeout");

        publisher.publish([ep(1)]);
        assert_eq!(watcher.answered().await.unwrap().revision(), 1);
        assert_eq!(sets.changed().await.unwrap().revision(), 1);

        // The same endpoints again: an answer, not a change.
        assert_eq!(publisher.publish([ep(1)]), Publication::Unchanged(1));
        let confirmed = watcher.answered().await.unwrap();
        assert_eq!(confirmed.revision(), 1);
        assert_eq!(confirmed.as_slice(), &[ep(1)]);
        assert_eq!(endpoints.health().answers(), 2);
        let quiet = tokio::time::timeout(std::time::Duration::from_secs(1), sets.changed());
        assert!(quiet.await.is_err(), "no set change");

        // A failure is no answer; answers collapse when the watcher is slow.
        publisher.report_failure(failure());
        let quiet = tokio::time::timeout(std::time::Duration::from_secs(1), watcher.answered());
        assert!(quiet.await.is_err(), "a failure is not an answer");
        publisher.publish([ep(1)]);
        publisher.publish([ep(1), ep(2)]);
        assert_eq!(watcher.answered().await.unwrap().revision(), 2);
        assert_eq!(endpoints.health().answers(), 4);

        // A watcher made now has seen everything so far.
        let mut late = endpoints.watch();
        let quiet = tokio::time::timeout(std::time::Duration::from_secs(1), late.answered());
        assert!(quiet.await.is_err());

        publisher.publish([ep(1), ep(2)]);
        drop(publisher);
        assert_eq!(late.answered().await.unwrap().revision(), 2);
        assert!(late.answered().await.unwrap_err().is_closed());
        assert_eq!(watcher.answered().await.unwrap().revision(), 2);
        assert!(watcher.answered().await.unwrap_err().is_closed());
    }
}
