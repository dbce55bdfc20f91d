//! One endpoint's HTTP/2 connection, established and kept in the background.
//!
//! Each endpoint gets a task that connects (TCP, TLS when configured, HTTP/2 handshake),
//! publishes the connection's request handle, and when the connection ends or cannot be made,
//! reports the endpoint disconnected to the balancer and tries again after a jittered,
//! doubling backoff ([`Backoff`]). The backoff starts over only once a connection proved useful
//! (it carried a response or stayed up a while), so a server that accepts and closes at once is
//! not asked again in a tight loop. A call that finds the endpoint backing off brings the next
//! attempt forward, to no earlier than the initial delay after the previous one: once a server
//! is back, calls reach it within about that delay rather than after a long backoff. A
//! request clones the current handle (one atomic load) and sends on it: HTTP/2 multiplexes every
//! request of the endpoint over that one connection. A request that arrives while the first
//! connection is still being made waits for it, up to the connect timeout. A request that finds
//! no connection, or a connection that closed before the request was written, gets the request
//! back in an [`EndpointError::Unsent`], so the caller can send it to another endpoint.
//!
//! The task ends when the balancer drops the endpoint (it left discovery) and every request on
//! it has finished.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tower::Service;
use waypost_balance::{Classify, Connectivity, ConnectivityReporter, HttpStatus, Outcome};
use waypost_discovery::backoff::Backoff;

use crate::connect::Connector;
use crate::error::{BoxError, Error, ErrorKind};

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const BACKING_OFF: u8 = 2;

/// Starts an endpoint's health watcher on a new connection: the connection's request handle,
/// the scheme and authority to aim at, the endpoint's address, its reporter, and its "warned
/// once" flag. The future runs until the connection closes (it is aborted then).
pub(crate) type HealthWatch<B> = Arc<
    dyn Fn(
            SendRequest<B>,
            http::uri::Scheme,
            http::uri::Authority,
            SocketAddr,
            ConnectivityReporter,
            Arc<AtomicBool>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Settings of the per-endpoint HTTP/2 connections.
pub(crate) struct H2Settings<B> {
    pub(crate) connector: Connector,
    /// The `:authority` of requests; the endpoint's address when `None`.
    pub(crate) authority: Option<http::uri::Authority>,
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    /// The active health check run on every connection, when configured.
    pub(crate) health: Option<HealthWatch<B>>,
}

impl<B> Clone for H2Settings<B> {
    fn clone(&self) -> Self {
        H2Settings {
            connector: self.connector.clone(),
            authority: self.authority.clone(),
            keep_alive_interval: self.keep_alive_interval,
            keep_alive_timeout: self.keep_alive_timeout,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            health: self.health.clone(),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Cell<B> {
    address: SocketAddr,
    sender: ArcSwapOption<SendRequest<B>>,
    state: AtomicU8,
    connected: Notify,
    /// Dropped with the cell: tells the task to stop.
    _stop: oneshot::Sender<()>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    connect_timeout: Duration,
    /// Why the last connection attempt failed, for the errors of requests that found none.
    last_failure: Mutex<Option<(ErrorKind, String)>>,
    /// Set when the current connection carried a response: it proved useful.
    served: AtomicBool,
    /// Asks a task that is backing off to try again early: a call wants the endpoint.
    kick: Arc<Notify>,
    /// Tells the task that a request on the current connection met the server's GOAWAY: that
    /// connection takes no new streams, so the task makes a new one at once while the old one
    /// finishes the streams it carries. The request that saw it took the connection out of
    /// `sender` first.
    going_away: Arc<Notify>,
}

/// The per-endpoint service: sends requests on the endpoint's current HTTP/2 connection.
pub(crate) struct H2Endpoint<B> {
    cell: Arc<Cell<B>>,
}

impl<B> Clone for H2Endpoint<B> {
    fn clone(&self) -> Self {
        H2Endpoint {
            cell: Arc::clone(&self.cell),
        }
    }
}

impl<B> H2Endpoint<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Starts the endpoint's connection task on the current runtime.
    pub(crate) fn spawn(
        address: SocketAddr,
        settings: &H2Settings<B>,
        reporter: ConnectivityReporter,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let scheme = if settings.connector.is_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let authority = settings.authority.clone().unwrap_or_else(|| {
            address
                .to_string()
                .parse()
                .expect("a socket address is a valid authority")
        });
        let cell = Arc::new(Cell {
            address,
            sender: ArcSwapOption::empty(),
            state: AtomicU8::new(CONNECTING),
            connected: Notify::new(),
            _stop: stop,
            scheme,
            authority,
            connect_timeout: settings.connector.timeout,
            last_failure: Mutex::new(None),
            served: AtomicBool::new(false),
            kick: Arc::new(Notify::new()),
            going_away: Arc::new(Notify::new()),
        });
        tokio::spawn(run(
            Arc::downgrade(&cell),
            settings.clone(),
            reporter,
            stopped,
        ));
        H2Endpoint { cell }
    }
}

/// A connection that stayed up this long proved useful even if it carried no response.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// When to connect again: a jittered exponential backoff after failures, reset only once a
/// connection proved useful (it carried a response or stayed up for [`STABLE_CONNECTION`]). A
/// server that completes the handshake and closes at once is therefore not asked again in a
/// tight loop. Calls that find the endpoint backing off may cut a wait short, but never to less
/// than the initial delay after the previous attempt.
#[derive(Debug)]
struct Reconnect {
    backoff: Backoff,
}

impl Reconnect {
    fn new(backoff: Backoff) -> Self {
        Reconnect { backoff }
    }

    /// The wait after a failed attempt.
    fn failed(&mut self) -> Duration {
        self.backoff.next_delay()
    }

    /// After a connection ended that lasted `lasted` and carried a response when `served`:
    /// `None` to reconnect at once, else the wait.
    fn closed(&mut self, lasted: Duration, served: bool) -> Option<Duration> {
        if served || lasted >= STABLE_CONNECTION {
            self.backoff.reset();
            None
        } else {
            Some(self.backoff.next_delay())
        }
    }

    /// The earliest a waiting call may bring the next attempt forward to, for an attempt that
    /// started at `attempted`.
    fn earliest_early_attempt(&self, attempted: Instant) -> Instant {
        attempted
            .checked_add(self.backoff.initial())
            .unwrap_or(attempted)
    }
}

/// `now + delay`, saturating far in the future instead of overflowing: a connect timeout or a
/// backoff may be as long as `Duration::MAX`.
fn after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// Waits `delay`, or less when a call asks for the endpoint (`kick`), or another endpoint of the
/// balancer reconnected or discovery answered again (`reporter`), but not before `earliest`. Returns `false` when the
/// endpoint was dropped meanwhile.
async fn back_off(
    delay: Duration,
    earliest: Instant,
    kick: &Notify,
    reporter: &ConnectivityReporter,
    stopped: &mut oneshot::Receiver<()>,
) -> bool {
    let until = after(Instant::now(), delay);
    tokio::select! {
        _ = tokio::time::sleep_until(until) => return true,
        _ = kick.notified() => {}
        _ = reporter.retry_requested() => {}
        _ = &mut *stopped => return false,
    }
    tokio::select! {
        _ = tokio::time::sleep_until(earliest.min(until)) => true,
        _ = &mut *stopped => false,
    }
}

async fn run<B>(
    cell: Weak<Cell<B>>,
    settings: H2Settings<B>,
    reporter: ConnectivityReporter,
    mut stopped: oneshot::Receiver<()>,
) where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Some((address, kick, going_away)) = cell.upgrade().map(|cell| {
        (
            cell.address,
            Arc::clone(&cell.kick),
            Arc::clone(&cell.going_away),
        )
    }) else {
        return;
    };
    let mut reconnect =
        Reconnect::new(Backoff::new(settings.backoff_initial, settings.backoff_max));
    let warned = Arc::new(AtomicBool::new(false));
    loop {
        let attempted = Instant::now();
        let attempt = async {
            let stream = settings.connector.connect(address).await?;
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if let Some(interval) = settings.keep_alive_interval {
                builder
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(settings.keep_alive_timeout)
                    .keep_alive_while_idle(true);
            }
            tokio::time::timeout(
                settings.connector.timeout,
                builder.handshake(TokioIo::new(stream)),
            )
            .await
            .map_err(|_| {
                Error::new(ErrorKind::Unreachable, "the HTTP/2 handshake timed out")
                    .with_endpoint(address)
            })?
            .map_err(|error| {
                Error::new(ErrorKind::Unreachable, "the HTTP/2 handshake failed")
                    .with_endpoint(address)
                    .with_source(error)
            })
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = &mut stopped => return,
        };
        let (delay, error) = match outcome {
            Ok((sender, connection)) => {
                let Some(live) = cell.upgrade() else { return };
                // The health check runs on this connection, and ends with it.
                let _watcher = settings.health.as_ref().map(|watch| {
                    AbortOnDrop(tokio::spawn(watch(
                        sender.clone(),
                        live.scheme.clone(),
                        live.authority.clone(),
                        address,
                        reporter.clone(),
                        Arc::clone(&warned),
                    )))
                });
                live.served.store(false, Ordering::Relaxed);
                live.sender.store(Some(Arc::new(sender)));
                if let Ok(mut last) = live.last_failure.lock() {
                    *last = None;
                }
                live.state.store(CONNECTED, Ordering::Release);
                live.connected.notify_waiters();
                drop(live);
                reporter.report(Connectivity::Connected);
                tracing::debug!(target: "waypost::connect", endpoint = %address, "connected");
                let connected_at = Instant::now();
                let mut connection = Box::pin(connection);
                let result = loop {
                    tokio::select! {
                        result = &mut connection => break result,
                        _ = going_away.notified() => {
                            // Only a GOAWAY met on this connection took it out (a permit may
                            // be left from an earlier connection).
                            let Some(live) = cell.upgrade() else { return };
                            if live.sender.load().is_none() {
                                tracing::debug!(target: "waypost::connect", endpoint = %address, "the server is going away (GOAWAY); connecting again while the old connection finishes");
                                tokio::spawn(async move {
                                    let _ = connection.await;
                                });
                                break Ok(());
                            }
                        }
                        _ = &mut stopped => return,
                    }
                };
                let Some(live) = cell.upgrade() else { return };
                live.sender.store(None);
                live.state.store(CONNECTING, Ordering::Release);
                let served = live.served.load(Ordering::Relaxed);
                drop(live);
                match &result {
                    Ok(()) => {
                        tracing::debug!(target: "waypost::connect", endpoint = %address, "connection closed")
                    }
                    Err(error) => {
                        tracing::debug!(target: "waypost::connect", endpoint = %address, %error, "connection failed")
                    }
                }
                // A closed connection is normal (GOAWAY, idle timeout): reconnect at once, unless
                // it closed before it was of any use.
                match reconnect.closed(connected_at.elapsed(), served) {
                    None => continue,
                    Some(delay) => {
                        let mut error = Error::new(
                            ErrorKind::Unreachable,
                            "the connection closed right after it was made",
                        )
                        .with_endpoint(address);
                        if let Err(cause) = result {
                            error = error.with_source(cause);
                        }
                        (delay, error)
                    }
                }
            }
            Err(error) => {
                reporter.report_connect_failure();
                (reconnect.failed(), error)
            }
        };
        let Some(live) = cell.upgrade() else { return };
        if let Ok(mut last) = live.last_failure.lock() {
            *last = Some((error.kind(), error.detail()));
        }
        live.state.store(BACKING_OFF, Ordering::Release);
        // Requests waiting for this attempt must not wait any longer.
        live.connected.notify_waiters();
        drop(live);
        reporter.report(Connectivity::Disconnected);
        tracing::debug!(target: "waypost::connect", endpoint = %address, %error, ?delay, "connect failed; backing off");
        let earliest = reconnect.earliest_early_attempt(attempted);
        if !back_off(delay, earliest, &kick, &reporter, &mut stopped).await {
            return;
        }
        let Some(live) = cell.upgrade() else { return };
        live.state.store(CONNECTING, Ordering::Release);
    }
}

pub(crate) use crate::endpoint_error::EndpointError;

type ResponseFuture<B> = Pin<
    Box<
        dyn Future<Output = Result<http::Response<Incoming>, EndpointError<http::Request<B>>>>
            + Send,
    >,
>;

impl<B> Service<http::Request<B>> for H2Endpoint<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Incoming>;
    type Error = EndpointError<http::Request<B>>;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let cell = Arc::clone(&self.cell);
        if let Err(error) =
            crate::connect::aim(&mut request, &cell.scheme, &cell.authority, cell.address)
        {
            return Box::pin(std::future::ready(Err(EndpointError::Failed(error))));
        }
        Box::pin(async move {
            let current = match current_sender(&cell).await {
                Some(current) => current,
                None => {
                    let last = cell.last_failure.lock().ok().and_then(|last| last.clone());
                    let error = match last {
                        Some((kind, why)) => {
                            Error::new(kind, format!("no connection to the endpoint: {why}"))
                        }
                        None => Error::new(ErrorKind::Unreachable, "no connection to the endpoint"),
                    };
                    return Err(EndpointError::unsent(
                        request,
                        error.with_endpoint(cell.address),
                    ));
                }
            };
            let mut sender = SendRequest::clone(&current);
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // Read first: a store on every response would bounce the line between cores.
                    if !cell.served.load(Ordering::Relaxed) {
                        cell.served.store(true, Ordering::Relaxed);
                    }
                    Ok(response)
                }
                Err(mut failed) => match failed.take_message() {
                    Some(request) => Err(EndpointError::unsent(
                        request,
                        Error::new(
                            ErrorKind::Unreachable,
                            "the connection closed before the request was sent",
                        )
                        .with_endpoint(cell.address)
                        .with_source(failed.into_error()),
                    )),
                    None => {
                        let error = failed.into_error();
                        if crate::connect::going_away(&error) {
                            // The connection takes no new streams: no request is to use it.
                            let previous = cell.sender.compare_and_swap(&current, None);
                            if previous
                                .as_ref()
                                .is_some_and(|previous| Arc::ptr_eq(previous, &current))
                            {
                                cell.going_away.notify_one();
                            }
                        }
                        if crate::connect::refused_by_server(&error) {
                            Err(EndpointError::Refused(
                                Error::new(
                                    ErrorKind::Unreachable,
                                    "the server refused the request before processing it \
                                     (GOAWAY)",
                                )
                                .with_endpoint(cell.address)
                                .with_source(error),
                            ))
                        } else {
                            Err(EndpointError::Failed(
                                Error::new(ErrorKind::Transport, "the request failed")
                                    .with_endpoint(cell.address)
                                    .with_source(error),
                            ))
                        }
                    }
                },
            }
        })
    }
}

/// The current connection's request handle; while the connection is being made, waits for it
/// up to the connect timeout.
async fn current_sender<B>(cell: &Cell<B>) -> Option<Arc<SendRequest<B>>> {
    let deadline = after(Instant::now(), cell.connect_timeout);
    loop {
        let notified = cell.connected.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(sender) = cell.sender.load_full()
            && !sender.is_closed()
        {
            return Some(sender);
        }
        if cell.state.load(Ordering::Acquire) == BACKING_OFF {
            // A call wants the endpoint: the task may try again before its backoff ends.
            cell.kick.notify_one();
            return None;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return None;
        }
    }
}

/// Classifies endpoint outcomes: unsent requests and connect failures make the endpoint
/// unreachable; HTTP and gRPC statuses as [`HttpStatus`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct H2Classify;

impl<B> Classify<http::Response<Incoming>, EndpointError<B>> for H2Classify
where
    B: Send + 'static,
{
    fn classify_response(&self, response: &http::Response<Incoming>) -> Outcome {
        Classify::<_, ()>::classify_response(&HttpStatus, response)
    }

    fn classify_error(&self, error: &EndpointError<B>) -> Outcome {
        match error {
            EndpointError::Unsent { .. } | EndpointError::Refused(_) => Outcome::Unreachable,
            EndpointError::Failed(error) if error.kind() == ErrorKind::Unreachable => {
                Outcome::Unreachable
            }
            EndpointError::Failed(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnect() -> Reconnect {
        Reconnect::new(Backoff::seeded(
            Duration::from_millis(100),
            Duration::from_secs(30),
            1,
        ))
    }

    #[test]
    fn a_connection_closed_at_once_does_not_reset_the_backoff() {
        let mut reconnect = reconnect();
        let mut delays = Vec::new();
        for _ in 0..12 {
            delays.push(reconnect.closed(Duration::from_millis(1), false).unwrap());
        }
        // Jittered into [nominal / 2, nominal] and doubling: the waits grow to the maximum.
        assert!(delays[0] <= Duration::from_millis(100), "{delays:?}");
        assert!(delays[4] >= Duration::from_millis(800), "{delays:?}");
        assert!(delays[11] >= Duration::from_secs(15), "{delays:?}");
        // Failures to connect count on top of it.
        assert!(reconnect.failed() >= Duration::from_secs(15));
    }

    #[test]
    fn a_useful_connection_resets_the_backoff() {
        let mut reconnect = reconnect();
        for _ in 0..8 {
            reconnect.failed();
        }
        assert_eq!(reconnect.closed(Duration::from_millis(1), true), None);
        assert!(reconnect.failed() <= Duration::from_millis(100));
        for _ in 0..8 {
            reconnect.failed();
        }
        assert_eq!(reconnect.closed(STABLE_CONNECTION, false), None);
        assert!(reconnect.failed() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_brings_a_long_backoff_forward_to_the_initial_delay() {
        let mut reconnect = Reconnect::new(Backoff::seeded(
            Duration::from_secs(1),
            Duration::from_secs(30),
            2,
        ));
        for _ in 0..10 {
            reconnect.failed();
        }
        let attempted = Instant::now();
        let delay = reconnect.failed();
        assert!(delay >= Duration::from_secs(15), "{delay:?}");
        let kick = Notify::new();
        let (_stop, mut stopped) = oneshot::channel();
        // The server came back, and a call finds the endpoint backing off.
        kick.notify_one();
        let earliest = reconnect.earliest_early_attempt(attempted);
        let reporter = ConnectivityReporter::detached();
        assert!(back_off(delay, earliest, &kick, &reporter, &mut stopped).await);
        assert!(
            attempted.elapsed() <= Duration::from_secs(2),
            "the next attempt {:?} after the last",
            attempted.elapsed()
        );
        assert!(
            attempted.elapsed() >= Duration::from_secs(1),
            "not sooner than the initial delay"
        );

        // Without a call, the whole backoff is waited out.
        let started = Instant::now();
        assert!(back_off(delay, started, &kick, &reporter, &mut stopped).await);
        assert!(started.elapsed() + Duration::from_millis(1) >= delay);
    }

    /// A connector 11 failures deep in a 1 s..30 s backoff (a wait of 15 s or more), waiting in
    /// `back_off` with `reporter`; the task returns how long it waited after its last attempt.
    fn deep_in_backoff(
        reporter: ConnectivityReporter,
        seed: u64,
    ) -> tokio::task::JoinHandle<Duration> {
        let mut reconnect = Reconnect::new(Backoff::seeded(
            Duration::from_secs(1),
            Duration::from_secs(30),
            seed,
        ));
        for _ in 0..10 {
            reconnect.failed();
        }
        let attempted = Instant::now();
        let delay = reconnect.failed();
        assert!(delay >= Duration::from_secs(15), "{delay:?}");
        let earliest = reconnect.earliest_early_attempt(attempted);
        tokio::spawn(async move {
            let kick = Notify::new();
            let (_stop, mut stopped) = oneshot::channel::<()>();
            assert!(back_off(delay, earliest, &kick, &reporter, &mut stopped).await);
            attempted.elapsed()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn another_endpoint_reconnecting_brings_a_long_backoff_forward() {
        use waypost_balance::{Balance, WithConnectivity};
        use waypost_discovery::{Endpoint, Publisher};

        // Two endpoints of one balancer; their reporters stand in for their connectors.
        let reporters = Arc::new(Mutex::new(Vec::new()));
        let mut publisher = Publisher::new("static:///two");
        publisher
            .publish([1, 2].map(|port| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))));
        let made = Arc::clone(&reporters);
        let _balance = Balance::builder(publisher.endpoints())
            .build(WithConnectivity(
                move |_: &Endpoint, reporter: ConnectivityReporter| {
                    made.lock().unwrap().push(reporter);
                    tower::service_fn(|_: ()| async { Ok::<(), std::convert::Infallible>(()) })
                },
            ))
            .unwrap();
        let (first, second) = {
            let reporters = reporters.lock().unwrap();
            (reporters[0].clone(), reporters[1].clone())
        };
        first.report(Connectivity::Disconnected);
        second.report(Connectivity::Disconnected);

        // The second endpoint's connector is deep in its backoff.
        let waiting = deep_in_backoff(second, 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The first endpoint's server is back: the second tries again at its initial delay.
        first.report(Connectivity::Connected);
        let waited = waiting.await.unwrap();
        assert!(
            waited >= Duration::from_secs(1),
            "not sooner than the initial delay: {waited:?}"
        );
        assert!(
            waited <= Duration::from_secs(2),
            "brought forward: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_discovery_answer_brings_a_long_backoff_forward() {
        use waypost_balance::{Balance, WithConnectivity};
        use waypost_discovery::{Endpoint, Publisher};

        // One endpoint; its reporter stands in for its connector, which lost its connection.
        let reporters = Arc::new(Mutex::new(Vec::new()));
        let mut publisher = Publisher::new("dns:///one:1");
        let announced = [Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 1)))];
        publisher.publish(announced.clone());
        let made = Arc::clone(&reporters);
        let _balance = Balance::builder(publisher.endpoints())
            .build(WithConnectivity(
                move |_: &Endpoint, reporter: ConnectivityReporter| {
                    made.lock().unwrap().push(reporter);
                    tower::service_fn(|_: ()| async { Ok::<(), std::convert::Infallible>(()) })
                },
            ))
            .unwrap();
        let reporter = reporters.lock().unwrap()[0].clone();
        reporter.report(Connectivity::Disconnected);

        let waiting = deep_in_backoff(reporter, 4);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // DNS answers with the same address again: the connector tries at its initial delay.
        publisher.publish(announced);
        let waited = waiting.await.unwrap();
        assert!(
            waited >= Duration::from_secs(1),
            "not sooner than the initial delay: {waited:?}"
        );
        assert!(
            waited <= Duration::from_secs(2),
            "brought forward: {waited:?}"
        );
    }
}
