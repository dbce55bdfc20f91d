//! Connectivity reports on tokio's paused clock: a request's failure counts only when nothing
//! newer was reported while it ran, and neither calls waiting for an endpoint nor discovery
//! announcing it again wait out a long reconnect backoff.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tower::ServiceExt;
use waypost_balance::{
    Balance, BalanceConfig, Classify, Connectivity, ConnectivityReporter, NoHashKey, Outcome,
    ReconnectBackoff, WithConnectivity,
};
use waypost_discovery::{Endpoint, Publisher};

#[derive(Debug)]
struct NotSent;

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request was not sent")
    }
}

impl std::error::Error for NotSent {}

/// Every error says the request never reached the endpoint.
#[derive(Clone)]
struct ErrorIsUnreachable;

impl Classify<u16, NotSent> for ErrorIsUnreachable {
    fn classify_response(&self, _: &u16) -> Outcome {
        Outcome::Success
    }

    fn classify_error(&self, _: &NotSent) -> Outcome {
        Outcome::Unreachable
    }
}

type BoxService = tower::util::BoxCloneSyncService<(), u16, NotSent>;

/// One endpoint whose requests fail unsent while `down` is set, each after `gate` (when one is
/// armed) lets it finish.
#[derive(Clone, Default)]
struct Endpoint1 {
    down: Arc<AtomicBool>,
    gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    reporter: Arc<Mutex<Option<ConnectivityReporter>>>,
}

impl Endpoint1 {
    fn balance(
        &self,
        config: BalanceConfig,
    ) -> (
        Publisher,
        Balance<BoxService, NoHashKey, ErrorIsUnreachable>,
    ) {
        let mut publisher = Publisher::new("static:///one");
        publisher.publish([Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 1)))]);
        let this = self.clone();
        let balance = Balance::builder(publisher.endpoints())
            .config(BalanceConfig {
                seed: Some(5),
                // Without panic mode, a down endpoint is not picked at all.
                panic_threshold_percent: 0,
                ..config
            })
            .classify(ErrorIsUnreachable)
            .build(WithConnectivity(
                move |_: &Endpoint, reporter: ConnectivityReporter| {
                    *this.reporter.lock().unwrap() = Some(reporter);
                    let this = this.clone();
                    BoxService::new(tower::service_fn(move |_: ()| {
                        let gate = this.gate.lock().unwrap().take();
                        let down = Arc::clone(&this.down);
                        async move {
                            if let Some(gate) = gate {
                                let _ = gate.await;
                            }
                            if down.load(Ordering::SeqCst) {
                                Err(NotSent)
                            } else {
                                Ok(1)
                            }
                        }
                    }))
                },
            ))
            .unwrap();
        (publisher, balance)
    }

    fn report(&self, connectivity: Connectivity) {
        self.reporter
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .report(connectivity);
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_older_than_a_connected_report_is_ignored() {
    let endpoint = Endpoint1::default();
    let (_publisher, balance) = endpoint.balance(BalanceConfig::default());
    endpoint.down.store(true, Ordering::SeqCst);
    let (release, gate) = oneshot::channel();
    *endpoint.gate.lock().unwrap() = Some(gate);

    // A request is on its way; the connector loses its connection and makes a new one.
    let stale = tokio::spawn(balance.clone().oneshot(()));
    settle().await;
    endpoint.report(Connectivity::Disconnected);
    settle().await;
    endpoint.down.store(false, Ordering::SeqCst);
    endpoint.report(Connectivity::Connected);
    settle().await;
    assert_eq!(balance.usable_endpoints(), 1);

    // The old request comes back unsent: it says nothing about the new connection.
    endpoint.down.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    assert!(stale.await.unwrap().is_err());
    endpoint.down.store(false, Ordering::SeqCst);
    settle().await;
    assert_eq!(
        balance.usable_endpoints(),
        1,
        "the connected endpoint stays usable"
    );
    assert_eq!(balance.clone().oneshot(()).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_without_a_newer_report_still_counts() {
    let endpoint = Endpoint1::default();
    let (_publisher, balance) = endpoint.balance(BalanceConfig::default());
    endpoint.report(Connectivity::Connected);
    endpoint.down.store(true, Ordering::SeqCst);
    assert!(balance.clone().oneshot(()).await.is_err());
    settle().await;
    assert_eq!(balance.usable_endpoints(), 0, "unreachable: skipped");
}

#[tokio::test(start_paused = true)]
async fn waiting_calls_probe_an_endpoint_in_a_long_backoff() {
    let endpoint = Endpoint1::default();
    let config = BalanceConfig {
        reconnect_backoff: ReconnectBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
        },
        wait_for_endpoints: Duration::from_secs(600),
        ..BalanceConfig::default()
    };
    let (_publisher, balance) = endpoint.balance(config);
    endpoint.down.store(true, Ordering::SeqCst);
    // Unreachable again at every probe: the backoff grows to minutes.
    for _ in 0..10 {
        assert!(balance.clone().oneshot(()).await.is_err());
        settle().await;
        while balance.usable_endpoints() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(balance.clone().oneshot(()).await.is_err());
    settle().await;
    assert_eq!(balance.usable_endpoints(), 0);

    // The server is back. A call that waits gets it probed within 2 s, not minutes.
    endpoint.down.store(false, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    assert_eq!(balance.clone().oneshot(()).await.unwrap(), 1);
    assert!(
        started.elapsed() <= Duration::from_secs(2),
        "probed after {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn unreachable_endpoints_come_back_at_jittered_times() {
    let mut publisher = Publisher::new("static:///many");
    publisher.publish((1..=8).map(|port| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))));
    let balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(11),
            panic_threshold_percent: 0,
            policy: waypost_balance::Policy::round_robin(),
            ..BalanceConfig::default()
        })
        .classify(ErrorIsUnreachable)
        .build(|_: &Endpoint| {
            BoxService::new(tower::service_fn(|_: ()| async { Err::<u16, _>(NotSent) }))
        })
        .unwrap();
    // Every endpoint refuses its request: all are unreachable from (about) the same instant.
    let mut attempts = 0;
    while balance.usable_endpoints() > 0 {
        attempts += 1;
        assert!(attempts < 100, "every endpoint becomes unreachable");
        let _ = balance.clone().oneshot(()).await;
        settle().await;
    }
    let down_at = tokio::time::Instant::now();
    // They come back after their first backoff (1 s, jittered into [0.5 s, 1 s]), not in step.
    let mut returns = std::collections::BTreeSet::new();
    let mut usable = 0;
    while usable < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = balance.usable_endpoints();
        if now > usable {
            returns.insert(down_at.elapsed().as_millis() / 10);
            usable = now;
        }
        assert!(
            down_at.elapsed() <= Duration::from_millis(1_100),
            "back within the first backoff"
        );
    }
    assert!(
        returns.len() >= 3,
        "returns spread over time: at {returns:?} (x10 ms)"
    );
}

/// A balancer over `n` endpoints whose connectors are the test: their reporters, in address
/// order.
fn with_reporters(
    n: u16,
) -> (
    Publisher,
    Balance<BoxService, NoHashKey, ErrorIsUnreachable>,
    Vec<ConnectivityReporter>,
) {
    let reporters = Arc::new(Mutex::new(Vec::new()));
    let mut publisher = Publisher::new("static:///connectors");
    publisher.publish((1..=n).map(|port| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))));
    let made = Arc::clone(&reporters);
    let balance = Balance::builder(publisher.endpoints())
        .classify(ErrorIsUnreachable)
        .build(WithConnectivity(
            move |_: &Endpoint, reporter: ConnectivityReporter| {
                made.lock().unwrap().push(reporter);
                BoxService::new(tower::service_fn(|_: ()| async { Ok::<u16, NotSent>(1) }))
            },
        ))
        .unwrap();
    let reporters = reporters.lock().unwrap().clone();
    assert_eq!(reporters.len(), usize::from(n));
    (publisher, balance, reporters)
}

/// Spawns a task per reporter that waits for a retry request; the flags say which completed.
fn retry_waiters(reporters: &[ConnectivityReporter]) -> Vec<Arc<AtomicBool>> {
    reporters
        .iter()
        .map(|reporter| {
            let asked = Arc::new(AtomicBool::new(false));
            let (reporter, flag) = (reporter.clone(), Arc::clone(&asked));
            tokio::spawn(async move {
                reporter.retry_requested().await;
                flag.store(true, Ordering::SeqCst);
            });
            asked
        })
        .collect()
}

fn asked(flags: &[Arc<AtomicBool>]) -> Vec<bool> {
    flags.iter().map(|f| f.load(Ordering::SeqCst)).collect()
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_reconnects_asks_the_other_connectors_to_try_again() {
    let (_publisher, _balance, reporters) = with_reporters(3);
    // First connections are no recovery: nobody is asked to hurry.
    let flags = retry_waiters(&reporters);
    settle().await;
    for reporter in &reporters {
        reporter.report(Connectivity::Connected);
    }
    settle().await;
    assert_eq!(asked(&flags), [false, false, false]);

    // An outage: every connection is lost, and the connectors back off.
    for reporter in &reporters {
        reporter.report(Connectivity::Disconnected);
    }
    settle().await;
    assert_eq!(asked(&flags), [false, false, false]);

    // One endpoint is back: the connectors still backing off are told to try again.
    reporters[0].report(Connectivity::Connected);
    settle().await;
    assert_eq!(asked(&flags), [true, true, true]);

    // A detached reporter is never asked.
    let detached = retry_waiters(&[ConnectivityReporter::detached()]);
    reporters[1].report(Connectivity::Connected);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(asked(&detached), [false]);
}

#[tokio::test(start_paused = true)]
async fn a_discovery_answer_asks_the_connectors_to_try_again() {
    let (mut publisher, _balance, reporters) = with_reporters(3);
    let addresses: Vec<Endpoint> = publisher.current().as_slice().to_vec();
    for reporter in &reporters {
        reporter.report(Connectivity::Connected);
    }
    settle().await;

    // Discovery confirms a set whose endpoints are all connected: nobody is asked anything.
    let flags = retry_waiters(&reporters);
    settle().await;
    publisher.publish(addresses.clone());
    settle().await;
    assert_eq!(asked(&flags), [false, false, false]);

    // An outage: the connectors back off. Discovery still announces the same addresses (a DNS
    // refresh with the same records): the connectors are told to try again.
    for reporter in &reporters {
        reporter.report(Connectivity::Disconnected);
    }
    settle().await;
    assert_eq!(asked(&flags), [false, false, false]);
    publisher.publish(addresses);
    settle().await;
    assert_eq!(asked(&flags), [true, true, true]);
}

#[tokio::test(start_paused = true)]
async fn a_discovery_answer_probes_an_endpoint_in_a_long_backoff() {
    let endpoint = Endpoint1::default();
    let config = BalanceConfig {
        reconnect_backoff: ReconnectBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
        },
        wait_for_endpoints: Duration::from_secs(600),
        ..BalanceConfig::default()
    };
    let (mut publisher, balance) = endpoint.balance(config);
    let announced: Vec<Endpoint> = publisher.current().as_slice().to_vec();
    endpoint.down.store(true, Ordering::SeqCst);
    // Unreachable at every probe: the backoff grows to minutes.
    for _ in 0..10 {
        assert!(balance.clone().oneshot(()).await.is_err());
        settle().await;
        while balance.usable_endpoints() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(balance.clone().oneshot(()).await.is_err());
    settle().await;
    assert_eq!(balance.usable_endpoints(), 0);
    // Without an answer from discovery (and with no call waiting) it stays skipped.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(balance.usable_endpoints(), 0, "still backing off");

    // The server is back and discovery announces the address again: with no call waiting,
    // the endpoint is usable again within 2 s, not after minutes.
    endpoint.down.store(false, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    publisher.publish(announced);
    while balance.usable_endpoints() == 0 {
        assert!(
            started.elapsed() <= Duration::from_secs(2),
            "still skipped after the answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(balance.clone().oneshot(()).await.unwrap(), 1);
}
