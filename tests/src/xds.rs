//! A management server for the xDS source: Envoy's aggregated discovery service (state of the
//! world) over tonic on a loopback port, with resources a test sets, changes and removes while
//! clients are subscribed, a log of every request (ACKs and NACKs), responses it can hold back
//! (a slow control plane), and streams it can cut.
//!
//! It answers as a control plane does: on each stream, for each resource type, it sends the
//! subscribed resources whenever their version or the subscription changes. Listener and
//! cluster responses hold every subscribed resource that exists (or every one, for a wildcard
//! subscription); route and endpoint responses hold the subscribed ones that changed since the
//! last response of the type (all of them after a change of subscription). It does not wait for
//! ACKs and never resends a version the client NACKed.
//!
//! The builders ([`listener`], [`route`], [`cluster`], [`assignment`]) make the resources gRPC
//! clients read, so the same rig serves waypost and a real xDS client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, HealthStatus, Locality, SocketAddress,
    address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use futures_util::{Stream, StreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status, Streaming};
use hyper_util::service::TowerToHyperService;

/// Type URLs of the four resource types.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Route configurations (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Clusters (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Endpoint assignments (EDS).
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// Resources of one type by name, each with the version of its type that last changed it.
type Versioned = BTreeMap<String, (u64, Any)>;

/// What the control plane holds and what it was asked.
#[derive(Default)]
struct State {
    /// Per type: a version bumped by every change, and the resources by name with the version
    /// that last changed each.
    resources: HashMap<String, (u64, Versioned)>,
    requests: Vec<Logged>,
    streams: u64,
}

/// A request as received. Its resource names are kept apart and shared with the stream's
/// previous request of the type when they are the same (an ACK repeats the whole subscription),
/// so a long run's log grows by the request, not by the subscription.
struct Logged {
    request: DiscoveryRequest,
    names: Arc<Vec<String>>,
}

impl Logged {
    fn request(&self) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: self.names.as_ref().clone(),
            ..self.request.clone()
        }
    }
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    /// Bumped by every change, so streams resend what changed.
    changes: watch::Sender<u64>,
    /// Bumped to cut every open stream.
    cuts: watch::Sender<u64>,
    /// How long each response is held, from when it was made, before it is sent.
    delay: watch::Sender<Duration>,
}

/// A running management server.
pub struct ControlPlane {
    address: SocketAddr,
    /// The bootstrap's `server_uri`: the address, or a Unix socket (Istio's agent serves one).
    server_uri: String,
    service: Service,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl ControlPlane {
    /// Starts a control plane on a free loopback port.
    pub async fn start() -> std::io::Result<ControlPlane> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a control plane at `address` (to come back on the port of one that was stopped).
    pub async fn start_at(address: SocketAddr) -> std::io::Result<ControlPlane> {
        Self::serve(address, Self::new_service()).await
    }

    fn new_service() -> Service {
        Service {
            state: Arc::default(),
            changes: watch::channel(0).0,
            cuts: watch::channel(0).0,
            delay: watch::channel(Duration::ZERO).0,
        }
    }

    /// Starts a control plane on the Unix socket at `path`, as Istio's agent serves xDS to
    /// proxyless gRPC (`unix:///etc/istio/proxy/XDS`). [`restart`](Self::restart) is for TCP.
    pub async fn start_unix(path: &std::path::Path) -> std::io::Result<ControlPlane> {
        let listener = tokio::net::UnixListener::bind(path)?;
        let service = Self::new_service();
        let http = http_service(&service);
        let (stop, mut stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let http = http.clone();
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), http)
                            .await;
                        });
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Ok(ControlPlane {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_uri: format!("unix://{}", path.display()),
            service,
            stop,
            tasks,
        })
    }

    async fn serve(address: SocketAddr, service: Service) -> std::io::Result<ControlPlane> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let http = http_service(&service);
        let (stop, stopped) = watch::channel(false);
        let tasks = crate::backend::serve(listener, http, stopped, true, None);
        Ok(ControlPlane {
            address,
            server_uri: address.to_string(),
            service,
            stop,
            tasks,
        })
    }

    /// The control plane's address (for one on a Unix socket, see [`server_uri`](Self::server_uri)).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The `server_uri` a bootstrap names this control plane by.
    pub fn server_uri(&self) -> &str {
        &self.server_uri
    }

    /// A gRPC bootstrap naming this control plane (plaintext), as a JSON string.
    pub fn bootstrap_json(&self, node_id: &str) -> String {
        serde_json::json!({
            "xds_servers": [{
                "server_uri": self.server_uri,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"]
            }],
            "node": {"id": node_id, "cluster": "waypost-tests", "locality": {"zone": "test-a"}}
        })
        .to_string()
    }

    /// Adds or replaces the resource `name` of type `type_url`, and pushes it to subscribers.
    pub fn set(&self, type_url: &str, name: &str, resource: Any) {
        self.change(type_url, |version, resources| {
            resources.insert(name.to_owned(), (version, resource));
        });
    }

    /// Removes the resource `name` of type `type_url`.
    pub fn remove(&self, type_url: &str, name: &str) {
        self.change(type_url, |_, resources| {
            resources.remove(name);
        });
    }

    fn change(&self, type_url: &str, change: impl FnOnce(u64, &mut BTreeMap<String, (u64, Any)>)) {
        {
            let mut state = self
                .service
                .state
                .lock()
                .expect("the state lock is never poisoned");
            let (version, resources) = state.resources.entry(type_url.to_owned()).or_default();
            *version += 1;
            change(*version, resources);
        }
        self.service.changes.send_modify(|n| *n += 1);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.service
            .state
            .lock()
            .expect("the state lock is never poisoned")
            .requests
            .iter()
            .map(Logged::request)
            .collect()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.service
            .state
            .lock()
            .expect("the state lock is never poisoned")
            .requests
            .len()
    }

    /// The requests that NACKed a response (they carry an error detail).
    pub fn nacks(&self) -> Vec<DiscoveryRequest> {
        self.service
            .state
            .lock()
            .expect("the state lock is never poisoned")
            .requests
            .iter()
            .filter(|logged| logged.request.error_detail.is_some())
            .map(Logged::request)
            .collect()
    }

    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        self.service
            .state
            .lock()
            .expect("the state lock is never poisoned")
            .streams
    }

    /// Holds every response for `delay` from when it was made before it is sent, in order, as a
    /// slow or overloaded control plane answers. It applies to responses already held as well:
    /// `Duration::ZERO` sends them all at once, and a very long delay holds everything until it
    /// is shortened.
    pub fn delay_responses(&self, delay: Duration) {
        self.service.delay.send_replace(delay);
    }

    /// Ends every open stream with `UNAVAILABLE`, as a control plane restarting does; clients
    /// open new ones.
    pub fn cut_streams(&self) {
        self.service.cuts.send_modify(|n| *n += 1);
    }

    /// Stops serving: the port closes and open connections are dropped. The resources are kept
    /// for [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        self.cut_streams();
        self.tasks.shutdown().await;
    }

    /// Serves again on the same port, with the resources it had.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let service = self.service.clone();
        let restarted = Self::serve(self.address, service).await?;
        let ControlPlane { stop, tasks, .. } = restarted;
        self.stop = stop;
        self.tasks = tasks;
        Ok(())
    }
}

/// The ADS server as a hyper service, for TCP and Unix-socket connections alike.
fn http_service(
    service: &Service,
) -> TowerToHyperService<AggregatedDiscoveryServiceServer<Service>> {
    TowerToHyperService::new(
        AggregatedDiscoveryServiceServer::new(service.clone())
            .max_decoding_message_size(64 * 1024 * 1024),
    )
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Responses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut incoming = request.into_inner();
        let service = self.clone();
        service.state.lock().expect("never poisoned").streams += 1;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut changes = service.changes.subscribe();
            let mut cuts = service.cuts.subscribe();
            cuts.borrow_and_update();
            // Per type: the names subscribed (empty: wildcard) and the version last sent.
            let mut subscribed: HashMap<String, (BTreeSet<String>, Option<u64>)> = HashMap::new();
            // Per type: the names of the last request, as received.
            let mut last_names: HashMap<String, Arc<Vec<String>>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    message = incoming.next() => match message {
                        Some(Ok(mut request)) => {
                            let names = std::mem::take(&mut request.resource_names);
                            let names = match last_names.get(&request.type_url) {
                                Some(last) if **last == names => Arc::clone(last),
                                _ => {
                                    let set: BTreeSet<String> = names.iter().cloned().collect();
                                    let entry = subscribed.entry(request.type_url.clone()).or_insert_with(|| (BTreeSet::new(), None));
                                    if entry.0 != set {
                                        entry.0 = set;
                                        entry.1 = None;
                                    }
                                    let names = Arc::new(names);
                                    last_names.insert(request.type_url.clone(), Arc::clone(&names));
                                    names
                                }
                            };
                            service.state.lock().expect("never poisoned").requests.push(Logged { request, names });
                        }
                        _ => return,
                    },
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = cuts.changed() => {
                        let cut = Status::unavailable("the control plane cut the stream");
                        let _ = sender.send((tokio::time::Instant::now(), Err(cut)));
                        return;
                    }
                }
                let state = service.state.lock().expect("never poisoned");
                let made = tokio::time::Instant::now();
                for (type_url, (names, sent)) in &mut subscribed {
                    let (version, resources) = state
                        .resources
                        .get(type_url)
                        .map_or((0, None), |(version, resources)| {
                            (*version, Some(resources))
                        });
                    if *sent == Some(version) {
                        continue;
                    }
                    // Listener and cluster responses hold every subscribed resource; route and
                    // endpoint responses only those changed since the last one sent, as
                    // control planes push them (a new subscription gets them all).
                    let since = match *sent {
                        Some(sent) if type_url != LISTENER && type_url != CLUSTER => sent,
                        _ => 0,
                    };
                    *sent = Some(version);
                    let resources: Vec<Any> = resources
                        .into_iter()
                        .flatten()
                        .filter(|(name, (changed, _))| {
                            *changed > since && (names.is_empty() || names.contains(*name))
                        })
                        .map(|(_, (_, resource))| resource.clone())
                        .collect();
                    if resources.is_empty() && since > 0 {
                        continue;
                    }
                    nonce += 1;
                    let response = DiscoveryResponse {
                        version_info: version.to_string(),
                        resources,
                        type_url: type_url.clone(),
                        nonce: nonce.to_string(),
                        ..Default::default()
                    };
                    if sender.send((made, Ok(response))).is_err() {
                        return;
                    }
                }
            }
        });
        // Each response waits until it is due (see `delay_responses`); a cut does not.
        let delay = self.delay.subscribe();
        let responses = futures_util::stream::unfold(
            (receiver, delay),
            |(mut receiver, mut delay)| async move {
                let (made, response) = receiver.recv().await?;
                if response.is_ok() {
                    loop {
                        let due = made.checked_add(*delay.borrow_and_update());
                        let Some(due) = due else {
                            // Too long to add: held until the delay changes.
                            if delay.changed().await.is_err() {
                                return None;
                            }
                            continue;
                        };
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => break,
                            changed = delay.changed() => if changed.is_err() { return None },
                        }
                    }
                }
                Some((response, (receiver, delay)))
            },
        );
        Ok(Response::new(Box::pin(responses)))
    }

    type DeltaAggregatedResourcesStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "this control plane speaks state of the world only",
        ))
    }
}

fn any(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

/// A client listener `name` whose routes come from the route configuration `route` over ADS.
pub fn listener(name: &str, route: &str) -> Any {
    let manager = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route.to_owned(),
        })),
        ..Default::default()
    };
    listener_with(name, &manager)
}

/// A client listener `name` with its routes inline: every request to `cluster`.
pub fn listener_inline(name: &str, cluster: &str) -> Any {
    let manager = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config(
            "inline",
            &[(cluster, 1)],
        ))),
        ..Default::default()
    };
    listener_with(name, &manager)
}

fn listener_with(name: &str, manager: &HttpConnectionManager) -> Any {
    // gRPC clients require the router as the last HTTP filter.
    let manager = HttpConnectionManager {
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(ConfigType::TypedConfig(any(ROUTER, &Router::default()))),
            ..Default::default()
        }],
        ..manager.clone()
    };
    let manager = &manager;
    any(
        LISTENER,
        &Listener {
            name: name.to_owned(),
            api_listener: Some(ApiListener {
                api_listener: Some(any(HCM, manager)),
            }),
            ..Default::default()
        },
    )
}

fn ads_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: 2, // V3
        ..Default::default()
    }
}

fn route_config(name: &str, clusters: &[(&str, u32)]) -> RouteConfiguration {
    let cluster_specifier = match clusters {
        [(cluster, _)] => ClusterSpecifier::Cluster((*cluster).to_owned()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(cluster, weight)| ClusterWeight {
                    name: (*cluster).to_owned(),
                    weight: Some(UInt32Value { value: *weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: format!("{name}-host"),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(cluster_specifier),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A route configuration `name` sending every request of every host to `clusters`, split by
/// their weights (one cluster: all of it).
pub fn route(name: &str, clusters: &[(&str, u32)]) -> Any {
    any(ROUTE, &route_config(name, clusters))
}

/// An EDS cluster `name` whose endpoints come from the assignment `service` over ADS.
pub fn cluster(name: &str, service: &str) -> Any {
    any(
        CLUSTER,
        &Cluster {
            name: name.to_owned(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads_source()),
                service_name: service.to_owned(),
            }),
            ..Default::default()
        },
    )
}

/// One endpoint of an [`assignment`].
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Its address.
    pub address: SocketAddr,
    /// Its health status.
    pub health: HealthStatus,
    /// Its load-balancing weight (`None`: unset).
    pub weight: Option<u32>,
}

impl HostSpec {
    /// A healthy endpoint without a weight.
    pub fn healthy(address: SocketAddr) -> Self {
        HostSpec {
            address,
            health: HealthStatus::Healthy,
            weight: None,
        }
    }

    /// The same endpoint with `health`.
    pub fn with_health(mut self, health: HealthStatus) -> Self {
        self.health = health;
        self
    }

    /// The same endpoint with `weight`.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }
}

/// One locality of an [`assignment`]: zone, weight, priority, endpoints.
#[derive(Debug, Clone)]
pub struct LocalitySpec {
    /// Its zone.
    pub zone: String,
    /// Its load-balancing weight.
    pub weight: u32,
    /// Its priority (0 is the highest).
    pub priority: u32,
    /// Its endpoints.
    pub hosts: Vec<HostSpec>,
}

impl LocalitySpec {
    /// A locality in `zone` of weight 1 and priority 0.
    pub fn new(zone: &str, hosts: Vec<HostSpec>) -> Self {
        LocalitySpec {
            zone: zone.to_owned(),
            weight: 1,
            priority: 0,
            hosts,
        }
    }

    /// The same locality at `priority`.
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }
}

/// The endpoint assignment `service` over `localities`.
pub fn assignment(service: &str, localities: &[LocalitySpec]) -> Any {
    any(
        ENDPOINTS,
        &ClusterLoadAssignment {
            cluster_name: service.to_owned(),
            endpoints: localities
                .iter()
                .map(|locality| LocalityLbEndpoints {
                    locality: Some(Locality {
                        zone: locality.zone.clone(),
                        ..Default::default()
                    }),
                    load_balancing_weight: Some(UInt32Value {
                        value: locality.weight,
                    }),
                    priority: locality.priority,
                    lb_endpoints: locality.hosts.iter().map(lb_endpoint).collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    )
}

/// The endpoint assignment `service` of healthy `addresses` in one locality.
pub fn healthy_assignment(service: &str, addresses: &[SocketAddr]) -> Any {
    assignment(
        service,
        &[LocalitySpec::new(
            "test-a",
            addresses.iter().copied().map(HostSpec::healthy).collect(),
        )],
    )
}

fn lb_endpoint(host: &HostSpec) -> LbEndpoint {
    LbEndpoint {
        health_status: host.health as i32,
        load_balancing_weight: host.weight.map(|value| UInt32Value { value }),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: host.address.ip().to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                        host.address.port(),
                    ))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Publishes the whole chain for `listener`: listener → route → cluster → assignment, all
/// named after it, over healthy `addresses`.
pub fn publish_chain(plane: &ControlPlane, listener_name: &str, addresses: &[SocketAddr]) {
    let route_name = format!("{listener_name}-route");
    let cluster_name = format!("{listener_name}-cluster");
    let service_name = format!("{listener_name}-eds");
    plane.set(
        ENDPOINTS,
        &service_name,
        healthy_assignment(&service_name, addresses),
    );
    plane.set(
        CLUSTER,
        &cluster_name,
        cluster(&cluster_name, &service_name),
    );
    plane.set(
        ROUTE,
        &route_name,
        route(&route_name, &[(&cluster_name, 1)]),
    );
    plane.set(
        LISTENER,
        listener_name,
        listener(listener_name, &route_name),
    );
}
