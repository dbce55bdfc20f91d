//! The greeter: servers on loopback, calls through a waypost channel built from a target string.

use std::collections::BTreeSet;
use std::time::Duration;

use waypost_examples::greeter::{say_hello, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_calls_succeed_and_spread_over_the_servers() {
    let mut addresses = Vec::new();
    let mut stops = Vec::new();
    for name in ["greeter-a", "greeter-b"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(serve(listener, name.to_owned(), async move {
            let _ = stopped.await;
        }));
    }
    let channel = waypost::Builder::new(&format!("static:///{}", addresses.join(",")))
        .unwrap()
        .policy(waypost::balance::Policy::round_robin())
        .timeout(Duration::from_secs(10))
        .tonic_channel()
        .unwrap();
    let mut servers = BTreeSet::new();
    for _ in 0..10 {
        servers.insert(say_hello(channel.clone(), "test").await.unwrap());
    }
    assert_eq!(
        servers,
        BTreeSet::from(["greeter-a".to_owned(), "greeter-b".to_owned()])
    );
    drop(stops);
}
