//! Pick tables: an immutable snapshot of who may be picked, built off the request path.
//!
//! Whenever the discovery set or the health state changes, the balancer's background task builds
//! a [`PickTable`]: the usable endpoints (after weight 0, ejections, connectivity, panic mode and
//! zone preference) and the policy's lookup structure over them, and installs it in an
//! `ArcSwap`. A request loads the current table, picks from it and clones the chosen slot; a
//! concurrent rebuild cannot invalidate what the request holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;
use tokio::time::Instant;
use waypost_discovery::topology::{
    hints_prefer_node, hints_prefer_zone, is_hinted_for_node_local, is_hinted_local, is_in_zone,
};
use waypost_discovery::{Endpoint, Endpoints};

use crate::config::{BalanceConfig, ZoneMode};
use crate::error::ErrorKind;
use crate::make::ConnectivityCell;
use crate::metrics::{EndpointMetrics, TargetMetrics};
use crate::policy::round_robin::Stripes;
use crate::policy::{CandidateInfo, Loads, PolicyTable};
use crate::state::{Clock, Connectivity, EndpointState};

/// What the request path needs besides the slot, shared by all slots of a balancer.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) target: Arc<str>,
    pub(crate) config: BalanceConfig,
    pub(crate) endpoints: Endpoints,
    pub(crate) clock: Clock,
    /// Peak EWMA decay time in milliseconds and failure penalty, when the policy uses them.
    pub(crate) peak_ewma: Option<(f64, Duration)>,
    pub(crate) consecutive_failures: u32,
    pub(crate) wake: Arc<Notify>,
    /// Notified when an endpoint reconnects after being disconnected: connectors backing off
    /// try again (see [`ConnectivityReporter::retry_requested`]).
    ///
    /// [`ConnectivityReporter::retry_requested`]: crate::ConnectivityReporter::retry_requested
    pub(crate) retry: Arc<Notify>,
    /// Requests in flight across all endpoints, kept only for bounded loads.
    /// Boxed, on its own cache line: every request of the balancer writes it, and the context
    /// beside it is read by every request.
    pub(crate) total_in_flight: Option<Box<CachePadded<AtomicU64>>>,
    /// The per-endpoint concurrency limit, when configured.
    pub(crate) limit: Option<u32>,
    /// With a concurrency limit: requests waiting for room on a full endpoint, and the
    /// notification an ending request gives one of them.
    pub(crate) waiting_for_room: AtomicUsize,
    pub(crate) room: Notify,
    /// How long an endpoint that answered "overloaded" is passed over, when load feedback is on.
    pub(crate) load_feedback: Option<crate::config::LoadFeedback>,
    /// The origin of shed deadlines (tokio's clock, as the background task's timers).
    pub(crate) epoch: Instant,
    /// The target's series (feature `metrics`).
    pub(crate) metrics: TargetMetrics,
}

impl Context {
    /// Requests in flight across all endpoints, kept only for bounded loads.
    #[inline]
    pub(crate) fn total_in_flight(&self) -> Option<&AtomicU64> {
        self.total_in_flight.as_deref().map(|total| &**total)
    }

    /// Milliseconds from the balancer's epoch to `at`.
    pub(crate) fn millis_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

/// One endpoint as the request path sees it: its counters and its service.
///
/// Aligned to a cache line, so that no two endpoints' slots (each behind its own `Arc`, whose
/// reference count a request writes too) share one: without it, two threads calling different
/// endpoints of a small set slowed each other down (least-pending calls on two threads over ten
/// endpoints took 155 ns instead of 118). 64 bytes rather than 128 (`CachePadded` on x86-64):
/// 128 doubled the memory per endpoint for no measured gain. The state comes first
/// (`repr(C)`): a pick reads only the first cache line of each candidate's slot.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Slot<S> {
    pub(crate) state: EndpointState,
    pub(crate) context: Arc<Context>,
    pub(crate) service: S,
    pub(crate) metrics: EndpointMetrics,
}

impl<S> Slot<S> {
    pub(crate) fn address(&self) -> SocketAddr {
        self.state.address()
    }
}

impl<S: Send + Sync> ConnectivityCell for Slot<S> {
    fn swap_connectivity(&self, connectivity: Connectivity) -> Connectivity {
        self.state.set_connectivity(connectivity)
    }

    fn set_serving(&self, serving: bool) -> bool {
        let changed = self.state.set_serving(serving);
        if changed {
            self.metrics.serving_changed(serving);
        }
        changed
    }

    fn connect_failed(&self) {
        self.metrics.connect_failed();
    }

    fn request_refresh(&self) {
        self.context.endpoints.request_refresh();
    }
}

/// Whether a table can serve picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableStatus {
    Ready,
    Empty(ErrorKind),
}

#[derive(Debug)]
struct Group {
    start: usize,
    len: usize,
    table: PolicyTable,
}

/// The current candidates and the policy's structures over them.
#[derive(Debug)]
pub(crate) struct PickTable<S> {
    pub(crate) status: TableStatus,
    pub(crate) panic: bool,
    candidates: Box<[Arc<Slot<S>>]>,
    primary: Option<Group>,
    /// The spill-over group and the share of picks it gets, scaled to `u32::MAX`. Boxed: only
    /// zone-aware tables have one, and every table would carry its room otherwise.
    spill: Option<Box<(Group, u32)>>,
    bounded_load: Option<f64>,
    /// The per-endpoint concurrency limit: picks pass full endpoints over.
    limit: Option<u32>,
    /// The connectivity bits a pick passes a candidate over for ([`avoid_mask`]), kept so that
    /// a pick does not branch on the panic flag.
    avoid: u32,
}

struct GroupLoads<'a, S> {
    slots: &'a [Arc<Slot<S>>],
    /// The connectivity bits that make a candidate one to pass over
    /// ([`avoid_mask`]).
    avoid: u32,
    limit: Option<u32>,
}

// Copied by hand: a derive would ask `S: Copy`.
impl<S> Clone for GroupLoads<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for GroupLoads<'_, S> {}

impl<S> Loads for GroupLoads<'_, S> {
    #[inline]
    fn peak_ewma_cost(&self, candidate: usize) -> f64 {
        self.slots[candidate].state.peak_ewma_cost()
    }

    #[inline]
    fn in_flight(&self, candidate: usize) -> u32 {
        self.slots[candidate].state.in_flight()
    }

    #[inline]
    fn avoid(&self, candidate: usize) -> bool {
        let state = &self.slots[candidate].state;
        state.has_any(self.avoid) || self.limit.is_some_and(|limit| state.in_flight() >= limit)
    }

    #[inline]
    fn suspect(&self, candidate: usize) -> bool {
        self.slots[candidate].state.is_suspect()
    }
}

impl<S> PickTable<S> {
    /// A table with nothing to pick, for `reason`.
    pub(crate) fn empty(reason: ErrorKind) -> Self {
        PickTable {
            status: TableStatus::Empty(reason),
            panic: false,
            candidates: Box::default(),
            primary: None,
            spill: None,
            bounded_load: None,
            limit: None,
            avoid: avoid_mask(false),
        }
    }

    /// Number of endpoints that may be picked.
    pub(crate) fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Picks an endpoint, or `None` when the table is empty.
    #[inline]
    pub(crate) fn pick(
        &self,
        key: Option<u64>,
        rng: &mut fastrand::Rng,
        stripes: &Stripes,
        context: &Context,
    ) -> Option<&Arc<Slot<S>>> {
        let primary = self.primary.as_ref()?;
        let group = match self.spill.as_deref() {
            Some((spill, share)) if rng.u32(..) < *share => spill,
            _ => primary,
        };
        let slots = match group.start {
            // The primary group starts the candidates: one bound to check.
            0 => &self.candidates[..group.len],
            start => &self.candidates[start..start + group.len],
        };
        let bound = self.bounded_load.and_then(|epsilon| {
            let total = context.total_in_flight()?.load(Ordering::Relaxed) as f64 + 1.0;
            Some(((1.0 + epsilon) * total / group.len as f64).ceil() as u32)
        });
        let index = group.table.pick(
            key,
            rng,
            stripes,
            GroupLoads {
                slots,
                avoid: self.avoid,
                limit: self.limit,
            },
            bound,
        );
        slots.get(index)
    }

    /// With a concurrency limit, after the policy's pick found its endpoint full: an endpoint
    /// with room, looking at every candidate from a random place (one a pick would not pass
    /// over first). `None` when every candidate is full. Only runs when endpoints fill up.
    pub(crate) fn pick_with_room(
        &self,
        rng: &mut fastrand::Rng,
        limit: u32,
    ) -> Option<&Arc<Slot<S>>> {
        let len = self.candidates.len();
        if len == 0 {
            return None;
        }
        let start = rng.usize(..len);
        let avoid = self.avoid;
        let mut fallback = None;
        for slot in self.candidates[start..]
            .iter()
            .chain(&self.candidates[..start])
        {
            if slot.state.in_flight() >= limit {
                continue;
            }
            if !slot.state.has_any(avoid) {
                return Some(slot);
            }
            fallback.get_or_insert(slot);
        }
        fallback
    }

    /// Every candidate, in table order.
    pub(crate) fn candidates(&self) -> &[Arc<Slot<S>>] {
        &self.candidates
    }

    /// How the table picks, for snapshots.
    pub(crate) fn mode(&self) -> crate::snapshot::TableMode {
        use crate::snapshot::TableMode;
        match (self.status, self.spill.as_deref()) {
            (TableStatus::Empty(reason), _) => TableMode::Empty(reason),
            _ if self.panic => TableMode::Panic,
            (TableStatus::Ready, Some((_, share))) => TableMode::ZoneSpillOver {
                remote_share: f64::from(*share) / f64::from(u32::MAX),
            },
            (TableStatus::Ready, None) => TableMode::Normal,
        }
    }
}

/// One tracked endpoint as the builder sees it.
pub(crate) struct BuildEntry<'a, S> {
    pub(crate) slot: &'a Arc<Slot<S>>,
    pub(crate) endpoint: &'a Endpoint,
    /// Not ejected and not unreachable.
    pub(crate) healthy: bool,
    /// The slow-start factor in `(0, 1]`.
    pub(crate) ramp: f64,
}

/// Builds the table for `entries` under `config`. `previous` is the table this one replaces:
/// the sized Maglev policy reads its groups' table sizes, for hysteresis.
pub(crate) fn build<S>(
    entries: &[BuildEntry<'_, S>],
    config: &BalanceConfig,
    previous: Option<&PickTable<S>>,
) -> PickTable<S> {
    let accepting = |entry: &&BuildEntry<'_, S>| entry.endpoint.accepts_new_requests();
    let mut usable = 0;
    let mut healthy: Vec<&BuildEntry<'_, S>> = Vec::with_capacity(entries.len());
    for entry in entries.iter().filter(accepting) {
        usable += 1;
        if entry.healthy {
            healthy.push(entry);
        }
    }
    if usable == 0 {
        return PickTable::empty(ErrorKind::NoEndpoints);
    }
    let threshold = usize::from(config.panic_threshold_percent);
    let panic = threshold > 0 && healthy.len() * 100 < threshold * usable;
    if !panic && healthy.is_empty() {
        return PickTable::empty(ErrorKind::AllEjected);
    }
    let hashing = config.policy.is_hashing();
    let chosen = if panic {
        entries.iter().filter(accepting).collect()
    } else {
        healthy
    };

    // Zone preference: local candidates first, then the rest as the spill-over group.
    let mut local_share = None;
    let mut local_len = 0;
    let ordered: Vec<&BuildEntry<'_, S>> = match (&config.zone_preference, panic, hashing) {
        (Some(zone), false, false) => match zone.mode {
            ZoneMode::Hints => {
                let all = || entries.iter().filter(accepting).map(|entry| entry.endpoint);
                // Node hints first, then zone hints (kube-proxy's `topologyModeFromHints`).
                let node = zone
                    .node
                    .as_deref()
                    .filter(|node| hints_prefer_node(all(), node));
                let local: Vec<_> = if let Some(node) = node {
                    chosen
                        .iter()
                        .copied()
                        .filter(|entry| is_hinted_for_node_local(entry.endpoint, node))
                        .collect()
                } else if hints_prefer_zone(all(), &zone.zone) {
                    chosen
                        .iter()
                        .copied()
                        .filter(|entry| is_hinted_local(entry.endpoint, &zone.zone))
                        .collect()
                } else {
                    Vec::new()
                };
                if local.is_empty() { chosen } else { local }
            }
            ZoneMode::ZoneAware => {
                let is_local = |entry: &BuildEntry<'_, S>| is_in_zone(entry.endpoint, &zone.zone);
                let local_total = entries
                    .iter()
                    .filter(accepting)
                    .filter(|entry| is_local(entry))
                    .count();
                let (local, remote): (Vec<_>, Vec<_>) =
                    chosen.iter().copied().partition(|entry| is_local(entry));
                if local_total > 0 && !local.is_empty() {
                    let healthy_percent = local.len() as f64 * 100.0 / local_total as f64;
                    let wanted = f64::from(zone.min_healthy_percent);
                    local_len = local.len();
                    if healthy_percent >= wanted || remote.is_empty() {
                        local
                    } else {
                        local_share = Some(healthy_percent / wanted);
                        local.into_iter().chain(remote).collect()
                    }
                } else {
                    chosen
                }
            }
        },
        _ => chosen,
    };

    let weights: Vec<u32> = ordered
        .iter()
        .map(|entry| effective_weight(entry, hashing))
        .collect();
    let keys: Vec<Vec<u8>> = if hashing {
        ordered
            .iter()
            .map(|entry| match entry.endpoint.hash_key() {
                Some(key) => key.as_bytes().to_vec(),
                None => entry.endpoint.address().to_string().into_bytes(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let info = |range: std::ops::Range<usize>| -> Vec<CandidateInfo<'_>> {
        range
            .map(|i| CandidateInfo {
                weight: weights[i],
                hash_key: keys.get(i).map(Vec::as_slice).unwrap_or_default(),
            })
            .collect()
    };
    let group = |start: usize, len: usize, previous: Option<&Group>| -> Option<Group> {
        let previous_size = previous.and_then(|group| group.table.maglev_size());
        PolicyTable::build(&config.policy, &info(start..start + len), previous_size)
            .map(|table| Group { start, len, table })
    };
    let previous_primary = previous.and_then(|table| table.primary.as_ref());
    let previous_spill = previous.and_then(|table| table.spill.as_deref().map(|(group, _)| group));
    let (primary, spill) = match local_share {
        Some(share) => (
            group(0, local_len, previous_primary),
            group(local_len, ordered.len() - local_len, previous_spill)
                .map(|g| Box::new((g, ((1.0 - share) * f64::from(u32::MAX)) as u32))),
        ),
        None => (group(0, ordered.len(), previous_primary), None),
    };
    let Some(primary) = primary else {
        return PickTable::empty(ErrorKind::NoEndpoints);
    };
    PickTable {
        status: TableStatus::Ready,
        panic,
        candidates: ordered.iter().map(|entry| Arc::clone(entry.slot)).collect(),
        primary: Some(primary),
        spill,
        bounded_load: config.policy.bounded_load,
        limit: config
            .concurrency_limit
            .as_ref()
            .map(|limit| limit.max_in_flight),
        avoid: avoid_mask(panic),
    }
}

/// The connectivity bits a pick passes a candidate over for: in panic mode every endpoint is
/// used, down or not serving, but shed ones are still passed over.
fn avoid_mask(panic: bool) -> u32 {
    if panic {
        crate::state::AVOID_IN_PANIC
    } else {
        crate::state::AVOID
    }
}

/// Discovery weight × slow-start ramp, scaled by 100 so ramps keep resolution; hashing
/// policies use the discovery weight alone, so placement does not move while endpoints ramp.
fn effective_weight<S>(entry: &BuildEntry<'_, S>, hashing: bool) -> u32 {
    let weight = u64::from(entry.endpoint.weight());
    if hashing {
        return weight.min(u64::from(u32::MAX)) as u32;
    }
    let scaled = if entry.ramp >= 1.0 {
        weight * 100
    } else {
        (weight as f64 * 100.0 * entry.ramp).round() as u64
    };
    scaled.clamp(1, u64::from(u32::MAX)) as u32
}
