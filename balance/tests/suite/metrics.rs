//! The `metrics` feature: picks, in-flight requests, ejections and table gauges reach the
//! installed recorder, labelled with the target and the endpoint.
#![cfg(feature = "metrics")]

use std::convert::Infallible;
use std::net::SocketAddr;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Service, ServiceExt};
use waypost_balance::{Balance, BalanceConfig, Policy};
use waypost_discovery::{Endpoint, Publisher};

#[test]
fn requests_and_tables_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut publisher = Publisher::new("static:///metrics");
            publisher
                .publish((1..=2u16).map(|p| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], p)))));
            let mut balance = Balance::builder(publisher.endpoints())
                .config(BalanceConfig::with_policy(Policy::round_robin()))
                .build(|_: &Endpoint| tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) }))
                .unwrap();
            for _ in 0..10 {
                balance.ready().await.unwrap().call(()).await.unwrap();
            }
        });
    });
    let snapshot: Vec<(String, Option<String>, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let endpoint = key
                .key()
                .labels()
                .find(|label| label.key() == "endpoint")
                .map(|label| label.value().to_owned());
            (key.key().name().to_owned(), endpoint, value)
        })
        .collect();
    let value = |name: &str, endpoint: Option<&str>| {
        snapshot
            .iter()
            .filter(|(key, label, _)| {
                key == name && endpoint.is_none_or(|endpoint| label.as_deref() == Some(endpoint))
            })
            .map(|(_, _, value)| value)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        value("waypost_picks_total", Some("127.0.0.1:1")),
        [&DebugValue::Counter(5)]
    );
    assert_eq!(
        value("waypost_in_flight", Some("127.0.0.1:2")),
        [&DebugValue::Gauge(0.0.into())]
    );
    assert_eq!(
        value("waypost_endpoints", None),
        [&DebugValue::Gauge(2.0.into())]
    );
    assert_eq!(
        value("waypost_panic_mode", None),
        [&DebugValue::Gauge(0.0.into())]
    );
}
