//! Load feedback and the per-endpoint concurrency limit, on tokio's paused clock: an endpoint
//! that answers "overloaded" is passed over for the time it asked for (or the default), by
//! every policy, and still used when nothing else is; a full endpoint takes no more requests,
//! and a request that finds every endpoint full fails unsent or waits for room, as configured.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Service, ServiceExt};
use waypost_balance::{
    Balance, BalanceConfig, Classify, ConcurrencyLimit, ErrorKind, LatencyClock, LoadFeedback,
    Outcome, OutlierDetection, Policy,
};
use waypost_discovery::{Endpoint, Publisher};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn publisher(ports: impl IntoIterator<Item = u16>) -> Publisher {
    let mut publisher = Publisher::new("static:///overload");
    publisher.publish(ports.into_iter().map(|p| Endpoint::new(addr(p))));
    publisher
}

/// An answer: the port, and whether the endpoint said it was overloaded (with its pushback).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Answer {
    port: u16,
    overloaded: Option<Option<Duration>>,
}

/// Classifies [`Answer`]s as a server's 503 with or without `Retry-After` would be.
#[derive(Clone, Copy)]
struct ByAnswer;

impl Classify<Answer, Infallible> for ByAnswer {
    fn classify_response(&self, answer: &Answer) -> Outcome {
        match answer.overloaded {
            Some(retry_after) => Outcome::Overloaded { retry_after },
            None => Outcome::Success,
        }
    }

    fn classify_error(&self, _: &Infallible) -> Outcome {
        Outcome::Failure
    }
}

type AnswerService = tower::util::BoxCloneSyncService<(), Answer, Infallible>;

/// Endpoints that answer at once; those in `overloaded` say so, with that pushback.
#[derive(Clone, Default)]
struct Shedding {
    overloaded: Arc<Mutex<BTreeMap<u16, Option<Duration>>>>,
}

impl Shedding {
    fn balance(
        &self,
        publisher: &Publisher,
        config: BalanceConfig,
    ) -> Balance<AnswerService, waypost_balance::NoHashKey, ByAnswer> {
        let shedding = self.clone();
        Balance::builder(publisher.endpoints())
            .config(BalanceConfig {
                seed: Some(11),
                latency_clock: LatencyClock::Tokio,
                // Overloaded answers count as failures: keep ejection out of these tests.
                outlier_detection: OutlierDetection::disabled(),
                ..config
            })
            .classify(ByAnswer)
            .build(move |endpoint: &Endpoint| {
                let port = endpoint.address().port();
                let shedding = shedding.clone();
                AnswerService::new(tower::service_fn(move |()| {
                    let overloaded = shedding.overloaded.lock().unwrap().get(&port).copied();
                    async move { Ok::<_, Infallible>(Answer { port, overloaded }) }
                }))
            })
            .unwrap()
    }

    fn overload(&self, port: u16, retry_after: Option<Duration>) {
        self.overloaded.lock().unwrap().insert(port, retry_after);
    }

    fn recover(&self, port: u16) {
        self.overloaded.lock().unwrap().remove(&port);
    }
}

/// Sends `n` requests one after another; answers per port.
async fn send<K, C>(balance: &mut Balance<AnswerService, K, C>, n: usize) -> BTreeMap<u16, usize>
where
    K: waypost_balance::HashKey<()>,
    C: Classify<Answer, Infallible>,
{
    let mut answers = BTreeMap::new();
    for _ in 0..n {
        let answer = balance.ready().await.unwrap().call(()).await.unwrap();
        *answers.entry(answer.port).or_default() += 1;
    }
    answers
}

/// Policies that read per-endpoint state at pick time, and one that does not.
fn policies() -> [Policy; 4] {
    [
        Policy::p2c_least_pending(),
        Policy::p2c_peak_ewma(),
        Policy::round_robin(),
        Policy::maglev(),
    ]
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_endpoint_is_passed_over_for_its_retry_after() {
    for policy in policies() {
        let name = policy.name();
        let shedding = Shedding::default();
        let publisher = publisher([1, 2, 3]);
        let mut balance = shedding.balance(&publisher, BalanceConfig::with_policy(policy));
        settle().await;
        // Endpoint 2 answers "overloaded, come back in 5 s" to whatever reaches it.
        shedding.overload(2, Some(Duration::from_secs(5)));
        let mut told = false;
        for _ in 0..50 {
            if balance.ready().await.unwrap().call(()).await.unwrap().port == 2 {
                told = true;
                break;
            }
        }
        assert!(
            told,
            "{name}: endpoint 2 was reached and said it is overloaded"
        );
        shedding.recover(2);
        settle().await;
        let during = send(&mut balance, 300).await;
        assert_eq!(during.get(&2), None, "{name}: passed over: {during:?}");
        assert!(
            during.contains_key(&1) && during.contains_key(&3),
            "{name}: {during:?}"
        );

        // The pushback ends: the endpoint takes its share again. (Under Peak EWMA the answer
        // also carried the failure penalty, which decays over tens of seconds: not measured
        // here.)
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = send(&mut balance, 300).await;
        if name != "p2c_peak_ewma" {
            assert!(
                after.get(&2).copied().unwrap_or_default() >= 50,
                "{name}: back after its Retry-After: {after:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_answer_without_a_pushback_holds_for_the_default() {
    let shedding = Shedding::default();
    let publisher = publisher([1, 2]);
    let config = BalanceConfig {
        load_feedback: Some(LoadFeedback {
            default_backoff: Duration::from_secs(2),
            ..LoadFeedback::default()
        }),
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let mut balance = shedding.balance(&publisher, config);
    settle().await;
    shedding.overload(1, None);
    send(&mut balance, 4).await;
    shedding.recover(1);
    settle().await;
    assert_eq!(send(&mut balance, 100).await.get(&1), None);
    tokio::time::sleep(Duration::from_millis(1990)).await;
    assert_eq!(
        send(&mut balance, 100).await.get(&1),
        None,
        "still within the 2 s"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(send(&mut balance, 100).await.get(&1), Some(&50));
}

#[tokio::test(start_paused = true)]
async fn a_pushback_longer_than_the_maximum_is_cut_to_it() {
    let shedding = Shedding::default();
    let publisher = publisher([1, 2]);
    let config = BalanceConfig {
        load_feedback: Some(LoadFeedback {
            default_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
        }),
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let mut balance = shedding.balance(&publisher, config);
    settle().await;
    shedding.overload(1, Some(Duration::from_secs(3600)));
    send(&mut balance, 4).await;
    shedding.recover(1);
    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert_eq!(send(&mut balance, 10).await.get(&1), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(send(&mut balance, 10).await.get(&1), Some(&5));
}

#[tokio::test(start_paused = true)]
async fn when_every_endpoint_is_overloaded_requests_still_go_out() {
    for policy in policies() {
        let name = policy.name();
        let shedding = Shedding::default();
        let publisher = publisher([1, 2, 3]);
        let mut balance = shedding.balance(&publisher, BalanceConfig::with_policy(policy));
        settle().await;
        for port in [1, 2, 3] {
            shedding.overload(port, Some(Duration::from_secs(60)));
        }
        // Every endpoint ends up passed over; requests are still sent, none fails.
        let answers = send(&mut balance, 200).await;
        assert_eq!(answers.values().sum::<usize>(), 200, "{name}: {answers:?}");
        assert_eq!(answers.len(), 3, "{name}: {answers:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_load_feedback_an_overloaded_endpoint_keeps_its_share() {
    let shedding = Shedding::default();
    let publisher = publisher([1, 2]);
    let config = BalanceConfig {
        load_feedback: None,
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let mut balance = shedding.balance(&publisher, config);
    settle().await;
    shedding.overload(1, Some(Duration::from_secs(60)));
    let answers = send(&mut balance, 100).await;
    assert_eq!(answers.get(&1), Some(&50), "{answers:?}");
}

/// Endpoints that hold every request until released, counting their own requests in flight
/// and the most they ever had at once.
#[derive(Clone)]
struct Holding {
    gate: Arc<tokio::sync::Semaphore>,
    in_flight: Arc<Mutex<BTreeMap<u16, Arc<AtomicU32>>>>,
    most: Arc<Mutex<BTreeMap<u16, u32>>>,
}

type PortService = tower::util::BoxCloneSyncService<(), u16, Infallible>;

impl Default for Holding {
    fn default() -> Self {
        Holding {
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            in_flight: Arc::default(),
            most: Arc::default(),
        }
    }
}

impl Holding {
    fn balance(&self, publisher: &Publisher, config: BalanceConfig) -> Balance<PortService> {
        let holding = self.clone();
        Balance::builder(publisher.endpoints())
            .config(BalanceConfig {
                seed: Some(5),
                latency_clock: LatencyClock::Tokio,
                ..config
            })
            .build(move |endpoint: &Endpoint| {
                let port = endpoint.address().port();
                let holding = holding.clone();
                let counter =
                    Arc::clone(holding.in_flight.lock().unwrap().entry(port).or_default());
                PortService::new(tower::service_fn(move |()| {
                    let holding = holding.clone();
                    let counter = Arc::clone(&counter);
                    async move {
                        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        {
                            let mut most = holding.most.lock().unwrap();
                            let most = most.entry(port).or_default();
                            *most = (*most).max(now);
                        }
                        let permit = holding.gate.acquire().await.unwrap();
                        permit.forget();
                        counter.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(port)
                    }
                }))
            })
            .unwrap()
    }

    /// Lets `n` held requests answer.
    fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// The outcome of a request expected to end without waiting: one that is sent and held would
/// otherwise hang the test (a paused clock with nothing to wake).
async fn at_once<T>(request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), request)
        .await
        .expect("the request ended at once")
}

fn limited(policy: Policy, limit: ConcurrencyLimit) -> BalanceConfig {
    BalanceConfig {
        concurrency_limit: Some(limit),
        ..BalanceConfig::with_policy(policy)
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_fleet_fails_requests_unsent_until_one_ends() {
    for policy in policies() {
        let name = policy.name();
        let holding = Holding::default();
        let publisher = publisher([1, 2, 3]);
        let mut balance = holding.balance(&publisher, limited(policy, ConcurrencyLimit::new(2)));
        settle().await;
        // Six requests fill the three endpoints, two each, whatever the policy prefers.
        let held: Vec<_> = (0..6).map(|_| tokio::spawn(balance.call(()))).collect();
        settle().await;
        let in_flight: BTreeMap<u16, u32> = balance
            .in_flight()
            .into_iter()
            .map(|(address, n)| (address.port(), n))
            .collect();
        assert_eq!(
            in_flight,
            BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
            "{name}"
        );
        let error = at_once(balance.call(())).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Overloaded, "{name}: {error}");
        assert_eq!(error.limit(), Some(2));
        assert!(
            balance
                .why_unavailable(Duration::ZERO)
                .is_some_and(|why| why.is_overloaded()),
            "{name}"
        );
        // One answer makes room for one more request.
        holding.release(1);
        settle().await;
        let next = tokio::spawn(balance.ready().await.unwrap().call(()));
        settle().await;
        assert!(
            !next.is_finished(),
            "{name}: sent, and held like the others"
        );
        let error = at_once(balance.call(())).await.unwrap_err();
        assert!(error.is_overloaded(), "{name}: full again");
        holding.release(6);
        next.await.unwrap().unwrap();
        for request in held {
            request.await.unwrap().unwrap();
        }
        let most = holding.most.lock().unwrap().clone();
        assert!(most.values().all(|&n| n <= 2), "{name}: {most:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_take_the_room_a_finished_request_leaves() {
    let holding = Holding::default();
    let publisher = publisher([1, 2]);
    let config = BalanceConfig {
        wait_for_endpoints: Duration::from_secs(5),
        ..limited(
            Policy::p2c_least_pending(),
            ConcurrencyLimit::new(1).waiting(),
        )
    };
    let balance = holding.balance(&publisher, config);
    settle().await;
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(balance.clone().call(())))
        .collect();
    settle().await;
    // Three more wait for room, none is sent.
    let waiting: Vec<_> = (0..3)
        .map(|_| tokio::spawn(balance.clone().call(())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(waiting.iter().all(|request| !request.is_finished()));
    let sent: u32 = holding
        .in_flight
        .lock()
        .unwrap()
        .values()
        .map(|n| n.load(Ordering::SeqCst))
        .sum();
    assert_eq!(
        sent, 2,
        "only as many requests as the limit allows reached the endpoints"
    );
    // Each answer lets one waiting request through.
    holding.release(1);
    settle().await;
    assert_eq!(first.iter().filter(|r| r.is_finished()).count(), 1);
    let sent: u32 = holding
        .in_flight
        .lock()
        .unwrap()
        .values()
        .map(|n| n.load(Ordering::SeqCst))
        .sum();
    assert_eq!(sent, 2, "a waiting request took the room");
    holding.release(4);
    for request in first.into_iter().chain(waiting) {
        request.await.unwrap().unwrap();
    }
    let most = holding.most.lock().unwrap().clone();
    assert_eq!(most, BTreeMap::from([(1, 1), (2, 1)]));
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_for_room_fails_overloaded_at_its_deadline() {
    let holding = Holding::default();
    let publisher = publisher([1]);
    let config = BalanceConfig {
        wait_for_endpoints: Duration::from_secs(2),
        ..limited(Policy::round_robin(), ConcurrencyLimit::new(1).waiting())
    };
    let mut balance = holding.balance(&publisher, config);
    settle().await;
    let _held = tokio::spawn(balance.clone().call(()));
    settle().await;
    let started = tokio::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), balance.call(()))
        .await
        .expect("the request fails at its deadline")
        .unwrap_err();
    assert!(error.is_overloaded(), "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(error.waited(), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_for_room_takes_a_new_endpoint() {
    let holding = Holding::default();
    let mut publisher = publisher([1]);
    let balance = holding.balance(
        &publisher,
        limited(Policy::round_robin(), ConcurrencyLimit::new(1).waiting()),
    );
    settle().await;
    let _held = tokio::spawn(balance.clone().call(()));
    settle().await;
    let waiting = tokio::spawn(balance.clone().call(()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    publisher.publish([Endpoint::new(addr(1)), Endpoint::new(addr(2))]);
    settle().await;
    let in_flight: BTreeMap<u16, u32> = balance
        .in_flight()
        .into_iter()
        .map(|(address, n)| (address.port(), n))
        .collect();
    assert_eq!(in_flight, BTreeMap::from([(1, 1), (2, 1)]));
    holding.release(2);
    assert_eq!(waiting.await.unwrap().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_under_concurrent_clones() {
    let holding = Holding::default();
    let publisher = publisher([1, 2, 3, 4]);
    let config = BalanceConfig {
        // Far beyond what a request needs to get room even on a loaded machine; a lost wake-up
        // would show as a failed request instead of a slow test.
        wait_for_endpoints: Duration::from_secs(60),
        ..limited(
            Policy::p2c_least_pending(),
            ConcurrencyLimit::new(3).waiting(),
        )
    };
    let balance = holding.balance(&publisher, config);
    // A steady trickle of answers while 8 tasks send 100 requests each through their clones:
    // more senders than room (12), so requests keep waiting for room and taking it.
    let releaser = {
        let holding = holding.clone();
        tokio::spawn(async move {
            loop {
                // One answer at a time: requests keep filling the endpoints.
                if holding.gate.available_permits() == 0 {
                    holding.release(1);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let mut balance = balance.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    balance.ready().await.unwrap().call(()).await.unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    releaser.abort();
    let most = holding.most.lock().unwrap().clone();
    assert!(most.values().all(|&n| n <= 3), "{most:?}");
    let seen: HashSet<u16> = most.keys().copied().collect();
    assert_eq!(seen.len(), 4);
}
