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

/// What the GOAWAY server did.
#[derive(Default)]
struct Refusals {
    /// GOAWAYs sent, one per connection: each lets exactly one stream through (processed).
    goaways: AtomicUsize,
    /// Streams above a GOAWAY's last stream id: refused, never processed.
    refused: AtomicUsize,
}

async fn read_frame(stream: &mut tokio::net::TcpStream) -> std::io::Result<(u8, u8, u32)> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    Ok((header[3], header[4], id))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A raw HTTP/2 server that lets the first stream of each connection through, waits until a
/// second stream was sent in full, then sends a graceful GOAWAY (`NO_ERROR`) whose last stream
/// id is the first stream's, and closes: the later streams were refused unprocessed.
async fn goaway_server() -> (std::net::SocketAddr, Arc<Refusals>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const DATA: u8 = 0x0;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let refusals = Arc::new(Refusals::default());
    let counts = Arc::clone(&refusals);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if stream.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = stream.write_all(&frame(SETTINGS, 0, 0, &[])).await;
                let mut streams: Vec<u32> = Vec::new();
                let mut ended: Vec<u32> = Vec::new();
                loop {
                    let Ok((kind, flags, id)) = read_frame(&mut stream).await else {
                        return;
                    };
                    match kind {
                        SETTINGS if flags & 0x1 == 0 => {
                            let _ = stream.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
                        }
                        HEADERS if !streams.contains(&id) => streams.push(id),
                        _ => {}
                    }
                    if (kind == HEADERS || kind == DATA) && flags & END_STREAM != 0 {
                        ended.push(id);
                    }
                    let first = streams.first().copied();
                    if let Some(first) = first
                        && ended.iter().any(|&id| id > first)
                    {
                        let mut payload = first.to_be_bytes().to_vec();
                        payload.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                        let _ = stream.write_all(&frame(GOAWAY, 0, 0, &payload)).await;
                        let _ = stream.flush().await;
                        counts.goaways.fetch_add(1, Ordering::SeqCst);
                        counts
                            .refused
                            .fetch_add(streams.len() - 1, Ordering::SeqCst);
                        // Let the client read the GOAWAY before the connection ends.
                        let _ = stream.shutdown().await;
                        let mut rest = Vec::new();
                        let _ = stream.read_to_end(&mut rest).await;
                        return;
                    }
                }
            });
        }
    });
    (address, refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_a_goaway_refused_go_to_another_endpoint() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let (draining, refusals) = goaway_server().await;
    let backend = waypost_tests::grpc::GrpcBackend::start().await.unwrap();
    let channel = waypost::Builder::new(&format!("static:///{draining},{}", backend.address()))
        .unwrap()
        .policy(waypost::balance::Policy::round_robin())
        .tonic_channel()
        .unwrap();
    // Calls that are not idempotent, all at once: round-robin sends half to the draining server.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = HealthClient::new(channel.clone());
        calls.spawn(async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|status| status.message().to_owned())
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = calls.join_next().await {
        if let Err(message) = result.unwrap() {
            failures.push(message);
        }
    }
    let goaways = refusals.goaways.load(Ordering::SeqCst);
    assert!(goaways >= 1, "the draining server sent a GOAWAY");
    assert!(
        refusals.refused.load(Ordering::SeqCst) >= 1,
        "a stream was refused"
    );
    // Only a stream the server let through (at most one per GOAWAY) may fail: it may have been
    // processed. Every refused one was sent again and answered.
    assert!(
        failures.len() <= goaways,
        "{} failures for {goaways} GOAWAYs: {failures:?}",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .all(|message| !message.contains("not a result of an error")),
        "{failures:?}"
    );
}
