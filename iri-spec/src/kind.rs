//! The IRI object kinds as types: what the mock, the conformance cases, the poollets and irictl
//! need to know about a Machine, Volume, VolumeSnapshot or Bucket, written once.
//!
//! [`IriKind`] is to the IRI what `scheduler::flavor::Flavor` is to the api kinds: code that
//! stores, lists, filters, cleans up or prints "an IRI object" is generic over it instead of
//! dispatching on strings. [`Attachment`] does the same for what a machine carries: its volumes
//! and its network interfaces, each a spec entry named in `MachineSpec` and a status entry with a
//! handle and a state in `MachineStatus`.

use crate::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, meta::v1alpha1::ObjectMetadata,
    volume::v1alpha1 as volume,
};

/// The IRI service an object kind belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// `machine.v1alpha1.MachineRuntime`.
    Machine,
    /// `volume.v1alpha1.VolumeRuntime`.
    Volume,
    /// `bucket.v1alpha1.BucketRuntime`.
    Bucket,
}

impl Service {
    /// The service's name in logs and reports: `machine`, `volume`, `bucket`.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Machine => "machine",
            Service::Volume => "volume",
            Service::Bucket => "bucket",
        }
    }
}

/// One kind of IRI object: a message with `metadata`, `spec` and `status`, where the status
/// carries a state enum.
pub trait IriKind: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static {
    /// The `spec` message.
    type Spec: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static;
    /// The `status` message.
    type Status: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static;

    /// The kind's name in logs, reports and irictl: `machine`, `volume`, `volume snapshot`,
    /// `bucket`.
    const NAME: &'static str;
    /// The service whose RPCs create, list and delete it.
    const SERVICE: Service;
    /// The state a fresh object starts in (`*_PENDING`, always 0).
    const PENDING: i32 = 0;

    /// The object's metadata, if set.
    fn metadata(&self) -> Option<&ObjectMetadata>;
    /// The object's metadata, to fill in.
    fn metadata_mut(&mut self) -> &mut Option<ObjectMetadata>;
    /// The object's spec, if set.
    fn spec(&self) -> Option<&Self::Spec>;
    /// The object's spec, to fill in.
    fn spec_mut(&mut self) -> &mut Option<Self::Spec>;
    /// The object's status, if set.
    fn status(&self) -> Option<&Self::Status>;
    /// The object's status, to fill in.
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
    /// The raw state enum of a status.
    fn status_state(status: &Self::Status) -> i32;
    /// The proto name of a state (`MACHINE_RUNNING`), or `None` for a value the enum does not
    /// know.
    fn state_name(state: i32) -> Option<&'static str>;

    /// The runtime-assigned id, or `""` without metadata.
    fn id(&self) -> &str {
        self.metadata().map_or("", |m| m.id.as_str())
    }
    /// The state, `None` without a status.
    fn state(&self) -> Option<i32> {
        self.status().map(Self::status_state)
    }
    /// Whether the runtime marked it deleting (`metadata.deleted_at != 0`).
    fn is_deleting(&self) -> bool {
        self.metadata().is_some_and(|m| m.deleted_at != 0)
    }
    /// A label, if set.
    fn label(&self, key: &str) -> Option<&str> {
        self.metadata()
            .and_then(|m| m.labels.get(key))
            .map(String::as_str)
    }
    /// An annotation, if set.
    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata()
            .and_then(|m| m.annotations.get(key))
            .map(String::as_str)
    }
}

macro_rules! iri_kind {
    ($ty:ty, $spec:ty, $status:ty, $state:ty, $name:literal, $service:expr) => {
        impl IriKind for $ty {
            type Spec = $spec;
            type Status = $status;
            const NAME: &'static str = $name;
            const SERVICE: Service = $service;

            fn metadata(&self) -> Option<&ObjectMetadata> {
                self.metadata.as_ref()
            }
            fn metadata_mut(&mut self) -> &mut Option<ObjectMetadata> {
                &mut self.metadata
            }
            fn spec(&self) -> Option<&Self::Spec> {
                self.spec.as_ref()
            }
            fn spec_mut(&mut self) -> &mut Option<Self::Spec> {
                &mut self.spec
            }
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> &mut Option<Self::Status> {
                &mut self.status
            }
            fn status_state(status: &Self::Status) -> i32 {
                status.state
            }
            fn state_name(state: i32) -> Option<&'static str> {
                <$state>::try_from(state).ok().map(|s| s.as_str_name())
            }
        }
    };
}

iri_kind!(
    machine::Machine,
    machine::MachineSpec,
    machine::MachineStatus,
    machine::MachineState,
    "machine",
    Service::Machine
);
iri_kind!(
    volume::Volume,
    volume::VolumeSpec,
    volume::VolumeStatus,
    volume::VolumeState,
    "volume",
    Service::Volume
);
iri_kind!(
    volume::VolumeSnapshot,
    volume::VolumeSnapshotSpec,
    volume::VolumeSnapshotStatus,
    volume::VolumeSnapshotState,
    "volume snapshot",
    Service::Volume
);
iri_kind!(
    bucket::Bucket,
    bucket::BucketSpec,
    bucket::BucketStatus,
    bucket::BucketState,
    "bucket",
    Service::Bucket
);

/// Something a machine carries: a volume or a network interface. Each has a spec entry in
/// `MachineSpec` and a status entry in `MachineStatus`, matched by name; the status entry has
/// the runtime's handle and a `*_PENDING | *_ATTACHED` state.
pub trait Attachment: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static {
    /// The status entry.
    type Status: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static;
    /// `volume` or `network interface`.
    const NAME: &'static str;
    /// The state of an attached entry.
    const ATTACHED: i32;

    /// The spec entries of a machine spec.
    fn specs(spec: &machine::MachineSpec) -> &[Self];
    /// The spec entries of a machine spec, to change.
    fn specs_mut(spec: &mut machine::MachineSpec) -> &mut Vec<Self>;
    /// The status entries of a machine status.
    fn statuses(status: &machine::MachineStatus) -> &[Self::Status];
    /// The status entries of a machine status, to change.
    fn statuses_mut(status: &mut machine::MachineStatus) -> &mut Vec<Self::Status>;
    /// A status entry.
    fn new_status(name: String, handle: String, state: i32) -> Self::Status;
    /// The entry's name, unique per machine.
    fn name(&self) -> &str;
    /// A status entry's name.
    fn status_name(status: &Self::Status) -> &str;
    /// A status entry's handle (empty until the runtime has one).
    fn status_handle(status: &Self::Status) -> &str;
    /// A status entry's raw state.
    fn status_state(status: &Self::Status) -> i32;

    /// The status entry of `name` on a machine, if the runtime reports one.
    fn status_of<'m>(m: &'m machine::Machine, name: &str) -> Option<&'m Self::Status> {
        m.status.as_ref().and_then(|s| {
            Self::statuses(s)
                .iter()
                .find(|e| Self::status_name(e) == name)
        })
    }
    /// Whether `name` is attached on a machine.
    fn is_attached(m: &machine::Machine, name: &str) -> bool {
        Self::status_of(m, name).is_some_and(|e| Self::status_state(e) == Self::ATTACHED)
    }
}

/// `impl Attachment` for an attachment type whose spec and status entries both live in the
/// machine's `$field` lists and carry `name` (and, in the status, `handle` and `state`).
macro_rules! attachment {
    ($ty:ty, $status:ident, $name:literal, $attached:expr, $field:ident) => {
        impl Attachment for $ty {
            type Status = machine::$status;
            const NAME: &'static str = $name;
            const ATTACHED: i32 = $attached as i32;

            fn specs(spec: &machine::MachineSpec) -> &[Self] {
                &spec.$field
            }
            fn specs_mut(spec: &mut machine::MachineSpec) -> &mut Vec<Self> {
                &mut spec.$field
            }
            fn statuses(status: &machine::MachineStatus) -> &[Self::Status] {
                &status.$field
            }
            fn statuses_mut(status: &mut machine::MachineStatus) -> &mut Vec<Self::Status> {
                &mut status.$field
            }
            fn new_status(name: String, handle: String, state: i32) -> Self::Status {
                machine::$status {
                    name,
                    handle,
                    state,
                }
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn status_name(status: &Self::Status) -> &str {
                &status.name
            }
            fn status_handle(status: &Self::Status) -> &str {
                &status.handle
            }
            fn status_state(status: &Self::Status) -> i32 {
                status.state
            }
        }
    };
}

attachment!(
    machine::Volume,
    VolumeStatus,
    "volume",
    machine::VolumeState::VolumeAttached,
    volumes
);
attachment!(
    machine::NetworkInterface,
    NetworkInterfaceStatus,
    "network interface",
    machine::NetworkInterfaceState::NetworkInterfaceAttached,
    network_interfaces
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_their_own_fields() {
        let mut m = machine::Machine::default();
        assert_eq!(m.id(), "");
        assert_eq!(m.state(), None);
        m.metadata_mut().get_or_insert_default().id = "m1".into();
        m.status_mut().get_or_insert_default().state = machine::MachineState::MachineRunning as i32;
        assert_eq!(m.id(), "m1");
        assert_eq!(
            <machine::Machine as IriKind>::state_name(m.state().unwrap()),
            Some("MACHINE_RUNNING")
        );
        assert_eq!(
            <volume::VolumeSnapshot as IriKind>::state_name(2),
            Some("VOLUME_SNAPSHOT_FAILED")
        );
        assert_eq!(<bucket::Bucket as IriKind>::state_name(99), None);
        assert!(!m.is_deleting());
        m.metadata_mut().as_mut().unwrap().deleted_at = 1;
        assert!(m.is_deleting());
        assert_eq!(
            <volume::VolumeSnapshot as IriKind>::SERVICE,
            Service::Volume
        );
    }

    #[test]
    fn attachments_find_their_status_by_name() {
        let mut m = machine::Machine::default();
        let status = m.status_mut().get_or_insert_default();
        status.volumes.push(machine::VolumeStatus {
            name: "root".into(),
            handle: "h".into(),
            state: machine::VolumeState::VolumeAttached as i32,
        });
        status
            .network_interfaces
            .push(machine::NetworkInterfaceStatus {
                name: "eth0".into(),
                handle: String::new(),
                state: machine::NetworkInterfaceState::NetworkInterfacePending as i32,
            });
        assert!(machine::Volume::is_attached(&m, "root"));
        assert!(!machine::Volume::is_attached(&m, "eth0"));
        assert!(!machine::NetworkInterface::is_attached(&m, "eth0"));
        assert_eq!(
            machine::NetworkInterface::status_of(&m, "eth0").map(|s| s.handle.as_str()),
            Some("")
        );
    }
}
