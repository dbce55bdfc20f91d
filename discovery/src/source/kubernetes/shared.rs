//! Shared watches: the `kubernetes:` targets of one namespace fed by one watch.
//!
//! A process that calls many Services of one namespace would otherwise hold one EndpointSlice
//! watch per target, and the API server would keep one watch (and send one copy of every
//! event) per target of every client. [`SharedWatches`] groups the targets of a namespace:
//! one watch, whose label selector names all their Services
//! (`kubernetes.io/service-name in (a,b,c)`), feeds every target's own [`SliceCache`], so the
//! merge rules, health and errors of each target are exactly those of a watch of its own.
//!
//! # How targets are grouped
//!
//! Changing a watch's selector means listing again everything it selects, so a group is not
//! re-listed for every Service that joins it. The rules, applied when a target starts:
//!
//! 1. A target of a Service that a group already watches joins that group. With the same port
//!    as a target there, it copies that target's slices and is resolved at once; with another
//!    port, the group lists again (its targets keep their sets until the list is complete).
//! 2. Otherwise, while the namespace's newest group has not finished its first list, the target
//!    joins it: a burst of targets started together (a process starting up) shares one list
//!    and one watch.
//! 3. Otherwise the target starts a new group of its own. Whenever the newest group then
//!    watches at least as many Services as the one before it, the two merge: the older group
//!    takes the targets over and lists again once for all of them.
//!
//! Rule 3 is a binary counter: a namespace has at most about `log2(S) + 1` watches for `S`
//! Services (one after a start-up burst), and each Service is listed about `log2(S)` times over
//! the whole life of the process instead of once per joining Service. A group whose targets
//! are all gone ends its watch.
//!
//! # What is shared, and what is not
//!
//! - The watch options (backoff, page size, watch timeout, streaming lists) are those of the
//!   source that started the group; the name and the namespace file stay per target.
//! - One failure of the shared watch is reported in the health of every target it feeds.
//! - The selector of a large group is long (about the sum of its Service names); API servers
//!   accept request lines of up to 1 MiB, but a proxy between the client and the API server may
//!   limit them to a few KiB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::KubernetesSource;
use super::watch::{Command, Member, WatchTask};
use crate::target::KubernetesTarget;

/// The EndpointSlice watches of a process, shared by the `kubernetes:` targets of each
/// namespace: start targets through [`source`](Self::source).
///
/// Build one per process (per API server) and clone it; clones share the watches.
///
/// ```no_run
/// use waypost_discovery::source::kubernetes::{self, SharedWatches};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let watches = SharedWatches::new(kubernetes::default_client().await?);
/// // One watch feeds both targets.
/// let payments = watches.source("kubernetes:///payments.shop:grpc".parse()?).spawn();
/// let orders = watches.source("kubernetes:///orders.shop:grpc".parse()?).spawn();
/// assert_eq!(watches.watch_count(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedWatches {
    client: kube::Client,
    registry: Arc<Registry>,
}

impl SharedWatches {
    /// Shared watches through `client`.
    pub fn new(client: kube::Client) -> Self {
        SharedWatches {
            client,
            registry: Arc::new(Registry::default()),
        }
    }

    /// Discovery of `target` through a shared watch of its namespace; options as for
    /// [`KubernetesSource::new`].
    pub fn source(&self, target: KubernetesTarget) -> KubernetesSource {
        KubernetesSource::new(self.client.clone(), target).shared_in(self.clone())
    }

    /// The client the watches use.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// How many watches (groups of targets) are running, over all namespaces.
    pub fn watch_count(&self) -> usize {
        self.registry
            .lock()
            .values()
            .map(|groups| groups.live.len())
            .sum()
    }

    /// How many watches are running for `namespace`.
    pub fn namespace_watch_count(&self, namespace: &str) -> usize {
        self.registry
            .lock()
            .get(namespace)
            .map_or(0, |groups| groups.live.len())
    }

    pub(super) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

impl std::fmt::Debug for SharedWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWatches")
            .field("watches", &self.watch_count())
            .finish_non_exhaustive()
    }
}

/// Every group of every namespace.
#[derive(Default)]
pub(super) struct Registry {
    namespaces: Mutex<HashMap<String, Namespace>>,
    next_group: AtomicU64,
}

/// The groups of one namespace.
#[derive(Default)]
struct Namespace {
    /// Running groups, oldest first.
    live: Vec<Group>,
    /// Where each merged group's targets went.
    merged: HashMap<u64, u64>,
}

/// What the registry knows of a running group.
struct Group {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    /// The group's targets by Service, counting targets on their way to it (merged in and not
    /// yet adopted): a group with any cannot end.
    services: HashMap<String, usize>,
    /// The group's first list is complete.
    listed: Arc<AtomicBool>,
}

impl Namespace {
    /// The running group that the targets of group `id` now belong to.
    fn resolve(&self, mut id: u64) -> Option<&Group> {
        // Each merge points to an older group, so the chain ends.
        for _ in 0..=self.merged.len() {
            if let Some(group) = self.live.iter().find(|group| group.id == id) {
                return Some(group);
            }
            id = *self.merged.get(&id)?;
        }
        None
    }

    fn resolve_mut(&mut self, id: u64) -> Option<&mut Group> {
        let id = self.resolve(id)?.id;
        self.live.iter_mut().find(|group| group.id == id)
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Namespace>> {
        self.namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a target's member to a group of `namespace` (see the module's rules); `task` makes
    /// the task of a new group.
    pub(super) fn join(
        self: &Arc<Self>,
        namespace: &str,
        mut member: Member,
        task: impl FnOnce() -> WatchTask,
    ) {
        let mut namespaces = self.lock();
        let groups = namespaces.entry(namespace.to_owned()).or_default();
        let service = member.cache.service().to_owned();
        loop {
            let index = groups
                .live
                .iter()
                .position(|group| group.services.contains_key(&service))
                .or_else(|| {
                    // A group of its own would merge into the newest at once (rule 3): join it
                    // directly.
                    groups
                        .live
                        .last()
                        .filter(|group| {
                            !group.listed.load(Ordering::Acquire) || group.services.len() <= 1
                        })
                        .map(|_| groups.live.len() - 1)
                });
            let Some(index) = index else { break };
            match groups.live[index].commands.send(Command::Join(member)) {
                Ok(()) => {
                    *groups.live[index].services.entry(service).or_default() += 1;
                    merge_newest(groups);
                    return;
                }
                Err(mpsc::error::SendError(command)) => {
                    // The group's task is gone without leaving (its runtime shut down).
                    groups.live.remove(index);
                    let Command::Join(back) = command else {
                        return;
                    };
                    member = back;
                }
            }
        }

        let id = self.next_group.fetch_add(1, Ordering::Relaxed);
        let (commands, receiver) = mpsc::unbounded_channel();
        let listed = Arc::new(AtomicBool::new(false));
        let link = GroupLink {
            registry: Arc::clone(self),
            namespace: namespace.to_owned(),
            id,
        };
        let mut task = task().shared(link, Arc::clone(&listed));
        task.add(member);
        tokio::spawn(task.run(Some(receiver)));
        groups.live.push(Group {
            id,
            commands,
            services: HashMap::from([(service, 1)]),
            listed,
        });
        merge_newest(groups);
    }
}

/// Merges the newest group into the one before it while it watches at least as many Services.
fn merge_newest(groups: &mut Namespace) {
    while let [.., older, newest] = groups.live.as_slice()
        && newest.services.len() >= older.services.len()
    {
        let Some(newest) = groups.live.pop() else {
            return;
        };
        let Some(older) = groups.live.last_mut() else {
            return;
        };
        if newest.commands.send(Command::MergeInto).is_ok() {
            for (service, count) in newest.services {
                *older.services.entry(service).or_default() += count;
            }
            groups.merged.insert(newest.id, older.id);
        }
    }
}

/// A group task's way back to the registry.
#[derive(Clone)]
pub(super) struct GroupLink {
    registry: Arc<Registry>,
    namespace: String,
    id: u64,
}

/// What [`GroupLink::leave_if_idle`] decided.
pub(super) enum Leave {
    /// The group is gone from the registry: end the task.
    Left,
    /// The group has targets on their way, or commands came: handle these and go on.
    Stay(Vec<Command>),
}

impl GroupLink {
    /// A target of `service` left the group (or a group merged into it).
    pub(super) fn left(&self, service: &str) {
        let mut namespaces = self.registry.lock();
        let Some(groups) = namespaces.get_mut(&self.namespace) else {
            return;
        };
        let Some(group) = groups.resolve_mut(self.id) else {
            return;
        };
        if let Some(count) = group.services.get_mut(service) {
            *count -= 1;
            if *count == 0 {
                group.services.remove(service);
            }
        }
    }

    /// The group has no target left: leaves the registry unless targets are on their way or
    /// commands are queued. Under the registry's lock, so nobody sends to a group that left.
    pub(super) fn leave_if_idle(&self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Leave {
        let mut namespaces = self.registry.lock();
        let mut pending = Vec::new();
        while let Ok(command) = commands.try_recv() {
            pending.push(command);
        }
        let Some(groups) = namespaces.get_mut(&self.namespace) else {
            return Leave::Left;
        };
        let Some(index) = groups.live.iter().position(|group| group.id == self.id) else {
            // Merged into another group: its MergeInto is among the pending commands.
            return Leave::Stay(pending);
        };
        if !pending.is_empty() || !groups.live[index].services.is_empty() {
            return Leave::Stay(pending);
        }
        groups.live.remove(index);
        if groups.live.is_empty() {
            namespaces.remove(&self.namespace);
        }
        commands.close();
        Leave::Left
    }

    /// Hands `members`, and every command still queued, to the group this one was merged
    /// into. Under the registry's lock: that group cannot end or be merged away meanwhile.
    pub(super) fn hand_over(
        &self,
        members: Vec<Member>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) {
        let namespaces = self.registry.lock();
        commands.close();
        let Some(into) = namespaces
            .get(&self.namespace)
            .and_then(|groups| groups.resolve(self.id))
        else {
            return;
        };
        let _ = into.commands.send(Command::Adopt(members));
        while let Ok(command) = commands.try_recv() {
            if !matches!(command, Command::MergeInto) {
                let _ = into.commands.send(command);
            }
        }
    }
}
