//! An adapter that lets tower's own balancers consume an [`Endpoints`] handle.
//!
//! tower's balancers (`tower::balance::p2c::Balance`) take a [`tower::discover::Discover`]: a
//! stream of [`Change::Insert`] and [`Change::Remove`] keyed by endpoint. [`DiscoverEndpoints`]
//! turns successive snapshots into exactly those changes: on first poll an insert for every
//! endpoint of the current set, then, for each newer set, a remove for every address that left and
//! an insert for every address that arrived. An endpoint whose address stays but whose attributes
//! changed (weight, readiness, zone) is inserted again with a freshly made service, which tower
//! treats as a replacement. The stream ends when the source closes.
//!
//! The per-endpoint service comes from a function of the [`Endpoint`], typically one that
//! connects to its address.
//!
//! ```
//! use futures_util::StreamExt;
//! use tower::discover::Change;
//! use waypost_discovery::{Endpoint, Publisher};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut publisher = Publisher::new("static:///demo");
//! publisher.publish([Endpoint::new("127.0.0.1:8080".parse().unwrap())]);
//!
//! // A real program makes a client service here; a label is enough to show the changes.
//! let mut discover = publisher
//!     .endpoints()
//!     .discover(|endpoint: &Endpoint| format!("client for {endpoint}"));
//! match discover.next().await.unwrap().unwrap() {
//!     Change::Insert(address, service) => {
//!         assert_eq!(address.port(), 8080);
//!         assert_eq!(service, "client for 127.0.0.1:8080");
//!     }
//!     Change::Remove(_) => unreachable!("the first changes are inserts"),
//! }
//! # }
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tower::discover::Change;

use crate::endpoint::Endpoint;
use crate::endpoints::Endpoints;
use crate::set::EndpointSet;

type SetStream = Pin<Box<dyn Stream<Item = Arc<EndpointSet>> + Send>>;

/// A [`tower::discover::Discover`] over an [`Endpoints`] handle, keyed by address.
///
/// Made by [`Endpoints::discover`].
pub struct DiscoverEndpoints<F, S> {
    sets: SetStream,
    current: Arc<EndpointSet>,
    pending: VecDeque<Change<SocketAddr, S>>,
    make_service: F,
}

impl Endpoints {
    /// A [`tower::discover::Discover`] that makes one service per endpoint with `make_service`.
    pub fn discover<F, S>(&self, make_service: F) -> DiscoverEndpoints<F, S>
    where
        F: FnMut(&Endpoint) -> S,
    {
        DiscoverEndpoints {
            sets: Box::pin(self.watch().into_stream()),
            current: Arc::new(EndpointSet::empty()),
            pending: VecDeque::new(),
            make_service,
        }
    }
}

impl<F, S> DiscoverEndpoints<F, S>
where
    F: FnMut(&Endpoint) -> S,
{
    fn queue_changes(&mut self, next: Arc<EndpointSet>) {
        let diff = self.current.diff(&next);
        for removed in diff.removed {
            self.pending.push_back(Change::Remove(removed.address()));
        }
        let inserted = diff
            .added
            .into_iter()
            .chain(diff.changed.into_iter().map(|(_, new)| new));
        for endpoint in inserted {
            let service = (self.make_service)(endpoint);
            self.pending
                .push_back(Change::Insert(endpoint.address(), service));
        }
        self.current = next;
    }
}

// No field is structurally pinned: the set stream is boxed and the rest is moved freely.
impl<F, S> Unpin for DiscoverEndpoints<F, S> {}

impl<F, S> Stream for DiscoverEndpoints<F, S>
where
    F: FnMut(&Endpoint) -> S,
{
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match this.sets.as_mut().poll_next(cx) {
                Poll::Ready(Some(next)) => this.queue_changes(next),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<F, S> fmt::Debug for DiscoverEndpoints<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverEndpoints")
            .field("revision", &self.current.revision())
            .field("pending", &self.pending.len())
            .finish()
    }
}
