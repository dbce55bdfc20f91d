//! The xDS bootstrap: which control plane to ask and who is asking, in gRPC's bootstrap format
//! (gRFC A27), the one Istio's agent writes for proxyless gRPC.
//!
//! ```json
//! {
//!   "xds_servers": [{
//!     "server_uri": "unix:///etc/istio/proxy/XDS",
//!     "channel_creds": [{"type": "insecure"}],
//!     "server_features": ["xds_v3"]
//!   }],
//!   "node": {
//!     "id": "sidecar~10.0.0.7~api-6d4cf56db6-2xkzn.payments~payments.svc.cluster.local",
//!     "cluster": "api",
//!     "locality": {"region": "eu-west1", "zone": "eu-west1-b"},
//!     "metadata": {"GENERATOR": "grpc"}
//!   }
//! }
//! ```
//!
//! Read: the first of `xds_servers` (its `server_uri`, the first `channel_creds` entry of a
//! supported type, and the `ignore_resource_deletion` server feature) and `node` (`id`,
//! `cluster`, `locality`, `metadata`). Ignored: further servers (fallback), `authorities`,
//! `certificate_providers`, `server_listener_resource_name_template`.

use std::fmt;
use std::path::Path;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf as pb;
use serde_json::{Map, Value};

/// The environment variable naming a bootstrap file, as in gRPC.
pub const BOOTSTRAP_FILE_VAR: &str = "GRPC_XDS_BOOTSTRAP";
/// The environment variable holding the bootstrap itself, as in gRPC; the file wins when both
/// are set.
pub const BOOTSTRAP_CONFIG_VAR: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// Which control plane to ask and who is asking. Sources with equal bootstraps share one ADS
/// stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bootstrap {
    server: XdsServer,
    node: Node,
}

/// A control plane's address and what the client knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XdsServer {
    uri: String,
    ignore_resource_deletion: bool,
}

impl XdsServer {
    /// `server_uri`: `host:port`, `dns:///host:port`, `http://host:port` or
    /// `unix:///path/to/socket` (Istio's agent).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The `ignore_resource_deletion` server feature (gRFC A53): a listener or cluster missing
    /// from a response is kept instead of being treated as deleted.
    pub fn ignores_resource_deletion(&self) -> bool {
        self.ignore_resource_deletion
    }
}

/// The client's identity, sent to the control plane in the first request of each stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Node {
    id: String,
    cluster: String,
    locality: Option<(String, String, String)>,
    /// Serialised JSON, so that the bootstrap can be compared and hashed.
    metadata: Option<String>,
}

/// Why a bootstrap could not be used: where it came from, the field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapError {
    origin: String,
    field: Option<String>,
    problem: String,
}

impl BootstrapError {
    fn new(origin: &str, field: Option<&str>, problem: impl Into<String>) -> Self {
        BootstrapError {
            origin: origin.to_owned(),
            field: field.map(str::to_owned),
            problem: problem.into(),
        }
    }

    /// Where the bootstrap came from: a file's path, an environment variable, or `"code"`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The field that is wrong (`xds_servers[0].server_uri`), when one is.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "xDS bootstrap from {}", self.origin)?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for BootstrapError {}

impl Bootstrap {
    /// A bootstrap given in code: the control plane at `server_uri` (see [`XdsServer::uri`]),
    /// without credentials, and the node `node_id`.
    pub fn new(
        server_uri: impl Into<String>,
        node_id: impl Into<String>,
    ) -> Result<Self, BootstrapError> {
        let uri = server_uri.into();
        check_uri(&uri)
            .map_err(|problem| BootstrapError::new("code", Some("server_uri"), problem))?;
        Ok(Bootstrap {
            server: XdsServer {
                uri,
                ignore_resource_deletion: false,
            },
            node: Node {
                id: node_id.into(),
                cluster: String::new(),
                locality: None,
                metadata: None,
            },
        })
    }

    /// The bootstrap gRPC would use: the file named by `GRPC_XDS_BOOTSTRAP`, else the JSON in
    /// `GRPC_XDS_BOOTSTRAP_CONFIG`.
    pub fn from_env() -> Result<Self, BootstrapError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BootstrapError> {
        if let Some(path) = lookup(BOOTSTRAP_FILE_VAR).filter(|path| !path.is_empty()) {
            return Self::from_file(path);
        }
        match lookup(BOOTSTRAP_CONFIG_VAR).filter(|config| !config.is_empty()) {
            Some(config) => Self::parse(&config, BOOTSTRAP_CONFIG_VAR),
            None => Err(BootstrapError::new(
                "the environment",
                None,
                format!("neither {BOOTSTRAP_FILE_VAR} nor {BOOTSTRAP_CONFIG_VAR} is set"),
            )),
        }
    }

    /// The bootstrap in the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BootstrapError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| {
            BootstrapError::new(&origin, None, format!("cannot be read: {error}"))
        })?;
        Self::parse(&text, &origin)
    }

    /// The bootstrap in `json`.
    pub fn from_json(json: &str) -> Result<Self, BootstrapError> {
        Self::parse(json, "JSON given in code")
    }

    fn parse(text: &str, origin: &str) -> Result<Self, BootstrapError> {
        let error =
            |field: &str, problem: String| BootstrapError::new(origin, Some(field), problem);
        let root: Value = serde_json::from_str(text)
            .map_err(|e| BootstrapError::new(origin, None, format!("is not JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| BootstrapError::new(origin, None, "is not a JSON object"))?;
        let servers = root
            .get("xds_servers")
            .and_then(Value::as_array)
            .filter(|servers| !servers.is_empty())
            .ok_or_else(|| error("xds_servers", "must be a non-empty list".into()))?;
        let server = servers[0]
            .as_object()
            .ok_or_else(|| error("xds_servers[0]", "must be an object".into()))?;
        let uri = server
            .get("server_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| error("xds_servers[0].server_uri", "must be a string".into()))?;
        check_uri(uri).map_err(|problem| error("xds_servers[0].server_uri", problem))?;
        let creds = server
            .get("channel_creds")
            .and_then(Value::as_array)
            .ok_or_else(|| error("xds_servers[0].channel_creds", "must be a list".into()))?;
        let types: Vec<&str> = creds
            .iter()
            .map(|cred| cred.get("type").and_then(Value::as_str).unwrap_or(""))
            .collect();
        if !types.contains(&"insecure") {
            return Err(error(
                "xds_servers[0].channel_creds",
                format!(
                    "no supported type among {types:?}: waypost supports `insecure` (plaintext, or \
                     a local socket such as Istio's agent)"
                ),
            ));
        }
        let features = match server.get("server_features") {
            None => Vec::new(),
            Some(Value::Array(features)) => features.iter().filter_map(Value::as_str).collect(),
            Some(_) => {
                return Err(error(
                    "xds_servers[0].server_features",
                    "must be a list".into(),
                ));
            }
        };
        let node = match root.get("node") {
            None => Map::new(),
            Some(Value::Object(node)) => node.clone(),
            Some(_) => return Err(error("node", "must be an object".into())),
        };
        let string = |field: &str| -> Result<String, BootstrapError> {
            match node.get(field) {
                None => Ok(String::new()),
                Some(Value::String(value)) => Ok(value.clone()),
                Some(_) => Err(error(&format!("node.{field}"), "must be a string".into())),
            }
        };
        let locality = match node.get("locality") {
            None => None,
            Some(Value::Object(locality)) => {
                let part = |name: &str| -> Result<String, BootstrapError> {
                    match locality.get(name) {
                        None => Ok(String::new()),
                        Some(Value::String(value)) => Ok(value.clone()),
                        Some(_) => Err(error(
                            &format!("node.locality.{name}"),
                            "must be a string".into(),
                        )),
                    }
                };
                Some((part("region")?, part("zone")?, part("sub_zone")?))
            }
            Some(_) => return Err(error("node.locality", "must be an object".into())),
        };
        let metadata = match node.get("metadata") {
            None => None,
            Some(metadata @ Value::Object(_)) => Some(metadata.to_string()),
            Some(_) => return Err(error("node.metadata", "must be an object".into())),
        };
        Ok(Bootstrap {
            server: XdsServer {
                uri: uri.to_owned(),
                ignore_resource_deletion: features.contains(&"ignore_resource_deletion"),
            },
            node: Node {
                id: string("id")?,
                cluster: string("cluster")?,
                locality,
                metadata,
            },
        })
    }

    /// The control plane.
    pub fn server(&self) -> &XdsServer {
        &self.server
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// The node's zone (`node.locality.zone`), when the bootstrap names one: the zone waypost's
    /// zone preference can use as the client's own.
    pub fn zone(&self) -> Option<&str> {
        self.node
            .locality
            .as_ref()
            .map(|(_, zone, _)| zone.as_str())
            .filter(|zone| !zone.is_empty())
    }

    /// The node as sent to the control plane.
    pub(crate) fn node_proto(&self) -> core::Node {
        let node = &self.node;
        core::Node {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            locality: node
                .locality
                .as_ref()
                .map(|(region, zone, sub_zone)| core::Locality {
                    region: region.clone(),
                    zone: zone.clone(),
                    sub_zone: sub_zone.clone(),
                }),
            metadata: node
                .metadata
                .as_deref()
                .and_then(|json| serde_json::from_str::<Value>(json).ok())
                .and_then(|value| match to_proto_value(value).kind {
                    Some(pb::value::Kind::StructValue(metadata)) => Some(metadata),
                    _ => None,
                }),
            user_agent_name: "waypost".into(),
            user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            )),
            client_features: vec![
                "envoy.lb.does_not_support_overprovisioning".into(),
                "xds.config.resource-in-sotw".into(),
            ],
            ..Default::default()
        }
    }
}

fn check_uri(uri: &str) -> Result<(), String> {
    if uri.trim().is_empty() {
        return Err("is empty".into());
    }
    if let Some(path) = uri.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(format!("`{uri}` names no socket path"));
        }
        return Ok(());
    }
    let rest = uri
        .strip_prefix("dns:///")
        .or_else(|| uri.strip_prefix("http://"))
        .unwrap_or(uri);
    if rest.starts_with("https://") || uri.starts_with("https://") {
        return Err(format!(
            "`{uri}`: TLS to the control plane is not supported; use `insecure` over a local socket or a mesh-secured port"
        ));
    }
    let authority: Result<http::uri::Authority, _> = rest.trim_end_matches('/').parse();
    match authority {
        Ok(authority) if authority.port_u16().is_some() => Ok(()),
        Ok(_) => Err(format!("`{uri}` has no port")),
        Err(_) => Err(format!(
            "`{uri}` is not host:port, dns:///host:port or unix:///path"
        )),
    }
}

fn to_proto_value(value: Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(pb::ListValue {
            values: items.into_iter().map(to_proto_value).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(pb::Struct {
            fields: fields
                .into_iter()
                .map(|(key, value)| (key, to_proto_value(value)))
                .collect(),
        }),
    };
    pb::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO: &str = r#"{
        "xds_servers": [{
            "server_uri": "unix:///etc/istio/proxy/XDS",
            "channel_creds": [{"type": "google_default"}, {"type": "insecure"}],
            "server_features": ["xds_v3", "ignore_resource_deletion"]
        }],
        "node": {
            "id": "sidecar~10.0.0.7~api-1.payments~payments.svc.cluster.local",
            "cluster": "api",
            "locality": {"region": "eu", "zone": "eu-b"},
            "metadata": {"GENERATOR": "grpc", "INSTANCE_IPS": ["10.0.0.7"]}
        },
        "certificate_providers": {}
    }"#;

    #[test]
    fn an_istio_bootstrap_is_read() {
        let bootstrap = Bootstrap::from_json(ISTIO).unwrap();
        assert_eq!(bootstrap.server().uri(), "unix:///etc/istio/proxy/XDS");
        assert!(bootstrap.server().ignores_resource_deletion());
        assert_eq!(bootstrap.zone(), Some("eu-b"));
        let node = bootstrap.node_proto();
        assert_eq!(
            node.id,
            "sidecar~10.0.0.7~api-1.payments~payments.svc.cluster.local"
        );
        assert_eq!(node.cluster, "api");
        assert_eq!(node.locality.unwrap().region, "eu");
        let metadata = node.metadata.unwrap();
        assert_eq!(
            metadata.fields["GENERATOR"].kind,
            Some(pb::value::Kind::StringValue("grpc".into()))
        );
        assert_eq!(node.user_agent_name, "waypost");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[]", None, "is not a JSON object"),
            ("{}", Some("xds_servers"), "non-empty list"),
            (
                r#"{"xds_servers": [{}]}"#,
                Some("xds_servers[0].server_uri"),
                "must be a string",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "istiod", "channel_creds": [{"type": "insecure"}]}]}"#,
                Some("xds_servers[0].server_uri"),
                "no port",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "istiod:15010"}]}"#,
                Some("xds_servers[0].channel_creds"),
                "must be a list",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "istiod:15010", "channel_creds": [{"type": "tls"}]}]}"#,
                Some("xds_servers[0].channel_creds"),
                "no supported type",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "istiod:15010", "channel_creds": [{"type": "insecure"}]}], "node": {"id": 7}}"#,
                Some("node.id"),
                "must be a string",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "istiod:15010", "channel_creds": [{"type": "insecure"}]}], "node": {"locality": {"zone": 1}}}"#,
                Some("node.locality.zone"),
                "must be a string",
            ),
            ("{", None, "is not JSON"),
        ];
        for (json, field, problem) in cases {
            let error = Bootstrap::from_json(json).unwrap_err();
            assert_eq!(error.field(), field, "{json}: {error}");
            assert!(error.to_string().contains(problem), "{json}: {error}");
        }
    }

    #[test]
    fn the_file_variable_wins_over_the_inline_one() {
        let dir = std::env::temp_dir().join(format!("waypost-bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bootstrap.json");
        std::fs::write(&file, ISTIO).unwrap();
        let inline = r#"{"xds_servers": [{"server_uri": "127.0.0.1:15010", "channel_creds": [{"type": "insecure"}]}]}"#;
        let both = |name: &str| match name {
            BOOTSTRAP_FILE_VAR => Some(file.display().to_string()),
            BOOTSTRAP_CONFIG_VAR => Some(inline.to_owned()),
            _ => None,
        };
        assert_eq!(
            Bootstrap::from_lookup(both).unwrap().server().uri(),
            "unix:///etc/istio/proxy/XDS"
        );
        let only_inline = |name: &str| (name == BOOTSTRAP_CONFIG_VAR).then(|| inline.to_owned());
        let bootstrap = Bootstrap::from_lookup(only_inline).unwrap();
        assert_eq!(bootstrap.server().uri(), "127.0.0.1:15010");
        assert_eq!(bootstrap.node_id(), "");
        let missing = Bootstrap::from_lookup(|name| {
            (name == BOOTSTRAP_FILE_VAR).then(|| dir.join("nope").display().to_string())
        })
        .unwrap_err();
        assert!(
            missing.origin().ends_with("nope") && missing.to_string().contains("cannot be read"),
            "{missing}"
        );
        assert!(
            Bootstrap::from_lookup(|_| None)
                .unwrap_err()
                .to_string()
                .contains("GRPC_XDS_BOOTSTRAP")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_uris_in_code_are_checked() {
        for good in [
            "127.0.0.1:15010",
            "dns:///istiod.istio-system.svc:15010",
            "http://[::1]:8080",
            "unix:///tmp/xds.sock",
        ] {
            Bootstrap::new(good, "node").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "istiod", "https://istiod:15012", "unix://", "a b:1"] {
            let error = Bootstrap::new(bad, "node").unwrap_err();
            assert_eq!(error.field(), Some("server_uri"), "{bad}");
        }
    }
}
