//! What a balancer knows now, for an operator: why traffic goes where it goes.
//!
//! [`Balance::snapshot`](crate::Balance::snapshot) asks the balancer's background task, which
//! owns ejections, backoffs and slow-start ramps, for a consistent view: per endpoint its
//! address, zone, weight, readiness, whether the current table may pick it, connectivity,
//! requests in flight, latency estimate, failures, how long it stays ejected, unreachable or
//! passed over after an overloaded answer; and the table's [`TableMode`] (normal, panic, zone
//! spill-over, or empty with the reason). Taking a snapshot costs the task one pass over the
//! endpoints; the request path is not involved.

use std::net::SocketAddr;
use std::time::Duration;

use waypost_discovery::{Health, Readiness};

use crate::error::ErrorKind;
use crate::state::Connectivity;

/// A balancer's state at one moment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// The target the balancer serves.
    pub target: String,
    /// The policy's name ([`Policy::name`](crate::Policy::name)).
    pub policy: &'static str,
    /// How the current table picks.
    pub mode: TableMode,
    /// The number of endpoints the current table may pick.
    pub usable_endpoints: usize,
    /// The revision of the discovery set the balancer applied.
    pub set_revision: u64,
    /// Discovery's health: current or failing, and its last error.
    pub discovery: Health,
    /// Requests waiting for a usable endpoint (or for room under a concurrency limit).
    pub requests_waiting: usize,
    /// Every endpoint of the set, in address order.
    pub endpoints: Vec<EndpointSnapshot>,
}

/// How the current table picks.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TableMode {
    /// Among the healthy endpoints.
    Normal,
    /// Too few endpoints are healthy (below the panic threshold): among all of them.
    Panic,
    /// Zone preference: the local zone lacks healthy capacity, and this share of the picks
    /// (from 0 to 1) goes to the other zones.
    ZoneSpillOver {
        /// The share of picks that goes outside the local zone.
        remote_share: f64,
    },
    /// Nothing can be picked, for this reason.
    Empty(ErrorKind),
}

impl TableMode {
    /// A short name: `normal`, `panic`, `zone_spill_over` or `empty`.
    pub fn name(&self) -> &'static str {
        match self {
            TableMode::Normal => "normal",
            TableMode::Panic => "panic",
            TableMode::ZoneSpillOver { .. } => "zone_spill_over",
            TableMode::Empty(_) => "empty",
        }
    }
}

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// The endpoint's address.
    pub address: SocketAddr,
    /// Its zone, when discovery knows it.
    pub zone: Option<String>,
    /// Its weight from discovery (0: no new requests).
    pub weight: u32,
    /// Ready, or terminating but still serving.
    pub readiness: Readiness,
    /// `true` when the current table may pick it.
    pub usable: bool,
    /// Its connection, as its connector reported or requests found it.
    pub connectivity: Connectivity,
    /// `false` while its active health check reports it not serving
    /// ([`ConnectivityReporter::report_serving`](crate::ConnectivityReporter::report_serving)).
    pub serving: bool,
    /// Requests in flight on it.
    pub in_flight: u32,
    /// The Peak EWMA latency estimate now (with the failure penalty of recent failures), for
    /// the Peak EWMA policy.
    pub latency_estimate: Option<Duration>,
    /// Failures in a row since its last success.
    pub consecutive_failures: u32,
    /// How many times it was ejected, less one for each clean interval since.
    pub ejections: u16,
    /// How long it stays ejected, while it is.
    pub ejected_for: Option<Duration>,
    /// How long until it is probed again, while it is unreachable.
    pub unreachable_for: Option<Duration>,
    /// How long it stays passed over after it answered that it was overloaded.
    pub passed_over_for: Option<Duration>,
    /// Its slow-start weight factor in percent, while it ramps up.
    pub slow_start_percent: Option<u8>,
}
