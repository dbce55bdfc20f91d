//! `Endpoints` under concurrency: reader threads hammer the handle while a writer publishes
//! thousands of revisions. Every read must see one whole snapshot, revisions never go backwards
//! for a reader, and a slow watcher always ends on the final revision.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use waypost_discovery::{Endpoint, EndpointSet, Publisher};

const REVISIONS: u64 = 5_000;

/// The set published as revision `revision`: its size and every endpoint's weight encode the
/// revision, so a reader can tell a whole snapshot from a mix of two.
fn endpoints_for(revision: u64) -> Vec<Endpoint> {
    let size = 1 + (revision % 17) as u16;
    (0..size)
        .map(|i| {
            Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 10_000 + i)))
                .with_weight(revision as u32)
                .with_zone(format!("zone-{}", revision % 3))
        })
        .collect()
}

fn check_whole(set: &EndpointSet) {
    let revision = set.revision();
    if revision == 0 {
        assert!(set.is_empty());
        return;
    }
    assert_eq!(
        set.len(),
        1 + (revision % 17) as usize,
        "size of revision {revision}"
    );
    let zone = format!("zone-{}", revision % 3);
    for (i, endpoint) in set.iter().enumerate() {
        assert_eq!(
            endpoint.address().port(),
            10_000 + i as u16,
            "sorted, no gaps"
        );
        assert_eq!(
            u64::from(endpoint.weight()),
            revision,
            "every endpoint from revision {revision}"
        );
        assert_eq!(endpoint.zone(), Some(zone.as_str()));
    }
}

#[test]
fn readers_see_whole_snapshots_in_order_while_a_writer_publishes() {
    let mut publisher = Publisher::new("stress");
    let endpoints = publisher.endpoints();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let endpoints = endpoints.clone();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let set = endpoints.load();
                    check_whole(&set);
                    assert!(
                        set.revision() >= last,
                        "revision went back from {last} to {}",
                        set.revision()
                    );
                    last = set.revision();
                    reads += 1;
                    if finished {
                        return (last, reads);
                    }
                }
            })
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let watcher = {
        let mut watcher = endpoints.watch();
        runtime.spawn(async move {
            let mut seen = Vec::new();
            while let Ok(set) = watcher.changed().await {
                check_whole(&set);
                seen.push(set.revision());
                // A slow watcher: it skips revisions, never the last.
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
            seen
        })
    };
    let runtime_thread = thread::spawn(move || runtime.block_on(watcher).unwrap());

    for revision in 1..=REVISIONS {
        let publication = publisher.publish(endpoints_for(revision));
        assert_eq!(publication.revision(), revision);
    }
    done.store(true, Ordering::Release);
    drop(publisher);

    for reader in readers {
        let (last, reads) = reader.join().unwrap();
        assert_eq!(
            last, REVISIONS,
            "a reader that stops after the writer sees the last revision"
        );
        assert!(reads > 0);
    }
    let seen = runtime_thread.join().unwrap();
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "watcher revisions increase"
    );
    assert_eq!(
        seen.last(),
        Some(&REVISIONS),
        "the watcher ends on the final revision"
    );
}

#[test]
fn many_watchers_all_end_on_the_final_revision() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut publisher = Publisher::new("stress");
        let endpoints = publisher.endpoints();
        let watchers: Vec<_> = (0..16)
            .map(|_| {
                let mut watcher = endpoints.watch();
                tokio::spawn(async move {
                    let mut last = 0;
                    while let Ok(set) = watcher.changed().await {
                        assert!(set.revision() > last);
                        last = set.revision();
                    }
                    last
                })
            })
            .collect();
        let writer = tokio::task::spawn_blocking(move || {
            for revision in 1..=REVISIONS {
                publisher.publish(endpoints_for(revision));
            }
        });
        writer.await.unwrap();
        for watcher in watchers {
            assert_eq!(watcher.await.unwrap(), REVISIONS);
        }
    });
}
