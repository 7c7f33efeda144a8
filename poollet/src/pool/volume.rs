//! The volume flavour of the pool announcer (reference §4.2, §4.3): the volumepoollet's
//! settings and IronCore's volume class mapping by `(tps, iops)`.

use std::time::Duration;

use iri_spec::volume::v1alpha1 as volume;
use irikit_api::storage::{Volume, VolumeClass};

use crate::error::ClassMapError;

/// What the volume pool announcer needs to know.
#[derive(Debug, Clone)]
pub struct VolumePoolConfig {
    /// The VolumePool name.
    pub pool_name: String,
    /// `VolumePool.spec.providerID`.
    pub provider_id: String,
    /// Value of `topology.ironcore.dev/region` (empty = no label).
    pub topology_region: String,
    /// Value of `topology.ironcore.dev/zone` (empty = no label).
    pub topology_zone: String,
    /// Interval between runtime `Status` probes (class and capacity refresh).
    pub status_interval: Duration,
    /// Timeout of one `Status` probe.
    pub status_timeout: Duration,
    /// Resync interval of the pool status even without events.
    pub resync: Duration,
}

impl VolumePoolConfig {
    /// A config with a 10 s status interval, a 5 s timeout and no topology.
    pub fn new(pool_name: impl Into<String>, provider_id: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            provider_id: provider_id.into(),
            topology_region: String::new(),
            topology_zone: String::new(),
            status_interval: Duration::from_secs(10),
            status_timeout: Duration::from_secs(5),
            resync: Duration::from_secs(60),
        }
    }

    /// Checks the settings: a pool name and provider id, interval > 0, 0 < timeout < interval.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.pool_name.is_empty() {
            return Err("the volume pool name must not be empty".into());
        }
        if self.provider_id.is_empty() {
            return Err("the provider id must not be empty".into());
        }
        if self.status_interval.is_zero() {
            return Err("the status interval must be positive".into());
        }
        if self.status_timeout.is_zero() || self.status_timeout >= self.status_interval {
            return Err("the status timeout must be positive and below the status interval".into());
        }
        Ok(())
    }
}

/// The `(tps, iops)` key of an ironcore VolumeClass (`Quantity::value()`; a missing capability
/// is 0).
pub fn volume_class_key(class: &VolumeClass) -> (i64, i64) {
    let get = |name: &str| {
        class
            .capabilities
            .get(name)
            .map_or(0, |q| i64::try_from(q.value()).unwrap_or(i64::MAX))
    };
    (get("tps"), get("iops"))
}

fn runtime_key(class: &volume::VolumeClassStatus) -> (i64, i64) {
    class
        .volume_class
        .as_ref()
        .and_then(|c| c.capabilities)
        .map_or((0, 0), |caps| (caps.tps, caps.iops))
}

fn runtime_name(class: &volume::VolumeClassStatus) -> &str {
    class.volume_class.as_ref().map_or("", |c| c.name.as_str())
}

/// IronCore's volume class mapping (§4.3): the runtime class with the same name and the same
/// `(tps, iops)`, else the unique runtime class with the same `(tps, iops)` (exact compare).
pub fn map_volume_class<'a>(
    name: &str,
    key: (i64, i64),
    runtime_classes: &'a [volume::VolumeClassStatus],
) -> std::result::Result<&'a volume::VolumeClassStatus, ClassMapError> {
    if let Some(same) = runtime_classes
        .iter()
        .find(|c| runtime_name(c) == name && runtime_key(c) == key)
    {
        return Ok(same);
    }
    let matches: Vec<&volume::VolumeClassStatus> = runtime_classes
        .iter()
        .filter(|c| runtime_key(c) == key)
        .collect();
    match matches.as_slice() {
        [] => Err(ClassMapError::NoMatch),
        [one] => Ok(one),
        many => Err(ClassMapError::Ambiguous(
            many.iter().map(|c| runtime_name(c).to_string()).collect(),
        )),
    }
}

/// The requested bytes of a Volume (`spec.resources.storage`, 0 when unset).
pub fn requested_bytes(v: &Volume) -> i64 {
    v.spec
        .resources
        .get("storage")
        .map_or(0, |q| i64::try_from(q.value().max(0)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use irikit_api::{
        Resource, ResourceList,
        meta::{LocalObjectReference, ObjectMeta},
    };

    use super::*;
    use crate::flavor::{Flavor, Usage, VolumeFlavor};

    /// What the volumes use of pool `p` (they are all bound there).
    fn announce_volumes(
        runtime_classes: &[volume::VolumeClassStatus],
        classes: &[VolumeClass],
        volumes: &[Volume],
    ) -> super::super::Announcement {
        let usages: Vec<Usage> = volumes
            .iter()
            .filter_map(|v| VolumeFlavor::usage(&v.clone().into_object(), "p"))
            .collect();
        super::super::announce::<VolumeFlavor>(runtime_classes, classes, &usages)
    }

    fn runtime(name: &str, tps: i64, iops: i64, quantity: i64) -> volume::VolumeClassStatus {
        volume::VolumeClassStatus {
            volume_class: Some(volume::VolumeClass {
                name: name.into(),
                capabilities: Some(volume::VolumeClassCapabilities { tps, iops }),
            }),
            quantity,
        }
    }

    fn class(name: &str, tps: &str, iops: &str) -> VolumeClass {
        VolumeClass {
            metadata: ObjectMeta::named(name),
            capabilities: [
                ("tps".to_string(), tps.parse().unwrap_or_default()),
                ("iops".to_string(), iops.parse().unwrap_or_default()),
            ]
            .into(),
            ..VolumeClass::default()
        }
    }

    fn volume(uid: &str, class: &str, storage: &str) -> Volume {
        let mut v = Volume::default();
        v.metadata.uid = uid.into();
        v.spec.volume_pool_ref = Some(LocalObjectReference::new("p"));
        v.spec.volume_class_ref = Some(LocalObjectReference::new(class));
        v.spec
            .resources
            .insert("storage".into(), storage.parse().unwrap_or_default());
        v
    }

    #[test]
    fn mapping_prefers_the_same_name_then_a_unique_key() {
        let classes = [
            runtime("fast", 100, 1000, 1),
            runtime("fast-copy", 100, 1000, 2),
            runtime("slow", 10, 100, 3),
        ];
        let got = |name, key| map_volume_class(name, key, &classes).map(|c| c.quantity);
        assert_eq!(got("fast-copy", (100, 1000)), Ok(2));
        assert_eq!(got("other", (10, 100)), Ok(3));
        assert_eq!(
            got("other", (100, 1000)),
            Err(ClassMapError::Ambiguous(vec![
                "fast".into(),
                "fast-copy".into()
            ]))
        );
        assert_eq!(got("fast", (100, 999)), Err(ClassMapError::NoMatch));
    }

    #[test]
    fn allocatable_subtracts_requested_bytes_per_class_once_per_uid() {
        let runtime_classes = [runtime("fast", 100, 1000, 10 << 30)];
        let classes = [class("fast", "100", "1k"), class("none", "1", "1")];
        let volumes = [
            volume("a", "fast", "3Gi"),
            volume("a", "fast", "3Gi"),
            volume("b", "fast", "1Gi"),
            volume("c", "none", "1Gi"),
        ];
        let out = announce_volumes(&runtime_classes, &classes, &volumes);
        assert_eq!(out.available_classes, [LocalObjectReference::new("fast")]);
        let shown = |list: &ResourceList| {
            list.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(&out.capacity), ["class/volume.fast=10Gi"]);
        assert_eq!(shown(&out.allocatable), ["class/volume.fast=6Gi"]);
        let full = announce_volumes(&runtime_classes, &classes, &[volume("d", "fast", "20Gi")]);
        assert_eq!(shown(&full.allocatable), ["class/volume.fast=0"]);
    }
}
