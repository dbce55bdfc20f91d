//! Which namespace a `kubernetes:` target watches, and the default client.
//!
//! The default-client test sets `KUBECONFIG`, which a test cannot do inside its own process
//! (the environment is shared by every thread), so it runs itself again as a child process with
//! the variable set, and the child talks to the fake API server of the parent.

use std::path::PathBuf;

use waypost::discovery::DiscoveryErrorKind;
use waypost::discovery::source::kubernetes::{self, KubernetesSource, NamespaceOrigin};
use waypost_tests::kube_api::slices::{SliceBuilder, endpoint_slice, ep};
use waypost_tests::kube_api::{FakeApiServer, RequestKind, TEST_BACKOFF_MAX, TEST_BACKOFF_MIN};

fn slice_in(namespace: &str, ip: &str) -> SliceBuilder {
    endpoint_slice(&format!("api-{namespace}"), "api")
        .namespace(namespace)
        .port("http", 8080)
        .endpoint(ep(ip))
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waypost-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn rig_with_three_namespaces() -> FakeApiServer {
    let rig = FakeApiServer::start().await;
    rig.apply(slice_in("default", "10.0.0.1"));
    rig.apply(slice_in("team-a", "10.0.0.2"));
    rig.apply(slice_in("team-b", "10.0.0.3"));
    rig
}

fn watched_namespaces(rig: &FakeApiServer) -> Vec<String> {
    rig.requests_of(RequestKind::List)
        .iter()
        .map(|r| r.path.split('/').nth(5).unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_namespace_wins_over_the_pod_namespace() {
    let rig = rig_with_three_namespaces().await;
    let dir = scratch_dir("ns-target");
    std::fs::write(dir.join("namespace"), "team-a\n").unwrap();
    let source = rig
        .source("kubernetes:///api.team-b:http")
        .await
        .namespace_file(dir.join("namespace"));
    assert_eq!(
        source.namespace(),
        ("team-b".to_owned(), NamespaceOrigin::Target)
    );
    let endpoints = source.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set[0].address(), "10.0.0.3:8080".parse().unwrap());
    assert_eq!(watched_namespaces(&rig), ["team-b"]);
    std::fs::remove_dir_all(dir).unwrap();

    // kuberesolver's form names the namespace in the authority.
    let endpoints = rig.source("kubernetes://team-a/api:http").await.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set[0].address(), "10.0.0.2:8080".parse().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_namespace_the_pod_namespace_is_used() {
    let rig = rig_with_three_namespaces().await;
    let dir = scratch_dir("ns-pod");
    std::fs::write(dir.join("namespace"), "team-a").unwrap();
    let source = rig
        .source("kubernetes:///api:http")
        .await
        .namespace_file(dir.join("namespace"));
    assert_eq!(
        source.namespace(),
        ("team-a".to_owned(), NamespaceOrigin::ServiceAccount)
    );
    let endpoints = source.spawn();
    let set = endpoints.resolved().await.unwrap();
    assert_eq!(set[0].address(), "10.0.0.2:8080".parse().unwrap());
    assert_eq!(watched_namespaces(&rig), ["team-a"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_namespace_or_a_pod_the_default_namespace_is_used() {
    let rig = rig_with_three_namespaces().await;
    // No file at all (outside a cluster).
    let source = rig.source("kubernetes:///api:http").await;
    assert_eq!(
        source.namespace(),
        ("default".to_owned(), NamespaceOrigin::Default)
    );
    let set = source.spawn().resolved().await.unwrap();
    assert_eq!(set[0].address(), "10.0.0.1:8080".parse().unwrap());

    // A file that holds no namespace name is passed over.
    let dir = scratch_dir("ns-bad");
    std::fs::write(dir.join("namespace"), "Not/A Namespace").unwrap();
    let source = rig
        .source("kubernetes:///api:http")
        .await
        .namespace_file(dir.join("namespace"));
    assert_eq!(
        source.namespace(),
        ("default".to_owned(), NamespaceOrigin::Default)
    );
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(watched_namespaces(&rig), ["default"]);
}

const CHILD: &str = "WAYPOST_TESTS_DEFAULT_CLIENT_CHILD";

/// In the child: build the default client from `KUBECONFIG` and resolve a target through it.
async fn child(mode: &str) {
    match mode {
        "resolve" => {
            let client = kubernetes::default_client().await.unwrap();
            let endpoints =
                KubernetesSource::new(client, "kubernetes:///api.team-a:http".parse().unwrap())
                    .backoff(TEST_BACKOFF_MIN, TEST_BACKOFF_MAX)
                    .spawn();
            let set = tokio::time::timeout(waypost_tests::PATIENCE, endpoints.resolved())
                .await
                .expect("an answer in time")
                .unwrap();
            assert_eq!(set[0].address(), "10.0.0.2:8080".parse().unwrap());
        }
        "missing" => {
            let Err(error) = kubernetes::default_client().await else {
                panic!("a client without any configuration");
            };
            assert_eq!(error.kind(), DiscoveryErrorKind::Other);
            assert!(error.detail().contains("kubeconfig"), "{error}");
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn run_child(mode: &str, kubeconfig: &std::path::Path) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    std::process::Command::new(exe)
        .args([
            "--exact",
            concat!(
                module_path!(),
                "::the_default_client_comes_from_the_environment"
            )
            .split_once("::")
            .expect("a module path with the crate name")
            .1,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_client_comes_from_the_environment() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode).await;
        return;
    }
    let rig = rig_with_three_namespaces().await;
    let dir = scratch_dir("kubeconfig");
    let kubeconfig = dir.join("config");
    std::fs::write(&kubeconfig, rig.kubeconfig()).unwrap();

    let output = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        move || run_child("resolve", &kubeconfig)
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The child really ran the test and really asked this server.
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
    assert_eq!(watched_namespaces(&rig), ["team-a"]);

    let missing = dir.join("no-such-config");
    let output = tokio::task::spawn_blocking(move || run_child("missing", &missing))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
