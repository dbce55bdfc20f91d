//! The fake API server itself, through kube's own `Api`: the protocol details the source's
//! tests rely on, checked where they are made.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use waypost_tests::kube_api::FakeApiServer;
use waypost_tests::kube_api::slices::{endpoint_slice, ep};

const SELECTOR: &str = "kubernetes.io/service-name=api";

fn name(slice: &EndpointSlice) -> &str {
    slice.metadata.name.as_deref().unwrap_or_default()
}

async fn api(rig: &FakeApiServer) -> Api<EndpointSlice> {
    Api::namespaced(rig.client().await, "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_select_by_label_and_page_from_one_version() {
    let rig = FakeApiServer::start().await;
    for i in 0..3 {
        rig.apply(
            endpoint_slice(&format!("api-{i}"), "api")
                .port("http", 80)
                .endpoint(ep("10.0.0.1")),
        );
    }
    rig.apply(endpoint_slice("web-0", "web").port("http", 80));
    rig.apply(
        endpoint_slice("api-x", "api")
            .namespace("other")
            .port("http", 80),
    );
    let api = api(&rig).await;

    let all = api
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap();
    assert_eq!(
        all.items.iter().map(name).collect::<Vec<_>>(),
        ["api-0", "api-1", "api-2"]
    );
    assert_eq!(all.metadata.resource_version.as_deref(), Some("5"));
    // List items come without kind and apiVersion, as from a real server; kube fills nothing in.
    assert!(rig.get("default", "api-0").unwrap().get("kind").is_none());

    // Page 1, then a write, then page 2: page 2 is served from page 1's version.
    let first = api
        .list(&ListParams::default().labels(SELECTOR).limit(2))
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(name).collect::<Vec<_>>(),
        ["api-0", "api-1"]
    );
    let token = first.metadata.continue_.clone().unwrap();
    rig.apply(endpoint_slice("api-3", "api").port("http", 80));
    let second = api
        .list(
            &ListParams::default()
                .labels(SELECTOR)
                .limit(2)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_eq!(second.items.iter().map(name).collect::<Vec<_>>(), ["api-2"]);
    assert_eq!(second.metadata.resource_version.as_deref(), Some("5"));
    assert!(second.metadata.continue_.is_none());

    // After a compaction the token has expired: 410, as a real server answers.
    rig.compact();
    let error = api
        .list(
            &ListParams::default()
                .labels(SELECTOR)
                .limit(2)
                .continue_token(&token),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("an API error expected, got {error}");
    };
    assert_eq!(status.code, 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_replay_follow_and_turn_label_changes_into_added_and_deleted() {
    let rig = FakeApiServer::start().await;
    let start = rig.apply(endpoint_slice("api-0", "api").port("http", 80));
    rig.apply(endpoint_slice("api-1", "api").port("http", 80));
    let api = api(&rig).await;
    let params = WatchParams::default().labels(SELECTOR).timeout(30);
    let mut events = api
        .watch(&params, &start.to_string())
        .await
        .unwrap()
        .boxed();

    // Replayed: what happened after `start`.
    let Some(Ok(WatchEvent::Added(slice))) = events.next().await else {
        panic!("a replayed ADDED event");
    };
    assert_eq!(name(&slice), "api-1");

    // Live: an update, a label change away (DELETED) and back (ADDED), a delete.
    rig.apply(endpoint_slice("api-0", "api").port("http", 81));
    rig.apply(endpoint_slice("api-1", "web").port("http", 80));
    rig.apply(endpoint_slice("api-1", "api").port("http", 80));
    rig.apply(endpoint_slice("web-0", "web").port("http", 80));
    rig.delete("default", "api-0");
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(s) => kinds.push(format!("ADDED {}", name(&s))),
            WatchEvent::Modified(s) => kinds.push(format!("MODIFIED {}", name(&s))),
            WatchEvent::Deleted(s) => kinds.push(format!("DELETED {}", name(&s))),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => panic!("unexpected error event {status:?}"),
        }
    }
    assert_eq!(
        kinds,
        [
            "MODIFIED api-0",
            "DELETED api-1",
            "ADDED api-1",
            "DELETED api-0"
        ]
    );

    // Bookmarks decode in kube (they need apiVersion and kind) and carry the version.
    rig.send_bookmarks();
    let Some(Ok(WatchEvent::Bookmark(bookmark))) = events.next().await else {
        panic!("a bookmark");
    };
    assert_eq!(
        bookmark.metadata.resource_version,
        rig.resource_version().to_string()
    );
    assert_eq!(bookmark.types.kind, "EndpointSlice");

    // An expired watch: HTTP 200, then the ERROR event with 410, then the end.
    rig.expire_watches();
    let Some(Ok(WatchEvent::Error(status))) = events.next().await else {
        panic!("an ERROR event");
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(events.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_version_gets_the_in_stream_410() {
    let rig = FakeApiServer::start().await;
    let old = rig.apply(endpoint_slice("api-0", "api").port("http", 80));
    rig.advance_resource_version(5);
    rig.compact();
    let api = api(&rig).await;
    let params = WatchParams::default().labels(SELECTOR);
    let mut events = api.watch(&params, &old.to_string()).await.unwrap().boxed();
    let Some(Ok(WatchEvent::Error(status))) = events.next().await else {
        panic!("an ERROR event");
    };
    assert_eq!(status.code, 410);
    assert!(events.next().await.is_none());

    // The injected fault answers the request itself with 410 instead.
    rig.fail_watches_with_http_gone(1);
    let Err(kube::Error::Api(status)) = api
        .watch(&params, &rig.resource_version().to_string())
        .await
    else {
        panic!("HTTP 410 expected");
    };
    assert_eq!(status.code, 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_end_their_initial_events_with_an_annotated_bookmark() {
    let rig = FakeApiServer::start().await;
    rig.apply(endpoint_slice("api-0", "api").port("http", 80));
    rig.apply(endpoint_slice("api-1", "api").port("http", 80));
    let api = api(&rig).await;
    let params = WatchParams::streaming_lists().labels(SELECTOR);
    let mut events = api.watch(&params, "0").await.unwrap().boxed();
    let mut added = Vec::new();
    let bookmark = loop {
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(slice) => added.push(name(&slice).to_owned()),
            WatchEvent::Bookmark(bookmark) => break bookmark,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(added, ["api-0", "api-1"]);
    assert_eq!(
        bookmark
            .metadata
            .annotations
            .get("k8s.io/initial-events-end")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(bookmark.metadata.resource_version, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_faults_answer_with_the_status_asked_for() {
    let rig = FakeApiServer::start().await;
    // A client without kube's retries, to see the raw answer.
    let mut config = kube::Config::new(rig.url().parse().unwrap());
    config.default_retry = false;
    let api: Api<EndpointSlice> =
        Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    rig.fail_lists(429, 1);
    let Err(kube::Error::Api(status)) = api.list(&ListParams::default()).await else {
        panic!("429 expected");
    };
    assert_eq!(status.code, 429);
    assert!(api.list(&ListParams::default()).await.is_ok());
}
