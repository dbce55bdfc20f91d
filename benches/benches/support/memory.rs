//! What the memory benchmarks share (`balance_memory`, `kubernetes_memory`, `fleet`), each of
//! which installs the instrumented allocator as its global allocator.

use std::alloc::System;

use stats_alloc::Region;

/// Bytes still allocated at the end of the region.
pub(crate) fn live_bytes(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}
