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
/// in-cluster configuration in a pod, else from the local kubeconfig.
pub async fn builder(target: &str) -> Result<waypost::Builder, String> {
    let builder = waypost::Builder::new(target).map_err(|error| {
        let cause = std::error::Error::source(&error)
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        format!("{error}{cause}")
    })?;
    if !matches!(builder.target(), waypost::discovery::Target::Kubernetes(_)) {
        return Ok(builder);
    }
    // The client is made before any source exists, so its error cannot know the target: name
    // the whole target here, as every later discovery message does.
    let client = waypost::discovery::source::kubernetes::default_client()
        .await
        .map_err(|error| {
            let cause = std::error::Error::source(&error)
                .map(|source| format!(" ({source})"))
                .unwrap_or_default();
            format!(
                "discovery of `{target}`: {}: {}{cause}",
                error.kind(),
                error.detail()
            )
        })?;
    Ok(builder.kube_client(client))
}
