//! From a target string to a ready client.
//!
//! The builder: see [`Builder`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use waypost_balance::{
    Balance, BalanceConfig, BalanceLayer, ConcurrencyLimit, LoadFeedback, MakeEndpoint,
    OutlierDetection, Policy, ZonePreference,
};
#[cfg(any(feature = "tonic", all(feature = "tls", feature = "hyper")))]
use waypost_discovery::DnsHost;
use waypost_discovery::{Endpoints, Target};

use crate::error::{Error, ErrorKind};
use crate::key::RequestKey;

/// Options of the discovery source.
#[derive(Clone, Default)]
pub(crate) struct DiscoveryOptions {
    #[cfg(feature = "dns")]
    pub(crate) dns: waypost_discovery::source::dns::DnsOptions,
    #[cfg(feature = "kubernetes")]
    pub(crate) kube_client: Option<waypost_discovery::source::kubernetes::kube::Client>,
    #[cfg(feature = "kubernetes")]
    pub(crate) kube_watches: Option<waypost_discovery::source::kubernetes::SharedWatches>,
    #[cfg(feature = "xds")]
    pub(crate) xds_bootstrap: Option<waypost_discovery::source::xds::Bootstrap>,
}

impl fmt::Debug for DiscoveryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("DiscoveryOptions");
        #[cfg(feature = "dns")]
        debug.field("dns", &self.dns);
        #[cfg(feature = "kubernetes")]
        debug.field("kube_client", &self.kube_client.is_some());
        #[cfg(feature = "kubernetes")]
        debug.field("kube_watches", &self.kube_watches);
        #[cfg(feature = "xds")]
        debug.field("xds_bootstrap", &self.xds_bootstrap);
        debug.finish()
    }
}

/// Builds clients for one target: parses the target, holds the options, and builds what the
/// application uses:
///
/// | method | gives | feature |
/// |--------|-------|---------|
/// | [`endpoints`](Builder::endpoints) | the live [`Endpoints`] handle only | |
/// | [`tonic_channel`](Builder::tonic_channel) | a [`tonic::Channel`](crate::tonic::Channel) for generated gRPC clients | `tonic` |
/// | [`http_client`](Builder::http_client) | a [`hyper::HttpClient`](crate::hyper::HttpClient) | `hyper` |
/// | [`balance`](Builder::balance) | a tower [`Balance`] over services you make per endpoint | |
/// | [`balance_layer`](Builder::balance_layer) | the same as a tower [`BalanceLayer`] | |
///
/// Building starts the discovery source and the balancer's background task, so it must happen
/// inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), waypost::Error> {
/// use std::time::Duration;
/// use waypost::balance::Policy;
///
/// let builder = waypost::Builder::new("static:///127.0.0.1:50051,127.0.0.1:50052")?
///     .policy(Policy::p2c_peak_ewma())
///     .wait_for_endpoints(Duration::from_secs(5))
///     .timeout(Duration::from_secs(2));
/// let endpoints = builder.endpoints()?;
/// assert_eq!(endpoints.load().len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Builder {
    target: Target,
    balance: BalanceConfig,
    discovery: DiscoveryOptions,
    key: RequestKey,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    keep_alive_interval: Option<Duration>,
    keep_alive_timeout: Duration,
    #[cfg(feature = "tonic")]
    grpc_health_service: Option<String>,
    #[cfg(feature = "hyper")]
    http_probe: Option<crate::hyper::HttpProbe>,
    authority: Option<String>,
    http2_only: bool,
    #[cfg(any(feature = "tonic", feature = "hyper"))]
    retry: Option<crate::retry::RetryBudget>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("target", &self.target.to_string())
            .field("balance", &self.balance)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// How many endpoints a request that was never sent is tried on, in all.
#[cfg_attr(not(any(feature = "tonic", feature = "hyper")), allow(dead_code))]
pub(crate) const UNSENT_ATTEMPTS: usize = 3;

/// The default connect timeout (TCP, TLS and HTTP/2 handshake each).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer keep-alive intervals are shortened to this (a year: never, in practice).
#[cfg(feature = "tonic")]
const MAX_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The default HTTP/2 keep-alive ping interval.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// The default wait for a keep-alive ping's acknowledgement before the connection is closed.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl Builder {
    /// A builder for `target` (any form [`Target`] parses) with the default options.
    pub fn new(target: &str) -> Result<Self, Error> {
        let parsed: Target = target.parse().map_err(|error| {
            Error::new(ErrorKind::InvalidTarget, "the target is not valid")
                .with_target(target)
                .with_source(error)
        })?;
        Ok(Builder::from_target(parsed))
    }

    /// A builder for a parsed target.
    pub fn from_target(target: Target) -> Self {
        Builder {
            target,
            balance: BalanceConfig::default(),
            discovery: DiscoveryOptions::default(),
            key: RequestKey::none(),
            timeout: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keep_alive_interval: Some(DEFAULT_KEEP_ALIVE_INTERVAL),
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            #[cfg(feature = "tonic")]
            grpc_health_service: None,
            #[cfg(feature = "hyper")]
            http_probe: None,
            authority: None,
            http2_only: false,
            #[cfg(any(feature = "tonic", feature = "hyper"))]
            retry: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The balancing policy. Default: P2C with Peak EWMA.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.balance.policy = policy;
        self
    }

    /// The whole balancer configuration (policy, outlier detection, panic threshold, zone,
    /// slow start, wait deadline).
    pub fn balance_config(mut self, config: BalanceConfig) -> Self {
        self.balance = config;
        self
    }

    /// Outlier detection settings.
    pub fn outlier_detection(mut self, outlier_detection: OutlierDetection) -> Self {
        self.balance.outlier_detection = outlier_detection;
        self
    }

    /// At most `limit.max_in_flight` requests in flight per endpoint (Envoy's `max_requests`
    /// circuit breaker, per endpoint): picks pass full endpoints over, and a request that finds
    /// every endpoint full fails unsent with [`ErrorKind::Overloaded`] or waits for room within
    /// its deadline ([`ConcurrencyLimit::waiting`]). Default: no limit. A limit of 0 is a
    /// configuration error when the client is built.
    pub fn concurrency_limit(mut self, limit: ConcurrencyLimit) -> Self {
        self.balance.concurrency_limit = Some(limit);
        self
    }

    /// How long endpoints that answer "overloaded" (HTTP 429 and 503, gRPC
    /// `RESOURCE_EXHAUSTED` and trailers-only `UNAVAILABLE`) are passed over: their
    /// `Retry-After` or `grpc-retry-pushback-ms`, else 1 s, at most 60 s, by default
    /// ([`LoadFeedback::default`]). `None` turns it off.
    pub fn load_feedback(mut self, feedback: Option<LoadFeedback>) -> Self {
        self.balance.load_feedback = feedback;
        self
    }

    /// Active gRPC health checks for the tonic channel: one `grpc.health.v1.Health/Watch`
    /// stream per endpoint for `service` (`""`: the server as a whole), over the endpoint's own
    /// connection. An endpoint that answers `NOT_SERVING` or `SERVICE_UNKNOWN` takes no new
    /// calls until it answers `SERVING` (calls in flight finish, the panic threshold still
    /// applies); one without the health service (`UNIMPLEMENTED`) is treated as healthy, with a
    /// warning. A stream that fails otherwise counts as not serving and is opened again after
    /// the reconnect backoff. Default: off.
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn grpc_health_check(mut self, service: impl Into<String>) -> Self {
        self.grpc_health_service = Some(service.into());
        self
    }

    /// Active HTTP health probes for the HTTP client: `GET probe.path` to every endpoint each
    /// `probe.interval` (jittered), on a connection of its own. `unhealthy_threshold` failures
    /// in a row (a status other than 2xx, no answer within `probe.timeout`) take the endpoint
    /// out of new requests until `healthy_threshold` passes in a row; the panic threshold still
    /// applies. Default: off. A probe that cannot work is a configuration error when the client
    /// is built ([`HttpProbe::validate`](crate::hyper::HttpProbe::validate)).
    #[cfg(feature = "hyper")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
    pub fn http_health_check(mut self, probe: crate::hyper::HttpProbe) -> Self {
        self.http_probe = Some(probe);
        self
    }

    /// Prefers endpoints in `zone` (the client's own zone), spilling over when it lacks healthy
    /// capacity.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.balance.zone_preference = Some(ZonePreference::new(zone));
        self
    }

    /// How long a request waits for a usable endpoint before failing. Default 10 s. A shorter
    /// request timeout wins.
    pub fn wait_for_endpoints(mut self, wait: Duration) -> Self {
        self.balance.wait_for_endpoints = wait;
        self
    }

    /// A deadline for every request: waiting for an endpoint, retries and the response head.
    /// gRPC calls also honour their own `grpc-timeout`, whichever is earlier. Default: none.
    /// Zero is a configuration error when the client is built.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The connect timeout (TCP, TLS and HTTP/2 handshakes each). Default 5 s. Zero is a
    /// configuration error when the client is built.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The HTTP/2 keep-alive ping interval of endpoint connections (`None` turns pings off).
    /// Default 30 s. Zero is a configuration error when the client is built.
    pub fn keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// How long a keep-alive ping may go unacknowledged before the connection is closed and
    /// the endpoint reported disconnected (its calls fail and new ones go elsewhere). Default
    /// 20 s. With pings on, an endpoint that stops answering without closing its connection (a
    /// network partition, a frozen host) is taken out within about `2 × keep_alive_interval +
    /// keep_alive_timeout`: a ping goes out once the connection has been quiet for an interval,
    /// checked once per interval (3 s measured with both at 1 s). Calls sent to it meanwhile end
    /// at their deadline ([`timeout`](Self::timeout)). Zero is a configuration error when the
    /// client is built.
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive_timeout = timeout;
        self
    }

    /// The `:authority` of gRPC requests. Default: the target's host and port
    /// (`api.prod.svc.cluster.local:50051`, `api.prod:grpc`'s Service name), or the endpoint's
    /// address for IP and static targets.
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// Speak HTTP/2 only (prior knowledge) in the HTTP client. gRPC always does.
    pub fn http2_only(mut self, http2_only: bool) -> Self {
        self.http2_only = http2_only;
        self
    }

    /// Places requests by the value of the header `name` (gRPC metadata), for the hashing
    /// policies.
    pub fn hash_header(mut self, name: http::HeaderName) -> Self {
        self.key = RequestKey::header(name);
        self
    }

    /// Places requests by a key computed from their headers and extensions, for the hashing
    /// policies.
    pub fn hash_key<F>(mut self, key: F) -> Self
    where
        F: Fn(&http::HeaderMap, &http::Extensions) -> Option<u64> + Send + Sync + 'static,
    {
        self.key = RequestKey::function(key);
        self
    }

    /// Options of the DNS source (nameservers, refresh bounds, search domains, ...).
    #[cfg(feature = "dns")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
    pub fn dns_options(mut self, options: waypost_discovery::source::dns::DnsOptions) -> Self {
        self.discovery.dns = options;
        self
    }

    /// The Kubernetes client for `kubernetes:///` targets. Without one, the pod's service
    /// account is used (in-cluster configuration); outside a cluster, pass
    /// `waypost::discovery::source::kubernetes::default_client().await?`, which also reads the
    /// kubeconfig. Clone one client into every builder: clones share a connection pool.
    #[cfg(feature = "kubernetes")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
    pub fn kube_client(
        mut self,
        client: waypost_discovery::source::kubernetes::kube::Client,
    ) -> Self {
        self.discovery.kube_client = Some(client);
        self
    }

    /// Shared EndpointSlice watches for `kubernetes:///` targets: the targets of one namespace,
    /// over every builder given clones of `watches`, are fed by one watch instead of one each
    /// (see [`SharedWatches`](waypost_discovery::source::kubernetes::SharedWatches)). Takes
    /// precedence over [`kube_client`](Self::kube_client).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use waypost::discovery::source::kubernetes::{self, SharedWatches};
    ///
    /// let watches = SharedWatches::new(kubernetes::default_client().await?);
    /// let payments = waypost::Builder::new("kubernetes:///payments.shop:http")?
    ///     .kube_watches(watches.clone())
    ///     .endpoints()?;
    /// let orders = waypost::Builder::new("kubernetes:///orders.shop:http")?
    ///     .kube_watches(watches.clone())
    ///     .endpoints()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "kubernetes")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
    pub fn kube_watches(
        mut self,
        watches: waypost_discovery::source::kubernetes::SharedWatches,
    ) -> Self {
        self.discovery.kube_watches = Some(watches);
        self
    }

    /// The xDS bootstrap for `xds:///` targets. Without one, it is read as gRPC reads it: the
    /// file named by `GRPC_XDS_BOOTSTRAP`, else the JSON in `GRPC_XDS_BOOTSTRAP_CONFIG`.
    #[cfg(feature = "xds")]
    #[cfg_attr(docsrs, doc(cfg(feature = "xds")))]
    pub fn xds_bootstrap(mut self, bootstrap: waypost_discovery::source::xds::Bootstrap) -> Self {
        self.discovery.xds_bootstrap = Some(bootstrap);
        self
    }

    /// Resends idempotent requests that failed after they may have reached a server, within
    /// `budget`: HTTP requests with an idempotent method, and gRPC calls marked
    /// [`tonic::Idempotent`](crate::tonic::Idempotent). Requests that were never sent are always
    /// sent to another endpoint, budget or not. One retry engine serves both clients: every send
    /// of a request, unsent resends included, counts against the budget's `max_attempts`. An
    /// invalid budget is a configuration error when the client is built.
    #[cfg(any(feature = "tonic", feature = "hyper"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "tonic", feature = "hyper"))))]
    pub fn retry_idempotent(mut self, budget: crate::retry::RetryBudget) -> Self {
        self.retry = Some(budget);
        self
    }

    /// Connects to endpoints over TLS.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn target_name(&self) -> Arc<str> {
        Arc::from(self.target.to_string())
    }

    fn require_runtime(&self) -> Result<(), Error> {
        tokio::runtime::Handle::try_current()
            .map(|_| ())
            .map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    "waypost clients must be built inside a tokio runtime",
                )
                .with_target(self.target_name())
            })
    }

    /// Checks the options of this builder that the balancer does not check itself.
    fn check_options(&self) -> Result<(), Error> {
        let config = |message: String| {
            Err(Error::new(ErrorKind::Config, message).with_target(self.target_name()))
        };
        if self.connect_timeout.is_zero() {
            return config("`connect_timeout` must be longer than zero".to_owned());
        }
        if self.timeout.is_some_and(|timeout| timeout.is_zero()) {
            return config("`timeout` must be longer than zero".to_owned());
        }
        if self
            .keep_alive_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return config(
                "`keep_alive_interval` must be longer than zero (`None` turns pings off)"
                    .to_owned(),
            );
        }
        if self.keep_alive_timeout.is_zero() {
            return config("`keep_alive_timeout` must be longer than zero".to_owned());
        }
        #[cfg(any(feature = "tonic", feature = "hyper"))]
        if let Some(budget) = &self.retry {
            budget
                .validate()
                .map_err(|error| error.with_target(self.target_name()))?;
        }
        Ok(())
    }

    fn checked_balance_config(&self) -> Result<BalanceConfig, Error> {
        self.check_options()?;
        self.balance.validate().map_err(|error| {
            Error::new(ErrorKind::Config, error.to_string())
                .with_target(self.target_name())
                .with_source(error)
        })?;
        Ok(self.balance.clone())
    }

    /// Starts discovery for the target and returns its live handle.
    pub fn endpoints(&self) -> Result<Endpoints, Error> {
        crate::resolve::resolve(&self.target, &self.discovery)
    }

    /// A tower balancer over services made by `make` for each endpoint.
    pub fn balance<M: MakeEndpoint>(&self, make: M) -> Result<Balance<M::Service>, Error> {
        self.require_runtime()?;
        let config = self.checked_balance_config()?;
        let endpoints = self.endpoints()?;
        Balance::builder(endpoints)
            .config(config)
            .build(make)
            .map_err(|error| Error::new(ErrorKind::Config, error.to_string()).with_source(error))
    }

    /// A tower layer that wraps a [`MakeEndpoint`] into a balancer over the target.
    pub fn balance_layer(&self) -> Result<BalanceLayer, Error> {
        let config = self.checked_balance_config()?;
        let endpoints = self.endpoints()?;
        BalanceLayer::new(endpoints, config)
            .map_err(|error| Error::new(ErrorKind::Config, error.to_string()).with_source(error))
    }

    /// The host name endpoints are known by: what TLS verifies and what `:authority` carries.
    #[cfg(any(feature = "tonic", all(feature = "tls", feature = "hyper")))]
    fn host_name(&self) -> Option<String> {
        match &self.target {
            Target::Dns(dns) => match dns.host() {
                DnsHost::Name(name) if dns.is_srv() => {
                    // `_grpc._tcp.api.prod` names the host `api.prod`.
                    Some(
                        name.splitn(3, '.')
                            .nth(2)
                            .unwrap_or(name)
                            .trim_end_matches('.')
                            .to_owned(),
                    )
                }
                DnsHost::Name(name) => Some(name.trim_end_matches('.').to_owned()),
                DnsHost::Ip(_) => None,
            },
            Target::Kubernetes(k8s) => Some(match k8s.namespace() {
                Some(namespace) => format!("{}.{namespace}.svc", k8s.service()),
                None => k8s.service().to_owned(),
            }),
            Target::Static(_) => None,
            // The listener's name, as gRPC uses it, without a port.
            Target::Xds(xds) => Some(match xds.listener().rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
                _ => xds.listener().to_owned(),
            }),
        }
    }

    #[cfg(feature = "tonic")]
    fn default_authority(&self) -> Result<Option<http::uri::Authority>, Error> {
        let text = match (&self.authority, &self.target) {
            (Some(authority), _) => Some(authority.clone()),
            (None, Target::Dns(dns)) => match (self.host_name(), dns.port()) {
                (Some(host), Some(port)) if !matches!(dns.host(), DnsHost::Ip(_)) => {
                    Some(format!("{host}:{port}"))
                }
                (Some(host), None) => Some(host),
                _ => None,
            },
            (None, Target::Kubernetes(_)) => self.host_name(),
            (None, Target::Static(_)) => None,
            (None, Target::Xds(xds)) => Some(xds.listener().to_owned()),
        };
        text.map(|text| {
            text.parse().map_err(|error| {
                Error::new(
                    ErrorKind::Config,
                    format!("`{text}` is not a valid authority"),
                )
                .with_target(self.target_name())
                .with_source(error)
            })
        })
        .transpose()
    }

    #[cfg(any(feature = "tonic", feature = "hyper"))]
    fn connector(&self, alpn: &[&[u8]]) -> Result<crate::connect::Connector, Error> {
        let _ = alpn;
        Ok(crate::connect::Connector {
            timeout: self.connect_timeout,
            #[cfg(feature = "tls")]
            tls: match &self.tls {
                Some(tls) => Some(
                    crate::tls::TlsConnector::new(tls, self.host_name().as_deref(), alpn)
                        .map_err(|error| error.with_target(self.target_name()))?,
                ),
                None => None,
            },
        })
    }

    /// A tonic channel over the target, for generated clients: `GreeterClient::new(channel)`.
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn tonic_channel(&self) -> Result<crate::tonic::Channel, Error> {
        use crate::h2::{H2Classify, H2Endpoint, H2Settings};
        self.require_runtime()?;
        let config = self.checked_balance_config()?;
        let settings = H2Settings {
            connector: self.connector(&[b"h2"])?,
            authority: self.default_authority()?,
            // hyper adds the interval to an `Instant`: a year is "never" and cannot overflow.
            keep_alive_interval: self
                .keep_alive_interval
                .map(|interval| interval.min(MAX_KEEP_ALIVE_INTERVAL)),
            // Also added to an `Instant` by hyper: capped like the interval.
            keep_alive_timeout: self.keep_alive_timeout.min(MAX_KEEP_ALIVE_INTERVAL),
            backoff_initial: config.reconnect_backoff.initial,
            backoff_max: config.reconnect_backoff.max,
            health: self.grpc_health_service.as_ref().map(|service| {
                let check = std::sync::Arc::new(crate::health_check::GrpcHealthCheck {
                    service: service.clone(),
                    backoff_initial: config.reconnect_backoff.initial,
                    backoff_max: config.reconnect_backoff.max,
                });
                let watch: crate::h2::HealthWatch<::tonic::body::Body> = std::sync::Arc::new(
                    move |sender, scheme, authority, address, reporter, warned| {
                        Box::pin(
                            std::sync::Arc::clone(&check)
                                .watch(sender, scheme, authority, address, reporter, warned),
                        )
                    },
                );
                watch
            }),
        };
        let endpoints = self.endpoints()?;
        let balance = Balance::builder(endpoints)
            .config(config)
            .hash_key(self.key.clone())
            .classify(H2Classify)
            .build(waypost_balance::WithConnectivity(
                move |endpoint: &waypost_discovery::Endpoint, reporter| {
                    H2Endpoint::spawn(endpoint.address(), &settings, reporter)
                },
            ))
            .map_err(|error| Error::new(ErrorKind::Config, error.to_string()).with_source(error))?;
        Ok(crate::tonic::Channel::new(
            balance,
            self.timeout,
            UNSENT_ATTEMPTS,
            self.retry.map(crate::retry::Retries::new).transpose()?,
        ))
    }

    /// A hyper HTTP client over the target, for request bodies of type `B` that can be replayed
    /// (`Clone`: `Full<Bytes>`, `Empty<Bytes>`, `String`, ...). Idempotent requests are
    /// retried under [`retry_idempotent`](Builder::retry_idempotent); see
    /// [`HttpClient`](crate::hyper::HttpClient) for when a request is sent again, and
    /// [`streaming_http_client`](Builder::streaming_http_client) for bodies that are not
    /// `Clone`.
    #[cfg(feature = "hyper")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
    pub fn http_client<B>(&self) -> Result<crate::hyper::HttpClient<B>, Error>
    where
        B: hyper::body::Body + Clone + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<crate::BoxError>,
    {
        self.build_http_client(Some(B::clone))
    }

    /// A hyper HTTP client over the target for any request body, `Clone` or not (a streaming
    /// `http_body_util::StreamBody`, a proxied `hyper::body::Incoming`). A request that never
    /// left the client still goes to another endpoint (hyper hands it back); one that may have
    /// been sent is never sent again, even with
    /// [`retry_idempotent`](Builder::retry_idempotent). The body must be `Unpin`; box one that
    /// is not (`Pin<Box<B>>` is a body too).
    #[cfg(feature = "hyper")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
    pub fn streaming_http_client<B>(&self) -> Result<crate::hyper::HttpClient<B>, Error>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<crate::BoxError>,
    {
        self.build_http_client(None)
    }

    #[cfg(feature = "hyper")]
    fn build_http_client<B>(
        &self,
        replay: Option<crate::hyper::Replay<B>>,
    ) -> Result<crate::hyper::HttpClient<B>, Error>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<crate::BoxError>,
    {
        use crate::hyper::{HttpClient, HyperClassify, HyperEndpoint};
        self.require_runtime()?;
        let config = self.checked_balance_config()?;
        let alpn: &[&[u8]] = if self.http2_only {
            &[b"h2"]
        } else {
            &[b"http/1.1"]
        };
        let connector = self.connector(alpn)?;
        let http2_only = self.http2_only;
        let probe = match &self.http_probe {
            Some(probe) => {
                probe.validate()?;
                Some(std::sync::Arc::new(probe.clone()))
            }
            None => None,
        };
        let endpoints = self.endpoints()?;
        let balance = Balance::builder(endpoints)
            .config(config)
            .hash_key(self.key.clone())
            .classify(HyperClassify)
            .build(waypost_balance::WithConnectivity(
                move |endpoint: &waypost_discovery::Endpoint,
                      reporter: waypost_balance::ConnectivityReporter| {
                    let address = endpoint.address();
                    if let Some(probe) = &probe {
                        // Probes have connections of their own: they neither wait behind
                        // requests nor hold a pooled connection a request could use.
                        let probing = HyperEndpoint::new(
                            connector.clone(),
                            address,
                            http2_only,
                            reporter.clone(),
                        );
                        tokio::spawn(std::sync::Arc::clone(probe).run(
                            probing,
                            address,
                            reporter.clone(),
                        ));
                    }
                    HyperEndpoint::new(connector.clone(), address, http2_only, reporter)
                },
            ))
            .map_err(|error| Error::new(ErrorKind::Config, error.to_string()).with_source(error))?;
        let retries = self.retry.map(crate::retry::Retries::new).transpose()?;
        Ok(HttpClient::new(
            balance,
            self.timeout,
            retries,
            replay,
            http2_only,
        ))
    }
}
