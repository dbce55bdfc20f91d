//! The balancer in front of real hyper servers on loopback, over HTTP/1 and HTTP/2, with
//! hyper-util's client per endpoint.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, BalanceConfig, Classify, ErrorKind, HttpStatus, Outcome, Policy};
use waypost_discovery::{Endpoint, Publisher};

/// A hyper server on 127.0.0.1 that answers every request with its own port (HTTP/1 and
/// HTTP/2). Dropping or killing it closes the listener and every connection at once.
struct Server {
    address: SocketAddr,
    tasks: JoinSet<()>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |_: http::Request<Incoming>| async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                address.port().to_string(),
                            ))))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { address, tasks }
    }

    fn kill(mut self) {
        self.tasks.abort_all();
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client(http2: bool) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// Classifies connect errors as unreachable, other errors as failures, statuses as HTTP does.
#[derive(Clone)]
struct HyperClassify;

impl Classify<http::Response<Incoming>, hyper_util::client::legacy::Error> for HyperClassify {
    fn classify_response(&self, response: &http::Response<Incoming>) -> Outcome {
        Classify::<_, ()>::classify_response(&HttpStatus, response)
    }

    fn classify_error(&self, error: &hyper_util::client::legacy::Error) -> Outcome {
        if error.is_connect() {
            Outcome::Unreachable
        } else {
            Outcome::Failure
        }
    }
}

type EndpointService = tower::util::BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<Incoming>,
    hyper_util::client::legacy::Error,
>;

fn make(client: HttpClient) -> impl FnMut(&Endpoint) -> EndpointService + Send + 'static {
    move |endpoint: &Endpoint| {
        let client = client.clone();
        let address = endpoint.address();
        EndpointService::new(tower::service_fn(
            move |mut request: http::Request<Empty<Bytes>>| {
                let uri = format!("http://{address}{}", request.uri().path());
                *request.uri_mut() = uri.parse().unwrap();
                client.request(request)
            },
        ))
    }
}

type HttpBalance = Balance<EndpointService, waypost_balance::NoHashKey, HyperClassify>;

fn balance(publisher: &Publisher, http2: bool, config: BalanceConfig) -> HttpBalance {
    Balance::builder(publisher.endpoints())
        .config(config)
        .classify(HyperClassify)
        .build(make(client(http2)))
        .unwrap()
}

async fn get(balance: &mut HttpBalance) -> Result<u16, waypost_balance::Error> {
    let response = balance
        .ready()
        .await?
        .call(http::Request::get("/").body(Empty::new()).unwrap())
        .await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(std::str::from_utf8(&body).unwrap().parse().unwrap())
}

async fn spread(balance: &mut HttpBalance, n: usize) -> (BTreeMap<u16, usize>, usize) {
    let mut answers = BTreeMap::new();
    let mut failures = 0;
    for _ in 0..n {
        match get(balance).await {
            Ok(port) => *answers.entry(port).or_default() += 1,
            Err(_) => failures += 1,
        }
    }
    (answers, failures)
}

async fn servers(n: usize) -> Vec<Server> {
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(Server::start().await);
    }
    servers
}

fn publish(publisher: &mut Publisher, servers: &[Server]) {
    publisher.publish(servers.iter().map(|s| Endpoint::new(s.address)));
}

// One thread: round-robin keeps one sequence per thread, and a task that moved between worker
// threads would see two interleaved sequences instead of an exact rotation.
#[tokio::test(flavor = "current_thread")]
async fn round_robin_spreads_evenly_over_http1_and_http2() {
    let servers = servers(3).await;
    let mut publisher = Publisher::new("static:///three");
    publish(&mut publisher, &servers);
    for http2 in [false, true] {
        let mut balance = balance(
            &publisher,
            http2,
            BalanceConfig::with_policy(Policy::round_robin()),
        );
        let (answers, failures) = spread(&mut balance, 300).await;
        assert_eq!(failures, 0);
        assert_eq!(
            answers.values().copied().collect::<Vec<_>>(),
            [100, 100, 100],
            "http2={http2}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_uses_every_server_with_concurrent_callers() {
    let servers = servers(3).await;
    let mut publisher = Publisher::new("static:///three");
    publish(&mut publisher, &servers);
    for http2 in [false, true] {
        let balance = balance(&publisher, http2, BalanceConfig::default());
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let mut balance = balance.clone();
                tokio::spawn(async move { spread(&mut balance, 50).await })
            })
            .collect();
        let mut total: BTreeMap<u16, usize> = BTreeMap::new();
        for caller in callers {
            let (answers, failures) = caller.await.unwrap();
            assert_eq!(failures, 0);
            for (port, count) in answers {
                *total.entry(port).or_default() += count;
            }
        }
        assert_eq!(total.len(), 3, "http2={http2}: {total:?}");
        assert_eq!(total.values().sum::<usize>(), 400);
    }
}

// One thread: round-robin keeps one sequence per thread, and a task that moved between worker
// threads would see two interleaved sequences instead of an exact rotation.
// Paused clock: the killed server's reconnect backoff (1 s) lasts until the test lets time pass;
// on the wall clock a loaded machine could spend it on the requests, and the probe that follows
// it would be one more failure.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_killed_server_is_avoided() {
    for http2 in [false, true] {
        let mut servers = servers(3).await;
        let mut publisher = Publisher::new("static:///three");
        publish(&mut publisher, &servers);
        let mut balance = balance(
            &publisher,
            http2,
            BalanceConfig::with_policy(Policy::round_robin()),
        );
        let (_, failures) = spread(&mut balance, 30).await;
        assert_eq!(failures, 0);

        let killed = servers.remove(0);
        let killed_port = killed.address.port();
        killed.kill();
        // Requests already on the way may fail; the balancer learns from them quickly.
        let (_, early_failures) = spread(&mut balance, 30).await;
        assert!(
            early_failures <= 6,
            "http2={http2}: {early_failures} failures right after the kill"
        );
        let (answers, failures) = spread(&mut balance, 60).await;
        assert_eq!(failures, 0, "http2={http2}: the killed server is avoided");
        assert!(!answers.contains_key(&killed_port));
        assert_eq!(answers.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoints_fails_with_the_typed_error() {
    // Discovery answered "none": the request fails without waiting (an hour here).
    let publisher = {
        let mut publisher = Publisher::new("dns:///nothing.test:80");
        publisher.publish([]);
        publisher
    };
    let config = BalanceConfig {
        wait_for_endpoints: Duration::from_secs(3600),
        ..BalanceConfig::default()
    };
    let mut balance = balance(&publisher, false, config);
    let error = tokio::time::timeout(Duration::from_secs(600), get(&mut balance))
        .await
        .expect("no waiting for an answer that will not change")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NoEndpoints);
    assert_eq!(error.target(), "dns:///nothing.test:80");
}

// One thread: round-robin keeps one sequence per thread, and a task that moved between worker
// threads would see two interleaved sequences instead of an exact rotation.
#[tokio::test(flavor = "current_thread")]
async fn endpoints_added_later_get_traffic_without_requests_driving_discovery() {
    let servers = servers(3).await;
    let mut publisher = Publisher::new("static:///grows");
    publish(&mut publisher, &servers[..2]);
    let mut balance = balance(
        &publisher,
        true,
        BalanceConfig::with_policy(Policy::round_robin()),
    );
    assert_eq!(balance.usable_endpoints(), 2);

    publish(&mut publisher, &servers);
    // No request is sent while the balancer takes the new set in.
    tokio::time::timeout(Duration::from_secs(30), async {
        while balance.usable_endpoints() != 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the balancer follows discovery on its own");
    let (answers, failures) = spread(&mut balance, 30).await;
    assert_eq!(failures, 0);
    assert_eq!(answers[&servers[2].address.port()], 10);
}
