//! JSON/YAML for IRI messages: the generated prost types have no serde, so we transcode them to
//! `prost_reflect::DynamicMessage` (descriptors from `iri_spec::FILE_DESCRIPTOR_SET`) and let its
//! serde support do the work.
//!
//! Output uses the proto field names (snake_case, as IronCore's irictl prints them), 64-bit
//! integers as JSON numbers, enums by name and bytes as base64. Every field is printed, unset
//! ones with their default, so the shape of an object is visible.
//!
//! Input accepts YAML or JSON (a document whose first character is `{` or `[` is read as JSON),
//! field names in snake_case or the proto JSON camelCase, enums by name or number, 64-bit
//! integers as numbers or strings and bytes as base64. Unlike Go's irictl, which silently
//! ignores unknown fields, unknown fields are rejected: a typo in a spec should not create a
//! machine that lacks what the user asked for.

use anyhow::{Context as _, Result, anyhow, bail};
use iri_spec::volume::v1alpha1 as volume;
use iri_spec::{
    bucket::v1alpha1 as bucket, event::v1alpha1 as event, machine::v1alpha1 as machine,
};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};

/// A generated message type and its fully qualified proto name.
pub(crate) trait Proto: prost::Message + Default {
    /// The fully qualified proto name, e.g. `machine.v1alpha1.Machine`.
    const NAME: &'static str;
}

macro_rules! proto_names {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Proto for $ty { const NAME: &'static str = $name; })*
    };
}

proto_names! {
    machine::Machine => "machine.v1alpha1.Machine",
    machine::Volume => "machine.v1alpha1.Volume",
    machine::NetworkInterface => "machine.v1alpha1.NetworkInterface",
    machine::MachineClassStatus => "machine.v1alpha1.MachineClassStatus",
    machine::VersionResponse => "machine.v1alpha1.VersionResponse",
    volume::Volume => "volume.v1alpha1.Volume",
    volume::VolumeSnapshot => "volume.v1alpha1.VolumeSnapshot",
    volume::VolumeClassStatus => "volume.v1alpha1.VolumeClassStatus",
    volume::VersionResponse => "volume.v1alpha1.VersionResponse",
    bucket::Bucket => "bucket.v1alpha1.Bucket",
    bucket::BucketClass => "bucket.v1alpha1.BucketClass",
    bucket::VersionResponse => "bucket.v1alpha1.VersionResponse",
    event::Event => "event.v1alpha1.Event",
    iri_spec::irikit::reservation::v1alpha1::Reservation => "irikit.reservation.v1alpha1.Reservation",
}

/// Converts IRI messages to and from `serde_json::Value`.
pub(crate) struct Codec {
    pool: DescriptorPool,
}

impl Codec {
    /// Load the descriptors of every IRI package, and of irikit's reservation extension.
    pub(crate) fn new() -> Result<Self> {
        let mut pool = DescriptorPool::decode(iri_spec::FILE_DESCRIPTOR_SET)
            .context("decode the built-in IRI descriptor set")?;
        pool.decode_file_descriptor_set(iri_spec::IRIKIT_FILE_DESCRIPTOR_SET)
            .context("decode irikit's reservation extension descriptor set")?;
        Ok(Codec { pool })
    }

    fn descriptor(&self, name: &str) -> Result<MessageDescriptor> {
        self.pool
            .get_message_by_name(name)
            .ok_or_else(|| anyhow!("message {name} is missing from the IRI descriptor set"))
    }

    /// The JSON value of `msg`, with proto field names and all fields present, fields in
    /// declaration order and map keys sorted (as Go's `encoding/json` prints them).
    pub(crate) fn encode_value<M: Proto>(&self, msg: &M) -> Result<Ordered> {
        let desc = self.descriptor(M::NAME)?;
        let dynamic = DynamicMessage::decode(desc.clone(), msg.encode_to_vec().as_slice())
            .with_context(|| format!("transcode {}", M::NAME))?;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false)
            .skip_default_fields(false);
        let value = dynamic
            .serialize_with_options(serde_json::value::Serializer, &options)
            .with_context(|| format!("serialize {}", M::NAME))?;
        Ok(ordered(value, &desc))
    }

    /// The JSON values of a list of messages.
    pub(crate) fn encode_values<M: Proto>(&self, msgs: &[M]) -> Result<Ordered> {
        Ok(Ordered::List(
            msgs.iter()
                .map(|m| self.encode_value(m))
                .collect::<Result<_>>()?,
        ))
    }

    /// Decode `value` (one document of an input file) as `M`; unknown fields are errors.
    pub(crate) fn decode_value<M: Proto>(&self, value: serde_json::Value) -> Result<M> {
        let desc = self.descriptor(M::NAME)?;
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let mut track = serde_path_to_error::Track::new();
        let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
        let dynamic = match DynamicMessage::deserialize_with_options(desc, deserializer, &options) {
            Ok(dynamic) => dynamic,
            Err(err) => {
                let path = track.path().to_string();
                if path.is_empty() || path == "." {
                    bail!("{err}");
                }
                bail!("{path}: {err}");
            }
        };
        M::decode(dynamic.encode_to_vec().as_slice())
            .with_context(|| format!("transcode {}", M::NAME))
    }
}

/// A JSON value whose objects keep the order of the proto fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ordered {
    /// A scalar, or a map of scalars (keys sorted).
    Leaf(serde_json::Value),
    /// A message (fields in declaration order) or a map of messages (keys sorted).
    Object(Vec<(String, Ordered)>),
    /// A repeated field, or a list of messages.
    List(Vec<Ordered>),
}

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        match self {
            Ordered::Leaf(value) => value.serialize(serializer),
            Ordered::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            Ordered::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// Put the fields of `value`, a serialized `desc`, back into declaration order.
fn ordered(value: serde_json::Value, desc: &MessageDescriptor) -> Ordered {
    use serde_json::Value;
    let Value::Object(mut map) = value else {
        return Ordered::Leaf(value);
    };
    let mut fields = Vec::with_capacity(map.len());
    for field in desc.fields() {
        let Some(value) = map.remove(field.name()) else {
            continue;
        };
        let kind = field.kind();
        let value = match (kind.as_message(), value) {
            (Some(entry), Value::Object(entries)) if field.is_map() => {
                match entry.map_entry_value_field().kind().as_message() {
                    Some(message) => Ordered::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k, ordered(v, message)))
                            .collect(),
                    ),
                    None => Ordered::Leaf(Value::Object(entries)),
                }
            }
            (Some(message), Value::Array(items)) if field.is_list() => {
                Ordered::List(items.into_iter().map(|i| ordered(i, message)).collect())
            }
            (Some(message), value) => ordered(value, message),
            (None, value) => Ordered::Leaf(value),
        };
        fields.push((field.name().to_owned(), value));
    }
    fields.extend(map.into_iter().map(|(k, v)| (k, Ordered::Leaf(v))));
    Ordered::Object(fields)
}

/// Split input text into documents: a JSON value or one or more YAML documents separated by
/// `---`; a top-level list gives one document per element and empty YAML documents are skipped.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| anyhow!("invalid JSON: {err}"))?;
        return Ok(match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        });
    }
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|err| anyhow!("invalid YAML: {err}"))?;
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Array(items) => docs.extend(items),
            other => docs.push(other),
        }
    }
    if docs.is_empty() {
        bail!("no object in the input");
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_a_machine_with_names_numbers_and_base64() {
        let codec = Codec::new().unwrap();
        let docs = parse_documents(
            "metadata:\n  labels: {app: web}\nspec:\n  class: x3\n  power: POWER_OFF\n  ignition_data: aGk=\n  volumes:\n  - name: root\n    local_disk: {size_bytes: '1024', image: {image: img}}\n",
        )
        .unwrap();
        let machine: machine::Machine = codec.decode_value(docs[0].clone()).unwrap();
        let spec = machine.spec.clone().unwrap();
        assert_eq!(spec.power, machine::Power::Off as i32);
        assert_eq!(spec.ignition_data, b"hi");
        assert_eq!(
            spec.volumes[0].local_disk.as_ref().unwrap().size_bytes,
            1024
        );
        let value = serde_json::to_value(codec.encode_value(&machine).unwrap()).unwrap();
        assert_eq!(value["spec"]["power"], "POWER_OFF");
        assert_eq!(value["spec"]["ignition_data"], "aGk=");
        assert_eq!(
            value["spec"]["volumes"][0]["local_disk"]["size_bytes"],
            1024
        );
        assert_eq!(value["metadata"]["created_at"], 0);
        let again: machine::Machine = codec.decode_value(value).unwrap();
        assert_eq!(again, machine);
    }

    #[test]
    fn enums_by_number_and_camel_case_names_are_accepted() {
        let codec = Codec::new().unwrap();
        let value = serde_json::json!({"spec": {"power": 1, "networkInterfaces": [{"name": "a"}]}});
        let machine: machine::Machine = codec.decode_value(value).unwrap();
        let spec = machine.spec.unwrap();
        assert_eq!(spec.power, 1);
        assert_eq!(spec.network_interfaces[0].name, "a");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let codec = Codec::new().unwrap();
        let err = codec
            .decode_value::<volume::Volume>(serde_json::json!({"spec": {"image": "x"}}))
            .unwrap_err();
        assert!(err.to_string().contains("image"), "{err}");
    }

    #[test]
    fn fields_keep_declaration_order() {
        let codec = Codec::new().unwrap();
        let machine = machine::Machine {
            metadata: Some(Default::default()),
            spec: Some(machine::MachineSpec {
                volumes: vec![Default::default()],
                ..Default::default()
            }),
            status: None,
        };
        let text = serde_json::to_string(&codec.encode_value(&machine).unwrap()).unwrap();
        assert!(
            text.starts_with("{\"metadata\":{\"id\":\"\",\"annotations\":{}"),
            "{text}"
        );
        assert!(
            text.contains("\"volumes\":[{\"name\":\"\",\"device\":\"\""),
            "{text}"
        );
    }

    #[test]
    fn every_named_type_is_in_the_descriptor_set() {
        fn check<M: Proto + PartialEq + std::fmt::Debug>(codec: &Codec) {
            let value = serde_json::to_value(codec.encode_value(&M::default()).unwrap()).unwrap();
            let back: M = codec.decode_value(value).unwrap();
            assert_eq!(back, M::default(), "{}", M::NAME);
        }
        let codec = Codec::new().unwrap();
        check::<machine::Machine>(&codec);
        check::<machine::Volume>(&codec);
        check::<machine::NetworkInterface>(&codec);
        check::<machine::MachineClassStatus>(&codec);
        check::<machine::VersionResponse>(&codec);
        check::<volume::Volume>(&codec);
        check::<volume::VolumeSnapshot>(&codec);
        check::<volume::VolumeClassStatus>(&codec);
        check::<volume::VersionResponse>(&codec);
        check::<bucket::Bucket>(&codec);
        check::<bucket::BucketClass>(&codec);
        check::<bucket::VersionResponse>(&codec);
        check::<event::Event>(&codec);
    }

    #[test]
    fn documents() {
        assert_eq!(parse_documents("a: 1\n---\nb: 2\n").unwrap().len(), 2);
        assert_eq!(parse_documents("[{\"a\": 1}, {}]").unwrap().len(), 2);
        assert_eq!(
            parse_documents("- a: 1\n- b: 2\n---\nc: 3\n")
                .unwrap()
                .len(),
            3
        );
        assert!(parse_documents("").is_err());
        assert!(parse_documents("a: [").is_err());
        assert!(parse_documents("{\"a\": ").is_err());
    }
}
