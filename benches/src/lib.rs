//! Criterion benchmarks for waypost; the benchmarks are in `benches/`, the figures and the
//! commands that produced them in `README.md`.
