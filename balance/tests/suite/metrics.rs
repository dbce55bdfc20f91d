//! The `metrics` feature: picks, outcomes, latencies, ejections, health-check transitions,
//! connect failures, a client's resends and the table gauges reach the installed recorder,
//! labelled with the target and the endpoint; with an exporter that drops idle series, a
//! dropped balancer's series go and a live one's stay.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::MetricKindMask;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Service, ServiceExt};
use waypost_balance::{
    Balance, BalanceConfig, ConnectivityReporter, OutlierDetection, Policy, WithConnectivity,
};
use waypost_discovery::{Endpoint, Publisher};

/// What a test call asks its endpoint to do.
#[derive(Clone, Copy)]
enum Ask {
    Succeed,
    Fail,
    Hang,
}

type Reporters = Arc<Mutex<Vec<(SocketAddr, ConnectivityReporter)>>>;

/// A balancer over `ports` on loopback whose services do what each call asks, and the
/// connectivity reporters its endpoints were made with.
fn balancer(
    target: &str,
    ports: std::ops::RangeInclusive<u16>,
    config: BalanceConfig,
) -> (
    Balance<impl Service<Ask, Response = (), Error = &'static str> + Clone + Send + Sync + 'static>,
    Publisher,
    Reporters,
) {
    let mut publisher = Publisher::new(target);
    publisher.publish(ports.map(|p| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], p)))));
    let reporters = Reporters::default();
    let made = Arc::clone(&reporters);
    let balance = Balance::builder(publisher.endpoints())
        .config(config)
        .build(WithConnectivity(
            move |endpoint: &Endpoint, reporter: ConnectivityReporter| {
                made.lock().unwrap().push((endpoint.address(), reporter));
                tower::service_fn(|ask: Ask| async move {
                    match ask {
                        Ask::Succeed => Ok(()),
                        Ask::Fail => Err("failed"),
                        Ask::Hang => std::future::pending().await,
                    }
                })
            },
        ))
        .unwrap();
    (balance, publisher, reporters)
}

/// Round-robin and no ejection: every endpoint gets its turn whatever the outcomes.
fn round_robin() -> BalanceConfig {
    BalanceConfig {
        outlier_detection: OutlierDetection::disabled(),
        ..BalanceConfig::with_policy(Policy::round_robin())
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The recorded series: name, labels other than `target`, value.
type Recorded = Vec<(String, Vec<(String, String)>, DebugValue)>;

fn recorded(snapshotter: &metrics_util::debugging::Snapshotter) -> Recorded {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .filter(|label| label.key() != "target")
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, value)
        })
        .collect()
}

/// The sum of the counter `name` over every series whose labels include `with`.
fn counter(recorded: &Recorded, name: &str, with: &[(&str, &str)]) -> u64 {
    recorded
        .iter()
        .filter(|(key, labels, _)| {
            key == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Counter(count) => *count,
            other => panic!("{name} is a counter, not {other:?}"),
        })
        .sum()
}

fn gauge(recorded: &Recorded, name: &str, endpoint: Option<&str>) -> f64 {
    let values: Vec<f64> = recorded
        .iter()
        .filter(|(key, labels, _)| {
            key == name
                && endpoint.is_none_or(|e| labels.iter().any(|(k, v)| k == "endpoint" && v == e))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Gauge(gauge) => gauge.into_inner(),
            other => panic!("{name} is a gauge, not {other:?}"),
        })
        .collect();
    assert_eq!(values.len(), 1, "one {name} series");
    values[0]
}

#[test]
fn requests_outcomes_and_tables_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        current_thread().block_on(async {
            let (mut balance, _publisher, reporters) =
                balancer("static:///metrics", 1..=2, round_robin());
            for ask in [Ask::Succeed, Ask::Fail].repeat(5) {
                let _ = balance.ready().await.unwrap().call(ask).await;
            }
            // Dropped before it ends: cancelled.
            let hanging = balance.ready().await.unwrap().call(Ask::Hang);
            drop(hanging);
            let client = balance.client_metrics();
            for _ in 0..3 {
                client.retried();
            }
            client.resent_unsent();
            let reporters = reporters.lock().unwrap().clone();
            let (address, reporter) = reporters
                .iter()
                .find(|(address, _)| address.port() == 1)
                .expect("endpoint 1 was made");
            assert_eq!(address.port(), 1);
            reporter.report_serving(false);
            // Not a change: not counted.
            reporter.report_serving(false);
            reporter.report_serving(true);
            reporter.report_connect_failure();
            reporter.report_connect_failure();
        });
    });
    let recorded = recorded(&snapshotter);
    assert_eq!(counter(&recorded, "waypost_picks_total", &[]), 11);
    // Round-robin: each endpoint got half of the ten calls that ended.
    for endpoint in ["127.0.0.1:1", "127.0.0.1:2"] {
        assert!(counter(&recorded, "waypost_picks_total", &[("endpoint", endpoint)]) >= 5);
        assert_eq!(gauge(&recorded, "waypost_in_flight", Some(endpoint)), 0.0);
    }
    let outcome = |outcome| {
        counter(
            &recorded,
            "waypost_responses_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(outcome("success"), 5);
    assert_eq!(outcome("failure"), 5);
    assert_eq!(outcome("cancelled"), 1);
    assert_eq!(outcome("overloaded") + outcome("unreachable"), 0);
    let samples: usize = recorded
        .iter()
        .filter(|(key, _, _)| key == "waypost_request_duration_seconds")
        .map(|(_, _, value)| match value {
            DebugValue::Histogram(samples) => {
                assert!(samples.iter().all(|s| s.into_inner() >= 0.0));
                samples.len()
            }
            other => panic!("a histogram, not {other:?}"),
        })
        .sum();
    assert_eq!(
        samples, 10,
        "one latency per request that ended with an outcome"
    );
    let health = &[("endpoint", "127.0.0.1:1")];
    assert_eq!(
        counter(
            &recorded,
            "waypost_health_transitions_total",
            &[health[0], ("to", "not_serving")]
        ),
        1
    );
    assert_eq!(
        counter(
            &recorded,
            "waypost_health_transitions_total",
            &[health[0], ("to", "serving")]
        ),
        1
    );
    assert_eq!(
        counter(&recorded, "waypost_connect_failures_total", health),
        2
    );
    assert_eq!(counter(&recorded, "waypost_retries_total", &[]), 3);
    assert_eq!(counter(&recorded, "waypost_unsent_resends_total", &[]), 1);
    assert_eq!(gauge(&recorded, "waypost_endpoints", None), 2.0);
    assert_eq!(gauge(&recorded, "waypost_panic_mode", None), 0.0);
    assert!(counter(&recorded, "waypost_table_builds_total", &[]) >= 1);
}

/// One call that succeeds.
async fn succeed<B>(balance: &B)
where
    B: Service<Ask> + Clone,
    B::Error: std::fmt::Debug,
{
    balance.clone().oneshot(Ask::Succeed).await.unwrap();
}

/// The lines of Prometheus text that are samples of `target`.
fn samples_of<'a>(text: &'a str, target: &str) -> Vec<&'a str> {
    let label = format!("target=\"{target}\"");
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains(&label))
        .collect()
}

/// The value of the sample `name{...target...}` (the first one, if several).
fn sample(text: &str, name: &str, target: &str) -> Option<f64> {
    samples_of(text, target)
        .into_iter()
        .find(|line| line.starts_with(&format!("{name}{{")))
        .and_then(|line| line.rsplit(' ').next())
        .map(|value| value.parse().unwrap())
}

#[test]
fn with_an_idle_timeout_a_dropped_balancer_series_go_and_a_live_one_stay() {
    // Series idle this long go; the balancers write theirs every 100 ms.
    const IDLE: Duration = Duration::from_secs(3);
    let recorder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::ALL, Some(IDLE))
        .build_recorder();
    let handle = recorder.handle();
    let config = || BalanceConfig {
        outlier_detection: OutlierDetection {
            interval: Duration::from_millis(100),
            ..OutlierDetection::disabled()
        },
        ..BalanceConfig::with_policy(Policy::round_robin())
    };
    metrics::with_local_recorder(&recorder, || {
        current_thread().block_on(async {
            let (kept, _kept_publisher, _) = balancer("static:///kept", 1..=1, config());
            let (dropped, dropped_publisher, _) = balancer("static:///dropped", 2..=2, config());
            for _ in 0..3 {
                succeed(&kept).await;
                succeed(&dropped).await;
            }
            let text = handle.render();
            assert_eq!(
                sample(&text, "waypost_picks_total", "static:///kept"),
                Some(3.0)
            );
            assert_eq!(
                sample(&text, "waypost_picks_total", "static:///dropped"),
                Some(3.0)
            );
            assert_eq!(
                sample(&text, "waypost_endpoints", "static:///dropped"),
                Some(1.0)
            );

            // The last clone goes: its background task ends, and its gauges say so.
            drop(dropped);
            drop(dropped_publisher);
            let waited = Instant::now();
            let text = loop {
                let text = handle.render();
                let left = samples_of(&text, "static:///dropped");
                if left.is_empty() {
                    break text;
                }
                assert!(
                    waited.elapsed() < IDLE * 20,
                    "the dropped balancer's series are still there: {left:?}"
                );
                if let Some(endpoints) = sample(&text, "waypost_endpoints", "static:///dropped")
                    && waited.elapsed() > IDLE / 2
                {
                    assert_eq!(endpoints, 0.0, "a dropped balancer's gauges read 0");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            // At least IDLE passed since the last request of either balancer: the live one's
            // series are there only because it writes them.
            assert!(waited.elapsed() >= IDLE / 2);
            assert_eq!(
                sample(&text, "waypost_picks_total", "static:///kept"),
                Some(3.0)
            );
            assert_eq!(
                sample(&text, "waypost_endpoints", "static:///kept"),
                Some(1.0)
            );

            // And what it records now still reaches the exporter.
            succeed(&kept).await;
            let text = handle.render();
            assert_eq!(
                sample(&text, "waypost_picks_total", "static:///kept"),
                Some(4.0)
            );
            let latencies = sample(
                &text,
                "waypost_request_duration_seconds_count",
                "static:///kept",
            );
            assert!(
                latencies.is_some_and(|count| count >= 1.0),
                "the latest latency is recorded: {latencies:?}"
            );
        });
    });
}
