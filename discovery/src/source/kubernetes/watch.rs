//! The watch task: kube-runtime's watcher in, endpoint sets and health out.
//!
//! One task per target follows `watcher(Api<EndpointSlice>)` with the label selector
//! `kubernetes.io/service-name=<service>` in the target's namespace, feeds every event into the
//! [`SliceCache`], and publishes the merged set after every change. What the task adds to the
//! watcher:
//!
//! - **Relists are atomic.** `Init` starts a new map in the cache, `InitApply` fills it,
//!   `InitDone` swaps it in and publishes once. A relist whose result equals the current set
//!   publishes no new revision, so a relist after `410 Gone` never flaps the set to empty.
//! - **Failures keep the set and show in health.** Every watcher error is reported through
//!   [`Publisher::report_failure`] as a [`DiscoveryError`] naming the target, with the watcher's
//!   error as its cause, after which the task waits (exponential backoff with jitter) before it
//!   polls the watcher again. The watcher itself resumes a dropped watch from the last
//!   resourceVersion and relists after `410 Gone`. One expected event is not a failure: the
//!   in-stream `410 Expired` of a compacted history, which is logged and relisted.
//! - **Recovery is seen.** The watcher says nothing when a watch it restarted succeeds, so the
//!   task's client is wrapped to notice every successful watch response for this target; after a
//!   failure that marks the source current again, without waiting for the next change. Only a
//!   success after the failure counts: a watch that the server accepts and fails at once keeps
//!   the source failing.
//! - **The HTTP-410 trap is escaped.** A server (or a proxy in front of it) that answers the
//!   watch request itself with HTTP status 410, instead of 200 and an in-stream `ERROR` event,
//!   makes kube's watcher retry the same expired resourceVersion forever. The task recognizes
//!   that error, drops the watcher and starts a new one, which lists again.
//! - **No EndpointSlices is an answer, and is said.** A Service with no slice at all (missing,
//!   `ExternalName`, or selectorless with nobody writing slices), or whose slices lack the
//!   target's port, publishes the empty set and reports a
//!   [`NotFound`](DiscoveryErrorKind::NotFound) error in health instead of silently waiting.
//! - **It stops when nobody reads, or when asked.** The task ends when
//!   [`Publisher::should_stop`] completes: every reader is gone, or its `SourceHandle` was shut
//!   down.
//!
//! Refresh requests ([`Endpoints::request_refresh`](crate::Endpoints::request_refresh)) are
//! ignored: the watch pushes every change as it happens, and a connection failure to one
//! endpoint is no evidence that the API server's view is stale, so relisting on it would only
//! multiply the load on the API server by the number of clients.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cache::{Applied, CacheStatus, SliceCache};
use super::retry::Retry;
use crate::endpoints::Publisher;
use crate::error::{DiscoveryError, DiscoveryErrorKind};

type SliceEvents = Pin<Box<dyn Stream<Item = watcher::Result<Event<EndpointSlice>>> + Send>>;

/// Everything the task needs, moved into it by `KubernetesSource::spawn`.
pub(super) struct WatchTask {
    pub(super) publisher: Publisher,
    pub(super) api: Api<EndpointSlice>,
    pub(super) config: watcher::Config,
    pub(super) cache: SliceCache,
    pub(super) retry: Retry,
    pub(super) probe: Arc<WatchProbe>,
    pub(super) namespace: String,
    /// A watcher error is the last thing reported in health.
    pub(super) watch_failing: bool,
}

impl WatchTask {
    pub(super) async fn run(mut self) {
        let mut events = self.watch();
        loop {
            let next = tokio::select! {
                biased;
                () = self.publisher.should_stop() => break,
                () = self.probe.succeeded() => {
                    self.watch_established();
                    continue;
                }
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => self.handle(event),
                Some(Err(error)) => {
                    // A watch accepted before this error (even in the same poll, when the
                    // server fails it at once) is no recovery from it.
                    self.probe.forget();
                    let (replace, delay) = self.handle_error(error);
                    if replace {
                        events = self.watch();
                    }
                    tokio::select! {
                        () = self.publisher.should_stop() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                None => {
                    // The watcher never ends its stream; start a new one should it ever do.
                    events = self.watch();
                }
            }
        }
        tracing::debug!(
            target: "waypost::discovery",
            target = %self.publisher.target(),
            "EndpointSlice watch stopped (no readers left, or shut down)"
        );
    }

    fn watch(&self) -> SliceEvents {
        watcher::watcher(self.api.clone(), self.config.clone()).boxed()
    }

    fn handle(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Init => {
                tracing::debug!(
                    target: "waypost::discovery",
                    target = %self.publisher.target(),
                    "listing EndpointSlices"
                );
                self.cache.begin_relist();
            }
            Event::InitApply(slice) => {
                let applied = self.cache.apply(&slice);
                self.log_unusable(&applied);
            }
            Event::InitDone => {
                let changed = self.cache.finish_relist();
                self.retry.listed();
                tracing::debug!(
                    target: "waypost::discovery",
                    target = %self.publisher.target(),
                    slices = self.cache.slice_count(),
                    changed,
                    "EndpointSlices listed"
                );
                self.publish();
            }
            Event::Apply(slice) => {
                self.retry.event();
                let applied = self.cache.apply(&slice);
                self.log_unusable(&applied);
                tracing::trace!(
                    target: "waypost::discovery",
                    target = %self.publisher.target(),
                    slice = slice.metadata.name.as_deref().unwrap_or_default(),
                    changed = applied.is_changed(),
                    "EndpointSlice applied"
                );
                if !matches!(applied, Applied::Unchanged) {
                    self.publish();
                }
            }
            Event::Delete(slice) => {
                self.retry.event();
                let name = slice.metadata.name.as_deref().unwrap_or_default();
                let removed = self.cache.delete_slice(&slice);
                tracing::trace!(
                    target: "waypost::discovery",
                    target = %self.publisher.target(),
                    slice = name,
                    removed,
                    "EndpointSlice deleted"
                );
                if removed {
                    self.publish();
                }
            }
        }
    }

    /// Publishes the merged set, then reports in health when it is not a usable answer.
    fn publish(&mut self) {
        if !self.cache.is_listed() || self.cache.is_relisting() {
            return;
        }
        self.publisher.publish_set(self.cache.endpoint_set());
        self.watch_failing = false;
        let detail = match self.cache.status() {
            CacheStatus::Ready | CacheStatus::Unlisted => return,
            CacheStatus::NoSlices => format!(
                "Service `{}` in namespace `{}` has no EndpointSlices: it does not exist, is an \
                 ExternalName Service, or has no selector and no EndpointSlices written for it",
                self.cache.service(),
                self.namespace,
            ),
            CacheStatus::NoMatchingPort { offered } => format!(
                "no EndpointSlice of Service `{}` in namespace `{}` has the target's port; \
                 the slices offer {}",
                self.cache.service(),
                self.namespace,
                offered.join(", "),
            ),
            CacheStatus::NoUsableSlice { slices } => format!(
                "none of the {slices} EndpointSlices of Service `{}` in namespace `{}` is usable \
                 (see the warnings that name them)",
                self.cache.service(),
                self.namespace,
            ),
        };
        let error = DiscoveryError::new(
            self.publisher.target_arc(),
            DiscoveryErrorKind::NotFound,
            detail,
        );
        self.publisher.report_failure(error);
    }

    /// A watch request for this target just succeeded: after a failure, the source is current
    /// again even if nothing changed.
    fn watch_established(&mut self) {
        if self.watch_failing && self.cache.is_listed() && !self.cache.is_relisting() {
            tracing::info!(
                target: "waypost::discovery",
                target = %self.publisher.target(),
                "EndpointSlice watch re-established"
            );
            self.publish();
        }
    }

    fn log_unusable(&self, applied: &Applied) {
        if let Applied::Unusable { error, .. } = applied {
            tracing::warn!(
                target: "waypost::discovery",
                target = %self.publisher.target(),
                slice = error.slice(),
                reason = %error.reason(),
                "{error}"
            );
        }
    }

    /// Logs or reports a watcher error; returns whether the watcher must be replaced, and how
    /// long to wait before polling it again.
    fn handle_error(&mut self, error: watcher::Error) -> (bool, Duration) {
        let now = Instant::now();
        let target = self.publisher.target_arc();
        let what = format!(
            "EndpointSlices of Service `{}` in namespace `{}`",
            self.cache.service(),
            self.namespace
        );
        match classify(&error) {
            ErrorClass::Expired => {
                tracing::info!(
                    target: "waypost::discovery",
                    target = %target,
                    "the watch of {what} expired (410 Gone); listing them again"
                );
                (false, self.retry.expired(now))
            }
            ErrorClass::HttpGoneTrap => {
                tracing::warn!(
                    target: "waypost::discovery",
                    target = %target,
                    "the API server answered the watch of {what} with HTTP status 410 instead of \
                     an in-stream 410 event; restarting the watch with a new list"
                );
                self.publisher.report_failure(DiscoveryError::with_source(
                    target,
                    DiscoveryErrorKind::Api,
                    format!("watching {what}: HTTP status 410 Gone; listing them again"),
                    error,
                ));
                self.watch_failing = true;
                (true, self.retry.failure(now))
            }
            ErrorClass::Failure(kind, doing) => {
                let hint = if status_code(&error) == Some(403) {
                    format!(
                        " (forbidden: the client needs get, list and watch on endpointslices \
                         of API group discovery.k8s.io in namespace `{}`)",
                        self.namespace
                    )
                } else {
                    String::new()
                };
                self.publisher.report_failure(DiscoveryError::with_source(
                    target,
                    kind,
                    format!("{doing} {what} failed{hint}; keeping the last good endpoint set"),
                    error,
                ));
                self.watch_failing = true;
                (false, self.retry.failure(now))
            }
        }
    }
}

enum ErrorClass {
    /// The in-stream `410 Expired`: the watcher relists; routine.
    Expired,
    /// HTTP status 410 on the watch request: kube's watcher would retry it forever.
    HttpGoneTrap,
    /// Anything else: reported.
    Failure(DiscoveryErrorKind, &'static str),
}

fn classify(error: &watcher::Error) -> ErrorClass {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => ErrorClass::Expired,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410 => {
            ErrorClass::HttpGoneTrap
        }
        watcher::Error::InitialListFailed(_) => {
            ErrorClass::Failure(DiscoveryErrorKind::Api, "listing")
        }
        watcher::Error::WatchStartFailed(_)
        | watcher::Error::WatchError(_)
        | watcher::Error::WatchFailed(_) => {
            ErrorClass::Failure(DiscoveryErrorKind::Api, "watching")
        }
        watcher::Error::NoResourceVersion => {
            ErrorClass::Failure(DiscoveryErrorKind::InvalidData, "following")
        }
    }
}

/// The HTTP status code of an API error, in-stream or as the response to a request.
fn status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// Wakes the task when a watch request of its target succeeds, so it sees a restarted watch
/// succeed.
#[derive(Debug, Default)]
pub(super) struct WatchProbe {
    notify: Notify,
}

impl WatchProbe {
    fn succeeded(&self) -> impl Future<Output = ()> + '_ {
        self.notify.notified()
    }

    fn record(&self) {
        self.notify.notify_one();
    }

    /// Drops a success recorded and not yet seen: it came before a failure.
    fn forget(&self) {
        let _ = self.notify.notified().now_or_never();
    }
}

/// The client a task uses: the shared client, with a look at each response.
///
/// Wrapping keeps one connection pool for all targets (the shared client does the requests)
/// while each target learns when its own watch requests succeed.
pub(super) fn probing_client(client: Client, probe: Arc<WatchProbe>, namespace: &str) -> Client {
    Client::new(ProbeService { client, probe }, namespace)
}

#[derive(Clone)]
struct ProbeService {
    client: Client,
    probe: Arc<WatchProbe>,
}

impl tower::Service<http::Request<kube::client::Body>> for ProbeService {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The shared client has its own buffer; readiness is checked in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let client = self.client.clone();
        let probe = Arc::clone(&self.probe);
        let is_watch = request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
        Box::pin(async move {
            let response = client.send(request).await?;
            if is_watch && response.status().is_success() {
                probe.record();
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn the_http_410_trap_is_told_apart_from_the_in_stream_410() {
        let gone = || Status::failure("too old resource version", "Expired").with_code(410);
        assert!(matches!(
            classify(&watcher::Error::WatchError(Box::new(gone()))),
            ErrorClass::Expired
        ));
        assert!(matches!(
            classify(&watcher::Error::WatchStartFailed(kube::Error::Api(
                Box::new(gone())
            ))),
            ErrorClass::HttpGoneTrap
        ));
        let internal = Status::failure("boom", "InternalError").with_code(500);
        let error = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(internal)));
        assert!(matches!(
            classify(&error),
            ErrorClass::Failure(DiscoveryErrorKind::Api, "listing")
        ));
        assert!(matches!(
            classify(&watcher::Error::NoResourceVersion),
            ErrorClass::Failure(DiscoveryErrorKind::InvalidData, _)
        ));
    }
}
