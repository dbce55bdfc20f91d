//! The kind walkthrough (`examples/kind/`), checked for what a user relies on, without a cluster
//! or a container engine:
//!
//! - every manifest parses into its k8s-openapi type, with no field that type does not know;
//! - every Service and Deployment selects pods that exist, and a Service's target port is a port
//!   those pods declare;
//! - each client's `--target`, parsed as waypost parses it, names a Service and a port that
//!   exist, and the port is the one the client ends up connecting to;
//! - servers are probed on the port they listen on and have the grace to drain before SIGKILL;
//! - RBAC grants exactly `get`, `list` and `watch` on `endpointslices` in `discovery.k8s.io`, to
//!   the one client that watches them;
//! - the image the pods run is the one `run.sh` builds from the Dockerfile, the Dockerfile builds
//!   the binary it starts, the pods' arguments are a command line that binary accepts, and every
//!   file `run.sh` names exists.
//!
//! Nothing here depends on the order of the steps in `run.sh` or on how the YAML is laid out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use waypost::discovery::{DnsHost, PortSelector, Target};
use waypost_examples::greeter::{Cli, Command};

fn kind_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kind")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            found.push(path);
        }
    }
}

/// The first key of `original` that `typed` (the same document after a trip through its
/// k8s-openapi type) lost or changed: a misspelt or misplaced field, which the typed parse alone
/// would drop silently.
fn difference(original: &Value, typed: &Value, path: &str) -> Option<String> {
    match (original, typed) {
        (Value::Object(original), Value::Object(typed)) => {
            original.iter().find_map(|(key, value)| {
                let path = format!("{path}.{key}");
                match typed.get(key) {
                    None => Some(format!("`{path}` is not a field of this type")),
                    Some(typed) => difference(value, typed, &path),
                }
            })
        }
        (Value::Array(original), Value::Array(typed)) if original.len() == typed.len() => original
            .iter()
            .zip(typed)
            .enumerate()
            .find_map(|(i, (original, typed))| {
                difference(original, typed, &format!("{path}[{i}]"))
            }),
        _ if original == typed => None,
        _ => Some(format!("`{path}` reads as {typed} instead of {original}")),
    }
}

fn typed<T: DeserializeOwned + Serialize>(file: &str, value: &Value) -> T {
    let name = std::any::type_name::<T>();
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|error| panic!("{file}: not a valid {name}: {error}"));
    if let Some(difference) = difference(value, &serde_json::to_value(&object).unwrap(), "") {
        panic!("{file}: {difference} ({name})");
    }
    object
}

/// A Deployment and the file it came from.
struct Workload {
    file: String,
    deployment: Deployment,
}

impl Workload {
    fn name(&self) -> &str {
        self.deployment.metadata.name.as_deref().unwrap()
    }

    fn namespace(&self) -> &str {
        self.deployment
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    fn template(&self) -> &PodTemplateSpec {
        &self.deployment.spec.as_ref().unwrap().template
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.template()
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    fn containers(&self) -> &[Container] {
        &self.template().spec.as_ref().unwrap().containers
    }

    fn service_account(&self) -> &str {
        let spec = self.template().spec.as_ref().unwrap();
        spec.service_account_name.as_deref().unwrap_or("default")
    }

    /// The greeter command line each container runs (the image's default when it gives none).
    fn commands(&self, image: &Image) -> Vec<Command> {
        self.containers()
            .iter()
            .map(|container| {
                let args = container.args.clone().unwrap_or_else(|| image.cmd.clone());
                Cli::try_parse_from(std::iter::once("greeter".to_owned()).chain(args))
                    .unwrap_or_else(|error| {
                        panic!("{}: the greeter rejects its arguments: {error}", self.file)
                    })
                    .command
            })
            .collect()
    }

    /// The `--target` of each client container.
    fn targets(&self, image: &Image) -> Vec<Target> {
        self.commands(image)
            .into_iter()
            .filter_map(|command| match command {
                Command::Client { target, .. } => Some(target.parse().unwrap_or_else(|error| {
                    panic!("{}: waypost rejects `{target}`: {error}", self.file)
                })),
                Command::Server { .. } => None,
            })
            .collect()
    }
}

/// Every object of the walkthrough, by kind.
#[derive(Default)]
struct Walkthrough {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    workloads: Vec<Workload>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
}

impl Walkthrough {
    fn load() -> Walkthrough {
        let root = kind_dir();
        let mut files = Vec::new();
        yaml_files(&root, &mut files);
        assert!(files.len() >= 4, "the manifests are there: {files:?}");
        let mut walkthrough = Walkthrough::default();
        for path in files {
            let file = path.strip_prefix(&root).unwrap().display().to_string();
            let text = read(&path);
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::to_value(
                    serde_yaml::Value::deserialize(document)
                        .unwrap_or_else(|error| panic!("{file}: not YAML: {error}")),
                )
                .unwrap();
                if value.is_null() {
                    continue;
                }
                walkthrough.add(&file, &value);
            }
        }
        walkthrough
    }

    fn add(&mut self, file: &str, value: &Value) {
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        match (api_version, value["kind"].as_str().unwrap_or_default()) {
            ("v1", "Namespace") => self.namespaces.push(typed(file, value)),
            ("v1", "ServiceAccount") => self.accounts.push(typed(file, value)),
            ("v1", "Service") => self.services.push(typed(file, value)),
            ("apps/v1", "Deployment") => self.workloads.push(Workload {
                file: file.to_owned(),
                deployment: typed(file, value),
            }),
            ("rbac.authorization.k8s.io/v1", "Role") => self.roles.push(typed(file, value)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                self.bindings.push(typed(file, value));
            }
            ("kind.x-k8s.io/v1alpha4", "Cluster") => {
                let nodes = value["nodes"]
                    .as_array()
                    .expect("a kind cluster lists nodes");
                for node in nodes {
                    let role = node["role"].as_str();
                    assert!(
                        matches!(role, Some("control-plane" | "worker")),
                        "{file}: a node role kind knows: {node}"
                    );
                }
            }
            (api_version, kind) => {
                panic!("{file}: {api_version} {kind} is not checked here; add its type")
            }
        }
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| {
            service.metadata.name.as_deref() == Some(name)
                && service.metadata.namespace.as_deref().unwrap_or("default") == namespace
        })
    }

    /// The workloads whose pods `service` selects.
    fn selected_by(&self, service: &Service) -> Vec<&Workload> {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let selector = service.spec.as_ref().and_then(|s| s.selector.clone());
        let selector = selector.unwrap_or_default();
        self.workloads
            .iter()
            .filter(|w| w.namespace() == namespace && !selector.is_empty())
            .filter(|w| matches(&selector, &w.labels()))
            .collect()
    }
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The port the pods of `workload` listen on for a Service port's `targetPort`.
fn container_port(workload: &Workload, target: &IntOrString) -> Option<i32> {
    let ports = workload
        .containers()
        .iter()
        .flat_map(|c| c.ports.iter().flatten());
    let mut ports = ports.clone();
    match target {
        IntOrString::Int(number) => ports.find(|p| p.container_port == *number),
        IntOrString::String(name) => ports.find(|p| p.name.as_deref() == Some(name.as_str())),
    }
    .map(|port| port.container_port)
}

/// What the Dockerfile builds and starts.
struct Image {
    /// The examples it compiles (`--example NAME`).
    examples: Vec<String>,
    /// The path the binary is installed at in the final stage, and the entrypoint.
    entrypoint: String,
    copied: String,
    cmd: Vec<String>,
    exposed: i32,
}

fn json_array(instruction: &str, dockerfile: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("the Dockerfile has a {instruction}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{instruction} in exec form: {e}"))
}

impl Image {
    fn load() -> Image {
        let dockerfile = read(&kind_dir().join("Dockerfile"));
        let words: Vec<&str> = dockerfile.split_whitespace().collect();
        let examples = words
            .windows(2)
            .filter(|pair| pair[0] == "--example")
            .map(|pair| pair[1].to_owned())
            .collect();
        let copy = dockerfile
            .lines()
            .find(|line| line.starts_with("COPY --from="))
            .expect("the final stage copies the binary from the build stage");
        let entrypoint = json_array("ENTRYPOINT", &dockerfile);
        assert_eq!(entrypoint.len(), 1, "the entrypoint is the binary alone");
        Image {
            examples,
            entrypoint: entrypoint[0].clone(),
            copied: copy.split_whitespace().last().unwrap().to_owned(),
            cmd: json_array("CMD", &dockerfile),
            exposed: dockerfile
                .lines()
                .find_map(|line| line.strip_prefix("EXPOSE "))
                .expect("the Dockerfile exposes the server's port")
                .trim()
                .parse()
                .unwrap(),
        }
    }
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let walkthrough = Walkthrough::load();
    assert!(!walkthrough.namespaces.is_empty());
    assert!(!walkthrough.services.is_empty());
    assert!(!walkthrough.workloads.is_empty());
    // Everything is created in a namespace the walkthrough creates itself.
    let namespaces: BTreeSet<&str> = walkthrough
        .namespaces
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let used = walkthrough
        .services
        .iter()
        .map(|s| &s.metadata)
        .chain(walkthrough.accounts.iter().map(|a| &a.metadata))
        .chain(walkthrough.roles.iter().map(|r| &r.metadata))
        .chain(walkthrough.bindings.iter().map(|b| &b.metadata))
        .chain(walkthrough.workloads.iter().map(|w| &w.deployment.metadata));
    for metadata in used {
        let namespace = metadata.namespace.as_deref().unwrap_or("default");
        assert!(
            namespaces.contains(namespace),
            "{:?} is in namespace {namespace}, which the walkthrough does not create",
            metadata.name
        );
    }
}

#[test]
fn a_misspelt_field_is_caught() {
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "x" },
        "spec": { "selectr": { "app": "x" } }
    });
    let caught = std::panic::catch_unwind(|| typed::<Service>("test.yaml", &value));
    let message = *caught.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains("`.spec.selectr` is not a field"),
        "{message}"
    );
}

#[test]
fn selectors_match_the_pods_and_service_ports_reach_a_container_port() {
    let walkthrough = Walkthrough::load();
    for workload in &walkthrough.workloads {
        let selector = workload.deployment.spec.as_ref().unwrap().selector.clone();
        let selector = selector.match_labels.unwrap_or_default();
        assert!(
            !selector.is_empty() && matches(&selector, &workload.labels()),
            "{}: the Deployment selects its own pods",
            workload.name()
        );
        let account = workload.service_account();
        assert!(
            account == "default"
                || walkthrough
                    .accounts
                    .iter()
                    .any(|a| a.metadata.name.as_deref() == Some(account)),
            "{}: ServiceAccount {account} exists",
            workload.name()
        );
    }
    for service in &walkthrough.services {
        let name = service.metadata.name.as_deref().unwrap();
        let selected = walkthrough.selected_by(service);
        assert!(!selected.is_empty(), "Service {name} selects some pods");
        for workload in selected {
            for port in service.spec.as_ref().unwrap().ports.iter().flatten() {
                let target = port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port));
                assert!(
                    container_port(workload, &target).is_some(),
                    "Service {name} port {}: {target:?} is not a port of {}'s pods",
                    port.port,
                    workload.name()
                );
            }
        }
    }
}

#[test]
fn each_client_target_names_a_service_and_the_port_its_pods_listen_on() {
    let walkthrough = Walkthrough::load();
    let image = Image::load();
    let mut clients = 0;
    for workload in &walkthrough.workloads {
        for target in workload.targets(&image) {
            clients += 1;
            let client_namespace = workload.namespace();
            let (service, port) = match &target {
                Target::Kubernetes(target) => {
                    let namespace = target.namespace().unwrap_or(client_namespace);
                    let service = walkthrough.service(namespace, target.service());
                    let service = service.unwrap_or_else(|| panic!("{target}: no such Service"));
                    // EndpointSlices carry the Service port's name and the target port's number.
                    let ports = service.spec.as_ref().unwrap().ports.iter().flatten();
                    let port = match target.port() {
                        Some(PortSelector::Name(name)) => ports
                            .clone()
                            .find(|p| p.name.as_deref() == Some(name.as_str())),
                        Some(PortSelector::Number(number)) => {
                            ports.clone().find(|p| p.port == i32::from(*number))
                        }
                        None => ports.clone().next().filter(|_| ports.count() == 1),
                    };
                    (
                        service,
                        port.unwrap_or_else(|| panic!("{target}: no such port")),
                    )
                }
                Target::Dns(target) => {
                    let DnsHost::Name(host) = target.host() else {
                        panic!("{target}: a Service name, not an address");
                    };
                    let host = host.trim_end_matches('.');
                    let mut labels = host.splitn(3, '.');
                    let (name, namespace, domain) = (labels.next(), labels.next(), labels.next());
                    assert_eq!(
                        domain,
                        Some("svc.cluster.local"),
                        "{target}: a Service name"
                    );
                    let service = walkthrough.service(namespace.unwrap(), name.unwrap());
                    let service = service.unwrap_or_else(|| panic!("{target}: no such Service"));
                    let number = i32::from(target.port().expect("a port"));
                    let mut ports = service.spec.as_ref().unwrap().ports.iter().flatten();
                    let port = ports.find(|p| p.port == number);
                    let port = port.unwrap_or_else(|| panic!("{target}: no such Service port"));
                    // A headless Service's name resolves to the pods' own addresses: the client
                    // connects to the port the pods listen on, so it must be the target port.
                    if is_headless(service) {
                        let selected = walkthrough.selected_by(service);
                        let target_port = port.target_port.clone().unwrap();
                        assert!(
                            selected
                                .iter()
                                .all(|w| container_port(w, &target_port) == Some(number)),
                            "{target}: the pods do not listen on {number}"
                        );
                    }
                    (service, port)
                }
                Target::Static(_) | Target::Xds(_) => {
                    panic!("{target}: the walkthrough discovers its servers in the cluster")
                }
            };
            let servers = walkthrough.selected_by(service);
            assert!(
                servers.iter().all(|server| server
                    .commands(&image)
                    .iter()
                    .all(|c| matches!(c, Command::Server { .. }))),
                "{target}: the Service selects greeter servers only"
            );
            let target_port = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            for server in servers {
                let listening = container_port(server, &target_port).unwrap();
                for command in server.commands(&image) {
                    if let Command::Server { listen, .. } = command {
                        assert_eq!(
                            i32::from(listen.port()),
                            listening,
                            "{}: the server listens on the port it declares",
                            server.name()
                        );
                    }
                }
            }
        }
    }
    assert!(clients >= 2, "the walkthrough runs its clients");
}

#[test]
fn rbac_is_exactly_get_list_watch_on_endpointslices() {
    let walkthrough = Walkthrough::load();
    let image = Image::load();
    for role in &walkthrough.roles {
        let name = role.metadata.name.as_deref().unwrap();
        let rules = role.rules.as_deref().unwrap_or_default();
        assert_eq!(rules.len(), 1, "Role {name}: one rule");
        let rule = &rules[0];
        let set = |list: &Option<Vec<String>>| -> BTreeSet<String> {
            list.iter().flatten().cloned().collect()
        };
        assert_eq!(
            set(&rule.api_groups),
            BTreeSet::from(["discovery.k8s.io".to_owned()])
        );
        assert_eq!(
            set(&rule.resources),
            BTreeSet::from(["endpointslices".to_owned()])
        );
        assert_eq!(
            set(&Some(rule.verbs.clone())),
            ["get", "list", "watch"].map(String::from).into(),
            "Role {name}: the verbs waypost's Kubernetes source uses, and no others"
        );
        assert!(rule.non_resource_urls.is_none() && rule.resource_names.is_none());
    }
    // Who may watch EndpointSlices: the accounts bound to those Roles in their namespace.
    let mut granted = BTreeSet::new();
    for binding in &walkthrough.bindings {
        let namespace = binding.metadata.namespace.as_deref().unwrap_or("default");
        assert_eq!(binding.role_ref.kind, "Role", "a namespaced grant");
        assert!(
            walkthrough.roles.iter().any(|role| {
                role.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
                    && role.metadata.namespace.as_deref().unwrap_or("default") == namespace
            }),
            "RoleBinding {:?} binds a Role of its namespace",
            binding.metadata.name
        );
        for subject in binding.subjects.iter().flatten() {
            assert_eq!(subject.kind, "ServiceAccount");
            let account_namespace = subject.namespace.as_deref().unwrap_or(namespace);
            granted.insert((
                namespace.to_owned(),
                account_namespace.to_owned(),
                subject.name.clone(),
            ));
        }
    }
    // Exactly the clients that watch EndpointSlices have the grant, in the namespace they watch;
    // the others cannot reach the API at all.
    let mut needed = BTreeSet::new();
    for workload in &walkthrough.workloads {
        let account = workload.service_account().to_owned();
        let namespace = workload.namespace().to_owned();
        let watched: Vec<String> = workload
            .targets(&image)
            .into_iter()
            .filter_map(|target| match target {
                Target::Kubernetes(target) => {
                    Some(target.namespace().unwrap_or(&namespace).to_owned())
                }
                _ => None,
            })
            .collect();
        if watched.is_empty() {
            let spec = workload.template().spec.as_ref().unwrap();
            let account_mounts = walkthrough
                .accounts
                .iter()
                .find(|a| a.metadata.name.as_deref() == Some(account.as_str()))
                .and_then(|a| a.automount_service_account_token);
            assert_eq!(
                spec.automount_service_account_token.or(account_mounts),
                Some(false),
                "{}: no Kubernetes API token for a client that does not use the API",
                workload.name()
            );
        }
        for watched in watched {
            needed.insert((watched, namespace.clone(), account.clone()));
        }
    }
    assert!(!needed.is_empty(), "a client watches EndpointSlices");
    assert_eq!(granted, needed);
}

#[test]
fn the_pods_run_the_image_run_sh_builds_from_the_dockerfile() {
    let walkthrough = Walkthrough::load();
    let image = Image::load();
    let run_sh = read(&kind_dir().join("run.sh"));
    let tag = run_sh
        .lines()
        .find_map(|line| line.trim().strip_prefix("IMAGE="))
        .expect("run.sh names the image it builds")
        .trim_matches('"');
    assert!(
        run_sh.contains(r#"docker build -f "$HERE/Dockerfile" -t "$IMAGE""#),
        "run.sh builds the image from this Dockerfile"
    );
    for workload in &walkthrough.workloads {
        for container in workload.containers() {
            assert_eq!(container.image.as_deref(), Some(tag), "{}", workload.name());
            // The image exists only in the kind nodes, loaded by run.sh.
            assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
        }
    }

    // The Dockerfile builds examples that exist and starts the one it installs.
    let manifest = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    let manifest: toml_like::Examples = toml_like::examples(&manifest);
    assert!(
        !image.examples.is_empty(),
        "the Dockerfile builds an example"
    );
    for example in &image.examples {
        let path = manifest
            .get(example)
            .unwrap_or_else(|| panic!("the Dockerfile builds `{example}`, not an example"));
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(path).is_file());
    }
    assert!(
        image
            .examples
            .iter()
            .any(|e| image.entrypoint.ends_with(&format!("/{e}"))),
        "the entrypoint {} is a binary the build stage compiled",
        image.entrypoint
    );
    assert_eq!(
        image.copied, image.entrypoint,
        "the final stage has the entrypoint"
    );
    // Its default command is a server on the port it exposes.
    let default =
        Cli::try_parse_from(std::iter::once("greeter".to_owned()).chain(image.cmd.clone()))
            .expect("the image's default command is a valid greeter command line");
    let Command::Server { listen, .. } = default.command else {
        panic!("the image serves by default");
    };
    assert_eq!(i32::from(listen.port()), image.exposed);
    // The pods' command lines are ones that binary accepts.
    for workload in &walkthrough.workloads {
        assert!(!workload.commands(&image).is_empty());
    }
}

#[test]
fn every_file_run_sh_names_exists_and_it_is_valid_bash() {
    let dir = kind_dir();
    let run_sh = dir.join("run.sh");
    let output = std::process::Command::new("bash")
        .arg("-n")
        .arg(&run_sh)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = read(&run_sh);
    let mut named = 0;
    for (i, _) in text.match_indices("\"$HERE/") {
        let rest = &text[i + "\"$HERE/".len()..];
        let path = &rest[..rest.find('"').unwrap()];
        assert!(
            dir.join(path).exists(),
            "run.sh names $HERE/{path}, which does not exist"
        );
        named += 1;
    }
    assert!(named >= 4, "run.sh names its manifests and Dockerfile");
    // The Deployments it waits for and reads logs from are the walkthrough's.
    let walkthrough = Walkthrough::load();
    let deployments: BTreeSet<&str> = walkthrough.workloads.iter().map(Workload::name).collect();
    let clients = text
        .lines()
        .find_map(|line| line.strip_prefix("CLIENTS=("))
        .expect("run.sh lists its clients")
        .trim_end_matches(')');
    for name in clients.split_whitespace().chain(
        text.match_indices("deployment/")
            .map(|(i, _)| &text[i + "deployment/".len()..])
            .map(|rest| {
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .next()
                    .unwrap()
            })
            .filter(|name| !name.is_empty()),
    ) {
        assert!(
            deployments.contains(name),
            "run.sh uses deployment {name}, which no manifest defines"
        );
    }
}

/// The `[[example]]` entries of a Cargo manifest, read without a TOML parser (the manifest's
/// example tables are `name = "..."` and `path = "..."` lines).
mod toml_like {
    use std::collections::BTreeMap;

    pub(crate) type Examples = BTreeMap<String, String>;

    pub(crate) fn examples(manifest: &str) -> Examples {
        let mut examples = BTreeMap::new();
        for table in manifest.split("[[example]]").skip(1) {
            let field = |key: &str| {
                table.lines().find_map(|line| {
                    let value = line.trim().strip_prefix(key)?.trim().strip_prefix('=')?;
                    Some(value.trim().trim_matches('"').to_owned())
                })
            };
            if let (Some(name), Some(path)) = (field("name"), field("path")) {
                examples.insert(name, path);
            }
        }
        examples
    }
}

#[test]
fn servers_are_probed_on_their_port_and_drain_before_they_are_killed() {
    let walkthrough = Walkthrough::load();
    let image = Image::load();
    let mut servers = 0;
    for workload in &walkthrough.workloads {
        let spec = workload.template().spec.as_ref().unwrap();
        for (container, command) in workload.containers().iter().zip(workload.commands(&image)) {
            let Command::Server {
                listen,
                drain_delay_secs,
                ..
            } = command
            else {
                continue;
            };
            servers += 1;
            let name = workload.name();
            // Ready in the EndpointSlices (and DNS) only once the gRPC health service answers on
            // the port the server listens on.
            let probe = container
                .readiness_probe
                .as_ref()
                .and_then(|p| p.grpc.as_ref());
            let probe = probe.unwrap_or_else(|| panic!("{name}: a gRPC readiness probe"));
            assert_eq!(probe.port, i32::from(listen.port()), "{name}: probed port");
            // SIGKILL only after the preStop sleep, the drain delay and some time for the calls
            // in flight.
            let pre_stop = container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.sleep.as_ref())
                .map_or(0, |sleep| sleep.seconds);
            let grace = spec.termination_grace_period_seconds.unwrap_or(30);
            assert!(
                grace > pre_stop + i64::try_from(drain_delay_secs).unwrap(),
                "{name}: {grace} s of grace for a {pre_stop} s preStop and a \
                 {drain_delay_secs} s drain delay"
            );
        }
    }
    assert!(servers > 0, "the walkthrough runs servers");
}
