//! `compute.ironcore.dev/v1alpha1`: Machine, MachinePool and MachineClass (reference §6.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{Condition, LocalObjectReference, ObjectMeta, SecretKeySelector, Toleration};
use crate::quantity::{Quantity, ResourceList};

/// The API group version of this module.
pub const API_VERSION: &str = "compute.ironcore.dev/v1alpha1";
/// Prefix of class capacity keys in a MachinePool's capacity/allocatable.
pub const CLASS_RESOURCE_PREFIX: &str = "class/machine.";

/// The ResourceList key for a machine class's count (`class/machine.<name>`).
pub fn class_resource(class: &str) -> String {
    format!("{CLASS_RESOURCE_PREFIX}{class}")
}

/// A virtual machine request (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// `compute.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `Machine`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: MachineSpec,
    /// Observed state.
    #[serde(default)]
    pub status: MachineStatus,
}

/// Power state of a Machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Power {
    /// Running (the default).
    #[default]
    On,
    /// Stopped.
    Off,
}

/// `MachineSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    /// The class (required, immutable).
    #[serde(default)]
    pub machine_class_ref: LocalObjectReference,
    /// Equality selector on pool labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_pool_selector: BTreeMap<String, String>,
    /// The pool the machine is bound to (set once, by the scheduler or the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_pool_ref: Option<LocalObjectReference>,
    /// Desired power state.
    #[serde(default)]
    pub power: Power,
    /// Network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<NetworkInterface>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Ignition secret (key defaults to `ignition.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition_ref: Option<SecretKeySelector>,
    /// EFI variables (not propagated over IRI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub efi_vars: Vec<EfiVar>,
    /// Tolerations of pool taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Guest configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_config: Option<GuestConfig>,
}

/// Guest configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// Hostname (a DNS label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
}

/// An EFI variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EfiVar {
    /// Variable name.
    pub name: String,
    /// Vendor UUID.
    pub uuid: String,
    /// Base64 value.
    pub value: String,
}

/// A machine network interface: a name and exactly one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// Name within the machine.
    pub name: String,
    /// Reference to an existing NetworkInterface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_ref: Option<LocalObjectReference>,
    /// An ephemeral NetworkInterface named `<machine>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralNetworkInterface>,
}

/// Ephemeral network interface source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralNetworkInterface {
    /// Template of the NetworkInterface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_template: Option<NetworkInterfaceTemplate>,
}

/// `NetworkInterfaceTemplateSpec`: the spec of an ephemeral NetworkInterface (its template
/// metadata is not used by irikit and is ignored when read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceTemplate {
    /// The NetworkInterface spec.
    #[serde(default)]
    pub spec: NetworkInterfaceSpec,
}

/// The part of IronCore's `networking.ironcore.dev` `NetworkInterfaceSpec` that reaches the
/// IRI: the network, the IPs and free-form attributes. Other fields (prefixes, virtualIP, ...)
/// are ignored when read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceSpec {
    /// The Network the interface is in.
    #[serde(default)]
    pub network_ref: LocalObjectReference,
    /// IP families (`IPv4`, `IPv6`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    /// The IPs: each a literal value or an ephemeral prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpSource>,
    /// Free-form attributes handed to the runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// `IPSource`: exactly one of a literal IP or an ephemeral Prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpSource {
    /// A literal IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// An ephemeral Prefix (IPAM) source, kept as free-form data: irikit has no Prefix objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<serde_json::Value>,
}

/// A machine volume: a name, an optional device and exactly one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name within the machine.
    pub name: String,
    /// Device name such as `oda` (filled by admission when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Reference to a storage Volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_ref: Option<LocalObjectReference>,
    /// Deprecated empty disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_disk: Option<EmptyDisk>,
    /// Local disk, optionally from an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_disk: Option<LocalDisk>,
    /// An ephemeral storage Volume named `<machine>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralVolume>,
}

/// Deprecated empty disk source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDisk {
    /// Size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// Local disk source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalDisk {
    /// Size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// Image (cannot be removed or changed once set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}

/// Ephemeral volume source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralVolume {
    /// Template of the storage Volume (kept as free-form data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_template: Option<serde_json::Value>,
}

/// `MachineStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// `<runtime>://<id>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    /// Generation the status reflects.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_generation: i64,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Running`, `Shutdown`, `Terminated` or `Terminating`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// NIC states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<AttachmentStatus>,
    /// Volume states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<AttachmentStatus>,
}

/// Status of an attached NIC or volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentStatus {
    /// Name in the spec.
    pub name: String,
    /// Runtime handle.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handle: String,
    /// `Pending` or `Attached`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Transition time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state_transition_time: Option<String>,
    /// Referenced NetworkInterface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_ref: Option<LocalObjectReference>,
    /// Referenced Volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_ref: Option<LocalObjectReference>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// A pool of machine capacity announced by a machinepoollet (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePool {
    /// `compute.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `MachinePool`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: MachinePoolSpec,
    /// Observed state.
    #[serde(default)]
    pub status: MachinePoolStatus,
}

/// `MachinePoolSpec`: the spec every pool kind shares.
pub type MachinePoolSpec = crate::meta::PoolSpec;

/// `MachinePoolStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePoolStatus {
    /// `Ready`, `Pending`, `Error` or `Offline`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Classes the pool can run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_machine_classes: Vec<LocalObjectReference>,
    /// Addresses of the poollet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<PoolAddress>,
    /// Daemon endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_endpoints: Option<serde_json::Value>,
    /// Total capacity (`class/machine.<name>`).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub capacity: ResourceList,
    /// Capacity minus bound machines, as the poollet sees it.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub allocatable: ResourceList,
}

/// A pool address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAddress {
    /// `Hostname`, `InternalIP`, `ExternalIP`, `InternalDNS` or `ExternalDNS`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub address: String,
}

/// A machine class (cluster-scoped, no spec/status).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineClass {
    /// `compute.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `MachineClass`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Capabilities (`cpu`, `memory`, ...).
    #[serde(default)]
    pub capabilities: ResourceList,
}
