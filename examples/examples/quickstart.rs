//! The quickstart: discovery without a cluster.
//!
//! Parses a `static:///` target (an embedded default, or the first argument), publishes it as the
//! first endpoint set, then plays the changes a Kubernetes rolling update makes: a new pod
//! becomes ready, an old one terminates and leaves, the fleet scales up, a discovery failure
//! leaves the set untouched. A watcher prints every revision as it arrives, while a reader shows
//! what a request would see at that moment through the lock-free handle.
//!
//! ```text
//! cargo run -p waypost-examples --example quickstart
//! cargo run -p waypost-examples --example quickstart -- static:///127.0.0.1:9001,127.0.0.1:9002
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use waypost::discovery::{
    DiscoveryError, DiscoveryErrorKind, Endpoint, EndpointSet, Endpoints, Publisher, Readiness,
    StaticTarget,
};

const DEFAULT_TARGET: &str = "static:///127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003";

#[tokio::main]
async fn main() -> ExitCode {
    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_TARGET.to_owned());
    let target: StaticTarget = match input.parse() {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("target: {target}\n");

    let mut publisher = Publisher::new(target.to_string());
    let endpoints = publisher.endpoints();
    let mut watcher = endpoints.watch();

    let printer = tokio::spawn(async move {
        let mut previous = EndpointSet::empty();
        let mut revisions = Vec::new();
        while let Ok(set) = watcher.changed().await {
            print_change(&previous, &set);
            revisions.push(set.revision());
            previous = EndpointSet::clone(&set);
        }
        revisions
    });

    let initial: Vec<Endpoint> = target
        .addresses()
        .iter()
        .map(|&address| Endpoint::new(address).with_zone("zone-a"))
        .collect();
    let mut current = initial.clone();
    let pause = Duration::from_millis(150);

    step("initial set", &mut publisher, &current, &endpoints, pause).await;

    let new_pod = next_address(&current);
    current.push(Endpoint::new(new_pod).with_zone("zone-b"));
    step(
        "rolling update: a new pod is ready",
        &mut publisher,
        &current,
        &endpoints,
        pause,
    )
    .await;

    let old_pod = current[0].address();
    current[0] = current[0]
        .clone()
        .with_readiness(Readiness::Terminating)
        .with_weight(0);
    step(
        &format!("rolling update: {old_pod} terminates (weight 0, finishing its requests)"),
        &mut publisher,
        &current,
        &endpoints,
        pause,
    )
    .await;

    current.remove(0);
    step(
        &format!("rolling update: {old_pod} is gone"),
        &mut publisher,
        &current,
        &endpoints,
        pause,
    )
    .await;

    for _ in 0..2 {
        let address = next_address(&current);
        current.push(Endpoint::new(address).with_zone("zone-b").with_weight(2));
    }
    step(
        "scale up by two, with weight 2",
        &mut publisher,
        &current,
        &endpoints,
        pause,
    )
    .await;

    println!("--- discovery fails: the last good set keeps serving");
    publisher.report_failure(DiscoveryError::new(
        publisher.target_arc(),
        DiscoveryErrorKind::Resolve,
        "no answer from the name server (simulated)",
    ));
    tokio::time::sleep(pause).await;
    let health = endpoints.health();
    println!(
        "    health: {:?}, {} failure(s) in a row, set still has {} endpoints\n",
        health.status(),
        health.consecutive_failures(),
        endpoints.load().len()
    );

    step(
        "discovery recovers with the same answer (no new revision)",
        &mut publisher,
        &current,
        &endpoints,
        pause,
    )
    .await;

    let final_revision = endpoints.revision();
    drop(publisher);
    let revisions = printer.await.expect("the printer task does not panic");

    // The watcher may skip intermediate revisions but must end on the final one.
    let ok = revisions.last() == Some(&final_revision)
        && revisions.windows(2).all(|pair| pair[0] < pair[1])
        && endpoints.health().is_current();
    if ok {
        println!(
            "ok: the watcher saw revisions {revisions:?}, ending on the final revision {final_revision}"
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("unexpected: watcher saw {revisions:?}, final revision {final_revision}");
        ExitCode::FAILURE
    }
}

async fn step(
    title: &str,
    publisher: &mut Publisher,
    current: &[Endpoint],
    endpoints: &Endpoints,
    pause: Duration,
) {
    println!("--- {title}");
    let publication = publisher.publish(current.iter().cloned());
    tokio::time::sleep(pause).await;
    let set = endpoints.load();
    println!(
        "    a request now reads revision {} with {} endpoints ({}; publication: {:?})\n",
        set.revision(),
        set.len(),
        if set.revision() == publication.revision() {
            "up to date"
        } else {
            "stale"
        },
        publication,
    );
}

fn print_change(previous: &EndpointSet, set: &EndpointSet) {
    let diff = previous.diff(set);
    println!(
        "    watcher: revision {} (+{} -{} ~{})",
        set.revision(),
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len()
    );
    println!(
        "      {:<22} {:<8} {:<12} {:>6}",
        "address", "zone", "state", "weight"
    );
    for endpoint in set.iter() {
        println!(
            "      {:<22} {:<8} {:<12} {:>6}",
            endpoint.address().to_string(),
            endpoint.zone().unwrap_or("-"),
            endpoint.readiness().to_string(),
            endpoint.weight()
        );
    }
}

fn next_address(current: &[Endpoint]) -> SocketAddr {
    let highest = current
        .iter()
        .map(Endpoint::address)
        .max()
        .expect("the set is never empty here");
    SocketAddr::new(highest.ip(), highest.port().wrapping_add(1).max(1))
}
