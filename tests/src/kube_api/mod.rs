//! A fake Kubernetes API server for EndpointSlices, speaking the real HTTP protocol.
//!
//! The tests of the Kubernetes source run without a cluster, but they do not mock kube: a real
//! [`kube::Client`], built from a kubeconfig whose `server` is `http://127.0.0.1:PORT`, talks
//! HTTP/1.1 to this server, and kube-runtime's watcher does what it would do against a real API
//! server. The server implements the parts of the API that the watcher uses, with the
//! semantics that make correct clients hard to write:
//!
//! - **Objects and versions.** EndpointSlices (`discovery.k8s.io/v1`) kept in memory with one
//!   global resourceVersion counter and a history of changes ([`store`]).
//! - **List** with `resourceVersion` in the result, label selectors (`=`, `==`, `!=`,
//!   existence), and pagination (`limit`, `continue`; every page served from the same version,
//!   `410 Expired` when the continue token's version was compacted).
//! - **Watch** (`watch=true`): newline-delimited WatchEvents, replaying the changes after the
//!   given resourceVersion and then following live writes; `timeoutSeconds` ends the stream (with
//!   a bookmark first when `allowWatchBookmarks=true`); bookmarks carry `apiVersion` and `kind`,
//!   which kube requires; a label change turns into `ADDED` or `DELETED` for objects entering or
//!   leaving the watcher's selection.
//! - **Compaction**: a watch from a compacted version gets HTTP 200 and then the in-stream
//!   `ERROR` event with a `410 Expired` Status, exactly as a real server answers.
//! - **Streaming lists** (`sendInitialEvents=true`): the current objects as `ADDED` events, then
//!   a bookmark annotated `k8s.io/initial-events-end: "true"`, then live events.
//! - **Fault injection**: drop every watch (an orderly end of the stream), reset every
//!   connection (a TCP RST, which kube reads as an error rather than an end of stream),
//!   expire every watch (in-stream 410), end every watch with an in-stream `ERROR` of another
//!   code, hold the further pages of paginated lists, answer lists with a status such as 429 or 500, answer
//!   watches with HTTP status 410 (the trap kube's watcher cannot leave on its own), and ignore
//!   label selectors.
//!
//! kube starts its query strings with `?&`; the empty pair is skipped ([`query`]).
//!
//! Tests change the objects through the handle while a source watches:
//!
//! ```no_run
//! # async fn demo() {
//! use waypost_tests::kube_api::{FakeApiServer, slices::{endpoint_slice, ep}};
//!
//! let rig = FakeApiServer::start().await;
//! let client = rig.client().await;
//! rig.apply(endpoint_slice("api-1", "api").port("http", 8080).endpoint(ep("10.0.0.1")));
//! rig.drop_watches();
//! # drop(client);
//! # }
//! ```

pub mod query;
mod server;
pub mod slices;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use query::Query;
use store::{Change, Store};
use waypost_discovery::KubernetesTarget;
use waypost_discovery::source::kubernetes::{KubernetesSource, SharedWatches};

/// How many writes an open watch may fall behind before it is ended with `410`, as a real
/// server ends a watcher that cannot keep up.
const LIVE_BUFFER: usize = 1024;

/// The API group and version served.
pub const API_VERSION: &str = "discovery.k8s.io/v1";
/// The kind served.
pub const KIND: &str = "EndpointSlice";
/// The kind of a list.
pub const LIST_KIND: &str = "EndpointSliceList";

/// What kind of request a [`RequestRecord`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A list (GET without `watch=true`).
    List,
    /// A watch (GET with `watch=true`).
    Watch,
    /// Anything else.
    Other,
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When it was answered (the response head; a watch goes on after it).
    pub at: Instant,
    /// List, watch or other.
    pub kind: RequestKind,
    /// The path.
    pub path: String,
    /// The query string as sent.
    pub raw_query: String,
    /// The query, parsed; `None` when it could not be parsed.
    pub query: Option<Query>,
    /// The HTTP status answered.
    pub status: u16,
}

impl RequestRecord {
    /// The `resourceVersion` parameter.
    pub fn resource_version(&self) -> Option<&str> {
        self.query.as_ref()?.resource_version.as_deref()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Signals {
    drop: u64,
    expire: u64,
    bookmark: u64,
    /// Counts `error_watches` calls; the code of the last one.
    error: (u64, u16),
}

#[derive(Debug, Clone, Default)]
struct Faults {
    list_status: Option<(u16, usize)>,
    watch_http_gone: usize,
    watch_error: Option<(u16, usize)>,
    /// Watch requests that give a resourceVersion end at once, cleanly and without events.
    end_watches_at_once: bool,
    ignore_label_selector: bool,
    ignore_namespace: bool,
}

struct Shared {
    store: Mutex<Store>,
    /// Every write, sent while the store is locked, so that a watch that subscribes under the
    /// lock gets exactly the writes after its snapshot.
    live: broadcast::Sender<Arc<Change>>,
    signals: watch::Sender<Signals>,
    resets: watch::Sender<u64>,
    hold_watches: watch::Sender<bool>,
    hold_continued_lists: watch::Sender<bool>,
    faults: Mutex<Faults>,
    requests: Mutex<Vec<RequestRecord>>,
    live_watches: AtomicUsize,
    held_lists: AtomicUsize,
    /// Body bytes sent in list responses.
    list_bytes: AtomicU64,
    /// Body bytes sent in watch responses.
    watch_bytes: AtomicU64,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, record: RequestRecord) {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(record);
    }

    fn take_list_fault(&self) -> Option<u16> {
        let mut faults = self.faults();
        let (code, times) = faults.list_status.as_mut()?;
        let code = *code;
        *times -= 1;
        if *times == 0 {
            faults.list_status = None;
        }
        Some(code)
    }

    fn take_watch_gone_fault(&self) -> bool {
        let mut faults = self.faults();
        if faults.watch_http_gone == 0 {
            return false;
        }
        faults.watch_http_gone -= 1;
        true
    }

    fn take_watch_error_fault(&self) -> Option<u16> {
        let mut faults = self.faults();
        let (code, times) = faults.watch_error.as_mut()?;
        let code = *code;
        *times -= 1;
        if *times == 0 {
            faults.watch_error = None;
        }
        Some(code)
    }

    fn watch_started(self: &Arc<Self>) -> LiveWatch {
        self.live_watches.fetch_add(1, Ordering::AcqRel);
        LiveWatch(Arc::clone(self))
    }

    /// Applies a write to the store and hands it to the open watches; returns the change and
    /// the instant it was accepted (taken before any watch can see it).
    fn write(
        &self,
        write: impl FnOnce(&mut Store) -> Option<Arc<Change>>,
    ) -> Option<(Arc<Change>, std::time::Instant)> {
        let mut store = self.store();
        let change = write(&mut store)?;
        let accepted = std::time::Instant::now();
        // No open watch is not an error.
        let _ = self.live.send(Arc::clone(&change));
        Some((change, accepted))
    }
}

/// Counts a watch stream while it is open.
struct LiveWatch(Arc<Shared>);

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.0.live_watches.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The fake API server and the handle tests drive it with. Dropping it stops the server and
/// closes every connection.
pub struct FakeApiServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1` and an ephemeral port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port for the fake API server");
        let address = listener.local_addr().expect("the listener's address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            live: broadcast::Sender::new(LIVE_BUFFER),
            signals: watch::Sender::new(Signals::default()),
            resets: watch::Sender::new(0),
            hold_watches: watch::Sender::new(false),
            hold_continued_lists: watch::Sender::new(false),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(Vec::new()),
            live_watches: AtomicUsize::new(0),
            held_lists: AtomicUsize::new(0),
            list_bytes: AtomicU64::new(0),
            watch_bytes: AtomicU64::new(0),
        });
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        FakeApiServer {
            address,
            shared,
            task,
        }
    }

    /// The server's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig that points at this server (no credentials, namespace `default`).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n\
             users:\n\
             - name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// A real `kube::Client` built from [`kubeconfig`](Self::kubeconfig).
    ///
    /// # Panics
    ///
    /// When kube rejects the kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig())
            .expect("the fake kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube accepts the fake kubeconfig");
        kube::Client::try_from(config).expect("a client for the fake API server")
    }

    /// Creates or replaces an object (an EndpointSlice as JSON, or anything that serializes to
    /// one); returns the write's resourceVersion. Watches see it at once.
    ///
    /// # Panics
    ///
    /// When the object has no `metadata.name`.
    pub fn apply(&self, object: impl serde::Serialize) -> u64 {
        self.apply_timed(object).0
    }

    /// Like [`apply`](Self::apply), and also returns the instant the server accepted the write:
    /// taken before any watch can see it, so a measurement from it is never too short, however
    /// the caller's thread is scheduled.
    ///
    /// # Panics
    ///
    /// When the object has no `metadata.name`.
    pub fn apply_timed(&self, object: impl serde::Serialize) -> (u64, std::time::Instant) {
        self.apply_value_timed(serde_json::to_value(object).expect("the object serializes to JSON"))
    }

    /// Like [`apply_timed`](Self::apply_timed) for an object that is JSON already: stored as
    /// it is, not serialized again.
    ///
    /// # Panics
    ///
    /// When the object has no `metadata.name`.
    pub fn apply_value_timed(&self, object: Value) -> (u64, std::time::Instant) {
        let (change, accepted) = self
            .shared
            .write(|store| {
                Some(store.put(object).unwrap_or_else(|invalid| {
                    panic!("the fake API server rejects the object: {}", invalid.0)
                }))
            })
            .expect("a put always makes a change");
        (change.resource_version, accepted)
    }

    /// Deletes an object; returns the delete's resourceVersion, `None` when it did not exist.
    pub fn delete(&self, namespace: &str, name: &str) -> Option<u64> {
        self.shared
            .write(|store| store.delete(namespace, name))
            .map(|(change, _)| change.resource_version)
    }

    /// The current object, as stored.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .objects()
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|object| Value::clone(object))
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Moves the resourceVersion on by `by`, as writes to other resources do.
    pub fn advance_resource_version(&self, by: u64) {
        self.shared.store().advance(by);
    }

    /// Drops the history up to the current version: a new watch or a continue token from an
    /// older version gets `410`. Open watches go on, as they do on a real server.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch stream in order (a clean end of the response); clients resume
    /// from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.shared.signals.send_modify(|s| s.drop += 1);
    }

    /// Sends every open watch the in-stream `ERROR` event with `410 Expired`, then ends it.
    pub fn expire_watches(&self) {
        self.shared.signals.send_modify(|s| s.expire += 1);
    }

    /// Sends a bookmark with the current resourceVersion on every open watch that allows them.
    pub fn send_bookmarks(&self) {
        self.shared.signals.send_modify(|s| s.bookmark += 1);
    }

    /// While `true`, new watch requests get no answer (they wait, as behind a network
    /// partition); `false` answers them.
    pub fn hold_watches(&self, hold: bool) {
        self.shared.hold_watches.send_replace(hold);
    }

    /// While `true`, list requests for a further page (with a `continue` token) get no answer
    /// yet: a paginated list stops half way, where a client must not have used the first
    /// pages alone. `false` answers them.
    pub fn hold_continued_lists(&self, hold: bool) {
        self.shared.hold_continued_lists.send_replace(hold);
    }

    /// How many list requests for a further page wait because of
    /// [`hold_continued_lists`](Self::hold_continued_lists).
    pub fn held_lists(&self) -> usize {
        self.shared.held_lists.load(Ordering::Acquire)
    }

    /// Sends every open watch an in-stream `ERROR` event with a `Status` of `code` (such as 500
    /// or 403), then ends it, as a real server ends a watch it cannot continue.
    pub fn error_watches(&self, code: u16) {
        self.shared
            .signals
            .send_modify(|s| s.error = (s.error.0 + 1, code));
    }

    /// Closes every open connection with a TCP reset.
    pub fn reset_connections(&self) {
        self.shared
            .resets
            .send_modify(|generation| *generation += 1);
    }

    /// Answers the next `times` list requests with HTTP status `code` and a `Status` body.
    /// kube's client retries 429, 503 and 504 by itself; use 500 to reach the watcher.
    pub fn fail_lists(&self, code: u16, times: usize) {
        self.shared.faults().list_status = (times > 0).then_some((code, times));
    }

    /// Answers the next `times` watch requests that give a resourceVersion with HTTP status 410
    /// instead of 200 and an in-stream `ERROR` event.
    pub fn fail_watches_with_http_gone(&self, times: usize) {
        self.shared.faults().watch_http_gone = times;
    }

    /// Answers the next `times` watch requests that give a resourceVersion with HTTP 200 and
    /// at once an in-stream `ERROR` event of `code`, then the end of the stream: a watch that
    /// is accepted and fails straight away, again and again.
    pub fn fail_watches_in_stream(&self, code: u16, times: usize) {
        self.shared.faults().watch_error = (times > 0).then_some((code, times));
    }

    /// With `true`, every watch request that gives a resourceVersion gets HTTP 200 and the end
    /// of the stream at once, without an event (a proxy that cuts long requests, a server that
    /// ignores `timeoutSeconds`).
    pub fn end_watches_at_once(&self, end: bool) {
        self.shared.faults().end_watches_at_once = end;
    }

    /// Serves every object of the namespace, whatever the label selector says.
    pub fn ignore_label_selectors(&self, ignore: bool) {
        self.shared.faults().ignore_label_selector = ignore;
    }

    /// Serves the objects of every namespace to namespaced requests, as a server or proxy that
    /// ignores the request's scope would.
    pub fn ignore_namespaces(&self, ignore: bool) {
        self.shared.faults().ignore_namespace = ignore;
    }

    /// Ends every injected fault.
    pub fn clear_faults(&self) {
        *self.shared.faults() = Faults::default();
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The requests of one kind answered so far.
    pub fn requests_of(&self, kind: RequestKind) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|request| request.kind == kind)
            .collect()
    }

    /// The body bytes sent in answers to list requests so far.
    pub fn list_bytes(&self) -> u64 {
        self.shared.list_bytes.load(Ordering::Acquire)
    }

    /// The body bytes sent on watch streams so far (events and bookmarks).
    pub fn watch_bytes(&self) -> u64 {
        self.shared.watch_bytes.load(Ordering::Acquire)
    }

    /// How many watch streams are open.
    pub fn live_watches(&self) -> usize {
        self.shared.live_watches.load(Ordering::Acquire)
    }

    /// A Kubernetes source for `target` through a new client of this server, set up for tests:
    /// backoff from [`TEST_BACKOFF_MIN`] to [`TEST_BACKOFF_MAX`] (kube's own defaults escalate
    /// to many seconds), and no namespace file (the namespace is the target's, else `default`).
    ///
    /// # Panics
    ///
    /// When `target` is not a `kubernetes:` target.
    pub async fn source(&self, target: &str) -> KubernetesSource {
        let target: KubernetesTarget = target
            .parse()
            .unwrap_or_else(|error| panic!("a kubernetes target: {error}"));
        KubernetesSource::new(self.client().await, target)
            .namespace_file(NO_NAMESPACE_FILE)
            .backoff(TEST_BACKOFF_MIN, TEST_BACKOFF_MAX)
    }

    /// Shared watches through a new client of this server ([`FakeApiServer::shared_source`]).
    pub async fn shared_watches(&self) -> SharedWatches {
        SharedWatches::new(self.client().await)
    }

    /// Like [`source`](Self::source), through `watches`: the target shares the watch of its
    /// namespace with the other targets of `watches`.
    ///
    /// # Panics
    ///
    /// When `target` is not a `kubernetes:` target.
    pub fn shared_source(&self, watches: &SharedWatches, target: &str) -> KubernetesSource {
        let target: KubernetesTarget = target
            .parse()
            .unwrap_or_else(|error| panic!("a kubernetes target: {error}"));
        watches
            .source(target)
            .namespace_file(NO_NAMESPACE_FILE)
            .backoff(TEST_BACKOFF_MIN, TEST_BACKOFF_MAX)
    }

    /// The number of list requests answered so far.
    pub fn list_count(&self) -> usize {
        self.requests_of(RequestKind::List).len()
    }

    /// The number of watch requests answered so far.
    pub fn watch_count(&self) -> usize {
        self.requests_of(RequestKind::Watch).len()
    }
}

/// The shortest backoff of [`FakeApiServer::source`].
pub const TEST_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest backoff of [`FakeApiServer::source`].
pub const TEST_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// A path that holds no namespace file.
pub const NO_NAMESPACE_FILE: &str = "/nonexistent/waypost-tests/namespace";

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("address", &self.address)
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}
