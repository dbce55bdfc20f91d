//! End to end: the waypost HTTP client against real hyper servers on loopback, discovery
//! through the in-process DNS server or a static list.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use waypost::balance::{BalanceConfig, OutlierDetection, Policy};
use waypost::hyper::{HttpClient, RetryBudget};
use waypost_tests::backend::{self, Backend};
use waypost_tests::dns::server::DnsServer;
use waypost_tests::dns::{PATIENCE, options_for, wait_until};
use waypost_tests::load::Load;

type Client = HttpClient<Empty<Bytes>>;

async fn get(client: Client) -> Result<SocketAddr, String> {
    let request = http::Request::get("/hello").body(Empty::new()).unwrap();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    std::str::from_utf8(&body)
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|e: std::net::AddrParseError| e.to_string())
}

fn load(client: &Client, callers: usize) -> Load {
    let client = client.clone();
    Load::start(callers, Duration::ZERO, move || get(client.clone()))
}

fn static_target(backends: &[Backend]) -> String {
    format!(
        "static:///{}",
        backends
            .iter()
            .map(|b| b.address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

// One thread: round-robin keeps one sequence per thread, and a task that moved between worker
// threads would see two interleaved sequences instead of an exact rotation.
#[tokio::test(flavor = "current_thread")]
async fn http1_and_http2_spread_requests() {
    let backends = backend::start_many(3).await.unwrap();
    for http2 in [false, true] {
        let client: Client = waypost::Builder::new(&static_target(&backends))
            .unwrap()
            .policy(Policy::round_robin())
            .http2_only(http2)
            .http_client()
            .unwrap();
        let mut answers = std::collections::BTreeMap::new();
        for _ in 0..30 {
            *answers
                .entry(get(client.clone()).await.unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(
            answers.values().copied().collect::<Vec<_>>(),
            [10, 10, 10],
            "http2={http2}"
        );
    }
}

/// Waits until the client's balancer no longer picks `address`.
async fn balancer_drops(client: &Client, address: SocketAddr) {
    tokio::time::timeout(PATIENCE, async {
        while client.in_flight().iter().any(|(a, _)| *a == address) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the balancer still uses {address}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_under_load_fails_no_request() {
    let server = DnsServer::start().await.unwrap();
    let name = "web.prod.svc.cluster.local";
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let first = Backend::start_on(SocketAddr::new(ip(2), 0)).await.unwrap();
    let port = first.port();
    let mut old = vec![first];
    for last in [3, 4] {
        old.push(
            Backend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    server.set_addresses(name, &[ip(2), ip(3), ip(4)], 1);
    let client: Client = waypost::Builder::new(&format!("dns:///{name}.:{port}"))
        .unwrap()
        .dns_options(options_for(server.address()))
        .http_client()
        .unwrap();
    client.endpoints().resolved().await.unwrap();

    let load = load(&client, 4);
    load.wait_for(200).await;
    let mut new = Vec::new();
    for (step, replacement) in [5u8, 6, 7].into_iter().enumerate() {
        let backend = Backend::start_on(SocketAddr::new(ip(replacement), port))
            .await
            .unwrap();
        server.add_address(name, ip(replacement), 1);
        let added = backend.address();
        wait_until(client.endpoints(), PATIENCE, "the new pod", |current, _| {
            current.contains(&added)
        })
        .await;
        new.push(backend);
        let leaving = old.remove(0);
        let leaving_address = leaving.address();
        server.remove_address(name, ip(2 + step as u8));
        wait_until(
            client.endpoints(),
            PATIENCE,
            "the old pod gone",
            |current, _| !current.contains(&leaving_address),
        )
        .await;
        // The balancer takes the new set in on its own task: until it has, requests still go
        // to the old pod, as they would to a pod that is still in its preStop sleep.
        balancer_drops(&client, leaving_address).await;
        load.wait_for(100).await;
        leaving.shutdown().await;
        load.wait_for(100).await;
    }
    let tally = load.stop().await;
    // The callers completed at least 800 requests (the waits above count them), however slowly
    // the machine ran them: none may fail.
    assert_eq!(tally.failed, 0, "failed requests: {:?}", tally.failures);
    for backend in &new {
        assert!(tally.answers.contains_key(&backend.address()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_nothing_with_idempotent_retries() {
    for retries in [false, true] {
        let mut backends = backend::start_many(3).await.unwrap();
        for backend in &backends {
            backend.set_latency(Duration::from_millis(20));
        }
        let mut builder = waypost::Builder::new(&static_target(&backends)).unwrap();
        if retries {
            builder = builder.retry_idempotent(RetryBudget::default());
        }
        let client: Client = builder.http_client().unwrap();
        let callers = 6;
        let load = load(&client, callers);
        load.wait_for(100).await;
        let killed = backends.remove(0);
        let killed_address = killed.address();
        killed.kill();
        load.wait_for(300).await;
        let tally = load.stop().await;
        if retries {
            assert_eq!(
                tally.failed, 0,
                "retried on the others: {:?}",
                tally.failures
            );
        } else {
            assert!(
                tally.failed <= callers as u64,
                "only requests in flight may fail: {:?}",
                tally.failures
            );
        }
        let after = {
            let load = self::load(&client, callers);
            load.wait_for(200).await;
            load.stop().await
        };
        assert_eq!(
            after.failed, 0,
            "new requests avoid it: {:?}",
            after.failures
        );
        assert!(!after.answers.contains_key(&killed_address));
    }
}

// One thread: round-robin then sends the 503 backend every fourth request, and the balancer's
// task ejects it (after the fifth 503) before its next turn comes. Paused clock: the 2 s ejection
// lasts until the test lets time pass, however long a loaded machine takes for the requests.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_503_backend_is_ejected_and_returns() {
    let backends = backend::start_many(4).await.unwrap();
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
    let client: Client = waypost::Builder::new(&static_target(&backends))
        .unwrap()
        .balance_config(config)
        .http_client()
        .unwrap();
    backends[0].set_status(503);
    let mut failures = 0;
    for _ in 0..200 {
        if get(client.clone()).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 5);
    assert_eq!(client.usable_endpoints(), 3);
    backends[0].set_status(200);
    tokio::time::timeout(PATIENCE, async {
        while client.usable_endpoints() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("back after the ejection time");
    assert!(get(client.clone()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_covers_the_wait_for_an_endpoint() {
    let server = DnsServer::start().await.unwrap();
    let client: Client = waypost::Builder::new("dns:///nothing.prod.svc.cluster.local.:8080")
        .unwrap()
        .dns_options(options_for(server.address()))
        .timeout(Duration::from_millis(300))
        .http_client()
        .unwrap();
    let request = http::Request::get("/").body(Empty::new()).unwrap();
    let error = client.request(request).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(
        error.target(),
        Some("dns:///nothing.prod.svc.cluster.local.:8080")
    );
}

/// A loopback HTTP/1 and HTTP/2 server that answers each request with its body; counts the
/// requests it read.
struct Echo {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counted = Arc::clone(&counted);
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let counted = Arc::clone(&counted);
                    async move {
                        let body: hyper::body::Incoming = request.into_body();
                        let bytes = body.collect().await?.to_bytes();
                        counted.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(bytes)))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Echo {
            address,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback server that reads the start of each request and then closes the connection
/// without answering: the request was sent and may have been processed. Counts the requests
/// it read from.
async fn breaking_server() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reads);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                if matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                // Dropping the stream closes the connection with the request unanswered.
            });
        }
    });
    (address, reads, task)
}

/// An address on loopback nothing listens on: connections to it are refused.
async fn refusing_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A body that is not `Clone`: its chunks arrive through a channel, as a proxied or generated
/// body's would.
type Streaming =
    StreamBody<Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>>;

fn streaming(chunks: &[&'static str]) -> Streaming {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    for chunk in chunks {
        sender
            .send(Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
            .unwrap();
    }
    drop(sender);
    StreamBody::new(Box::pin(futures_util::stream::poll_fn(move |cx| {
        receiver.poll_recv(cx)
    })))
}

async fn text(response: http::Response<hyper::body::Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_that_is_not_clone_gets_through() {
    let echo = Echo::start().await;
    for http2 in [false, true] {
        let client: HttpClient<Streaming> =
            waypost::Builder::new(&format!("static:///{}", echo.address))
                .unwrap()
                .http2_only(http2)
                .streaming_http_client()
                .unwrap();
        for _ in 0..3 {
            let request = http::Request::post("/upload")
                .body(streaming(&[
                    "first chunk, ",
                    "second chunk, ",
                    "last chunk",
                ]))
                .unwrap();
            let response = client.request(request).await.unwrap();
            assert!(response.status().is_success(), "http2={http2}");
            assert_eq!(
                text(response).await,
                "first chunk, second chunk, last chunk",
                "http2={http2}"
            );
        }
    }
    assert_eq!(echo.requests(), 6);
}

// One thread and round-robin: of two requests, one is picked for the refusing endpoint first.
#[tokio::test(flavor = "current_thread")]
async fn a_request_refused_unsent_goes_to_another_endpoint_with_a_streaming_body() {
    let echo = Echo::start().await;
    let refusing = refusing_address().await;
    for http2 in [false, true] {
        let client: HttpClient<Streaming> =
            waypost::Builder::new(&format!("static:///{refusing},{}", echo.address))
                .unwrap()
                .policy(Policy::round_robin())
                .http2_only(http2)
                .streaming_http_client()
                .unwrap();
        for n in 0..2 {
            // POST: not idempotent, and the body cannot be replayed; only an unsent request may
            // go again, and hyper hands it back.
            let request = http::Request::post("/orders")
                .body(streaming(&["order ", "number"]))
                .unwrap();
            let response = client
                .request(request)
                .await
                .unwrap_or_else(|error| panic!("request {n}, http2={http2}: {error}"));
            assert_eq!(text(response).await, "order number");
        }
    }
    assert_eq!(echo.requests(), 4, "each request reached the server once");
}

#[tokio::test(flavor = "current_thread")]
async fn idempotent_retries_resend_a_replayable_body_after_a_broken_connection() {
    let echo = Echo::start().await;
    let (breaking, reads, _task) = breaking_server().await;
    let client: HttpClient<Full<Bytes>> =
        waypost::Builder::new(&format!("static:///{breaking},{}", echo.address))
            .unwrap()
            .policy(Policy::round_robin())
            .retry_idempotent(RetryBudget::default())
            .http_client()
            .unwrap();
    for n in 0..4 {
        let request = http::Request::put("/item")
            .body(Full::new(Bytes::from_static(b"the same item")))
            .unwrap();
        let response = client
            .request(request)
            .await
            .unwrap_or_else(|error| panic!("request {n}: {error}"));
        assert_eq!(text(response).await, "the same item");
    }
    assert!(
        reads.load(Ordering::SeqCst) >= 1,
        "the breaking server read a request first"
    );
    assert_eq!(echo.requests(), 4, "every request was answered there");
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_that_cannot_be_replayed_is_never_sent_twice() {
    let echo = Echo::start().await;
    let (breaking, reads, _task) = breaking_server().await;
    // Idempotent retries configured, an idempotent method: the body still cannot be replayed.
    let client: HttpClient<Streaming> =
        waypost::Builder::new(&format!("static:///{breaking},{}", echo.address))
            .unwrap()
            .policy(Policy::round_robin())
            .retry_idempotent(RetryBudget::default())
            .streaming_http_client()
            .unwrap();
    let (mut answered, mut failed) = (0, 0);
    for _ in 0..4 {
        let request = http::Request::put("/item")
            .body(streaming(&["sent ", "once"]))
            .unwrap();
        match client.request(request).await {
            Ok(response) => {
                assert_eq!(text(response).await, "sent once");
                answered += 1;
            }
            Err(error) => {
                assert_eq!(error.kind(), waypost::ErrorKind::Transport, "{error}");
                failed += 1;
            }
        }
    }
    assert!(
        failed >= 1,
        "round-robin sent at least one to the breaking server"
    );
    assert_eq!(
        reads.load(Ordering::SeqCst),
        failed,
        "each failure was one send"
    );
    assert_eq!(echo.requests(), answered, "no failed request went again");
    assert_eq!(answered + failed, 4);
}
