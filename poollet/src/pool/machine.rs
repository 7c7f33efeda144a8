//! The machine flavour of the pool announcer (reference §4.1, §4.3, §4.4): the
//! machinepoollet's settings (heartbeat, lease) and IronCore's machine class mapping.

use std::{collections::BTreeMap, time::Duration};

use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::compute::MachineClass;

use crate::error::ClassMapError;

/// What the pool announcer needs to know.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The MachinePool name.
    pub pool_name: String,
    /// `MachinePool.spec.providerID`.
    pub provider_id: String,
    /// Value of `topology.ironcore.dev/region` (empty = no label).
    pub topology_region: String,
    /// Value of `topology.ironcore.dev/zone` (empty = no label).
    pub topology_zone: String,
    /// Interval between heartbeat Status probes.
    pub heartbeat_interval: Duration,
    /// Timeout of one heartbeat Status probe (and of other runtime RPCs).
    pub status_timeout: Duration,
    /// Resync interval of the pool status even without events.
    pub resync: Duration,
    /// `leaseDurationSeconds` of the pool Lease (`--heartbeat-lease-duration`).
    pub lease_duration: Duration,
}

impl PoolConfig {
    /// A config with IronCore's defaults (heartbeat 10 s, timeout 5 s) and no topology.
    pub fn new(pool_name: impl Into<String>, provider_id: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            provider_id: provider_id.into(),
            topology_region: String::new(),
            topology_zone: String::new(),
            heartbeat_interval: Duration::from_secs(10),
            status_timeout: Duration::from_secs(5),
            resync: Duration::from_secs(60),
            lease_duration: crate::lease::DEFAULT_LEASE_DURATION,
        }
    }

    /// The labels the pool carries (topology).
    pub fn labels(&self) -> BTreeMap<String, String> {
        topology_labels(&self.topology_region, &self.topology_zone)
    }

    /// Checks IronCore's flag rules: interval > 0, lease duration > interval and
    /// 0 < timeout < interval.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.pool_name.is_empty() {
            return Err("the machine pool name must not be empty".into());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("the heartbeat interval must be positive".into());
        }
        if self.lease_duration <= self.heartbeat_interval {
            return Err("the lease duration must be longer than the heartbeat interval".into());
        }
        if self.status_timeout.is_zero() || self.status_timeout >= self.heartbeat_interval {
            return Err(
                "the status timeout must be positive and below the heartbeat interval".into(),
            );
        }
        Ok(())
    }
}

/// The capabilities of an ironcore class as IRI resources (`Quantity::value()`, so cpu in
/// whole cores rounded up and memory in bytes).
pub fn capabilities_of(class: &MachineClass) -> BTreeMap<String, i64> {
    class
        .capabilities
        .iter()
        .map(|(name, quantity)| {
            let value = i64::try_from(quantity.value()).unwrap_or(i64::MAX);
            (name.clone(), value)
        })
        .collect()
}

fn resources_of(class: &machine::MachineClassStatus) -> BTreeMap<String, i64> {
    class
        .machine_class
        .as_ref()
        .and_then(|c| c.capabilities.as_ref())
        .map(|caps| {
            caps.resources
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn name_of(class: &machine::MachineClassStatus) -> &str {
    class.machine_class.as_ref().map_or("", |c| c.name.as_str())
}

/// IronCore's class mapping (§4.3): the runtime class with the same name and equal
/// capabilities, else the unique runtime class with equal capabilities. Empty capabilities
/// never match by capabilities alone.
pub fn map_class<'a>(
    name: &str,
    capabilities: &BTreeMap<String, i64>,
    runtime_classes: &'a [machine::MachineClassStatus],
) -> std::result::Result<&'a machine::MachineClassStatus, ClassMapError> {
    if let Some(same) = runtime_classes
        .iter()
        .find(|c| name_of(c) == name && resources_of(c) == *capabilities)
    {
        return Ok(same);
    }
    if capabilities.is_empty() {
        return Err(ClassMapError::NoMatch);
    }
    let matches: Vec<&machine::MachineClassStatus> = runtime_classes
        .iter()
        .filter(|c| resources_of(c) == *capabilities)
        .collect();
    match matches.as_slice() {
        [] => Err(ClassMapError::NoMatch),
        [one] => Ok(one),
        many => Err(ClassMapError::Ambiguous(
            many.iter().map(|c| name_of(c).to_string()).collect(),
        )),
    }
}

/// The `topology.ironcore.dev/{region,zone}` labels of a pool (empty values are left out).
pub fn topology_labels(region: &str, zone: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if !region.is_empty() {
        labels.insert(keys::TOPOLOGY_REGION_LABEL.to_string(), region.to_string());
    }
    if !zone.is_empty() {
        labels.insert(keys::TOPOLOGY_ZONE_LABEL.to_string(), zone.to_string());
    }
    labels
}
