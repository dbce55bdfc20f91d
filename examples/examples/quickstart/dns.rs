//! A small authoritative DNS server on 127.0.0.1, standing in for the cluster DNS of a headless
//! Service: it answers A queries from a table of addresses that the quickstart edits while it
//! runs (hickory-server, UDP and TCP on one port).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// Name -> its address records.
type Table = Arc<Mutex<HashMap<Name, Vec<Record>>>>;

fn lock(table: &Table) -> MutexGuard<'_, HashMap<Name, Vec<Record>>> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn key(name: &str) -> Name {
    let mut name = Name::from_str_relaxed(name)
        .unwrap_or_else(|error| panic!("`{name}` is not a DNS name: {error}"))
        .to_lowercase();
    name.set_fqdn(true);
    name
}

fn record(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

/// The running server; it stops when dropped with the runtime.
pub(crate) struct DnsServer {
    table: Table,
    address: SocketAddr,
    _server: Server<Handler>,
}

impl DnsServer {
    /// Binds UDP and TCP on one free loopback port and starts answering (nothing yet).
    pub(crate) async fn start() -> io::Result<DnsServer> {
        let table = Table::default();
        let mut last_error = None;
        // The TCP port matching a free UDP port is almost always free; try a few.
        for _ in 0..20 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let address = udp.local_addr()?;
            match TcpListener::bind(address).await {
                Ok(tcp) => {
                    let mut server = Server::new(Handler {
                        table: Arc::clone(&table),
                    });
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
                    return Ok(DnsServer {
                        table,
                        address,
                        _server: server,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// Where to send queries.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// `name` answers exactly `ips`, with this TTL.
    pub(crate) fn set_addresses(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let name = key(name);
        let records = ips.iter().map(|ip| record(&name, *ip, ttl)).collect();
        lock(&self.table).insert(name, records);
    }

    /// `name` answers `ip` too.
    pub(crate) fn add_address(&self, name: &str, ip: IpAddr, ttl: u32) {
        let name = key(name);
        let record = record(&name, ip, ttl);
        let mut table = lock(&self.table);
        let records = table.entry(name).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
    }

    /// `name` no longer answers `ip`.
    pub(crate) fn remove_address(&self, name: &str, ip: IpAddr) {
        if let Some(records) = lock(&self.table).get_mut(&key(name)) {
            records.retain(|record| match &record.data {
                RData::A(a) => IpAddr::V4(a.0) != ip,
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0) != ip,
                _ => true,
            });
        }
    }
}

/// Answers from the table: the records of the asked type, an empty answer (NODATA) for a known
/// name without them, NXDOMAIN for a name it does not know.
pub(crate) struct Handler {
    table: Table,
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
        let (code, answers) = match &query {
            None => (ResponseCode::FormErr, Vec::new()),
            Some((name, record_type)) => match lock(&self.table).get(name) {
                None => (ResponseCode::NXDomain, Vec::new()),
                Some(records) => (
                    ResponseCode::NoError,
                    records
                        .iter()
                        .filter(|record| record.record_type() == *record_type)
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
            },
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.response_code = code;
        let mut edns = Edns::new();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(request_edns) = &request.edns {
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            builder.edns(&edns);
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            None,
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: Default::default(),
            }),
        }
    }
}
