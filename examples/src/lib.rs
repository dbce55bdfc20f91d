//! Runnable examples of waypost; see the `examples/` directory of this crate.
//!
//! - [`greeter`]: the tonic greeter service and client the `greeter` example runs.
//!
//! Examples (`cargo run -p waypost-examples --example NAME`):
//!
//! - `quickstart`: live traffic through a waypost client over an in-process DNS server and
//!   loopback backends while the fleet scales up, slows, crashes and drains; no cluster, no
//!   setup.
//! - `greeter`: the tonic greeter server and client (`--target` takes any target form).
//!
//! The `waypost` command (`resolve`, `watch`, `status`) is a binary of the `waypost` crate
//! (`cargo install waypost --features cli`); its tests against the in-process DNS server live in
//! this crate's `tests/cli.rs`.

pub mod greeter;

/// A [`waypost::Builder`] for `target`. A `kubernetes:///` target gets a client from the
/// in-cluster configuration in a pod, else from the local kubeconfig (the `waypost` command's
/// own [`waypost::cli::builder`]).
pub async fn builder(target: &str) -> Result<waypost::Builder, String> {
    waypost::cli::builder(target, None).await
}
