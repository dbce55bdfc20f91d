//! Builders for EndpointSlices as JSON, so tests can write exactly what the API carries,
//! including what k8s-openapi's types cannot express (`"endpoints": null`, a missing label,
//! an unknown address type).
//!
//! ```
//! use waypost_tests::kube_api::slices::{endpoint_slice, ep};
//!
//! let slice = endpoint_slice("api-abc12", "api")
//!     .port("http", 8080)
//!     .endpoint(ep("10.0.0.1").zone("a"))
//!     .endpoint(ep("10.0.0.2").draining());
//! assert_eq!(slice.json()["endpoints"][1]["conditions"]["terminating"], true);
//! ```

use serde::Serialize;
use serde_json::{Map, Value, json};

/// A slice of Service `service`, named `name`, in namespace `default`, IPv4, without ports or
/// endpoints yet.
pub fn endpoint_slice(name: &str, service: &str) -> SliceBuilder {
    SliceBuilder {
        value: json!({
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [],
            "endpoints": [],
        }),
    }
}

/// An endpoint at `ip` without conditions (which the API reads as ready).
pub fn ep(ip: &str) -> EndpointBuilder {
    EndpointBuilder {
        value: json!({ "addresses": [ip] }),
    }
}

/// An EndpointSlice under construction; serializes to its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceBuilder {
    value: Value,
}

impl SliceBuilder {
    /// Puts the slice in `namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.value["metadata"]["namespace"] = Value::from(namespace);
        self
    }

    /// Sets `addressType` (`IPv4`, `IPv6`, `FQDN`, or anything else).
    pub fn address_type(mut self, address_type: &str) -> Self {
        self.value["addressType"] = Value::from(address_type);
        self
    }

    /// Adds a TCP port.
    pub fn port(self, name: &str, number: u16) -> Self {
        self.raw_port(json!({ "name": name, "port": number, "protocol": "TCP" }))
    }

    /// Adds a port as given.
    pub fn raw_port(mut self, port: Value) -> Self {
        if let Some(ports) = self.value["ports"].as_array_mut() {
            ports.push(port);
        } else {
            self.value["ports"] = Value::from(vec![port]);
        }
        self
    }

    /// Sets `ports` to `null`.
    pub fn without_ports(mut self) -> Self {
        self.value["ports"] = Value::Null;
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: EndpointBuilder) -> Self {
        if let Some(endpoints) = self.value["endpoints"].as_array_mut() {
            endpoints.push(endpoint.value);
        } else {
            self.value["endpoints"] = Value::from(vec![endpoint.value]);
        }
        self
    }

    /// Adds endpoints.
    pub fn endpoints(self, endpoints: impl IntoIterator<Item = EndpointBuilder>) -> Self {
        endpoints.into_iter().fold(self, Self::endpoint)
    }

    /// Sets `endpoints` to `null`, as the API server writes a slice of a Service scaled to zero.
    pub fn null_endpoints(mut self) -> Self {
        self.value["endpoints"] = Value::Null;
        self
    }

    /// Sets `ports` to `null`, as the API server writes an empty list.
    pub fn null_ports(mut self) -> Self {
        self.value["ports"] = Value::Null;
        self
    }

    /// Sets a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.value["metadata"]["labels"][key] = Value::from(value);
        self
    }

    /// Removes a label.
    pub fn without_label(mut self, key: &str) -> Self {
        if let Some(labels) = self.value["metadata"]["labels"].as_object_mut() {
            labels.remove(key);
        }
        self
    }

    /// The slice as JSON.
    pub fn json(&self) -> &Value {
        &self.value
    }
}

impl Serialize for SliceBuilder {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

/// An endpoint of a slice under construction.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointBuilder {
    value: Value,
}

impl EndpointBuilder {
    fn condition(mut self, name: &str, value: bool) -> Self {
        if !self.value["conditions"].is_object() {
            self.value["conditions"] = Value::Object(Map::new());
        }
        self.value["conditions"][name] = Value::from(value);
        self
    }

    /// `ready: true, serving: true, terminating: false`, as the controller writes a ready pod.
    pub fn ready(self) -> Self {
        self.condition("ready", true)
            .condition("serving", true)
            .condition("terminating", false)
    }

    /// `ready: false, serving: false, terminating: false`: a pod that is not ready (yet).
    pub fn unready(self) -> Self {
        self.condition("ready", false)
            .condition("serving", false)
            .condition("terminating", false)
    }

    /// `ready: false, serving: true, terminating: true`: a pod shutting down that still serves.
    pub fn draining(self) -> Self {
        self.condition("ready", false)
            .condition("serving", true)
            .condition("terminating", true)
    }

    /// `ready: false, serving: false, terminating: true`: a pod shutting down that no longer
    /// serves.
    pub fn gone(self) -> Self {
        self.condition("ready", false)
            .condition("serving", false)
            .condition("terminating", true)
    }

    /// Sets one condition (`ready`, `serving`, `terminating`) as given.
    pub fn with_condition(self, name: &str, value: bool) -> Self {
        self.condition(name, value)
    }

    /// Sets the zone.
    pub fn zone(mut self, zone: &str) -> Self {
        self.value["zone"] = Value::from(zone);
        self
    }

    /// Sets the node.
    pub fn node(mut self, node: &str) -> Self {
        self.value["nodeName"] = Value::from(node);
        self
    }

    /// Sets the hostname.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.value["hostname"] = Value::from(hostname);
        self
    }

    /// Sets `hints.forZones`.
    pub fn hints<'a>(mut self, zones: impl IntoIterator<Item = &'a str>) -> Self {
        let zones: Vec<Value> = zones
            .into_iter()
            .map(|name| json!({ "name": name }))
            .collect();
        self.value["hints"] = json!({ "forZones": zones });
        self
    }

    /// Adds a further address (only the first one is the endpoint).
    pub fn extra_address(mut self, address: &str) -> Self {
        if let Some(addresses) = self.value["addresses"].as_array_mut() {
            addresses.push(Value::from(address));
        }
        self
    }

    /// Empties `addresses`, which the API forbids and a broken writer may still send.
    pub fn without_addresses(mut self) -> Self {
        self.value["addresses"] = json!([]);
        self
    }
}
