//! Memory per endpoint of the Kubernetes source's state and of the set it publishes, for a
//! 5000-endpoint Service (50 slices of 100 endpoints, each endpoint with zone, node, hostname
//! and one zone hint), counted by an instrumented global allocator.
//!
//! - the slice cache: the converted contributions of all slices (the source keeps these, not
//!   the EndpointSlice objects);
//! - the published set: what a new revision adds on top of the cache (the endpoints share their
//!   attribute blocks with the cache);
//! - for comparison, the EndpointSlice objects as k8s-openapi decodes them, which a
//!   reflector-style cache would keep.
//!
//! ```text
//! cargo bench -p waypost-benches --bench kubernetes_memory
//! ```

use std::alloc::System;
use std::hint::black_box;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use waypost_benches::kubernetes::{SERVICE, service};
use waypost_discovery::source::kubernetes::SliceCache;
use waypost_discovery::{Endpoint, PortSelector};

#[path = "support/memory.rs"]
mod memory;
use memory::live_bytes;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SLICES: usize = 50;
const PER_SLICE: usize = 100;
const ENDPOINTS: usize = SLICES * PER_SLICE;

fn per_endpoint(bytes: isize) -> f64 {
    bytes as f64 / ENDPOINTS as f64
}

fn main() {
    // Benchmark harness flags (`--bench`) are accepted and ignored: this run only counts.
    let region = Region::new(GLOBAL);
    let slices = service(SLICES, PER_SLICE);
    let slice_bytes = live_bytes(&region);

    let region = Region::new(GLOBAL);
    let mut cache = SliceCache::new(SERVICE, Some(PortSelector::Name("http".into())));
    cache.begin_relist();
    for slice in &slices {
        cache.apply(slice);
    }
    cache.finish_relist();
    let cache_bytes = live_bytes(&region);

    let region = Region::new(GLOBAL);
    let set = cache.endpoint_set();
    let set_bytes = live_bytes(&region);
    assert_eq!(set.len(), ENDPOINTS);

    // A second revision while the first is still held (readers hold a set briefly).
    let region = Region::new(GLOBAL);
    let second = cache.endpoint_set();
    let second_bytes = live_bytes(&region);

    println!("kubernetes_memory: a Service of {ENDPOINTS} endpoints in {SLICES} slices");
    println!(
        "  size_of::<Endpoint>()                          {:>8} bytes",
        std::mem::size_of::<Endpoint>()
    );
    println!(
        "  slice cache (converted endpoints, attributes)  {:>8.1} bytes/endpoint",
        per_endpoint(cache_bytes)
    );
    println!(
        "  published set, on top of the cache             {:>8.1} bytes/endpoint",
        per_endpoint(set_bytes)
    );
    println!(
        "  each further revision held at once             {:>8.1} bytes/endpoint",
        per_endpoint(second_bytes)
    );
    println!(
        "  cache + one published set                      {:>8.1} bytes/endpoint",
        per_endpoint(cache_bytes + set_bytes)
    );
    println!(
        "  for comparison: the decoded EndpointSlices     {:>8.1} bytes/endpoint",
        per_endpoint(slice_bytes)
    );
    black_box((slices, cache, set, second));
}
