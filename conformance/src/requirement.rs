//! The requirement level and evidence of every case (reference §2.1a, last sentence): *must*
//! only where a violation breaks IronCore's Go poollets (§2.2, §7.4) or contradicts behaviour
//! every IronCore runtime shares; *should* where IronCore's own runtimes (the fakes,
//! libvirt-provider, ceph-provider, cloud-hypervisor-provider) deviate in ways the poollets
//! tolerate.
//!
//! A case may declare its level itself ([`Case::must`], [`Case::should`]); new cases should.
//! For the cases written before levels existed, [`SHOULD`] names the should cases with their
//! evidence, and every other case is a must whose evidence comes from the first matching prefix
//! of [`MUST_EVIDENCE`]. [`apply`] fills both in; it never overrides a declared evidence.

use crate::case::{Case, Level, Requirement};

const FAKE_NO_VALIDATION: &str =
    "§2.3/§2.4: the fakes store the request as is; the poollet never sends it";
const FAKE_EMPTY_ID: &str =
    "§2.3: the fakes answer NotFound for an empty id like for any unknown id";
const CH_UNKNOWN: &str = "§2.1/§2.1a: cloud-hypervisor-provider answers Unknown; the poollet only calls it with names and machines the runtime lists";

const RESERVATION_EXTENSION: &str = "irikit's ReservationRuntime extension (IEP-11, §6.3): no IronCore runtime or poollet uses it; irikit's reservation scheduling relies on it";

/// The should cases among those that do not declare a level, with their evidence.
pub const SHOULD: &[(&str, &str)] = &[
    // The five behaviours of issue 14: a runtime written from §1–§3 does them, the poollets never notice.
    (
        "machine.create.rejects_invalid_power",
        "§2.3: no IronCore runtime checks the power enum (the fake stores it as is); the poollet sends only POWER_ON/POWER_OFF",
    ),
    (
        "machine.power.invalid_value",
        "§2.3: no IronCore runtime checks the power enum (the fake stores it as is); the poollet sends only POWER_ON/POWER_OFF",
    ),
    (
        "machine.create.rejects_volume_without_source",
        "§2.3: the fake stores machine volumes as is; the poollet always sets local_disk or connection (§3.5)",
    ),
    (
        "volume.create.rejects_two_data_sources",
        "§2.4: the volume fake does not check data sources; the poollet sends at most one",
    ),
    (
        "volume.create.rejects_unknown_snapshot_source",
        "§2.4: the volume fake does not check data sources; the poollet only names snapshots it created",
    ),
    // Exact codes for an unknown/empty class (the must half is *.create.unknown_class_fails).
    (
        "machine.create.rejects_unknown_class",
        "§2.1: libvirt-provider answers Internal, cloud-hypervisor-provider Unknown, the fake accepts it",
    ),
    (
        "machine.create.rejects_empty_class",
        "§2.1: libvirt-provider answers Internal, cloud-hypervisor-provider Unknown, the fake accepts it",
    ),
    (
        "volume.create.rejects_unknown_class",
        "§2.1: ceph-provider answers Internal, the fake accepts it",
    ),
    (
        "volume.create.rejects_empty_class",
        "§2.1: ceph-provider answers Internal, the fake accepts it",
    ),
    (
        "bucket.create.rejects_unknown_class",
        "§2.1: the bucket fake accepts any class",
    ),
    // Input validation the poollets never exercise.
    (
        "machine.create.rejects_missing_machine",
        "§2.1: the fake panics, libvirt-provider answers InvalidArgument; the poollet always sends a machine",
    ),
    (
        "machine.create.rejects_missing_spec",
        "§2.1: the fake panics, libvirt-provider answers InvalidArgument; the poollet always sends a spec",
    ),
    (
        "machine.create.rejects_duplicate_volume_names",
        FAKE_NO_VALIDATION,
    ),
    (
        "machine.create.rejects_duplicate_nic_names",
        FAKE_NO_VALIDATION,
    ),
    ("machine.create.rejects_unnamed_volume", FAKE_NO_VALIDATION),
    ("machine.volume.attach_missing_volume", FAKE_NO_VALIDATION),
    ("machine.volume.attach_empty_name", FAKE_NO_VALIDATION),
    (
        "machine.volume.update_missing_volume",
        "§2.3/§2.1a: the fake stores the request as is, cloud-hypervisor-provider's UpdateVolume is a no-op that returns OK; the poollet always sends a volume",
    ),
    ("machine.nic.attach_missing_nic", FAKE_NO_VALIDATION),
    ("machine.nic.attach_empty_name", FAKE_NO_VALIDATION),
    ("machine.volume.detach_empty_name", FAKE_EMPTY_ID),
    ("machine.nic.detach_empty_name", FAKE_EMPTY_ID),
    ("volume.create.rejects_missing_volume", FAKE_NO_VALIDATION),
    ("volume.create.rejects_missing_spec", FAKE_NO_VALIDATION),
    (
        "volume.create.rejects_missing_resources",
        FAKE_NO_VALIDATION,
    ),
    ("volume.create.rejects_zero_size", FAKE_NO_VALIDATION),
    ("volume.create.rejects_negative_size", FAKE_NO_VALIDATION),
    (
        "volume.expand.shrink_rejected",
        "§2.4: the volume fake sets any size; the poollet only grows volumes",
    ),
    (
        "volume.expand.missing_resources_invalid",
        FAKE_NO_VALIDATION,
    ),
    (
        "volume.snapshot.missing_snapshot_invalid",
        FAKE_NO_VALIDATION,
    ),
    (
        "volume.snapshot.unknown_volume_not_found",
        "§2.4: the volume fake creates a snapshot of any volume id",
    ),
    ("bucket.create.rejects_missing_spec", FAKE_NO_VALIDATION),
    // Empty ids: the fakes treat them as unknown ids.
    ("machine.power.empty_id_invalid", FAKE_EMPTY_ID),
    ("machine.annotations.empty_id_invalid", FAKE_EMPTY_ID),
    ("machine.delete.empty_id_invalid", FAKE_EMPTY_ID),
    ("machine.exec.empty_id_invalid", FAKE_EMPTY_ID),
    ("machine.volume.attach_empty_machine_id", FAKE_EMPTY_ID),
    ("machine.nic.attach_empty_machine_id", FAKE_EMPTY_ID),
    ("volume.expand.empty_id_invalid", FAKE_EMPTY_ID),
    ("volume.delete.empty_id_invalid", FAKE_EMPTY_ID),
    ("volume.snapshot.empty_volume_id_invalid", FAKE_EMPTY_ID),
    ("volume.snapshot.delete_empty_id_invalid", FAKE_EMPTY_ID),
    // Duplicate attach: the fakes and libvirt-provider append.
    (
        "machine.volume.attach_duplicate_already_exists",
        "§2.1: the fake appends a duplicate instead of AlreadyExists",
    ),
    (
        "machine.nic.attach_duplicate_already_exists",
        "§2.1: the fake and libvirt-provider append a duplicate NIC instead of AlreadyExists",
    ),
    // cloud-hypervisor-provider's plain errors on attach/detach.
    ("machine.volume.attach_unknown_machine", CH_UNKNOWN),
    ("machine.nic.attach_unknown_machine", CH_UNKNOWN),
    ("machine.volume.detach_unknown_machine", CH_UNKNOWN),
    ("machine.nic.detach_unknown_machine", CH_UNKNOWN),
    ("machine.volume.detach_unknown_name", CH_UNKNOWN),
    ("machine.nic.detach_unknown_name", CH_UNKNOWN),
    ("machine.volume.detach_twice", CH_UNKNOWN),
    ("machine.nic.detach_twice", CH_UNKNOWN),
    ("poollet.machine.detach_unknown_not_found", CH_UNKNOWN),
    // cloud-hypervisor-provider's UpdateVolume is a no-op.
    (
        "machine.volume.update_in_spec",
        "§2.1a: cloud-hypervisor-provider's UpdateVolume is a no-op that returns OK",
    ),
    (
        "machine.volume.update_unknown_name",
        "§2.1a: cloud-hypervisor-provider's UpdateVolume is a no-op that returns OK",
    ),
    (
        "machine.volume.update_unknown_machine",
        "§2.1a: cloud-hypervisor-provider's UpdateVolume is a no-op that returns OK",
    ),
    (
        "machine.volume.update_idempotent",
        "§2.1a: cloud-hypervisor-provider's UpdateVolume is a no-op that returns OK",
    ),
    // Power: libvirt-provider never shuts a VM down and ignores the power of CreateMachine.
    (
        "machine.create.powered_off",
        "§2.1a: libvirt-provider ignores the requested power on create (the VM always starts)",
    ),
    (
        "machine.power.off_leaves_running",
        "§2.1a: libvirt-provider stores the power but never shuts the VM down",
    ),
    // TERMINATING: cloud-hypervisor-provider never reports it, the fakes delete at once.
    (
        "machine.delete.terminating_listed",
        "§2.1a: cloud-hypervisor-provider never reports TERMINATING; the poollet waits until List is empty or Delete says NotFound (§2.2)",
    ),
    (
        "poollet.machine.delete_keeps_listed_terminating",
        "§2.1a: cloud-hypervisor-provider never reports TERMINATING; the poollet waits until List is empty or Delete says NotFound (§2.2)",
    ),
    // Exec on an unknown machine: the fake returns the callback's URL for any id.
    (
        "machine.exec.unknown_id_not_found",
        "§2.3: the fake returns a URL (or \"\") for any id; NotFound only makes the poollet answer 404 instead of 500 (§2.2)",
    ),
    // Events: the fakes return what a test stored and ignore every filter.
    (
        "machine.events.listed",
        "§2.3: the fake lists only events a test stored; the poollets need none",
    ),
    (
        "machine.events.id_filter",
        "§2.3: the fake ignores the event filter",
    ),
    (
        "machine.events.label_filter",
        "§2.3: the fake ignores the event filter",
    ),
    (
        "machine.events.time_window",
        "§2.3: the fake ignores the event filter",
    ),
    (
        "volume.events.listed",
        "§2.4: the volume fake lists only events a test stored; the poollets need none",
    ),
    (
        "volume.events.label_filter",
        "§2.4: the volume fake ignores the event filter",
    ),
    (
        "volume.events.time_window",
        "§2.4: the volume fake ignores the event filter",
    ),
    // ceph-provider's codes for unknown ids (the volume poollet lists by label, §2.1a).
    (
        "volume.list.unknown_id_empty",
        "§2.1a: ceph-provider answers Internal; the volume poollet lists by label",
    ),
    (
        "volume.snapshot.list_unknown_id_empty",
        "§2.1a: ceph-provider answers Internal; the volume poollet lists by label",
    ),
    (
        "volume.delete.unknown_id_not_found",
        "§2.1a: ceph-provider answers Internal; the volume poollet lists by label before it deletes",
    ),
    (
        "volume.delete.not_found_after_gone",
        "§2.1a: ceph-provider answers Internal; the volume poollet lists by label before it deletes",
    ),
    (
        "volume.expand.unknown_id_not_found",
        "§2.1a: ceph-provider answers Internal",
    ),
    (
        "volume.expand.idempotent",
        "§2.1a: ceph-provider errors on a repeated ExpandVolume of the same size",
    ),
    (
        "volume.snapshot.delete_unknown_not_found",
        "§2.1a: ceph-provider answers Unknown",
    ),
    (
        "volume.snapshot.delete_not_found_after_gone",
        "§2.1a: ceph-provider answers Unknown; the volume poollet lists by label before it deletes",
    ),
    (
        "bucket.delete.unknown_id_not_found",
        "§2.1a: ceph-provider answers InvalidArgument",
    ),
    // irikit's reservation extension (issue 15).
    (
        "reservation.create.accepted_within_capacity",
        RESERVATION_EXTENSION,
    ),
    (
        "reservation.create.rejected_beyond_capacity",
        RESERVATION_EXTENSION,
    ),
    ("reservation.hold.blocks_competing", RESERVATION_EXTENSION),
    ("reservation.delete.releases_hold", RESERVATION_EXTENSION),
    ("reservation.create_machine.consumes", RESERVATION_EXTENSION),
    (
        "reservation.create_machine.consumes_one_at_a_time",
        RESERVATION_EXTENSION,
    ),
    (
        "reservation.create_machine.unreserved_not_from_hold",
        RESERVATION_EXTENSION,
    ),
    (
        "lifecycle.reservation.bound_where_reserved",
        RESERVATION_EXTENSION,
    ),
    (
        "lifecycle.reservation.all_rejected_unbound",
        RESERVATION_EXTENSION,
    ),
    (
        "lifecycle.reservation.fallback_best_effort",
        RESERVATION_EXTENSION,
    ),
    // The Exec console (issue 18): libvirt-provider's rules, which the poollet's proxy does not need.
    (
        "machine.exec.console.second_refused",
        "§2.1: libvirt-provider refuses a second console with FailedPrecondition; the machinepoollet's exec proxy works either way",
    ),
    (
        "machine.exec.console.token_single_use",
        "§3.9: libvirt-provider's exec tokens are one-time; a reusable token does not break the machinepoollet's proxy",
    ),
];

/// Evidence of the must cases that declare none, by id prefix (first match wins).
pub const MUST_EVIDENCE: &[(&str, &str)] = &[
    (
        "machine.create.unknown_class_fails",
        "§2.1: every production runtime (libvirt-provider, cloud-hypervisor-provider) rejects a class it does not offer; the scheduler only places what Status announced",
    ),
    (
        "volume.create.unknown_class_fails",
        "§2.1: ceph-provider rejects a class it does not offer; the scheduler only places what Status announced",
    ),
    (
        "bucket.create.unknown_class_fails",
        "§2.1: a bucket of a class the runtime does not offer cannot be provisioned",
    ),
    (
        "machine.version",
        "§7.4 Version: runtime_name becomes the machineID prefix",
    ),
    (
        "volume.version",
        "§7.4 Version: runtime_name becomes the volumeID prefix",
    ),
    ("bucket.version", "§7.4 Version"),
    (
        "machine.status",
        "§7.4 Status: the poollet announces the classes and capacity from it (§4.3)",
    ),
    (
        "volume.status",
        "§7.4 Status: the poollet announces the classes and capacity from it (§4.3)",
    ),
    (
        "bucket.classes",
        "§4.3: the bucket poollet announces the classes",
    ),
    (
        "machine.create",
        "§7.4 Create: the poollet stores the id and finds the machine again by its labels (§3.5)",
    ),
    (
        "volume.create",
        "§7.4 Create: the poollet stores the id and finds the volume again by its labels",
    ),
    ("bucket.create", "§7.4 Create"),
    (
        "machine.state",
        "§3.3/§3.4: the poollet maps state and generation into the Machine status",
    ),
    (
        "volume.state",
        "§3.3: the poollet maps state, access and size into the Volume status",
    ),
    (
        "bucket.state",
        "§3.3: the poollet maps state and access into the Bucket status",
    ),
    (
        "machine.power",
        "§3.6: the poollet sets power with UpdateMachinePower and diffs the spec",
    ),
    (
        "machine.annotations",
        "§7.4 UpdateMachineAnnotations: the poollet keeps its generation annotations there (§3.4)",
    ),
    (
        "machine.list",
        "§7.4 List: the poollet lists by id and by its uid label (§2.2, §3.5)",
    ),
    (
        "volume.list",
        "§7.4 List: the poollet lists by its uid label",
    ),
    ("bucket.list", "§7.4 List"),
    (
        "machine.volume",
        "§7.4 Attach/Detach/Update: the poollet diffs the spec and reads per-volume status by name (§3.6)",
    ),
    (
        "machine.nic",
        "§7.4 Attach/Detach: the poollet diffs the spec and reads per-NIC status by name (§3.6)",
    ),
    (
        "machine.delete",
        "§2.2/§7.4 Delete: NotFound means gone, OK means still deleting",
    ),
    (
        "volume.delete",
        "§2.2/§7.4 Delete: NotFound means gone, OK means still deleting",
    ),
    ("bucket.delete", "§2.2/§7.4 Delete"),
    (
        "volume.expand",
        "§4.2: the volume poollet expands with ExpandVolume and reads the new size",
    ),
    (
        "volume.snapshot",
        "§4.2: the volume poollet creates, lists and deletes snapshots",
    ),
    (
        "machine.transport",
        "§7.4 Transport: plain gRPC over a unix socket; every IronCore runtime (a grpc-go server) serves any :authority, and grpc-core (≥ 1.57) and grpc-java clients send the socket path",
    ),
    (
        "volume.transport",
        "§7.4 Transport: plain gRPC over a unix socket; every IronCore runtime (a grpc-go server) serves any :authority, and grpc-core (≥ 1.57) and grpc-java clients send the socket path",
    ),
    (
        "bucket.transport",
        "§7.4 Transport: plain gRPC over a unix socket; every IronCore runtime (a grpc-go server) serves any :authority, and grpc-core (≥ 1.57) and grpc-java clients send the socket path",
    ),
    (
        "machine.exec.console",
        "§3.9/§2.2 Exec: a URL Exec returns must serve the remotecommand stream; the machinepoollet proxies to it",
    ),
    ("machine.exec", "§3.9/§7.4 Exec"),
    ("machine.events", "§3.8/§7.4 Events"),
    ("volume.events", "§3.8/§7.4 Events"),
    (
        "machine.concurrency",
        "§4.1: the poollet's workers call the runtime concurrently",
    ),
    (
        "poollet.",
        "§1.8/§7.4: the Go poollets dereference these fields or rely on these codes",
    ),
    (
        "lifecycle.",
        "§3–§4: what IronCore's poollets propagate, driven by irikit's poollets",
    ),
];

/// Fills in the level and evidence of cases that declare none (see the module docs).
pub fn apply(cases: &mut [Case]) {
    for case in cases {
        if !case.evidence.is_empty() {
            continue;
        }
        if let Some((_, why)) = SHOULD.iter().find(|(id, _)| *id == case.id) {
            case.requirement = Requirement::Should;
            case.evidence = (*why).to_owned();
            continue;
        }
        case.requirement = Requirement::Must;
        case.evidence = MUST_EVIDENCE
            .iter()
            .find(|(prefix, _)| case.id.starts_with(prefix))
            .map_or(
                match case.level {
                    Level::Rpc => "§7.4: the minimal contract for the Go poollets",
                    Level::Lifecycle => "§3–§4: what IronCore's poollets propagate",
                },
                |(_, why)| why,
            )
            .to_owned();
    }
}
