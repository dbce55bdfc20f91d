//! The ADS client: one task and one state-of-the-world stream per control plane (per bootstrap
//! and tokio runtime), shared by every `xds:///` source of the process.
//!
//! The task owns the resources received so far and the publishers of its targets. After each
//! response (and each target that joins or leaves) it recomputes what it needs (listeners, the
//! route configurations and clusters they name, the clusters' endpoint assignments), asks for
//! changes in the subscriptions, and publishes each target whose endpoints changed. It ACKs a
//! response whose resources all validate and NACKs the others with the reasons, keeping the
//! last good version of each rejected resource (valid resources of a NACKed response are
//! applied, as gRFC A46 has it). A lost stream keeps every set, is reported in each target's
//! health, and is opened again after the jittered backoff; the new stream asks for everything
//! again, with the versions last accepted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use super::bootstrap::Bootstrap;
use super::resources::{self, Decoded, Kind, ListenerRoutes};
use crate::backoff::Backoff;
use crate::{DiscoveryError, DiscoveryErrorKind, Endpoint, Publisher};

/// The first delay before opening a lost stream again, and the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// gRPC's code for a resource that fails validation, in a NACK's error detail.
const INVALID_ARGUMENT: i32 = 3;

/// One task per control plane and runtime: a stream's connection is a task of the runtime that
/// opened it.
type Key = (tokio::runtime::Id, Bootstrap);

/// A running task: its generation (which tells it from a later one of the same key) and where
/// targets join it.
type Running = (u64, mpsc::UnboundedSender<Watch>);

/// The running ADS tasks.
static TASKS: LazyLock<Mutex<HashMap<Key, Running>>> = LazyLock::new(Default::default);
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A target joining the stream of its control plane.
pub(crate) struct Watch {
    pub(crate) listener: String,
    pub(crate) publisher: Publisher,
    /// Dropped when the task has dropped the publisher: what the target's `SourceHandle` waits
    /// for.
    pub(crate) ended: watch::Sender<()>,
}

/// Hands `watch` to the ADS task of `bootstrap` on the current runtime, starting it if needed.
pub(crate) fn register(handle: &tokio::runtime::Handle, bootstrap: &Bootstrap, watch: Watch) {
    let key = (handle.id(), bootstrap.clone());
    let mut tasks = TASKS.lock().unwrap_or_else(PoisonError::into_inner);
    let watch = match tasks.get(&key) {
        Some((_, sender)) => match sender.send(watch) {
            Ok(()) => return,
            // The task ended (its runtime shut down): start another.
            Err(mpsc::error::SendError(watch)) => watch,
        },
        None => watch,
    };
    let (sender, receiver) = mpsc::unbounded_channel();
    let _ = sender.send(watch);
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tasks.insert(key.clone(), (generation, sender));
    let task = Ads::new(key, generation, receiver);
    handle.spawn(task.run());
}

struct Target {
    id: u64,
    listener: String,
    publisher: Publisher,
    _ended: watch::Sender<()>,
    /// What was last published, `None` before the first publication or after a failure report
    /// (so that the next answer publishes and the health turns current again).
    published: Option<Vec<Endpoint>>,
    /// The last problem reported, so that one problem is reported once.
    reported: Option<String>,
}

#[derive(Default)]
struct TypeState {
    /// The version last accepted (ACKed), sent with every request of the type.
    version: String,
    /// The nonce of the last response, sent with the next request.
    nonce: String,
    /// The names last asked for on the current stream; `None` before the first request.
    subscribed: Option<BTreeSet<String>>,
    resources: HashMap<String, Decoded>,
    /// Resources a complete (LDS, CDS) response left out: they do not exist.
    absent: HashSet<String>,
    /// Resources rejected without a good version to keep, and why.
    rejected: HashMap<String, String>,
}

struct Ads {
    key: Key,
    generation: u64,
    watches: mpsc::UnboundedReceiver<Watch>,
    targets: Vec<Target>,
    next_id: u64,
    types: HashMap<Kind, TypeState>,
    backoff: Backoff,
}

/// What the task waited for.
enum Event {
    Watch(Option<Watch>),
    Left(u64),
    Response(Result<Option<DiscoveryResponse>, tonic::Status>),
}

impl Ads {
    fn new(key: Key, generation: u64, watches: mpsc::UnboundedReceiver<Watch>) -> Self {
        Ads {
            key,
            generation,
            watches,
            targets: Vec::new(),
            next_id: 0,
            types: Kind::ALL
                .into_iter()
                .map(|kind| (kind, TypeState::default()))
                .collect(),
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
        }
    }

    fn bootstrap(&self) -> &Bootstrap {
        &self.key.1
    }

    fn uri(&self) -> &str {
        self.bootstrap().server().uri()
    }

    async fn run(mut self) {
        let mut leaving = FuturesUnordered::new();
        let channel = match channel(self.uri()) {
            Ok(channel) => channel,
            Err(problem) => {
                // The bootstrap was checked when the source was built; this is a last resort.
                let problem = format!("the xDS control plane `{}`: {problem}", self.uri());
                while let Some(watch) = self.watches.recv().await {
                    let mut publisher = watch.publisher;
                    let target = publisher.target_arc();
                    publisher.report_failure(DiscoveryError::new(
                        target,
                        DiscoveryErrorKind::Other,
                        problem.clone(),
                    ));
                }
                return;
            }
        };
        loop {
            // One stream, until it fails.
            let (requests, receiver) = mpsc::unbounded_channel::<DiscoveryRequest>();
            // A new stream: everything is asked for again, with the versions accepted so far
            // and no nonce (nonces belong to the stream that sent them).
            for kind in Kind::ALL {
                let state = self.types.get_mut(&kind).expect("every kind");
                state.subscribed = None;
                state.nonce.clear();
            }
            let mut first = true;
            self.subscribe(&requests, &mut first);
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|request| (request, receiver))
            });
            let mut client = AggregatedDiscoveryServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024);
            let opened = {
                let call = client.stream_aggregated_resources(stream);
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        opened = &mut call => break opened,
                        event = next_event(&mut self.watches, &mut leaving, None) => {
                            if !self.handle(event, &mut leaving, &requests, &mut first) {
                                return;
                            }
                        }
                    }
                }
            };
            let failure = match opened {
                Ok(response) => {
                    let mut responses = response.into_inner();
                    loop {
                        let event =
                            next_event(&mut self.watches, &mut leaving, Some(&mut responses)).await;
                        match event {
                            Event::Response(Ok(Some(response))) => {
                                self.backoff.reset();
                                self.respond(response, &requests, &mut first);
                            }
                            Event::Response(Ok(None)) => {
                                break "the control plane ended the stream".to_owned();
                            }
                            Event::Response(Err(status)) => {
                                break format!("the stream failed: {status}");
                            }
                            other => {
                                if !self.handle(other, &mut leaving, &requests, &mut first) {
                                    return;
                                }
                            }
                        }
                    }
                }
                Err(status) => format!("the stream could not be opened: {status}"),
            };
            let delay = self.backoff.next_delay();
            self.stream_lost(&failure, delay);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    event = next_event(&mut self.watches, &mut leaving, None) => {
                        // No stream: nothing is sent; the next one asks for everything.
                        let (idle, _) = mpsc::unbounded_channel();
                        let mut first = false;
                        if !self.handle(event, &mut leaving, &idle, &mut first) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A target joined or left. `false` when the task should end: no target is left and none
    /// is on its way.
    fn handle(
        &mut self,
        event: Event,
        leaving: &mut FuturesUnordered<futures_util::future::BoxFuture<'static, u64>>,
        requests: &mpsc::UnboundedSender<DiscoveryRequest>,
        first: &mut bool,
    ) -> bool {
        match event {
            Event::Watch(Some(watch)) => {
                let id = self.next_id;
                self.next_id += 1;
                let stopping = watch.publisher.stopping();
                leaving.push(Box::pin(async move {
                    stopping.await;
                    id
                }));
                self.targets.push(Target {
                    id,
                    listener: watch.listener,
                    publisher: watch.publisher,
                    _ended: watch.ended,
                    published: None,
                    reported: None,
                });
                self.subscribe(requests, first);
                // Only the new target: the others' resources did not change.
                self.publish(&[id]);
                true
            }
            Event::Left(id) => {
                self.targets.retain(|target| target.id != id);
                if self.targets.is_empty() {
                    return !self.retire();
                }
                self.subscribe(requests, first);
                true
            }
            // Every sender is in the registry, which keeps it while the task runs.
            Event::Watch(None) => false,
            Event::Response(_) => true,
        }
    }

    /// Leaves the registry if no target is on its way; `true` when it did (the task ends).
    fn retire(&mut self) -> bool {
        let mut tasks = TASKS.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.watches.is_empty() {
            return false;
        }
        if tasks
            .get(&self.key)
            .is_some_and(|(generation, _)| *generation == self.generation)
        {
            tasks.remove(&self.key);
        }
        true
    }

    /// Every target is told that the stream is gone; their sets stay.
    fn stream_lost(&mut self, failure: &str, delay: Duration) {
        let uri = self.uri().to_owned();
        tracing::warn!(
            target: "waypost::discovery",
            control_plane = %uri,
            error = %failure,
            retry_in = ?delay,
            "xDS stream lost; keeping the last endpoints"
        );
        for target in &mut self.targets {
            let error = DiscoveryError::new(
                target.publisher.target_arc(),
                DiscoveryErrorKind::Resolve,
                format!("xDS control plane `{uri}`: {failure}"),
            );
            target.publisher.report_failure(error);
            target.published = None;
            target.reported = None;
        }
    }

    /// Handles one response: applies what validates, ACKs or NACKs, updates the subscriptions
    /// and publishes what changed.
    fn respond(
        &mut self,
        response: DiscoveryResponse,
        requests: &mpsc::UnboundedSender<DiscoveryRequest>,
        first: &mut bool,
    ) {
        let Some(kind) = Kind::from_type_url(&response.type_url) else {
            // A type nobody asked for: NACK it so the control plane sees why.
            let _ = requests.send(DiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce,
                error_detail: Some(RpcStatus {
                    code: INVALID_ARGUMENT,
                    message: format!("resource type {} is not supported", response.type_url),
                    details: Vec::new(),
                }),
                ..Default::default()
            });
            return;
        };
        let ignore_deletion = self.bootstrap().server().ignores_resource_deletion();
        let state = self.types.get_mut(&kind).expect("every kind");
        // Not asked for on this stream: an ACK would subscribe (to everything, for LDS and CDS).
        let Some(wanted) = state.subscribed.clone() else {
            return;
        };
        let mut present = HashSet::new();
        let mut problems = Vec::new();
        // The names whose resource (or its absence, or its rejection) changed: only the targets
        // whose chain goes through one of them are computed again.
        let mut changed = HashSet::new();
        for any in &response.resources {
            match resources::decode(kind, any) {
                Ok((name, decoded)) => {
                    present.insert(name.clone());
                    if wanted.contains(&name) {
                        let was_rejected = state.rejected.remove(&name).is_some();
                        let was_absent = state.absent.remove(&name);
                        let same = state.resources.get(&name) == Some(&decoded);
                        if !same || was_rejected || was_absent {
                            changed.insert(name.clone());
                        }
                        state.resources.insert(name, decoded);
                    }
                }
                Err(rejected) => {
                    tracing::warn!(
                        target: "waypost::discovery",
                        control_plane = %self.key.1.server().uri(),
                        kind = kind.short_name(),
                        version = %response.version_info,
                        error = %rejected,
                        "xDS resource rejected; keeping its last good version"
                    );
                    if let Some(name) = &rejected.name {
                        present.insert(name.clone());
                        if wanted.contains(name) && !state.resources.contains_key(name) {
                            state
                                .rejected
                                .insert(name.clone(), rejected.problem.clone());
                            changed.insert(name.clone());
                        }
                    }
                    problems.push(rejected.to_string());
                }
            }
        }
        if kind.response_is_complete() && !ignore_deletion {
            for name in &wanted {
                if !present.contains(name) {
                    state.resources.remove(name);
                    state.rejected.remove(name);
                    if state.absent.insert(name.clone()) {
                        changed.insert(name.clone());
                    }
                }
            }
        }
        state.nonce = response.nonce.clone();
        let error_detail = if problems.is_empty() {
            state.version = response.version_info.clone();
            None
        } else {
            Some(RpcStatus {
                code: INVALID_ARGUMENT,
                message: problems.join("; "),
                details: Vec::new(),
            })
        };
        let _ = requests.send(DiscoveryRequest {
            version_info: state.version.clone(),
            node: None,
            resource_names: wanted.into_iter().collect(),
            type_url: kind.type_url().into(),
            response_nonce: state.nonce.clone(),
            error_detail,
            ..Default::default()
        });
        self.subscribe(requests, first);
        let touched: Vec<u64> = self
            .targets
            .iter()
            .filter(|target| {
                target.published.is_none() || self.touches(&target.listener, kind, &changed)
            })
            .map(|target| target.id)
            .collect();
        self.publish(&touched);
    }

    /// `true` when the chain of `listener` goes through a resource of `kind` named in `names`.
    fn touches(&self, listener: &str, kind: Kind, names: &HashSet<String>) -> bool {
        if names.is_empty() {
            return false;
        }
        if kind == Kind::Listener {
            return names.contains(listener);
        }
        let routes = match self.resource(Kind::Listener, listener) {
            Some(Decoded::Listener(ListenerRoutes::Inline(routes))) => routes,
            Some(Decoded::Listener(ListenerRoutes::Rds(name))) => {
                if kind == Kind::Route {
                    return names.contains(name.as_str());
                }
                match self.resource(Kind::Route, name) {
                    Some(Decoded::Route(routes)) => routes,
                    _ => return false,
                }
            }
            _ => return false,
        };
        if kind == Kind::Route {
            return false;
        }
        let Ok(clusters) = routes.clusters_for(listener) else {
            return false;
        };
        clusters.iter().any(|(cluster, _)| {
            if kind == Kind::Cluster {
                return names.contains(cluster.as_str());
            }
            match self.resource(Kind::Cluster, cluster) {
                Some(Decoded::Cluster(eds)) => names.contains(eds.service_name.as_str()),
                _ => false,
            }
        })
    }

    /// The names each kind needs now, from the targets down the chain.
    fn wanted(&self) -> HashMap<Kind, BTreeSet<String>> {
        let mut wanted: HashMap<Kind, BTreeSet<String>> = HashMap::new();
        let listeners: BTreeSet<String> = self.targets.iter().map(|t| t.listener.clone()).collect();
        let mut routes = BTreeSet::new();
        let mut clusters = BTreeSet::new();
        for listener in &listeners {
            let found = match self.resource(Kind::Listener, listener) {
                Some(Decoded::Listener(ListenerRoutes::Inline(found))) => Some(found),
                Some(Decoded::Listener(ListenerRoutes::Rds(name))) => {
                    routes.insert(name.clone());
                    match self.resource(Kind::Route, name) {
                        Some(Decoded::Route(found)) => Some(found),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(Ok(chosen)) = found.map(|found| found.clusters_for(listener)) {
                clusters.extend(chosen.iter().map(|(name, _)| name.clone()));
            }
        }
        let assignments: BTreeSet<String> = clusters
            .iter()
            .filter_map(|cluster| match self.resource(Kind::Cluster, cluster) {
                Some(Decoded::Cluster(eds)) => Some(eds.service_name.clone()),
                _ => None,
            })
            .collect();
        wanted.insert(Kind::Listener, listeners);
        wanted.insert(Kind::Route, routes);
        wanted.insert(Kind::Cluster, clusters);
        wanted.insert(Kind::Endpoints, assignments);
        wanted
    }

    fn resource(&self, kind: Kind, name: &str) -> Option<&Decoded> {
        self.types[&kind].resources.get(name)
    }

    /// Sends a request for every kind whose wanted names changed, and forgets what is no
    /// longer wanted. An empty list is never sent for LDS or CDS (it would ask for everything).
    fn subscribe(&mut self, requests: &mpsc::UnboundedSender<DiscoveryRequest>, first: &mut bool) {
        // The chain settles in at most one pass per kind.
        for _ in 0..Kind::ALL.len() {
            let wanted = self.wanted();
            let mut changed = false;
            for kind in Kind::ALL {
                let names = &wanted[&kind];
                let state = self.types.get_mut(&kind).expect("every kind");
                if state.subscribed.as_ref() == Some(names) {
                    continue;
                }
                if names.is_empty() && (kind.response_is_complete() || state.subscribed.is_none()) {
                    continue;
                }
                state.resources.retain(|name, _| names.contains(name));
                state.absent.retain(|name| names.contains(name));
                state.rejected.retain(|name, _| names.contains(name));
                state.subscribed = Some(names.clone());
                changed = true;
                let node = std::mem::take(first).then(|| self.key.1.node_proto());
                let _ = requests.send(DiscoveryRequest {
                    version_info: state.version.clone(),
                    node,
                    resource_names: names.iter().cloned().collect(),
                    type_url: kind.type_url().into(),
                    response_nonce: state.nonce.clone(),
                    ..Default::default()
                });
            }
            if !changed {
                break;
            }
        }
    }

    /// Computes the targets `ids` again: publishes those whose endpoints changed, and reports
    /// those that cannot be resolved.
    fn publish(&mut self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let wanted: HashSet<u64> = ids.iter().copied().collect();
        let outcomes: Vec<Option<Outcome>> = self
            .targets
            .iter()
            .map(|target| {
                wanted
                    .contains(&target.id)
                    .then(|| self.resolve(&target.listener))
            })
            .collect();
        for (target, outcome) in self.targets.iter_mut().zip(outcomes) {
            let Some(outcome) = outcome else {
                continue;
            };
            let name = target.publisher.target_arc();
            match outcome {
                Outcome::Pending => {}
                Outcome::Ready(endpoints) => {
                    if target.published.as_ref() != Some(&endpoints) {
                        target.publisher.publish(endpoints.iter().cloned());
                        target.published = Some(endpoints);
                    }
                    target.reported = None;
                }
                Outcome::Gone(detail) => {
                    if target.reported.as_ref() != Some(&detail) {
                        target.publisher.publish_gone(DiscoveryError::new(
                            name,
                            DiscoveryErrorKind::NotFound,
                            detail.clone(),
                        ));
                        target.published = Some(Vec::new());
                        target.reported = Some(detail);
                    }
                }
                Outcome::Invalid(detail) => {
                    if target.reported.as_ref() != Some(&detail) {
                        target.publisher.report_failure(DiscoveryError::new(
                            name,
                            DiscoveryErrorKind::InvalidData,
                            detail.clone(),
                        ));
                        target.published = None;
                        target.reported = Some(detail);
                    }
                }
            }
        }
    }

    /// Where the chain of `listener` stands.
    fn resolve(&self, listener: &str) -> Outcome {
        let routes = match self.find(Kind::Listener, listener) {
            Err(outcome) => return outcome,
            Ok(Decoded::Listener(ListenerRoutes::Inline(routes))) => routes,
            Ok(Decoded::Listener(ListenerRoutes::Rds(name))) => {
                match self.find(Kind::Route, name) {
                    Err(outcome) => return outcome,
                    Ok(Decoded::Route(routes)) => routes,
                    Ok(_) => return Outcome::Pending,
                }
            }
            Ok(_) => return Outcome::Pending,
        };
        let clusters = match routes.clusters_for(listener) {
            Ok(clusters) => clusters,
            Err(problem) => return Outcome::Invalid(format!("listener `{listener}`: {problem}")),
        };
        let mut assignments = Vec::with_capacity(clusters.len());
        for (cluster, weight) in clusters {
            let service = match self.find(Kind::Cluster, cluster) {
                Err(outcome) => return outcome,
                Ok(Decoded::Cluster(eds)) => &eds.service_name,
                Ok(_) => return Outcome::Pending,
            };
            match self.find(Kind::Endpoints, service) {
                Err(outcome) => return outcome,
                Ok(Decoded::Endpoints(assignment)) => assignments.push((*weight, assignment)),
                Ok(_) => return Outcome::Pending,
            }
        }
        Outcome::Ready(resources::endpoints_of(&assignments))
    }

    fn find(&self, kind: Kind, name: &str) -> Result<&Decoded, Outcome> {
        let state = &self.types[&kind];
        if let Some(found) = state.resources.get(name) {
            return Ok(found);
        }
        if state.absent.contains(name) {
            return Err(Outcome::Gone(format!(
                "the control plane has no {} `{name}` ({})",
                noun(kind),
                kind.short_name()
            )));
        }
        if let Some(problem) = state.rejected.get(name) {
            return Err(Outcome::Invalid(format!(
                "{} `{name}` was rejected: {problem}",
                noun(kind)
            )));
        }
        Err(Outcome::Pending)
    }
}

fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Listener => "listener",
        Kind::Route => "route configuration",
        Kind::Cluster => "cluster",
        Kind::Endpoints => "endpoint assignment",
    }
}

/// Where a target's chain of resources stands.
enum Outcome {
    /// Something is not received yet.
    Pending,
    Ready(Vec<Endpoint>),
    /// A listener or cluster the control plane confirmed it does not have.
    Gone(String),
    /// A resource that failed validation, or a route that leads nowhere.
    Invalid(String),
}

/// The next thing the task should handle.
async fn next_event(
    watches: &mut mpsc::UnboundedReceiver<Watch>,
    leaving: &mut FuturesUnordered<futures_util::future::BoxFuture<'static, u64>>,
    responses: Option<&mut tonic::Streaming<DiscoveryResponse>>,
) -> Event {
    let response = async {
        match responses {
            Some(responses) => responses.message().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        watch = watches.recv() => Event::Watch(watch),
        Some(id) = leaving.next(), if !leaving.is_empty() => Event::Left(id),
        response = response => Event::Response(response),
    }
}

/// A channel to the control plane at `uri` that connects when first used (and again after
/// losing its connection).
fn channel(uri: &str) -> Result<Channel, String> {
    if let Some(path) = uri.strip_prefix("unix:") {
        let path = Arc::new(path.strip_prefix("//").unwrap_or(path).to_owned());
        // The URI is unused: the connector opens the socket.
        let endpoint = TonicEndpoint::from_static("http://xds.local");
        return Ok(
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = Arc::clone(&path);
                async move {
                    let stream = tokio::net::UnixStream::connect(path.as_str()).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            })),
        );
    }
    let authority = uri
        .strip_prefix("dns:///")
        .or_else(|| uri.strip_prefix("http://"))
        .unwrap_or(uri)
        .trim_end_matches('/');
    let endpoint = TonicEndpoint::from_shared(format!("http://{authority}"))
        .map_err(|error| error.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect_lazy())
}
