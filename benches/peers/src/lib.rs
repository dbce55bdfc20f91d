//! Benchmarks of waypost beside peers whose build needs system tools (pingora-load-balancing
//! needs cmake for zlib-ng). The benchmarks are in `benches/`; their figures and commands are in
//! the `benches/README.md` of the repository.
