//! The cost of reading the current endpoint set: waypost's `Endpoints` handle (an `ArcSwap`)
//! and its per-owner `CachedEndpoints`, against an `RwLock<Arc<EndpointSet>>` and a
//! `Mutex<Arc<EndpointSet>>`.
//!
//! Each read takes the current set and looks at it (its length and first address), as a request
//! does before it picks an endpoint. Variants: one reader thread; two reader threads; one reader
//! while a writer thread publishes a new set every 5 µs (200 000 publications a second, far more
//! than any discovery source makes; the writer spins between publications, so it occupies the
//! second core in every variant alike); and one reader while the writer publishes back to back.
//! Every writer clones a 100-endpoint set per publication, as a source builds a new snapshot;
//! `Publisher::publish_set` also diffs the sets and updates the health, so it publishes less
//! often than the lock writers when busy. Reported times are per read, per reader thread.
//!
//! ```text
//! cargo bench -p waypost-benches --bench endpoints_read
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use waypost_discovery::{CachedEndpoints, Endpoint, EndpointSet, Endpoints, Publisher};

const SET_SIZE: u16 = 100;
const WRITE_PERIOD: Duration = Duration::from_micros(5);

fn set(offset: u16) -> EndpointSet {
    EndpointSet::new(
        (0..SET_SIZE).map(|i| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 1000 + offset + i)))),
    )
}

/// One way of sharing the current set between a writer and readers.
trait Shared: Send + Sync + 'static {
    /// What one reader thread holds.
    type Reader: Read + Send + 'static;
    fn reader(&self) -> Self::Reader;
    fn write(&self, set: &Arc<EndpointSet>);
}

trait Read {
    fn read(&mut self) -> (usize, SocketAddr);
}

struct EndpointsShared {
    endpoints: Endpoints,
    // Serializes the bench's own writer calls; readers never take it.
    publisher: Mutex<Publisher>,
}

impl Shared for EndpointsShared {
    type Reader = Endpoints;

    fn reader(&self) -> Endpoints {
        self.endpoints.clone()
    }

    fn write(&self, set: &Arc<EndpointSet>) {
        self.publisher
            .lock()
            .unwrap()
            .publish_set(EndpointSet::clone(set));
    }
}

impl Read for Endpoints {
    #[inline]
    fn read(&mut self) -> (usize, SocketAddr) {
        let set = self.load();
        (set.len(), set[0].address())
    }
}

struct CachedShared(EndpointsShared);

impl Shared for CachedShared {
    type Reader = CachedEndpoints;

    fn reader(&self) -> CachedEndpoints {
        self.0.endpoints.cached()
    }

    fn write(&self, set: &Arc<EndpointSet>) {
        self.0.write(set)
    }
}

impl Read for CachedEndpoints {
    #[inline]
    fn read(&mut self) -> (usize, SocketAddr) {
        let set = self.load();
        (set.len(), set[0].address())
    }
}

struct RwLockShared(Arc<RwLock<Arc<EndpointSet>>>);

impl Shared for RwLockShared {
    type Reader = Arc<RwLock<Arc<EndpointSet>>>;

    fn reader(&self) -> Self::Reader {
        Arc::clone(&self.0)
    }

    fn write(&self, set: &Arc<EndpointSet>) {
        // Like a source, build the new snapshot before taking the lock.
        let next = Arc::new(EndpointSet::clone(set));
        *self.0.write().unwrap() = next;
    }
}

impl Read for Arc<RwLock<Arc<EndpointSet>>> {
    #[inline]
    fn read(&mut self) -> (usize, SocketAddr) {
        let set = RwLock::read(self).unwrap();
        (set.len(), set[0].address())
    }
}

struct MutexShared(Arc<Mutex<Arc<EndpointSet>>>);

impl Shared for MutexShared {
    type Reader = Arc<Mutex<Arc<EndpointSet>>>;

    fn reader(&self) -> Self::Reader {
        Arc::clone(&self.0)
    }

    fn write(&self, set: &Arc<EndpointSet>) {
        let next = Arc::new(EndpointSet::clone(set));
        *self.0.lock().unwrap() = next;
    }
}

impl Read for Arc<Mutex<Arc<EndpointSet>>> {
    #[inline]
    fn read(&mut self) -> (usize, SocketAddr) {
        let set = Mutex::lock(self).unwrap();
        (set.len(), set[0].address())
    }
}

#[derive(Clone, Copy)]
enum Writer {
    None,
    /// One publication every [`WRITE_PERIOD`].
    Paced,
    /// Publications back to back.
    Busy,
}

/// Runs `iters` reads on each of `readers` threads, with an optional writer publishing
/// alternating sets every [`WRITE_PERIOD`] until the readers finish; returns the slowest
/// reader's time.
fn run<S: Shared>(shared: &Arc<S>, readers: usize, writer: Writer, iters: u64) -> Duration {
    let period = match writer {
        Writer::None => None,
        Writer::Paced => Some(WRITE_PERIOD),
        Writer::Busy => Some(Duration::ZERO),
    };
    let writer = period.is_some();
    let barrier = Arc::new(Barrier::new(readers + 1 + usize::from(writer)));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = writer.then(|| {
        let (shared, barrier, stop) = (Arc::clone(shared), Arc::clone(&barrier), Arc::clone(&stop));
        thread::spawn(move || {
            let sets = [Arc::new(set(0)), Arc::new(set(1))];
            barrier.wait();
            let mut i = 0usize;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                shared.write(&sets[i & 1]);
                i += 1;
                next += period.unwrap_or_default();
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            }
        })
    });
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let mut reader = shared.reader();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(reader.read());
                }
                start.elapsed()
            })
        })
        .collect();
    barrier.wait();
    let slowest = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .max()
        .unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    slowest
}

fn variants<S: Shared>(c: &mut Criterion, name: &str, shared: S) {
    let shared = Arc::new(shared);
    let mut group = c.benchmark_group("endpoints_read");
    for (label, readers, writer) in [
        ("1 reader", 1, Writer::None),
        ("2 readers", 2, Writer::None),
        ("1 reader + paced writer", 1, Writer::Paced),
        ("1 reader + busy writer", 1, Writer::Busy),
    ] {
        group.bench_function(format!("{name}/{label}"), |b| {
            b.iter_custom(|iters| run(&shared, readers, writer, iters))
        });
    }
    group.finish();
}

fn endpoints_shared() -> EndpointsShared {
    let mut publisher = Publisher::new("bench");
    publisher.publish_set(set(0));
    EndpointsShared {
        endpoints: publisher.endpoints(),
        publisher: Mutex::new(publisher),
    }
}

fn endpoints_read(c: &mut Criterion) {
    variants(c, "Endpoints::load", endpoints_shared());
    variants(c, "CachedEndpoints::load", CachedShared(endpoints_shared()));
    variants(
        c,
        "RwLock<Arc<_>>",
        RwLockShared(Arc::new(RwLock::new(Arc::new(set(0))))),
    );
    variants(
        c,
        "Mutex<Arc<_>>",
        MutexShared(Arc::new(Mutex::new(Arc::new(set(0))))),
    );
}

criterion_group!(benches, endpoints_read);
criterion_main!(benches);
