//! The HTTP side of the fake API server: connections, routing, list and watch.
//!
//! Every connection is served by hyper's HTTP/1 server on its own task. A watch is a response
//! whose body is fed by a task of its own: it writes the replayed (or initial) events, then
//! follows the store and the rig's signals until the client goes away, the timeout ends it, or a
//! signal drops or expires it. A connection can also be reset: its socket is closed with
//! `SO_LINGER` 0, so the client reads a TCP RST instead of an orderly end of the stream.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use super::query::{LabelSelector, Query};
use super::store::{Change, ChangeKind, Key, Typed, labels, status};
use super::{API_VERSION, KIND, LIST_KIND, RequestKind, RequestRecord, Shared, Signals};

type Body = BoxBody<Bytes, Infallible>;

/// Accepts connections until the task is aborted (when the rig is dropped), which also aborts
/// every connection.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "fake API server: accept failed");
                    continue;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(stream, Arc::clone(&shared)));
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableStream {
        inner: stream,
        reset: Arc::clone(&reset),
    });
    let mut resets = shared.resets.subscribe();
    resets.borrow_and_update();
    let service = hyper::service::service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "fake API server: connection ended with an error");
            }
        }
        _ = resets.changed() => {
            // Flag first, then drop the connection: its stream now closes with a reset.
            reset.store(true, Ordering::Release);
        }
    }
}

/// A TCP stream that, once told to, closes with a reset instead of a FIN.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Which collection a path names.
enum Route {
    /// `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`
    Namespaced(String),
    /// `/apis/discovery.k8s.io/v1/endpointslices`
    AllNamespaces,
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/apis/discovery.k8s.io/v1/")?;
    if rest == "endpointslices" {
        return Some(Route::AllNamespaces);
    }
    let namespace = rest
        .strip_prefix("namespaces/")?
        .strip_suffix("/endpointslices")?;
    (!namespace.is_empty() && !namespace.contains('/')).then(|| Route::Namespaced(namespace.into()))
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or_default().to_owned();
    let query = Query::parse(&raw_query);
    let kind = match (&query, request.method()) {
        (Ok(q), &Method::GET) if q.watch => RequestKind::Watch,
        (Ok(_), &Method::GET) => RequestKind::List,
        _ => RequestKind::Other,
    };
    let response = match (request.method(), route(&path), query.clone()) {
        (_, _, Err(bad)) => status_response(StatusCode::BAD_REQUEST, "BadRequest", &bad.0),
        (&Method::GET, Some(route), Ok(query)) => {
            let namespace = match &route {
                Route::Namespaced(namespace) => Some(namespace.as_str()),
                Route::AllNamespaces => None,
            };
            if query.watch {
                // A held watch waits here, as behind a network partition.
                let _ = shared.hold_watches.subscribe().wait_for(|held| !held).await;
                watch(&shared, namespace, &query)
            } else {
                if query.continue_token.is_some() {
                    // A held page waits here: the list stops half way.
                    let mut hold = shared.hold_continued_lists.subscribe();
                    if *hold.borrow_and_update() {
                        shared.held_lists.fetch_add(1, Ordering::AcqRel);
                        let _ = hold.wait_for(|held| !held).await;
                        shared.held_lists.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                list(&shared, namespace, &query)
            }
        }
        (&Method::GET, None, _) => status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        ),
        _ => status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server only serves list and watch",
        ),
    };
    shared.record(RequestRecord {
        at: tokio::time::Instant::now(),
        kind,
        path,
        raw_query,
        query: query.ok(),
        status: response.status().as_u16(),
    });
    response
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status(code.as_u16(), reason, message))
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn selected(
    object: &Value,
    key: &Key,
    namespace: Option<&str>,
    selector: Option<&LabelSelector>,
    ignore_selector: bool,
) -> bool {
    namespace.is_none_or(|ns| key.0 == ns)
        && (ignore_selector || selector.is_none_or(|selector| selector.matches(&labels(object))))
}

fn list(shared: &Shared, namespace: Option<&str>, query: &Query) -> Response<Body> {
    let namespace = namespace.filter(|_| !shared.faults().ignore_namespace);
    if let Some(code) = shared.take_list_fault() {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return status_response(
            code,
            code.canonical_reason().unwrap_or("Failure"),
            "injected list failure",
        );
    }
    let ignore_selector = shared.faults().ignore_label_selector;
    let store = shared.store();
    let (resource_version, after) = match query.continue_token.as_deref() {
        Some(token) => match parse_continue(token) {
            Some((rv, key)) => (rv, Some(key)),
            None => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            }
        },
        None => (store.resource_version(), None),
    };
    let state = match store.state_at(resource_version) {
        Ok(state) => state,
        Err(_) => {
            return status_response(
                StatusCode::GONE,
                "Expired",
                "The provided continue parameter is too old to display a consistent list \
                 result. You can start a new list without the continue parameter.",
            );
        }
    };
    let mut matching = state
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
        .filter(|(key, object)| {
            selected(
                object,
                key,
                namespace,
                query.label_selector.as_ref(),
                ignore_selector,
            )
        });
    let limit = query.limit.unwrap_or(usize::MAX);
    let page: Vec<(&Key, &Arc<Value>)> = matching.by_ref().take(limit).collect();
    let remaining = matching.count();
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if remaining > 0
        && let Some((last, _)) = page.last()
    {
        metadata["continue"] = Value::from(format!("{resource_version}:{}/{}", last.0, last.1));
        metadata["remainingItemCount"] = Value::from(remaining);
    }
    let items: Vec<&Value> = page.into_iter().map(|(_, object)| &**object).collect();
    let body = serde_json::to_vec(&ListBody {
        metadata: &metadata,
        items: &items,
    })
    .unwrap_or_default();
    shared
        .list_bytes
        .fetch_add(body.len() as u64, Ordering::AcqRel);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// A list response, its items serialized from the store without a copy.
struct ListBody<'a> {
    metadata: &'a Value,
    items: &'a [&'a Value],
}

impl serde::Serialize for ListBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("kind", LIST_KIND)?;
        map.serialize_entry("apiVersion", API_VERSION)?;
        map.serialize_entry("metadata", self.metadata)?;
        map.serialize_entry("items", self.items)?;
        map.end()
    }
}

fn parse_continue(token: &str) -> Option<(u64, Key)> {
    let (rv, key) = token.split_once(':')?;
    let (namespace, name) = key.split_once('/')?;
    Some((rv.parse().ok()?, (namespace.into(), name.into())))
}

fn bookmark(resource_version: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({
        "type": "BOOKMARK",
        "object": { "kind": KIND, "apiVersion": API_VERSION, "metadata": metadata },
    })
}

fn expired_event(resource_version: u64, oldest: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": status(
            410,
            "Expired",
            &format!("too old resource version: {resource_version} ({oldest})"),
        ),
    })
}

fn line(event: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The line of a watch event of type `kind` (`ADDED`, `MODIFIED`, `DELETED`) for a stored
/// object, serialized from it without a copy.
fn object_line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = Vec::with_capacity(4096);
    bytes.extend_from_slice(b"{\"type\":\"");
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(b"\",\"object\":");
    let typed = Typed {
        object,
        kind: KIND,
        api_version: API_VERSION,
    };
    // Serializing a JSON value into memory cannot fail.
    let _ = serde_json::to_writer(&mut bytes, &typed);
    bytes.extend_from_slice(b"}\n");
    Bytes::from(bytes)
}

fn watch(shared: &Arc<Shared>, namespace: Option<&str>, query: &Query) -> Response<Body> {
    let namespace = namespace.filter(|_| !shared.faults().ignore_namespace);
    let exact = match query.exact_resource_version() {
        Ok(rv) => rv,
        Err(bad) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &bad.0),
    };
    if exact.is_some() && shared.take_watch_gone_fault() {
        return status_response(
            StatusCode::GONE,
            "Expired",
            "injected: the watch answered with HTTP status 410",
        );
    }
    let error_fault = exact
        .is_some()
        .then(|| shared.take_watch_error_fault())
        .flatten();
    let end_at_once = exact.is_some() && shared.faults().end_watches_at_once;
    let mut signals = shared.signals.subscribe();
    let seen_signals = *signals.borrow_and_update();
    let filter = EventFilter {
        namespace: namespace.map(str::to_owned),
        selector: query.label_selector.clone(),
        ignore_selector: shared.faults().ignore_label_selector,
    };

    let mut initial: Vec<Bytes> = Vec::new();
    let mut ended = false;
    let (live, cursor) = {
        let store = shared.store();
        // Subscribed under the store's lock: the writes after this snapshot, and only those.
        let live = shared.live.subscribe();
        let cursor = store.resource_version();
        match exact {
            Some(_) if let Some(code) = error_fault => {
                let reason = StatusCode::from_u16(code)
                    .ok()
                    .and_then(|code| code.canonical_reason())
                    .unwrap_or("Failure");
                initial.push(line(&json!({
                    "type": "ERROR",
                    "object": status(code, reason, "injected: the watch fails at once"),
                })));
                ended = true;
            }
            Some(_) if end_at_once => ended = true,
            Some(rv) if !query.send_initial_events => match store.changes_after(rv) {
                Ok(replay) => initial.extend(replay.iter().filter_map(|c| filter.event(c))),
                Err(expired) => {
                    initial.push(line(&expired_event(rv, expired.oldest)));
                    ended = true;
                }
            },
            _ => {
                // No version (or `sendInitialEvents`): the current objects first, as ADDED.
                for (key, object) in store.objects() {
                    if filter.selects(object, key) {
                        initial.push(object_line("ADDED", object));
                    }
                }
                if query.send_initial_events {
                    initial.push(line(&bookmark(cursor, true)));
                }
            }
        }
        (live, cursor)
    };

    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let stream = WatchStream {
        shared: Arc::clone(shared),
        sender,
        live,
        signals,
        seen_signals,
        filter,
        cursor,
        allow_bookmarks: query.allow_bookmarks,
        timeout: Duration::from_secs(query.timeout_seconds.unwrap_or(1800).max(1)),
    };
    tokio::spawn(stream.run(initial, ended));

    let body = receiver_stream(receiver).map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Which changes a watch sees.
struct EventFilter {
    namespace: Option<String>,
    selector: Option<LabelSelector>,
    ignore_selector: bool,
}

impl EventFilter {
    fn selects(&self, object: &Value, key: &Key) -> bool {
        selected(
            object,
            key,
            self.namespace.as_deref(),
            self.selector.as_ref(),
            self.ignore_selector,
        )
    }

    /// The watch event a change makes: objects that start to match are ADDED, objects that
    /// stop matching are DELETED.
    fn event(&self, change: &Change) -> Option<Bytes> {
        let now = self.selects(&change.object, &change.key);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|previous| self.selects(previous, &change.key));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            (ChangeKind::Deleted, true, _) => "DELETED",
            _ => return None,
        };
        Some(object_line(kind, &change.object))
    }
}

/// The task behind one watch response.
struct WatchStream {
    shared: Arc<Shared>,
    sender: mpsc::Sender<Bytes>,
    live: broadcast::Receiver<Arc<Change>>,
    signals: watch::Receiver<Signals>,
    seen_signals: Signals,
    filter: EventFilter,
    /// The newest version this watch has accounted for.
    cursor: u64,
    allow_bookmarks: bool,
    timeout: Duration,
}

/// Why a watch stream stops.
struct Stop;

impl WatchStream {
    async fn run(mut self, initial: Vec<Bytes>, ended: bool) {
        let _live = self.shared.watch_started();
        for event in initial {
            if self.send(event).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        loop {
            let step = tokio::select! {
                () = &mut deadline => {
                    // A real server sends a bookmark before it ends a watch at its timeout.
                    let _ = self.bookmark().await;
                    return;
                }
                () = self.sender.closed() => return,
                change = self.live.recv() => self.forward(change).await,
                changed = self.signals.changed() => match changed {
                    Ok(()) => self.signal().await,
                    Err(_) => Err(Stop),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, line: Bytes) -> Result<(), Stop> {
        let bytes = line.len() as u64;
        self.sender.send(line).await.map_err(|_| Stop)?;
        self.shared.watch_bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(())
    }

    async fn forward(
        &mut self,
        change: Result<Arc<Change>, broadcast::error::RecvError>,
    ) -> Result<(), Stop> {
        match change {
            Ok(change) => {
                if change.resource_version > self.cursor {
                    self.cursor = change.resource_version;
                    if let Some(event) = self.filter.event(&change) {
                        self.send(event).await?;
                    }
                }
                Ok(())
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow to follow: the client must relist, as with a real server.
                let oldest = self.shared.store().resource_version();
                let _ = self.send(line(&expired_event(self.cursor, oldest))).await;
                Err(Stop)
            }
            Err(broadcast::error::RecvError::Closed) => Err(Stop),
        }
    }

    async fn signal(&mut self) -> Result<(), Stop> {
        let now = *self.signals.borrow_and_update();
        if now.expire != self.seen_signals.expire {
            let oldest = self.shared.store().compacted();
            let _ = self.send(line(&expired_event(self.cursor, oldest))).await;
            return Err(Stop);
        }
        if now.error.0 != self.seen_signals.error.0 {
            let code = now.error.1;
            let reason = StatusCode::from_u16(code)
                .ok()
                .and_then(|code| code.canonical_reason())
                .unwrap_or("Failure");
            let event = json!({
                "type": "ERROR",
                "object": status(code, reason, "injected: the watch cannot go on"),
            });
            let _ = self.send(line(&event)).await;
            return Err(Stop);
        }
        if now.drop != self.seen_signals.drop {
            return Err(Stop);
        }
        if now.bookmark != self.seen_signals.bookmark {
            self.bookmark().await?;
        }
        self.seen_signals = now;
        Ok(())
    }

    /// Sends every pending write, then a bookmark at the store's current version (which other
    /// resources may have moved on), when the client allows bookmarks.
    async fn bookmark(&mut self) -> Result<(), Stop> {
        let (pending, newest) = {
            let store = self.shared.store();
            // Writes are sent while the store is locked: all up to `newest` are queued now.
            let mut pending = Vec::new();
            loop {
                match self.live.try_recv() {
                    Ok(change) => pending.push(change),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => return Err(Stop),
                    Err(_) => break,
                }
            }
            (pending, store.resource_version())
        };
        for change in pending {
            self.forward(Ok(change)).await?;
        }
        self.cursor = self.cursor.max(newest);
        if self.allow_bookmarks {
            self.send(line(&bookmark(self.cursor, false))).await?;
        }
        Ok(())
    }
}

fn receiver_stream(
    mut receiver: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
