//! `storage.ironcore.dev/v1alpha1`: Volume, VolumePool, VolumeClass and VolumeSnapshot
//! (reference §6.2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{Condition, LocalObjectReference, ObjectMeta, Toleration};
use crate::quantity::{Quantity, ResourceList};

/// The API group version of this module.
pub const API_VERSION: &str = "storage.ironcore.dev/v1alpha1";
/// Prefix of class capacity keys in a VolumePool's capacity/allocatable.
pub const CLASS_RESOURCE_PREFIX: &str = "class/volume.";

/// The ResourceList key for a volume class's bytes (`class/volume.<name>`).
pub fn class_resource(class: &str) -> String {
    format!("{CLASS_RESOURCE_PREFIX}{class}")
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A block volume (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// `storage.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `Volume`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: VolumeSpec,
    /// Observed state.
    #[serde(default)]
    pub status: VolumeStatus,
}

/// `VolumeSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Class; empty means provisioned externally (immutable once set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_class_ref: Option<LocalObjectReference>,
    /// Equality selector on pool labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_pool_selector: BTreeMap<String, String>,
    /// Pool the volume is bound to (set once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_pool_ref: Option<LocalObjectReference>,
    /// Claimer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ClaimRef>,
    /// Requested resources (`storage`).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub resources: ResourceList,
    /// Whether the volume may not be claimed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unclaimable: bool,
    /// Tolerations of pool taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Encryption settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<VolumeEncryption>,
    /// Data source (at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<VolumeDataSource>,
}

/// A claim reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRef {
    /// Claimer name.
    pub name: String,
    /// Claimer uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// Volume encryption.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeEncryption {
    /// Secret holding the key.
    pub secret_ref: LocalObjectReference,
}

/// Volume data source: a snapshot or an OS image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDataSource {
    /// Snapshot to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_ref: Option<LocalObjectReference>,
    /// OS image to populate from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<OsImage>,
}

/// OS image source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsImage {
    /// Image reference.
    pub image: String,
    /// Architecture.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
}

/// `VolumeStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// `<runtime>://<id>`.
    #[serde(rename = "volumeID", default, skip_serializing_if = "String::is_empty")]
    pub volume_id: String,
    /// `Pending`, `Available` or `Error`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Transition time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state_transition_time: Option<String>,
    /// Access information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<VolumeAccess>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Effective resources.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub resources: ResourceList,
}

/// Volume access information.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeAccess {
    /// Secret with access data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Handle.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handle: String,
    /// Attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_attributes: BTreeMap<String, String>,
}

/// A pool of volume capacity (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePool {
    /// `storage.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `VolumePool`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: VolumePoolSpec,
    /// Observed state.
    #[serde(default)]
    pub status: VolumePoolStatus,
}

/// `VolumePoolSpec`: the spec every pool kind shares.
pub type VolumePoolSpec = crate::meta::PoolSpec;

/// `VolumePoolStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePoolStatus {
    /// `Available`, `Pending` or `Unavailable`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Classes the pool can provide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_volume_classes: Vec<LocalObjectReference>,
    /// Total bytes per class (`class/volume.<name>`).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub capacity: ResourceList,
    /// Capacity minus bound volumes, as the poollet sees it.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub allocatable: ResourceList,
}

/// A volume class (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClass {
    /// `storage.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `VolumeClass`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Capabilities (`tps`, `iops`).
    #[serde(default)]
    pub capabilities: ResourceList,
    /// `Static` or `ExpandOnly`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resize_policy: String,
}

/// A volume snapshot (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshot {
    /// `storage.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `VolumeSnapshot`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: VolumeSnapshotSpec,
    /// Observed state.
    #[serde(default)]
    pub status: VolumeSnapshotStatus,
}

/// `VolumeSnapshotSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// Source volume (required, immutable).
    #[serde(default)]
    pub volume_ref: LocalObjectReference,
}

/// `VolumeSnapshotStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// `<runtime>://<id>`.
    #[serde(
        rename = "snapshotID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub snapshot_id: String,
    /// `Pending`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Transition time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state_transition_time: Option<String>,
    /// Snapshot size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
}
