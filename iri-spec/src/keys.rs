//! Label, annotation, attribute and finalizer keys the IronCore poollets put on IRI and API objects
//! (reference iri.md §3.1). Runtimes store them verbatim; poollets and conformance use them.

/// Prefix of every machinepoollet key.
pub const MACHINEPOOLLET_PREFIX: &str = "machinepoollet.ironcore.dev/";
/// Label on an IRI machine: the UID of the ironcore Machine. This is the lookup key.
pub const MACHINE_UID_LABEL: &str = "machinepoollet.ironcore.dev/machine-uid";
/// Label on an IRI machine: the namespace of the ironcore Machine.
pub const MACHINE_NAMESPACE_LABEL: &str = "machinepoollet.ironcore.dev/machine-namespace";
/// Label on an IRI machine: the name of the ironcore Machine.
pub const MACHINE_NAME_LABEL: &str = "machinepoollet.ironcore.dev/machine-name";
/// Annotation on an IRI machine: decimal `Machine.metadata.generation`.
pub const MACHINE_GENERATION_ANNOTATION: &str = "machinepoollet.ironcore.dev/machine-generation";
/// Annotation on an IRI machine: decimal IRI `metadata.generation` seen when desired state was last pushed.
pub const IRI_MACHINE_GENERATION_ANNOTATION: &str =
    "machinepoollet.ironcore.dev/irimachine-generation";
/// Annotation on an IRI machine: JSON map machine-NIC-name → `{"name", "uid"}`.
pub const NETWORK_INTERFACE_MAPPING_ANNOTATION: &str =
    "machinepoollet.ironcore.dev/networkinterfacemapping";
/// Prefix of machinepoollet downward-API labels and annotations (also used for volumes, NICs, networks).
pub const MACHINE_DOWNWARD_API_PREFIX: &str = "downward-api.machinepoollet.ironcore.dev/";
/// Key inside `rawVolumeLabels`: the storage Volume's UID.
pub const VOLUME_UID_LABEL: &str = "machinepoollet.ironcore.dev/volume-uid";
/// Key inside `rawVolumeLabels`: the storage Volume's namespace.
pub const VOLUME_NAMESPACE_LABEL: &str = "machinepoollet.ironcore.dev/volume-namespace";
/// Key inside `rawVolumeLabels`: the storage Volume's name.
pub const VOLUME_NAME_LABEL: &str = "machinepoollet.ironcore.dev/volume-name";
/// Key inside `rawNICLabels`: the NetworkInterface UID.
pub const NIC_UID_LABEL: &str = "machinepoollet.ironcore.dev/nic-uid";
/// Key inside `rawNICLabels`: the NetworkInterface namespace.
pub const NIC_NAMESPACE_LABEL: &str = "machinepoollet.ironcore.dev/nic-namespace";
/// Key inside `rawNICLabels`: the NetworkInterface name.
pub const NIC_NAME_LABEL: &str = "machinepoollet.ironcore.dev/nic-name";
/// Key inside `rawNetworkLabels`: the Network UID.
pub const NETWORK_UID_LABEL: &str = "machinepoollet.ironcore.dev/network-uid";
/// Key inside `rawNetworkLabels`: the Network namespace.
pub const NETWORK_NAMESPACE_LABEL: &str = "machinepoollet.ironcore.dev/network-namespace";
/// Key inside `rawNetworkLabels`: the Network name.
pub const NETWORK_NAME_LABEL: &str = "machinepoollet.ironcore.dev/network-name";
/// Finalizer the machinepoollet puts on an ironcore Machine.
pub const MACHINE_FINALIZER: &str = "machinepoollet.ironcore.dev/machine";
/// Field owner of the machinepoollet's MachinePool apply.
pub const MACHINEPOOLLET_FIELD_OWNER: &str = "machinepoollet.ironcore.dev/field-owner";

/// `VolumeConnection.attributes` key holding the JSON-encoded volume labels.
pub const RAW_VOLUME_LABELS_ATTRIBUTE: &str = "rawVolumeLabels";
/// `NetworkInterface.attributes` key holding the JSON-encoded NIC labels.
pub const RAW_NIC_LABELS_ATTRIBUTE: &str = "rawNICLabels";
/// `NetworkInterface.attributes` key holding the JSON-encoded network labels.
pub const RAW_NETWORK_LABELS_ATTRIBUTE: &str = "rawNetworkLabels";

/// Prefix of every volumepoollet key.
pub const VOLUMEPOOLLET_PREFIX: &str = "volumepoollet.ironcore.dev/";
/// Label on an IRI volume: the ironcore Volume UID (lookup key).
pub const VOLUMEPOOLLET_VOLUME_UID_LABEL: &str = "volumepoollet.ironcore.dev/volume-uid";
/// Label on an IRI volume: the ironcore Volume namespace.
pub const VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL: &str =
    "volumepoollet.ironcore.dev/volume-namespace";
/// Label on an IRI volume: the ironcore Volume name.
pub const VOLUMEPOOLLET_VOLUME_NAME_LABEL: &str = "volumepoollet.ironcore.dev/volume-name";
/// Label on an IRI volume snapshot: the ironcore VolumeSnapshot UID.
pub const VOLUME_SNAPSHOT_UID_LABEL: &str = "volumepoollet.ironcore.dev/volume-snapshot-uid";
/// Label on an IRI volume snapshot: the ironcore VolumeSnapshot namespace.
pub const VOLUME_SNAPSHOT_NAMESPACE_LABEL: &str =
    "volumepoollet.ironcore.dev/volume-snapshot-namespace";
/// Label on an IRI volume snapshot: the ironcore VolumeSnapshot name.
pub const VOLUME_SNAPSHOT_NAME_LABEL: &str = "volumepoollet.ironcore.dev/volume-snapshot-name";
/// Prefix of volumepoollet downward-API labels.
pub const VOLUME_DOWNWARD_API_PREFIX: &str = "downward-api.volumepoollet.ironcore.dev/";
/// Finalizer the volumepoollet puts on an ironcore Volume.
pub const VOLUME_FINALIZER: &str = "volumepoollet.ironcore.dev/volume";
/// Finalizer the volumepoollet puts on an ironcore VolumeSnapshot.
pub const VOLUME_SNAPSHOT_FINALIZER: &str = "volumepoollet.ironcore.dev/volume-snapshot";
/// Field owner of the volumepoollet's VolumePool and access-Secret applies.
pub const VOLUMEPOOLLET_FIELD_OWNER: &str = "volumepoollet.ironcore.dev/field-owner";

/// Label on an IRI bucket: the ironcore Bucket UID.
pub const BUCKET_UID_LABEL: &str = "bucketpoollet.ironcore.dev/bucket-uid";
/// Label on an IRI bucket: the ironcore Bucket namespace.
pub const BUCKET_NAMESPACE_LABEL: &str = "bucketpoollet.ironcore.dev/bucket-namespace";
/// Label on an IRI bucket: the ironcore Bucket name.
pub const BUCKET_NAME_LABEL: &str = "bucketpoollet.ironcore.dev/bucket-name";
/// Finalizer the bucketpoollet puts on an ironcore Bucket.
pub const BUCKET_FINALIZER: &str = "bucketpoollet.ironcore.dev/bucket";
/// Prefix of bucketpoollet downward-API labels.
pub const BUCKET_DOWNWARD_API_PREFIX: &str = "downward-api.bucketpoollet.ironcore.dev/";

/// Annotation that triggers a reconcile when its value changes.
pub const RECONCILE_REQUESTED_AT_ANNOTATION: &str = "reconcile.common.ironcore.dev/requested-at";
/// Label the `--watch-filter` flag selects on.
pub const WATCH_FILTER_LABEL: &str = "common.ironcore.dev/watch-filter";
/// Annotation marking an object as managed by something else (poollets skip it).
pub const MANAGED_BY_ANNOTATION: &str = "common.ironcore.dev/managed-by";
/// Topology label: region of a pool.
pub const TOPOLOGY_REGION_LABEL: &str = "topology.ironcore.dev/region";
/// Topology label: zone of a pool.
pub const TOPOLOGY_ZONE_LABEL: &str = "topology.ironcore.dev/zone";

/// Capacity key of a machine class in a MachinePool's `capacity`/`allocatable`.
pub fn machine_class_capacity_key(class_name: &str) -> String {
    format!("class/machine.{class_name}")
}

/// Capacity key of a volume class in a VolumePool's `capacity`/`allocatable`.
pub fn volume_class_capacity_key(class_name: &str) -> String {
    format!("class/volume.{class_name}")
}

/// irikit's own annotation on an IRI machine (IronCore has none): the id of the reservation
/// (`irikit.reservation.v1alpha1`) the machine is created against. A runtime that serves
/// reservations lets the create use the capacity that reservation holds, and the reservation
/// becomes `RESERVATION_BOUND` (its hold is replaced by the machine). An unknown, rejected or
/// already bound id is `FailedPrecondition`.
pub const RESERVATION_ID_ANNOTATION: &str = "reservation.irikit.dev/id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_their_prefixes() {
        for key in [
            MACHINE_UID_LABEL,
            MACHINE_NAMESPACE_LABEL,
            MACHINE_NAME_LABEL,
            MACHINE_GENERATION_ANNOTATION,
            IRI_MACHINE_GENERATION_ANNOTATION,
            NETWORK_INTERFACE_MAPPING_ANNOTATION,
            MACHINE_FINALIZER,
        ] {
            assert!(key.starts_with(MACHINEPOOLLET_PREFIX), "{key}");
        }
        for key in [
            VOLUMEPOOLLET_VOLUME_UID_LABEL,
            VOLUME_SNAPSHOT_UID_LABEL,
            VOLUME_FINALIZER,
        ] {
            assert!(key.starts_with(VOLUMEPOOLLET_PREFIX), "{key}");
        }
    }

    #[test]
    fn capacity_keys() {
        assert_eq!(
            machine_class_capacity_key("x3-large"),
            "class/machine.x3-large"
        );
        assert_eq!(volume_class_capacity_key("fast"), "class/volume.fast");
    }
}
