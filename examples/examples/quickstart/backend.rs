//! HTTP backends on loopback addresses, standing in for the pods: real hyper servers (HTTP/1 and
//! HTTP/2) that answer with their own address, and that the quickstart slows down, kills and
//! shuts down gracefully while traffic flows.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    requests: AtomicU64,
    in_flight: AtomicU64,
}

/// A running backend.
pub(crate) struct Backend {
    address: SocketAddr,
    control: Arc<Control>,
    stop_accepting: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Backend {
    /// Starts a backend on `address` (port 0 picks a free one).
    pub(crate) async fn start_on(address: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let (stop_accepting, stopped) = watch::channel(false);
        let service = {
            let control = Arc::clone(&control);
            hyper::service::service_fn(move |_: http::Request<Incoming>| {
                let control = Arc::clone(&control);
                async move { Ok::<_, Infallible>(answer(&control, address).await) }
            })
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(listener, service, stopped));
        Ok(Backend {
            address,
            control,
            stop_accepting,
            tasks,
        })
    }

    /// The backend's address.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// The backend's port.
    pub(crate) fn port(&self) -> u16 {
        self.address.port()
    }

    /// Waits this long before answering each request from now on.
    pub(crate) fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.control.latency_us.store(micros, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> u64 {
        self.control.requests.load(Ordering::Relaxed)
    }

    /// Requests being answered now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.control.in_flight.load(Ordering::Relaxed)
    }

    /// Stops accepting connections, finishes the requests in flight, closes every connection
    /// (HTTP/2 clients get a GOAWAY) and returns, once all are done, how many requests it
    /// received in all.
    pub(crate) async fn shutdown(mut self) -> u64 {
        let _ = self.stop_accepting.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.requests()
    }

    /// Drops the listener and every connection at once, as a crashed process would.
    pub(crate) fn kill(mut self) {
        self.tasks.abort_all();
    }
}

async fn answer(control: &Control, address: SocketAddr) -> http::Response<Full<Bytes>> {
    control.requests.fetch_add(1, Ordering::Relaxed);
    control.in_flight.fetch_add(1, Ordering::Relaxed);
    let latency = control.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    control.in_flight.fetch_sub(1, Ordering::Relaxed);
    http::Response::builder()
        .header("x-backend", address.to_string())
        .body(Full::new(Bytes::from(address.to_string())))
        .expect("a valid response")
}

/// Serves every connection `listener` accepts until `stopped` turns true, then stops accepting
/// and shuts every connection down gracefully. Aborting the task drops everything at once.
async fn serve<S>(listener: TcpListener, service: S, stopped: watch::Receiver<bool>)
where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut accept_stopped = stopped.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stop_requested(&mut stopped) => {
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
}

async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
