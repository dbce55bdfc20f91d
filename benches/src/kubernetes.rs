//! EndpointSlices shaped like the controller's: 100 endpoints per slice by default, each with a
//! zone, a node, a hostname, zone hints and a target reference, ready unless told otherwise.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

/// The Service the generated slices belong to.
pub const SERVICE: &str = "api";

/// The port the generated slices carry, named `http`.
pub const PORT: u16 = 8080;

/// The endpoint at position `index` of the Service: a unique IPv4 address in 10.0.0.0/8.
pub fn endpoint_ip(index: usize) -> String {
    let index = index + 1;
    format!(
        "10.{}.{}.{}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// Slice `slice` of the Service as JSON, holding endpoints `first..first + count`; `generation`
/// changes what the slice says without changing its addresses (it flips the readiness of the
/// last endpoint), to make an update.
pub fn slice_json(slice: usize, first: usize, count: usize, generation: u64) -> Value {
    service_slice_json(SERVICE, slice, first, count, generation)
}

/// [`slice_json`] for another Service, named `service`, in the namespace `default`.
pub fn service_slice_json(
    service: &str,
    slice: usize,
    first: usize,
    count: usize,
    generation: u64,
) -> Value {
    let endpoints: Vec<Value> = (first..first + count)
        .map(|index| {
            let ready = !(generation % 2 == 1 && index == first + count - 1);
            endpoint_json(service, index, ready)
        })
        .collect();
    json!({
        "metadata": {
            "name": format!("{service}-{slice:03}"),
            "namespace": "default",
            "resourceVersion": format!("{}", 1000 + generation),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": PORT, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

/// Endpoint `index` of Service `service`, as [`service_slice_json`] writes it.
pub fn endpoint_json(service: &str, index: usize, ready: bool) -> Value {
    let zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
    let zone = zones[index % zones.len()];
    json!({
        "addresses": [endpoint_ip(index)],
        "conditions": { "ready": ready, "serving": ready, "terminating": false },
        "hostname": format!("{service}-{index}"),
        "nodeName": format!("node-{}", index % 40),
        "zone": zone,
        "hints": { "forZones": [{ "name": zone }] },
        "targetRef": {
            "kind": "Pod",
            "namespace": "default",
            "name": format!("{service}-7d9f8b6c5-{index:05}"),
            "uid": format!("00000000-0000-4000-8000-{index:012}"),
        },
    })
}

/// [`slice_json`] as a typed EndpointSlice.
pub fn slice(slice: usize, first: usize, count: usize, generation: u64) -> EndpointSlice {
    serde_json::from_value(slice_json(slice, first, count, generation))
        .expect("the generated slice is a valid EndpointSlice")
}

/// A Service of `slices` slices of `per_slice` endpoints each.
pub fn service(slices: usize, per_slice: usize) -> Vec<EndpointSlice> {
    (0..slices)
        .map(|i| slice(i, i * per_slice, per_slice, 0))
        .collect()
}
