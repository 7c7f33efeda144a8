//! Mutants: named, deliberate violations of the IRI runtime contract, switchable per mock instance.
//!
//! The conformance runner's self-test turns each mutant on in turn and checks that at least one
//! conformance case fails, which proves that the suite catches that violation. Each mutant has a
//! stable kebab-case name (used by `--mutant NAME` of the binary) and a one-line description.

use std::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
};

macro_rules! mutants {
    ($($variant:ident => $name:literal, $desc:literal;)*) => {
        /// A named, deliberate contract violation (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Mutant {
            $(
                #[doc = $desc]
                $variant,
            )*
        }

        impl Mutant {
            /// Every mutant, in declaration order.
            pub const ALL: &'static [Mutant] = &[$(Mutant::$variant),*];

            /// The stable kebab-case name, e.g. `delete-unknown-ok`.
            pub fn name(self) -> &'static str {
                match self { $(Mutant::$variant => $name,)* }
            }

            /// What the mutant breaks, in one sentence.
            pub fn description(self) -> &'static str {
                match self { $(Mutant::$variant => $desc,)* }
            }
        }
    };
}

mutants! {
    // --- machine: errors and validation
    DeleteUnknownOk => "delete-unknown-ok", "DeleteMachine of an unknown id returns OK instead of NotFound";
    DeleteTwiceNotFound => "delete-twice-notfound", "a repeated DeleteMachine while the machine is terminating returns NotFound instead of OK";
    AnnotationsUnknownOk => "annotations-unknown-ok", "UpdateMachineAnnotations of an unknown machine returns OK instead of NotFound";
    PowerUnknownOk => "power-unknown-ok", "UpdateMachinePower of an unknown machine returns OK instead of NotFound";
    AttachUnknownMachineOk => "attach-unknown-machine-ok", "AttachVolume/AttachNetworkInterface on an unknown machine return OK instead of NotFound";
    DetachUnknownOk => "detach-unknown-ok", "DetachVolume of an unknown volume name returns OK instead of NotFound";
    DetachNicUnknownOk => "detach-nic-unknown-ok", "DetachNetworkInterface of an unknown NIC name returns OK instead of NotFound";
    UpdateVolumeUnknownOk => "update-volume-unknown-ok", "UpdateVolume of an unknown volume name returns OK (and changes nothing) instead of NotFound";
    AttachDuplicateOk => "attach-duplicate-ok", "AttachVolume of an already attached name returns OK and appends a duplicate instead of AlreadyExists";
    AttachNicDuplicateOk => "attach-nic-duplicate-ok", "AttachNetworkInterface of an already attached name returns OK and appends a duplicate instead of AlreadyExists";
    ExecUnknownOk => "exec-unknown-ok", "Exec on an unknown machine returns a URL instead of NotFound";
    ConsoleUrlNotServed => "console-url-not-served", "Exec answers a console URL that nothing serves";
    ConsoleNoEcho => "console-no-echo", "the Exec console drops what is written to it instead of echoing it";
    ConsoleSecondAllowed => "console-second-allowed", "Exec opens a second console of a machine while one is open instead of FailedPrecondition";
    ConsoleTokenReusable => "console-token-reusable", "an Exec URL's token works again after its session ended instead of once";
    UnknownIdListErrors => "unknown-id-list-errors", "ListMachines with an unknown id filter returns NotFound instead of an empty list";
    EmptyIdAccepted => "empty-id-accepted", "an empty machine id is treated like any unknown id (NotFound) instead of InvalidArgument";
    MissingSpecAccepted => "missing-spec-accepted", "CreateMachine without machine or spec succeeds instead of InvalidArgument";
    UnknownClassAccepted => "unknown-class-accepted", "CreateMachine with an unknown or empty class succeeds instead of InvalidArgument";
    AttachMissingVolumeAccepted => "attach-missing-volume-accepted", "AttachVolume/AttachNetworkInterface without the volume/NIC message or with an empty name succeed instead of InvalidArgument";
    ConcurrentCreateSameId => "concurrent-create-same-id", "concurrent CreateMachine calls can be given the same id (ids derive from a racy counter)";
    // --- machine: stored and listed data
    DuplicateIds => "duplicate-ids", "every CreateMachine returns the same id, replacing the previous machine";
    ClientIdHonoured => "client-id-honoured", "CreateMachine keeps a metadata.id sent by the client instead of assigning a fresh one";
    ClientStatusHonoured => "client-status-honoured", "CreateMachine keeps the status sent by the client instead of starting at PENDING";
    IdUnstable => "id-unstable", "ListMachines reports a different id than CreateMachine returned";
    LabelsDropped => "labels-dropped", "machine labels are not stored";
    AnnotationsDropped => "annotations-dropped", "machine annotations are not stored";
    AnnotationsMerged => "annotations-merged", "UpdateMachineAnnotations merges into the old map instead of replacing it";
    AnnotationsUpdateIgnored => "annotations-update-ignored", "UpdateMachineAnnotations returns OK but keeps the old annotations";
    LabelSelectorIgnored => "label-selector-ignored", "ListMachines ignores the label selector";
    IdFilterIgnored => "id-filter-ignored", "ListMachines ignores the id filter";
    CreatedAtZero => "created-at-zero", "metadata.created_at of machines is 0";
    CreatedAtSeconds => "created-at-seconds", "metadata.created_at of machines is in Unix seconds instead of nanoseconds";
    NoMetadata => "no-metadata", "listed machines have no metadata";
    NoSpec => "no-spec", "listed machines have no spec";
    NoStatus => "no-status", "listed machines and the CreateMachine response have no status";
    GenerationNotBumped => "generation-not-bumped", "metadata.generation stays the same when the spec changes";
    ObservedGenerationLags => "observed-generation-lags", "status.observed_generation never catches up with metadata.generation";
    AttachNotReflected => "attach-not-reflected", "AttachVolume/AttachNetworkInterface return OK but the spec does not change";
    VolumeStatusMissing => "volume-status-missing", "machine status has no entry for attached volumes";
    VolumeStatusMissingHandle => "volume-status-missing-handle", "machine volume status entries have an empty handle";
    NicStatusMissing => "nic-status-missing", "machine status has no entry for attached network interfaces";
    NeverAttached => "never-attached", "machine volume and NIC status entries stay PENDING forever";
    // --- machine: state machine
    NeverRunning => "never-running", "a powered-on machine stays PENDING forever";
    PowerIgnored => "power-ignored", "UpdateMachinePower returns OK but changes neither spec nor state";
    PowerOffStopped => "power-off-stopped", "a powered-off machine reports MACHINE_STOPPED (5), which Go poollets cannot map";
    PowerOffIgnoredState => "power-off-state-unchanged", "power off updates the spec but the machine stays RUNNING";
    DeletedAtUnset => "deleted-at-unset", "a machine being deleted has deleted_at = 0";
    DeleteStateUnchanged => "delete-state-unchanged", "a machine being deleted keeps its state instead of TERMINATING";
    DeleteImmediate => "delete-immediate", "DeleteMachine removes the machine at once, with no terminating phase";
    NeverGone => "never-gone", "a deleted machine stays listed (terminating) forever";
    CreateResponseNotPending => "create-response-not-pending", "the CreateMachine response reports RUNNING instead of PENDING";
    // --- machine: status, version, events
    NilClassCapabilities => "nil-class-capabilities", "Status returns machine classes without capabilities";
    StatusNoClasses => "status-no-classes", "Status returns no machine classes";
    StatusMemoryMib => "status-memory-mib", "Status reports memory in MiB instead of bytes";
    StatusCpuMillis => "status-cpu-millis", "Status reports cpu in millicores instead of cores";
    StatusNoCpuKey => "status-no-cpu-key", "Status class capabilities lack the cpu key";
    NegativeQuantity => "negative-quantity", "Status reports a negative quantity";
    VersionEmpty => "version-empty", "Version returns an empty runtime_name and runtime_version (all services)";
    NoEvents => "no-events", "ListEvents never returns events (machine and volume services)";
    EventTimeNanos => "event-time-nanos", "event_time is in Unix nanoseconds instead of seconds";
    EventLabelsMissing => "event-labels-missing", "involved_object_meta of events has no labels";
    EventActionMissing => "event-action-missing", "events have an empty action";
    EventFilterIgnored => "event-filter-ignored", "ListEvents ignores the time window";
    EventIdFilterIgnored => "event-id-filter-ignored", "ListEvents ignores the id filter";
    EventLabelFilterIgnored => "event-label-filter-ignored", "ListEvents ignores the label selector";
    // --- volume runtime
    VolumeDeleteUnknownOk => "volume-delete-unknown-ok", "DeleteVolume of an unknown id returns OK instead of NotFound";
    VolumeLabelSelectorIgnored => "volume-label-selector-ignored", "ListVolumes ignores the label selector";
    VolumeIdFilterIgnored => "volume-id-filter-ignored", "ListVolumes ignores the id filter";
    VolumeLabelsDropped => "volume-labels-dropped", "volume labels are not stored";
    VolumeNeverAvailable => "volume-never-available", "volumes stay PENDING forever";
    VolumeAccessMissing => "volume-access-missing", "available volumes have no access information";
    VolumeNoStatus => "volume-no-status", "listed volumes have no status";
    VolumeDeleteImmediate => "volume-delete-immediate", "DeleteVolume removes the volume at once, with no deletion phase";
    VolumeDeletedAtUnset => "volume-deleted-at-unset", "a volume being deleted has deleted_at = 0";
    VolumeCreatedAtSeconds => "volume-created-at-seconds", "metadata.created_at of volumes is in Unix seconds instead of nanoseconds";
    VolumeUnknownClassAccepted => "volume-unknown-class-accepted", "CreateVolume with an unknown or empty class succeeds instead of InvalidArgument";
    VolumeMissingSpecAccepted => "volume-missing-spec-accepted", "CreateVolume without volume or spec succeeds instead of InvalidArgument";
    ZeroSizeAccepted => "zero-size-accepted", "CreateVolume with a missing, zero or negative size succeeds instead of InvalidArgument";
    ExpandShrinkAccepted => "expand-shrink-accepted", "ExpandVolume to a smaller size succeeds instead of InvalidArgument";
    ExpandSpecOnly => "expand-spec-only", "ExpandVolume grows spec.resources but never status.resources";
    ExpandUnknownOk => "expand-unknown-ok", "ExpandVolume of an unknown id returns OK instead of NotFound";
    VolumeNilClassCapabilities => "volume-nil-class-capabilities", "volume Status returns classes without capabilities";
    VolumeNegativeQuantity => "volume-negative-quantity", "volume Status reports a negative quantity";
    SnapshotNeverReady => "snapshot-never-ready", "volume snapshots stay PENDING forever";
    SnapshotUnknownVolumeAccepted => "snapshot-unknown-volume-accepted", "CreateVolumeSnapshot of an unknown volume succeeds instead of NotFound";
    SnapshotDeleteUnknownOk => "snapshot-delete-unknown-ok", "DeleteVolumeSnapshot of an unknown id returns OK instead of NotFound";
    SnapshotSizeZero => "snapshot-size-zero", "ready snapshots report size 0";
    SnapshotIdFilterIgnored => "snapshot-id-filter-ignored", "ListVolumeSnapshots ignores the id filter";
    // --- bucket runtime
    BucketDeleteUnknownOk => "bucket-delete-unknown-ok", "DeleteBucket of an unknown id returns OK instead of NotFound";
    BucketLabelSelectorIgnored => "bucket-label-selector-ignored", "ListBuckets ignores the label selector";
    BucketIdFilterIgnored => "bucket-id-filter-ignored", "ListBuckets ignores the id filter";
    BucketNeverAvailable => "bucket-never-available", "buckets stay PENDING forever";
    BucketAccessMissing => "bucket-access-missing", "available buckets have no access information";
    BucketUnknownClassAccepted => "bucket-unknown-class-accepted", "CreateBucket with an unknown or empty class succeeds instead of InvalidArgument";
    BucketClassesEmpty => "bucket-classes-empty", "ListBucketClasses returns no classes";
    BucketDeleteImmediate => "bucket-delete-immediate", "DeleteBucket removes the bucket at once, with no deletion phase";
    // --- added for the conformance self-test (each makes at least one case fail)
    InvalidPowerAccepted => "invalid-power-accepted", "CreateMachine and UpdateMachinePower accept a power value outside the enum";
    CreateVolumesUnchecked => "create-volumes-unchecked", "CreateMachine does not validate its volumes and NICs (empty or duplicate names, volumes without a source)";
    DetachEmptyNameAccepted => "detach-empty-name-accepted", "DetachVolume/DetachNetworkInterface with an empty name answer NotFound instead of InvalidArgument";
    UpdateVolumeIgnored => "update-volume-ignored", "UpdateVolume returns OK but leaves the spec entry unchanged";
    UpdateVolumeMissingAccepted => "update-volume-missing-accepted", "UpdateVolume without a volume returns OK instead of InvalidArgument";
    VolumeStatusNoClasses => "volume-status-no-classes", "volume Status returns no volume classes";
    VolumeNoSpec => "volume-no-spec", "listed volumes have no spec";
    VolumeAnnotationsDropped => "volume-annotations-dropped", "volume annotations are not stored";
    VolumeClientIdHonoured => "volume-client-id-honoured", "CreateVolume keeps a metadata.id sent by the client";
    VolumeTwoSourcesAccepted => "volume-two-sources-accepted", "CreateVolume accepts both an image and a snapshot data source";
    UnknownSnapshotSourceAccepted => "unknown-snapshot-source-accepted", "CreateVolume accepts a snapshot data source naming an unknown snapshot instead of NotFound";
    VolumeEmptyIdAccepted => "volume-empty-id-accepted", "empty volume and snapshot ids are treated like unknown ids (NotFound) instead of InvalidArgument";
    VolumeDeleteTwiceNotFound => "volume-delete-twice-notfound", "a repeated DeleteVolume while the volume is being deleted returns NotFound";
    ExpandMissingResourcesOk => "expand-missing-resources-ok", "ExpandVolume without resources returns OK instead of InvalidArgument";
    VolumeIdUnstable => "volume-id-unstable", "ListVolumes reports a different id than CreateVolume returned";
    SnapshotValidationOff => "snapshot-validation-off", "CreateVolumeSnapshot without snapshot/spec or with an empty volume_id answers NotFound instead of InvalidArgument";
    SnapshotLabelsDropped => "snapshot-labels-dropped", "volume snapshot labels are not stored";
    SnapshotNoStatus => "snapshot-no-status", "volume snapshots have no status in CreateVolumeSnapshot and ListVolumeSnapshots";
    BucketLabelsDropped => "bucket-labels-dropped", "bucket labels are not stored";
    BucketNoStatus => "bucket-no-status", "buckets have no status in CreateBucket and ListBuckets";
    // --- added for the lifecycle level (each breaks what a poollet propagates)
    StatusUnavailable => "status-unavailable", "machine Status answers Unavailable, so a poollet sees the runtime as unreachable";
    BucketMissingSpecAccepted => "bucket-missing-spec-accepted", "CreateBucket without bucket or spec succeeds with the first class instead of InvalidArgument";
    BucketDeleteTwiceNotFound => "bucket-delete-twice-notfound", "a repeated DeleteBucket while the bucket is being deleted returns NotFound";
    // --- added for the calibration against IronCore's runtimes (reference §2.1/§2.1a; issue 14)
    UnknownClassInternal => "unknown-class-internal", "CreateMachine with an unknown or empty class answers Internal (libvirt-provider) instead of InvalidArgument";
    UnknownClassUnknown => "unknown-class-unknown", "CreateMachine with an unknown or empty class answers Unknown (cloud-hypervisor-provider) instead of InvalidArgument";
    VolumeUnknownClassInternal => "volume-unknown-class-internal", "CreateVolume with an unknown or empty class answers Internal (ceph-provider) instead of InvalidArgument";
    AttachDetachPlainErrors => "attach-detach-plain-errors", "Attach*/Detach* answer Unknown instead of NotFound for an unknown machine or name (cloud-hypervisor-provider)";
    UpdateVolumeNoop => "update-volume-noop", "UpdateVolume returns OK and does nothing, whatever it is sent (cloud-hypervisor-provider)";
    CreatePowerIgnored => "create-power-ignored", "a machine created powered off starts anyway (libvirt-provider)";
    VolumeUnknownIdInternal => "volume-unknown-id-internal", "ListVolumes/ListVolumeSnapshots by an unknown id, DeleteVolume and ExpandVolume of an unknown id answer Internal and DeleteVolumeSnapshot Unknown (ceph-provider) instead of an empty list or NotFound";
    VolumeSourceUnchecked => "volume-source-unchecked", "CreateMachine accepts a machine volume with neither local_disk nor connection (one of the five behaviours of issue 14)";
    SnapshotNeverGone => "snapshot-never-gone", "a deleted volume snapshot stays listed forever";
    ExpandSameSizeErrors => "expand-same-size-errors", "a repeated ExpandVolume to the current size errors (ceph-provider) instead of OK";
    // --- transport (issue 13)
    StrictAuthority => "strict-authority", "unix-socket and in-process connections are served without the :authority rewrite, so h2 resets calls with the percent-encoded or raw socket path grpc-core and grpc-java send";
    // --- reservations (issue 15; irikit's ReservationRuntime extension)
    ReservationAlwaysRejected => "reservation-always-rejected", "CreateReservation rejects every reservation, even one that fits";
    ReservationCapacityUnchecked => "reservation-capacity-unchecked", "CreateReservation accepts every reservation, whatever the capacity";
    ReservationHoldsIgnored => "reservation-holds-ignored", "CreateReservation ignores the capacity other accepted reservations hold";
    ReservationDeleteKeepsHold => "reservation-delete-keeps-hold", "DeleteReservation removes the reservation but its hold stays counted";
    ReservationNotConsumed => "reservation-not-consumed", "CreateMachine ignores the reservation.irikit.dev/id annotation: the reservation stays ACCEPTED and keeps holding";
    ReservationConsumedWhole => "reservation-consumed-whole", "the first CreateMachine against a reservation of n machines consumes all of it: it turns RESERVATION_BOUND and the other n-1 creates are refused";
    ReservationUnreservedTakesHold => "reservation-unreserved-takes-hold", "a CreateMachine that names no reservation takes capacity that accepted reservations hold instead of ResourceExhausted";
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The string is not the name of a mutant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mutant {0:?}; `iri-mock-runtime --list-mutants` lists them")]
pub struct UnknownMutant(pub String);

impl FromStr for Mutant {
    type Err = UnknownMutant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mutant::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMutant(s.to_owned()))
    }
}

/// A set of mutants that can be switched while the mock serves (lock-free reads).
#[derive(Debug, Default)]
pub(crate) struct MutantSet {
    bits: [AtomicU64; 3],
}

impl MutantSet {
    fn slot(m: Mutant) -> (usize, u64) {
        let i = m as usize;
        (i / 64, 1u64 << (i % 64))
    }

    pub(crate) fn set(&self, m: Mutant, on: bool) {
        let (word, bit) = Self::slot(m);
        if on {
            self.bits[word].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.bits[word].fetch_and(!bit, Ordering::Relaxed);
        }
    }

    pub(crate) fn has(&self, m: Mutant) -> bool {
        let (word, bit) = Self::slot(m);
        self.bits[word].load(Ordering::Relaxed) & bit != 0
    }

    pub(crate) fn active(&self) -> Vec<Mutant> {
        Mutant::ALL
            .iter()
            .copied()
            .filter(|m| self.has(*m))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_kebab_case_and_parse() {
        assert!(Mutant::ALL.len() <= 192, "MutantSet holds 192 bits");
        let mut seen = HashSet::new();
        for &m in Mutant::ALL {
            assert!(seen.insert(m.name()), "duplicate name {m}");
            assert!(
                m.name()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{m} is not kebab-case"
            );
            assert_eq!(m.name().parse::<Mutant>().unwrap(), m);
            assert!(!m.description().is_empty());
        }
        assert!("no-such-mutant".parse::<Mutant>().is_err());
    }

    #[test]
    fn set_switches() {
        let set = MutantSet::default();
        let last = *Mutant::ALL.last().unwrap();
        set.set(last, true);
        set.set(Mutant::NoSpec, true);
        assert!(set.has(last) && set.has(Mutant::NoSpec) && !set.has(Mutant::NoStatus));
        set.set(last, false);
        assert_eq!(set.active(), vec![Mutant::NoSpec]);
    }
}
