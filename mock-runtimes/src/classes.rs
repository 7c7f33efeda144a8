//! Machine, volume and bucket classes the mock offers, with a default set and a YAML loader for
//! IronCore's MachineClass/VolumeClass/BucketClass shape.
//!
//! The YAML may hold several documents (`---`) or a `List` with `items`. Each class has a top-level
//! `capabilities` map of Kubernetes quantities (`cpu: 4`, `memory: 16Gi`, `tps: 100Mi`,
//! `iops: 1000`). The mock also reads an optional top-level `quantity` (an irikit extension): the
//! number of machines of that class (machine classes) or the storage bytes (volume classes) that
//! `Status` reports.

use std::{collections::BTreeMap, path::Path};

/// Errors of class configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A quantity string is not a valid Kubernetes quantity.
    #[error("invalid quantity {0:?}: use forms like 4, 500m, 16Gi or 1.5G")]
    Quantity(String),
    /// The class file could not be read.
    #[error("read class file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The class file is not valid YAML of the expected shape.
    #[error("parse class file {path}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A document has an unknown `kind` or lacks a name.
    #[error("class file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A class flag is malformed.
    #[error(
        "invalid class {0:?}: use NAME:cpu=4,memory=16Gi[,quantity=10] (machine) or NAME:tps=100Mi,iops=1000[,quantity=1Ti] (volume, bucket)"
    )]
    Flag(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A machine class: `cpu` in whole cores, `memory` in bytes, any extra resources, and how many
/// machines of the class the pool has (the `quantity` reported by `Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineClassConfig {
    /// Class name.
    pub name: String,
    /// CPU cores.
    pub cpu: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Further resources (e.g. a GPU plugin name) with their values.
    pub extra: BTreeMap<String, i64>,
    /// Total number of machines of this class.
    pub quantity: i64,
}

impl MachineClassConfig {
    /// A class with `cpu` cores and `memory_bytes` of memory, 100 instances.
    pub fn new(name: impl Into<String>, cpu: i64, memory_bytes: i64) -> Self {
        MachineClassConfig {
            name: name.into(),
            cpu,
            memory_bytes,
            extra: BTreeMap::new(),
            quantity: 100,
        }
    }

    /// Sets the quantity.
    pub fn quantity(mut self, quantity: i64) -> Self {
        self.quantity = quantity;
        self
    }
}

/// A volume class: throughput and IOPS, and the storage bytes the pool has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeClassConfig {
    /// Class name.
    pub name: String,
    /// Throughput in bytes per second.
    pub tps: i64,
    /// I/O operations per second.
    pub iops: i64,
    /// Total storage bytes of this class.
    pub quantity: i64,
}

impl VolumeClassConfig {
    /// A class with the given capabilities and 1 TiB of storage.
    pub fn new(name: impl Into<String>, tps: i64, iops: i64) -> Self {
        VolumeClassConfig {
            name: name.into(),
            tps,
            iops,
            quantity: 1 << 40,
        }
    }
}

/// A bucket class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketClassConfig {
    /// Class name.
    pub name: String,
    /// Throughput in bytes per second.
    pub tps: i64,
    /// I/O operations per second.
    pub iops: i64,
}

impl BucketClassConfig {
    /// A class with the given capabilities.
    pub fn new(name: impl Into<String>, tps: i64, iops: i64) -> Self {
        BucketClassConfig {
            name: name.into(),
            tps,
            iops,
        }
    }
}

const GI: i64 = 1 << 30;
const MI: i64 = 1 << 20;

/// The default machine classes: `x3-small` (2 cores, 8 GiB), `x3-medium` (4, 16 GiB), `x3-large` (8, 32 GiB).
pub fn default_machine_classes() -> Vec<MachineClassConfig> {
    vec![
        MachineClassConfig::new("x3-small", 2, 8 * GI),
        MachineClassConfig::new("x3-medium", 4, 16 * GI).quantity(50),
        MachineClassConfig::new("x3-large", 8, 32 * GI).quantity(20),
    ]
}

/// The default volume classes: `fast` (250 MiB/s, 10000 IOPS) and `slow` (50 MiB/s, 500 IOPS).
pub fn default_volume_classes() -> Vec<VolumeClassConfig> {
    vec![
        VolumeClassConfig::new("fast", 250 * MI, 10_000),
        VolumeClassConfig::new("slow", 50 * MI, 500),
    ]
}

/// The default bucket class: `regular` (100 MiB/s, 1000 IOPS).
pub fn default_bucket_classes() -> Vec<BucketClassConfig> {
    vec![BucketClassConfig::new("regular", 100 * MI, 1000)]
}

/// Parses a Kubernetes quantity and returns its value rounded up to an integer, as
/// `resource.Quantity.Value()` does (`500m` → 1, `16Gi` → 17179869184, `1.5G` → 1500000000).
pub fn parse_quantity(s: &str) -> Result<i64> {
    let err = || Error::Quantity(s.to_owned());
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    // Exponent notation (1e3) is rare in class files; accept it as a suffix form.
    let (mult_num, mult_den): (i128, i128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .and_then(|e| e.parse::<u32>().ok())
                .filter(|e| *e <= 18)
                .ok_or_else(err)?;
            (10i128.pow(exp), 1)
        }
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || frac_part.len() > 9
    {
        return Err(err());
    }
    let scale = 10i128.pow(u32::try_from(frac_part.len()).map_err(|_| err())?);
    let int: i128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| err())?
    };
    let frac: i128 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| err())?
    };
    let mantissa = int
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(err)?;
    let num = mantissa.checked_mul(mult_num).ok_or_else(err)?;
    let den = scale * mult_den;
    // Round away from zero like Quantity.Value() (which rounds up for positive values).
    let value = (num + den - 1) / den;
    let value = if negative {
        -((num + den - 1) / den)
    } else {
        value
    };
    i64::try_from(value).map_err(|_| err())
}

#[derive(Debug, serde::Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClassDoc {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default)]
    capabilities: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    quantity: Option<serde_yaml::Value>,
    #[serde(default)]
    items: Vec<ClassDoc>,
}

/// Classes read from a file or flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassSet {
    /// Machine classes.
    pub machine: Vec<MachineClassConfig>,
    /// Volume classes.
    pub volume: Vec<VolumeClassConfig>,
    /// Bucket classes.
    pub bucket: Vec<BucketClassConfig>,
}

fn quantity_value(v: &serde_yaml::Value) -> Result<i64> {
    match v {
        serde_yaml::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(f)) => parse_quantity(&f.to_string()),
            _ => Err(Error::Quantity(n.to_string())),
        },
        serde_yaml::Value::String(s) => parse_quantity(s),
        other => Err(Error::Quantity(format!("{other:?}"))),
    }
}

impl ClassSet {
    /// Parses YAML text (see the module docs). `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let mut set = ClassSet::default();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc).map_err(|source| Error::Parse {
                path: origin.to_owned(),
                source,
            })?;
            if value.is_null() {
                continue;
            }
            let doc: ClassDoc = serde_yaml::from_value(value).map_err(|source| Error::Parse {
                path: origin.to_owned(),
                source,
            })?;
            set.add_doc(doc, origin)?;
        }
        Ok(set)
    }

    /// Reads a YAML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: origin.clone(),
            source,
        })?;
        Self::from_yaml(&text, &origin)
    }

    fn add_doc(&mut self, doc: ClassDoc, origin: &str) -> Result<()> {
        let invalid = |message: String| Error::Invalid {
            path: origin.to_owned(),
            message,
        };
        if doc.kind.ends_with("List") || (!doc.items.is_empty() && doc.kind.is_empty()) {
            for item in doc.items {
                self.add_doc(item, origin)?;
            }
            return Ok(());
        }
        let name = doc.metadata.map(|m| m.name).unwrap_or_default();
        if name.is_empty() {
            return Err(invalid(format!("a {} has no metadata.name", doc.kind)));
        }
        let mut caps = BTreeMap::new();
        for (key, value) in &doc.capabilities {
            caps.insert(key.clone(), quantity_value(value)?);
        }
        let quantity = doc.quantity.as_ref().map(quantity_value).transpose()?;
        match doc.kind.as_str() {
            "MachineClass" => {
                let cpu = caps.remove("cpu").unwrap_or(0);
                let memory_bytes = caps.remove("memory").unwrap_or(0);
                self.machine.push(MachineClassConfig {
                    name,
                    cpu,
                    memory_bytes,
                    extra: caps,
                    quantity: quantity.unwrap_or(100),
                });
            }
            "VolumeClass" => self.volume.push(VolumeClassConfig {
                name,
                tps: caps.get("tps").copied().unwrap_or(0),
                iops: caps.get("iops").copied().unwrap_or(0),
                quantity: quantity.unwrap_or(1 << 40),
            }),
            "BucketClass" => self.bucket.push(BucketClassConfig {
                name,
                tps: caps.get("tps").copied().unwrap_or(0),
                iops: caps.get("iops").copied().unwrap_or(0),
            }),
            other => {
                return Err(invalid(format!(
                    "unknown kind {other:?}: use MachineClass, VolumeClass or BucketClass"
                )));
            }
        }
        Ok(())
    }
}

fn parse_flag_pairs(flag: &str) -> Result<(String, BTreeMap<String, i64>)> {
    let err = || Error::Flag(flag.to_owned());
    let (name, rest) = flag.split_once(':').ok_or_else(err)?;
    if name.is_empty() {
        return Err(err());
    }
    let mut map = BTreeMap::new();
    for pair in rest.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(err)?;
        map.insert(k.trim().to_owned(), parse_quantity(v)?);
    }
    Ok((name.to_owned(), map))
}

/// Parses a `--machine-class NAME:cpu=4,memory=16Gi[,quantity=10][,other=1]` flag.
pub fn parse_machine_class_flag(flag: &str) -> Result<MachineClassConfig> {
    let (name, mut map) = parse_flag_pairs(flag)?;
    Ok(MachineClassConfig {
        name,
        cpu: map
            .remove("cpu")
            .ok_or_else(|| Error::Flag(flag.to_owned()))?,
        memory_bytes: map
            .remove("memory")
            .ok_or_else(|| Error::Flag(flag.to_owned()))?,
        quantity: map.remove("quantity").unwrap_or(100),
        extra: map,
    })
}

/// Parses a `--volume-class NAME:tps=100Mi,iops=1000[,quantity=1Ti]` flag.
pub fn parse_volume_class_flag(flag: &str) -> Result<VolumeClassConfig> {
    let (name, map) = parse_flag_pairs(flag)?;
    Ok(VolumeClassConfig {
        name,
        tps: map.get("tps").copied().unwrap_or(0),
        iops: map.get("iops").copied().unwrap_or(0),
        quantity: map.get("quantity").copied().unwrap_or(1 << 40),
    })
}

/// Parses a `--bucket-class NAME:tps=100Mi,iops=1000` flag (the volume class flag's shape; a
/// `quantity` is ignored).
pub fn parse_bucket_class_flag(flag: &str) -> Result<BucketClassConfig> {
    let VolumeClassConfig {
        name, tps, iops, ..
    } = parse_volume_class_flag(flag)?;
    Ok(BucketClassConfig { name, tps, iops })
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("4", 4)]
    #[case("0", 0)]
    #[case("500m", 1)]
    #[case("1500m", 2)]
    #[case("16Gi", 16 << 30)]
    #[case("1.5G", 1_500_000_000)]
    #[case("100Mi", 100 << 20)]
    #[case("1Ti", 1 << 40)]
    #[case("2k", 2000)]
    #[case("1e3", 1000)]
    #[case("-1", -1)]
    #[case(".5", 1)]
    fn quantities(#[case] input: &str, #[case] want: i64) {
        assert_eq!(parse_quantity(input).unwrap(), want);
    }

    #[rstest]
    #[case("")]
    #[case("Gi")]
    #[case("4X")]
    #[case("1.2.3")]
    #[case("99999999999Ei")]
    #[case("1e99")]
    fn bad_quantities(#[case] input: &str) {
        assert!(parse_quantity(input).is_err());
    }

    #[test]
    fn yaml_in_ironcore_shape() {
        let text = r#"
apiVersion: compute.ironcore.dev/v1alpha1
kind: MachineClass
metadata:
  name: x3-xlarge
capabilities:
  cpu: 16
  memory: 64Gi
  nvidia.com/gpu: "1"
quantity: 3
---
apiVersion: storage.ironcore.dev/v1alpha1
kind: VolumeClass
metadata:
  name: ssd
capabilities:
  tps: 100Mi
  iops: 1000
---
apiVersion: v1
kind: List
items:
- kind: BucketClass
  metadata: {name: cold}
  capabilities: {tps: 1Mi, iops: 10}
"#;
        let set = ClassSet::from_yaml(text, "test.yaml").unwrap();
        assert_eq!(set.machine.len(), 1);
        let m = &set.machine[0];
        assert_eq!((m.cpu, m.memory_bytes, m.quantity), (16, 64 << 30, 3));
        assert_eq!(m.extra.get("nvidia.com/gpu"), Some(&1));
        assert_eq!(set.volume[0].tps, 100 << 20);
        assert_eq!(set.volume[0].iops, 1000);
        assert_eq!(set.bucket[0].name, "cold");
        assert!(ClassSet::from_yaml("kind: Pod\nmetadata: {name: x}\n", "x").is_err());
        assert!(ClassSet::from_yaml("kind: MachineClass\n", "x").is_err());
        assert!(ClassSet::from_yaml(": : :", "x").is_err());
    }

    #[test]
    fn flags() {
        let m = parse_machine_class_flag("big:cpu=8,memory=32Gi,quantity=2").unwrap();
        assert_eq!(
            (m.name.as_str(), m.cpu, m.memory_bytes, m.quantity),
            ("big", 8, 32 << 30, 2)
        );
        assert!(parse_machine_class_flag("big:cpu=8").is_err());
        assert!(parse_machine_class_flag("nocolon").is_err());
        let v = parse_volume_class_flag("ssd:tps=1Mi,iops=5").unwrap();
        assert_eq!((v.tps, v.iops), (1 << 20, 5));
        assert_eq!(parse_bucket_class_flag("b:iops=3").unwrap().iops, 3);
    }
}
