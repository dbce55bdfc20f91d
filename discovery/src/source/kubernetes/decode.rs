//! Decoding watched EndpointSlices: only the fields the source reads.
//!
//! Every watch event and every listed page is decoded as JSON. k8s-openapi's `EndpointSlice`
//! decodes everything an API server sends: each endpoint's `targetRef` (four strings for a Pod)
//! and `deprecatedTopology`, the slice's `managedFields`, annotations and owner references. The
//! source reads none of them, and decoding them was most of its CPU per change (and most of the
//! memory a listed page holds while it is converted). [`WatchedSlice`] is the same
//! `EndpointSlice` with only what [`convert_slice`](super::convert_slice), the slice cache and
//! kube's watcher read:
//!
//! - metadata: `name`, `namespace`, `labels`, `resourceVersion`, `uid`, `generation`;
//! - `addressType`, `ports` (whole);
//! - per endpoint: `addresses`, `conditions`, `hints`, `hostname`, `nodeName`, `zone`.
//!
//! Everything else is skipped without being allocated. The rules are k8s-openapi's: a missing or
//! `null` field is its default, an `apiVersion` or `kind` that is present must name
//! `discovery.k8s.io/v1` `EndpointSlice`, and a field the source reads with the wrong type makes
//! the object undecodable. A malformed field the source does not read is skipped.
//!
//! An undecodable object makes kube fail the whole list it came in, so the Service (or every
//! Service of a shared watch) would get no endpoints at all; in a watch, kube drops the event,
//! so a good slice modified into a bad one kept its endpoints. When a list or a watch event
//! fails to decode, the watch task lists and watches again with [`TolerantSlice`]: each
//! object's text is taken first and decoded on its own, and one that cannot be becomes an
//! unusable slice, named by whatever of its metadata could be read
//! ([`UnusableReason::Undecodable`](super::UnusableReason::Undecodable)). That costs a second
//! pass over each object's text, so it is only used after a failure.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::value::RawValue;

/// An `EndpointSlice` decoded with only the fields the source reads (see the module docs).
///
/// `undecodable` is set only by [`TolerantSlice`]: an object that is not an EndpointSlice's
/// shape keeps what its metadata says (so it can be keyed, and replaced by a later update) and
/// the decoder's message; the source treats it as an unusable slice.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct WatchedSlice {
    pub(super) slice: EndpointSlice,
    /// Why the object could not be read as an EndpointSlice.
    pub(super) undecodable: Option<String>,
}

/// A [`WatchedSlice`] decoded from its own text: never fails on the object itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct TolerantSlice(pub(super) WatchedSlice);

impl kube::Resource for WatchedSlice {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        <EndpointSlice as k8s_openapi::Resource>::KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        <EndpointSlice as k8s_openapi::Resource>::GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        <EndpointSlice as k8s_openapi::Resource>::VERSION.into()
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        <EndpointSlice as k8s_openapi::Resource>::API_VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        <EndpointSlice as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.slice.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.slice.metadata
    }
}

impl kube::Resource for TolerantSlice {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        WatchedSlice::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        WatchedSlice::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        WatchedSlice::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        WatchedSlice::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        WatchedSlice::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.0.slice.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.slice.metadata
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSlice {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<RawMeta>,
    address_type: Option<String>,
    endpoints: Option<Vec<RawEndpoint>>,
    ports: Option<Vec<EndpointPort>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    resource_version: Option<String>,
    uid: Option<String>,
    generation: Option<i64>,
}

impl From<RawMeta> for ObjectMeta {
    fn from(meta: RawMeta) -> Self {
        ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            labels: meta.labels,
            resource_version: meta.resource_version,
            uid: meta.uid,
            generation: meta.generation,
            ..ObjectMeta::default()
        }
    }
}

/// What can still be read of an object that is not an EndpointSlice's shape.
#[derive(serde::Deserialize)]
struct MetaOnly {
    metadata: Option<RawMeta>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    addresses: Option<Vec<String>>,
    conditions: Option<EndpointConditions>,
    hints: Option<EndpointHints>,
    hostname: Option<String>,
    node_name: Option<String>,
    zone: Option<String>,
}

impl<'de> Deserialize<'de> for WatchedSlice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawSlice::deserialize(deserializer)?;
        Ok(WatchedSlice {
            slice: from_raw(raw).map_err(D::Error::custom)?,
            undecodable: None,
        })
    }
}

impl<'de> Deserialize<'de> for TolerantSlice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The object's text first (checked to be JSON, not parsed into values, borrowed from
        // the response: kube decodes lists and watch events from text), then the object from
        // it: a wrong field fails this object alone.
        let text = <&RawValue>::deserialize(deserializer)?;
        Ok(TolerantSlice(match read(text.get()) {
            Ok(slice) => WatchedSlice {
                slice,
                undecodable: None,
            },
            Err(error) => {
                let metadata = serde_json::from_str::<MetaOnly>(text.get())
                    .ok()
                    .and_then(|meta| meta.metadata)
                    .map(ObjectMeta::from)
                    .unwrap_or_default();
                WatchedSlice {
                    slice: EndpointSlice {
                        metadata,
                        ..EndpointSlice::default()
                    },
                    undecodable: Some(error),
                }
            }
        }))
    }
}

/// The slice in `text`, or what is wrong with it.
fn read(text: &str) -> Result<EndpointSlice, String> {
    from_raw(serde_json::from_str(text).map_err(|error| error.to_string())?)
}

/// The k8s-openapi slice of what was decoded, or what is wrong with it.
fn from_raw(raw: RawSlice) -> Result<EndpointSlice, String> {
    let expected = <EndpointSlice as k8s_openapi::Resource>::API_VERSION;
    if let Some(api_version) = raw.api_version.as_deref()
        && api_version != expected
    {
        return Err(format!("apiVersion `{api_version}`, expected `{expected}`"));
    }
    let expected = <EndpointSlice as k8s_openapi::Resource>::KIND;
    if let Some(kind) = raw.kind.as_deref()
        && kind != expected
    {
        return Err(format!("kind `{kind}`, expected `{expected}`"));
    }
    let metadata = raw.metadata.map(ObjectMeta::from).unwrap_or_default();
    let endpoints = raw.endpoints.map(|endpoints| {
        endpoints
            .into_iter()
            .map(|endpoint| Endpoint {
                addresses: endpoint.addresses.unwrap_or_default(),
                conditions: endpoint.conditions,
                hints: endpoint.hints,
                hostname: endpoint.hostname,
                node_name: endpoint.node_name,
                zone: endpoint.zone,
                ..Endpoint::default()
            })
            .collect()
    });
    Ok(EndpointSlice {
        address_type: raw.address_type.unwrap_or_default(),
        endpoints: DecodedEndpoints::decoded(endpoints),
        metadata,
        ports: raw.ports,
    })
}

/// `EndpointSlice.endpoints` is a `Vec` in k8s-openapi's `v1_33`..`v1_35` features and an
/// `Option<Vec>` from `v1_36` (see `convert`): each shape takes the decoded list as
/// k8s-openapi's own decoder does (missing or `null` is empty, or `None`).
trait DecodedEndpoints {
    fn decoded(endpoints: Option<Vec<Endpoint>>) -> Self;
}

impl DecodedEndpoints for Vec<Endpoint> {
    fn decoded(endpoints: Option<Vec<Endpoint>>) -> Self {
        endpoints.unwrap_or_default()
    }
}

impl DecodedEndpoints for Option<Vec<Endpoint>> {
    fn decoded(endpoints: Option<Vec<Endpoint>>) -> Self {
        endpoints
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::PortSelector;
    use crate::source::kubernetes::convert_slice;

    /// Decodes as kube does: from the response's text.
    fn from_json<T: serde::de::DeserializeOwned>(
        value: &serde_json::Value,
    ) -> serde_json::Result<T> {
        serde_json::from_str(&value.to_string())
    }

    fn full_slice() -> serde_json::Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "api-x1",
                "namespace": "shop",
                "uid": "0f9c6b1e-0000-4000-8000-000000000001",
                "resourceVersion": "4711",
                "generation": 3,
                "generateName": "api-",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {
                    "kubernetes.io/service-name": "api",
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
                },
                "annotations": { "endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z" },
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Service", "name": "api",
                    "uid": "0f9c6b1e-0000-4000-8000-000000000002",
                    "controller": true, "blockOwnerDeletion": true
                }],
                "managedFields": [{
                    "manager": "kube-controller-manager", "operation": "Update",
                    "apiVersion": "discovery.k8s.io/v1", "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": { "f:addressType": {}, "f:endpoints": {}, "f:ports": {} }
                }]
            },
            "addressType": "IPv4",
            "ports": [{ "name": "grpc", "port": 8080, "protocol": "TCP", "appProtocol": "grpc" }],
            "endpoints": [
                {
                    "addresses": ["10.0.0.1"],
                    "conditions": { "ready": true, "serving": true, "terminating": false },
                    "hostname": "api-0",
                    "nodeName": "node-1",
                    "zone": "a",
                    "hints": { "forZones": [{ "name": "a" }], "forNodes": [{ "name": "node-1" }] },
                    "targetRef": { "kind": "Pod", "namespace": "shop", "name": "api-0", "uid": "u0" },
                    "deprecatedTopology": { "kubernetes.io/hostname": "node-1" }
                },
                {
                    "addresses": ["10.0.0.2"],
                    "conditions": { "ready": false, "serving": true, "terminating": true },
                    "zone": "b",
                    "targetRef": { "kind": "Pod", "namespace": "shop", "name": "api-1", "uid": "u1" }
                },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": null } },
                { "addresses": null }
            ]
        })
    }

    /// k8s-openapi's slice with the fields the source does not read cleared.
    fn read_fields(mut slice: EndpointSlice) -> EndpointSlice {
        let meta = slice.metadata;
        slice.metadata = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            labels: meta.labels,
            resource_version: meta.resource_version,
            uid: meta.uid,
            generation: meta.generation,
            ..ObjectMeta::default()
        };
        for endpoint in &mut slice.endpoints {
            endpoint.target_ref = None;
            endpoint.deprecated_topology = None;
        }
        slice
    }

    #[test]
    fn keeps_every_field_the_source_reads_as_k8s_openapi_decodes_it() {
        let value = full_slice();
        let full: EndpointSlice = serde_json::from_value(value.clone()).unwrap();
        let watched: WatchedSlice = from_json(&value).unwrap();
        assert_eq!(watched.undecodable, None);
        assert_eq!(watched.slice, read_fields(full.clone()));
        // And the contribution is the same as from the whole object.
        for port in [None, Some(PortSelector::Name("grpc".into()))] {
            assert_eq!(
                convert_slice(&watched.slice, "api", port.as_ref()),
                convert_slice(&full, "api", port.as_ref())
            );
        }
    }

    #[test]
    fn missing_and_null_fields_are_defaults_as_in_k8s_openapi() {
        for value in [
            json!({}),
            json!({ "metadata": null, "addressType": null, "endpoints": null, "ports": null }),
            json!({ "metadata": { "name": "s", "labels": null }, "endpoints": [{}] }),
        ] {
            let full: EndpointSlice = serde_json::from_value(value.clone()).unwrap();
            let watched: WatchedSlice = from_json(&value).unwrap();
            assert_eq!(watched.slice, read_fields(full));
        }
    }

    #[test]
    fn a_wrong_kind_or_a_wrongly_typed_read_field_is_undecodable_and_keeps_its_metadata() {
        let meta = json!({ "name": "api-x", "labels": { "kubernetes.io/service-name": "api" } });
        for value in [
            json!({ "metadata": meta, "apiVersion": "v1", "kind": "EndpointSlice" }),
            json!({ "metadata": meta, "kind": "Endpoints" }),
            json!({ "metadata": meta, "addressType": 4 }),
            json!({ "metadata": meta, "endpoints": [{ "addresses": "10.0.0.1" }] }),
            json!({ "metadata": meta, "endpoints": [{ "conditions": { "ready": "yes" } }] }),
            json!({ "metadata": meta, "ports": [{ "port": "http" }] }),
        ] {
            // k8s-openapi fails the object, and with it the whole list it came in; so does the
            // fast decoder.
            assert!(serde_json::from_value::<EndpointSlice>(value.clone()).is_err());
            assert!(from_json::<WatchedSlice>(&value).is_err(), "{value}");
            let TolerantSlice(watched) = from_json(&value).unwrap();
            assert!(watched.undecodable.is_some(), "{value} decoded");
            assert_eq!(watched.slice.metadata.name.as_deref(), Some("api-x"));
            assert!(watched.slice.endpoints.is_empty());
        }
        // Nothing readable at all: no metadata either.
        for value in [json!([]), json!({ "metadata": { "labels": ["a"] } })] {
            let TolerantSlice(watched) = from_json(&value).unwrap();
            assert!(watched.undecodable.is_some(), "{value}");
            assert_eq!(watched.slice.metadata, ObjectMeta::default());
        }
        // One bad item in a list fails only that item.
        let list: Vec<TolerantSlice> = from_json(&json!([
            { "metadata": meta, "endpoints": "oops" },
            full_slice(),
        ]))
        .unwrap();
        assert!(list[0].0.undecodable.is_some());
        assert_eq!(list[1].0.undecodable, None);
        assert_eq!(list[1].0.slice.endpoints.len(), 4);
        // The tolerant decoder reads a good slice as the fast one does.
        let TolerantSlice(tolerant) = from_json(&full_slice()).unwrap();
        assert_eq!(tolerant, from_json::<WatchedSlice>(&full_slice()).unwrap());
    }

    #[test]
    fn a_malformed_field_the_source_does_not_read_is_skipped() {
        let mut value = full_slice();
        value["endpoints"][0]["targetRef"] = json!("not an object");
        value["metadata"]["managedFields"] = json!(7);
        assert!(serde_json::from_value::<EndpointSlice>(value.clone()).is_err());
        let watched: WatchedSlice = from_json(&value).unwrap();
        assert_eq!(watched.slice.endpoints.len(), 4);
        assert_eq!(watched.slice.metadata.name.as_deref(), Some("api-x1"));
    }
}
