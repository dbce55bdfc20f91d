//! Hash quality, computed by one harness for every scheme: how evenly keys spread (max/mean of
//! the endpoints' shares) and what share of keys moves when one endpoint leaves.
//!
//! Schemes: Maglev with the default policy's table sized from N (`maglev::table_size_for`) and
//! with the former fixed M = 65 537, waypost's default ring hash (`Policy::ring_hash()`: 160
//! points per endpoint, as in ketama), the ring sized for a 10% imbalance
//! (`Policy::ring_hash_with(0.1, ..)`), and the same ring with gRPC's default sizing
//! (`min_ring_size` 1 024, `max_ring_size` 4 096: each of N equal endpoints gets `⌈1024/N⌉`
//! points, capped at `4096/N`). Shares are exact (table slots, ring arcs); the moved share is
//! measured over 200 000 random keys.
//!
//! ```text
//! cargo bench -p waypost-benches --bench hash_quality
//! ```

use std::time::Instant;

use waypost_balance::policy::MaglevTable;
use waypost_balance::policy::maglev;
use waypost_balance::policy::ring::{self, Ring};

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", i / 65_536, (i / 256) % 256, i % 256).into_bytes())
        .collect()
}

fn max_over_mean(shares: &[f64]) -> f64 {
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    shares.iter().copied().fold(0.0, f64::max) / mean
}

fn moved(before: impl Fn(u64) -> usize, after: impl Fn(u64) -> usize, gone: usize) -> f64 {
    let samples = 200_000;
    let mut rng = fastrand_seed(42);
    let mut moved = 0;
    for _ in 0..samples {
        let key = rng();
        let old = before(key);
        let mut new = after(key);
        if new >= gone {
            new += 1;
        }
        moved += usize::from(old != new);
    }
    moved as f64 / samples as f64
}

/// A small deterministic generator (splitmix64), so runs compare.
fn fastrand_seed(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and gets a quick run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes: &[usize] = if full {
        &[10, 100, 1000, 10_000]
    } else {
        &[10]
    };
    println!(
        "{:<26} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "scheme", "N", "entries", "max/mean", "moved", "ideal"
    );
    for &n in sizes {
        let all = keys(n);
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let gone = n / 2;
        let rest: Vec<&[u8]> = refs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, k)| *k)
            .collect();
        let ideal = 1.0 / n as f64;

        // The default policy's table, sized from N (kept when one endpoint leaves: the size
        // only shrinks two steps down), and the former fixed default.
        let sized = maglev::table_size_for(n);
        let sizes = [
            (
                "maglev (sized)",
                sized,
                maglev::next_table_size(n - 1, Some(sized)),
            ),
            ("maglev (M = 65 537)", 65_537, 65_537),
        ];
        for (name, size, size_after) in sizes {
            let started = Instant::now();
            let before = MaglevTable::new(&refs, &vec![1; n], size).expect("non-empty");
            let build = started.elapsed();
            let after = MaglevTable::new(&rest, &vec![1; n - 1], size_after).expect("non-empty");
            let shares: Vec<f64> = before
                .counts(n)
                .iter()
                .map(|&c| c as f64 / before.size() as f64)
                .collect();
            println!(
                "{:<26} {:>6} {:>10} {:>10.4} {:>10.4} {:>10.4}   (build {:.2} ms)",
                name,
                n,
                before.size(),
                max_over_mean(&shares),
                moved(|k| before.pick(k), |k| after.pick(k), gone),
                ideal,
                build.as_secs_f64() * 1e3
            );
        }

        // The Maglev paper sizes the table at more than 100 × N; at N = 1 000 the former
        // default 65 537 is only 65 × N, so show larger primes too.
        for size in [100_003u32, 1_000_003] {
            if n != 1000 {
                break;
            }
            let before = MaglevTable::new(&refs, &vec![1; n], size).expect("non-empty");
            let after = MaglevTable::new(&rest, &vec![1; n - 1], size).expect("non-empty");
            let shares: Vec<f64> = before
                .counts(n)
                .iter()
                .map(|&c| c as f64 / before.size() as f64)
                .collect();
            println!(
                "{:<26} {:>6} {:>10} {:>10.4} {:>10.4} {:>10.4}",
                "maglev",
                n,
                before.size(),
                max_over_mean(&shares),
                moved(|k| before.pick(k), |k| after.pick(k), gone),
                ideal,
            );
        }

        let rings = [
            (
                "ring (default, 160 / w)",
                ring::DEFAULT_POINTS_PER_WEIGHT
                    .min(ring::DEFAULT_MAX_RING_SIZE as u64 / n as u64)
                    .max(1),
            ),
            (
                "ring (ring_hash_with 0.1)",
                ring::points_per_weight(n, 0.1, n as u64, ring::DEFAULT_MAX_RING_SIZE),
            ),
            (
                "ring (gRPC default size)",
                1024usize.div_ceil(n).min((4096 / n).max(1)) as u64,
            ),
        ];
        for (name, points) in rings {
            let started = Instant::now();
            let before = Ring::new(&refs, &vec![1; n], points).expect("non-empty");
            let build = started.elapsed();
            let after = Ring::new(&rest, &vec![1; n - 1], points).expect("non-empty");
            println!(
                "{:<26} {:>6} {:>10} {:>10.4} {:>10.4} {:>10.4}   (build {:.2} ms, {} B / endpoint)",
                name,
                n,
                before.len(),
                max_over_mean(&before.shares(n)),
                moved(|k| before.pick(k), |k| after.pick(k), gone),
                ideal,
                build.as_secs_f64() * 1e3,
                before.heap_bytes() / n
            );
        }
    }
}
