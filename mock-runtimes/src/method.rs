//! The RPCs of the three IRI services as one enum, used by the call log, expectations and faults.

use std::{fmt, str::FromStr};

macro_rules! methods {
    ($($variant:ident => $service:literal, $rpc:literal;)*) => {
        /// One RPC of the machine, volume or bucket runtime, or of irikit's reservation
        /// extension.
        ///
        /// RPCs that exist in several services (`Version`, `ListEvents`, `Status`) get the service as
        /// a prefix (`MachineVersion`, `VolumeListEvents`, ...).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $(
                #[doc = concat!("`/", $service, "/", $rpc, "`")]
                $variant,
            )*
        }

        impl Method {
            /// Every method, in service declaration order (machine, volume, bucket).
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// The fully qualified service name, e.g. `machine.v1alpha1.MachineRuntime`.
            pub fn service(self) -> &'static str {
                match self { $(Method::$variant => $service,)* }
            }

            /// The RPC name as in the proto, e.g. `CreateMachine`.
            pub fn rpc(self) -> &'static str {
                match self { $(Method::$variant => $rpc,)* }
            }

            /// The gRPC path, e.g. `/machine.v1alpha1.MachineRuntime/CreateMachine`.
            pub fn path(self) -> &'static str {
                match self { $(Method::$variant => concat!("/", $service, "/", $rpc),)* }
            }

            /// The variant name, e.g. `MachineVersion`.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => stringify!($variant),)* }
            }
        }
    };
}

methods! {
    MachineVersion => "machine.v1alpha1.MachineRuntime", "Version";
    MachineListEvents => "machine.v1alpha1.MachineRuntime", "ListEvents";
    ListMachines => "machine.v1alpha1.MachineRuntime", "ListMachines";
    CreateMachine => "machine.v1alpha1.MachineRuntime", "CreateMachine";
    DeleteMachine => "machine.v1alpha1.MachineRuntime", "DeleteMachine";
    UpdateMachineAnnotations => "machine.v1alpha1.MachineRuntime", "UpdateMachineAnnotations";
    UpdateMachinePower => "machine.v1alpha1.MachineRuntime", "UpdateMachinePower";
    AttachVolume => "machine.v1alpha1.MachineRuntime", "AttachVolume";
    DetachVolume => "machine.v1alpha1.MachineRuntime", "DetachVolume";
    UpdateVolume => "machine.v1alpha1.MachineRuntime", "UpdateVolume";
    AttachNetworkInterface => "machine.v1alpha1.MachineRuntime", "AttachNetworkInterface";
    DetachNetworkInterface => "machine.v1alpha1.MachineRuntime", "DetachNetworkInterface";
    MachineStatus => "machine.v1alpha1.MachineRuntime", "Status";
    Exec => "machine.v1alpha1.MachineRuntime", "Exec";
    VolumeVersion => "volume.v1alpha1.VolumeRuntime", "Version";
    VolumeListEvents => "volume.v1alpha1.VolumeRuntime", "ListEvents";
    ListVolumes => "volume.v1alpha1.VolumeRuntime", "ListVolumes";
    CreateVolume => "volume.v1alpha1.VolumeRuntime", "CreateVolume";
    ExpandVolume => "volume.v1alpha1.VolumeRuntime", "ExpandVolume";
    DeleteVolume => "volume.v1alpha1.VolumeRuntime", "DeleteVolume";
    CreateVolumeSnapshot => "volume.v1alpha1.VolumeRuntime", "CreateVolumeSnapshot";
    DeleteVolumeSnapshot => "volume.v1alpha1.VolumeRuntime", "DeleteVolumeSnapshot";
    ListVolumeSnapshots => "volume.v1alpha1.VolumeRuntime", "ListVolumeSnapshots";
    VolumeStatus => "volume.v1alpha1.VolumeRuntime", "Status";
    BucketVersion => "bucket.v1alpha1.BucketRuntime", "Version";
    BucketListEvents => "bucket.v1alpha1.BucketRuntime", "ListEvents";
    ListBuckets => "bucket.v1alpha1.BucketRuntime", "ListBuckets";
    CreateBucket => "bucket.v1alpha1.BucketRuntime", "CreateBucket";
    DeleteBucket => "bucket.v1alpha1.BucketRuntime", "DeleteBucket";
    ListBucketClasses => "bucket.v1alpha1.BucketRuntime", "ListBucketClasses";
    // irikit's own extension (served on the machine runtime's socket)
    CreateReservation => "irikit.reservation.v1alpha1.ReservationRuntime", "CreateReservation";
    ListReservations => "irikit.reservation.v1alpha1.ReservationRuntime", "ListReservations";
    DeleteReservation => "irikit.reservation.v1alpha1.ReservationRuntime", "DeleteReservation";
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// The string is not a known method name or gRPC path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IRI method {0:?}: use a variant name such as CreateMachine or a path such as /machine.v1alpha1.MachineRuntime/CreateMachine"
)]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    /// Parses a variant name (`CreateMachine`, `MachineVersion`) or a gRPC path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s || m.path() == s)
            .ok_or_else(|| UnknownMethod(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_round_trip() {
        assert_eq!(Method::ALL.len(), 33);
        for &m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.path().parse::<Method>().unwrap(), m);
            assert!(m.path().starts_with(&format!("/{}/", m.service())));
        }
        assert!("Nope".parse::<Method>().is_err());
    }
}
