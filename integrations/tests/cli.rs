//! The built `waypost` binary (feature `cli`): `--help`, `resolve` of a static target, a bad
//! target, and `status` against an [`Admin`](waypost::admin::Admin) service served by hyper on
//! loopback, with the exit codes a shell sees. (`resolve` and `watch` of DNS targets are tested
//! against the in-process DNS server in `waypost-examples`' `tests/cli.rs`.)
#![cfg(feature = "cli")]

use std::convert::Infallible;
use std::process::Output;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use waypost::admin::Admin;
use waypost::discovery::Endpoint;

/// Runs the built binary with `arguments`, off the runtime's threads.
async fn waypost(arguments: &[&str]) -> Output {
    let arguments: Vec<String> = arguments.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waypost"))
            .args(&arguments)
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn help_lists_the_commands_and_exits_zero() {
    let output = waypost(&["--help"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let help = stdout(&output);
    for command in ["resolve", "watch", "status"] {
        assert!(help.contains(command), "{help}");
    }
    let output = waypost(&["status", "--help"]).await;
    assert!(output.status.success());
    assert!(
        stdout(&output).contains("admin endpoint"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn resolve_prints_a_static_target_and_bad_input_exits_one() {
    let output = waypost(&["resolve", "static:///127.0.0.2:81,127.0.0.1:80"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = "\
ADDRESS                                    ZONE           NODE           STATE        WEIGHT
127.0.0.1:80                               -              -              ready             1
127.0.0.2:81                               -              -              ready             1
";
    assert_eq!(stdout(&output), expected);

    let output = waypost(&["resolve", "static:///127.0.0.1"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("static:///127.0.0.1"),
        "{}",
        stderr(&output)
    );

    let output = waypost(&["frobnicate"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("frobnicate"),
        "{}",
        stderr(&output)
    );
}

/// Serves `admin` over HTTP/1 on a loopback port until the test ends.
async fn serve(admin: Admin) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let mut admin = admin.clone();
                    async move { admin.call(request).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_an_applications_admin_endpoint() {
    let mut balance = waypost::Builder::new("static:///127.0.0.1:7001,127.0.0.1:7002")
        .unwrap()
        .balance(|endpoint: &Endpoint| {
            let address = endpoint.address();
            tower::service_fn(move |_: ()| async move { Ok::<_, Infallible>(address) })
        })
        .unwrap();
    // Calls until both endpoints answered one (a success marks an endpoint connected).
    for _ in 0..10_000 {
        balance.ready().await.unwrap().call(()).await.unwrap();
        let snapshot = balance.snapshot().await;
        if snapshot
            .endpoints
            .iter()
            .all(|endpoint| endpoint.connectivity == waypost::balance::Connectivity::Connected)
        {
            break;
        }
    }
    let address = serve(Admin::new().with(balance.clone())).await;

    let url = format!("http://{address}/waypost");
    let output = waypost(&["status", &url]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(
            "static:///127.0.0.1:7001,127.0.0.1:7002  policy p2c_peak_ewma  mode normal  \
             usable 2/2  revision 1  discovery current"
        ),
        "{table}"
    );
    assert!(lines[1].starts_with("ADDRESS"), "{table}");
    for (line, address) in lines[2..].iter().zip(["127.0.0.1:7001", "127.0.0.1:7002"]) {
        assert!(line.starts_with(address), "{table}");
        assert!(
            line.contains(" yes ") && line.contains("connected"),
            "{table}"
        );
    }
    assert_eq!(lines.len(), 4, "{table}");

    // The same endpoint answers Prometheus text under /metrics.
    let client = waypost::Builder::new(&format!("static:///{address}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .http_client::<http_body_util::Empty<bytes::Bytes>>()
        .unwrap();
    let request = http::Request::get("/waypost/metrics")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains(
            "waypost_endpoint_usable{target=\"static:///127.0.0.1:7001+1\",endpoint=\"127.0.0.1:7001\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("waypost_balancer_usable_endpoints{target=\"static:///127.0.0.1:7001+1\"} 2"),
        "{text}"
    );

    // Nothing listening: the command names the URL and exits 1.
    drop(client);
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/waypost", closed.local_addr().unwrap());
    drop(closed);
    let output = waypost(&["status", &url, "--timeout-secs", "2"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&url), "{}", stderr(&output));
}
