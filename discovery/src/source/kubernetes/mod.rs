//! The Kubernetes source: a Service's EndpointSlices, watched, merged and published as a live
//! endpoint set (feature `kubernetes`).
//!
//! A `kubernetes:///api.payments:grpc` target names a Service, its namespace and a port.
//! Kubernetes keeps the Service's pods in EndpointSlice objects (`discovery.k8s.io/v1`), each
//! holding up to 100 endpoints with their readiness and topology; the EndpointSlice controller
//! rewrites them as pods start, become ready, terminate and move. This source is what
//! kube-proxy does with them, inside the client:
//!
//! 1. It watches the slices labelled `kubernetes.io/service-name=<service>` in the Service's
//!    namespace with kube-runtime's [`watcher`](kube::runtime::watcher::watcher) (list, then
//!    watch from the list's resourceVersion, resumed after a dropped connection, relisted after
//!    `410 Gone`), through one [`kube::Client`] that all targets share. Through
//!    [`SharedWatches`], the targets of one namespace share the watch itself: its selector
//!    names all their Services.
//! 2. It converts each slice as it arrives ([`convert_slice`]: the target's port, the first
//!    address of every endpoint, the conditions, zone, node, hostname and zone hints) and keeps
//!    the result under the slice's name ([`SliceCache`]).
//! 3. After every change it merges all slices (ready endpoints, else the ones serving while
//!    terminating; one entry per address) and publishes the set, which every request reads
//!    without a lock through the returned [`Endpoints`].
//!
//! # Failures and health
//!
//! - Failures keep the last good set and show in the handle's [`Health`](crate::Health): the
//!   [`DiscoveryError`] names the target, says whether listing or watching failed, and carries
//!   kube's error as its [`source`](std::error::Error::source). The source retries on its own,
//!   with exponential backoff and jitter (see [`KubernetesSource::backoff`]), and turns current
//!   again as soon as a list completes or a watch request is accepted, even if nothing changed.
//! - A dropped watch resumes from the last resourceVersion; `410 Gone` (the history was
//!   compacted) relists, which is routine and not reported. A relist replaces the slices in one
//!   step when it is complete, so it never publishes half a Service, and a relist that finds
//!   the same endpoints publishes no new revision.
//! - A server or proxy that answers the watch request itself with HTTP status 410 (instead of
//!   200 and an in-stream `410` event) would make kube's watcher retry the same resourceVersion
//!   forever; the source recognizes it, reports it, and relists.
//! - A Service without any EndpointSlice (it does not exist, is an `ExternalName` Service, or has
//!   no selector and nobody writes slices for it), or whose slices lack the target's port,
//!   publishes the empty set and reports a [`NotFound`](DiscoveryErrorKind::NotFound) error that
//!   says which, instead of waiting silently. A Service scaled to zero is simply empty (the
//!   controller's placeholder slice, with neither ports nor endpoints, included).
//! - A malformed slice is skipped with a warning that names it ([`UnusableSlice`]); the other
//!   slices are unaffected.
//! - [`Endpoints::request_refresh`](crate::Endpoints::request_refresh) is ignored: the watch
//!   pushes every change as it happens, and a connection failure to one endpoint says nothing
//!   about the API server's view.
//! - The task stops when every handle and watcher is dropped, or when the [`SourceHandle`]
//!   from [`KubernetesSource::start`] is shut down.
//!
//! # Permissions
//!
//! The client needs `get`, `list` and `watch` on `endpointslices` (API group
//! `discovery.k8s.io`) in the target's namespace, and nothing else; the README has a `Role` and
//! `RoleBinding`.
//!
//! # Kubernetes versions
//!
//! This crate does not choose a k8s-openapi version feature (a library must not); the
//! application does, as with kube itself, by depending on `k8s-openapi` with one `v1_*`
//! feature. The source reads EndpointSlices the same way under every version k8s-openapi 0.29
//! supports.
//!
//! # Example
//!
//! ```no_run
//! use waypost_discovery::source::kubernetes::{self, KubernetesSource};
//! use waypost_discovery::KubernetesTarget;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One client for every target: in-cluster configuration, else the local kubeconfig.
//! let client = kubernetes::default_client().await?;
//!
//! let target: KubernetesTarget = "kubernetes:///api.payments:grpc".parse()?;
//! let endpoints = KubernetesSource::new(client.clone(), target).spawn();
//!
//! let set = endpoints.resolved().await?;
//! println!("{} endpoints at revision {}", set.len(), set.revision());
//! # Ok(())
//! # }
//! ```

mod cache;
mod convert;
mod decode;
mod namespace;
mod retry;
mod shared;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::watcher;

/// The topology-hints rule, also at [`topology::hints_prefer_zone`](crate::topology::hints_prefer_zone).
pub use crate::topology::hints_prefer_zone;
pub use cache::{Applied, CacheStatus, SliceCache};
pub use convert::{
    SERVICE_NAME_LABEL, SliceEndpoints, UnusableReason, UnusableSlice, convert_slice,
};
pub use namespace::{DEFAULT_NAMESPACE, NamespaceOrigin, SERVICE_ACCOUNT_NAMESPACE_FILE};
pub use shared::SharedWatches;

/// The kube version this source is built with, for building a [`kube::Client`] of the same
/// version.
pub use kube;

/// The k8s-openapi version this source is built with, for naming
/// [`EndpointSlice`](k8s_openapi::api::discovery::v1::EndpointSlice) and friends.
pub use k8s_openapi;

use crate::endpoints::{Endpoints, Publisher};
use crate::error::{DiscoveryError, DiscoveryErrorKind};
use crate::source::SourceHandle;
use crate::target::KubernetesTarget;

/// The default shortest wait after a failure.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The default longest wait after repeated failures.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The default number of slices per list page (client-go's and kube's default).
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// The default `timeoutSeconds` of a watch request: the server ends the watch after it and the
/// watcher resumes from the last resourceVersion (kube's default).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);

/// Builds a client from the environment as [`kube::Client::try_default`] does: the local
/// kubeconfig (`KUBECONFIG` or `~/.kube/config`) when there is one, otherwise the in-cluster
/// configuration (service-account token, `KUBERNETES_SERVICE_HOST`). A pod that carries a
/// kubeconfig therefore talks to the cluster that file names.
///
/// Build it once and clone it into every [`KubernetesSource`]: clones share one connection
/// pool. Call it inside a tokio runtime, and keep that runtime alive while the client is used.
pub async fn default_client() -> Result<kube::Client, DiscoveryError> {
    kube::Client::try_default().await.map_err(|error| {
        DiscoveryError::with_source(
            "kubernetes:",
            DiscoveryErrorKind::Other,
            "no Kubernetes client configuration: neither in-cluster (service account) nor a \
             kubeconfig was found",
            error,
        )
    })
}

/// Discovery of one `kubernetes:` target: options, then [`spawn`](Self::spawn).
///
/// ```no_run
/// # use std::time::Duration;
/// # use waypost_discovery::source::kubernetes::KubernetesSource;
/// # async fn run(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let endpoints = KubernetesSource::new(client, "kubernetes:///api:8080".parse()?)
///     .backoff(Duration::from_millis(200), Duration::from_secs(10))
///     .spawn();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KubernetesSource {
    client: kube::Client,
    target: KubernetesTarget,
    name: Option<Arc<str>>,
    namespace_file: PathBuf,
    backoff_min: Duration,
    backoff_max: Duration,
    page_size: u32,
    watch_timeout: Duration,
    streaming_list: bool,
    shared: Option<SharedWatches>,
}

impl KubernetesSource {
    /// Discovery of `target` through `client`, with the defaults.
    pub fn new(client: kube::Client, target: KubernetesTarget) -> Self {
        KubernetesSource {
            client,
            target,
            name: None,
            namespace_file: PathBuf::from(SERVICE_ACCOUNT_NAMESPACE_FILE),
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            page_size: DEFAULT_PAGE_SIZE,
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
            streaming_list: false,
            shared: None,
        }
    }

    /// Watches through `watches` (what [`SharedWatches::source`] sets up).
    fn shared_in(mut self, watches: SharedWatches) -> Self {
        self.shared = Some(watches);
        self
    }

    /// `true` when the target is fed by a watch shared with the other targets of its
    /// namespace ([`SharedWatches::source`]).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The target.
    pub fn target(&self) -> &KubernetesTarget {
        &self.target
    }

    /// Names the handle in logs and errors; the default is the target's canonical form.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Reads the pod's namespace from `path` instead of [`SERVICE_ACCOUNT_NAMESPACE_FILE`]
    /// when the target names no namespace.
    #[must_use]
    pub fn namespace_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.namespace_file = path.into();
        self
    }

    /// Waits at least about `min` and at most `max` between attempts after failures (defaults
    /// [`DEFAULT_BACKOFF_MIN`], [`DEFAULT_BACKOFF_MAX`]). Each delay is jittered into
    /// `[delay / 2, delay]`.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Lists at most `slices` slices per request (default [`DEFAULT_PAGE_SIZE`]; at least 1).
    #[must_use]
    pub fn page_size(mut self, slices: u32) -> Self {
        self.page_size = slices.max(1);
        self
    }

    /// Asks the server to end each watch after `timeout` (whole seconds, at least one; default
    /// [`DEFAULT_WATCH_TIMEOUT`]). The watch then resumes from the last resourceVersion; a
    /// connection that stays silent for `timeout` plus 5 s is taken for dead.
    #[must_use]
    pub fn watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// Lists through a watch stream (`sendInitialEvents=true`) instead of list requests, which
    /// costs the API server less. Only for API servers that support streaming lists (the
    /// `WatchList` feature): on others the first list never completes. Off by default.
    #[must_use]
    pub fn streaming_list(mut self, enabled: bool) -> Self {
        self.streaming_list = enabled;
        self
    }

    /// The namespace the source will watch, and where it came from: the target's, else the
    /// pod's (read from the namespace file now), else `default`.
    pub fn namespace(&self) -> (String, NamespaceOrigin) {
        namespace::resolve(self.target.namespace(), &self.namespace_file)
    }

    /// Starts the watch task and returns the handle it keeps up to date.
    ///
    /// The handle starts empty at revision 0; [`Endpoints::resolved`] waits for the first
    /// complete list. The task runs until every clone of the handle (and every watcher made from
    /// it) is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self) -> Endpoints {
        self.start().0
    }

    /// Like [`spawn`](Self::spawn), and also returns a [`SourceHandle`] whose
    /// [`shutdown`](SourceHandle::shutdown) ends the watch and waits for the task. Without it
    /// the task runs while any handle or watcher exists; dropping the `SourceHandle` changes
    /// nothing.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`] does.
    pub fn start(self) -> (Endpoints, SourceHandle) {
        let (namespace, origin) = self.namespace();
        let name = self
            .name
            .unwrap_or_else(|| Arc::from(self.target.to_string()));
        let publisher = Publisher::new(name);
        let endpoints = publisher.endpoints();
        tracing::info!(
            target: "waypost::discovery",
            target = %publisher.target(),
            service = self.target.service(),
            namespace = %namespace,
            namespace_origin = %origin,
            "watching EndpointSlices"
        );

        let member = watch::Member::new(
            publisher,
            SliceCache::new(self.target.service(), self.target.port().cloned())
                .in_namespace(namespace.clone()),
        );
        let stop = member.publisher.stop_signal();
        let options = WatchOptions {
            client: self.client,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            page_size: self.page_size,
            watch_timeout: self.watch_timeout,
            streaming_list: self.streaming_list,
        };
        match self.shared {
            Some(shared) => {
                let (ended, ended_rx) = tokio::sync::watch::channel(());
                let member = watch::Member {
                    _ended: Some(ended),
                    ..member
                };
                let task = || options.task(namespace.clone());
                shared.registry().join(&namespace, member, task);
                (endpoints, SourceHandle::part(stop, ended_rx))
            }
            None => {
                let mut task = options.task(namespace);
                task.add(member);
                let task = tokio::spawn(task.run(None));
                (endpoints, SourceHandle::new(stop, task))
            }
        }
    }
}

/// What a watch task is made of.
struct WatchOptions {
    client: kube::Client,
    backoff_min: Duration,
    backoff_max: Duration,
    page_size: u32,
    watch_timeout: Duration,
    streaming_list: bool,
}

impl WatchOptions {
    /// A watch task for `namespace`, without targets yet.
    fn task(self, namespace: String) -> watch::WatchTask {
        let probe = Arc::new(watch::WatchProbe::default());
        let client = watch::probing_client(self.client, Arc::clone(&probe), &namespace);
        let api = kube::Api::<decode::WatchedSlice>::namespaced(client, &namespace);
        let mut config = watcher::Config::default()
            .page_size(self.page_size)
            .timeout(u32::try_from(self.watch_timeout.as_secs()).unwrap_or(u32::MAX));
        if self.streaming_list {
            config = config.streaming_lists();
        }
        watch::WatchTask::new(
            api,
            config,
            retry::Retry::new(self.backoff_min, self.backoff_max),
            probe,
            namespace,
        )
    }
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("target", &self.target)
            .field("name", &self.name)
            .field("namespace_file", &self.namespace_file)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("page_size", &self.page_size)
            .field("watch_timeout", &self.watch_timeout)
            .field("streaming_list", &self.streaming_list)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}
