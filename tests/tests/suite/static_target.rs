//! From a target string to a live endpoint handle through the `waypost` crate, as an
//! application sees it.

use std::net::SocketAddr;

use waypost::discovery::{Endpoint, Publisher, Target, source};

#[tokio::test]
async fn a_static_target_string_becomes_a_resolved_handle() {
    let target: Target = "static:///127.0.0.1:7001,[::1]:7002,127.0.0.1:7001"
        .parse()
        .unwrap();
    let Target::Static(list) = &target else {
        panic!("expected a static target, got {target:?}");
    };
    let endpoints = source::from_static(list);
    let set = endpoints.resolved().await.unwrap();
    let expected: Vec<SocketAddr> = vec![
        "127.0.0.1:7001".parse().unwrap(),
        "[::1]:7002".parse().unwrap(),
    ];
    assert_eq!(set.addresses().collect::<Vec<_>>(), expected);
    assert_eq!(endpoints.target(), target.to_string());
    assert!(endpoints.health().is_current());
    // A fixed list never changes: a watcher ends right away.
    assert!(endpoints.watch().changed().await.unwrap_err().is_closed());
}

#[tokio::test]
async fn handles_cloned_into_tasks_see_the_same_updates() {
    let mut publisher = Publisher::new("static:///demo");
    let endpoints = publisher.endpoints();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut watcher = endpoints.clone().watch();
            tokio::spawn(async move { watcher.changed().await.map(|set| set.revision()) })
        })
        .collect();
    publisher.publish([Endpoint::new("127.0.0.1:7001".parse().unwrap())]);
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), 1);
    }
}
