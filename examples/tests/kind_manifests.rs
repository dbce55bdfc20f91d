//! The kind walkthrough (`examples/kind/`), checked without a cluster or a container engine.
//!
//! - Every manifest parses into its k8s-openapi type, and holds no field that type does not know
//!   (the typed parse alone would drop a misspelt or misplaced key silently; `kubectl apply`
//!   would only reject it once a cluster is there).
//! - The Kubernetes client's RBAC grants exactly what waypost's Kubernetes source uses: `get`,
//!   `list` and `watch` on `discovery.k8s.io` `endpointslices`, in a namespaced Role bound to
//!   that client's own ServiceAccount, and nothing else anywhere.
//! - Labels and selectors line up: the Services select the server pods and only them, and each
//!   client's target, parsed as waypost parses it, names a Service and a port that exist.
//! - The Dockerfile builds the `greeter` example into a non-root image, and `run.sh` is valid
//!   bash that drives kind, docker and kubectl in the order the README describes (run against
//!   stand-in commands that only record their arguments).
//!
//! Nothing here touches the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use waypost::discovery::{DnsHost, PortSelector, Target};

/// The namespace every object of the walkthrough lives in.
const NAMESPACE: &str = "waypost-demo";
/// The image `run.sh` builds and loads, and every pod runs.
const IMAGE: &str = "waypost-greeter:dev";
/// The cluster domain of a kind cluster.
const CLUSTER_DOMAIN: &str = "svc.cluster.local";
/// The user of the distroless `nonroot` image.
const NONROOT_UID: i64 = 65532;

fn kind_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kind")
}

fn read(relative: &str) -> String {
    let path = kind_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One Kubernetes object of the walkthrough, typed by its `kind`.
// A dozen objects, read once: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Service(Service),
    Deployment(Deployment),
    Role(Role),
    RoleBinding(RoleBinding),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
}

/// An object and the file it came from (relative to `examples/kind/`).
#[derive(Debug)]
struct Loaded {
    file: String,
    object: Object,
}

/// Everything under `examples/kind/` that is YAML.
#[derive(Debug)]
struct Walkthrough {
    files: Vec<String>,
    objects: Vec<Loaded>,
    kind_config: Option<Value>,
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if matches!(
            path.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml")
        ) {
            found.push(path);
        }
    }
}

/// The first place where `original` holds something `typed` (the same document after a trip
/// through its k8s-openapi type) lost or changed. Keys the type adds (required lists it defaults
/// to empty) are not differences.
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
            .find_map(|(index, (original, typed))| {
                difference(original, typed, &format!("{path}[{index}]"))
            }),
        _ if original == typed => None,
        _ => Some(format!("`{path}` reads as {typed} instead of {original}")),
    }
}

/// `value` as a `T`, insisting that every field of the document is one `T` knows.
fn typed<T: DeserializeOwned + Serialize>(file: &str, value: &Value) -> T {
    let type_name = std::any::type_name::<T>();
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|error| panic!("{file}: not a valid {type_name}: {error}"));
    let again = serde_json::to_value(&object).unwrap();
    if let Some(difference) = difference(value, &again, "") {
        panic!("{file}: {difference} ({type_name})");
    }
    object
}

impl Walkthrough {
    fn load() -> Walkthrough {
        let root = kind_dir();
        let mut paths = Vec::new();
        yaml_files(&root, &mut paths);
        paths.sort();
        let mut walkthrough = Walkthrough {
            files: Vec::new(),
            objects: Vec::new(),
            kind_config: None,
        };
        for path in paths {
            let file = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(document)
                    .unwrap_or_else(|error| panic!("{file}: not YAML: {error}"));
                if value.is_null() {
                    continue;
                }
                let api_version = value["apiVersion"].as_str().unwrap_or_default();
                let kind = value["kind"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: a document without `kind`"));
                let object = match kind {
                    "Cluster" if api_version.starts_with("kind.x-k8s.io/") => {
                        assert!(
                            walkthrough.kind_config.replace(value).is_none(),
                            "{file}: a second kind cluster configuration"
                        );
                        continue;
                    }
                    "Namespace" => Object::Namespace(typed(&file, &value)),
                    "ServiceAccount" => Object::ServiceAccount(typed(&file, &value)),
                    "Service" => Object::Service(typed(&file, &value)),
                    "Deployment" => Object::Deployment(typed(&file, &value)),
                    "Role" => Object::Role(typed(&file, &value)),
                    "RoleBinding" => Object::RoleBinding(typed(&file, &value)),
                    "ClusterRole" => Object::ClusterRole(typed(&file, &value)),
                    "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(&file, &value)),
                    other => panic!("{file}: `{other}` is not a kind this walkthrough uses"),
                };
                walkthrough.objects.push(Loaded {
                    file: file.clone(),
                    object,
                });
            }
            walkthrough.files.push(file);
        }
        walkthrough
    }

    fn deployments(&self) -> impl Iterator<Item = (&str, &Deployment)> {
        self.objects
            .iter()
            .filter_map(|loaded| match &loaded.object {
                Object::Deployment(deployment) => Some((loaded.file.as_str(), deployment)),
                _ => None,
            })
    }

    fn services(&self) -> impl Iterator<Item = &Service> {
        self.objects
            .iter()
            .filter_map(|loaded| match &loaded.object {
                Object::Service(service) => Some(service),
                _ => None,
            })
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services().find(|service| {
            service.metadata.namespace.as_deref() == Some(namespace)
                && service.metadata.name.as_deref() == Some(name)
        })
    }

    fn service_accounts(&self) -> impl Iterator<Item = &ServiceAccount> {
        self.objects
            .iter()
            .filter_map(|loaded| match &loaded.object {
                Object::ServiceAccount(account) => Some(account),
                _ => None,
            })
    }

    fn roles(&self) -> impl Iterator<Item = &Role> {
        self.objects
            .iter()
            .filter_map(|loaded| match &loaded.object {
                Object::Role(role) => Some(role),
                _ => None,
            })
    }

    fn role_bindings(&self) -> impl Iterator<Item = &RoleBinding> {
        self.objects
            .iter()
            .filter_map(|loaded| match &loaded.object {
                Object::RoleBinding(binding) => Some(binding),
                _ => None,
            })
    }

    /// The one Deployment that runs `greeter server`.
    fn server(&self) -> &Deployment {
        let servers: Vec<&Deployment> = self
            .deployments()
            .filter(|(_, deployment)| {
                args(container(deployment)).first().map(String::as_str) == Some("server")
            })
            .map(|(_, deployment)| deployment)
            .collect();
        assert_eq!(servers.len(), 1, "one server Deployment");
        servers[0]
    }

    /// Every Deployment that runs `greeter client`, with its file and parsed target.
    fn clients(&self) -> Vec<Client<'_>> {
        self.deployments()
            .filter(|(_, deployment)| {
                args(container(deployment)).first().map(String::as_str) == Some("client")
            })
            .map(|(file, deployment)| {
                let name = name(&deployment.metadata);
                let target = flag(args(container(deployment)), "--target")
                    .unwrap_or_else(|| panic!("{name}: a client without --target"));
                let target: Target = target
                    .parse()
                    .unwrap_or_else(|error| panic!("{name}: `{target}`: {error}"));
                Client {
                    file,
                    deployment,
                    target,
                }
            })
            .collect()
    }
}

/// A client Deployment and the target it calls.
struct Client<'a> {
    file: &'a str,
    deployment: &'a Deployment,
    target: Target,
}

impl Client<'_> {
    fn name(&self) -> &str {
        name(&self.deployment.metadata)
    }

    /// Under `contrast/`: the counter-example, not part of the main walkthrough.
    fn is_contrast(&self) -> bool {
        self.file.starts_with("contrast/")
    }
}

fn name(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    metadata.name.as_deref().expect("every object has a name")
}

fn namespace(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    metadata
        .namespace
        .as_deref()
        .expect("every namespaced object names its namespace")
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .unwrap_or_else(|| panic!("{}: no pod template", name(&deployment.metadata)))
}

fn pod_labels(deployment: &Deployment) -> &BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|metadata| metadata.labels.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "{}: pod template without labels",
                name(&deployment.metadata)
            )
        })
}

/// The Deployment's one container.
fn container(deployment: &Deployment) -> &Container {
    let containers = &pod_spec(deployment).containers;
    assert_eq!(
        containers.len(),
        1,
        "{}: one container",
        name(&deployment.metadata)
    );
    &containers[0]
}

fn args(container: &Container) -> &[String] {
    container.args.as_deref().unwrap_or_default()
}

/// The value of `--name value` or `--name=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(index, arg)| {
        if arg == name {
            args.get(index + 1).map(String::as_str)
        } else {
            arg.strip_prefix(name)?.strip_prefix('=')
        }
    })
}

/// `true` when every label of `selector` is on `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        == Some("None")
}

/// The container port a Service port sends to: its `targetPort` (a number, or a name looked up
/// in the container's ports), else its `port`.
fn container_port_of(
    service_port: &k8s_openapi::api::core::v1::ServicePort,
    container: &Container,
) -> Option<i32> {
    let ports = container.ports.as_deref().unwrap_or_default();
    match &service_port.target_port {
        None => Some(service_port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(port_name)) => ports
            .iter()
            .find(|port| port.name.as_deref() == Some(port_name.as_str()))
            .map(|port| port.container_port),
    }
}

/// The ServiceAccount a pod runs as (Kubernetes' `default` when none is named).
fn service_account(deployment: &Deployment) -> &str {
    pod_spec(deployment)
        .service_account_name
        .as_deref()
        .unwrap_or("default")
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let walkthrough = Walkthrough::load();
    for expected in [
        "kind-config.yaml",
        "manifests/00-namespace.yaml",
        "manifests/10-server.yaml",
        "manifests/20-client-dns.yaml",
        "manifests/30-client-kubernetes.yaml",
        "contrast/client-dns-clusterip.yaml",
    ] {
        assert!(
            walkthrough.files.iter().any(|file| file == expected),
            "{expected} is missing from {:?}",
            walkthrough.files
        );
    }

    // One namespace holds everything, and no object is defined twice.
    let mut seen = BTreeSet::new();
    let mut namespaces = Vec::new();
    for loaded in &walkthrough.objects {
        let (kind, metadata) = match &loaded.object {
            Object::Namespace(object) => {
                namespaces.push(name(&object.metadata));
                ("Namespace", &object.metadata)
            }
            Object::ServiceAccount(object) => ("ServiceAccount", &object.metadata),
            Object::Service(object) => ("Service", &object.metadata),
            Object::Deployment(object) => ("Deployment", &object.metadata),
            Object::Role(object) => ("Role", &object.metadata),
            Object::RoleBinding(object) => ("RoleBinding", &object.metadata),
            Object::ClusterRole(object) => ("ClusterRole", &object.metadata),
            Object::ClusterRoleBinding(object) => ("ClusterRoleBinding", &object.metadata),
        };
        if kind != "Namespace" && !kind.starts_with("Cluster") {
            assert_eq!(
                namespace(metadata),
                NAMESPACE,
                "{}: {kind} {}",
                loaded.file,
                name(metadata)
            );
        }
        assert!(
            seen.insert((kind, metadata.namespace.clone(), name(metadata).to_owned())),
            "{}: {kind} {} is defined twice",
            loaded.file,
            name(metadata)
        );
    }
    assert_eq!(namespaces, [NAMESPACE]);
    let first_applied = walkthrough
        .objects
        .iter()
        .find(|loaded| loaded.file.starts_with("manifests/"))
        .expect("manifests under manifests/");
    assert!(
        matches!(first_applied.object, Object::Namespace(_)),
        "`kubectl apply -f manifests/` creates the namespace first (files apply in name order)"
    );

    // Every Deployment selects its own pod template.
    for (file, deployment) in walkthrough.deployments() {
        let spec = deployment.spec.as_ref().unwrap();
        assert!(
            spec.selector.match_expressions.is_none(),
            "{file}: plain label selectors"
        );
        let selector = spec.selector.match_labels.as_ref().expect("a selector");
        assert!(!selector.is_empty(), "{file}: an empty selector");
        assert!(
            selects(selector, pod_labels(deployment)),
            "{file}: {} does not select its own pods",
            name(&deployment.metadata)
        );
    }

    // The kind configuration: one control plane and workers for the server pods.
    let config = walkthrough
        .kind_config
        .expect("a kind cluster configuration");
    assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
    let roles: Vec<&str> = config["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| node["role"].as_str().expect("a node role"))
        .collect();
    assert_eq!(
        roles
            .iter()
            .filter(|role| **role == "control-plane")
            .count(),
        1
    );
    assert!(
        roles
            .iter()
            .all(|role| ["control-plane", "worker"].contains(role))
    );
    assert!(roles.contains(&"worker"));
}

#[test]
fn a_misspelt_field_is_caught() {
    let document: Value = serde_yaml::from_str(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selectr:\n    app: x\n",
    )
    .unwrap();
    let error = std::panic::catch_unwind(|| typed::<Service>("inline", &document)).unwrap_err();
    let message = error.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("`.spec.selectr` is not a field"),
        "{message}"
    );
}

#[test]
fn the_kubernetes_client_may_only_get_list_and_watch_endpointslices() {
    let walkthrough = Walkthrough::load();
    let clients = walkthrough.clients();

    // Namespaced permissions only.
    for loaded in &walkthrough.objects {
        assert!(
            !matches!(
                loaded.object,
                Object::ClusterRole(_) | Object::ClusterRoleBinding(_)
            ),
            "{}: cluster-wide RBAC; a namespaced Role is enough",
            loaded.file
        );
    }

    let kubernetes: Vec<&Client<'_>> = clients
        .iter()
        .filter(|client| matches!(client.target, Target::Kubernetes(_)))
        .collect();
    assert_eq!(kubernetes.len(), 1, "one kubernetes:/// client");
    let client = kubernetes[0];
    let Target::Kubernetes(target) = &client.target else {
        unreachable!()
    };
    let client_namespace = namespace(&client.deployment.metadata);
    let target_namespace = target.namespace().unwrap_or(client_namespace);

    // Its own ServiceAccount, which mounts a token (the in-cluster configuration reads it).
    let account_name = service_account(client.deployment);
    assert_ne!(
        account_name,
        "default",
        "{}: its own ServiceAccount",
        client.name()
    );
    let account = walkthrough
        .service_accounts()
        .find(|account| {
            name(&account.metadata) == account_name
                && namespace(&account.metadata) == client_namespace
        })
        .unwrap_or_else(|| panic!("ServiceAccount {account_name} is not in the manifests"));
    assert_ne!(account.automount_service_account_token, Some(false));
    assert_ne!(
        pod_spec(client.deployment).automount_service_account_token,
        Some(false)
    );

    // Exactly one binding names it, in the target's namespace, to a Role.
    let is_client = |subject: &k8s_openapi::api::rbac::v1::Subject| {
        subject.kind == "ServiceAccount"
            && subject.name == account_name
            && subject.namespace.as_deref() == Some(client_namespace)
    };
    let bindings: Vec<&RoleBinding> = walkthrough
        .role_bindings()
        .filter(|binding| binding.subjects.iter().flatten().any(is_client))
        .collect();
    assert_eq!(bindings.len(), 1, "one RoleBinding for {account_name}");
    let binding = bindings[0];
    assert_eq!(namespace(&binding.metadata), target_namespace);
    assert_eq!(
        binding.subjects.as_deref().unwrap().len(),
        1,
        "the binding grants only the client"
    );
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "Role");

    let role = walkthrough
        .roles()
        .find(|role| {
            name(&role.metadata) == binding.role_ref.name
                && namespace(&role.metadata) == target_namespace
        })
        .unwrap_or_else(|| panic!("Role {} is not in the manifests", binding.role_ref.name));
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "one rule: {rules:?}");
    let rule = &rules[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["discovery.k8s.io".to_owned()][..])
    );
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["endpointslices".to_owned()][..])
    );
    let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]));
    assert_eq!(rule.verbs.len(), 3, "no verb twice: {:?}", rule.verbs);
    // A list or a watch cannot be limited to named objects: resourceNames would break the source.
    assert!(
        rule.resource_names
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        rule.non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );

    // No other grants in the walkthrough: the binding above is the only one, and the other
    // clients (DNS only) have no token to show the API server at all.
    assert_eq!(walkthrough.role_bindings().count(), 1);
    assert_eq!(walkthrough.roles().count(), 1);
    for other in clients.iter().filter(|other| other.name() != client.name()) {
        let account_name = service_account(other.deployment);
        let account = walkthrough
            .service_accounts()
            .find(|account| name(&account.metadata) == account_name)
            .unwrap_or_else(|| panic!("ServiceAccount {account_name} is not in the manifests"));
        assert_eq!(
            account.automount_service_account_token,
            Some(false),
            "{account_name}"
        );
        assert_eq!(
            pod_spec(other.deployment).automount_service_account_token,
            Some(false),
            "{}",
            other.name()
        );
    }
}

#[test]
fn the_services_select_the_server_pods_and_nothing_else() {
    let walkthrough = Walkthrough::load();
    let server = walkthrough.server();
    let server_container = container(server);
    let server_labels = pod_labels(server);
    let listen_port: i32 = flag(args(server_container), "--listen")
        .and_then(|listen| listen.parse::<std::net::SocketAddr>().ok())
        .expect("the server's --listen address")
        .port()
        .into();

    let mut headless = 0;
    let mut cluster_ip = 0;
    for service in walkthrough.services() {
        let service_name = name(&service.metadata);
        let spec = service.spec.as_ref().expect("a Service spec");
        let selector = spec
            .selector
            .as_ref()
            .expect("a selector: the Services front the pods");
        assert!(!selector.is_empty(), "{service_name}: an empty selector");
        assert!(
            selects(selector, server_labels),
            "{service_name} does not select the server pods {server_labels:?}"
        );
        for (_, deployment) in walkthrough.deployments() {
            if !std::ptr::eq(deployment, server) {
                assert!(
                    !selects(selector, pod_labels(deployment)),
                    "{service_name} also selects {}",
                    name(&deployment.metadata)
                );
            }
        }
        for port in spec.ports.iter().flatten() {
            assert_eq!(
                container_port_of(port, server_container),
                Some(listen_port),
                "{service_name}: port {:?} does not reach the port the server listens on",
                port.name
            );
        }
        if is_headless(service) {
            headless += 1;
        } else {
            assert!(matches!(spec.type_.as_deref(), None | Some("ClusterIP")));
            cluster_ip += 1;
        }
    }
    assert_eq!(
        (headless, cluster_ip),
        (1, 1),
        "a headless and a ClusterIP Service"
    );

    // The named container port the Services use is the one the server listens on.
    let grpc = server_container
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some("grpc"))
        .expect("a container port named grpc");
    assert_eq!(grpc.container_port, listen_port);
}

#[test]
fn the_client_targets_name_a_service_and_port_that_exist() {
    let walkthrough = Walkthrough::load();
    let server_container = container(walkthrough.server());
    let clients = walkthrough.clients();

    let mut forms = BTreeSet::new();
    let mut accounts = BTreeSet::new();
    for client in &clients {
        let client_namespace = namespace(&client.deployment.metadata);
        assert!(
            accounts.insert(service_account(client.deployment)),
            "{}: each client has its own ServiceAccount",
            client.name()
        );
        match &client.target {
            Target::Kubernetes(target) => {
                let target_namespace = target.namespace().unwrap_or(client_namespace);
                let service = walkthrough
                    .service(target_namespace, target.service())
                    .unwrap_or_else(|| {
                        panic!("{}: no Service {}", client.target, target.service())
                    });
                let Some(PortSelector::Name(port_name)) = target.port() else {
                    panic!(
                        "{}: name the Service port (kubernetes:///svc.ns:name)",
                        client.target
                    );
                };
                let ports = service
                    .spec
                    .as_ref()
                    .unwrap()
                    .ports
                    .as_deref()
                    .unwrap_or_default();
                assert!(
                    ports
                        .iter()
                        .any(|port| port.name.as_deref() == Some(port_name.as_str())),
                    "{}: Service {} has no port named {port_name}",
                    client.target,
                    target.service()
                );
                assert!(!client.is_contrast());
                forms.insert("kubernetes");
            }
            Target::Dns(target) => {
                let DnsHost::Name(host) = target.host() else {
                    panic!("{}: a Service name, not an address", client.target);
                };
                let host = host.strip_suffix('.').unwrap_or(host);
                let (service_name, rest) = host.split_once('.').expect("service.namespace.svc...");
                let (target_namespace, domain) = rest.split_once('.').expect("namespace.svc...");
                assert_eq!(
                    domain, CLUSTER_DOMAIN,
                    "{}: the cluster's Service domain",
                    client.target
                );
                let service = walkthrough
                    .service(target_namespace, service_name)
                    .unwrap_or_else(|| panic!("{}: no Service {service_name}", client.target));
                let port = i32::from(target.port().expect("an address lookup with a port"));
                if client.is_contrast() {
                    // The counter-example must be what it claims: the ClusterIP Service, whose
                    // name resolves to one virtual IP serving the Service port.
                    assert!(
                        !is_headless(service),
                        "{}: the contrast names the ClusterIP Service",
                        client.target
                    );
                    let ports = service
                        .spec
                        .as_ref()
                        .unwrap()
                        .ports
                        .as_deref()
                        .unwrap_or_default();
                    assert!(ports.iter().any(|service_port| service_port.port == port));
                    continue;
                }
                // Headless: the name resolves to the pods' own addresses, so the port is the
                // port the pods listen on (which the Service lists and targets).
                assert!(
                    is_headless(service),
                    "{}: dns:/// needs the headless Service",
                    client.target
                );
                let ports = service
                    .spec
                    .as_ref()
                    .unwrap()
                    .ports
                    .as_deref()
                    .unwrap_or_default();
                assert!(
                    ports.iter().any(|service_port| service_port.port == port
                        && container_port_of(service_port, server_container) == Some(port)),
                    "{}: port {port} is not a port of {service_name} that the pods listen on",
                    client.target
                );
                forms.insert("dns");
            }
            Target::Static(_) => panic!("{}: the walkthrough discovers its servers", client.target),
        }
    }
    assert_eq!(forms, BTreeSet::from(["dns", "kubernetes"]));
    assert_eq!(
        clients.iter().filter(|client| client.is_contrast()).count(),
        1
    );
}

#[test]
fn the_server_is_ready_only_when_serving_and_drains_gracefully() {
    let walkthrough = Walkthrough::load();
    let server = walkthrough.server();
    assert_eq!(server.spec.as_ref().unwrap().replicas, Some(3));
    let pod = pod_spec(server);
    let container = container(server);
    let grpc_port = container
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some("grpc"))
        .expect("a grpc port")
        .container_port;

    // Kubernetes' gRPC probe against the standard health service the server runs.
    let readiness = container
        .readiness_probe
        .as_ref()
        .expect("a readiness probe");
    let grpc = readiness.grpc.as_ref().expect("a native grpc probe");
    assert_eq!(grpc.port, grpc_port);
    assert_eq!(grpc.service.as_deref(), Some("greeter.v1.Greeter"));

    // The server answers with its pod name.
    let pod_name = container
        .env
        .iter()
        .flatten()
        .find(|variable| variable.name == "POD_NAME")
        .and_then(|variable| variable.value_from.as_ref()?.field_ref.as_ref())
        .expect("POD_NAME from the downward API");
    assert_eq!(pod_name.field_path, "metadata.name");

    // preStop sleep, then SIGTERM, then the server's own delay, then the drain: all inside the
    // grace period, with room for the calls in flight.
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        .and_then(|handler| handler.sleep.as_ref())
        .expect("a preStop sleep")
        .seconds;
    let drain_delay: i64 = flag(args(container), "--drain-delay-secs")
        .expect("--drain-delay-secs")
        .parse()
        .unwrap();
    let grace = pod
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(pre_stop > 0 && drain_delay > 0);
    assert!(
        grace >= pre_stop + drain_delay + 10,
        "grace {grace} s leaves too little after preStop {pre_stop} s and drain delay {drain_delay} s"
    );
}

#[test]
fn every_pod_runs_the_local_image_as_a_non_root_user() {
    let walkthrough = Walkthrough::load();
    for (file, deployment) in walkthrough.deployments() {
        let deployment_name = name(&deployment.metadata);
        let container = container(deployment);
        assert_eq!(
            container.image.as_deref(),
            Some(IMAGE),
            "{file}: {deployment_name}"
        );
        // Loaded into the nodes by run.sh; a pull would fail with a confusing registry error.
        assert_eq!(
            container.image_pull_policy.as_deref(),
            Some("Never"),
            "{file}: {deployment_name}"
        );
        let security = pod_spec(deployment)
            .security_context
            .as_ref()
            .expect("a pod security context");
        assert_eq!(
            security.run_as_non_root,
            Some(true),
            "{file}: {deployment_name}"
        );
        assert_eq!(
            security.run_as_user,
            Some(NONROOT_UID),
            "{file}: {deployment_name}"
        );
        let container_security = container
            .security_context
            .as_ref()
            .expect("a container security context");
        assert_eq!(container_security.allow_privilege_escalation, Some(false));
        assert_eq!(container_security.read_only_root_filesystem, Some(true));
    }
}

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

#[test]
fn the_dockerfile_builds_the_greeter_example() {
    let instructions = dockerfile_instructions();
    let stages: Vec<&str> = instructions
        .iter()
        .filter_map(|instruction| instruction.strip_prefix("FROM "))
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    assert!(
        stages[0].starts_with("rust:1.95"),
        "built with Rust 1.95: {}",
        stages[0]
    );
    let runtime = stages[stages.len() - 1];
    assert!(
        !runtime.starts_with("rust:"),
        "the runtime stage is not the toolchain image"
    );
    assert!(
        runtime.contains("distroless") || runtime.contains("slim"),
        "a small runtime image: {runtime}"
    );

    let build = instructions
        .iter()
        .find(|instruction| instruction.starts_with("RUN ") && instruction.contains("cargo build"))
        .expect("a cargo build step");
    let words: Vec<&str> = build.split_whitespace().collect();
    assert!(
        words
            .windows(2)
            .any(|pair| pair == ["-p", "waypost-examples"]),
        "{build}"
    );
    assert!(
        words
            .windows(2)
            .any(|pair| pair == ["--example", "greeter"]),
        "{build}"
    );
    assert!(
        words.contains(&"--release") && words.contains(&"--locked"),
        "{build}"
    );
    assert!(
        build.contains("target/release/examples/greeter"),
        "the binary is taken from {build}"
    );

    // The example it builds exists under that name.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"greeter\"\npath = \"examples/greeter.rs\""));

    // Runs as the same non-root user the manifests require.
    let user = instructions
        .iter()
        .rev()
        .find_map(|instruction| instruction.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user, for runAsNonRoot");
    assert_eq!(uid, NONROOT_UID);
    let entrypoint = instructions
        .iter()
        .find_map(|instruction| instruction.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec form");
    assert!(entrypoint[0].ends_with("/greeter"), "{entrypoint:?}");

    // The build context is the workspace: its target directory stays out of it.
    let ignore = read("Dockerfile.dockerignore");
    assert!(
        ignore
            .lines()
            .any(|line| line.trim() == "target/" || line.trim() == "target")
    );
}

#[test]
fn run_sh_is_valid_bash() {
    let script = kind_dir().join("run.sh");
    let output = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "bash -n run.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = read("run.sh");
    assert!(text.starts_with("#!/usr/bin/env bash\n"));
    assert!(text.lines().any(|line| line == "set -euo pipefail"));
    assert!(
        text.contains(&format!("IMAGE=\"{IMAGE}\"")),
        "run.sh builds the image the manifests run"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, "run.sh is executable");
    }
}

/// Stand-ins for kind, docker, kubectl and sleep: each appends its command line to `$FAKE_LOG`
/// and prints what run.sh reads from the real one.
const STAND_INS: &[(&str, &str)] = &[
    (
        "kind",
        r#"echo "kind $*" >> "$FAKE_LOG"
case "$1" in
    version) echo "kind v0.0.0-stand-in" ;;
    get) if [[ -f "$FAKE_STATE/cluster" ]]; then echo waypost; fi ;;
    create) touch "$FAKE_STATE/cluster" ;;
    delete) rm -f "$FAKE_STATE/cluster" ;;
esac"#,
    ),
    (
        "docker",
        r#"echo "docker $*" >> "$FAKE_LOG"
if [[ "$1" == version ]]; then echo 0.0.0; fi"#,
    ),
    (
        "kubectl",
        r#"echo "kubectl $*" >> "$FAKE_LOG"
case " $* " in
    *" version "*) echo "Client Version: v0.0.0" ;;
    *" get deployment greeter "*) exit 1 ;;
    *" auth can-i "*) echo no; exit 1 ;;
    *" logs "*) printf -- '--- 600 calls, 0 errors, 3 endpoints\n  greeter-a 200 33.3%%\n' ;;
esac
exit 0"#,
    ),
    ("sleep", r#"echo "sleep $*" >> "$FAKE_LOG""#),
];

#[cfg(unix)]
#[test]
fn run_sh_drives_kind_docker_and_kubectl_in_order() {
    use std::os::unix::fs::PermissionsExt;

    let scratch = std::env::temp_dir().join(format!("waypost-kind-run-sh-{}", std::process::id()));
    let bin = scratch.join("bin");
    let state = scratch.join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    for (tool, body) in STAND_INS {
        let path = bin.join(tool);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = scratch.join("log");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg(kind_dir().join("run.sh"))
        .arg("--cleanup")
        .env("PATH", path)
        .env("FAKE_LOG", &log)
        .env("FAKE_STATE", &state)
        .env_remove("CLUSTER")
        .env_remove("KIND_NODE_IMAGE")
        .env_remove("DNS_SETTLE_SECS")
        .output()
        .expect("bash runs");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_dir_all(&scratch).unwrap();
    assert!(
        output.status.success(),
        "run.sh failed:\n{}\n{}\ncalls:\n{calls}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let kind_dir = kind_dir();
    let root = kind_dir.parent().unwrap().parent().unwrap();
    let kubectl = "kubectl --context kind-waypost";
    let in_namespace = format!("{kubectl} --namespace {NAMESPACE}");
    let expected = [
        "docker info".to_owned(),
        format!(
            "kind create cluster --name waypost --config {}",
            kind_dir.join("kind-config.yaml").display()
        ),
        format!(
            "docker build -f {} -t {IMAGE} {}",
            kind_dir.join("Dockerfile").display(),
            root.display()
        ),
        format!("kind load docker-image {IMAGE} --name waypost"),
        format!("{in_namespace} rollout status deployment/greeter"),
        format!(
            "{kubectl} apply -f {}",
            kind_dir.join("manifests/").display()
        ),
        format!("{in_namespace} rollout status deployment/greeter-client-kubernetes"),
        format!("{in_namespace} rollout status deployment/greeter-client-dns"),
        format!("{in_namespace} logs deployment/greeter-client-kubernetes"),
        format!("{in_namespace} logs deployment/greeter-client-dns"),
        format!("{in_namespace} scale deployment/greeter --replicas=5"),
        format!("{in_namespace} logs deployment/greeter-client-dns"),
        format!("{in_namespace} scale deployment/greeter --replicas=2"),
        format!("{in_namespace} logs deployment/greeter-client-dns"),
        format!(
            "{kubectl} apply -f {}",
            kind_dir.join("contrast/").display()
        ),
        format!("{in_namespace} logs deployment/greeter-client-dns-clusterip"),
        format!(
            "{kubectl} delete -f {}",
            kind_dir.join("contrast/").display()
        ),
        "kind delete cluster --name waypost".to_owned(),
    ];
    let lines: Vec<&str> = calls.lines().collect();
    let mut next = 0;
    for step in &expected {
        match lines[next..]
            .iter()
            .position(|line| line.starts_with(step.as_str()))
        {
            Some(offset) => next += offset + 1,
            None => panic!("run.sh did not run `{step}` where expected; it ran:\n{calls}"),
        }
    }
    // Every kubectl call names the kind cluster's context, never the user's current one.
    for line in lines.iter().filter(|line| line.starts_with("kubectl ")) {
        assert!(
            line.starts_with(kubectl) || line.starts_with("kubectl version"),
            "{line}"
        );
    }
    // The report shown is the clients' distribution table.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("--- 600 calls, 0 errors, 3 endpoints"),
        "{stdout}"
    );
}
