//! HTTP backends on loopback that tests start, slow down, break, drain and kill.
//!
//! A [`Backend`] is a real hyper server on loopback speaking HTTP/1 and HTTP/2 (prior
//! knowledge). Every response carries the backend's address in its body and in the `x-backend`
//! header, so a client can tell who answered. Its behaviour changes while it runs: a latency
//! before answering, a status to answer with (503 for "failing") and a `Retry-After` to send
//! with it, a graceful shutdown that finishes requests in flight, or an abrupt kill that drops
//! every connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, Default)]
struct Control {
    latency_us: AtomicU64,
    status: AtomicU16,
    retry_after: std::sync::Mutex<Option<String>>,
    requests: AtomicU64,
    in_flight: AtomicU64,
}

/// A running HTTP backend on loopback.
#[derive(Debug)]
pub struct Backend {
    address: SocketAddr,
    control: Arc<Control>,
    stop_accepting: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Backend {
    /// Starts a backend on a fresh loopback port that answers 200 at once.
    pub async fn start() -> std::io::Result<Backend> {
        Backend::start_on("127.0.0.1:0".parse().expect("a loopback address")).await
    }

    /// Starts a backend on `address` (a loopback address; port 0 picks a free one).
    pub async fn start_on(address: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let control = Arc::new(Control {
            status: AtomicU16::new(200),
            ..Control::default()
        });
        let (stop_accepting, stopped) = watch::channel(false);
        let answer_control = Arc::clone(&control);
        let service = hyper::service::service_fn(move |_: http::Request<Incoming>| {
            let control = Arc::clone(&answer_control);
            async move { Ok::<_, Infallible>(answer(&control, address).await) }
        });
        let tasks = serve(listener, service, stopped, false, None);
        Ok(Backend {
            address,
            control,
            stop_accepting,
            tasks,
        })
    }

    /// The backend's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Waits this long before answering each request from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.control
            .latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Answers with this status from now on (503 makes a failing backend).
    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::Relaxed);
    }

    /// Sends `Retry-After: value` with every answer from now on (`None`: no header).
    pub fn set_retry_after(&self, value: Option<&str>) {
        *self
            .control
            .retry_after
            .lock()
            .expect("the Retry-After lock is never poisoned") = value.map(str::to_owned);
    }

    /// Requests answered or being answered so far.
    pub fn requests(&self) -> u64 {
        self.control.requests.load(Ordering::Relaxed)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> u64 {
        self.control.in_flight.load(Ordering::Relaxed)
    }

    /// Stops accepting connections, finishes the requests in flight, closes every connection
    /// (HTTP/2 clients get a GOAWAY) and returns once all are done.
    pub async fn shutdown(mut self) {
        let _ = self.stop_accepting.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Drops the listener and every connection at once, as a crashed process would.
    pub fn kill(mut self) {
        self.tasks.abort_all();
    }
}

/// Serves `service` on every connection `listener` accepts (HTTP/1 and HTTP/2, or HTTP/2 only),
/// until `stopped` turns true: then stops accepting and shuts every connection down gracefully.
/// Aborting the returned tasks drops the listener and every connection at once.
pub(crate) fn serve<S, B>(
    listener: TcpListener,
    service: S,
    stopped: watch::Receiver<bool>,
    http2_only: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> JoinSet<()>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut tasks = JoinSet::new();
    let mut accept_stopped = stopped.clone();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    let mut stopped = stopped.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        if http2_only {
                            builder = builder.http2_only();
                        }
                        let stream: Box<dyn Io> = match tls {
                            None => Box::new(stream),
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(stream) => Box::new(stream),
                                // A client that rejects our certificate: nothing to serve.
                                Err(_) => return,
                            },
                        };
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            _ = stop_requested(&mut stopped) => {
                                // Graceful: finish what is in flight, refuse new requests.
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
                _ = stop_requested(&mut accept_stopped) => break,
            }
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    });
    tasks
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn answer(control: &Control, address: SocketAddr) -> http::Response<Full<Bytes>> {
    control.requests.fetch_add(1, Ordering::Relaxed);
    control.in_flight.fetch_add(1, Ordering::Relaxed);
    let latency = control.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    let status = control.status.load(Ordering::Relaxed);
    control.in_flight.fetch_sub(1, Ordering::Relaxed);
    let mut response = http::Response::builder()
        .status(status)
        .header("x-backend", address.to_string());
    if let Some(retry_after) = control
        .retry_after
        .lock()
        .expect("the Retry-After lock is never poisoned")
        .as_deref()
    {
        response = response.header(http::header::RETRY_AFTER, retry_after);
    }
    response
        .body(Full::new(Bytes::from(address.to_string())))
        .expect("a valid response")
}

/// Starts `n` backends.
pub async fn start_many(n: usize) -> std::io::Result<Vec<Backend>> {
    let mut backends = Vec::with_capacity(n);
    for _ in 0..n {
        backends.push(Backend::start().await?);
    }
    Ok(backends)
}
