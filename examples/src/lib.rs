//! Runnable examples of waypost; see the `examples/` directory of this crate.
//!
//! - [`greeter`]: the tonic greeter service and client the `greeter` example runs.
//! - [`cli`]: the `waypost` debug command (`resolve`, `watch`).
//!
//! Examples (`cargo run -p waypost-examples --example NAME`):
//!
//! - `quickstart`: live traffic through a waypost client over an in-process DNS server and
//!   loopback backends while the fleet scales up, slows, crashes and drains; no cluster, no
//!   setup.
//! - `greeter`: the tonic greeter server and client (`--target` takes any target form).
//! - `waypost`: `resolve TARGET` and `watch TARGET`, to see what a target resolves to.

pub mod cli;
pub mod greeter;
