//! The Kubernetes source: how fresh its sets are, and what a change costs it.
//!
//! - `kubernetes_freshness`: the time from the fake API server accepting a write to an
//!   EndpointSlice (the rig's `apply` returned) to the new revision being visible through
//!   `Endpoints`. The path is the real one: the rig's watch stream writes the event as a JSON
//!   line over loopback HTTP, kube's client reads and decodes it, kube-runtime's watcher hands it
//!   on, the source converts the slice, merges the Service (10 slices of 100 endpoints) and
//!   publishes. Criterion reports the mean; the run also prints p50/p90/p99 over 1000 changes.
//! - `kubernetes_rebuild`: one slice of a 5000-endpoint Service (50 slices of 100) changes; the
//!   cost of converting it, merging all 50 slices into a new set, and publishing it.
//!
//! ```text
//! cargo bench -p waypost-benches --bench kubernetes
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use waypost_benches::kubernetes::{SERVICE, service, slice, slice_json};
use waypost_discovery::source::kubernetes::{SliceCache, convert_slice};
use waypost_discovery::{Endpoints, PortSelector, Publisher};
use waypost_tests::kube_api::FakeApiServer;

const FRESHNESS_SLICES: usize = 10;
const FRESHNESS_CHANGES: u64 = 1000;

fn http() -> PortSelector {
    PortSelector::Name("http".into())
}

fn rebuild(c: &mut Criterion) {
    let mut cache = SliceCache::new(SERVICE, Some(http()));
    cache.begin_relist();
    for slice in service(50, 100) {
        cache.apply(&slice);
    }
    cache.finish_relist();
    assert_eq!(cache.endpoint_set().len(), 5000);
    // Two versions of slice 17 that differ in one endpoint's readiness.
    let versions = [slice(17, 1700, 100, 0), slice(17, 1700, 100, 1)];

    let mut group = c.benchmark_group("kubernetes_rebuild");
    group.bench_function("convert_one_slice/100", |b| {
        b.iter(|| convert_slice(black_box(&versions[0]), SERVICE, Some(&http())))
    });
    group.bench_function("merge_all_slices/5000", |b| {
        b.iter(|| black_box(cache.endpoint_set()))
    });
    let mut flip = 0;
    group.bench_function("apply_one_slice_and_merge/5000", |b| {
        b.iter(|| {
            flip ^= 1;
            let applied = cache.apply(&versions[flip]);
            assert!(applied.is_changed());
            black_box(cache.endpoint_set())
        })
    });
    let mut publisher = Publisher::new("kubernetes:///api:http");
    let _reader = publisher.endpoints();
    group.bench_function("apply_one_slice_merge_and_publish/5000", |b| {
        b.iter(|| {
            flip ^= 1;
            cache.apply(&versions[flip]);
            black_box(publisher.publish_set(cache.endpoint_set()))
        })
    });
    group.finish();
}

/// One change: flip slice 3, then wait for the new revision. Returns the time from the write
/// being accepted to the revision being visible.
async fn one_change(rig: &FakeApiServer, endpoints: &Endpoints, generation: u64) -> Duration {
    let mut watcher = endpoints.watch();
    let before = watcher.seen_revision();
    // The rig's own timestamp, taken before the write reaches any watch: with three threads on
    // two cores, this thread can be descheduled between the write and a clock read of its own.
    let (_, accepted) = rig.apply_timed(slice_json(3, 300, 100, generation));
    let set = watcher.changed().await.expect("the source is running");
    let elapsed = accepted.elapsed();
    assert!(set.revision() > before);
    if generation.is_multiple_of(200) {
        // Bound the rig's history; open watches are not affected.
        rig.compact();
    }
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn freshness(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (rig, endpoints) = runtime.block_on(async {
        let rig = FakeApiServer::start().await;
        for i in 0..FRESHNESS_SLICES {
            rig.apply(slice_json(i, i * 100, 100, 0));
        }
        let endpoints = rig.source("kubernetes:///api:http").await.spawn();
        let set = endpoints.resolved().await.expect("the first list");
        assert_eq!(set.len(), FRESHNESS_SLICES * 100);
        (rig, endpoints)
    });
    let mut generation = 0;

    let mut samples = Vec::new();
    runtime.block_on(async {
        for _ in 0..FRESHNESS_CHANGES {
            generation += 1;
            samples.push(one_change(&rig, &endpoints, generation).await);
        }
    });
    samples.sort();
    println!(
        "kubernetes_freshness over {} changes ({} endpoints in {} slices): \
         p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        FRESHNESS_SLICES * 100,
        FRESHNESS_SLICES,
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );

    let mut group = c.benchmark_group("kubernetes_freshness");
    group.bench_function("write_to_visible_revision/1000", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    generation += 1;
                    total += one_change(&rig, &endpoints, generation).await;
                }
                total
            })
        })
    });
    group.finish();
    drop(endpoints);
    runtime.block_on(async move { drop(rig) });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    rebuild(&mut criterion);
    freshness(&mut criterion);
    criterion.final_summary();
}
