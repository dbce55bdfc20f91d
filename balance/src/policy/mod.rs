//! Balancing policies: how one endpoint is chosen among the usable ones.
//!
//! | policy | picks | state read per pick |
//! |--------|-------|---------------------|
//! | [`Policy::p2c_peak_ewma`] (default) | the cheaper of two distinct random endpoints, cost = latency estimate × (in-flight + 1) | two keys, two counters |
//! | [`Policy::p2c_least_pending`] | the one of two distinct random endpoints with fewer requests in flight | two counters |
//! | [`Policy::round_robin`] | each endpoint in turn | the thread's own counter |
//! | [`Policy::weighted_round_robin`] | smooth weighted round-robin | the thread's own counter |
//! | [`Policy::weighted_random`] | at random, in proportion to weight | none |
//! | [`Policy::maglev`] | by the request's hash key, Maglev table | none (bounded loads: counters) |
//! | [`Policy::ring_hash`] | by the request's hash key, ring | none (bounded loads: counters) |
//!
//! Power of two choices comes from Mitzenmacher, "The Power of Two Choices in Randomized Load
//! Balancing" (2001): choosing the less loaded of two random candidates brings the maximum load
//! from `O(log n / log log n)` down to `O(log log n)`. The two candidates are always distinct:
//! sampling with replacement would pick the busier of two endpoints a quarter of the time. Peak
//! EWMA is Finagle's latency-aware load metric (see the `state` module for how it is compared
//! without reading the clock).
//!
//! Both P2C policies replace a member of the pair to pass over (connection down, passed over
//! after an overloaded answer, not serving, at its concurrency limit) by a fresh draw. Under
//! Peak EWMA, a winner whose last request went wrong (a failure, an overloaded answer, no
//! connection, a request dropped or stalled after longer than its estimate) is compared with one
//! more draw, so that two failing or stalled endpoints drawn together do not hand one of them
//! the request; it keeps the requests it is cheapest for, and its next success clears the mark.
//!
//! Weights apply everywhere: P2C samples candidates in proportion to weight (alias method),
//! round-robin and random use them as documented, the hashing policies give an endpoint a share
//! of the table proportional to its weight. Weight 0 means "no new requests" for every policy.
//! Every table is built when the endpoint set or the health state changes, never on a request.
//!
//! The consistent-hashing structures are public ([`MaglevTable`], [`Ring`]) for programs that
//! place keys themselves, and for measuring their quality; [`maglev::next_table_size`] gives
//! the table size [`Policy::maglev`] would build.
//!
//! [`Policy::maglev`] sizes its table from the number of endpoints (at least 100 slots each, on
//! a ladder of roughly doubling primes, with hysteresis). When the size steps, **the whole table
//! is remapped** and nearly every key moves to another endpoint, not only `1 / N` of them; see
//! the [`maglev`] module. [`Policy::maglev_with_table_size`] keeps one size, and so never does.

pub(crate) mod alias;
pub mod maglev;
pub mod ring;
pub(crate) mod round_robin;

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;
use alias::AliasTable;
pub use maglev::MaglevTable;
pub use ring::Ring;
use round_robin::Stripes;

pub use ring::{DEFAULT_MAX_RING_SIZE, DEFAULT_POINTS_PER_WEIGHT};

/// Parameters of the Peak EWMA load metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// How fast old latency fades: the estimate decays by `e` over this time without samples.
    /// Default 10 s.
    pub decay: Duration,
    /// The estimate of an endpoint before any sample when no other endpoint has history yet.
    /// A new endpoint joining a balancer that has history starts at the median estimate of the
    /// others instead, so it is not treated as the fastest. Default 30 ms.
    pub default_rtt: Duration,
    /// The latency recorded for a failed request (an error, or a response classified as a
    /// failure such as 503) when it was faster, so that an endpoint failing fast does not look
    /// fast. Default 1 s.
    ///
    /// A request dropped before its outcome (a deadline passed) raises the estimate to the time
    /// it had taken, when that is higher: the endpoint took at least that long. So does a
    /// request starting on an endpoint that has had requests in flight and none ending for
    /// longer than its estimate. Requests held open for long (long polls) therefore make an
    /// endpoint look slow; balance those with least pending.
    pub failure_penalty: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
        }
    }
}

/// The load compared by power-of-two-choices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    PeakEwma(PeakEwma),
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    P2c(Load),
    RoundRobin,
    WeightedRoundRobin,
    WeightedRandom,
    Maglev {
        /// `None`: sized from the number of endpoints ([`maglev::next_table_size`]).
        table_size: Option<u32>,
    },
    RingHash {
        sizing: ring::Sizing,
        max_ring_size: usize,
    },
}

/// A balancing policy and its parameters. See the [module docs](self) for the list.
#[derive(Clone, Copy, PartialEq)]
pub struct Policy {
    pub(crate) kind: Kind,
    pub(crate) bounded_load: Option<f64>,
}

impl Policy {
    fn new(kind: Kind) -> Self {
        Policy {
            kind,
            bounded_load: None,
        }
    }

    /// `true` for the round-robin policies, whose picks walk the endpoints with per-thread
    /// counters.
    pub(crate) fn uses_stripes(&self) -> bool {
        matches!(self.kind, Kind::RoundRobin | Kind::WeightedRoundRobin)
    }

    /// Power of two choices with the Peak EWMA load metric (default parameters). The default
    /// policy: it sends less traffic to slow, busy and failing endpoints.
    pub fn p2c_peak_ewma() -> Self {
        Policy::new(Kind::P2c(Load::PeakEwma(PeakEwma::default())))
    }

    /// Power of two choices with Peak EWMA and the given parameters.
    pub fn p2c_peak_ewma_with(parameters: PeakEwma) -> Result<Self, ConfigError> {
        if parameters.decay.is_zero() {
            return Err(ConfigError::new(
                "peak_ewma.decay",
                "must be longer than zero",
            ));
        }
        Ok(Policy::new(Kind::P2c(Load::PeakEwma(parameters))))
    }

    /// Power of two choices comparing requests in flight.
    pub fn p2c_least_pending() -> Self {
        Policy::new(Kind::P2c(Load::Pending))
    }

    /// Round-robin, ignoring weights other than 0.
    pub fn round_robin() -> Self {
        Policy::new(Kind::RoundRobin)
    }

    /// Smooth weighted round-robin (nginx's): each endpoint gets its weight's share of each
    /// cycle, interleaved.
    pub fn weighted_round_robin() -> Self {
        Policy::new(Kind::WeightedRoundRobin)
    }

    /// Random, in proportion to weight.
    pub fn weighted_random() -> Self {
        Policy::new(Kind::WeightedRandom)
    }

    /// Maglev consistent hashing with a table sized from the number of endpoints `N`: the
    /// smallest of [`maglev::TABLE_SIZES`] (primes from 1 031 to 16 777 259, roughly doubling)
    /// with at least 100 × `N` slots, so the busiest endpoint stays within about 1% of the mean
    /// at every `N` (up to 167 772 endpoints, beyond which the largest table is shared).
    ///
    /// The size follows `N` with hysteresis: it grows as soon as `N` needs the next step and
    /// shrinks only once the step two below would suffice ([`maglev::next_table_size`]). **A
    /// change of size remaps the whole table**: nearly every key moves, not only the `1 / N` of
    /// an ordinary endpoint change. Use [`maglev_with_table_size`](Self::maglev_with_table_size)
    /// for a size, and a placement, that never depends on `N`.
    pub fn maglev() -> Self {
        Policy::new(Kind::Maglev { table_size: None })
    }

    /// Maglev consistent hashing with a fixed table of `table_size` entries, which must be a
    /// prime (so every endpoint's preference list covers the table). The size never changes, so
    /// no change of `N` remaps the whole table; use a size well above 100 × the largest number
    /// of endpoints for an even spread (65 537, [`maglev::PAPER_TABLE_SIZE`], was the default
    /// before the table was sized from `N`).
    pub fn maglev_with_table_size(table_size: u32) -> Result<Self, ConfigError> {
        if !maglev::is_prime(table_size) {
            return Err(ConfigError::new(
                "maglev.table_size",
                "must be a prime number",
            ));
        }
        Ok(Policy::new(Kind::Maglev {
            table_size: Some(table_size),
        }))
    }

    /// Ring hash with [`DEFAULT_POINTS_PER_WEIGHT`] (160) points per unit of weight, as in
    /// ketama, whatever the number of endpoints: about 1.5 KB of ring per endpoint, and a
    /// rebuild cheaper than pingora's ketama ring. Its spread is a ketama ring's: the busiest
    /// endpoint owns about **1.2-1.3x the mean share at 100 and 1 000 endpoints, and 1.3-1.4x
    /// at 10 000**. For an even spread use [`maglev`](Self::maglev) (within about 1% of the
    /// mean), or [`ring_hash_with`](Self::ring_hash_with) for a ring sized to a target
    /// imbalance. See the [`ring`] module.
    pub fn ring_hash() -> Self {
        Policy::new(Kind::RingHash {
            sizing: ring::Sizing::PerWeight(ring::DEFAULT_POINTS_PER_WEIGHT),
            max_ring_size: ring::DEFAULT_MAX_RING_SIZE,
        })
    }

    /// Ring hash sized for `max_imbalance` (0.1 = the busiest endpoint should own at most 10%
    /// more than the mean): `⌈2 ln N / max_imbalance²⌉` points per unit of weight for `N`
    /// endpoints ([`ring::points_per_weight`]; 1 382 per endpoint for 10% at N = 1 000), with at
    /// most `max_ring_size` points. When the cap is reached the target is not met; the ring is as
    /// large as allowed. [`DEFAULT_MAX_RING_SIZE`] is Envoy's default cap.
    pub fn ring_hash_with(max_imbalance: f64, max_ring_size: usize) -> Result<Self, ConfigError> {
        if !(max_imbalance > 0.0 && max_imbalance.is_finite()) {
            return Err(ConfigError::new(
                "ring_hash.max_imbalance",
                "must be a positive number",
            ));
        }
        if max_ring_size == 0 {
            return Err(ConfigError::new(
                "ring_hash.max_ring_size",
                "must be at least 1",
            ));
        }
        Ok(Policy::new(Kind::RingHash {
            sizing: ring::Sizing::MaxImbalance(max_imbalance),
            max_ring_size,
        }))
    }

    /// Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018): an
    /// endpoint already carrying more than `(1 + epsilon) ×` the mean number of requests in
    /// flight passes the request on to the next endpoint of the table or ring. Only for
    /// [`maglev`](Self::maglev) and [`ring_hash`](Self::ring_hash).
    pub fn with_bounded_load(mut self, epsilon: f64) -> Result<Self, ConfigError> {
        if !matches!(self.kind, Kind::Maglev { .. } | Kind::RingHash { .. }) {
            return Err(ConfigError::new(
                "bounded_load",
                "applies only to the maglev and ring_hash policies",
            ));
        }
        if !(epsilon > 0.0 && epsilon.is_finite()) {
            return Err(ConfigError::new(
                "bounded_load",
                "epsilon must be a positive number",
            ));
        }
        self.bounded_load = Some(epsilon);
        Ok(self)
    }

    /// `true` for the policies that place requests by a hash key.
    pub fn is_hashing(&self) -> bool {
        matches!(self.kind, Kind::Maglev { .. } | Kind::RingHash { .. })
    }

    /// The policy's name, as used in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::P2c(Load::PeakEwma(_)) => "p2c_peak_ewma",
            Kind::P2c(Load::Pending) => "p2c_least_pending",
            Kind::RoundRobin => "round_robin",
            Kind::WeightedRoundRobin => "weighted_round_robin",
            Kind::WeightedRandom => "weighted_random",
            Kind::Maglev { .. } => "maglev",
            Kind::RingHash { .. } => "ring_hash",
        }
    }

    pub(crate) fn peak_ewma(&self) -> Option<&PeakEwma> {
        match &self.kind {
            Kind::P2c(Load::PeakEwma(parameters)) => Some(parameters),
            _ => None,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::p2c_peak_ewma()
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Policy");
        debug.field("name", &self.name());
        match &self.kind {
            Kind::P2c(Load::PeakEwma(parameters)) => {
                debug.field("peak_ewma", parameters);
            }
            Kind::Maglev {
                table_size: Some(size),
            } => {
                debug.field("table_size", size);
            }
            Kind::Maglev { table_size: None } => {
                debug.field("table_size", &"sized from the endpoints");
            }
            Kind::RingHash {
                sizing,
                max_ring_size,
            } => {
                match sizing {
                    ring::Sizing::PerWeight(points) => debug.field("points_per_weight", points),
                    ring::Sizing::MaxImbalance(epsilon) => debug.field("max_imbalance", epsilon),
                };
                debug.field("max_ring_size", max_ring_size);
            }
            _ => {}
        }
        if let Some(epsilon) = self.bounded_load {
            debug.field("bounded_load", &epsilon);
        }
        debug.finish()
    }
}

/// What a policy needs to know of one candidate when its table is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CandidateInfo<'a> {
    /// The effective weight (discovery weight × slow-start factor), above zero.
    pub(crate) weight: u32,
    /// The bytes consistent hashing places the endpoint by.
    pub(crate) hash_key: &'a [u8],
}

/// Read access to candidates' load counters at pick time.
pub(crate) trait Loads {
    fn peak_ewma_cost(&self, candidate: usize) -> f64;
    fn in_flight(&self, candidate: usize) -> u32;
    /// `true` when picks should pass the candidate over: its connection went down since the
    /// table was built (avoided at once, before the next rebuild removes it), it answered that
    /// it is overloaded (load feedback), or it is at its concurrency limit.
    fn avoid(&self, candidate: usize) -> bool;

    /// `true` when the candidate's last request went wrong (a failure, an overloaded answer, no
    /// connection, or a request that took longer than its estimate and was dropped): P2C with
    /// Peak EWMA then looks at one more candidate before giving it the request.
    fn suspect(&self, _candidate: usize) -> bool {
        false
    }
}

impl<L: Loads + ?Sized> Loads for &L {
    #[inline]
    fn peak_ewma_cost(&self, candidate: usize) -> f64 {
        (**self).peak_ewma_cost(candidate)
    }

    #[inline]
    fn in_flight(&self, candidate: usize) -> u32 {
        (**self).in_flight(candidate)
    }

    #[inline]
    fn avoid(&self, candidate: usize) -> bool {
        (**self).avoid(candidate)
    }

    #[inline]
    fn suspect(&self, candidate: usize) -> bool {
        (**self).suspect(candidate)
    }
}

/// How many times a pick that landed on a candidate to avoid tries again.
const DOWN_RETRIES: usize = 3;

/// A policy's lookup structure over candidates `0..len`.
///
/// With an explicit tag: left to the compiler, the variant was kept in a spare value of a
/// field (the nanoseconds of Peak EWMA's decay time), and every pick decoded it (a subtraction,
/// a comparison and a conditional move before the jump).
#[derive(Debug)]
#[repr(u8)]
pub(crate) enum PolicyTable {
    P2c {
        load: Load,
        len: usize,
        weighted: Option<AliasTable>,
    },
    RoundRobin {
        len: usize,
    },
    Schedule(Box<[u32]>),
    Random {
        len: usize,
        weighted: Option<AliasTable>,
    },
    Maglev(MaglevTable),
    Ring(Ring),
}

impl PolicyTable {
    /// Builds the table for `policy` over `candidates` (all with weight above zero).
    /// `previous_maglev_size` is the size of the Maglev table this one replaces, for the
    /// hysteresis of the sized default. `None` when there is no candidate.
    pub(crate) fn build(
        policy: &Policy,
        candidates: &[CandidateInfo<'_>],
        previous_maglev_size: Option<u32>,
    ) -> Option<Self> {
        if candidates.is_empty() {
            return None;
        }
        let weights: Vec<u32> = candidates.iter().map(|c| c.weight).collect();
        let uniform = weights.windows(2).all(|pair| pair[0] == pair[1]);
        let len = candidates.len();
        Some(match policy.kind {
            Kind::P2c(load) => PolicyTable::P2c {
                load,
                len,
                weighted: if uniform {
                    None
                } else {
                    AliasTable::new(&weights)
                },
            },
            Kind::RoundRobin => PolicyTable::RoundRobin { len },
            Kind::WeightedRoundRobin if uniform => PolicyTable::RoundRobin { len },
            Kind::WeightedRoundRobin => {
                PolicyTable::Schedule(round_robin::smooth_schedule(&weights))
            }
            Kind::WeightedRandom => PolicyTable::Random {
                len,
                weighted: if uniform {
                    None
                } else {
                    AliasTable::new(&weights)
                },
            },
            Kind::Maglev { table_size } => {
                let keys: Vec<&[u8]> = candidates.iter().map(|c| c.hash_key).collect();
                let size = table_size
                    .unwrap_or_else(|| maglev::next_table_size(len, previous_maglev_size));
                PolicyTable::Maglev(MaglevTable::new(&keys, &weights, size)?)
            }
            Kind::RingHash {
                sizing,
                max_ring_size,
            } => {
                let keys: Vec<&[u8]> = candidates.iter().map(|c| c.hash_key).collect();
                let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
                let points = sizing.points_per_weight(len, total, max_ring_size);
                PolicyTable::Ring(Ring::new(&keys, &weights, points)?)
            }
        })
    }

    /// The number of slots of a Maglev table; `None` for the other policies.
    pub(crate) fn maglev_size(&self) -> Option<u32> {
        match self {
            PolicyTable::Maglev(table) => u32::try_from(table.size()).ok(),
            _ => None,
        }
    }

    /// Picks a candidate position. `key` is the request's hash (hashing policies use a random
    /// one when the request has none); `bound` is the bounded-load cap, when enabled.
    ///
    /// `loads` is taken by value (a reference is a `Loads` too): the rare path that looks
    /// further gets its own copy, so the common path keeps the loads in registers.
    #[inline]
    pub(crate) fn pick<L: Loads + Copy>(
        &self,
        key: Option<u64>,
        rng: &mut fastrand::Rng,
        stripes: &Stripes,
        loads: L,
        bound: Option<u32>,
    ) -> usize {
        let loads = &loads;
        match self {
            PolicyTable::P2c {
                load,
                len,
                weighted,
            } => {
                let (a, b) = match weighted {
                    None => distinct_pair(*len, rng),
                    Some(alias) => weighted_distinct_pair(alias, rng),
                };
                if a == b {
                    return a;
                }
                // The one to avoid is replaced by a fresh draw, so that the other does not get
                // the request whatever its load (two bad endpoints drawn together would
                // otherwise hand the worse one every such pair). Under Peak EWMA, so is a
                // winner whose last request went wrong: two failing or stalled endpoints drawn
                // together (one answering errors at once, one too slow) are both expensive, and
                // whichever is cheaper would otherwise lose the request. The generator's state is
                // passed by value: a reference to it would make the common path keep it in
                // memory.
                match (loads.avoid(a), loads.avoid(b)) {
                    (true, false) => return look_further(self, b, rng.get_seed(), *loads),
                    (false, true) => return look_further(self, a, rng.get_seed(), *loads),
                    _ => {}
                }
                let winner = better(*load, loads, a, b);
                if matches!(load, Load::PeakEwma(_)) && loads.suspect(winner) {
                    return look_further(self, winner, rng.get_seed(), *loads);
                }
                winner
            }
            PolicyTable::RoundRobin { len } => retry_down(loads, || stripes.next(*len)),
            PolicyTable::Schedule(schedule) => {
                retry_down(loads, || schedule[stripes.next(schedule.len())] as usize)
            }
            PolicyTable::Random { len, weighted } => retry_down(loads, || match weighted {
                None => rng.usize(..*len),
                Some(alias) => alias.pick(rng.u64(..)),
            }),
            PolicyTable::Maglev(table) => {
                let key = key.unwrap_or_else(|| rng.u64(..));
                let first = table.pick(key);
                walk(first, table.size(), loads, bound, |step| {
                    table.pick_after(key, step as u64)
                })
            }
            PolicyTable::Ring(ring) => {
                let key = key.unwrap_or_else(|| rng.u64(..));
                let point = ring.point(key);
                walk(ring.owner(point), ring.len(), loads, bound, |step| {
                    ring.owner(point + step)
                })
            }
        }
    }
}

/// Picks again, a few times, while the pick lands on a candidate to avoid.
#[inline]
fn retry_down<L: Loads>(loads: &L, mut pick: impl FnMut() -> usize) -> usize {
    let mut candidate = pick();
    for _ in 0..DOWN_RETRIES {
        if !loads.avoid(candidate) {
            break;
        }
        candidate = pick();
    }
    candidate
}

/// Walks a hash table or ring from `first` past candidates to avoid or, with bounded loads,
/// full; at most one pass. Keeps `first` when nothing better is found.
#[inline]
fn walk<L: Loads>(
    first: usize,
    size: usize,
    loads: &L,
    bound: Option<u32>,
    at: impl Fn(usize) -> usize,
) -> usize {
    let unsuitable = |candidate: usize| {
        loads.avoid(candidate) || bound.is_some_and(|cap| loads.in_flight(candidate) >= cap)
    };
    if !unsuitable(first) {
        return first;
    }
    (1..size)
        .map(at)
        .find(|&candidate| !unsuitable(candidate))
        .unwrap_or(first)
}

/// Two distinct positions in `0..len` chosen uniformly (the same one only when `len == 1`).
#[inline]
pub(crate) fn distinct_pair(len: usize, rng: &mut fastrand::Rng) -> (usize, usize) {
    if len < 2 {
        return (0, 0);
    }
    let a = rng.usize(..len);
    (a, uniform_other(a, len, rng))
}

/// A position in `0..len` other than `a`, chosen uniformly (`len >= 2`).
#[inline]
fn uniform_other(a: usize, len: usize, rng: &mut fastrand::Rng) -> usize {
    let mut b = rng.usize(..len - 1);
    if b >= a {
        b += 1;
    }
    b
}

/// A position other than `a`, in proportion to weight; after a few draws that keep landing on
/// `a` (its weight dominates), uniformly among the others (`alias.len() >= 2`).
#[inline]
fn weighted_other(alias: &AliasTable, a: usize, rng: &mut fastrand::Rng) -> usize {
    for _ in 0..4 {
        let b = alias.pick(rng.u64(..));
        if b != a {
            return b;
        }
    }
    uniform_other(a, alias.len(), rng)
}

/// The better of P2C's two candidates under `load`.
#[inline]
fn better<L: Loads>(load: Load, loads: &L, a: usize, b: usize) -> usize {
    let a_is_better = match load {
        Load::PeakEwma(_) => loads.peak_ewma_cost(a) <= loads.peak_ewma_cost(b),
        Load::Pending => loads.in_flight(a) <= loads.in_flight(b),
    };
    if a_is_better { a } else { b }
}

/// P2C's pick when one of the pair, the other than `kept`, is to be avoided, or (Peak EWMA)
/// when `kept` won the pair but is suspect: `kept` against a fresh draw (in proportion to
/// weight when weighted) that is not to be avoided and, under Peak EWMA, preferably not
/// suspect; `kept` alone when a few draws find none. Off the common path.
///
/// Least pending ignores the suspect mark: a failure costs it nothing, so an idle suspect
/// endpoint would tie with every fresh draw and, losing ties, get no request to clear the mark.
/// Peak EWMA's failure penalty and deadline samples decay, so a suspect endpoint gets the
/// requests it has become cheapest for.
#[cold]
#[inline(never)]
fn look_further<L: Loads>(table: &PolicyTable, kept: usize, seed: u64, loads: L) -> usize {
    let loads = &loads;
    // A stream of its own, from the pick's generator state: seeded balancers stay reproducible.
    let rng = &mut fastrand::Rng::with_seed(seed ^ 0x9E37_79B9_7F4A_7C15);
    let PolicyTable::P2c {
        load,
        len,
        weighted,
    } = table
    else {
        return kept;
    };
    let (load, len, weighted) = (*load, *len, weighted.as_ref());
    if len < 2 {
        return kept;
    }
    let mut draw = || match weighted {
        Some(alias) => weighted_other(alias, kept, rng),
        None => uniform_other(kept, len, rng),
    };
    let prefer_clean = matches!(load, Load::PeakEwma(_));
    let mut usable = None;
    for _ in 0..=DOWN_RETRIES {
        let other = draw();
        if loads.avoid(other) {
            continue;
        }
        if !(prefer_clean && loads.suspect(other)) {
            return better(load, loads, other, kept);
        }
        usable.get_or_insert(other);
    }
    match usable {
        Some(other) => better(load, loads, kept, other),
        None => kept,
    }
}

/// Two distinct positions sampled in proportion to weight. After a few draws that keep landing
/// on the same position (one weight dominates), the second one is taken uniformly among the
/// others, so the pair stays distinct.
#[inline]
fn weighted_distinct_pair(alias: &AliasTable, rng: &mut fastrand::Rng) -> (usize, usize) {
    let a = alias.pick(rng.u64(..));
    if alias.len() < 2 {
        return (a, a);
    }
    (a, weighted_other(alias, a, rng))
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    struct NoLoad;

    impl Loads for NoLoad {
        fn peak_ewma_cost(&self, _: usize) -> f64 {
            0.0
        }
        fn in_flight(&self, _: usize) -> u32 {
            0
        }
        fn avoid(&self, _: usize) -> bool {
            false
        }
    }

    struct InFlight(Vec<u32>);

    impl Loads for InFlight {
        fn peak_ewma_cost(&self, i: usize) -> f64 {
            f64::from(self.0[i])
        }
        fn in_flight(&self, i: usize) -> u32 {
            self.0[i]
        }
        fn avoid(&self, _: usize) -> bool {
            false
        }
    }

    fn candidates(weights: &[u32]) -> Vec<CandidateInfo<'static>> {
        const KEYS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| CandidateInfo {
                weight,
                hash_key: KEYS[i],
            })
            .collect()
    }

    #[test]
    fn p2c_prefers_the_less_loaded() {
        let table =
            PolicyTable::build(&Policy::p2c_least_pending(), &candidates(&[1, 1]), None).unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let stripes = Stripes::new(1);
        for _ in 0..100 {
            assert_eq!(
                table.pick(None, &mut rng, &stripes, &InFlight(vec![5, 1]), None),
                1
            );
        }
    }

    /// In-flight counts (also the costs), the candidates to avoid and the suspect ones.
    struct Marked {
        load: Vec<u32>,
        avoid: Vec<usize>,
        suspect: Vec<usize>,
    }

    impl Marked {
        fn avoiding(load: Vec<u32>, avoid: Vec<usize>) -> Self {
            Marked {
                load,
                avoid,
                suspect: Vec::new(),
            }
        }

        fn suspecting(load: Vec<u32>, suspect: Vec<usize>) -> Self {
            Marked {
                load,
                avoid: Vec::new(),
                suspect,
            }
        }
    }

    impl Loads for Marked {
        fn peak_ewma_cost(&self, i: usize) -> f64 {
            f64::from(self.load[i])
        }
        fn in_flight(&self, i: usize) -> u32 {
            self.load[i]
        }
        fn avoid(&self, i: usize) -> bool {
            self.avoid.contains(&i)
        }
        fn suspect(&self, i: usize) -> bool {
            self.suspect.contains(&i)
        }
    }

    #[test]
    fn p2c_replaces_a_candidate_to_avoid_instead_of_handing_its_pair_the_request() {
        // 0 is passed over, 1 is loaded, 2 and 3 are idle. Taking whichever of a pair is not to
        // be avoided would give 1 every (0, 1) pair: a sixth of the picks. Drawn against a
        // fresh candidate instead (drawn again while it is 0), 1 gets almost none.
        for weights in [[1, 1, 1, 1], [1, 1, 1, 2]] {
            for policy in [Policy::p2c_least_pending(), Policy::p2c_peak_ewma()] {
                let table = PolicyTable::build(&policy, &candidates(&weights), None).unwrap();
                let mut rng = fastrand::Rng::with_seed(7);
                let stripes = Stripes::new(1);
                let loads = Marked::avoiding(vec![0, 10, 0, 0], vec![0]);
                let mut picks = [0u32; 4];
                for _ in 0..6000 {
                    picks[table.pick(None, &mut rng, &stripes, &loads, None)] += 1;
                }
                assert_eq!(
                    picks[0], 0,
                    "{weights:?}: the candidate to avoid: {picks:?}"
                );
                assert!(
                    picks[1] < 6000 / 60,
                    "{weights:?}: the loaded one got {picks:?}"
                );
            }
        }
    }

    #[test]
    fn peak_ewma_looks_further_when_both_of_a_pair_went_wrong() {
        // 0 fails at once and 1 is stalled: both expensive, both suspect. A (0, 1) pair, a
        // sixth of the picks, would hand one of them the request; a fresh draw takes it.
        for weights in [[1, 1, 1, 1], [1, 1, 1, 2]] {
            let table =
                PolicyTable::build(&Policy::p2c_peak_ewma(), &candidates(&weights), None).unwrap();
            let mut rng = fastrand::Rng::with_seed(11);
            let stripes = Stripes::new(1);
            let loads = Marked::suspecting(vec![40, 50, 1, 1], vec![0, 1]);
            let mut picks = [0u32; 4];
            for _ in 0..6000 {
                picks[table.pick(None, &mut rng, &stripes, &loads, None)] += 1;
            }
            // Only when every fresh draw lands on the other suspect one (about 1 in 80).
            assert!(
                picks[0] + picks[1] < 6000 / 200,
                "{weights:?}: the suspect ones got {picks:?}"
            );
        }
    }

    #[test]
    fn a_suspect_candidate_keeps_the_requests_it_is_cheapest_for() {
        // Peak EWMA: a suspect endpoint whose cost has come down is compared by cost like any
        // other, so it gets traffic back and can clear the mark. It is in half of the pairs
        // and wins each (and the fresh draw after it).
        let peak_ewma =
            PolicyTable::build(&Policy::p2c_peak_ewma(), &candidates(&[1; 4]), None).unwrap();
        // Least pending ignores the mark: idle, the suspect one keeps its quarter.
        let least_pending =
            PolicyTable::build(&Policy::p2c_least_pending(), &candidates(&[1; 4]), None).unwrap();
        for (table, loads, floor) in [
            (
                &peak_ewma,
                Marked::suspecting(vec![0, 5, 5, 5], vec![0]),
                6000 * 2 / 5,
            ),
            (
                &least_pending,
                Marked::suspecting(vec![0, 0, 0, 0], vec![0]),
                6000 / 5,
            ),
        ] {
            let mut rng = fastrand::Rng::with_seed(3);
            let stripes = Stripes::new(1);
            let mut picks = [0u32; 4];
            for _ in 0..6000 {
                picks[table.pick(None, &mut rng, &stripes, &loads, None)] += 1;
            }
            assert!(picks[0] > floor, "{picks:?}");
        }
    }

    #[test]
    fn bounded_load_walks_past_a_full_endpoint() {
        let policy = Policy::maglev_with_table_size(101)
            .unwrap()
            .with_bounded_load(0.25)
            .unwrap();
        let table = PolicyTable::build(&policy, &candidates(&[1, 1, 1]), None).unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let stripes = Stripes::new(1);
        for key in 0..200u64 {
            let free = table.pick(Some(key), &mut rng, &stripes, &NoLoad, Some(2));
            let loads = InFlight((0..3).map(|i| if i == free { 5 } else { 0 }).collect());
            let moved = table.pick(Some(key), &mut rng, &stripes, &loads, Some(2));
            assert_ne!(moved, free, "a full endpoint passes the request on");
        }
    }

    #[test]
    fn bounded_load_on_the_ring_spills_to_the_next_distinct_owner() {
        let policy = Policy::ring_hash().with_bounded_load(0.25).unwrap();
        let table = PolicyTable::build(&policy, &candidates(&[1, 2, 1, 1]), None).unwrap();
        let PolicyTable::Ring(ring) = &table else {
            panic!("a ring policy builds a ring");
        };
        assert_eq!(ring.len(), 5 * DEFAULT_POINTS_PER_WEIGHT as usize);
        let mut rng = fastrand::Rng::with_seed(1);
        let stripes = Stripes::new(1);
        for i in 0..500u64 {
            let key = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let free = table.pick(Some(key), &mut rng, &stripes, &NoLoad, Some(2));
            let point = ring.point(key);
            assert_eq!(free, ring.owner(point));
            let next = (1..ring.len())
                .map(|step| ring.owner(point + step))
                .find(|&owner| owner != free)
                .unwrap();
            let loads = InFlight((0..4).map(|i| if i == free { 5 } else { 0 }).collect());
            let moved = table.pick(Some(key), &mut rng, &stripes, &loads, Some(2));
            assert_eq!(moved, next, "a full endpoint passes the request on");
        }
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let error = Policy::maglev_with_table_size(65_536).unwrap_err();
        assert_eq!(error.field(), "maglev.table_size");
        assert!(Policy::round_robin().with_bounded_load(0.2).is_err());
        assert!(Policy::ring_hash_with(0.0, 10).is_err());
    }
}
