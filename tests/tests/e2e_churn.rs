//! End to end under churn: servers on loopback that misbehave the way real ones do during
//! rollouts (accepting and closing at once, refusing streams with GOAWAY), and a waypost
//! channel that must neither spin nor fail calls that were never processed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use waypost::balance::{BalanceConfig, ReconnectBackoff};
use waypost_tests::eventually;

/// A server that completes the HTTP/2 handshake on every connection and closes it at once
/// (GOAWAY, then EOF); counts the connections.
async fn accept_and_close() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_: http::Request<_>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            });
        }
    });
    (address, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_every_connection_at_once_is_not_reconnected_to_in_a_tight_loop() {
    let (address, accepted) = accept_and_close().await;
    let channel = waypost::Builder::new(&format!("static:///{address}"))
        .unwrap()
        .balance_config(BalanceConfig {
            reconnect_backoff: ReconnectBackoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            ..BalanceConfig::default()
        })
        .tonic_channel()
        .unwrap();
    eventually("the client connected twice", || {
        accepted.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Over the next 3 s the backoff allows about five more attempts (100 ms doubling, each
    // jittered down to no less than half); reconnecting on every close would make hundreds.
    let before = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = accepted.load(Ordering::SeqCst) - before;
    assert!(
        during <= 10,
        "{during} connections in 3 s: the client reconnects in a tight loop"
    );
    drop(channel);
}
