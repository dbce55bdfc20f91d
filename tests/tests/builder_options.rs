//! Every client option with any value: building either works or fails with a configuration
//! error naming the option, and calls through a client that was built never panic, neither in
//! the caller nor in the client's background tasks (a panic hook counts those).

use std::net::SocketAddr;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use proptest::prelude::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost::RetryBudget;
use waypost::balance::{
    BalanceConfig, ConcurrencyLimit, LoadFeedback, OutlierDetection, ReconnectBackoff, SlowStart,
};
use waypost::hyper::HttpProbe;
use waypost_tests::grpc::GrpcBackend;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static BUILT: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic of the process, background tasks included (tokio only logs those).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        (1u64..3_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
        any::<u64>().prop_map(Duration::from_nanos),
    ]
}

fn percent() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(-1.0f32),
        Just(0.0f32),
        Just(1000.5f32),
        0.0f32..2.0,
        any::<f32>(),
    ]
}

#[derive(Debug, Clone)]
struct Options {
    connect_timeout: Duration,
    timeout: Option<Duration>,
    wait_for_endpoints: Duration,
    /// The ping interval and the wait for its acknowledgement.
    keep_alive: (Option<Duration>, Duration),
    retry: Option<RetryBudget>,
    backoff: (Duration, Duration),
    ejection: (Duration, Duration),
    interval: Duration,
    max_ejection_percent: u8,
    panic_threshold_percent: u8,
    slow_start: Option<Duration>,
    authority: Option<String>,
    /// Load feedback's default and maximum backoff.
    load_feedback: Option<(Duration, Duration)>,
    /// The concurrency limit, and whether a full fleet makes calls wait.
    limit: Option<(u32, bool)>,
    /// An HTTP probe's interval, timeout and thresholds (HTTP client only).
    probe: Option<(Duration, Duration, u32, u32)>,
    /// A gRPC health check (tonic channel only).
    health_check: bool,
}

fn options() -> impl Strategy<Value = Options> {
    let retry = (any::<u32>(), percent(), 0usize..6).prop_map(
        |(min_per_second, retry_percent, max_attempts)| RetryBudget {
            min_per_second: min_per_second % 3 * (i32::MAX as u32 / 2),
            retry_percent,
            max_attempts,
        },
    );
    let extras = (
        proptest::option::of((duration(), duration())),
        proptest::option::of((
            prop_oneof![Just(0u32), Just(1), any::<u32>()],
            any::<bool>(),
        )),
        proptest::option::of((duration(), duration(), 0u32..4, 0u32..4)),
        any::<bool>(),
    );
    (
        (
            duration(),
            proptest::option::of(duration()),
            duration(),
            (proptest::option::of(duration()), duration()),
            proptest::option::of(retry),
            (duration(), duration()),
        ),
        (
            (duration(), duration()),
            duration(),
            any::<u8>(),
            prop_oneof![Just(0u8), Just(50), Just(100), any::<u8>()],
            proptest::option::of(duration()),
            proptest::option::of(prop_oneof![
                Just("api.prod:50051".to_owned()),
                Just(String::new()),
                "[ -~]{0,12}",
            ]),
        ),
        extras,
    )
        .prop_map(
            |(
                (connect_timeout, timeout, wait_for_endpoints, keep_alive, retry, backoff),
                (
                    ejection,
                    interval,
                    max_ejection_percent,
                    panic_threshold_percent,
                    slow_start,
                    authority,
                ),
                (load_feedback, limit, probe, health_check),
            )| Options {
                connect_timeout,
                timeout,
                wait_for_endpoints,
                keep_alive,
                retry,
                backoff,
                ejection,
                interval,
                max_ejection_percent,
                panic_threshold_percent,
                slow_start,
                authority,
                load_feedback,
                limit,
                probe,
                health_check,
            },
        )
}

/// The longest load-feedback backoff the balancer accepts.
const MAX_LOAD_FEEDBACK: Duration = Duration::from_secs(24 * 3600);

impl Options {
    /// The same extreme values where they are valid, the defaults where they are not: half the
    /// cases build clients, so that calls run with durations such as `Duration::MAX`.
    fn repaired(mut self) -> Self {
        let nonzero = |d: Duration| {
            if d.is_zero() {
                Duration::from_secs(1)
            } else {
                d
            }
        };
        self.connect_timeout = nonzero(self.connect_timeout);
        self.timeout = self.timeout.map(nonzero);
        self.keep_alive = (self.keep_alive.0.map(nonzero), nonzero(self.keep_alive.1));
        if let Some(retry) = &mut self.retry {
            if !(retry.retry_percent.is_finite() && (0.0..=1000.0).contains(&retry.retry_percent)) {
                retry.retry_percent = 0.2;
            }
            retry.min_per_second = retry.min_per_second.min(i32::MAX as u32 - 1);
            retry.max_attempts = retry.max_attempts.max(1);
        }
        self.backoff.0 = nonzero(self.backoff.0);
        self.backoff.1 = self.backoff.1.max(self.backoff.0);
        self.ejection.1 = self.ejection.1.max(self.ejection.0);
        self.interval = nonzero(self.interval);
        self.max_ejection_percent = self.max_ejection_percent.min(100);
        self.panic_threshold_percent = self.panic_threshold_percent.min(100);
        self.slow_start = self.slow_start.map(nonzero);
        if self
            .authority
            .as_ref()
            .is_some_and(|authority| authority.parse::<http::uri::Authority>().is_err())
        {
            self.authority = None;
        }
        if let Some((default, max)) = &mut self.load_feedback {
            *default = (*default).min(MAX_LOAD_FEEDBACK);
            *max = (*max).clamp(*default, MAX_LOAD_FEEDBACK);
        }
        if let Some((limit, _)) = &mut self.limit {
            *limit = (*limit).max(1);
        }
        if let Some((interval, timeout, healthy, unhealthy)) = &mut self.probe {
            *interval = nonzero(*interval);
            *timeout = nonzero(*timeout);
            *healthy = (*healthy).max(1);
            *unhealthy = (*unhealthy).max(1);
        }
        self
    }

    fn balance_config(&self) -> BalanceConfig {
        BalanceConfig {
            outlier_detection: OutlierDetection {
                consecutive_failures: 1,
                base_ejection_time: self.ejection.0,
                max_ejection_time: self.ejection.1,
                max_ejection_percent: self.max_ejection_percent,
                interval: self.interval,
                ..OutlierDetection::default()
            },
            panic_threshold_percent: self.panic_threshold_percent,
            slow_start: self.slow_start.map(SlowStart::new),
            wait_for_endpoints: self.wait_for_endpoints,
            reconnect_backoff: ReconnectBackoff {
                initial: self.backoff.0,
                max: self.backoff.1,
            },
            load_feedback: self
                .load_feedback
                .map(|(default_backoff, max_backoff)| LoadFeedback {
                    default_backoff,
                    max_backoff,
                }),
            concurrency_limit: self.limit.map(|(limit, wait)| {
                let limit = ConcurrencyLimit::new(limit);
                if wait { limit.waiting() } else { limit }
            }),
            ..BalanceConfig::default()
        }
    }

    fn builder(&self, target: &str) -> waypost::Builder {
        let mut builder = waypost::Builder::new(target)
            .unwrap()
            .balance_config(self.balance_config())
            .connect_timeout(self.connect_timeout)
            .keep_alive_interval(self.keep_alive.0)
            .keep_alive_timeout(self.keep_alive.1);
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(retry) = self.retry {
            builder = builder.retry_idempotent(retry);
        }
        if let Some(authority) = &self.authority {
            builder = builder.authority(authority.clone());
        }
        if let Some((interval, timeout, healthy_threshold, unhealthy_threshold)) = self.probe {
            builder = builder.http_health_check(HttpProbe {
                interval,
                timeout,
                healthy_threshold,
                unhealthy_threshold,
                ..HttpProbe::new("/healthz")
            });
        }
        if self.health_check {
            builder = builder.grpc_health_check("");
        }
        builder
    }

    /// What the documentation promises the HTTP client accepts (the probe is its own).
    fn valid_for_http(&self) -> bool {
        self.valid_for_both()
            && self
                .probe
                .is_none_or(|(interval, timeout, healthy, unhealthy)| {
                    !interval.is_zero() && !timeout.is_zero() && healthy >= 1 && unhealthy >= 1
                })
    }

    /// What both clients accept.
    fn valid_for_both(&self) -> bool {
        let retry_valid = self.retry.is_none_or(|retry| {
            retry.retry_percent.is_finite()
                && (0.0..=1000.0).contains(&retry.retry_percent)
                && retry.min_per_second < i32::MAX as u32
                && retry.max_attempts >= 1
        });
        !self.connect_timeout.is_zero()
            && self.timeout.is_none_or(|timeout| !timeout.is_zero())
            && self.keep_alive.0.is_none_or(|interval| !interval.is_zero())
            && !self.keep_alive.1.is_zero()
            && retry_valid
            && !self.backoff.0.is_zero()
            && self.backoff.1 >= self.backoff.0
            && self.ejection.1 >= self.ejection.0
            && !self.interval.is_zero()
            && self.max_ejection_percent <= 100
            && self.panic_threshold_percent <= 100
            && self.slow_start.is_none_or(|window| !window.is_zero())
            && self
                .load_feedback
                .is_none_or(|(default, max)| max >= default && max <= MAX_LOAD_FEEDBACK)
            && self.limit.is_none_or(|(limit, _)| limit >= 1)
    }

    /// The authority is the tonic channel's.
    fn valid_for_tonic(&self) -> bool {
        self.valid_for_both()
            && self
                .authority
                .as_ref()
                .is_none_or(|authority| authority.parse::<http::uri::Authority>().is_ok())
    }
}

fn check_built<T>(built: Result<T, waypost::Error>, valid: bool, options: &Options) -> Option<T> {
    match built {
        Ok(client) => {
            assert!(valid, "built with invalid options: {options:?}");
            Some(client)
        }
        Err(error) => {
            assert_eq!(error.kind(), waypost::ErrorKind::Config, "{error}");
            assert!(!valid, "refused valid options {options:?}: {error}");
            assert!(error.to_string().contains('`'), "names the option: {error}");
            None
        }
    }
}

/// Makes one call; whatever the outcome, it must not panic. Long waits are cut short, since an
/// option may ask for a wait of centuries.
async fn call(channel: waypost::tonic::Channel) {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    let _ = tokio::time::timeout(Duration::from_millis(300), call).await;
}

#[test]
fn no_option_value_panics() {
    count_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (backend, closed) = runtime.block_on(async {
        let backend = GrpcBackend::start().await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed: SocketAddr = listener.local_addr().unwrap();
        drop(listener);
        (backend, closed)
    });
    let live = format!("static:///{}", backend.address());
    let refused = format!("static:///{closed}");
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let cases = (options(), any::<bool>())
        .prop_map(|(options, repair)| if repair { options.repaired() } else { options });
    proptest!(config, |(options in cases)| {
        PANICS.store(0, Ordering::SeqCst);
        runtime.block_on(async {
            for target in [&live, &refused] {
                let builder = options.builder(target);
                if let Some(channel) =
                    check_built(builder.tonic_channel(), options.valid_for_tonic(), &options)
                {
                    call(channel.clone()).await;
                    call(channel).await;
                }
                if let Some(client) = check_built(
                    builder.http_client::<Empty<Bytes>>(),
                    options.valid_for_http(),
                    &options,
                ) {
                    let request = http::Request::get("/").body(Empty::new()).unwrap();
                    let _ = tokio::time::timeout(
                        Duration::from_millis(300),
                        client.request(request),
                    )
                    .await;
                }
            }
            // Let background tasks run what the calls started.
            tokio::time::sleep(Duration::from_millis(5)).await;
        });
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic with {:?}", options);
        if options.valid_for_tonic() {
            BUILT.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert!(
        BUILT.load(Ordering::SeqCst) > 0,
        "some cases built clients and made calls"
    );
}
