//! Cross-crate integration tests: real tonic and hyper servers, DNS servers and the fake
//! Kubernetes API server, all on loopback.
//!
//! One binary for the whole suite: each file below is a module, so the suite links once
//! instead of once per file (less disk, less link time).

mod dns_in_process;
mod dns_unbound;
mod e2e_churn;
mod e2e_health;
mod e2e_hyper;
mod e2e_kubernetes;
mod e2e_load;
mod e2e_metrics;
mod e2e_reasons;
mod e2e_reresolve;
mod e2e_subsetting;
mod e2e_tls;
mod e2e_tonic;
mod e2e_tonic_smoke;
mod kube_api_rig;
mod kubernetes_merge;
mod kubernetes_namespace;
mod kubernetes_shared;
mod kubernetes_watch;
mod partition;
mod static_target;
#[cfg(feature = "xds")]
mod xds;
