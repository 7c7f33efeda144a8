//! The dynamic object: one enum over every kind irikit stores, for apply/get of any kind and
//! for the store, plus the [`Resource`] trait that connects it to the typed structs.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{compute, coordination, core, meta::ObjectMeta, reservation, storage};

macro_rules! kinds {
    ($( $variant:ident => $ty:ty, $api:expr, $plural:literal, $namespaced:expr; )*) => {
        /// Every kind of object irikit stores.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Kind {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant,
            )*
        }

        impl Kind {
            /// All kinds.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The kind name (`Machine`).
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => stringify!($variant)),* }
            }

            /// The lower-case plural resource name (`machines`).
            pub fn plural(self) -> &'static str {
                match self { $(Kind::$variant => $plural),* }
            }

            /// The apiVersion of the kind.
            pub fn api_version(self) -> &'static str {
                match self { $(Kind::$variant => $api),* }
            }

            /// Whether objects of this kind live in a namespace.
            pub fn namespaced(self) -> bool {
                match self { $(Kind::$variant => $namespaced),* }
            }
        }

        /// An object of any kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object {
            $(
                #[doc = concat!("A ", stringify!($variant), ".")]
                $variant($ty),
            )*
        }

        impl Object {
            /// The kind.
            pub fn kind(&self) -> Kind {
                match self { $(Object::$variant(_) => Kind::$variant),* }
            }

            /// The metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Object::$variant(o) => &o.metadata),* }
            }

            /// The metadata, mutably.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$variant(o) => &mut o.metadata),* }
            }

            fn set_type_meta(&mut self) {
                match self {
                    $(Object::$variant(o) => {
                        o.api_version = $api.to_string();
                        o.kind = stringify!($variant).to_string();
                    })*
                }
            }

            /// Serialises to a JSON value.
            pub fn to_json(&self) -> serde_json::Value {
                let res = match self { $(Object::$variant(o) => serde_json::to_value(o)),* };
                // Serialising these plain data types cannot fail (string keys only).
                res.unwrap_or(serde_json::Value::Null)
            }

            /// Parses a JSON value whose `kind` names one of [`Kind`].
            pub fn from_json(value: serde_json::Value) -> Result<Self, ParseObjectError> {
                let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
                let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
                let kind: Kind = kind.parse()?;
                if api_version != kind.api_version() {
                    return Err(ParseObjectError::ApiVersion {
                        kind: kind.as_str(),
                        got: api_version.to_string(),
                        want: kind.api_version(),
                    });
                }
                let mut obj = match kind {
                    $(Kind::$variant => Object::$variant(
                        serde_json::from_value(value).map_err(|e| ParseObjectError::Decode(e.to_string()))?)),*
                };
                obj.set_type_meta();
                Ok(obj)
            }

            /// Parses JSON bytes whose `kind` names one of [`Kind`], straight into the typed
            /// object (no intermediate `serde_json::Value`: the store's hot decode path).
            pub fn from_json_slice(bytes: &[u8]) -> Result<Self, ParseObjectError> {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct TypeMeta<'a> {
                    #[serde(default, borrow)]
                    kind: std::borrow::Cow<'a, str>,
                    #[serde(default, borrow)]
                    api_version: std::borrow::Cow<'a, str>,
                }
                let decode = |e: serde_json::Error| ParseObjectError::Decode(e.to_string());
                let type_meta: TypeMeta<'_> = serde_json::from_slice(bytes).map_err(decode)?;
                let kind: Kind = type_meta.kind.parse()?;
                if type_meta.api_version != kind.api_version() {
                    return Err(ParseObjectError::ApiVersion {
                        kind: kind.as_str(),
                        got: type_meta.api_version.into_owned(),
                        want: kind.api_version(),
                    });
                }
                let mut obj = match kind {
                    $(Kind::$variant => Object::$variant(serde_json::from_slice(bytes).map_err(decode)?)),*
                };
                obj.set_type_meta();
                Ok(obj)
            }
        }

        $(
            impl Resource for $ty {
                const KIND: Kind = Kind::$variant;
                fn into_object(mut self) -> Object {
                    self.api_version = $api.to_string();
                    self.kind = stringify!($variant).to_string();
                    Object::$variant(self)
                }
                fn from_object(obj: Object) -> Option<Self> {
                    match obj { Object::$variant(o) => Some(o), _ => None }
                }
                fn meta(&self) -> &ObjectMeta { &self.metadata }
                fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
            }
        )*

        impl FromStr for Kind {
            type Err = ParseObjectError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(
                    if s.eq_ignore_ascii_case(stringify!($variant)) || s.eq_ignore_ascii_case($plural) {
                        return Ok(Kind::$variant);
                    }
                )*
                Err(ParseObjectError::UnknownKind(s.to_string()))
            }
        }
    };
}

kinds! {
    Machine => compute::Machine, compute::API_VERSION, "machines", true;
    MachinePool => compute::MachinePool, compute::API_VERSION, "machinepools", false;
    MachineClass => compute::MachineClass, compute::API_VERSION, "machineclasses", false;
    Volume => storage::Volume, storage::API_VERSION, "volumes", true;
    VolumePool => storage::VolumePool, storage::API_VERSION, "volumepools", false;
    VolumeClass => storage::VolumeClass, storage::API_VERSION, "volumeclasses", false;
    VolumeSnapshot => storage::VolumeSnapshot, storage::API_VERSION, "volumesnapshots", true;
    Event => core::Event, core::API_VERSION, "events", true;
    Secret => core::Secret, core::API_VERSION, "secrets", true;
    Lease => coordination::Lease, coordination::API_VERSION, "leases", true;
    Reservation => reservation::Reservation, reservation::API_VERSION, "reservations", true;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed object that converts to and from [`Object`].
pub trait Resource: Clone + Send + Sync + 'static {
    /// The kind.
    const KIND: Kind;
    /// Wraps into [`Object`], filling apiVersion and kind.
    fn into_object(self) -> Object;
    /// Unwraps from [`Object`] (`None` for another kind).
    fn from_object(obj: Object) -> Option<Self>;
    /// The metadata.
    fn meta(&self) -> &ObjectMeta;
    /// The metadata, mutably.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

/// Why a document is not an object irikit knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseObjectError {
    /// The kind is not one of [`Kind`].
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// The apiVersion does not match the kind.
    #[error("kind {kind}: apiVersion {got:?} is not {want:?}")]
    ApiVersion {
        /// The kind.
        kind: &'static str,
        /// The apiVersion found.
        got: String,
        /// The apiVersion expected.
        want: &'static str,
    },
    /// The document does not fit the kind's shape.
    #[error("decode: {0}")]
    Decode(String),
    /// The text is not YAML.
    #[error("yaml: {0}")]
    Yaml(String),
}

impl Object {
    /// The `namespace/name` (or `name`) of the object.
    pub fn key(&self) -> String {
        let meta = self.metadata();
        if meta.namespace.is_empty() {
            meta.name.clone()
        } else {
            format!("{}/{}", meta.namespace, meta.name)
        }
    }

    /// The resourceVersion parsed as a store revision (0 when empty or not a number).
    pub fn revision(&self) -> u64 {
        self.metadata().resource_version.parse().unwrap_or(0)
    }

    /// Serialises to YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.to_json()).unwrap_or_default()
    }

    /// Converts into a typed resource.
    pub fn into_typed<R: Resource>(self) -> Option<R> {
        R::from_object(self)
    }

    /// Whether the spec (everything a user desires; for kinds without spec/status, the data
    /// fields) differs between `self` and `other`. Metadata and status are ignored.
    pub fn spec_differs(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Machine(a), Object::Machine(b)) => a.spec != b.spec,
            (Object::MachinePool(a), Object::MachinePool(b)) => a.spec != b.spec,
            (Object::MachineClass(a), Object::MachineClass(b)) => a.capabilities != b.capabilities,
            (Object::Volume(a), Object::Volume(b)) => a.spec != b.spec,
            (Object::VolumePool(a), Object::VolumePool(b)) => a.spec != b.spec,
            (Object::VolumeClass(a), Object::VolumeClass(b)) => {
                a.capabilities != b.capabilities || a.resize_policy != b.resize_policy
            }
            (Object::VolumeSnapshot(a), Object::VolumeSnapshot(b)) => a.spec != b.spec,
            // Events and Secrets have no generation semantics in Kubernetes; treat their
            // payload as spec so a change is still visible in the generation.
            (Object::Event(a), Object::Event(b)) => {
                (&a.involved_object, &a.reason, &a.message, &a.type_, a.count)
                    != (&b.involved_object, &b.reason, &b.message, &b.type_, b.count)
            }
            (Object::Secret(a), Object::Secret(b)) => {
                (&a.type_, &a.data, &a.string_data) != (&b.type_, &b.data, &b.string_data)
            }
            (Object::Lease(a), Object::Lease(b)) => a.spec != b.spec,
            (Object::Reservation(a), Object::Reservation(b)) => a.spec != b.spec,
            _ => true,
        }
    }

    /// Copies the status from `from` into `self` (same kind; kinds without status are left).
    pub fn copy_status_from(&mut self, from: &Object) {
        match (self, from) {
            (Object::Machine(a), Object::Machine(b)) => a.status = b.status.clone(),
            (Object::MachinePool(a), Object::MachinePool(b)) => a.status = b.status.clone(),
            (Object::Volume(a), Object::Volume(b)) => a.status = b.status.clone(),
            (Object::VolumePool(a), Object::VolumePool(b)) => a.status = b.status.clone(),
            (Object::VolumeSnapshot(a), Object::VolumeSnapshot(b)) => a.status = b.status.clone(),
            (Object::Reservation(a), Object::Reservation(b)) => a.status = b.status.clone(),
            _ => {}
        }
    }

    /// Whether the kind has a status subresource (update ignores status, update_status
    /// changes only status).
    pub fn has_status(&self) -> bool {
        matches!(
            self.kind(),
            Kind::Machine
                | Kind::MachinePool
                | Kind::Volume
                | Kind::VolumePool
                | Kind::VolumeSnapshot
                | Kind::Reservation
        )
    }

    /// The value of a selectable field (`metadata.name`, `metadata.namespace`,
    /// `spec.machinePoolRef.name`, `spec.machineClassRef.name`, `spec.volumePoolRef.name`,
    /// `spec.volumeClassRef.name`); unset references read as `""`. `None` when the field is not
    /// selectable for this kind.
    pub fn field(&self, path: &str) -> Option<&str> {
        let meta = self.metadata();
        match (path, self) {
            ("metadata.name", _) => Some(&meta.name),
            ("metadata.namespace", _) => Some(&meta.namespace),
            ("spec.machinePoolRef.name", Object::Machine(m)) => Some(
                m.spec
                    .machine_pool_ref
                    .as_ref()
                    .map_or("", |r| r.name.as_str()),
            ),
            ("spec.machineClassRef.name", Object::Machine(m)) => {
                Some(&m.spec.machine_class_ref.name)
            }
            ("spec.volumePoolRef.name", Object::Volume(v)) => Some(
                v.spec
                    .volume_pool_ref
                    .as_ref()
                    .map_or("", |r| r.name.as_str()),
            ),
            ("spec.volumeClassRef.name", Object::Volume(v)) => Some(
                v.spec
                    .volume_class_ref
                    .as_ref()
                    .map_or("", |r| r.name.as_str()),
            ),
            ("involvedObject.name", Object::Event(e)) => Some(&e.involved_object.name),
            ("reason", Object::Event(e)) => Some(&e.reason),
            _ => None,
        }
    }
}

/// Parses a multi-document YAML text into objects (empty documents are skipped).
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Object>, ParseObjectError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| ParseObjectError::Yaml(format!("document {}: {e}", index + 1)))?;
        if value.is_null() {
            continue;
        }
        out.push(Object::from_json(value).map_err(|e| match e {
            ParseObjectError::Decode(msg) => {
                ParseObjectError::Decode(format!("document {}: {msg}", index + 1))
            }
            other => other,
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Object, ParseObjectError};
    use crate::{Resource, compute::MachinePool, meta::ObjectMeta};

    #[test]
    fn from_json_slice_matches_from_json() {
        let mut pool = MachinePool {
            metadata: ObjectMeta::named("p1"),
            ..Default::default()
        };
        pool.metadata
            .annotations
            .insert("a".into(), "quote \" and \\ escape".into());
        pool.status.state = "Ready".into();
        let obj = pool.into_object();
        let bytes = serde_json::to_vec(&obj.to_json()).unwrap();
        let direct = Object::from_json_slice(&bytes).unwrap();
        assert_eq!(direct, obj);
        assert_eq!(
            direct,
            Object::from_json(serde_json::from_slice(&bytes).unwrap()).unwrap()
        );
        let wrong = String::from_utf8(bytes)
            .unwrap()
            .replace("compute.ironcore.dev/v1alpha1", "v1");
        assert!(matches!(
            Object::from_json_slice(wrong.as_bytes()),
            Err(ParseObjectError::ApiVersion { .. })
        ));
        assert!(matches!(
            Object::from_json_slice(br#"{"kind":"Nope"}"#),
            Err(ParseObjectError::UnknownKind(_))
        ));
        assert!(matches!(
            Object::from_json_slice(b"not json"),
            Err(ParseObjectError::Decode(_))
        ));
    }
}
