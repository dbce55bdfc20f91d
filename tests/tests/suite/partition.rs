//! Partitions, not only crashes: an endpoint that stops answering without closing its
//! connection (every packet to and from it dropped, as a network partition or a frozen host
//! does) is taken out by the HTTP/2 keep-alive within about `2 × keep_alive_interval +
//! keep_alive_timeout` (the bound `Builder::keep_alive_timeout` documents), then gets no new
//! calls, and no call waits past its deadline meanwhile.
//!
//! The drop rule is an nftables rule, so the test runs itself again inside a network namespace
//! of its own (`ip netns add`, deleted afterwards): the rule touches nothing outside it, and
//! everything stays on the namespace's loopback. It needs root, iproute2 and nftables (`.ci/test`
//! installs the packages); without them it fails and says what is missing.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waypost_tests::grpc::{GrpcBackend, answered_by};

/// Set in the child process: the name of the namespace it runs in.
const CHILD: &str = "WAYPOST_PARTITION_NETNS";
/// Printed by the child once the scenario passed, so that a child that ran no test fails.
const PASSED: &str = "partition scenario passed";

const DEADLINE: Duration = Duration::from_secs(1);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How late a timer may fire on a machine whose cores are all busy.
const SCHEDULING_SLACK: Duration = Duration::from_secs(2);

/// Runs `program args`, returning what went wrong in words.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("`{program}` could not be started: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A network namespace made for the test, deleted when dropped.
struct Netns(String);

impl Netns {
    fn create() -> Result<Netns, String> {
        let name = format!("waypost-partition-{}", std::process::id());
        // A namespace left by a killed run of the same process id would make `add` fail.
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let netns = Netns(name);
        run(
            "ip",
            &["netns", "exec", &netns.0, "ip", "link", "set", "lo", "up"],
        )?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

#[test]
fn a_partitioned_endpoint_is_detected_and_no_call_outlives_its_deadline() {
    if std::env::var_os(CHILD).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(partitioned());
        println!("{PASSED}");
        return;
    }
    if let Err(missing) = run("nft", &["--version"]) {
        panic!("this test needs nftables (`apt-get install nftables`): {missing}");
    }
    let netns = Netns::create().unwrap_or_else(|error| {
        panic!("this test needs network namespaces (`ip netns add`, as root): {error}")
    });
    let name = concat!(
        module_path!(),
        "::a_partitioned_endpoint_is_detected_and_no_call_outlives_its_deadline"
    )
    .split_once("::")
    .expect("a module path with the crate name")
    .1;
    let output = Command::new("ip")
        .args(["netns", "exec", &netns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, &netns.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(PASSED),
        "the scenario in namespace {} failed ({}):\n{stdout}\n{}",
        netns.0,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // What the child measured, for `--nocapture` runs.
    for line in stdout.lines() {
        if let Some(at) = line.find("partitioned endpoint taken out") {
            println!("{}", &line[at..]);
        }
    }
}

/// One health check through `channel`: the backend that answered, or the error, and how long
/// the call took.
async fn check(
    channel: &waypost::tonic::Channel,
) -> (Result<Option<SocketAddr>, tonic::Status>, Duration) {
    let started = Instant::now();
    let result = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|response| answered_by(&response));
    (result, started.elapsed())
}

/// Inside the namespace: three backends, one of them partitioned away mid-traffic.
async fn partitioned() {
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let mut backends = vec![
        GrpcBackend::start_on(SocketAddr::new(ip(2), 0))
            .await
            .unwrap(),
    ];
    let port = backends[0].port();
    for last in [3, 4] {
        backends.push(
            GrpcBackend::start_on(SocketAddr::new(ip(last), port))
                .await
                .unwrap(),
        );
    }
    let cut = SocketAddr::new(ip(3), port);
    let target = format!("static:///127.0.0.2:{port},127.0.0.3:{port},127.0.0.4:{port}");
    let channel = waypost::Builder::new(&target)
        .unwrap()
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .tonic_channel()
        .unwrap();

    // Every backend has a connection and has answered.
    let warm = Instant::now();
    while backends.iter().any(|backend| backend.requests() == 0) {
        assert!(
            warm.elapsed() < waypost_tests::PATIENCE,
            "every backend answers"
        );
        let (result, _) = check(&channel).await;
        result.unwrap();
    }
    assert_eq!(channel.usable_endpoints(), 3);

    // The partition: nothing goes to or comes from 127.0.0.3 any more, and no connection is
    // closed or reset.
    let port = port.to_string();
    let nft = |args: &[&str]| run("nft", args).unwrap();
    nft(&["add", "table", "inet", "partition"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "partition",
        "output",
        "{ type filter hook output priority 0 ; }",
    ]);
    for (address, side) in [("daddr", "dport"), ("saddr", "sport")] {
        nft(&[
            "add",
            "rule",
            "inet",
            "partition",
            "output",
            "ip",
            address,
            "127.0.0.3",
            "tcp",
            side,
            &port,
            "drop",
        ]);
    }
    let partitioned_at = Instant::now();

    // Calls go on. Those that picked the partitioned endpoint end at their deadline; none waits
    // longer. The keep-alive takes the endpoint out within its interval and timeout.
    let bound = 2 * KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT;
    let mut timed_out = 0;
    while channel.usable_endpoints() == 3 {
        let waited = partitioned_at.elapsed();
        assert!(
            waited < bound + DEADLINE + SCHEDULING_SLACK * 3,
            "the partitioned endpoint is still usable after {waited:?} (keep-alive bound {bound:?})"
        );
        let (result, took) = check(&channel).await;
        assert!(
            took < DEADLINE + SCHEDULING_SLACK,
            "a call took {took:?}, past its {DEADLINE:?} deadline"
        );
        match result {
            Ok(answered) => assert_ne!(answered, Some(cut), "no answer crosses the partition"),
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
                    ),
                    "a call to the partitioned endpoint fails at its deadline: {status:?}"
                );
                timed_out += 1;
            }
        }
    }
    println!(
        "partitioned endpoint taken out after {:?} ({timed_out} calls ended at their deadline)",
        partitioned_at.elapsed()
    );

    // From now on it gets no call: every call succeeds on the two others.
    for _ in 0..200 {
        let (result, took) = check(&channel).await;
        let answered = result.unwrap_or_else(|status| {
            panic!("a call after the partition was detected failed: {status:?}")
        });
        assert_ne!(answered, Some(cut));
        assert!(took < DEADLINE + SCHEDULING_SLACK);
    }
    assert_eq!(channel.usable_endpoints(), 2);
}
