//! The objects of the fake API server, their resourceVersions and their history.
//!
//! Like etcd behind a real API server, the store has one global resourceVersion counter: every
//! write takes the next number and is appended to a history of changes. A watch from
//! resourceVersion `n` replays the changes after `n`; compaction drops the history up to the
//! current version, after which a watch from an older version is answered with `410 Expired`.
//! The state at any version since the last compaction can be rebuilt (a base snapshot plus the
//! history), which is what paginated lists need: every page of one list is served from the same
//! version, as the real server does.
//!
//! Objects are shared (`Arc`) between the current state, the history and the base snapshot, so
//! a write, a compaction or a list copies no object: at a thousand objects of a hundred
//! endpoints each, deep copies made the rig, not the client under test, the slow side.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// Objects are keyed by namespace and name.
pub type Key = (String, String);

/// What a change did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Replaced.
    Modified,
    /// Deleted.
    Deleted,
}

/// One write, as the history keeps it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion of the write.
    pub resource_version: u64,
    /// The object's key.
    pub key: Key,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the write (for a delete: its last state, at the delete's version).
    pub object: Arc<Value>,
    /// The object before the write, if it existed.
    pub previous: Option<Arc<Value>>,
}

/// Why an object cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidObject(pub String);

/// The resourceVersion asked for is older than the compacted history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The oldest version that can still be served.
    pub oldest: u64,
}

/// The objects and their history.
#[derive(Debug, Default)]
pub struct Store {
    resource_version: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: Vec<Arc<Change>>,
    compacted: u64,
    base: BTreeMap<Key, Arc<Value>>,
    next_uid: u64,
}

impl Store {
    /// The current (newest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// The current objects.
    pub fn objects(&self) -> &BTreeMap<Key, Arc<Value>> {
        &self.objects
    }

    /// Creates or replaces an object (`metadata.name` required, `metadata.namespace` defaults to
    /// `default`), stamping its resourceVersion, uid and creation time.
    pub fn put(&mut self, mut object: Value) -> Result<Arc<Change>, InvalidObject> {
        let metadata = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| InvalidObject("the object has no metadata".into()))?;
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| InvalidObject("the object has no metadata.name".into()))?
            .to_owned();
        let namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let key = (namespace.clone(), name);
        let previous = self.objects.get(&key);
        self.resource_version += 1;
        let rv = self.resource_version;
        metadata.insert("namespace".into(), Value::from(namespace));
        metadata.insert("resourceVersion".into(), Value::from(rv.to_string()));
        let (uid, created, generation) = match previous.map(|p| &p["metadata"]) {
            Some(old) => (
                old["uid"].clone(),
                old["creationTimestamp"].clone(),
                Value::from(old["generation"].as_u64().unwrap_or(1) + 1),
            ),
            None => {
                self.next_uid += 1;
                (
                    Value::from(format!("00000000-0000-4000-8000-{:012x}", self.next_uid)),
                    Value::from("2025-01-01T00:00:00Z"),
                    Value::from(1),
                )
            }
        };
        metadata.insert("uid".into(), uid);
        metadata.insert("creationTimestamp".into(), created);
        metadata.insert("generation".into(), generation);
        strip_type(&mut object);
        let object = Arc::new(object);
        let previous = self.objects.insert(key.clone(), Arc::clone(&object));
        let change = Arc::new(Change {
            resource_version: rv,
            key,
            kind: if previous.is_some() {
                ChangeKind::Modified
            } else {
                ChangeKind::Added
            },
            object,
            previous,
        });
        self.history.push(Arc::clone(&change));
        Ok(change)
    }

    /// Deletes an object; `None` when there is none with this key.
    pub fn delete(&mut self, namespace: &str, name: &str) -> Option<Arc<Change>> {
        let key = (namespace.to_owned(), name.to_owned());
        let previous = self.objects.remove(&key)?;
        self.resource_version += 1;
        let mut object = Value::clone(&previous);
        object["metadata"]["resourceVersion"] = Value::from(self.resource_version.to_string());
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            key,
            kind: ChangeKind::Deleted,
            object: Arc::new(object),
            previous: Some(previous),
        });
        self.history.push(Arc::clone(&change));
        Some(change)
    }

    /// Moves the resourceVersion on by `by` without touching these objects, as writes to other
    /// resources do on a real cluster.
    pub fn advance(&mut self, by: u64) {
        self.resource_version += by;
    }

    /// Drops the history up to the current version.
    pub fn compact(&mut self) {
        self.base = self.objects.clone();
        self.compacted = self.resource_version;
        self.history.clear();
    }

    /// The changes after `resource_version`, oldest first.
    pub fn changes_after(&self, resource_version: u64) -> Result<Vec<Arc<Change>>, Expired> {
        if resource_version < self.compacted {
            return Err(Expired {
                oldest: self.compacted,
            });
        }
        let start = self
            .history
            .partition_point(|change| change.resource_version <= resource_version);
        Ok(self.history[start..].to_vec())
    }

    /// The objects as they were at `resource_version`.
    pub fn state_at(&self, resource_version: u64) -> Result<BTreeMap<Key, Arc<Value>>, Expired> {
        if resource_version < self.compacted {
            return Err(Expired {
                oldest: self.compacted,
            });
        }
        if resource_version >= self.resource_version {
            return Ok(self.objects.clone());
        }
        let mut state = self.base.clone();
        for change in self
            .history
            .iter()
            .take_while(|change| change.resource_version <= resource_version)
        {
            match change.kind {
                ChangeKind::Added | ChangeKind::Modified => {
                    state.insert(change.key.clone(), Arc::clone(&change.object));
                }
                ChangeKind::Deleted => {
                    state.remove(&change.key);
                }
            }
        }
        Ok(state)
    }
}

/// The labels of an object.
pub fn labels(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// List items carry no `kind` or `apiVersion`, as from a real server; watch events add them.
fn strip_type(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
}

/// `object` with `kind` and `apiVersion`, for a watch event: serialized from the stored object,
/// without copying it.
pub struct Typed<'a> {
    /// The stored object (without `kind` and `apiVersion`).
    pub object: &'a Value,
    /// Its `kind`.
    pub kind: &'a str,
    /// Its `apiVersion`.
    pub api_version: &'a str,
}

impl serde::Serialize for Typed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.object.as_object();
        let mut map = serializer.serialize_map(Some(2 + fields.map_or(0, Map::len)))?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("apiVersion", self.api_version)?;
        for (key, value) in fields.into_iter().flatten() {
            if key != "kind" && key != "apiVersion" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// A `Status` object, as the API server sends for errors.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, value: u32) -> Value {
        json!({ "metadata": { "name": name, "namespace": "ns" }, "value": value })
    }

    #[test]
    fn history_replays_and_compaction_expires() {
        let mut store = Store::default();
        store.put(object("a", 1)).unwrap();
        store.put(object("b", 1)).unwrap();
        store.put(object("a", 2)).unwrap();
        store.delete("ns", "b").unwrap();
        assert_eq!(store.resource_version(), 4);

        let changes = store.changes_after(1).unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
        );
        assert_eq!(changes[2].object["metadata"]["resourceVersion"], "4");

        let at_2 = store.state_at(2).unwrap();
        assert_eq!(at_2.len(), 2);
        assert_eq!(at_2[&("ns".into(), "a".into())]["value"], 1);

        store.advance(10);
        store.compact();
        assert_eq!(store.changes_after(3).unwrap_err(), Expired { oldest: 14 });
        assert!(store.state_at(3).is_err());
        assert!(store.changes_after(14).unwrap().is_empty());
        store.put(object("c", 1)).unwrap();
        assert_eq!(store.state_at(14).unwrap().len(), 1);
        assert_eq!(store.state_at(15).unwrap().len(), 2);
    }

    #[test]
    fn updates_keep_uid_and_bump_generation() {
        let mut store = Store::default();
        let first = store.put(object("a", 1)).unwrap();
        let second = store.put(object("a", 2)).unwrap();
        assert_eq!(
            first.object["metadata"]["uid"],
            second.object["metadata"]["uid"]
        );
        assert_eq!(second.object["metadata"]["generation"], 2);
        assert!(store.put(json!({ "metadata": {} })).is_err());
    }
}
