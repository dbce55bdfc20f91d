//! The Kubernetes source against the fake API server: the watch protocol and its failures.
//! Relists after 410, resumed watches, list errors with backoff, the HTTP-410 trap, streaming
//! lists, pagination, watch timeouts, and stopping when nobody reads.
//!
//! Everything waits on conditions with a generous deadline; the only time assertions are lower
//! bounds that the backoff guarantees however slow the machine is.

use std::error::Error as _;
use std::time::Duration;

use waypost::discovery::DiscoveryErrorKind;
use waypost_tests::kube_api::slices::{SliceBuilder, endpoint_slice, ep};
use waypost_tests::kube_api::{FakeApiServer, RequestKind, RequestRecord, TEST_BACKOFF_MIN};
use waypost_tests::{eventually, wait_for_health, wait_for_set};

fn http_slice(name: &str) -> SliceBuilder {
    endpoint_slice(name, "api").port("http", 8080)
}

fn watches_after(rig: &FakeApiServer, count: usize) -> Vec<RequestRecord> {
    rig.requests_of(RequestKind::Watch)
        .into_iter()
        .skip(count)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_from_the_last_resource_version() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let first = endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;
    let last_seen = rig.resource_version();
    let watches = rig.watch_count();

    rig.drop_watches();
    eventually("a new watch", || {
        rig.watch_count() > watches && rig.live_watches() == 1
    })
    .await;
    let resumed = &watches_after(&rig, watches)[0];
    assert_eq!(resumed.resource_version(), Some(&*last_seen.to_string()));
    assert_eq!(
        rig.list_count(),
        1,
        "a dropped watch is resumed, not relisted"
    );

    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    let set = wait_for_set(&endpoints, "the new slice", |set| set.len() == 2).await;
    assert_eq!(set.revision(), first.revision() + 1);
    assert_eq!(rig.list_count(), 1);
    let health = endpoints.health();
    assert!(health.is_current());
    assert_eq!(
        health.total_failures(),
        0,
        "an orderly end is not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_is_a_failure_that_resumes_and_recovers_without_a_change() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let first = endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;
    let watches = rig.watch_count();

    rig.reset_connections();
    // The reset reaches kube as an error: the source reports it, keeps the set, resumes the
    // watch, and turns current again as soon as the new watch is accepted, without any change.
    let health = wait_for_health(&endpoints, "a reported failure, then recovery", |h| {
        h.total_failures() >= 1 && h.is_current()
    })
    .await;
    let error = health.last_error().unwrap();
    assert!(error.is_api(), "{error}");
    assert_eq!(error.target(), "kubernetes:///api:http");
    assert!(
        error.source().is_some(),
        "kube's error is kept as the cause"
    );
    assert!(rig.watch_count() > watches);
    assert_eq!(
        rig.list_count(),
        1,
        "a broken watch is resumed, not relisted"
    );
    assert_eq!(endpoints.load().revision(), first.revision());

    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "the new slice", |set| set.len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_watch_relists_without_flapping() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let first = endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    // The in-stream 410 on an open watch.
    rig.expire_watches();
    eventually("a relist", || rig.list_count() == 2).await;
    eventually("a new watch", || rig.live_watches() == 1).await;
    // The relist found the same slices: no new revision, and 410 is no failure.
    assert_eq!(endpoints.load().revision(), first.revision());
    assert_eq!(endpoints.health().total_failures(), 0);

    // The watch goes away (a partition); meanwhile api-a changes, api-b is deleted, and the
    // history is compacted. Resuming gets HTTP 200 and the in-stream 410 ERROR event, and the
    // relist sees both changes at once.
    let watches = rig.watch_count();
    let lists = rig.list_count();
    rig.hold_watches(true);
    rig.drop_watches();
    eventually("the watch gone", || rig.live_watches() == 0).await;
    rig.apply(
        http_slice("api-a")
            .endpoint(ep("10.0.0.1"))
            .endpoint(ep("10.0.0.3")),
    );
    rig.delete("default", "api-b");
    rig.advance_resource_version(10);
    rig.compact();
    rig.hold_watches(false);
    eventually("a relist after the compaction", || rig.list_count() > lists).await;
    let resumed = &watches_after(&rig, watches)[0];
    assert_eq!(resumed.status, 200, "the 410 comes inside the stream");
    let set = wait_for_set(&endpoints, "the relisted slices", |set| {
        set.contains(&"10.0.0.3:8080".parse().unwrap())
    })
    .await;
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.3:8080".parse().unwrap()
        ]
    );
    assert_eq!(
        set.revision(),
        first.revision() + 1,
        "one swap, no half-listed set"
    );
    assert_eq!(endpoints.health().total_failures(), 0);
}

/// kube's default backoff escalates on every in-stream 410 and resets only on a watch event, so
/// after a few compactions each change took seconds to show (0.4, 1.0, 1.8, 3.4 ... 27.8 s). The
/// source's backoff returns to its minimum after each successful relist: with a minimum of
/// 500 ms and no practical maximum, an escalating backoff would wait 2^9 x 500 ms (over a
/// minute, beyond the rig's patience) before the tenth change.
/// A watch that ends with an in-stream ERROR of another code than 410 (an API server that
/// cannot go on, permissions withdrawn): a failure, reported, that keeps the set and resumes
/// the watch from the last resourceVersion without a relist; the next accepted watch makes the
/// source current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_stream_error_other_than_410_resumes_the_watch_without_a_relist() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let first = endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    for code in [500u16, 403] {
        let last_seen = rig.resource_version().to_string();
        let watches = rig.watch_count();
        let failures = endpoints.health().total_failures();
        rig.error_watches(code);
        let health = wait_for_health(&endpoints, "a reported failure, then recovery", |h| {
            h.total_failures() > failures && h.is_current()
        })
        .await;
        eventually("the watch back", || rig.live_watches() == 1).await;
        let error = health.last_error().unwrap();
        assert!(error.is_api(), "{error}");
        assert!(error.detail().contains("watching"), "{error}");
        assert!(
            format!("{:?}", error.source().unwrap()).contains(&code.to_string()),
            "{error:?}"
        );
        let resumed = &watches_after(&rig, watches)[0];
        assert_eq!(resumed.resource_version(), Some(last_seen.as_str()));
        assert_eq!(rig.list_count(), 1, "resumed, not relisted, after {code}");
        assert_eq!(endpoints.load().revision(), first.revision());
    }

    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "a change on the resumed watch", |set| {
        set.len() == 2
    })
    .await;
}

/// Every watch is accepted (HTTP 200) and fails at once in its stream. The success came before
/// the failure, so it is no recovery: the failures keep counting up, and the source turns
/// current only when a watch stands again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_fails_as_soon_as_it_is_accepted_is_no_recovery() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    let first = endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    rig.fail_watches_in_stream(500, usize::MAX);
    rig.drop_watches();
    let health = wait_for_health(&endpoints, "failures in a row", |h| {
        h.consecutive_failures() >= 4
    })
    .await;
    assert!(health.is_failing());
    assert_eq!(rig.list_count(), 1, "resumed each time, never relisted");
    assert_eq!(endpoints.load().revision(), first.revision());

    rig.clear_faults();
    wait_for_health(&endpoints, "recovery", |h| h.is_current()).await;
    eventually("a watch that stands", || rig.live_watches() == 1).await;
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "a change", |set| set.len() == 2).await;
}

/// A relist after a compaction, in pages, finds that a slice was deleted meanwhile: until the
/// last page is in, the old set (with that slice) keeps serving; then one new revision drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_that_drops_a_slice_serves_the_old_set_until_it_is_complete() {
    let rig = FakeApiServer::start().await;
    for i in 0..3 {
        rig.apply(http_slice(&format!("api-{i}")).endpoint(ep(&format!("10.0.0.{}", i + 1))));
    }
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        .page_size(1)
        .spawn();
    let first = endpoints.resolved().await.unwrap();
    assert_eq!(first.len(), 3);
    eventually("a watch", || rig.live_watches() == 1).await;

    rig.hold_watches(true);
    rig.drop_watches();
    eventually("the watch gone", || rig.live_watches() == 0).await;
    rig.delete("default", "api-1").unwrap();
    rig.compact();
    rig.hold_continued_lists(true);
    rig.hold_watches(false);
    // The first page (api-0) is in; the next one waits.
    eventually("a relist stopped after its first page", || {
        rig.held_lists() == 1
    })
    .await;
    let during = endpoints.load();
    assert_eq!(
        during.revision(),
        first.revision(),
        "nothing published mid-list"
    );
    assert!(during.contains(&"10.0.0.2:8080".parse().unwrap()));
    assert_eq!(during.len(), 3);

    rig.hold_continued_lists(false);
    let set = wait_for_set(&endpoints, "the relist swapped in", |set| {
        set.revision() > first.revision()
    })
    .await;
    assert_eq!(set.revision(), first.revision() + 1);
    assert_eq!(
        set.addresses().collect::<Vec<_>>(),
        [
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.3:8080".parse().unwrap()
        ]
    );
    assert_eq!(endpoints.health().total_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_compactions_do_not_escalate_the_backoff() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        .backoff(Duration::from_millis(500), Duration::from_secs(3600))
        .spawn();
    endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    for change in 2..=11u8 {
        // The watch is held down while the slice changes and the history is compacted; the
        // released watch gets the in-stream 410 and the source relists.
        let lists = rig.list_count();
        rig.hold_watches(true);
        rig.drop_watches();
        eventually("the watch gone", || rig.live_watches() == 0).await;
        let address: std::net::SocketAddr = format!("10.0.0.{change}:8080").parse().unwrap();
        rig.apply(http_slice("api-a").endpoint(ep(&address.ip().to_string())));
        rig.compact();
        rig.hold_watches(false);
        let set = wait_for_set(&endpoints, &format!("change {change}"), |set| {
            set.contains(&address)
        })
        .await;
        assert_eq!(set.len(), 1);
        assert_eq!(rig.list_count(), lists + 1, "one relist per compaction");
        eventually("the watch back", || rig.live_watches() == 1).await;
    }
    assert_eq!(
        endpoints.health().total_failures(),
        0,
        "compactions are routine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paginated_relist_swaps_at_the_end_and_never_publishes_half_a_service() {
    let rig = FakeApiServer::start().await;
    for i in 0..5 {
        rig.apply(http_slice(&format!("api-{i}")).endpoint(ep(&format!("10.0.0.{}", i + 1))));
    }
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        .page_size(2)
        .spawn();
    let first = endpoints.resolved().await.unwrap();
    // The first answer is the whole Service, listed in three pages.
    assert_eq!(first.len(), 5);
    assert_eq!(first.revision(), 1);
    assert_eq!(rig.list_count(), 3);
    let pages = rig.requests_of(RequestKind::List);
    assert!(pages[1].query.as_ref().unwrap().continue_token.is_some());

    // A relist in pages: the set stays whole, and unchanged.
    eventually("a watch", || rig.live_watches() == 1).await;
    rig.expire_watches();
    eventually("a paginated relist", || rig.list_count() == 6).await;
    eventually("a new watch", || rig.live_watches() == 1).await;
    assert_eq!(endpoints.load().revision(), 1);
    assert_eq!(endpoints.load().len(), 5);
}

/// A list page whose continue token expired (the history was compacted between pages) gets
/// `410 Expired`: kube's watcher lists again from the start, and that is routine, as for an
/// expired watch (client-go's pager falls back to a full list the same way): no failure is
/// reported, and the first answer is the whole Service, not the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_lists_again_without_a_failure() {
    let rig = FakeApiServer::start().await;
    for i in 0..5 {
        rig.apply(http_slice(&format!("api-{i}")).endpoint(ep(&format!("10.0.0.{}", i + 1))));
    }
    rig.hold_continued_lists(true);
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        .page_size(2)
        .spawn();
    eventually("the second page held", || rig.held_lists() == 1).await;
    rig.apply(http_slice("api-0").endpoint(ep("10.0.0.9")));
    rig.compact();
    rig.hold_continued_lists(false);
    let first = endpoints.resolved().await.unwrap();
    let addresses: Vec<std::net::SocketAddr> = first.addresses().collect();
    assert_eq!(addresses.len(), 5, "{addresses:?}");
    assert!(
        addresses.contains(&"10.0.0.9:8080".parse().unwrap()),
        "{addresses:?}"
    );
    assert!(rig.list_count() >= 5, "a second list from the start");
    assert_eq!(
        endpoints.health().total_failures(),
        0,
        "an expired continue token is routine: {:?}",
        endpoints.health()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_errors_back_off_keep_the_set_and_show_in_health() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let backoff = Duration::from_millis(100);
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        // A long maximum: the backoff falls back to its minimum only after 2 x max without a
        // failure, which no stall of a slow machine reaches here.
        .backoff(backoff, Duration::from_secs(30))
        .spawn();
    let first = endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    // The watch expires and the next four lists fail with 500.
    rig.fail_lists(500, 4);
    rig.expire_watches();
    let health = wait_for_health(&endpoints, "a failing source", |h| h.is_failing()).await;
    let error = health.last_error().unwrap();
    assert_eq!(error.kind(), DiscoveryErrorKind::Api);
    assert_eq!(error.target(), "kubernetes:///api:http");
    assert!(error.detail().contains("listing"), "{error}");
    assert!(
        format!("{:?}", error.source().unwrap()).contains("500"),
        "{error:?}"
    );
    assert_eq!(
        endpoints.load().revision(),
        first.revision(),
        "the set is kept"
    );

    let health = wait_for_health(&endpoints, "recovery", |h| h.is_current()).await;
    assert_eq!(health.total_failures(), 4);
    assert_eq!(endpoints.load().revision(), first.revision());

    // The attempts were spaced by the backoff, growing. The expiry took the first delay (100 ms),
    // so the failures waited about 200, 400, 800 and 1600 ms, each jittered into
    // [delay / 2, delay]: the floors below (half of 100, 200, 400, 800 ms) hold on any machine.
    let lists = rig.requests_of(RequestKind::List);
    let relists: Vec<_> = lists[1..].iter().map(|r| r.at).collect();
    assert_eq!(relists.len(), 5);
    for (i, pair) in relists.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let floor = backoff * (1 << i) / 2;
        assert!(gap >= floor, "gap {i} was {gap:?}, below {floor:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_list_failing_is_reported_to_a_waiting_reader() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.fail_lists(500, 2);
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    // `resolved` returns the error while the source has never answered...
    let error = endpoints.resolved().await.unwrap_err();
    assert!(error.is_api(), "{error}");
    // ...and the source keeps trying on its own.
    let set = wait_for_set(&endpoints, "the first answer", |set| set.revision() == 1).await;
    assert_eq!(set.len(), 1);
}

/// A client without the permissions it needs (403 on list, or in the watch stream when they
/// are withdrawn) is told which ones, in the health's error, and keeps its set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_requests_name_the_permissions_needed() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.fail_lists(403, 2);
    let endpoints = rig.source("kubernetes:///api.default:http").await.spawn();
    let error = endpoints.resolved().await.unwrap_err();
    assert!(error.is_api(), "{error}");
    let detail = error.detail();
    assert!(detail.contains("listing"), "{error}");
    assert!(
        detail.contains("get, list and watch on endpointslices"),
        "{error}"
    );
    assert!(detail.contains("namespace `default`"), "{error}");
    let set = wait_for_set(&endpoints, "the first answer", |set| set.revision() == 1).await;
    assert_eq!(set.len(), 1);

    eventually("a watch", || rig.live_watches() == 1).await;
    rig.error_watches(403);
    let health = wait_for_health(&endpoints, "the 403 reported", |h| h.total_failures() >= 3).await;
    let error = health.last_error().unwrap();
    assert!(error.detail().contains("watching"), "{error}");
    assert!(error.detail().contains("forbidden"), "{error}");
    assert_eq!(endpoints.load().revision(), set.revision());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_lists_are_retried_by_the_client_itself() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    // kube's client retries 429 (and 503, 504) with its own short backoff.
    rig.fail_lists(429, 2);
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    assert_eq!(endpoints.resolved().await.unwrap().len(), 1);
    assert_eq!(rig.list_count(), 3);
    assert_eq!(endpoints.health().total_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_answered_with_http_status_410_does_not_trap_the_source() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    // From now on every watch with a resourceVersion is answered with HTTP 410. kube's watcher
    // alone would retry the same version forever and never see another change.
    rig.fail_watches_with_http_gone(usize::MAX);
    let lists = rig.list_count();
    rig.drop_watches();
    eventually("the open watch gone and a watch refused", || {
        rig.live_watches() == 0
            && rig
                .requests_of(RequestKind::Watch)
                .iter()
                .any(|r| r.status == 410)
    })
    .await;
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    // The source recognizes the trap and relists, so the change arrives anyway.
    let set = wait_for_set(&endpoints, "the change, through a relist", |set| {
        set.len() == 2
    })
    .await;
    assert!(rig.list_count() > lists);
    let gone: Vec<_> = rig
        .requests_of(RequestKind::Watch)
        .into_iter()
        .filter(|r| r.status == 410)
        .collect();
    assert!(!gone.is_empty());
    let error = wait_for_health(&endpoints, "the trap reported", |h| h.total_failures() >= 1)
        .await
        .last_error()
        .cloned()
        .unwrap();
    assert!(error.detail().contains("HTTP status 410"), "{error}");

    // The server is fixed: the watch holds again, and changes arrive through it.
    rig.clear_faults();
    eventually("a watch that holds", || rig.live_watches() == 1).await;
    let lists = rig.list_count();
    rig.apply(http_slice("api-c").endpoint(ep("10.0.0.3")));
    wait_for_set(&endpoints, "a change through the watch", |set| {
        set.len() == 3
    })
    .await;
    assert_eq!(rig.list_count(), lists);
    wait_for_health(&endpoints, "current", |h| h.is_current()).await;
    assert!(set.revision() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_use_the_initial_events_and_their_end_bookmark() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        .streaming_list(true)
        .spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(
        set.revision(),
        1,
        "the initial events are published once, whole"
    );
    assert_eq!(rig.list_count(), 0, "no list request");
    let initial = &rig.requests_of(RequestKind::Watch)[0];
    assert!(initial.query.as_ref().unwrap().send_initial_events);

    // Live events follow on the same stream.
    rig.apply(http_slice("api-c").endpoint(ep("10.0.0.3")));
    wait_for_set(&endpoints, "a live event", |set| set.len() == 3).await;

    // A dropped stream resumes from the last version, without initial events.
    let watches = rig.watch_count();
    let last_seen = rig.resource_version();
    rig.drop_watches();
    eventually("a resumed watch", || rig.watch_count() > watches).await;
    let resumed = &watches_after(&rig, watches)[0];
    assert!(!resumed.query.as_ref().unwrap().send_initial_events);
    assert_eq!(resumed.resource_version(), Some(&*last_seen.to_string()));
    rig.delete("default", "api-a");
    wait_for_set(&endpoints, "a delete", |set| set.len() == 2).await;
    assert_eq!(rig.list_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_that_time_out_resume_from_their_last_bookmark() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig
        .source("kubernetes:///api:http")
        .await
        .watch_timeout(Duration::from_secs(1))
        .spawn();
    endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;
    let watches = rig.watch_count();
    // Other resources move the version on; the bookmark sent before the timeout carries it.
    rig.advance_resource_version(7);
    let bookmarked = rig.resource_version().to_string();
    eventually("a watch resumed from the bookmark", || {
        watches_after(&rig, watches)
            .iter()
            .any(|r| r.resource_version() == Some(bookmarked.as_str()))
    })
    .await;
    assert_eq!(rig.list_count(), 1);
    let timeout = watches_after(&rig, 0)[0]
        .query
        .as_ref()
        .unwrap()
        .timeout_seconds;
    assert_eq!(timeout, Some(1));

    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "a change after timeouts", |set| set.len() == 2).await;
    assert_eq!(endpoints.health().total_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_stops_when_nobody_reads() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;
    let watcher = endpoints.watch();
    drop(endpoints);
    // A watcher is a reader too.
    tokio::time::sleep(TEST_BACKOFF_MIN * 5).await;
    assert_eq!(rig.live_watches(), 1);
    drop(watcher);
    eventually("the watch closed", || rig.live_watches() == 0).await;
    let watches = rig.watch_count();
    let lists = rig.list_count();
    // Nothing comes back, even when the server invites it.
    rig.expire_watches();
    rig.drop_watches();
    tokio::time::sleep(TEST_BACKOFF_MIN * 5).await;
    assert_eq!((rig.watch_count(), rig.list_count()), (watches, lists));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_stops_on_request_while_handles_remain() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let (endpoints, handle) = rig.source("kubernetes:///api:http").await.start();
    endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;
    let mut watcher = endpoints.watch();

    handle.shutdown().await;
    assert!(endpoints.is_closed());
    assert_eq!(endpoints.load().len(), 1, "the last set stays readable");
    assert!(watcher.changed().await.unwrap_err().is_closed());
    eventually("the watch closed", || rig.live_watches() == 0).await;
    let requests = rig.requests().len();
    rig.apply(http_slice("api-b").endpoint(ep("10.0.0.2")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rig.requests().len(),
        requests,
        "no request after the shutdown"
    );
    assert_eq!(endpoints.load().len(), 1);
}

/// A server (or proxy) that ends every watch at once, cleanly and without an event: kube's
/// watcher would send the next watch as fast as the round trip allows. Watches that follow
/// watches cut short wait 1 s, then twice as long each time (client-go's reflector backs off
/// after a "very short watch" too); the set stays, and a watch that lasts comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_ended_at_once_are_paced_not_repeated_at_once() {
    let rig = FakeApiServer::start().await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.1")));
    let endpoints = rig.source("kubernetes:///api:http").await.spawn();
    endpoints.resolved().await.unwrap();
    eventually("a watch", || rig.live_watches() == 1).await;

    rig.end_watches_at_once(true);
    rig.drop_watches();
    let before = rig.watch_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = rig.watch_count() - before;
    // Waits of 1 s and 2 s fill the 3 s (one more may be on its way): never hundreds.
    assert!(asked <= 4, "{asked} watch requests in 3 s");
    assert_eq!(endpoints.load().len(), 1);

    rig.end_watches_at_once(false);
    eventually("a watch that lasts", || rig.live_watches() == 1).await;
    rig.apply(http_slice("api-a").endpoint(ep("10.0.0.2")));
    wait_for_set(&endpoints, "the change through the watch", |set| {
        set.contains(&"10.0.0.2:8080".parse().unwrap())
    })
    .await;
}
