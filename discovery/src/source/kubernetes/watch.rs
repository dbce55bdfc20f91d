//! The watch task: kube-runtime's watcher in, endpoint sets and health out.
//!
//! A task follows `watcher(Api<EndpointSlice>)` in one namespace for one or more targets (its
//! *members*): a target's own watch has one member and the label selector
//! `kubernetes.io/service-name=<service>`; a shared watch (see the `shared` module) has the
//! targets of several Services and the selector `kubernetes.io/service-name in (a,b,...)`. The
//! task gives every event to the [`SliceCache`] of each member of the slice's Service (and of the
//! Service the slice belonged to before, when its label moved), and publishes each changed
//! member's merged set. What the task adds to the watcher, for every member alike:
//!
//! - **Relists are atomic.** `Init` starts a new map in the cache, `InitApply` fills it,
//!   `InitDone` swaps it in and publishes once. A relist whose result equals the current set
//!   publishes no new revision, so a relist after `410 Gone` never flaps the set to empty.
//! - **Failures keep the set and show in health.** Every watcher error is reported through
//!   [`Publisher::report_failure`] as a [`DiscoveryError`] naming the target, with the watcher's
//!   error as its cause, after which the task waits (exponential backoff with jitter) before it
//!   polls the watcher again. The watcher itself resumes a dropped watch from the last
//!   resourceVersion and relists after `410 Gone`. One expected event is not a failure: the
//!   in-stream `410 Expired` of a compacted history, which is logged and relisted.
//! - **Recovery is seen.** The watcher says nothing when a watch it restarted succeeds, so the
//!   task's client is wrapped to notice every successful watch response for this target; after a
//!   failure that marks the source current again, without waiting for the next change. Only a
//!   success after the failure counts: a watch that the server accepts and fails at once keeps
//!   the source failing.
//! - **The HTTP-410 trap is escaped.** A server (or a proxy in front of it) that answers the
//!   watch request itself with HTTP status 410, instead of 200 and an in-stream `ERROR` event,
//!   makes kube's watcher retry the same expired resourceVersion forever. The task recognizes
//!   that error, drops the watcher and starts a new one, which lists again.
//! - **No EndpointSlices is an answer, and is said.** A Service with no slice at all (missing,
//!   `ExternalName`, or selectorless with nobody writing slices), or whose slices lack the
//!   target's port, publishes the empty set and reports a
//!   [`NotFound`](DiscoveryErrorKind::NotFound) error in health instead of silently waiting.
//! - **It stops when nobody reads, or when asked.** The task ends when
//!   [`Publisher::should_stop`] completes: every reader is gone, or its `SourceHandle` was shut
//!   down.
//!
//! Refresh requests ([`Endpoints::request_refresh`](crate::Endpoints::request_refresh)) are
//! ignored: the watch pushes every change as it happens, and a connection failure to one
//! endpoint is no evidence that the API server's view is stale, so relisting on it would only
//! multiply the load on the API server by the number of clients.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::SERVICE_NAME_LABEL;
use super::cache::{Applied, CacheStatus, SliceCache};
use super::decode::{TolerantSlice, WatchedSlice};
use super::retry::Retry;
use super::shared::{GroupLink, Leave};
use crate::endpoints::Publisher;
use crate::error::{DiscoveryError, DiscoveryErrorKind};

type SliceEvents = Pin<Box<dyn Stream<Item = watcher::Result<Event<WatchedSlice>>> + Send>>;

/// One target served by a watch task: its publisher and its slices.
pub(super) struct Member {
    pub(super) publisher: Publisher,
    pub(super) cache: SliceCache,
    /// A watcher error is the last thing reported in this member's health.
    pub(super) watch_failing: bool,
    /// Dropped with the member, which tells its `SourceHandle` that the member is gone.
    pub(super) _ended: Option<tokio::sync::watch::Sender<()>>,
}

impl Member {
    pub(super) fn new(publisher: Publisher, cache: SliceCache) -> Self {
        Member {
            publisher,
            cache,
            watch_failing: false,
            _ended: None,
        }
    }
}

/// What a shared watch task is told.
pub(super) enum Command {
    /// A new target.
    Join(Member),
    /// The targets of a group merged into this one.
    Adopt(Vec<Member>),
    /// This group was merged into another: hand every target over, and end.
    MergeInto,
}

/// Everything a watch task needs: one watch of EndpointSlices in one namespace, feeding the
/// caches of one or more targets.
pub(super) struct WatchTask {
    pub(super) api: Api<WatchedSlice>,
    /// The watcher's configuration without the label selector, which the members make.
    pub(super) config: watcher::Config,
    pub(super) retry: Retry,
    /// Set once a list failed to decode: from then on the watch reads each object on its own
    /// ([`TolerantSlice`]), so that one bad object fails only itself.
    tolerant: bool,
    pub(super) probe: Arc<WatchProbe>,
    pub(super) namespace: String,
    members: HashMap<u64, Member>,
    next_member: u64,
    /// Members by Service.
    by_service: HashMap<String, Vec<u64>>,
    /// The Service each slice was last given to, to take it back when the slice's label moves.
    owners: HashMap<String, String>,
    /// The owners being rebuilt by a relist.
    relist_owners: Option<HashMap<String, String>>,
    /// Completes with a member's key when that member should stop.
    stops: FuturesUnordered<BoxFuture<'static, u64>>,
    /// The shared-watch registry this task belongs to; `None` for a target's own watch.
    group: Option<GroupLink>,
    /// Set when the first complete list of a shared task arrived.
    listed: Option<Arc<AtomicBool>>,
    /// The selector must change: start a new watch.
    restart: bool,
}

/// How the main loop goes on after a command or a departure.
enum Next {
    Continue,
    /// Go on with a new watch: the members' Services changed.
    Restart,
    Stop,
}

impl WatchTask {
    pub(super) fn new(
        api: Api<WatchedSlice>,
        config: watcher::Config,
        retry: Retry,
        probe: Arc<WatchProbe>,
        namespace: String,
    ) -> Self {
        WatchTask {
            api,
            config,
            retry,
            tolerant: false,
            probe,
            namespace,
            members: HashMap::new(),
            next_member: 0,
            by_service: HashMap::new(),
            owners: HashMap::new(),
            relist_owners: None,
            stops: FuturesUnordered::new(),
            group: None,
            listed: None,
            restart: false,
        }
    }

    /// Makes the task a shared one, told what to do through the link's commands.
    pub(super) fn shared(mut self, group: GroupLink, listed: Arc<AtomicBool>) -> Self {
        self.group = Some(group);
        self.listed = Some(listed);
        self
    }

    pub(super) fn add(&mut self, member: Member) {
        let key = self.next_member;
        self.next_member += 1;
        self.stops
            .push(member.publisher.stopping().map(move |()| key).boxed());
        self.by_service
            .entry(member.cache.service().to_owned())
            .or_default()
            .push(key);
        self.members.insert(key, member);
    }

    pub(super) async fn run(mut self, mut commands: Option<mpsc::UnboundedReceiver<Command>>) {
        let mut events = self.watch();
        let pause = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pause);
        let mut paused = false;
        loop {
            let next = tokio::select! {
                biased;
                Some(key) = self.stops.next(), if !self.stops.is_empty() => {
                    match self.leave(key, commands.as_mut()) {
                        Next::Continue => continue,
                        Next::Restart => {
                            events = self.watch();
                            continue;
                        }
                        Next::Stop => break,
                    }
                }
                Some(command) = recv(commands.as_mut()) => {
                    let mut command = Some(command);
                    let mut next = Next::Continue;
                    // Every command already queued joins the same restart.
                    while let Some(current) = command.take() {
                        next = self.command(current, commands.as_mut());
                        if matches!(next, Next::Stop) {
                            break;
                        }
                        command = commands.as_mut().and_then(|rx| rx.try_recv().ok());
                    }
                    if matches!(next, Next::Stop) {
                        break;
                    }
                    if std::mem::take(&mut self.restart) {
                        events = self.watch();
                    }
                    continue;
                }
                () = &mut pause, if paused => {
                    paused = false;
                    continue;
                }
                () = self.probe.succeeded() => {
                    self.watch_established();
                    continue;
                }
                next = events.next(), if !paused => next,
            };
            match next {
                Some(Ok(event)) => self.handle(event),
                Some(Err(error)) => {
                    // A watch accepted before this error (even in the same poll, when the
                    // server fails it at once) is no recovery from it.
                    self.probe.forget();
                    let (replace, delay) = self.handle_error(error);
                    if replace {
                        events = self.watch();
                    }
                    pause.as_mut().reset(Instant::now() + delay);
                    paused = true;
                }
                None => {
                    // The watcher never ends its stream; start a new one should it ever do.
                    events = self.watch();
                }
            }
        }
        tracing::debug!(
            target: "waypost::discovery",
            namespace = %self.namespace,
            "EndpointSlice watch stopped (no readers left, or shut down)"
        );
    }

    /// The label selector of the members' Services: one Service by equality, several as a set.
    fn selector(&self) -> String {
        let services: BTreeSet<&str> = self.by_service.keys().map(String::as_str).collect();
        let mut services = services.into_iter();
        match (services.next(), services.len()) {
            (Some(only), 0) => format!("{SERVICE_NAME_LABEL}={only}"),
            (Some(first), _) => {
                let mut selector = format!("{SERVICE_NAME_LABEL} in ({first}");
                for service in services {
                    selector.push(',');
                    selector.push_str(service);
                }
                selector.push(')');
                selector
            }
            (None, _) => SERVICE_NAME_LABEL.to_owned(),
        }
    }

    fn watch(&self) -> SliceEvents {
        let config = self.config.clone().labels(&self.selector());
        if !self.tolerant {
            return watcher::watcher(self.api.clone(), config).boxed();
        }
        let api = Api::<TolerantSlice>::namespaced(self.api.clone().into_client(), &self.namespace);
        watcher::watcher(api, config)
            .map(|event| {
                event.map(|event| match event {
                    Event::Apply(TolerantSlice(slice)) => Event::Apply(slice),
                    Event::Delete(TolerantSlice(slice)) => Event::Delete(slice),
                    Event::Init => Event::Init,
                    Event::InitApply(TolerantSlice(slice)) => Event::InitApply(slice),
                    Event::InitDone => Event::InitDone,
                })
            })
            .boxed()
    }

    /// A member's readers are gone or it was shut down.
    fn leave(&mut self, key: u64, commands: Option<&mut mpsc::UnboundedReceiver<Command>>) -> Next {
        if let Some(member) = self.members.remove(&key) {
            let service = member.cache.service().to_owned();
            if let Some(keys) = self.by_service.get_mut(&service) {
                keys.retain(|other| *other != key);
                if keys.is_empty() {
                    self.by_service.remove(&service);
                }
            }
            tracing::debug!(
                target: "waypost::discovery",
                target = %member.publisher.target(),
                "EndpointSlice target stopped (no readers left, or shut down)"
            );
            if let Some(group) = &self.group {
                group.left(&service);
            }
        }
        if !self.members.is_empty() {
            return Next::Continue;
        }
        let Some(group) = self.group.clone() else {
            return Next::Stop;
        };
        match commands {
            Some(commands) => match group.leave_if_idle(commands) {
                Leave::Left => Next::Stop,
                Leave::Stay(pending) => {
                    for command in pending {
                        if matches!(self.command(command, Some(&mut *commands)), Next::Stop) {
                            return Next::Stop;
                        }
                    }
                    if std::mem::take(&mut self.restart) {
                        return Next::Restart;
                    }
                    Next::Continue
                }
            },
            None => Next::Stop,
        }
    }

    fn command(
        &mut self,
        command: Command,
        commands: Option<&mut mpsc::UnboundedReceiver<Command>>,
    ) -> Next {
        match command {
            Command::Join(mut member) => {
                let service = member.cache.service();
                let twin = self.by_service.get(service).and_then(|keys| {
                    keys.iter()
                        .filter_map(|key| self.members.get(key))
                        .find(|other| other.cache.port() == member.cache.port())
                });
                match twin {
                    // The same Service and port: the slices are already here.
                    Some(twin) => {
                        member.cache = twin.cache.clone();
                        member.watch_failing = twin.watch_failing;
                        let failing = twin.watch_failing;
                        self.add(member);
                        if !failing && let Some(key) = self.next_member.checked_sub(1) {
                            self.publish(key);
                        }
                    }
                    None => {
                        self.add(member);
                        self.restart = true;
                    }
                }
                Next::Continue
            }
            Command::Adopt(members) => {
                for member in members {
                    self.add(member);
                }
                self.restart = true;
                Next::Continue
            }
            Command::MergeInto => {
                let members: Vec<Member> = self.members.drain().map(|(_, member)| member).collect();
                self.by_service.clear();
                tracing::debug!(
                    target: "waypost::discovery",
                    namespace = %self.namespace,
                    targets = members.len(),
                    "EndpointSlice watch merged into another of the namespace"
                );
                if let (Some(group), Some(commands)) = (&self.group, commands) {
                    group.hand_over(members, commands);
                }
                Next::Stop
            }
        }
    }

    /// The members a slice's event is for: its Service's, and the ones of the Service it was
    /// given to before when its label moved.
    fn members_for(&self, slice: &EndpointSlice) -> (Option<String>, Vec<u64>) {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            .cloned();
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        let mut keys = Vec::new();
        if let Some(service) = &service
            && let Some(members) = self.by_service.get(service)
        {
            keys.extend_from_slice(members);
        }
        if let Some(owner) = self.owners.get(name)
            && service.as_ref() != Some(owner)
            && let Some(members) = self.by_service.get(owner)
        {
            keys.extend_from_slice(members);
        }
        (service, keys)
    }

    fn own(&mut self, slice: &EndpointSlice, service: Option<String>) {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let owners = self.relist_owners.as_mut().unwrap_or(&mut self.owners);
        match service.filter(|service| self.by_service.contains_key(service)) {
            Some(service) => {
                owners.insert(name, service);
            }
            None => {
                owners.remove(&name);
            }
        }
    }

    /// Applies a slice to the members it is for; returns the ones whose contribution changed.
    fn apply(&mut self, watched: &WatchedSlice) -> Vec<u64> {
        let slice = &watched.slice;
        let (service, keys) = self.members_for(slice);
        let mut changed = Vec::new();
        for key in keys {
            if let Some(member) = self.members.get_mut(&key) {
                let applied = match &watched.undecodable {
                    None => member.cache.apply(slice),
                    Some(detail) => member.cache.apply_undecodable(slice, detail),
                };
                log_unusable(member, &applied);
                log_invalid_addresses(member, slice);
                tracing::trace!(
                    target: "waypost::discovery",
                    target = %member.publisher.target(),
                    slice = slice.metadata.name.as_deref().unwrap_or_default(),
                    changed = applied.is_changed(),
                    "EndpointSlice applied"
                );
                if !matches!(applied, Applied::Unchanged) {
                    changed.push(key);
                }
            }
        }
        self.own(slice, service);
        changed
    }

    fn handle(&mut self, event: Event<WatchedSlice>) {
        match event {
            Event::Init => {
                tracing::debug!(
                    target: "waypost::discovery",
                    namespace = %self.namespace,
                    selector = %self.selector(),
                    "listing EndpointSlices"
                );
                for member in self.members.values_mut() {
                    member.cache.begin_relist();
                }
                self.relist_owners = Some(HashMap::new());
            }
            Event::InitApply(watched) => {
                self.apply(&watched);
            }
            Event::InitDone => {
                for member in self.members.values_mut() {
                    // A member that joined during the list has no relist begun: its cache is
                    // complete now as well, since the list was made for its Service too.
                    if !member.cache.is_relisting() {
                        continue;
                    }
                    let changed = member.cache.finish_relist();
                    tracing::debug!(
                        target: "waypost::discovery",
                        target = %member.publisher.target(),
                        slices = member.cache.slice_count(),
                        changed,
                        "EndpointSlices listed"
                    );
                }
                if let Some(owners) = self.relist_owners.take() {
                    self.owners = owners;
                }
                self.retry.listed();
                if let Some(listed) = &self.listed {
                    listed.store(true, Ordering::Release);
                }
                let keys: Vec<u64> = self.members.keys().copied().collect();
                for key in keys {
                    self.publish(key);
                }
            }
            Event::Apply(watched) => {
                self.retry.event();
                for key in self.apply(&watched) {
                    self.publish(key);
                }
            }
            Event::Delete(WatchedSlice { slice, .. }) => {
                self.retry.event();
                let (_, keys) = self.members_for(&slice);
                let name = slice.metadata.name.as_deref().unwrap_or_default();
                for key in keys {
                    let Some(member) = self.members.get_mut(&key) else {
                        continue;
                    };
                    let removed = member.cache.delete_slice(&slice);
                    tracing::trace!(
                        target: "waypost::discovery",
                        target = %member.publisher.target(),
                        slice = name,
                        removed,
                        "EndpointSlice deleted"
                    );
                    if removed {
                        self.publish(key);
                    }
                }
                let owners = self.relist_owners.as_mut().unwrap_or(&mut self.owners);
                owners.remove(name);
            }
        }
    }

    /// Publishes a member's merged set, then reports in its health when it is not a usable
    /// answer.
    fn publish(&mut self, key: u64) {
        let Some(member) = self.members.get_mut(&key) else {
            return;
        };
        let cache = &member.cache;
        if !cache.is_listed() || cache.is_relisting() {
            return;
        }
        member.publisher.publish_set(cache.endpoint_set());
        member.watch_failing = false;
        let detail = match cache.status() {
            CacheStatus::Ready | CacheStatus::Unlisted => return,
            CacheStatus::NoSlices => format!(
                "Service `{}` in namespace `{}` has no EndpointSlices: it does not exist, is an \
                 ExternalName Service, or has no selector and no EndpointSlices written for it",
                cache.service(),
                self.namespace,
            ),
            CacheStatus::NoMatchingPort { offered } => format!(
                "no EndpointSlice of Service `{}` in namespace `{}` has the target's port; \
                 the slices offer {}",
                cache.service(),
                self.namespace,
                offered.join(", "),
            ),
            CacheStatus::NoUsableSlice { slices } => format!(
                "none of the {slices} EndpointSlices of Service `{}` in namespace `{}` is usable \
                 (see the warnings that name them)",
                cache.service(),
                self.namespace,
            ),
        };
        let error = DiscoveryError::new(
            member.publisher.target_arc(),
            DiscoveryErrorKind::NotFound,
            detail,
        );
        member.publisher.report_failure(error);
    }

    /// A watch request just succeeded: after a failure, the members are current again even if
    /// nothing changed.
    fn watch_established(&mut self) {
        let keys: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, member)| {
                member.watch_failing && member.cache.is_listed() && !member.cache.is_relisting()
            })
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            if let Some(member) = self.members.get(&key) {
                tracing::info!(
                    target: "waypost::discovery",
                    target = %member.publisher.target(),
                    "EndpointSlice watch re-established"
                );
            }
            self.publish(key);
        }
    }

    /// Logs or reports a watcher error to every member; returns whether the watcher must be
    /// replaced, and how long to wait before polling it again.
    fn handle_error(&mut self, error: watcher::Error) -> (bool, Duration) {
        let now = Instant::now();
        if !self.tolerant && is_undecodable(&error) {
            // One object kube could not decode fails the whole list, or is dropped from the
            // watch (its slice's earlier endpoints would stay): from now on the watch decodes
            // each object on its own, lists again, and that one becomes an unusable slice.
            tracing::warn!(
                target: "waypost::discovery",
                namespace = %self.namespace,
                %error,
                "an EndpointSlice in namespace `{}` could not be decoded; listing again, each slice read on its own",
                self.namespace
            );
            self.tolerant = true;
            return (true, Duration::ZERO);
        }
        let error = Arc::new(error);
        let class = classify(&error);
        let hint = if status_code(&error) == Some(403) {
            format!(
                " (forbidden: the client needs get, list and watch on endpointslices of API \
                 group discovery.k8s.io in namespace `{}`)",
                self.namespace
            )
        } else {
            String::new()
        };
        for member in self.members.values_mut() {
            let target = member.publisher.target_arc();
            let what = format!(
                "EndpointSlices of Service `{}` in namespace `{}`",
                member.cache.service(),
                self.namespace
            );
            match class {
                ErrorClass::Expired => {
                    tracing::info!(
                        target: "waypost::discovery",
                        target = %target,
                        "the watch or list of {what} expired (410); listing them again"
                    );
                }
                ErrorClass::HttpGoneTrap => {
                    tracing::warn!(
                        target: "waypost::discovery",
                        target = %target,
                        "the API server answered the watch of {what} with HTTP status 410 \
                         instead of an in-stream 410 event; restarting the watch with a new list"
                    );
                    member.publisher.report_failure(DiscoveryError::with_source(
                        target,
                        DiscoveryErrorKind::Api,
                        format!("watching {what}: HTTP status 410 Gone; listing them again"),
                        Arc::clone(&error),
                    ));
                    member.watch_failing = true;
                }
                ErrorClass::Failure(kind, doing) => {
                    member.publisher.report_failure(DiscoveryError::with_source(
                        target,
                        kind,
                        format!("{doing} {what} failed{hint}; keeping the last good endpoint set"),
                        Arc::clone(&error),
                    ));
                    member.watch_failing = true;
                }
            }
        }
        match class {
            ErrorClass::Expired => (false, self.retry.expired(now)),
            ErrorClass::HttpGoneTrap => (true, self.retry.failure(now)),
            ErrorClass::Failure(..) => (false, self.retry.failure(now)),
        }
    }
}

/// The next command, or never when the task takes none.
async fn recv(commands: Option<&mut mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

fn log_unusable(member: &Member, applied: &Applied) {
    if let Applied::Unusable { error, .. } = applied {
        tracing::warn!(
            target: "waypost::discovery",
            target = %member.publisher.target(),
            slice = error.slice(),
            reason = %error.reason(),
            "{error}"
        );
    }
}

/// Endpoints skipped alone because their address is not an IP of the slice's family.
fn log_invalid_addresses(member: &Member, slice: &EndpointSlice) {
    let Some(contribution) = member.cache.contribution(slice) else {
        return;
    };
    let invalid = contribution.invalid_addresses();
    if invalid.is_empty() {
        return;
    }
    tracing::warn!(
        target: "waypost::discovery",
        target = %member.publisher.target(),
        slice = slice.metadata.name.as_deref().unwrap_or_default(),
        skipped = invalid.len(),
        "EndpointSlice `{}`: {} endpoint(s) skipped, their address is not an {} address (first: `{}`); the slice's other endpoints are used",
        slice.metadata.name.as_deref().unwrap_or_default(),
        invalid.len(),
        contribution.address_type().unwrap_or("IP"),
        invalid[0],
    );
}

#[derive(Clone, Copy)]
enum ErrorClass {
    /// The in-stream `410 Expired`, or a list page's expired continue token: the watcher lists
    /// again; routine.
    Expired,
    /// HTTP status 410 on the watch request: kube's watcher would retry it forever.
    HttpGoneTrap,
    /// Anything else: reported.
    Failure(DiscoveryErrorKind, &'static str),
}

fn classify(error: &watcher::Error) -> ErrorClass {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => ErrorClass::Expired,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410 => {
            ErrorClass::HttpGoneTrap
        }
        // Only a page's continue token can be too old (lists ask for the latest version): the
        // watcher lists again from the start, as client-go's pager falls back to a full list.
        watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 410 => {
            ErrorClass::Expired
        }
        watcher::Error::InitialListFailed(_) => {
            ErrorClass::Failure(DiscoveryErrorKind::Api, "listing")
        }
        watcher::Error::WatchStartFailed(_)
        | watcher::Error::WatchError(_)
        | watcher::Error::WatchFailed(_) => {
            ErrorClass::Failure(DiscoveryErrorKind::Api, "watching")
        }
        watcher::Error::NoResourceVersion => {
            ErrorClass::Failure(DiscoveryErrorKind::InvalidData, "following")
        }
    }
}

/// `true` for an object kube could not decode: in a list page, or as a watch event. kube
/// reads a watch line that is no event as a `Status` if it can, and every field of a `Status`
/// is optional, so an event whose object has the wrong shape comes as an API error without a
/// code (a real in-stream error is an `ERROR` event, with its code).
fn is_undecodable(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::SerdeError(_))
        | watcher::Error::WatchFailed(kube::Error::SerdeError(_)) => true,
        watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 0,
        _ => false,
    }
}

/// The HTTP status code of an API error, in-stream or as the response to a request.
fn status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// A watch shorter than this that is followed at once by the next watch (no list between) was
/// cut short: client-go's reflector calls it a "very short watch" and backs off.
const SHORT_WATCH: Duration = Duration::from_secs(1);
/// The longest wait before a watch request that follows short watches.
const MAX_WATCH_PACE: Duration = Duration::from_secs(30);

/// Wakes the task when a watch request of its target succeeds, so it sees a restarted watch
/// succeed; paces watch requests that follow watches cut short.
#[derive(Debug, Default)]
pub(super) struct WatchProbe {
    notify: Notify,
    pacing: std::sync::Mutex<WatchPacing>,
}

#[derive(Debug, Default)]
struct WatchPacing {
    /// When the last watch request was sent (after its wait), if the last request was a watch.
    last_watch: Option<Instant>,
    /// The wait that the next short watch doubles, zero while watches last.
    pace: Duration,
}

impl WatchProbe {
    /// How long a request sent at `now` waits. kube's watcher sends the next watch as soon as
    /// one ends without an error; a server (or proxy) that ends every watch at once, without an
    /// event, would get them as fast as the round trip allows. A watch request that follows a
    /// watch shorter than [`SHORT_WATCH`] waits 1 s, doubling with each further short one up to
    /// [`MAX_WATCH_PACE`]; a watch that lasted resets the wait, and neither a list request in
    /// between (a relist) nor a watch that ended in an error (paced by the task's backoff) is a
    /// short watch.
    fn pace(&self, is_watch: bool, now: Instant) -> Duration {
        let mut pacing = self
            .pacing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !is_watch {
            pacing.last_watch = None;
            return Duration::ZERO;
        }
        // `last_watch` is when the last watch was sent, after its own wait: the time since is
        // how long that watch lasted.
        let wait = match pacing.last_watch {
            Some(last) if now.saturating_duration_since(last) < SHORT_WATCH => {
                pacing.pace = (pacing.pace * 2).clamp(SHORT_WATCH, MAX_WATCH_PACE);
                pacing.pace
            }
            _ => {
                pacing.pace = Duration::ZERO;
                Duration::ZERO
            }
        };
        pacing.last_watch = Some(now + wait);
        wait
    }

    fn succeeded(&self) -> impl Future<Output = ()> + '_ {
        self.notify.notified()
    }

    fn record(&self) {
        self.notify.notify_one();
    }

    /// Drops a success recorded and not yet seen: it came before a failure. The failure's own
    /// backoff paces what follows, so the watch it ended counts as no short watch.
    fn forget(&self) {
        let _ = self.notify.notified().now_or_never();
        let mut pacing = self
            .pacing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *pacing = WatchPacing::default();
    }
}

/// The client a task uses: the shared client, with a look at each response.
///
/// Wrapping keeps one connection pool for all targets (the shared client does the requests)
/// while each target learns when its own watch requests succeed.
pub(super) fn probing_client(client: Client, probe: Arc<WatchProbe>, namespace: &str) -> Client {
    Client::new(ProbeService { client, probe }, namespace)
}

#[derive(Clone)]
struct ProbeService {
    client: Client,
    probe: Arc<WatchProbe>,
}

impl tower::Service<http::Request<kube::client::Body>> for ProbeService {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The shared client has its own buffer; readiness is checked in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let client = self.client.clone();
        let probe = Arc::clone(&self.probe);
        let is_watch = request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
        let wait = probe.pace(is_watch, Instant::now());
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let response = client.send(request).await?;
            if is_watch && response.status().is_success() {
                probe.record();
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn watches_cut_short_are_paced_and_a_lasting_one_resets_the_pace() {
        let probe = WatchProbe::default();
        let ms = Duration::from_millis;
        let mut now = Instant::now();
        assert_eq!(probe.pace(true, now), Duration::ZERO);
        // Each watch ends 10 ms after it was sent: 1 s, 2 s, 4 s, ... 30 s.
        for expected in [1, 2, 4, 8, 16, 30, 30] {
            now += ms(10);
            let wait = probe.pace(true, now);
            assert_eq!(wait, Duration::from_secs(expected));
            now += wait;
        }
        // A watch that lasted 5 s: the next is sent at once, and the pace starts over.
        now += Duration::from_secs(5);
        assert_eq!(probe.pace(true, now), Duration::ZERO);
        now += ms(10);
        assert_eq!(probe.pace(true, now), Duration::from_secs(1));
        // A list between two watches (a relist): no short watch.
        now += Duration::from_secs(1) + ms(10);
        assert_eq!(probe.pace(false, now), Duration::ZERO);
        assert_eq!(probe.pace(true, now + ms(10)), Duration::ZERO);
        // A watch that ended in an error is paced by the task's backoff.
        probe.forget();
        assert_eq!(probe.pace(true, now + ms(20)), Duration::ZERO);
    }

    #[test]
    fn the_http_410_trap_is_told_apart_from_the_in_stream_410() {
        let gone = || Status::failure("too old resource version", "Expired").with_code(410);
        assert!(matches!(
            classify(&watcher::Error::WatchError(Box::new(gone()))),
            ErrorClass::Expired
        ));
        assert!(matches!(
            classify(&watcher::Error::WatchStartFailed(kube::Error::Api(
                Box::new(gone())
            ))),
            ErrorClass::HttpGoneTrap
        ));
        let internal = Status::failure("boom", "InternalError").with_code(500);
        let error = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(internal)));
        assert!(matches!(
            classify(&error),
            ErrorClass::Failure(DiscoveryErrorKind::Api, "listing")
        ));
        assert!(matches!(
            classify(&watcher::Error::NoResourceVersion),
            ErrorClass::Failure(DiscoveryErrorKind::InvalidData, _)
        ));
    }
}
