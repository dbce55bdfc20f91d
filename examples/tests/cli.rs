//! The `waypost` command (`waypost::cli`, feature `cli`) against the in-process DNS server.

use std::net::IpAddr;

use tokio::sync::mpsc;
use waypost_tests::PATIENCE;
use waypost_tests::dns::server::DnsServer;

async fn run(arguments: &[&str]) -> Result<String, String> {
    let mut out = Vec::new();
    waypost::cli::run(arguments.iter().copied(), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_prints_the_endpoint_table() {
    let server = DnsServer::start().await.unwrap();
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    server.set_addresses(
        "api.prod.svc.cluster.local",
        &[ip("127.0.0.3"), ip("127.0.0.2")],
        5,
    );
    let nameserver = server.address().to_string();
    let output = run(&[
        "resolve",
        "dns:///api.prod.svc.cluster.local.:8080",
        "--nameserver",
        &nameserver,
    ])
    .await
    .unwrap();
    let expected = "\
ADDRESS                                    ZONE           NODE           STATE        WEIGHT
127.0.0.2:8080                             -              -              ready             1
127.0.0.3:8080                             -              -              ready             1
";
    assert_eq!(output, expected);
}

/// Output the test reads while the command still runs: every write goes down a channel.
struct Pipe(mpsc::UnboundedSender<Vec<u8>>);

impl std::io::Write for Pipe {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // The reader may have stopped reading; the command's output then goes nowhere.
        let _ = self.0.send(bytes.to_vec());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads from `pipe` into `output` until `done` holds for what was read.
async fn read_until(
    pipe: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    output: &mut String,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    tokio::time::timeout(PATIENCE, async {
        while !done(output) {
            let chunk = pipe.recv().await.expect("the command is still running");
            output.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}; output so far:\n{output}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_revision() {
    let server = DnsServer::start().await.unwrap();
    server.set_addresses("web.test", &["127.0.0.2".parse().unwrap()], 1);
    let arguments: Vec<String> = [
        "watch",
        "dns:///web.test.:80",
        "--nameserver",
        &server.address().to_string(),
        "--revisions",
        "2",
    ]
    .map(String::from)
    .into();
    let (sender, mut pipe) = mpsc::unbounded_channel();
    let watching =
        tokio::spawn(async move { waypost::cli::run(arguments, &mut Pipe(sender)).await });
    // The first revision is out: only then does the fleet change.
    let mut output = String::new();
    read_until(&mut pipe, &mut output, "the first revision", |text| {
        text.contains("127.0.0.2:80")
    })
    .await;
    assert!(output.starts_with("revision 1\n"), "{output}");
    server.add_address("web.test", "127.0.0.3".parse().unwrap(), 1);
    read_until(&mut pipe, &mut output, "the second revision", |text| {
        text.contains("127.0.0.3:80")
    })
    .await;
    tokio::time::timeout(PATIENCE, watching)
        .await
        .expect("the command stops after two revisions")
        .unwrap()
        .unwrap();
    while let Ok(chunk) = pipe.try_recv() {
        output.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (first, second) = output
        .split_once("revision 2: +1 -0 ~0\n")
        .unwrap_or_else(|| panic!("a second revision with one address added:\n{output}"));
    assert!(!first.contains("127.0.0.3"), "{output}");
    assert!(second.contains("127.0.0.2:80"), "{output}");
    assert!(second.contains("127.0.0.3:80"), "{output}");
}

#[tokio::test]
async fn a_bad_target_says_which_part_is_wrong() {
    let error = run(&["resolve", "kubernetes:///Api:80"]).await.unwrap_err();
    assert!(
        error.contains("invalid Kubernetes service name `Api`"),
        "{error}"
    );
}

/// Set in the child process of [`messages_name_the_whole_kubernetes_target`].
const CHILD: &str = "WAYPOST_CLI_TEST_CHILD";

#[tokio::test]
async fn messages_name_the_whole_kubernetes_target() {
    let target = "kubernetes:///api.prod:8080";
    if std::env::var_os(CHILD).is_some() {
        // The child: no in-cluster configuration and no kubeconfig.
        let error = run(&["resolve", target]).await.unwrap_err();
        assert!(error.contains(&format!("`{target}`")), "{error}");
        assert!(
            error.contains("no Kubernetes client configuration"),
            "{error}"
        );
        return;
    }
    // The environment decides where a Kubernetes client comes from, so the check runs in a
    // child process whose environment has none.
    let home = std::env::temp_dir().join(format!("waypost-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "messages_name_the_whole_kubernetes_target",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("no-such-config"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&home).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the check: {stdout}"
    );
}
