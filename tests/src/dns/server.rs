//! An in-process authoritative DNS server on 127.0.0.1, built on hickory-server, whose records
//! the test changes while a resolver runs.
//!
//! [`DnsServer::start`] binds UDP and TCP on one loopback port and answers from a record table
//! that the test edits at any time ([`set_addresses`](DnsServer::set_addresses),
//! [`set_srv`](DnsServer::set_srv), [`set_cname`](DnsServer::set_cname),
//! [`remove`](DnsServer::remove), [`set_ttl`](DnsServer::set_ttl), ...). It answers like an
//! authoritative server: the records of the asked type, CNAME chains followed inside the table
//! (or, with [`set_cname_only`](DnsServer::set_cname_only), the alias alone),
//! NXDOMAIN for a name it does not know, an empty NOERROR (NODATA) for a name that only has other
//! types, and for SRV answers the addresses of the targets in the additional section (can be
//! turned off to force follow-up lookups). Negative answers carry an SOA whose minimum TTL is
//! the negative-caching TTL, when one is set.
//!
//! Faults: [`set_mode`](DnsServer::set_mode) makes it answer SERVFAIL or REFUSED to everything,
//! or stay silent (the client times out); [`set_delay`](DnsServer::set_delay) slows every answer;
//! [`stop`](DnsServer::stop) closes both sockets (the port then refuses) and
//! [`restart`](DnsServer::restart) binds the same port again with the same records.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::op::{Edns, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// From the record table.
    #[default]
    Answer,
    /// SERVFAIL to every query.
    ServFail,
    /// REFUSED to every query.
    Refused,
    /// No answer at all: clients time out.
    Silent,
}

/// One SRV record for [`DnsServer::set_srv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative weight within a priority.
    pub weight: u16,
    /// The port clients connect to.
    pub port: u16,
    /// The host name, whose addresses come from its A/AAAA records.
    pub target: String,
}

impl Srv {
    /// An SRV record.
    pub fn new(priority: u16, weight: u16, port: u16, target: &str) -> Self {
        Srv {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    records: HashMap<Name, Vec<Record>>,
    mode: Mode,
    /// Modes for single names, over `mode` (a search list's candidates answering differently).
    name_modes: HashMap<Name, Mode>,
    delay: Duration,
    negative_ttl: Option<u32>,
    srv_additionals: bool,
    cname_only: bool,
    /// Records of other names sent in the answer to a name, beside its own.
    foreign: HashMap<Name, Vec<Record>>,
    queries: Vec<(Name, RecordType)>,
}

#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Table>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A test that panicked while holding the lock must not hide its own failure behind a
        // poisoned lock in another task.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running server; dropping it stops it.
pub struct DnsServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: tokio::sync::Mutex<Option<Server<Handler>>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("address", &self.address)
            .finish()
    }
}

/// A name as the table keys it: lower case, fully qualified.
fn key(name: &str) -> Name {
    let mut name = Name::from_str_relaxed(name)
        .unwrap_or_else(|error| panic!("`{name}` is not a DNS name: {error}"))
        .to_lowercase();
    name.set_fqdn(true);
    name
}

impl DnsServer {
    /// Starts a server on a free port of 127.0.0.1, UDP and TCP, with an empty table.
    pub async fn start() -> io::Result<DnsServer> {
        let shared = Arc::new(Shared::default());
        shared.table().srv_additionals = true;
        let mut last_error = None;
        // The TCP port matching a free UDP port is almost always free; try a few times.
        for _ in 0..20 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let address = udp.local_addr()?;
            match TcpListener::bind(address).await {
                Ok(tcp) => {
                    let server = serve(&shared, udp, tcp);
                    return Ok(DnsServer {
                        shared,
                        address,
                        server: tokio::sync::Mutex::new(Some(server)),
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// The address clients send queries to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the A and AAAA records of `name` with `ips`, each with `ttl` seconds. An empty
    /// list removes them (other types stay).
    pub fn set_addresses(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let name = key(name);
        let mut table = self.shared.table();
        let records = table.records.entry(name.clone()).or_default();
        records.retain(|record| !is_address(record));
        records.extend(ips.iter().map(|ip| address_record(&name, *ip, ttl)));
        if records.is_empty() {
            table.records.remove(&name);
        }
    }

    /// Adds one address to `name`.
    pub fn add_address(&self, name: &str, ip: IpAddr, ttl: u32) {
        let name = key(name);
        let record = address_record(&name, ip, ttl);
        let mut table = self.shared.table();
        let records = table.records.entry(name).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
    }

    /// Removes one address from `name`.
    pub fn remove_address(&self, name: &str, ip: IpAddr) {
        let name = key(name);
        let mut table = self.shared.table();
        if let Some(records) = table.records.get_mut(&name) {
            records.retain(|record| record_ip(record) != Some(ip));
            if records.is_empty() {
                table.records.remove(&name);
            }
        }
    }

    /// Replaces the SRV records of `name`.
    pub fn set_srv(&self, name: &str, records: &[Srv], ttl: u32) {
        let name = key(name);
        let mut table = self.shared.table();
        let existing = table.records.entry(name.clone()).or_default();
        existing.retain(|record| record.record_type() != RecordType::SRV);
        existing.extend(records.iter().map(|srv| {
            Record::from_rdata(
                name.clone(),
                ttl,
                RData::SRV(SRV::new(
                    srv.priority,
                    srv.weight,
                    srv.port,
                    key(&srv.target),
                )),
            )
        }));
        if existing.is_empty() {
            table.records.remove(&name);
        }
    }

    /// Answers a query for `name` with an address record of another name, `owner`, beside
    /// `name`'s own records of that type (an extra no client should take, as a misconfigured or
    /// forging server sends): sent when the query's type is the address's.
    pub fn add_foreign_address(&self, name: &str, owner: &str, ip: IpAddr, ttl: u32) {
        self.add_foreign(name, address_record(&key(owner), ip, ttl));
    }

    /// The same for an SRV record of another name, `owner`.
    pub fn add_foreign_srv(&self, name: &str, owner: &str, srv: &Srv, ttl: u32) {
        let data = RData::SRV(SRV::new(
            srv.priority,
            srv.weight,
            srv.port,
            key(&srv.target),
        ));
        self.add_foreign(name, Record::from_rdata(key(owner), ttl, data));
    }

    fn add_foreign(&self, name: &str, record: Record) {
        self.shared
            .table()
            .foreign
            .entry(key(name))
            .or_default()
            .push(record);
    }

    /// Makes `name` a CNAME (an alias, as a Kubernetes ExternalName Service) for `target`,
    /// replacing every other record of `name`.
    pub fn set_cname(&self, name: &str, target: &str, ttl: u32) {
        let name = key(name);
        let record = Record::from_rdata(name.clone(), ttl, RData::CNAME(CNAME(key(target))));
        self.shared.table().records.insert(name, vec![record]);
    }

    /// Removes every record of `name`: it answers NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.shared.table().records.remove(&key(name));
    }

    /// Sets the TTL of every record of `name`.
    pub fn set_ttl(&self, name: &str, ttl: u32) {
        if let Some(records) = self.shared.table().records.get_mut(&key(name)) {
            for record in records {
                record.ttl = ttl;
            }
        }
    }

    /// Negative answers carry an SOA with this minimum TTL (the negative-caching TTL); `None`
    /// (the default) sends no SOA.
    pub fn set_negative_ttl(&self, ttl: Option<u32>) {
        self.shared.table().negative_ttl = ttl;
    }

    /// Whether SRV answers carry their targets' addresses in the additional section (the
    /// default) or leave them to follow-up lookups.
    pub fn set_srv_additionals(&self, include: bool) {
        self.shared.table().srv_additionals = include;
    }

    /// With `true`, a CNAME is answered alone, without the records of its target, as a server
    /// answers for an alias into a zone it does not serve (an ExternalName Service pointing
    /// outside the cluster): the resolver must ask for the target itself. `false` (the default)
    /// follows chains inside the table.
    pub fn set_cname_only(&self, only: bool) {
        self.shared.table().cname_only = only;
    }

    /// How the server answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.table().mode = mode;
    }

    /// How the server answers queries for `name` from now on, whatever [`set_mode`] says;
    /// `None` returns the name to the server's mode.
    ///
    /// [`set_mode`]: DnsServer::set_mode
    pub fn set_name_mode(&self, name: &str, mode: Option<Mode>) {
        let name = key(name);
        let mut table = self.shared.table();
        match mode {
            Some(mode) => table.name_modes.insert(name, mode),
            None => table.name_modes.remove(&name),
        };
    }

    /// Waits this long before each answer.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.table().delay = delay;
    }

    /// How many queries reached the server.
    pub fn query_count(&self) -> usize {
        self.shared.table().queries.len()
    }

    /// The queries that reached the server, in order: name (lower case, with the root dot) and
    /// type.
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        self.shared
            .table()
            .queries
            .iter()
            .map(|(name, record_type)| (name.to_ascii(), *record_type))
            .collect()
    }

    /// Closes both sockets; queries are then refused by the host (UDP port unreachable, TCP
    /// reset). The table is kept.
    pub async fn stop(&self) {
        if let Some(mut server) = self.server.lock().await.take() {
            // Errors here only say that a socket task had already ended.
            let _ = server.shutdown_gracefully().await;
        }
    }

    /// Binds the same port again and answers from the same table. Retries for a while if the
    /// port is momentarily unavailable.
    pub async fn restart(&self) -> io::Result<()> {
        let mut guard = self.server.lock().await;
        if guard.is_some() {
            return Ok(());
        }
        let mut last_error = None;
        for _ in 0..50 {
            let bound = async {
                let udp = UdpSocket::bind(self.address).await?;
                let tcp = TcpListener::bind(self.address).await?;
                io::Result::Ok((udp, tcp))
            };
            match bound.await {
                Ok((udp, tcp)) => {
                    *guard = Some(serve(&self.shared, udp, tcp));
                    return Ok(());
                }
                Err(error) => {
                    last_error = Some(error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("cannot bind again")))
    }
}

fn serve(shared: &Arc<Shared>, udp: UdpSocket, tcp: TcpListener) -> Server<Handler> {
    let mut server = Server::new(Handler {
        shared: Arc::clone(shared),
    });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
    server
}

fn is_address(record: &Record) -> bool {
    matches!(record.record_type(), RecordType::A | RecordType::AAAA)
}

fn record_ip(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

fn address_record(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

/// What the table says to one query.
struct Reply {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    soa: Option<Record>,
}

impl Table {
    fn reply(&self, name: &Name, record_type: RecordType) -> Reply {
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut current = name.clone();
        let mut found = false;
        let mut exists = false;
        // Follow CNAME chains inside the table, as an authoritative server does.
        for _ in 0..8 {
            let Some(records) = self.records.get(&current) else {
                break;
            };
            exists = true;
            let matching: Vec<&Record> = records
                .iter()
                .filter(|record| record.record_type() == record_type)
                .collect();
            if !matching.is_empty() {
                answers.extend(matching.into_iter().cloned());
                found = true;
                break;
            }
            let cname = records.iter().find_map(|record| match &record.data {
                RData::CNAME(CNAME(target)) if record_type != RecordType::CNAME => {
                    Some((record.clone(), target.clone()))
                }
                _ => None,
            });
            match cname {
                Some((record, target)) => {
                    answers.push(record);
                    current = target.to_lowercase();
                    if self.cname_only {
                        break;
                    }
                }
                None => break,
            }
        }
        if let Some(foreign) = self.foreign.get(name) {
            answers.extend(
                foreign
                    .iter()
                    .filter(|record| record.record_type() == record_type)
                    .cloned(),
            );
        }
        if found && record_type == RecordType::SRV && self.srv_additionals {
            for answer in &answers {
                if let RData::SRV(srv) = &answer.data
                    && let Some(records) = self.records.get(&srv.target.to_lowercase())
                {
                    additionals.extend(records.iter().filter(|record| is_address(record)).cloned());
                }
            }
        }
        let code = if exists || !answers.is_empty() {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        let soa = match (found || !answers.is_empty(), self.negative_ttl) {
            (false, Some(ttl)) => Some(Record::from_rdata(
                Name::root(),
                ttl,
                RData::SOA(SOA::new(
                    key("ns.waypost.test"),
                    key("hostmaster.waypost.test"),
                    1,
                    3600,
                    600,
                    86400,
                    ttl,
                )),
            )),
            _ => None,
        };
        Reply {
            code,
            answers,
            additionals,
            soa,
        }
    }
}

/// The hickory-server request handler over the shared table.
pub struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let query = request.queries.queries().first().map(|query| {
            (
                Name::from(query.name().clone()).to_lowercase(),
                query.query_type(),
            )
        });
        let (mode, delay, reply) = {
            let mut table = self.shared.table();
            if let Some(query) = &query {
                table.queries.push(query.clone());
            }
            let reply = query
                .as_ref()
                .map(|(name, record_type)| table.reply(name, *record_type));
            let mode = query
                .as_ref()
                .and_then(|(name, _)| table.name_modes.get(name).copied())
                .unwrap_or(table.mode);
            (mode, table.delay, reply)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let mut edns = Edns::new();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(request_edns) = &request.edns {
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            builder.edns(&edns);
        }
        let code = match (mode, &reply) {
            (Mode::Silent, _) => {
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                return ResponseInfo::from(hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                });
            }
            (Mode::ServFail, _) => ResponseCode::ServFail,
            (Mode::Refused, _) => ResponseCode::Refused,
            (Mode::Answer, None) => ResponseCode::FormErr,
            (Mode::Answer, Some(reply)) => reply.code,
        };
        metadata.response_code = code;
        let empty = Vec::new();
        let (answers, additionals, soa) = match (&reply, mode) {
            (Some(reply), Mode::Answer) => (&reply.answers, &reply.additionals, reply.soa.as_ref()),
            _ => (&empty, &empty, None),
        };
        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            soa,
            additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(hickory_proto::op::Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: Default::default(),
            }),
        }
    }
}
