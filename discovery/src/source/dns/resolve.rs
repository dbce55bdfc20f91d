//! One lookup of a target through hickory-resolver, turned into an [`Outcome`].
//!
//! The resolve loop ([`super::schedule`]) asks a [`Resolve`] implementation for one outcome at a
//! time: endpoints with the TTL they may be kept for, a negative answer (NXDOMAIN or no record of
//! the asked type), or a failure. This module holds the hickory-backed implementation for
//! address targets and the plumbing SRV targets share with it ([`super::srv`] holds the SRV
//! rules).
//!
//! Address lookups ask for A and AAAA separately rather than through hickory's `lookup_ip`, so
//! that a failure of one family is not mistaken for "that family has no addresses": a family
//! whose query failed may only be left out of an answer while the current set has no address of
//! that family; otherwise the whole lookup counts as failed and the last good set stays.
//!
//! The resolver's own response cache is cleared before each lookup: the source keeps its own
//! schedule from the TTLs it sees, and an early refresh asked for after connection failures must
//! reach the server rather than a cached copy.
//!
//! Sources share resolvers: the targets of one tokio runtime whose resolver settings are the
//! same (nameservers, system configuration, search domains, `ndots`, timeout, tries) use one
//! hickory resolver, with its connections, its response cache and its copy of the hosts file,
//! instead of one each (about 65 KB per target with 100-record answers, `fleet`). Clearing the
//! shared cache before a lookup costs another source at most a repeated query; concurrent
//! lookups of the same name become one query. The registry holds resolvers weakly: the last
//! source of a setting to stop drops its resolver.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{self, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Hosts, Resolver, TokioResolver};

use super::error::DnsSourceError;
use super::options::{DnsOptions, IpFamilies};
use super::srv;
use crate::endpoint::Endpoint;
use crate::error::{DiscoveryError, DiscoveryErrorKind};
use crate::set::EndpointSet;
use crate::target::{DnsHost, DnsTarget};

/// What one lookup of a target gave.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Endpoints (possibly after dropping unusable records), valid for `ttl`.
    Found(Answer),
    /// The name does not exist or has no record of the asked type.
    Missing(Negative),
    /// No usable answer: timeout, SERVFAIL, refused, unreachable server, malformed answer.
    Failed(DiscoveryError),
}

/// A positive answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The endpoints, at least one.
    pub(crate) endpoints: Vec<Endpoint>,
    /// The smallest TTL of the records the endpoints came from.
    pub(crate) ttl: Duration,
    /// The name that answered (after search domains), without the trailing dot.
    pub(crate) name: String,
}

/// A negative answer.
#[derive(Debug)]
pub(crate) struct Negative {
    /// `true` for NXDOMAIN, `false` for an empty answer (NODATA, or nothing usable).
    pub(crate) nxdomain: bool,
    /// The negative-caching TTL from the SOA, when the server sent one.
    pub(crate) ttl: Option<Duration>,
    /// What was asked and what came back, for logs and errors.
    pub(crate) detail: String,
}

/// One lookup strategy; the resolve loop calls it once per refresh.
pub(crate) trait Resolve: Send + 'static {
    /// Looks the target up once. `current` is the set published now, used to decide whether a
    /// partial failure may be ignored.
    fn resolve<'a>(
        &'a mut self,
        current: &'a EndpointSet,
    ) -> impl Future<Output = Outcome> + Send + 'a;
}

/// What to look up.
#[derive(Debug, Clone)]
enum Query {
    Address { port: u16 },
    Srv,
}

/// The hickory-backed lookup of one `dns:` target.
pub(crate) struct HickoryLookup {
    resolver: Arc<SharedResolver>,
    target: Arc<str>,
    name: Name,
    query: Query,
    families: IpFamilies,
}

impl HickoryLookup {
    /// The lookup of `target`, with the resolver its settings share (see [`shared_resolver`]).
    /// Needs a tokio runtime.
    pub(crate) fn new(
        target: &DnsTarget,
        options: &DnsOptions,
        target_name: Arc<str>,
    ) -> Result<Self, DnsSourceError> {
        let DnsHost::Name(host) = target.host() else {
            // IP literals never reach a resolver; the caller publishes them directly.
            return Err(DnsSourceError::InvalidName {
                target: target_name.to_string(),
                name: target.host().to_string(),
                source: "an IP literal is not looked up".into(),
            });
        };
        let name = parse_name(host).map_err(|source| DnsSourceError::InvalidName {
            target: target_name.to_string(),
            name: host.clone(),
            source: source.into(),
        })?;
        let resolver = shared_resolver(target, options, &target_name)?;
        let query = match target.port() {
            Some(port) => Query::Address { port },
            None => Query::Srv,
        };
        Ok(HickoryLookup {
            resolver,
            target: target_name,
            name,
            query,
            families: options.ip_families,
        })
    }
}

impl Resolve for HickoryLookup {
    async fn resolve(&mut self, current: &EndpointSet) -> Outcome {
        self.resolver.clear_cache();
        match self.query {
            Query::Address { port } => {
                let has = |v4: bool| {
                    current
                        .iter()
                        .any(|endpoint| endpoint.address().is_ipv4() == v4)
                };
                let (has_v4, has_v6) = (has(true), has(false));
                match lookup_addresses(&self.resolver, &self.name, self.families, has_v4, has_v6)
                    .await
                {
                    Addresses::Found { ips, ttl, name } => Outcome::Found(Answer {
                        endpoints: ips
                            .into_iter()
                            .map(|ip| Endpoint::new(SocketAddr::new(ip, port)))
                            .collect(),
                        ttl,
                        name,
                    }),
                    Addresses::Missing(negative) => Outcome::Missing(negative),
                    Addresses::Failed(error) => Outcome::Failed(resolve_error(
                        &self.target,
                        &self.name,
                        self.families,
                        error,
                    )),
                }
            }
            Query::Srv => {
                srv::resolve(
                    &self.resolver,
                    &self.target,
                    &self.name,
                    self.families,
                    current,
                )
                .await
            }
        }
    }
}

/// Parses a host name as hickory's [`Name`], accepting the `_` of SRV labels.
pub(crate) fn parse_name(host: &str) -> Result<Name, NetError> {
    Name::from_str_relaxed(host).map_err(NetError::from)
}

/// Everything a resolver is built from ([`build_resolver`]'s inputs), and the runtime its
/// connections' tasks run on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ResolverKey {
    runtime: tokio::runtime::Id,
    nameservers: Vec<SocketAddr>,
    system_config: bool,
    search_domains: Option<Vec<String>>,
    ndots: Option<usize>,
    query_timeout: Option<Duration>,
    query_attempts: Option<usize>,
    hosts_file: Option<std::path::PathBuf>,
    resolv_conf: Option<std::path::PathBuf>,
}

impl ResolverKey {
    fn new(target: &DnsTarget, options: &DnsOptions, runtime: tokio::runtime::Id) -> Self {
        ResolverKey {
            runtime,
            nameservers: match target.nameserver() {
                Some(nameserver) => vec![nameserver],
                None => options.nameservers.clone(),
            },
            system_config: options.system_config,
            search_domains: options.search_domains.clone(),
            ndots: options.ndots,
            query_timeout: options.query_timeout,
            query_attempts: options.query_attempts,
            hosts_file: options.hosts_file.clone(),
            resolv_conf: options.resolv_conf.clone(),
        }
    }
}

/// The live resolvers, by what they were built from.
static RESOLVERS: LazyLock<Mutex<HashMap<ResolverKey, Weak<SharedResolver>>>> =
    LazyLock::new(Mutex::default);

/// The resolver of the current runtime for `target`'s settings: the live one if a source
/// with the same settings holds it, otherwise a new one ([`build_resolver`]).
pub(crate) fn shared_resolver(
    target: &DnsTarget,
    options: &DnsOptions,
    target_name: &str,
) -> Result<Arc<SharedResolver>, DnsSourceError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| DnsSourceError::NoRuntime {
            target: target_name.to_owned(),
        })?
        .id();
    let key = ResolverKey::new(target, options, runtime);
    // A panic elsewhere while holding the lock leaves the map consistent: take it anyway.
    let mut resolvers = RESOLVERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(resolver) = resolvers.get(&key).and_then(Weak::upgrade) {
        return Ok(resolver);
    }
    let resolver = Arc::new(build_resolver(target, options, target_name)?);
    resolvers.retain(|_, resolver| resolver.strong_count() > 0);
    resolvers.insert(key, Arc::downgrade(&resolver));
    Ok(resolver)
}

/// How many times a query is tried when neither the options nor the system say.
pub(crate) const DEFAULT_QUERY_TRIES: usize = 2;
/// glibc's `MAXNS`: nameservers of resolv.conf after the third are not asked.
const MAX_NAMESERVERS: usize = 3;
/// glibc's `RES_MAXNDOTS`.
const MAX_NDOTS: usize = 15;
/// glibc's `RES_MAXRETRANS` (30 s).
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// glibc's `RES_MAXRETRY`.
const MAX_QUERY_TRIES: usize = 5;

/// Builds the resolver: the system configuration (unless turned off), with the nameserver of
/// the target or of the options in place of the system's, and the search domains, ndots,
/// timeout and attempts of the options where given.
pub(crate) fn build_resolver(
    target: &DnsTarget,
    options: &DnsOptions,
    target_name: &str,
) -> Result<SharedResolver, DnsSourceError> {
    let nameservers: Vec<SocketAddr> = match target.nameserver() {
        Some(nameserver) => vec![nameserver],
        None => options.nameservers.clone(),
    };
    let system = if options.system_config {
        let path = options
            .resolv_conf
            .as_deref()
            .unwrap_or(Path::new(RESOLV_CONF));
        match read_system_conf(path) {
            Ok(system) => system,
            Err(error) if !nameservers.is_empty() => {
                tracing::debug!(
                    target: "waypost::discovery::dns",
                    target = %target_name,
                    path = %path.display(),
                    %error,
                    "resolv.conf unreadable; using the given nameservers without search domains"
                );
                SystemConf::none()
            }
            Err(error) => {
                return Err(DnsSourceError::SystemConfig {
                    target: target_name.to_owned(),
                    source: Box::new(error),
                });
            }
        }
    } else {
        SystemConf::none()
    };
    let SystemConf {
        domain,
        search,
        mut name_servers,
        options: mut resolver_options,
    } = system;
    if !nameservers.is_empty() {
        name_servers = nameservers
            .iter()
            .map(|&address| name_server(address))
            .collect();
    }
    if name_servers.is_empty() {
        return Err(DnsSourceError::NoNameserver {
            target: target_name.to_owned(),
        });
    }
    let given = match &options.search_domains {
        None => None,
        Some(domains) => Some(
            domains
                .iter()
                .map(|domain| {
                    parse_name(domain).map_err(|source| DnsSourceError::InvalidName {
                        target: target_name.to_owned(),
                        name: domain.clone(),
                        source: Box::new(source),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if let Some(ndots) = options.ndots {
        resolver_options.ndots = ndots;
    }
    if let Some(timeout) = options.query_timeout {
        // No answer can come in no time: zero is one second, as resolv.conf's `timeout:0`.
        resolver_options.timeout = if timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            timeout
        };
    }
    // hickory's `attempts` counts the retries after the first try (its default 2 makes three
    // tries); ours, like resolv.conf's, counts the tries. The system value came from resolv.conf.
    let tries = match options.query_attempts {
        Some(tries) => tries,
        None if options.system_config => resolver_options.attempts,
        None => DEFAULT_QUERY_TRIES,
    };
    resolver_options.attempts = tries.max(1) - 1;
    // The source refreshes on its own schedule and clears the cache before each lookup; a
    // small cache still serves the follow-up lookups of one SRV answer.
    resolver_options.cache_size = 64;
    // The source walks the search list itself (see `SearchList`); hickory is asked only for
    // fully qualified names.
    let search = SearchList::new(
        &search_domains(domain.as_ref(), search, given),
        resolver_options.ndots,
    );
    // The hosts file is the source's too: read first, for the name as given, as glibc does.
    // hickory would look up each name of the search list in it, after the DNS answers for the
    // names before it.
    resolver_options.use_hosts_file = ResolveHosts::Never;
    let hosts = read_hosts(options, target_name);
    let build = |name_servers: Vec<NameServerConfig>| {
        let config = ResolverConfig::from_parts(domain.clone(), Vec::new(), name_servers);
        Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(resolver_options.clone())
            .build()
            .map_err(|source| DnsSourceError::Resolver {
                target: target_name.to_owned(),
                source: Box::new(source),
            })
    };
    // hickory's pool returns a SERVFAIL or a refusal from one server as the answer, where glibc
    // asks the next server: one resolver per server, in order, asked after such a failure.
    let each_server = match name_servers.len() {
        0 | 1 => Vec::new(),
        _ => name_servers
            .iter()
            .map(|server| build(vec![server.clone()]))
            .collect::<Result<_, _>>()?,
    };
    Ok(SharedResolver {
        resolver: build(name_servers)?,
        each_server,
        search,
        hosts,
    })
}

/// The system's resolver configuration.
pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the source takes from resolv.conf.
#[derive(Debug)]
struct SystemConf {
    /// The `domain` line wherever it stands, else the domain of the host's name (see
    /// [`search_domains`]).
    domain: Option<Name>,
    /// The last `search` or `domain` line's domains.
    search: Vec<Name>,
    name_servers: Vec<NameServerConfig>,
    options: ResolverOpts,
}

impl SystemConf {
    /// No system configuration: no domains, no nameservers, hickory's defaults.
    fn none() -> Self {
        SystemConf {
            domain: None,
            search: Vec::new(),
            name_servers: Vec::new(),
            options: ResolverOpts::default(),
        }
    }
}

fn read_system_conf(path: &Path) -> std::io::Result<SystemConf> {
    Ok(parse_system_conf(&std::fs::read(path)?))
}

/// resolv.conf as glibc reads it (`res_init`, `res_setoptions`, `send_dg`): its first three
/// nameservers, port 53, over TCP alone with `options use-vc`; `127.0.0.1` when it names none;
/// `ndots` at most 15, `timeout` 1 to 30 s, `attempts` at most 5; `rotate` takes the servers in
/// turn; `edns0`. A line it cannot read is skipped, with a debug log.
fn parse_system_conf(text: &[u8]) -> SystemConf {
    let (parsed, errors) = resolv_conf::Config::parse_with_errors(text);
    for error in errors {
        tracing::debug!(
            target: "waypost::discovery::dns",
            %error,
            "skipping a resolv.conf line"
        );
    }
    let name = |domain: &String| match Name::from_str_relaxed(domain) {
        Ok(name) => Some(name),
        Err(error) => {
            tracing::debug!(
                target: "waypost::discovery::dns",
                domain,
                %error,
                "skipping a resolv.conf search domain that is no DNS name"
            );
            None
        }
    };
    let domain = parsed
        .get_system_domain()
        .and_then(|domain| Name::from_str_relaxed(&domain).ok());
    let search = parsed
        .get_last_search_or_domain()
        .filter(|domain| *domain != "--")
        .filter_map(name)
        .collect();
    let mut ips: Vec<IpAddr> = parsed
        .nameservers
        .iter()
        .map(IpAddr::from)
        .take(MAX_NAMESERVERS)
        .collect();
    if ips.is_empty() {
        ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    let name_servers = ips
        .into_iter()
        .map(|ip| {
            if parsed.use_vc {
                NameServerConfig::tcp(ip)
            } else {
                NameServerConfig::udp_and_tcp(ip)
            }
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.ndots = (parsed.ndots as usize).min(MAX_NDOTS);
    options.timeout = Duration::from_secs(u64::from(parsed.timeout))
        .clamp(Duration::from_secs(1), MAX_QUERY_TIMEOUT);
    // Tries, as resolv.conf counts them; `build_resolver` makes them hickory's retries.
    options.attempts = (parsed.attempts as usize).min(MAX_QUERY_TRIES);
    options.edns0 = parsed.edns0;
    if parsed.rotate {
        options.server_ordering_strategy = ServerOrderingStrategy::RoundRobin;
    }
    SystemConf {
        domain,
        search,
        name_servers,
        options,
    }
}

/// The domains of the search list, as glibc reads resolv.conf: its last `search` or `domain`
/// line (hickory's `search`: one line replaces the other), else the domain of the host's name
/// (hickory's `domain` is that, or the `domain` line wherever it stands). Domains given in the
/// options replace all of them; none given turns the search off.
fn search_domains(domain: Option<&Name>, search: Vec<Name>, given: Option<Vec<Name>>) -> Vec<Name> {
    match given {
        Some(given) => given,
        None if search.is_empty() => domain.into_iter().cloned().collect(),
        None => search,
    }
}

/// The hosts file of `options` ([`DnsOptions::hosts_file`]), else the system's with the system
/// configuration; an unreadable one counts as empty, with a debug log.
fn read_hosts(options: &DnsOptions, target_name: &str) -> Hosts {
    let read = match &options.hosts_file {
        Some(path) => std::fs::File::open(path).and_then(|file| {
            let mut hosts = Hosts::default();
            hosts.read_hosts_conf(file)?;
            Ok(hosts)
        }),
        None if options.system_config => Hosts::from_system(),
        None => return Hosts::default(),
    };
    read.unwrap_or_else(|error| {
        tracing::debug!(
            target: "waypost::discovery::dns",
            target = %target_name,
            %error,
            "hosts file unreadable; names are looked up in DNS only"
        );
        Hosts::default()
    })
}

/// A hickory resolver and the search list its lookups walk.
#[derive(Debug)]
pub(crate) struct SharedResolver {
    /// Every nameserver, as hickory's pool asks them.
    resolver: TokioResolver,
    /// With several nameservers, a resolver for each, in the configured order: asked one after
    /// the other when the pool's answer is a server's failure ([`SharedResolver::lookup`]).
    each_server: Vec<TokioResolver>,
    search: SearchList,
    /// Names answered before DNS is asked ([`DnsOptions::hosts_file`]).
    hosts: Hosts,
}

impl SharedResolver {
    /// Empties the response caches: each lookup of the source asks the servers.
    pub(crate) fn clear_cache(&self) {
        self.resolver.clear_cache();
        for resolver in &self.each_server {
            resolver.clear_cache();
        }
    }

    /// The records of type `record_type` of the fully qualified `name`. When the pool's answer
    /// is a server's failure (SERVFAIL, REFUSED, NOTIMP: hickory returns the first it gets),
    /// each nameserver is asked in turn, as glibc moves on to the next server after one: the
    /// first answer or negative answer counts; the pool's error stays when none gives one.
    pub(crate) async fn lookup(
        &self,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Lookup, NetError> {
        let pooled = self.resolver.lookup(name.clone(), record_type).await;
        match &pooled {
            Err(error) if is_server_failure(error) && !self.each_server.is_empty() => {}
            _ => return pooled,
        }
        for resolver in &self.each_server {
            match resolver.lookup(name.clone(), record_type).await {
                Ok(lookup) => return Ok(lookup),
                Err(error) if negative(&error, name, record_type).is_some() => return Err(error),
                Err(_) => {}
            }
        }
        pooled
    }

    /// Walks the search list for `name` (see [`SearchList`]), asking `lookup` for each fully
    /// qualified candidate, as glibc's `res_search` does: the first answer ends the walk. A
    /// negative answer or a SERVFAIL moves on to the next name. Any other failure (a timeout,
    /// a refusal) of a search-domain name stops the search domains, but the name as given is
    /// still asked if it has not been; a failure of the name as given, asked first, moves on to
    /// the search domains. Without an answer, the walk failed when any name failed (the first
    /// failure is reported, a SERVFAIL only after every other), and is the negative answer of
    /// the whole search otherwise.
    ///
    /// glibc reports the name as given's error, or the search's "none", where one name of the
    /// walk failed and the others said "none": that answer is not confirmed, so here it is a
    /// failure, which keeps the last good set.
    pub(crate) async fn walk<T, F, Fut>(&self, name: &Name, mut lookup: F) -> Step<T>
    where
        F: FnMut(Name) -> Fut,
        Fut: Future<Output = Step<T>>,
    {
        let (candidates, as_given) = self.search.candidates(name);
        let mut negatives = Vec::new();
        let mut failure = None;
        let mut servfail = None;
        let mut searching = true;
        for (index, candidate) in candidates.iter().enumerate() {
            if !searching && index != as_given {
                continue;
            }
            match lookup(candidate.clone()).await {
                answer @ Step::Answer(_) => return answer,
                Step::Negative(negative) => negatives.push(negative),
                Step::Failed(error) if is_servfail(&error) => {
                    servfail.get_or_insert(error);
                }
                Step::Failed(error) => {
                    if index != as_given {
                        searching = false;
                    }
                    failure.get_or_insert(error);
                }
            }
        }
        match failure.or(servfail) {
            Some(error) => Step::Failed(error),
            None => Step::Negative(searched(negatives, &candidates)),
        }
    }
}

/// The names a relative name is looked up as, from resolv.conf's `domain`, `search` and `ndots`
/// (or the options'), in hickory's and glibc's order: a name with more than `ndots` labels
/// (or `localhost`) as given first, then with each domain appended; a shorter one with each
/// domain appended first, then as given. A fully qualified name is looked up as it is.
///
/// hickory walks this list itself, but it moves on after any failure and reports the last
/// name's answer: with Kubernetes' `ndots:5`, a SERVFAIL for `svc.ns.svc.cluster.local` ended
/// as the NXDOMAIN of `svc.`, and two of those emptied the set. The source walks it instead,
/// as glibc's `res_search` does ([`SharedResolver::walk`]): an answer ends the walk, NXDOMAIN
/// or NODATA moves on, SERVFAIL moves on but makes the walk a failure if nothing answers, and
/// any other failure (a timeout, a refusal) of a search-domain name leaves only the name as
/// given to ask. A walk that failed keeps the last good set.
///
/// The domains are resolv.conf's last `search` or `domain` line (one replaces the other, as in
/// glibc), else the domain of the host's name when it has one; the options' search domains
/// replace all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SearchList {
    domains: Vec<Name>,
    ndots: usize,
}

impl SearchList {
    fn new(search: &[Name], ndots: usize) -> Self {
        let mut domains: Vec<Name> = Vec::with_capacity(search.len());
        for domain in search {
            let mut domain = domain.clone();
            domain.set_fqdn(true);
            if !domain.is_root() && !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        SearchList { domains, ndots }
    }

    /// The fully qualified names to ask, in order, and the position of the name as given.
    fn candidates(&self, name: &Name) -> (Vec<Name>, usize) {
        if name.is_fqdn() {
            return (vec![name.clone()], 0);
        }
        let mut as_given = name.clone();
        as_given.set_fqdn(true);
        let as_given_first = name.num_labels() as usize > self.ndots || name.is_localhost();
        let mut names = Vec::with_capacity(self.domains.len() + 1);
        if as_given_first {
            names.push(as_given.clone());
        }
        for domain in &self.domains {
            if let Ok(mut candidate) = name.clone().append_domain(domain) {
                candidate.set_fqdn(true);
                if !names.contains(&candidate) {
                    names.push(candidate);
                }
            }
        }
        match names.iter().position(|candidate| *candidate == as_given) {
            Some(position) => (names, position),
            None => {
                names.push(as_given);
                let position = names.len() - 1;
                (names, position)
            }
        }
    }
}

/// A nameserver at `address`, asked over UDP with TCP for truncated answers.
fn name_server(address: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
}

/// The addresses of one name.
#[derive(Debug)]
pub(crate) enum Addresses {
    Found {
        ips: Vec<IpAddr>,
        ttl: Duration,
        name: String,
    },
    Missing(Negative),
    Failed(NetError),
}

/// The answer for one record type: the same cases as the combined answer.
type Family = Addresses;

/// Looks up the A and/or AAAA records of `name`, walking the search list (see
/// [`SearchList`]): both families of the first name that has an address. A family that failed
/// is left out only when the caller holds no address of it (`has_v4`/`has_v6`) and the other
/// family answered.
pub(crate) async fn lookup_addresses(
    resolver: &SharedResolver,
    name: &Name,
    families: IpFamilies,
    has_v4: bool,
    has_v6: bool,
) -> Addresses {
    if let Some(found) = from_hosts(&resolver.hosts, name, families) {
        return found;
    }
    let step = resolver
        .walk(name, |candidate| async move {
            match lookup_name(resolver, &candidate, families, has_v4, has_v6).await {
                Addresses::Found { ips, ttl, name } => Step::Answer((ips, ttl, name)),
                Addresses::Missing(negative) => Step::Negative(negative),
                Addresses::Failed(error) => Step::Failed(error),
            }
        })
        .await;
    match step {
        Step::Answer((ips, ttl, name)) => Addresses::Found { ips, ttl, name },
        Step::Negative(negative) => Addresses::Missing(negative),
        Step::Failed(error) => Addresses::Failed(error),
    }
}

/// How long an answer from the hosts file is kept before it is looked up again (the file is
/// read once, so the answer does not change; the refresh ceiling applies).
const HOSTS_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The addresses the hosts file gives `name` (as given, in the asked families), as glibc's
/// `files` source answers before `dns`; `None` when it has none.
fn from_hosts(hosts: &Hosts, name: &Name, families: IpFamilies) -> Option<Addresses> {
    let mut ips = Vec::new();
    for (wanted, record_type) in [
        (families.v4(), RecordType::A),
        (families.v6(), RecordType::AAAA),
    ] {
        if !wanted {
            continue;
        }
        if let Some(lookup) = hosts.lookup_static_host(&op::Query::query(name.clone(), record_type))
        {
            ips.extend(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|record| record.data.ip_addr()),
            );
        }
    }
    (!ips.is_empty()).then(|| Addresses::Found {
        ips,
        ttl: HOSTS_TTL,
        name: display_name(name),
    })
}

/// What one name of a search walk said ([`SharedResolver::walk`]).
pub(crate) enum Step<T> {
    Answer(T),
    Negative(Negative),
    Failed(NetError),
}

/// `true` for the answers after which glibc asks the next nameserver: SERVFAIL, REFUSED and
/// NOTIMP.
fn is_server_failure(error: &NetError) -> bool {
    matches!(
        error,
        NetError::Dns(DnsError::ResponseCode(
            ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp
        ))
    )
}

/// `true` for a SERVFAIL answer, after which a search moves on to the next name.
fn is_servfail(error: &NetError) -> bool {
    matches!(
        error,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
    )
}

/// Every name of a search said "none": NXDOMAIN only when each said NXDOMAIN (glibc's
/// `res_search` reports NODATA when any did), the smallest negative TTL, and the names tried.
fn searched(negatives: Vec<Negative>, candidates: &[Name]) -> Negative {
    let nxdomain = negatives.iter().all(|negative| negative.nxdomain);
    let ttl = negatives.iter().filter_map(|negative| negative.ttl).min();
    let mut negatives = negatives;
    let last = negatives
        .pop()
        .map(|negative| negative.detail)
        .unwrap_or_default();
    let detail = match candidates {
        [] | [_] => last,
        names => format!(
            "{last} (searched {})",
            names
                .iter()
                .map(display_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Negative {
        nxdomain,
        ttl,
        detail,
    }
}

/// The A and/or AAAA records of one fully qualified name.
async fn lookup_name(
    resolver: &SharedResolver,
    name: &Name,
    families: IpFamilies,
    has_v4: bool,
    has_v6: bool,
) -> Addresses {
    let v4 = async {
        if families.v4() {
            Some(lookup_family(resolver, name, RecordType::A).await)
        } else {
            None
        }
    };
    let v6 = async {
        if families.v6() {
            Some(lookup_family(resolver, name, RecordType::AAAA).await)
        } else {
            None
        }
    };
    let (v4, v6) = futures_util::future::join(v4, v6).await;
    combine(name, [(v4, has_v4), (v6, has_v6)])
}

fn combine(name: &Name, families: [(Option<Family>, bool); 2]) -> Addresses {
    let mut ips = Vec::new();
    let mut ttl: Option<Duration> = None;
    let mut answered_name = None;
    let mut negatives: Vec<Negative> = Vec::new();
    let mut ignored_failure = None;
    let mut failure = None;
    for (family, held) in families {
        match family {
            None => {}
            Some(Family::Found {
                ips: found,
                ttl: family_ttl,
                name,
            }) => {
                ips.extend(found);
                ttl = Some(ttl.map_or(family_ttl, |ttl| ttl.min(family_ttl)));
                answered_name.get_or_insert(name);
            }
            Some(Family::Missing(negative)) => negatives.push(negative),
            Some(Family::Failed(error)) if held => {
                failure.get_or_insert(error);
            }
            Some(Family::Failed(error)) => {
                ignored_failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Addresses::Failed(error);
    }
    if let Some(ttl) = ttl {
        if let Some(error) = &ignored_failure {
            tracing::debug!(
                target: "waypost::discovery::dns",
                name = %name,
                %error,
                "one address family failed; using the other, which holds every known address"
            );
        }
        return Addresses::Found {
            ips,
            ttl,
            name: answered_name.unwrap_or_else(|| display_name(name)),
        };
    }
    if negatives.is_empty() {
        // Every family that was asked failed.
        return match ignored_failure {
            Some(error) => Addresses::Failed(error),
            None => Addresses::Failed(NetError::Message("no address family to look up")),
        };
    }
    if let Some(error) = ignored_failure {
        // One family said "none", the other could not be asked: not a confirmed absence.
        return Addresses::Failed(error);
    }
    let nxdomain = negatives.iter().any(|negative| negative.nxdomain);
    let ttl = negatives.iter().filter_map(|negative| negative.ttl).min();
    // A and AAAA agreeing on NXDOMAIN say the same thing: once.
    let mut details: Vec<&str> = Vec::with_capacity(negatives.len());
    for negative in &negatives {
        if !details.contains(&negative.detail.as_str()) {
            details.push(&negative.detail);
        }
    }
    let detail = details.join("; ");
    Addresses::Missing(Negative {
        nxdomain,
        ttl,
        detail,
    })
}

async fn lookup_family(resolver: &SharedResolver, name: &Name, record_type: RecordType) -> Family {
    match resolver.lookup(name, record_type).await {
        Ok(lookup) => {
            let mut ips = Vec::new();
            let mut ttl: Option<u32> = None;
            for record in answered_records(name, lookup.answers()) {
                let ip = match &record.data {
                    RData::A(a) if record_type == RecordType::A => IpAddr::V4(a.0),
                    RData::AAAA(aaaa) if record_type == RecordType::AAAA => IpAddr::V6(aaaa.0),
                    // CNAMEs on the way count for the TTL: an ExternalName can change too.
                    RData::CNAME(_) => {
                        ttl = Some(ttl.map_or(record.ttl, |ttl| ttl.min(record.ttl)));
                        continue;
                    }
                    _ => continue,
                };
                ttl = Some(ttl.map_or(record.ttl, |ttl| ttl.min(record.ttl)));
                if !crate::target::is_destination(ip) {
                    tracing::debug!(
                        target: "waypost::discovery::dns",
                        name = %name,
                        %ip,
                        "ignoring an address no connection can go to (unspecified, broadcast, \
                         multicast) in the answer"
                    );
                    continue;
                }
                ips.push(ip);
            }
            if ips.is_empty() {
                return Family::Missing(Negative {
                    nxdomain: false,
                    ttl: None,
                    detail: format!(
                        "no usable {record_type} record for `{}`",
                        display_name(name)
                    ),
                });
            }
            Family::Found {
                ips,
                ttl: Duration::from_secs(u64::from(ttl.unwrap_or(0))),
                name: display_name(lookup.query().name()),
            }
        }
        Err(error) => match negative(&error, name, record_type) {
            Some(negative) => Family::Missing(negative),
            None => Family::Failed(error),
        },
    }
}

/// The records of `answers` that answer a query for `query`: those of `query` itself and of
/// the names its CNAME records there lead to, however they are ordered. A record of any other
/// name (an extra a server added, or a forged one) is no answer to the query, as glibc's
/// `getanswer` skips it too; it is left out with a debug log.
pub(crate) fn answered_records<'a>(
    query: &'a Name,
    answers: &'a [Record],
) -> impl Iterator<Item = &'a Record> + 'a {
    let mut owners = vec![query];
    loop {
        let known = owners.len();
        for record in answers {
            if let RData::CNAME(cname) = &record.data
                && owners.contains(&&record.name)
                && !owners.contains(&&cname.0)
            {
                owners.push(&cname.0);
            }
        }
        if owners.len() == known {
            break;
        }
    }
    answers.iter().filter(move |record| {
        let owned = owners.contains(&&record.name);
        if !owned {
            tracing::debug!(
                target: "waypost::discovery::dns",
                name = %query,
                record = %record.name,
                "ignoring a record of another name in the answer"
            );
        }
        owned
    })
}

/// The negative answer inside `error`, if it is one.
pub(crate) fn negative(error: &NetError, name: &Name, record_type: RecordType) -> Option<Negative> {
    let NetError::Dns(DnsError::NoRecordsFound(no_records)) = error else {
        return None;
    };
    let nxdomain = no_records.response_code == ResponseCode::NXDomain;
    Some(Negative {
        nxdomain,
        ttl: no_records
            .negative_ttl
            .map(|ttl| Duration::from_secs(u64::from(ttl))),
        detail: if nxdomain {
            format!("`{}` does not exist (NXDOMAIN)", display_name(name))
        } else {
            format!("`{}` has no {record_type} record", display_name(name))
        },
    })
}

/// The error a failed lookup reports, naming the target, what was asked, and the cause.
pub(crate) fn resolve_error(
    target: &Arc<str>,
    name: &Name,
    families: IpFamilies,
    error: NetError,
) -> DiscoveryError {
    let asked = match families {
        IpFamilies::Both => "A/AAAA",
        IpFamilies::V4Only => "A",
        IpFamilies::V6Only => "AAAA",
    };
    DiscoveryError::with_source(
        Arc::clone(target),
        DiscoveryErrorKind::Resolve,
        format!(
            "{asked} lookup of `{}` failed: {}",
            display_name(name),
            describe(&error)
        ),
        error,
    )
}

/// A short description of a lookup failure, for the error detail.
pub(crate) fn describe(error: &NetError) -> String {
    match error {
        NetError::Timeout => "no answer before the timeout".to_owned(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("the server answered {code}"),
        NetError::NoConnections => "no nameserver could be reached".to_owned(),
        NetError::Io(io) => format!("network error: {io}"),
        other => other.to_string(),
    }
}

/// A name as users write it: no trailing dot.
pub(crate) fn display_name(name: &Name) -> String {
    let mut text = name.to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::config::ProtocolConfig;

    fn name() -> Name {
        parse_name("api.prod.svc.cluster.local.").unwrap()
    }

    fn found(ip: &str, ttl: u64) -> Family {
        Family::Found {
            ips: vec![ip.parse().unwrap()],
            ttl: Duration::from_secs(ttl),
            name: "api.prod.svc.cluster.local".into(),
        }
    }

    fn missing(nxdomain: bool) -> Family {
        Family::Missing(Negative {
            nxdomain,
            ttl: Some(Duration::from_secs(5)),
            detail: "none".into(),
        })
    }

    #[test]
    fn both_families_merge_with_the_smaller_ttl() {
        let Addresses::Found { ips, ttl, .. } = combine(
            &name(),
            [
                (Some(found("127.0.0.1", 5)), false),
                (Some(found("::1", 3)), false),
            ],
        ) else {
            panic!("expected addresses");
        };
        assert_eq!(ips.len(), 2);
        assert_eq!(ttl, Duration::from_secs(3));
    }

    #[test]
    fn a_failed_family_is_ignored_only_when_it_holds_nothing() {
        let answer = combine(
            &name(),
            [
                (Some(found("127.0.0.1", 5)), true),
                (Some(Family::Failed(NetError::Timeout)), false),
            ],
        );
        assert!(matches!(answer, Addresses::Found { .. }));
        let answer = combine(
            &name(),
            [
                (Some(found("127.0.0.1", 5)), true),
                (Some(Family::Failed(NetError::Timeout)), true),
            ],
        );
        assert!(matches!(answer, Addresses::Failed(NetError::Timeout)));
    }

    #[test]
    fn absence_needs_every_family_to_say_so() {
        let answer = combine(
            &name(),
            [(Some(missing(true)), false), (Some(missing(false)), false)],
        );
        let Addresses::Missing(negative) = answer else {
            panic!("expected a negative answer");
        };
        assert!(negative.nxdomain);
        assert_eq!(negative.ttl, Some(Duration::from_secs(5)));
        let answer = combine(
            &name(),
            [
                (Some(missing(true)), false),
                (Some(Family::Failed(NetError::Timeout)), false),
            ],
        );
        assert!(matches!(answer, Addresses::Failed(_)));
    }

    fn target(text: &str) -> DnsTarget {
        text.parse().unwrap()
    }

    fn options(port: u16) -> DnsOptions {
        DnsOptions::default()
            .without_system_config()
            .nameserver(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn sources_with_the_same_settings_share_a_resolver() {
        let a = target("dns:///a.waypost.test.:80");
        let b = target("dns:///b.waypost.test.:8080");
        let first = shared_resolver(&a, &options(5301), "a").unwrap();
        // Another name and port, and options that only the schedule reads: the same resolver.
        let same = options(5301)
            .refresh_bounds(Duration::from_secs(2), Duration::from_secs(9))
            .ip_families(IpFamilies::V4Only);
        assert!(Arc::ptr_eq(
            &first,
            &shared_resolver(&b, &same, "b").unwrap()
        ));
        // Anything the resolver is built from makes another one.
        for other in [
            options(5302),
            options(5301).ndots(2),
            options(5301).search_domains(["waypost.test"]),
            options(5301).query_timeout(Duration::from_secs(1)),
            options(5301).query_attempts(4),
        ] {
            let resolver = shared_resolver(&a, &other, "a").unwrap();
            assert!(!Arc::ptr_eq(&first, &resolver));
        }
        // A nameserver in the target counts as the options' nameserver.
        let in_target = target("dns://127.0.0.1:5302/a.waypost.test.:80");
        let kept = shared_resolver(&a, &options(5302), "a").unwrap();
        assert!(Arc::ptr_eq(
            &kept,
            &shared_resolver(&in_target, &options(5301), "a").unwrap()
        ));
    }

    #[tokio::test]
    async fn the_last_source_of_a_setting_drops_its_resolver() {
        let a = target("dns:///a.waypost.test.:80");
        let resolver = shared_resolver(&a, &options(5303), "a").unwrap();
        let weak = Arc::downgrade(&resolver);
        drop(resolver);
        assert!(
            weak.upgrade().is_none(),
            "the registry must not keep it alive"
        );
        let again = shared_resolver(&a, &options(5303), "a").unwrap();
        assert_eq!(Arc::strong_count(&again), 1);
        let entries = RESOLVERS
            .lock()
            .unwrap()
            .keys()
            .filter(|key| key.nameservers == [SocketAddr::from(([127, 0, 0, 1], 5303))])
            .count();
        assert_eq!(entries, 1);
    }

    #[test]
    fn each_runtime_has_its_own_resolvers() {
        // A resolver's connections are tasks of the runtime that opened them.
        let a = target("dns:///a.waypost.test.:80");
        let make = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (one, two) = (make(), make());
        let first = one.block_on(async { shared_resolver(&a, &options(5304), "a").unwrap() });
        let second = two.block_on(async { shared_resolver(&a, &options(5304), "a").unwrap() });
        assert!(!Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn a_resolver_needs_a_runtime() {
        let error =
            shared_resolver(&target("dns:///a.waypost.test.:80"), &options(5305), "a").unwrap_err();
        assert!(matches!(error, DnsSourceError::NoRuntime { .. }));
    }

    #[test]
    fn the_search_list_follows_ndots_like_glibc() {
        let names = |list: &SearchList, name: &str| -> Vec<String> {
            list.candidates(&parse_name(name).unwrap())
                .0
                .iter()
                .map(|name| name.to_string())
                .collect()
        };
        let as_given =
            |list: &SearchList, name: &str| list.candidates(&parse_name(name).unwrap()).1;
        let search: Vec<Name> = ["ns.svc.cluster.local", "svc.cluster.local"]
            .iter()
            .map(|domain| parse_name(domain).unwrap())
            .collect();
        let list = SearchList::new(&search, 5);
        // Fewer labels than ndots: the search list first, then the name as given.
        assert_eq!(
            names(&list, "api"),
            [
                "api.ns.svc.cluster.local.",
                "api.svc.cluster.local.",
                "api."
            ]
        );
        assert_eq!(as_given(&list, "api"), 2);
        // A fully qualified name is asked as it is.
        assert_eq!(names(&list, "api.example.com."), ["api.example.com."]);
        assert_eq!(as_given(&list, "api.example.com."), 0);
        // More labels than ndots: as given first.
        let list = SearchList::new(&search, 1);
        assert_eq!(
            names(&list, "api.prod"),
            [
                "api.prod.",
                "api.prod.ns.svc.cluster.local.",
                "api.prod.svc.cluster.local."
            ]
        );
        assert_eq!(as_given(&list, "api.prod"), 0);
        // A domain listed twice, or the root, is asked once or not at all.
        let twice = [search[1].clone(), Name::root(), search[1].clone()];
        assert_eq!(
            names(&SearchList::new(&twice, 5), "api"),
            ["api.svc.cluster.local.", "api."]
        );
        // No search list: the name alone.
        assert_eq!(names(&SearchList::new(&[], 5), "api"), ["api."]);
    }

    #[test]
    fn resolv_conf_is_read_within_glibcs_bounds() {
        let conf = parse_system_conf(
            b"# comment\n\
              domain corp.test\n\
              search svc.test cluster.test\n\
              nameserver 127.0.0.11\n\
              nameserver 127.0.0.12\n\
              nameserver ::1\n\
              nameserver 127.0.0.14\n\
              options ndots:20 timeout:0 attempts:9 rotate use-vc\n",
        );
        assert_eq!(conf.domain, Some(parse_name("corp.test").unwrap()));
        // The search line came last: it is the list.
        assert_eq!(
            search_domains(conf.domain.as_ref(), conf.search, None),
            [
                parse_name("svc.test").unwrap(),
                parse_name("cluster.test").unwrap()
            ]
        );
        let ips: Vec<IpAddr> = conf.name_servers.iter().map(|server| server.ip).collect();
        assert_eq!(
            ips,
            ["127.0.0.11", "127.0.0.12", "::1"].map(|ip| ip.parse::<IpAddr>().unwrap())
        );
        for server in &conf.name_servers {
            // use-vc: TCP alone, port 53.
            assert_eq!(server.connections.len(), 1, "{server:?}");
            assert!(
                matches!(server.connections[0].protocol, ProtocolConfig::Tcp),
                "{server:?}"
            );
            assert_eq!(server.connections[0].port, 53);
        }
        assert_eq!(conf.options.ndots, 15);
        assert_eq!(conf.options.timeout, Duration::from_secs(1));
        assert_eq!(conf.options.attempts, 5);
        assert_eq!(
            conf.options.server_ordering_strategy,
            ServerOrderingStrategy::RoundRobin
        );

        // A domain line after the search line replaces it; no nameserver is 127.0.0.1, over
        // UDP and TCP; a long timeout is 30 s.
        let conf = parse_system_conf(b"search svc.test\ndomain corp.test\noptions timeout:60\n");
        assert_eq!(
            search_domains(conf.domain.as_ref(), conf.search, None),
            [parse_name("corp.test").unwrap()]
        );
        let ips: Vec<IpAddr> = conf.name_servers.iter().map(|server| server.ip).collect();
        assert_eq!(ips, [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(conf.name_servers[0].connections.len(), 2);
        assert_eq!(conf.options.timeout, Duration::from_secs(30));
        assert_eq!(conf.options.ndots, 1);
        assert_eq!(conf.options.attempts, 2);
    }

    #[test]
    fn the_search_domains_are_the_last_line_else_the_host_domain() {
        let names = |names: &[&str]| -> Vec<Name> {
            names.iter().map(|name| parse_name(name).unwrap()).collect()
        };
        let domain = parse_name("corp.test").unwrap();
        // `domain corp.test` then `search svc.test`: the search line alone (hickory's
        // `domain` still holds `corp.test`).
        assert_eq!(
            search_domains(Some(&domain), names(&["svc.test"]), None),
            names(&["svc.test"])
        );
        // No search line: the domain (the `domain` line, or the host name's).
        assert_eq!(
            search_domains(Some(&domain), Vec::new(), None),
            names(&["corp.test"])
        );
        assert_eq!(search_domains(None, Vec::new(), None), names(&[]));
        // The options' domains replace both; an empty list turns the search off.
        assert_eq!(
            search_domains(
                Some(&domain),
                names(&["svc.test"]),
                Some(names(&["a.test"]))
            ),
            names(&["a.test"])
        );
        assert_eq!(
            search_domains(Some(&domain), names(&["svc.test"]), Some(Vec::new())),
            names(&[])
        );
    }

    #[test]
    fn a_search_that_found_nothing_names_what_it_tried() {
        let negative = |nxdomain: bool, ttl: u64| Negative {
            nxdomain,
            ttl: Some(Duration::from_secs(ttl)),
            detail: format!("no {ttl}"),
        };
        let candidates: Vec<Name> = ["a.x.", "a."]
            .iter()
            .map(|n| parse_name(n).unwrap())
            .collect();
        let all = searched(vec![negative(true, 30), negative(true, 5)], &candidates);
        assert!(all.nxdomain);
        assert_eq!(all.ttl, Some(Duration::from_secs(5)));
        assert_eq!(all.detail, "no 5 (searched a.x, a)");
        // One NODATA makes the whole search NODATA, as in glibc.
        let mixed = searched(vec![negative(false, 30), negative(true, 60)], &candidates);
        assert!(!mixed.nxdomain);
        assert_eq!(mixed.ttl, Some(Duration::from_secs(30)));
    }

    #[test]
    fn names_are_shown_without_the_root_dot() {
        assert_eq!(display_name(&name()), "api.prod.svc.cluster.local");
        assert_eq!(display_name(&Name::root()), ".");
        assert!(parse_name("_grpc._tcp.api.prod").is_ok());
    }
}
