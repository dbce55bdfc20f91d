//! The ADS client: one task and one state-of-the-world stream per control plane (per bootstrap
//! and tokio runtime), shared by every `xds:///` source of the process.
//!
//! The task owns the resources received so far and the publishers of its targets. After each
//! response that changes a listener, route configuration or cluster (and each target that joins
//! or leaves) it recomputes what it needs (listeners, the route configurations and clusters they
//! name, the clusters' endpoint assignments) with an index of which targets go through each
//! resource, and asks for changes in the subscriptions. After every response it computes again
//! only the targets the index lists for what changed, and publishes those whose endpoints
//! changed: an endpoint update costs what its targets cost, not what all targets do. It ACKs a
//! response whose resources all validate and NACKs the others with the reasons, keeping the
//! last good version of each rejected resource (valid resources of a NACKed response are
//! applied, as gRFC A46 has it). A lost stream keeps every set, is reported in each target's
//! health, and is opened again after the jittered backoff; the new stream asks for everything
//! again, with the versions last accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// The names the targets' chains need now, each with the targets (ids, ascending) whose
    /// chain goes through it: what a response that changed the resource computes again.
    users: BTreeMap<String, Vec<u64>>,
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
        let uri = self.key.1.server().uri();
        let TypeState {
            version,
            nonce,
            subscribed,
            resources,
            absent,
            rejected,
            users,
        } = self.types.get_mut(&kind).expect("every kind");
        // Not asked for on this stream: an ACK would subscribe (to everything, for LDS and CDS).
        let Some(wanted) = subscribed.as_ref() else {
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
                    if wanted.contains(&name) {
                        let was_rejected = rejected.remove(&name).is_some();
                        let was_absent = absent.remove(&name);
                        let same = resources.get(&name) == Some(&decoded);
                        if !same || was_rejected || was_absent {
                            changed.insert(name.clone());
                        }
                        resources.insert(name.clone(), decoded);
                    }
                    present.insert(name);
                }
                Err(problem) => {
                    tracing::warn!(
                        target: "waypost::discovery",
                        control_plane = %uri,
                        kind = kind.short_name(),
                        version = %response.version_info,
                        error = %problem,
                        "xDS resource rejected; keeping its last good version"
                    );
                    if let Some(name) = &problem.name {
                        present.insert(name.clone());
                        if wanted.contains(name) && !resources.contains_key(name) {
                            rejected.insert(name.clone(), problem.problem.clone());
                            changed.insert(name.clone());
                        }
                    }
                    problems.push(problem.to_string());
                }
            }
        }
        if kind.response_is_complete() && !ignore_deletion {
            for name in wanted {
                if !present.contains(name) {
                    resources.remove(name);
                    rejected.remove(name);
                    if absent.insert(name.clone()) {
                        changed.insert(name.clone());
                    }
                }
            }
        }
        nonce.clone_from(&response.nonce);
        let error_detail = if problems.is_empty() {
            version.clone_from(&response.version_info);
            None
        } else {
            Some(RpcStatus {
                code: INVALID_ARGUMENT,
                message: problems.join("; "),
                details: Vec::new(),
            })
        };
        let _ = requests.send(DiscoveryRequest {
            version_info: version.clone(),
            node: None,
            resource_names: wanted.iter().cloned().collect(),
            type_url: kind.type_url().into(),
            response_nonce: nonce.clone(),
            error_detail,
            ..Default::default()
        });
        // Which targets go through a name of this kind depends only on the kinds above it, so
        // the index from before this response still holds for the names it changed.
        let mut touched: Vec<u64> = changed
            .iter()
            .filter_map(|name| users.get(name))
            .flatten()
            .copied()
            .collect();
        // Endpoint assignments end the chain: a change in one cannot change what the targets
        // need. A change of another kind can.
        if kind != Kind::Endpoints && !changed.is_empty() {
            self.subscribe(requests, first);
        }
        // And those never published (still waiting for part of their chain, or failed).
        touched.extend(
            self.targets
                .iter()
                .filter(|target| target.published.is_none())
                .map(|target| target.id),
        );
        touched.sort_unstable();
        touched.dedup();
        self.publish(&touched);
    }

    /// What each kind needs now, from the targets down the chain: each name with the targets
    /// whose chain goes through it.
    fn chains(&self) -> HashMap<Kind, BTreeMap<String, Vec<u64>>> {
        let mut chains: HashMap<Kind, BTreeMap<String, Vec<u64>>> = Kind::ALL
            .into_iter()
            .map(|kind| (kind, BTreeMap::new()))
            .collect();
        let mut add = |kind: Kind, name: &str, id: u64| {
            let users = chains.get_mut(&kind).expect("every kind");
            match users.get_mut(name) {
                Some(ids) => ids.push(id),
                None => {
                    users.insert(name.to_owned(), vec![id]);
                }
            }
        };
        for target in &self.targets {
            let listener = target.listener.as_str();
            add(Kind::Listener, listener, target.id);
            let found = match self.resource(Kind::Listener, listener) {
                Some(Decoded::Listener(ListenerRoutes::Inline(found))) => Some(found),
                Some(Decoded::Listener(ListenerRoutes::Rds(name))) => {
                    add(Kind::Route, name, target.id);
                    match self.resource(Kind::Route, name) {
                        Some(Decoded::Route(found)) => Some(found),
                        _ => None,
                    }
                }
                _ => None,
            };
            let Some(Ok(clusters)) = found.map(|found| found.clusters_for(listener)) else {
                continue;
            };
            for (cluster, _) in clusters {
                add(Kind::Cluster, cluster, target.id);
                if let Some(Decoded::Cluster(eds)) = self.resource(Kind::Cluster, cluster) {
                    add(Kind::Endpoints, &eds.service_name, target.id);
                }
            }
        }
        // A target whose weighted clusters share an assignment is listed once.
        for users in chains.values_mut() {
            for ids in users.values_mut() {
                ids.dedup();
            }
        }
        chains
    }

    fn resource(&self, kind: Kind, name: &str) -> Option<&Decoded> {
        self.types[&kind].resources.get(name)
    }

    /// Sends a request for every kind whose wanted names changed, forgets what is no longer
    /// wanted, and brings the index of which targets go through what up to date. An empty list
    /// is never sent for LDS or CDS (it would ask for everything).
    fn subscribe(&mut self, requests: &mpsc::UnboundedSender<DiscoveryRequest>, first: &mut bool) {
        // The chain settles in at most one pass per kind.
        let mut chains = self.chains();
        for _ in 0..Kind::ALL.len() {
            let mut changed = false;
            for kind in Kind::ALL {
                let users = &chains[&kind];
                let state = self.types.get_mut(&kind).expect("every kind");
                if state
                    .subscribed
                    .as_ref()
                    .is_some_and(|names| names.iter().eq(users.keys()))
                {
                    continue;
                }
                if users.is_empty() && (kind.response_is_complete() || state.subscribed.is_none()) {
                    continue;
                }
                state.resources.retain(|name, _| users.contains_key(name));
                state.absent.retain(|name| users.contains_key(name));
                state.rejected.retain(|name, _| users.contains_key(name));
                state.subscribed = Some(users.keys().cloned().collect());
                changed = true;
                let node = std::mem::take(first).then(|| self.key.1.node_proto());
                let _ = requests.send(DiscoveryRequest {
                    version_info: state.version.clone(),
                    node,
                    resource_names: users.keys().cloned().collect(),
                    type_url: kind.type_url().into(),
                    response_nonce: state.nonce.clone(),
                    ..Default::default()
                });
            }
            if !changed {
                break;
            }
            chains = self.chains();
        }
        for (kind, users) in chains {
            self.types.get_mut(&kind).expect("every kind").users = users;
        }
    }

    /// Computes the targets `ids` again: publishes those whose endpoints changed, and reports
    /// those that cannot be resolved.
    fn publish(&mut self, ids: &[u64]) {
        for id in ids {
            // Targets are kept in the order they joined, so by id.
            let Ok(index) = self.targets.binary_search_by_key(id, |target| target.id) else {
                continue;
            };
            let outcome = self.resolve(&self.targets[index].listener);
            let target = &mut self.targets[index];
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
