//! Per-endpoint state shared by every request and every snapshot: load, latency, failures and
//! connectivity, as atomics.
//!
//! A pick reads these counters and never writes them; a request writes them when it starts and
//! when it completes. The state lives as long as the endpoint stays in the discovery set, so
//! latency history, in-flight counts and ejections survive every set update that keeps the
//! address.
//!
//! # Peak EWMA in the log domain
//!
//! The latency estimate follows Finagle's and tower's Peak EWMA: a sample above the current
//! estimate replaces it at once (the peak), a lower one moves it by an exponentially weighted
//! average, and the estimate decays towards zero while no sample arrives (decay time `τ`), so an
//! endpoint that stopped getting traffic is tried again. A pick compares
//! `estimate(now) × (in_flight + 1)` between two endpoints. With
//! `estimate(now) = v · e^{-(now - s)/τ}` for the value `v` stored at time `s`, the comparison
//! of logarithms `ln v + s/τ + ln(in_flight + 1)` does not depend on `now`: each endpoint keeps
//! `ln v + s/τ` as its *key*, and a pick reads two keys and two in-flight counts, without the
//! clock and without an exponential.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The clock request latencies are measured with, for the Peak EWMA policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LatencyClock {
    /// The CPU's time-stamp counter, through the `quanta` crate, about 10 ns a read (the OS
    /// clock costs 20-45 ns on common VMs, and a request reads the clock twice). quanta falls
    /// back to the OS clock where the counter is not reliable. The default.
    #[default]
    Tsc,
    /// tokio's clock: tests that pause it (`tokio::time::pause`) then see simulated latencies.
    Tokio,
}

/// Timestamps of the balancer: raw readings while a request runs, milliseconds since the
/// balancer's epoch in the atomics.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    Tsc {
        clock: quanta::Clock,
        epoch: u64,
        scale: TickScale,
    },
    Tokio {
        epoch: Instant,
    },
}

/// quanta's conversion of raw readings, as two fixed-point factors: nanoseconds and
/// milliseconds per tick, so that a difference of readings becomes either with one
/// multiplication (quanta's own conversion shifts a 128-bit product by a variable amount and
/// checks the order of its readings, about 15 instructions; a Peak EWMA request converts three
/// times).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TickScale {
    /// Nanoseconds per tick, times 2^32.
    nanos_q32: u64,
    /// Milliseconds per tick, times 2^64.
    millis_q64: u64,
}

impl TickScale {
    /// The scale of `clock`'s raw readings. quanta's conversion is linear (a multiplication and a
    /// shift, or none when the readings are already nanoseconds), so 2^32 ticks give the factor.
    fn of(clock: &quanta::Clock) -> Self {
        let nanos_q32 = clock.delta_as_nanos(0, 1 << 32);
        let millis_q64 = (u128::from(nanos_q32) << 32) / 1_000_000;
        TickScale {
            nanos_q32,
            millis_q64: u64::try_from(millis_q64).unwrap_or(u64::MAX),
        }
    }

    /// Nanoseconds in `ticks` ticks.
    #[inline]
    fn nanos(self, ticks: u64) -> u64 {
        let nanos = (u128::from(ticks) * u128::from(self.nanos_q32)) >> 32;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Whole milliseconds in `ticks` ticks.
    #[inline]
    fn millis(self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.millis_q64)) >> 64) as u64
    }
}

/// The ticks from `start` to `end`, 0 when `end` is not later: counters of different cores may
/// disagree slightly, and a request never takes negative time.
#[inline]
fn ticks_between(start: u64, end: u64) -> u64 {
    (end.wrapping_sub(start) as i64).max(0) as u64
}

impl Clock {
    pub(crate) fn new(kind: LatencyClock) -> Self {
        match kind {
            LatencyClock::Tsc => {
                let clock = quanta::Clock::new();
                let epoch = clock.raw();
                let scale = TickScale::of(&clock);
                Clock::Tsc {
                    clock,
                    epoch,
                    scale,
                }
            }
            LatencyClock::Tokio => Clock::Tokio {
                epoch: Instant::now(),
            },
        }
    }

    /// A raw reading, only meaningful to this clock's other methods.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::Tsc { clock, .. } => clock.raw(),
            Clock::Tokio { epoch } => {
                let elapsed = Instant::now().saturating_duration_since(*epoch);
                elapsed.as_secs() * 1_000_000_000 + u64::from(elapsed.subsec_nanos())
            }
        }
    }

    /// The time between two readings.
    #[inline]
    pub(crate) fn between(&self, start: u64, end: u64) -> Duration {
        Duration::from_nanos(self.nanos_between(start, end))
    }

    /// The time between two readings, in nanoseconds.
    #[inline]
    pub(crate) fn nanos_between(&self, start: u64, end: u64) -> u64 {
        match self {
            Clock::Tsc { scale, .. } => scale.nanos(ticks_between(start, end)),
            Clock::Tokio { .. } => end.saturating_sub(start),
        }
    }

    /// Milliseconds from the epoch to a reading.
    #[inline]
    pub(crate) fn millis_at(&self, reading: u64) -> u64 {
        match self {
            Clock::Tsc { epoch, scale, .. } => scale.millis(ticks_between(*epoch, reading)),
            Clock::Tokio { .. } => reading / 1_000_000,
        }
    }

    /// Milliseconds from the epoch to now.
    pub(crate) fn now_millis(&self) -> u64 {
        self.millis_at(self.now())
    }
}

/// `now + delay`, saturating far in the future instead of overflowing: configured durations may
/// be as long as `Duration::MAX`.
pub(crate) fn after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// `ln(n)` for `n` in `1..=64`: a P2C pick with Peak EWMA needs the logarithm of two
/// candidates' in-flight counts plus one, and a logarithm costs tens of instructions where a
/// lookup costs a few. Counts beyond the table are computed. Written out rather than computed
/// at first use: a lazily computed table costs a check on every lookup. The test
/// `looked_up_logarithms_equal_computed_ones` holds each entry to `f64::ln`, bit for bit.
#[rustfmt::skip]
const SMALL_LN: [f64; 64] = [
    0.0, std::f64::consts::LN_2, 1.0986122886681098, 1.3862943611198906,
    1.6094379124341003, 1.791759469228055, 1.9459101490553132, 2.0794415416798357,
    2.1972245773362196, std::f64::consts::LN_10, 2.3978952727983707, 2.4849066497880004,
    2.5649493574615367, 2.6390573296152584, 2.70805020110221, 2.772588722239781,
    2.833213344056216, 2.8903717578961645, 2.9444389791664403, 2.995732273553991,
    3.044522437723423, 3.091042453358316, 3.1354942159291497, 3.1780538303479458,
    3.2188758248682006, 3.258096538021482, 3.295836866004329, 3.332204510175204,
    3.367295829986474, 3.4011973816621555, 3.4339872044851463, 3.4657359027997265,
    3.4965075614664802, 3.5263605246161616, 3.5553480614894135, 3.58351893845611,
    3.6109179126442243, 3.6375861597263857, 3.6635616461296463, 3.6888794541139363,
    3.713572066704308, 3.7376696182833684, 3.7612001156935624, 3.784189633918261,
    3.8066624897703196, 3.828641396489095, 3.8501476017100584, 3.871201010907891,
    3.8918202981106265, 3.912023005428146, 3.9318256327243257, 3.9512437185814275,
    3.970291913552122, 3.9889840465642745, 4.007333185232471, 4.02535169073515,
    4.04305126783455, 4.060443010546419, 4.07753744390572, 4.0943445622221,
    4.110873864173311, 4.127134385045092, 4.143134726391533, 4.1588830833596715,
];

/// `ln(n)` for `n >= 1`, exactly `f64::from(n).ln()`.
#[inline]
fn ln_count(n: u32) -> f64 {
    match n.checked_sub(1).and_then(|i| SMALL_LN.get(i as usize)) {
        Some(ln) => *ln,
        None => f64::from(n).ln(),
    }
}

/// The lowest estimate kept, in microseconds: keeps logarithms finite.
const MIN_ESTIMATE_US: f32 = 1e-3;

/// Whether an endpoint's connection can take requests, as reported by its connector or learned
/// from requests that could not reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Connectivity {
    /// Nothing is known yet; the endpoint is used.
    Unknown,
    /// A connection is up.
    Connected,
    /// No connection can be made now; the endpoint is not picked (unless in panic mode) until a
    /// connector reports it connected again or its reconnect backoff ends.
    Disconnected,
}

/// Internal value: a request could not reach the endpoint. Reads as
/// [`Connectivity::Disconnected`]; unlike a connector's report, it ends with a probe after the
/// reconnect backoff.
const UNREACHABLE: u8 = 3;

impl Connectivity {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Connectivity::Connected,
            2 | UNREACHABLE => Connectivity::Disconnected,
            _ => Connectivity::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Connectivity::Unknown => 0,
            Connectivity::Connected => 1,
            Connectivity::Disconnected => 2,
        }
    }
}

/// The hot per-endpoint counters.
///
/// In declaration order (`repr(C)`), what a pick reads first: a candidate's in-flight counts,
/// connectivity word and Peak EWMA key share the slot's first cache line, and the address (32
/// bytes, read only for errors and snapshots) comes last. Laid out by the compiler, the
/// connectivity word fell in the second line, so each candidate cost two lines.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct EndpointState {
    /// Requests started and finished (wrapping): in flight is the difference, and the finished
    /// count gives an interval's volume without another write per request.
    started: AtomicU32,
    finished: AtomicU32,
    /// The state in the low two bits, the [`SHED`], [`NOT_SERVING`] and [`SUSPECT`] flags above
    /// them, the number of connector reports above that.
    connectivity: AtomicU32,
    /// For Peak EWMA, in wrapping milliseconds since the epoch: when a request last ended or
    /// started on the idle endpoint. While requests are in flight, one of them started no
    /// later than this (see [`before_start`](Self::before_start)).
    progress: AtomicU32,
    /// `ln(estimate) + sample_time/τ` as `f64` bits.
    ewma_key: AtomicU64,
    /// `f32` estimate in microseconds (high half) and the sample time in wrapping milliseconds
    /// since the epoch (low half), swapped together.
    ewma: AtomicU64,
    consecutive_failures: AtomicU32,
    interval_failures: AtomicU32,
    /// While [`SHED`] is set: until when, in wrapping milliseconds since the epoch.
    shed_until: AtomicU32,
    address: SocketAddr,
}

// What a pick reads (the counts, the connectivity word, the Peak EWMA key) stays in the slot's
// first cache line: the state starts the slot, which is aligned to 64 bytes.
const _: () =
    assert!(std::mem::offset_of!(EndpointState, ewma_key) + std::mem::size_of::<AtomicU64>() <= 64);

impl EndpointState {
    pub(crate) fn new(
        address: SocketAddr,
        initial_estimate: Duration,
        now_ms: u64,
        tau_ms: f64,
    ) -> Self {
        let state = EndpointState {
            address,
            started: AtomicU32::new(0),
            finished: AtomicU32::new(0),
            ewma: AtomicU64::new(0),
            ewma_key: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            interval_failures: AtomicU32::new(0),
            connectivity: AtomicU32::new(0),
            shed_until: AtomicU32::new(0),
            progress: AtomicU32::new(0),
        };
        let estimate = (initial_estimate.as_secs_f64() * 1e6) as f32;
        state.store_estimate(estimate, now_ms, tau_ms);
        state
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        // Finished first: a request that ends between the two loads cannot make it negative.
        let finished = self.finished.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed).wrapping_sub(finished)
    }

    #[inline]
    pub(crate) fn start_request(&self) {
        // Release: a request that sees this start sees the progress stamp written before it.
        self.started.fetch_add(1, Ordering::Release);
    }

    /// Before a Peak EWMA request is counted as started at `now_ms`. On an idle endpoint the
    /// start is progress. On a busy one, the time since the last progress is a lower bound on
    /// the age of its oldest request in flight, and so on its latency: when that is above the
    /// estimate, the estimate rises to it. An endpoint that stopped answering (slower than its
    /// callers can wait) thus looks slow within about its usual latency, not only once
    /// requests to it time out.
    #[inline]
    pub(crate) fn before_start(&self, now_ms: u64, tau_ms: f64) {
        // Finished first, as in `in_flight`; Acquire pairs with the Release of a start, so the
        // stamp read below is at least the one written before that start.
        let finished = self.finished.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        if started == finished {
            self.progress.store(now_ms as u32, Ordering::Relaxed);
            return;
        }
        let stalled_ms = (now_ms as u32).wrapping_sub(self.progress.load(Ordering::Relaxed));
        let (estimate_us, _) = unpack(self.ewma.load(Ordering::Relaxed));
        // Compared with the stored estimate (at least the decayed one): the common case costs
        // no exponential.
        if stalled_ms as f32 * 1000.0 > estimate_us {
            self.raise_to_stall(stalled_ms, now_ms, tau_ms);
        }
    }

    #[cold]
    #[inline(never)]
    fn raise_to_stall(&self, stalled_ms: u32, now_ms: u64, tau_ms: f64) {
        if self.observe_at_least(Duration::from_millis(u64::from(stalled_ms)), now_ms, tau_ms) {
            self.mark_suspect();
        }
    }

    /// A Peak EWMA request ended at `now_ms`.
    #[inline]
    pub(crate) fn progressed(&self, now_ms: u64) {
        self.progress.store(now_ms as u32, Ordering::Relaxed);
    }

    /// Starts a request if fewer than `limit` are in flight; `false` (nothing counted) when the
    /// endpoint is full. Exact under any number of threads: the start is a compare-and-swap on
    /// the started count, against a finished count read first (it only grows, so the in-flight
    /// count seen is never below the true one).
    #[inline]
    pub(crate) fn try_start_request(&self, limit: u32) -> bool {
        let mut finished = self.finished.load(Ordering::Relaxed);
        let mut started = self.started.load(Ordering::Relaxed);
        let mut reread = false;
        loop {
            if started.wrapping_sub(finished) >= limit {
                if reread {
                    return false;
                }
                // A request may have ended since `finished` was read: look once more.
                reread = true;
                finished = self.finished.load(Ordering::Relaxed);
                started = self.started.load(Ordering::Relaxed);
                continue;
            }
            match self.started.compare_exchange_weak(
                started,
                started.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => started = actual,
            }
        }
    }

    #[inline]
    pub(crate) fn end_request(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// `ln(estimate(now) × (in_flight + 1)) + now/τ`: compare between endpoints, lower is better.
    #[inline]
    pub(crate) fn peak_ewma_cost(&self) -> f64 {
        let key = f64::from_bits(self.ewma_key.load(Ordering::Relaxed));
        key + ln_count(self.in_flight().saturating_add(1))
    }

    fn store_estimate(&self, estimate_us: f32, now_ms: u64, tau_ms: f64) {
        let estimate_us = estimate_us.max(MIN_ESTIMATE_US);
        self.ewma
            .store(pack(estimate_us, now_ms), Ordering::Relaxed);
        self.ewma_key.store(
            key(estimate_us, now_ms, tau_ms).to_bits(),
            Ordering::Relaxed,
        );
    }

    /// Adds a latency sample taken at `now_ms`.
    #[cfg(test)]
    pub(crate) fn observe(&self, sample: Duration, now_ms: u64, tau_ms: f64) {
        let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        self.observe_nanos(nanos, now_ms, tau_ms);
    }

    /// Adds a latency sample of `sample_ns` nanoseconds taken at `now_ms`.
    #[inline]
    pub(crate) fn observe_nanos(&self, sample_ns: u64, now_ms: u64, tau_ms: f64) {
        // Through `i64`: its conversion to a float is one instruction, that of `u64` several
        // (no latency reaches 2^63 ns).
        let sample_us = (sample_ns.min(i64::MAX as u64) as i64 as f64 / 1e3) as f32;
        self.update_estimate(sample_us, now_ms, tau_ms, false);
    }

    /// Adds what a cancelled request shows: the endpoint took at least `elapsed`. That raises
    /// the estimate when it is above it (a peak), and says nothing otherwise.
    /// `true` when it raised the estimate.
    pub(crate) fn observe_at_least(&self, elapsed: Duration, now_ms: u64, tau_ms: f64) -> bool {
        let elapsed_us = (elapsed.as_secs_f64() * 1e6) as f32;
        self.update_estimate(elapsed_us, now_ms, tau_ms, true)
    }

    /// `false` only when a lower bound was at most the estimate (nothing changed).
    #[inline]
    fn update_estimate(&self, sample_us: f32, now_ms: u64, tau_ms: f64, lower_bound: bool) -> bool {
        let mut current = self.ewma.load(Ordering::Relaxed);
        loop {
            let (value, at) = unpack(current);
            let elapsed = (now_ms as u32).wrapping_sub(at) as f64;
            let w = decay(elapsed / tau_ms) as f32;
            let decayed = value * w;
            let next = if sample_us > decayed {
                sample_us
            } else if lower_bound {
                return false;
            } else {
                value * w + sample_us * (1.0 - w)
            }
            .max(MIN_ESTIMATE_US);
            match self.ewma.compare_exchange_weak(
                current,
                pack(next, now_ms),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.ewma_key
                        .store(key(next, now_ms, tau_ms).to_bits(), Ordering::Relaxed);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// The estimate decayed to `now_ms`.
    pub(crate) fn estimate(&self, now_ms: u64, tau_ms: f64) -> Duration {
        let (value, at) = unpack(self.ewma.load(Ordering::Relaxed));
        let elapsed = (now_ms as u32).wrapping_sub(at) as f64;
        let us = f64::from(value) * (-elapsed / tau_ms).exp();
        Duration::try_from_secs_f64(us.max(0.0) / 1e6).unwrap_or(Duration::MAX)
    }

    /// Re-stamps an idle estimate at `now_ms` with its decayed value. The key stays the same
    /// (up to rounding); this keeps the wrapping millisecond stamp within range.
    pub(crate) fn restamp(&self, now_ms: u64, tau_ms: f64) {
        let current = self.ewma.load(Ordering::Relaxed);
        let (value, at) = unpack(current);
        let elapsed = (now_ms as u32).wrapping_sub(at) as f64;
        let decayed = (f64::from(value) * (-elapsed / tau_ms).exp()) as f32;
        let decayed = decayed.max(MIN_ESTIMATE_US);
        if self
            .ewma
            .compare_exchange(
                current,
                pack(decayed, now_ms),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.ewma_key
                .store(key(decayed, now_ms, tau_ms).to_bits(), Ordering::Relaxed);
        }
    }

    /// Records a success.
    #[inline]
    pub(crate) fn record_success(&self) {
        // Skip the write when there is nothing to reset, to keep the line shared.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns the consecutive failure count including this one.
    #[inline]
    pub(crate) fn record_failure(&self) -> u32 {
        self.interval_failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_consecutive_failures(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Takes the interval's (finished requests, failures) and starts a new interval; `mark` is
    /// the caller's record of the finished count at the last call.
    pub(crate) fn take_interval(&self, mark: &mut u32) -> (u32, u32) {
        let finished = self.finished.load(Ordering::Relaxed);
        let volume = finished.wrapping_sub(*mark);
        *mark = finished;
        let failures = self.interval_failures.swap(0, Ordering::Relaxed);
        (volume.max(failures), failures)
    }

    pub(crate) fn connectivity(&self) -> Connectivity {
        Connectivity::from_u8(state_of(self.connectivity.load(Ordering::Relaxed)))
    }

    /// The connectivity with the number of connector reports so far, for
    /// [`mark_unreachable_since`](Self::mark_unreachable_since).
    #[inline]
    pub(crate) fn connectivity_stamp(&self) -> u32 {
        self.connectivity.load(Ordering::Relaxed)
    }

    /// `true` when the endpoint's connection is down (reported disconnected, or unreachable).
    #[inline]
    pub(crate) fn is_down(&self) -> bool {
        state_of(self.connectivity.load(Ordering::Relaxed)) >= 2
    }

    /// `true` when the connectivity word has a bit of `mask` set ([`AVOID`] or
    /// [`AVOID_IN_PANIC`]): one load and one test on the pick path.
    #[inline]
    pub(crate) fn has_any(&self, mask: u32) -> bool {
        self.connectivity.load(Ordering::Relaxed) & mask != 0
    }

    /// `true` when the endpoint's last request went wrong ([`SUSPECT`]): one load and one test
    /// on the pick path.
    #[inline]
    pub(crate) fn is_suspect(&self) -> bool {
        self.has_any(SUSPECT)
    }

    /// Marks the endpoint [`SUSPECT`]: its last request went wrong.
    pub(crate) fn mark_suspect(&self) {
        // A load first: an endpoint that keeps failing keeps the line shared.
        if !self.has_any(SUSPECT) {
            self.connectivity.fetch_or(SUSPECT, Ordering::Relaxed);
        }
    }

    /// `false` while the endpoint's active health check reports it not serving.
    pub(crate) fn is_serving(&self) -> bool {
        !self.has_any(NOT_SERVING)
    }

    /// A health check's report; `true` when it changed the endpoint's state.
    pub(crate) fn set_serving(&self, serving: bool) -> bool {
        let previous = if serving {
            self.connectivity.fetch_and(!NOT_SERVING, Ordering::Relaxed)
        } else {
            self.connectivity.fetch_or(NOT_SERVING, Ordering::Relaxed)
        };
        (previous & NOT_SERVING == 0) != serving
    }

    /// `true` while the endpoint is passed over after an overloaded answer.
    pub(crate) fn is_shed(&self) -> bool {
        self.has_any(SHED)
    }

    /// Passes the endpoint over until `until_ms` (milliseconds since the epoch), or longer if it
    /// already is; `true` when it was not passed over before, so the background task must
    /// learn when it ends.
    pub(crate) fn shed_until(&self, until_ms: u64) -> bool {
        let until = until_ms as u32;
        let mut current = self.shed_until.load(Ordering::Relaxed);
        let was_shed = self.is_shed();
        // Later deadlines win (wrapping comparison: sheds last far less than 24 days).
        while !was_shed || (until.wrapping_sub(current) as i32) > 0 {
            match self.shed_until.compare_exchange_weak(
                current,
                until,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.connectivity.fetch_or(SHED, Ordering::Relaxed) & SHED == 0
    }

    /// While the endpoint is passed over: the milliseconds since the epoch when that ends.
    pub(crate) fn shed_deadline(&self, now_ms: u64) -> Option<u64> {
        if !self.is_shed() {
            return None;
        }
        let left = self.shed_deadline_raw(now_ms).max(0);
        Some(now_ms.saturating_add_signed(i64::from(left)))
    }

    /// Ends the endpoint's shed period if it is over at `now_ms`; `true` when it ended.
    pub(crate) fn end_shed_if_over(&self, now_ms: u64) -> bool {
        if self
            .shed_deadline(now_ms)
            .is_none_or(|until| until > now_ms)
        {
            return false;
        }
        self.connectivity.fetch_and(!SHED, Ordering::Relaxed);
        // A request may have extended the period between the two steps: keep it then.
        if self.shed_deadline_raw(now_ms) > 0 {
            self.connectivity.fetch_or(SHED, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Milliseconds left of the stored shed deadline (negative when passed), flag or not.
    fn shed_deadline_raw(&self, now_ms: u64) -> i32 {
        self.shed_until
            .load(Ordering::Relaxed)
            .wrapping_sub(now_ms as u32) as i32
    }

    /// Marks the endpoint unreachable after a request that started at `stamp` could not reach
    /// it; `true` when it was not already down. A connector report newer than `stamp` wins: the
    /// request's failure is about a connection that no longer exists.
    pub(crate) fn mark_unreachable_since(&self, stamp: u32) -> bool {
        let mut current = self.connectivity.load(Ordering::Relaxed);
        loop {
            if generation_of(current) != generation_of(stamp) || state_of(current) >= 2 {
                return false;
            }
            let next = (current & !STATE_MASK) | u32::from(UNREACHABLE);
            match self.connectivity.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// `true` when the endpoint is down because a request could not reach it (not because a
    /// connector said so).
    pub(crate) fn is_unreachable(&self) -> bool {
        state_of(self.connectivity.load(Ordering::Relaxed)) == UNREACHABLE
    }

    /// Ends an unreachable period so that the next request probes the endpoint; does nothing if
    /// a connector reported a state meanwhile.
    pub(crate) fn end_unreachable(&self) {
        self.replace_state(UNREACHABLE, Connectivity::Unknown.as_u8());
    }

    /// After a success: the endpoint is no longer [`SUSPECT`], and one nobody reported on is
    /// known to be connected. The common case (connected, not suspect) is one load.
    #[inline]
    pub(crate) fn after_success(&self) {
        let current = self.connectivity.load(Ordering::Relaxed);
        if current & SUSPECT != 0 || state_of(current) == Connectivity::Unknown.as_u8() {
            self.after_first_success();
        }
    }

    #[cold]
    #[inline(never)]
    fn after_first_success(&self) {
        let _ = self
            .connectivity
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                let mut next = current & !SUSPECT;
                if state_of(current) == Connectivity::Unknown.as_u8() {
                    next = (next & !STATE_MASK) | u32::from(Connectivity::Connected.as_u8());
                }
                (next != current).then_some(next)
            });
    }

    /// Replaces state `from` by `to`, keeping the report count; nothing if the state is not
    /// `from`.
    fn replace_state(&self, from: u8, to: u8) {
        let _ = self
            .connectivity
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (state_of(current) == from).then(|| (current & !STATE_MASK) | u32::from(to))
            });
    }

    /// A connector's report: sets the connectivity and counts the report; returns the previous
    /// value.
    pub(crate) fn set_connectivity(&self, connectivity: Connectivity) -> Connectivity {
        let mut current = self.connectivity.load(Ordering::Relaxed);
        loop {
            let generation = generation_of(current).wrapping_add(1) & GENERATION_MASK;
            let next = (generation << GENERATION_SHIFT)
                | (current & (SHED | NOT_SERVING | SUSPECT))
                | u32::from(connectivity.as_u8());
            match self.connectivity.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(previous) => return Connectivity::from_u8(state_of(previous)),
                Err(actual) => current = actual,
            }
        }
    }
}

/// The connectivity word: the state in the low two bits, the [`SHED`], [`NOT_SERVING`] and
/// [`SUSPECT`] flags above them, the number of connector reports (wrapping) above that. A pick
/// reads the state and the flags in one load.
const STATE_MASK: u32 = 0b11;
/// Set while the endpoint is passed over after an overloaded answer (load feedback).
const SHED: u32 = 0b100;
/// Set while the endpoint's active health check reports it not serving.
const NOT_SERVING: u32 = 0b1000;
/// Set while the endpoint's last request went wrong: a failure, an overloaded answer, no
/// connection, or (Peak EWMA) a request that was dropped, or found the endpoint stalled, after
/// longer than its estimate. A success clears it. P2C with Peak EWMA looks at one more candidate
/// when a pair's better member is suspect.
const SUSPECT: u32 = 0b1_0000;
/// Set in both down states (2, disconnected, and 3, unreachable).
const DOWN: u32 = 0b10;
/// What a pick passes over: a connection that is down, an endpoint its health check reports
/// not serving (both until the next table leaves it out), or a shed endpoint.
pub(crate) const AVOID: u32 = DOWN | SHED | NOT_SERVING;
/// In panic mode every endpoint is used, down or not serving; shed ones are still passed over.
pub(crate) const AVOID_IN_PANIC: u32 = SHED;
const GENERATION_SHIFT: u32 = 5;
const GENERATION_MASK: u32 = u32::MAX >> GENERATION_SHIFT;

fn state_of(word: u32) -> u8 {
    (word & STATE_MASK) as u8
}

fn generation_of(word: u32) -> u32 {
    word >> GENERATION_SHIFT
}

/// `e^-x` for `x >= 0`. Samples usually arrive far less than τ apart, where three terms of the
/// series are exact to 1e-9; the exponential is computed only beyond.
#[inline]
fn decay(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x + x * x / 2.0
    } else {
        (-x).exp()
    }
}

fn pack(estimate_us: f32, at_ms: u64) -> u64 {
    (u64::from(estimate_us.to_bits()) << 32) | (at_ms as u32 as u64)
}

fn unpack(packed: u64) -> (f32, u32) {
    (f32::from_bits((packed >> 32) as u32), packed as u32)
}

fn key(estimate_us: f32, at_ms: u64, tau_ms: f64) -> f64 {
    // The estimate is an `f32`: its logarithm in `f32` is as exact as it (and about half the
    // instructions of the `f64` one, on every completed request).
    f64::from(estimate_us.ln()) + at_ms as f64 / tau_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looked_up_logarithms_equal_computed_ones() {
        for n in 1..=200u32 {
            assert_eq!(
                ln_count(n).to_bits(),
                f64::from(n).ln().to_bits(),
                "ln({n})"
            );
        }
        assert_eq!(ln_count(u32::MAX), f64::from(u32::MAX).ln());
        assert_eq!(ln_count(0), f64::NEG_INFINITY);
    }

    const TAU: f64 = 10_000.0;

    fn state(initial_ms: u64) -> EndpointState {
        EndpointState::new(
            "127.0.0.1:1".parse().unwrap(),
            Duration::from_millis(initial_ms),
            0,
            TAU,
        )
    }

    #[test]
    fn the_short_series_matches_the_exponential() {
        for x in [0.0, 1e-6, 1e-4, 9.99e-4, 1e-3, 0.5, 3.0] {
            assert!((decay(x) - (-x).exp()).abs() < 1e-9, "{x}");
        }
    }

    #[test]
    fn clocks_measure_elapsed_time() {
        for kind in [LatencyClock::Tsc, LatencyClock::Tokio] {
            let clock = Clock::new(kind);
            let start = clock.now();
            std::thread::sleep(Duration::from_millis(20));
            let end = clock.now();
            let elapsed = clock.between(start, end);
            assert!(
                elapsed >= Duration::from_millis(15),
                "{kind:?}: {elapsed:?}"
            );
            assert!(
                clock.millis_at(end) >= clock.millis_at(start) + 15,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_tick_scale_converts_as_quanta_does() {
        let clock = quanta::Clock::new();
        let scale = TickScale::of(&clock);
        for ticks in [0, 1, 999, 123_456_789, 1 << 32, 3_000_000_000_000, 1 << 50] {
            let theirs = clock.delta_as_nanos(0, ticks);
            let ours = scale.nanos(ticks);
            // The factor is rounded to 2^-32 ns per tick: at most 1 ns off per 2^32 ticks.
            let tolerance = 1 + (ticks >> 32);
            assert!(
                ours.abs_diff(theirs) <= tolerance,
                "{ticks}: {ours} vs {theirs}"
            );
            let millis = scale.millis(ticks);
            assert!(
                millis.abs_diff(theirs / 1_000_000) <= 1,
                "{ticks}: {millis} ms vs {theirs} ns"
            );
        }
        // A reading before the start (counters of two cores) is no time, never a huge one.
        assert_eq!(ticks_between(10, 5), 0);
        assert_eq!(ticks_between(5, 10), 5);
        assert_eq!(ticks_between(u64::MAX, 2), 3);
    }

    #[test]
    fn peaks_replace_and_lower_samples_average() {
        let s = state(10);
        s.observe(Duration::from_millis(100), 0, TAU);
        assert_eq!(s.estimate(0, TAU), Duration::from_millis(100));
        // A low sample right away barely moves a fresh peak.
        s.observe(Duration::from_millis(1), 1, TAU);
        let e = s.estimate(1, TAU).as_secs_f64();
        assert!(e > 0.099 && e < 0.1, "{e}");
        // After several τ the estimate has decayed close to zero, so a sample replaces it.
        s.observe(Duration::from_millis(5), 50_001, TAU);
        let e = s.estimate(50_001, TAU).as_secs_f64();
        assert!((e - 0.005).abs() < 1e-6, "{e}");
    }

    #[test]
    fn a_cancelled_request_only_raises_the_estimate() {
        let s = state(10);
        s.observe(Duration::from_millis(10), 0, TAU);
        // Given up on after 2 ms: the endpoint took at least that, which says nothing new.
        s.observe_at_least(Duration::from_millis(2), 1, TAU);
        let e = s.estimate(1, TAU).as_secs_f64();
        assert!(e > 0.0099 && e <= 0.010, "{e}");
        // Given up on after a 1 s deadline: a peak.
        s.observe_at_least(Duration::from_secs(1), 2, TAU);
        assert_eq!(s.estimate(2, TAU), Duration::from_secs(1));
    }

    #[test]
    fn a_stalled_endpoint_looks_slow_before_its_requests_end() {
        let s = state(10);
        s.observe(Duration::from_millis(10), 0, TAU);
        // Idle at 1 000 ms: the start is progress.
        s.before_start(1_000, TAU);
        s.start_request();
        // 5 ms later, with that request still in flight: nothing to learn yet.
        s.before_start(1_005, TAU);
        s.start_request();
        assert!(s.estimate(1_005, TAU) <= Duration::from_millis(10));
        // 300 ms without an answer: at least one request has waited that long.
        s.before_start(1_300, TAU);
        s.start_request();
        assert_eq!(s.estimate(1_300, TAU), Duration::from_millis(300));
        // An answer is progress: the next start learns nothing from the wait before it.
        s.end_request();
        s.progressed(1_301);
        s.observe(Duration::from_millis(301), 1_301, TAU);
        s.before_start(1_302, TAU);
        assert!(s.estimate(1_302, TAU) <= Duration::from_millis(302));
        // Idle again, for long: a new start does not take the idle time for a stall.
        s.end_request();
        s.end_request();
        s.before_start(60_000, TAU);
        s.start_request();
        s.before_start(60_001, TAU);
        assert!(s.estimate(60_001, TAU) < Duration::from_millis(301));
    }

    #[test]
    fn suspect_from_what_went_wrong_until_a_success() {
        let s = state(10);
        s.observe(Duration::from_millis(10), 0, TAU);
        assert!(!s.is_suspect());
        s.mark_suspect();
        assert!(s.is_suspect());
        // A connector's report and an unreachable period keep the mark; the state changes.
        s.set_connectivity(Connectivity::Connected);
        assert!(s.is_suspect());
        assert!(!s.is_down());
        s.after_success();
        assert!(!s.is_suspect());
        assert_eq!(s.connectivity(), Connectivity::Connected);
        // A stall longer than the estimate marks it; a shorter one does not.
        s.before_start(1_000, TAU);
        s.start_request();
        s.before_start(1_005, TAU);
        s.start_request();
        assert!(!s.is_suspect());
        s.before_start(1_300, TAU);
        assert!(s.is_suspect());
        s.after_success();
        // The first success of an endpoint nobody reported on also marks it connected.
        let fresh = state(10);
        fresh.mark_suspect();
        fresh.after_success();
        assert!(!fresh.is_suspect());
        assert_eq!(fresh.connectivity(), Connectivity::Connected);
    }

    #[test]
    fn cost_comparison_matches_decayed_estimates() {
        // a: 20 ms sampled at t=0; b: 5 ms sampled at t=30 s. At t=30 s, a has decayed to
        // 20·e^-3 ≈ 1 ms, so a is cheaper although its stored value is larger.
        let (a, b) = (state(1), state(1));
        a.observe(Duration::from_millis(20), 0, TAU);
        b.observe(Duration::from_millis(5), 30_000, TAU);
        assert!(a.peak_ewma_cost() < b.peak_ewma_cost());
        // Pending requests multiply the cost.
        for _ in 0..10 {
            a.start_request();
        }
        assert!(a.peak_ewma_cost() > b.peak_ewma_cost());
    }

    #[test]
    fn restamp_keeps_the_comparison() {
        let s = state(1);
        s.observe(Duration::from_millis(8), 1_000, TAU);
        let before = s.peak_ewma_cost();
        s.restamp(21_000, TAU);
        assert!((s.peak_ewma_cost() - before).abs() < 1e-4);
        let e = s.estimate(21_000, TAU).as_secs_f64();
        assert!((e - 0.008 * (-2.0f64).exp()).abs() < 1e-6);
    }

    #[test]
    fn stamps_wrap_without_harm() {
        let s = state(1);
        let near_wrap = u64::from(u32::MAX) - 500;
        s.observe(Duration::from_millis(8), near_wrap, TAU);
        let after = near_wrap + 1_000;
        let e = s.estimate(after, TAU).as_secs_f64();
        assert!((e - 0.008 * (-0.1f64).exp()).abs() < 1e-6, "{e}");
    }

    #[test]
    fn failures_count_until_a_success() {
        let s = state(1);
        let mut mark = 0;
        for _ in 0..3 {
            s.start_request();
        }
        assert_eq!(s.in_flight(), 3);
        s.end_request();
        assert_eq!(s.record_failure(), 1);
        s.end_request();
        assert_eq!(s.record_failure(), 2);
        s.end_request();
        s.record_success();
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.consecutive_failures(), 0);
        assert_eq!(s.take_interval(&mut mark), (3, 2));
        assert_eq!(s.take_interval(&mut mark), (0, 0));
        assert_eq!(
            s.set_connectivity(Connectivity::Disconnected),
            Connectivity::Unknown
        );
        assert_eq!(s.connectivity(), Connectivity::Disconnected);
    }

    #[test]
    fn a_limit_is_never_exceeded() {
        let s = state(1);
        assert!(s.try_start_request(2));
        assert!(s.try_start_request(2));
        assert!(!s.try_start_request(2), "full");
        assert_eq!(s.in_flight(), 2, "a refused start counts nothing");
        s.end_request();
        assert!(s.try_start_request(2), "room again after an end");
        // Many threads racing for a few places: never more in flight than the limit. The
        // threads count the requests they hold themselves (`in_flight()` read while others
        // start and end requests can overstate: it reads two counters one after the other).
        let s = std::sync::Arc::new(state(1));
        let holding = std::sync::Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = std::sync::Arc::clone(&s);
                let holding = std::sync::Arc::clone(&holding);
                std::thread::spawn(move || {
                    let mut most = 0;
                    for _ in 0..20_000 {
                        if s.try_start_request(3) {
                            most = most.max(holding.fetch_add(1, Ordering::SeqCst) + 1);
                            holding.fetch_sub(1, Ordering::SeqCst);
                            s.end_request();
                        }
                    }
                    most
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap() <= 3);
        }
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn shed_periods_extend_and_end_and_keep_connectivity() {
        let s = state(1);
        assert!(!s.has_any(DOWN) && !s.has_any(SHED));
        assert!(s.shed_until(1_000), "news for the task");
        assert!(
            !s.shed_until(500),
            "already shed: an earlier end changes nothing"
        );
        assert_eq!(s.shed_deadline(0), Some(1_000));
        assert!(!s.shed_until(2_000));
        assert_eq!(s.shed_deadline(100), Some(2_000));
        // A connector report keeps the flag, and the flag leaves the state alone.
        s.set_connectivity(Connectivity::Connected);
        assert!(!s.has_any(DOWN) && s.has_any(SHED));
        assert_eq!(s.connectivity(), Connectivity::Connected);
        let stamp = s.connectivity_stamp();
        assert!(s.mark_unreachable_since(stamp));
        assert!(s.has_any(DOWN) && s.has_any(SHED));
        assert!(!s.end_shed_if_over(1_999));
        assert!(s.end_shed_if_over(2_000));
        assert!(s.has_any(DOWN) && !s.has_any(SHED));
        assert!(s.is_unreachable());
        assert_eq!(s.shed_deadline(2_000), None);
        // Stamps wrap like the estimate's.
        let near_wrap = u64::from(u32::MAX) - 10;
        assert!(s.shed_until(near_wrap + 100));
        assert_eq!(s.shed_deadline(near_wrap), Some(near_wrap + 100));
        assert!(!s.end_shed_if_over(near_wrap + 99));
        assert!(s.end_shed_if_over(near_wrap + 100));
    }

    #[test]
    fn serving_reports_keep_the_rest_of_the_word() {
        let s = state(1);
        assert!(s.is_serving());
        s.set_connectivity(Connectivity::Connected);
        assert!(s.set_serving(false), "a change");
        assert!(!s.set_serving(false), "no change");
        assert!(!s.has_any(DOWN) && !s.has_any(SHED));
        assert!(!s.has_any(AVOID_IN_PANIC) && s.has_any(AVOID));
        s.set_connectivity(Connectivity::Disconnected);
        assert!(
            !s.is_serving(),
            "a connector report keeps the health check's"
        );
        let stamp = s.connectivity_stamp();
        s.set_connectivity(Connectivity::Connected);
        assert!(
            !s.mark_unreachable_since(stamp),
            "reports still count: a newer one wins"
        );
        assert!(s.set_serving(true));
        assert!(s.is_serving());
        assert_eq!(s.connectivity(), Connectivity::Connected);
        assert!(!s.has_any(AVOID));
    }
}
