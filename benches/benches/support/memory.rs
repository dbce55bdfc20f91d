//! What the memory benchmarks share (`balance_memory`, `kubernetes_memory`, `fleet`), each of
//! which installs the instrumented allocator as its global allocator.

use std::alloc::System;

use stats_alloc::Region;

/// Bytes still allocated at the end of the region.
///
/// `stats_alloc` already adds a reallocation's growth to `bytes_allocated` (and its shrinking
/// to `bytes_deallocated`); its `bytes_reallocated` is the same net change again, so it is not
/// added here.
pub(crate) fn live_bytes(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}
