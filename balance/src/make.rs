//! Making one service per endpoint, and letting it report its connection state.
//!
//! The balancer calls a [`MakeEndpoint`] once for each endpoint that joins the discovery set
//! (off the request path), keeps the service while the address stays in the set, and clones it
//! for each request sent to the endpoint. A closure `FnMut(&Endpoint) -> S` is a
//! `MakeEndpoint`; wrap a two-argument closure in [`WithConnectivity`] to receive a
//! [`ConnectivityReporter`] through which a connector that manages its own connections says
//! when one is up or down, so the balancer stops picking an endpoint the moment its connection
//! drops rather than after a failed request.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use waypost_discovery::Endpoint;

use crate::state::Connectivity;

/// Makes the service that carries requests to one endpoint.
pub trait MakeEndpoint: Send + 'static {
    /// The per-endpoint service. Cloned for each request, so it should be a cheap handle (a
    /// connection handle, a channel).
    type Service: Clone + Send + Sync + 'static;

    /// Makes the service for `endpoint`. `connectivity` reports its connection state.
    fn make_endpoint(
        &mut self,
        endpoint: &Endpoint,
        connectivity: ConnectivityReporter,
    ) -> Self::Service;
}

impl<F, S> MakeEndpoint for F
where
    F: FnMut(&Endpoint) -> S + Send + 'static,
    S: Clone + Send + Sync + 'static,
{
    type Service = S;

    fn make_endpoint(&mut self, endpoint: &Endpoint, _: ConnectivityReporter) -> S {
        self(endpoint)
    }
}

/// A [`MakeEndpoint`] from a closure that also takes the endpoint's [`ConnectivityReporter`].
#[derive(Clone)]
pub struct WithConnectivity<F>(pub F);

impl<F> fmt::Debug for WithConnectivity<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WithConnectivity(..)")
    }
}

impl<F, S> MakeEndpoint for WithConnectivity<F>
where
    F: FnMut(&Endpoint, ConnectivityReporter) -> S + Send + 'static,
    S: Clone + Send + Sync + 'static,
{
    type Service = S;

    fn make_endpoint(&mut self, endpoint: &Endpoint, connectivity: ConnectivityReporter) -> S {
        (self.0)(endpoint, connectivity)
    }
}

pub(crate) trait ConnectivityCell: Send + Sync {
    fn swap_connectivity(&self, connectivity: Connectivity) -> Connectivity;
    /// Sets whether the endpoint's health check reports it serving; `true` when that changed.
    fn set_serving(&self, serving: bool) -> bool;
    /// Asks the discovery source to look again (an endpoint's connection was lost).
    fn request_refresh(&self);
    /// Counts a failed connection attempt.
    fn connect_failed(&self);
}

/// Reports an endpoint's connection state to its balancer. Cheap to clone; holds no strong
/// reference, so it does not keep a removed endpoint alive.
#[derive(Clone)]
pub struct ConnectivityReporter {
    cell: Weak<dyn ConnectivityCell>,
    wake: Weak<Notify>,
    /// Shared by the balancer's endpoints: notified when one of them reconnects.
    retry: Weak<Notify>,
}

impl ConnectivityReporter {
    pub(crate) fn new(
        cell: Weak<dyn ConnectivityCell>,
        wake: &Arc<Notify>,
        retry: &Arc<Notify>,
    ) -> Self {
        ConnectivityReporter {
            cell,
            wake: Arc::downgrade(wake),
            retry: Arc::downgrade(retry),
        }
    }

    /// A reporter attached to nothing, for services made outside a balancer.
    pub fn detached() -> Self {
        struct Nothing;
        impl ConnectivityCell for Nothing {
            fn swap_connectivity(&self, connectivity: Connectivity) -> Connectivity {
                connectivity
            }
            fn set_serving(&self, _: bool) -> bool {
                false
            }
            fn request_refresh(&self) {}
            fn connect_failed(&self) {}
        }
        ConnectivityReporter {
            cell: Weak::<Nothing>::new(),
            wake: Weak::new(),
            retry: Weak::new(),
        }
    }

    /// Reports the connection state. A change wakes the balancer, which rebuilds its tables:
    /// a [`Disconnected`](Connectivity::Disconnected) endpoint is not picked (outside panic
    /// mode) until it is reported [`Connected`](Connectivity::Connected). Losing the connection
    /// also asks discovery to look again early (the endpoint may be gone). Reconnecting after
    /// being disconnected tells the balancer's other connectors to try again
    /// ([`retry_requested`](Self::retry_requested)).
    pub fn report(&self, connectivity: Connectivity) {
        let Some(cell) = self.cell.upgrade() else {
            return;
        };
        let previous = cell.swap_connectivity(connectivity);
        if previous != connectivity {
            if connectivity == Connectivity::Disconnected {
                cell.request_refresh();
            }
            if connectivity == Connectivity::Connected
                && previous == Connectivity::Disconnected
                && let Some(retry) = self.retry.upgrade()
            {
                // An outage that ends for one endpoint often ends for all (a network or a
                // rolling restart): the others need not wait out long backoffs.
                retry.notify_waiters();
            }
            if let Some(wake) = self.wake.upgrade() {
                wake.notify_one();
            }
        }
    }

    /// Reports what the endpoint's active health check says (gRPC's `grpc.health.v1.Health`,
    /// an HTTP probe): an endpoint reported not serving gets no new requests (outside panic
    /// mode; requests in flight finish) until it is reported serving again. Endpoints start
    /// serving. It counts as unhealthy for the panic threshold, as an ejection does. A change
    /// wakes the balancer, which rebuilds its tables.
    pub fn report_serving(&self, serving: bool) {
        let Some(cell) = self.cell.upgrade() else {
            return;
        };
        if cell.set_serving(serving)
            && let Some(wake) = self.wake.upgrade()
        {
            wake.notify_one();
        }
    }

    /// Reports a failed attempt to connect to the endpoint (refused, timed out, a failed TLS
    /// or HTTP/2 handshake). It only counts (`waypost_connect_failures_total`, feature
    /// `metrics`): whether the endpoint may be picked follows [`report`](Self::report).
    pub fn report_connect_failure(&self) {
        if let Some(cell) = self.cell.upgrade() {
            cell.connect_failed();
        }
    }

    /// Completes when another endpoint of the same balancer reconnects after being
    /// disconnected, or when discovery answers (with a new set or the same one) while an
    /// endpoint of the balancer is disconnected. A connector backing off should then try again
    /// soon (no sooner than its own minimum delay): whatever kept the endpoints away may be over
    /// for this one too, and discovery still announces its address.
    /// Never completes for a [`detached`](Self::detached) reporter or once the balancer is gone.
    pub async fn retry_requested(&self) {
        match self.retry.upgrade() {
            Some(retry) => retry.notified().await,
            None => std::future::pending().await,
        }
    }

    /// `true` while the endpoint is still in its balancer.
    pub fn is_attached(&self) -> bool {
        self.cell.strong_count() > 0
    }
}

impl fmt::Debug for ConnectivityReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectivityReporter")
            .field("attached", &self.is_attached())
            .finish()
    }
}
