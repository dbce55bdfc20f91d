//! End to end: tonic's generated health client through a waypost channel, real tonic servers on
//! loopback, discovery through the in-process DNS server or a static list.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::balance::{BalanceConfig, LatencyClock, OutlierDetection, Policy};
use waypost::tonic::Channel;
use waypost_tests::dns::server::DnsServer;
use waypost_tests::dns::{PATIENCE, options_for, wait_until};
use waypost_tests::grpc::{GrpcBackend, answered_by};
use waypost_tests::load::Load;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// One call: the address of the backend that answered, or the status text.
async fn check(channel: Channel) -> Result<SocketAddr, String> {
    let mut client = HealthClient::new(channel);
    match client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(response) => answered_by(&response).ok_or_else(|| "no x-backend".to_owned()),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

fn load(channel: &Channel, callers: usize) -> Load {
    let channel = channel.clone();
    Load::start(callers, Duration::ZERO, move || check(channel.clone()))
}

/// Backends on 127.0.0.`first`.. sharing one port, as pods behind a headless Service do.
async fn backends_on_one_port(ips: &[u8]) -> (u16, Vec<GrpcBackend>) {
    let first = GrpcBackend::start_on(SocketAddr::new(ip(ips[0]), 0))
        .await
        .unwrap();
    let port = first.port();
    let mut backends = vec![first];
    for &last in &ips[1..] {
        backends.push(
            GrpcBackend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    (port, backends)
}

const NAME: &str = "greeter.prod.svc.cluster.local";

fn dns_channel(server: &DnsServer, port: u16, config: BalanceConfig) -> Channel {
    waypost::Builder::new(&format!("dns:///{NAME}.:{port}"))
        .unwrap()
        .dns_options(options_for(server.address()))
        .balance_config(config)
        .tonic_channel()
        .unwrap()
}

async fn wait_for_set(channel: &Channel, what: &str, expected: &[SocketAddr]) {
    let mut expected = expected.to_vec();
    expected.sort();
    wait_until(channel.endpoints(), PATIENCE, what, |current, _| {
        current == expected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_under_load_fails_no_call() {
    let server = DnsServer::start().await.unwrap();
    let (port, mut old) = backends_on_one_port(&[2, 3, 4]).await;
    server.set_addresses(NAME, &[ip(2), ip(3), ip(4)], 1);
    let channel = dns_channel(&server, port, BalanceConfig::default());
    channel.endpoints().resolved().await.unwrap();

    let load = load(&channel, 4);
    load.wait_for(200).await;
    let mut current: Vec<u8> = vec![2, 3, 4];
    let mut new = Vec::new();
    for (step, replacement) in [5u8, 6, 7].into_iter().enumerate() {
        // The new pod is ready: it starts, then enters discovery.
        let backend = GrpcBackend::start_on(SocketAddr::new(ip(replacement), port))
            .await
            .unwrap();
        server.add_address(NAME, ip(replacement), 1);
        current.push(replacement);
        let set: Vec<SocketAddr> = current
            .iter()
            .map(|&i| SocketAddr::new(ip(i), port))
            .collect();
        wait_for_set(&channel, "the new pod in the set", &set).await;
        new.push(backend);

        // The old pod terminates: it leaves discovery, keeps serving what it has, then shuts
        // down gracefully.
        let leaving = old.remove(0);
        let leaving_ip = ip(2 + step as u8);
        server.remove_address(NAME, leaving_ip);
        current.retain(|&i| ip(i) != leaving_ip);
        let set: Vec<SocketAddr> = current
            .iter()
            .map(|&i| SocketAddr::new(ip(i), port))
            .collect();
        wait_for_set(&channel, "the old pod out of the set", &set).await;
        // The balancer takes the new set in on its own task: until it has, calls still go to
        // the old pod, as they would to a pod that is still in its preStop sleep.
        let leaving_address = leaving.address();
        tokio::time::timeout(PATIENCE, async {
            while channel
                .in_flight()
                .iter()
                .any(|(address, _)| *address == leaving_address)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the balancer drops the old pod");
        load.wait_for(100).await;
        leaving.shutdown().await;
        load.wait_for(100).await;
    }
    let tally = load.stop().await;
    // The callers completed at least 800 calls (the waits above count them), however slowly the
    // machine ran them: none may fail.
    assert_eq!(tally.failed, 0, "failed calls: {:?}", tally.failures);
    for backend in &new {
        assert!(backend.requests() > 0, "{} took calls", backend.address());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_only_calls_in_flight() {
    let mut backends = waypost_tests::grpc::start_many(3).await.unwrap();
    for backend in &backends {
        backend.set_latency(Duration::from_millis(20));
    }
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .tonic_channel()
        .unwrap();
    let callers = 6;
    let load = load(&channel, callers);
    load.wait_for(100).await;
    backends.remove(0).kill();
    load.wait_for(100).await;
    let during = load.take();
    assert!(
        during.failed <= callers as u64,
        "only the {callers} calls that can be in flight may fail: {:?}",
        during.failures
    );
    load.wait_for(300).await;
    let after = load.stop().await;
    assert_eq!(
        after.failed, 0,
        "new calls avoid the killed backend: {:?}",
        after.failures
    );
    assert_eq!(after.answers.len(), 2);
}

// One thread: round-robin keeps one sequence per thread, and a task that moved between worker
// threads would see two interleaved sequences instead of every fourth call on each backend.
// Paused clock: the 2 s ejection lasts until the test lets time pass, not until a loaded
// machine has spent 2 s on the calls (which then met the backend back, still refusing).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unavailable_backend_is_ejected_and_returns() {
    let backends = waypost_tests::grpc::start_many(4).await.unwrap();
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let config = BalanceConfig {
        outlier_detection: OutlierDetection {
            base_ejection_time: Duration::from_secs(2),
            max_ejection_percent: 25,
            ..OutlierDetection::default()
        },
        // Load feedback would pass the refusing backend over after its first answer, and it
        // would take five seconds of one request each to reach five failures: this test is
        // about ejection alone (e2e_load.rs tests load feedback).
        load_feedback: None,
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .balance_config(config)
        .tonic_channel()
        .unwrap();
    let failing = &backends[0];
    failing.set_unavailable(true);

    // Round-robin sends it every fourth call until five in a row failed.
    let mut failures = 0;
    for _ in 0..400 {
        if check(channel.clone()).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 5,
        "ejected after five consecutive UNAVAILABLE answers"
    );
    assert_eq!(channel.usable_endpoints(), 3);
    let during_ejection = failing.requests();

    // Healthy again; after the ejection time it takes its share again.
    failing.set_unavailable(false);
    tokio::time::timeout(PATIENCE, async {
        while channel.usable_endpoints() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the backend returns after its ejection time");
    let mut back = 0;
    for _ in 0..400 {
        if check(channel.clone()).await.unwrap() == failing.address() {
            back += 1;
        }
    }
    assert_eq!(during_ejection, 5, "no call reached it while ejected");
    assert_eq!(back, 100, "a full share after it returned");
}

// The paused clock drives the backends' latencies and the balancer measures them on tokio's clock
// (`LatencyClock::Tokio`): the latencies it compares are exactly 2 ms and 60 ms, however busy the
// machine is. On the wall clock a loaded machine adds tens of milliseconds to every call and
// blurs the difference under test.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn peak_ewma_sends_a_slow_backend_less_than_round_robin() {
    let backends = waypost_tests::grpc::start_many(4).await.unwrap();
    for backend in &backends {
        backend.set_latency(Duration::from_millis(2));
    }
    let slow = backends[0].address();
    backends[0].set_latency(Duration::from_millis(60));
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut shares = Vec::new();
    for policy in [Policy::round_robin(), Policy::p2c_peak_ewma()] {
        let config = BalanceConfig {
            latency_clock: LatencyClock::Tokio,
            ..BalanceConfig::with_policy(policy)
        };
        let channel = waypost::Builder::new(&target)
            .unwrap()
            .balance_config(config)
            .tonic_channel()
            .unwrap();
        let load = load(&channel, 8);
        load.wait_for(800).await;
        let tally = load.stop().await;
        assert_eq!(tally.failed, 0, "{:?}", tally.failures);
        shares.push(tally.share(slow));
    }
    let (round_robin, peak_ewma) = (shares[0], shares[1]);
    assert!(
        round_robin > 0.2,
        "round-robin sends it its quarter of the calls: {round_robin}"
    );
    assert!(
        peak_ewma < round_robin / 4.0,
        "Peak EWMA sends it far less: {peak_ewma} vs round-robin {round_robin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_two_to_six_uses_the_new_backends_after_one_refresh() {
    let server = DnsServer::start().await.unwrap();
    let (port, backends) = backends_on_one_port(&[2, 3, 4, 5, 6, 7]).await;
    server.set_addresses(NAME, &[ip(2), ip(3)], 1);
    let channel = dns_channel(&server, port, BalanceConfig::default());
    channel.endpoints().resolved().await.unwrap();
    let load = load(&channel, 4);
    load.wait_for(100).await;
    assert_eq!(load.take().answers.len(), 2);

    for last in 4..=7 {
        server.add_address(NAME, ip(last), 1);
    }
    // One refresh: the TTL (1 s) plus jitter, with slack for a slow machine.
    tokio::time::timeout(Duration::from_millis(1100) + PATIENCE, async {
        while channel.usable_endpoints() < 6 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the new backends are discovered within one refresh");
    load.take();
    load.wait_for(600).await;
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{:?}", tally.failures);
    for backend in &backends {
        assert!(
            tally.answers.contains_key(&backend.address()),
            "{} took calls: {:?}",
            backend.address(),
            tally.answers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_gone_fails_with_the_reason_then_recovers() {
    let server = DnsServer::start().await.unwrap();
    let (port, _backends) = backends_on_one_port(&[2, 3]).await;
    server.set_addresses(NAME, &[ip(2), ip(3)], 1);
    let config = BalanceConfig {
        wait_for_endpoints: Duration::from_millis(500),
        ..BalanceConfig::default()
    };
    let channel = dns_channel(&server, port, config);
    channel.endpoints().resolved().await.unwrap();
    assert!(check(channel.clone()).await.is_ok());

    server.remove(NAME);
    wait_until(
        channel.endpoints(),
        PATIENCE,
        "an empty set",
        |current, _| current.is_empty(),
    )
    .await;
    // The balancer takes the new set in on its own task; wait until it has.
    tokio::time::timeout(PATIENCE, async {
        while channel.usable_endpoints() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the balancer follows the empty set");
    let mut client = HealthClient::new(channel.clone());
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("no endpoints"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(NAME), "{}", status.message());
    let cause = std::error::Error::source(&status)
        .and_then(|source| source.downcast_ref::<waypost::Error>())
        .expect("the waypost error is the status's source");
    assert_eq!(cause.kind(), waypost::ErrorKind::NoEndpoints);

    // The same channel serves again when endpoints return.
    server.set_addresses(NAME, &[ip(3)], 1);
    tokio::time::timeout(PATIENCE, async {
        loop {
            if check(channel.clone()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("traffic resumes without a new channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_deadline_covers_the_wait_for_an_endpoint() {
    // A name with no records: calls wait for an endpoint.
    let server = DnsServer::start().await.unwrap();
    let channel = waypost::Builder::new("dns:///nothing.prod.svc.cluster.local.:50051")
        .unwrap()
        .dns_options(options_for(server.address()))
        .wait_for_endpoints(Duration::from_secs(30))
        .tonic_channel()
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let status = client.check(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the call's deadline, not the wait's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors_without_hanging() {
    let error = waypost::Builder::new("dns:///api").unwrap_err();
    assert_eq!(error.kind(), waypost::ErrorKind::InvalidTarget);
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("missing port"),
        "{error}"
    );

    // A server that speaks only HTTP/1 to an HTTP/2 client.
    let http1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = http1.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = http1.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let channel = waypost::Builder::new(&format!("static:///{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .wait_for_endpoints(Duration::from_secs(1))
        .tonic_channel()
        .unwrap();
    let result = tokio::time::timeout(PATIENCE, check(channel)).await;
    let error = result.expect("no hang").unwrap_err();
    assert!(error.contains("Unavailable"), "{error}");
}

/// One idempotent call: the address of the backend that answered, or the status text.
async fn check_idempotent(channel: Channel) -> Result<SocketAddr, String> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.extensions_mut().insert(waypost::tonic::Idempotent);
    match HealthClient::new(channel).check(request).await {
        Ok(response) => answered_by(&response).ok_or_else(|| "no x-backend".to_owned()),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_a_killed_backend_and_unavailable_answers() {
    // Five backends, so that the refusing one and the killed one together stay below the panic
    // threshold (3 of 5 healthy >= 50%). With three, once the refusing backend was ejected and the
    // killed one marked unreachable, one of three was healthy: panic mode then sent calls to all
    // three on purpose, and calls whose three attempts all landed on the two bad backends failed.
    // Whether the refusing backend got ejected depended on the machine's speed: Peak EWMA avoids
    // it after one UNAVAILABLE answer unless scheduling delays make the healthy backends look
    // slower still.
    let mut backends = waypost_tests::grpc::start_many(5).await.unwrap();
    for backend in &backends {
        backend.set_latency(Duration::from_millis(20));
    }
    let target = format!(
        "static:///{}",
        backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .retry_idempotent(waypost::RetryBudget::default())
        .tonic_channel()
        .unwrap();
    let load = {
        let channel = channel.clone();
        Load::start(6, Duration::ZERO, move || check_idempotent(channel.clone()))
    };
    load.wait_for(100).await;
    // A backend answering UNAVAILABLE: its calls are resent elsewhere.
    let before = backends[1].requests();
    backends[1].set_unavailable(true);
    tokio::time::timeout(PATIENCE, async {
        while backends[1].requests() == before {
            load.wait_for(1).await;
        }
    })
    .await
    .expect("the refusing backend gets calls, and refuses them");
    load.wait_for(200).await;
    // A backend killed with calls in flight: they are resent elsewhere.
    backends.remove(0).kill();
    load.wait_for(300).await;
    let tally = load.stop().await;
    assert_eq!(
        tally.failed, 0,
        "idempotent calls are resent: {:?}",
        tally.failures
    );
}
