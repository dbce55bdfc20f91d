//! Integration tests of waypost-balance: placement golden vectors, Maglev table sizing, health,
//! the HTTP service, metrics, load feedback and concurrency limits, snapshots, stale reports, and
//! failing and stalled endpoints under Peak EWMA.
//!
//! One binary for the whole suite: each file below is a module, so the suite links once
//! instead of once per file (less disk, less link time).

mod golden;
mod health;
mod http;
mod maglev_size;
mod metrics;
mod overload;
mod snapshot;
mod stale_reports;
mod unwell;
