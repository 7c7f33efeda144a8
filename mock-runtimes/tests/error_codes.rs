//! The status-code matrix of every RPC of the three services (rstest tables).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Clients, code, id_of, start};
use iri_mock::{MockRuntime, fixtures};
use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};
use rstest::rstest;
use tonic::Code;

/// Ids of pre-created objects the operations refer to.
struct World {
    clients: Clients,
    machine_id: String,
    volume_id: String,
    snapshot_id: String,
    bucket_id: String,
    _mock: MockRuntime,
}

async fn world() -> World {
    let (mock, mut clients) = start(MockRuntime::builder()).await;
    let mut m = fixtures::machine();
    let spec = m.spec.as_mut().unwrap();
    spec.volumes.push(fixtures::local_disk("vol-1"));
    spec.network_interfaces.push(fixtures::nic("nic-1"));
    let machine_id = clients.create_machine(m).await;
    let volume_id = clients.create_volume(fixtures::volume()).await;
    let snapshot_id = id_of(clients.create_snapshot(&volume_id).await.metadata);
    let bucket_id = id_of(clients.create_bucket(fixtures::bucket()).await.metadata);
    World {
        clients,
        machine_id,
        volume_id,
        snapshot_id,
        bucket_id,
        _mock: mock,
    }
}

/// Which object id an operation targets.
#[derive(Debug, Clone, Copy)]
enum Target {
    Existing,
    Unknown,
    Empty,
}

impl Target {
    fn id(self, existing: &str) -> String {
        match self {
            Target::Existing => existing.to_owned(),
            Target::Unknown => "0123456789abcdef".repeat(4)[..63].replace('0', "f"),
            Target::Empty => String::new(),
        }
    }
}

fn machine_with(f: impl FnOnce(&mut machine::Machine)) -> Option<machine::Machine> {
    let mut m = fixtures::machine();
    f(&mut m);
    Some(m)
}

fn connection(name: &str) -> machine::Volume {
    machine::Volume {
        name: name.to_owned(),
        device: "odb".to_owned(),
        local_disk: None,
        connection: Some(machine::VolumeConnection {
            driver: "ceph".to_owned(),
            handle: "pool/img".to_owned(),
            ..Default::default()
        }),
    }
}

#[rstest]
#[case::ok(machine_with(|_| ()), Code::Ok)]
#[case::client_id_is_ignored(machine_with(|m| m.metadata.as_mut().unwrap().id = "mine".into()), Code::Ok)]
#[case::no_machine(None, Code::InvalidArgument)]
#[case::no_spec(machine_with(|m| m.spec = None), Code::InvalidArgument)]
#[case::unknown_class(machine_with(|m| m.spec.as_mut().unwrap().class = "nope".into()), Code::InvalidArgument)]
#[case::empty_class(machine_with(|m| m.spec.as_mut().unwrap().class.clear()), Code::InvalidArgument)]
#[case::bad_power(machine_with(|m| m.spec.as_mut().unwrap().power = 7), Code::InvalidArgument)]
#[case::duplicate_volume_names(machine_with(|m| m.spec.as_mut().unwrap().volumes = vec![fixtures::local_disk("a"), fixtures::local_disk("a")]), Code::InvalidArgument)]
#[case::volume_without_source(machine_with(|m| m.spec.as_mut().unwrap().volumes = vec![machine::Volume { name: "a".into(), ..Default::default() }]), Code::InvalidArgument)]
#[case::volume_with_two_sources(machine_with(|m| { let mut v = connection("a"); v.local_disk = Some(Default::default()); m.spec.as_mut().unwrap().volumes = vec![v]; }), Code::InvalidArgument)]
#[case::volume_without_name(machine_with(|m| m.spec.as_mut().unwrap().volumes = vec![fixtures::local_disk("")]), Code::InvalidArgument)]
#[case::duplicate_nic_names(machine_with(|m| m.spec.as_mut().unwrap().network_interfaces = vec![fixtures::nic("n"), fixtures::nic("n")]), Code::InvalidArgument)]
#[case::nic_without_name(machine_with(|m| m.spec.as_mut().unwrap().network_interfaces = vec![fixtures::nic("")]), Code::InvalidArgument)]
#[case::no_metadata_is_fine(machine_with(|m| m.metadata = None), Code::Ok)]
#[tokio::test]
async fn create_machine(#[case] m: Option<machine::Machine>, #[case] want: Code) {
    let mut w = world().await;
    let got = code(
        w.clients
            .machine
            .create_machine(machine::CreateMachineRequest { machine: m })
            .await,
    );
    assert_eq!(got, want);
}

/// A machine RPC that takes a machine id and maybe a name or object.
#[derive(Debug, Clone)]
enum MachineOp {
    Delete,
    Annotations,
    Power(i32),
    AttachVolume(Option<machine::Volume>),
    DetachVolume(&'static str),
    UpdateVolume(Option<machine::Volume>),
    AttachNic(Option<machine::NetworkInterface>),
    DetachNic(&'static str),
    Exec,
}

#[rstest]
#[case::delete(MachineOp::Delete, Target::Existing, Code::Ok)]
#[case::delete_unknown(MachineOp::Delete, Target::Unknown, Code::NotFound)]
#[case::delete_empty(MachineOp::Delete, Target::Empty, Code::InvalidArgument)]
#[case::annotations(MachineOp::Annotations, Target::Existing, Code::Ok)]
#[case::annotations_unknown(MachineOp::Annotations, Target::Unknown, Code::NotFound)]
#[case::annotations_empty(MachineOp::Annotations, Target::Empty, Code::InvalidArgument)]
#[case::power_off(MachineOp::Power(1), Target::Existing, Code::Ok)]
#[case::power_on_again(MachineOp::Power(0), Target::Existing, Code::Ok)]
#[case::power_bad_value(MachineOp::Power(9), Target::Existing, Code::InvalidArgument)]
#[case::power_unknown(MachineOp::Power(1), Target::Unknown, Code::NotFound)]
#[case::power_empty(MachineOp::Power(1), Target::Empty, Code::InvalidArgument)]
#[case::attach_volume(
    MachineOp::AttachVolume(Some(connection("vol-2"))),
    Target::Existing,
    Code::Ok
)]
#[case::attach_volume_duplicate(
    MachineOp::AttachVolume(Some(fixtures::local_disk("vol-1"))),
    Target::Existing,
    Code::AlreadyExists
)]
#[case::attach_volume_missing(
    MachineOp::AttachVolume(None),
    Target::Existing,
    Code::InvalidArgument
)]
#[case::attach_volume_no_name(
    MachineOp::AttachVolume(Some(fixtures::local_disk(""))),
    Target::Existing,
    Code::InvalidArgument
)]
#[case::attach_volume_no_source(MachineOp::AttachVolume(Some(machine::Volume { name: "x".into(), ..Default::default() })), Target::Existing, Code::InvalidArgument)]
#[case::attach_volume_unknown_machine(
    MachineOp::AttachVolume(Some(connection("vol-2"))),
    Target::Unknown,
    Code::NotFound
)]
#[case::attach_volume_empty_machine(
    MachineOp::AttachVolume(Some(connection("vol-2"))),
    Target::Empty,
    Code::InvalidArgument
)]
#[case::detach_volume(MachineOp::DetachVolume("vol-1"), Target::Existing, Code::Ok)]
#[case::detach_volume_unknown_name(
    MachineOp::DetachVolume("nope"),
    Target::Existing,
    Code::NotFound
)]
#[case::detach_volume_empty_name(
    MachineOp::DetachVolume(""),
    Target::Existing,
    Code::InvalidArgument
)]
#[case::detach_volume_unknown_machine(
    MachineOp::DetachVolume("vol-1"),
    Target::Unknown,
    Code::NotFound
)]
#[case::update_volume(
    MachineOp::UpdateVolume(Some(connection("vol-1"))),
    Target::Existing,
    Code::Ok
)]
#[case::update_volume_unchanged(
    MachineOp::UpdateVolume(Some(fixtures::local_disk("vol-1"))),
    Target::Existing,
    Code::Ok
)]
#[case::update_volume_unknown_name(
    MachineOp::UpdateVolume(Some(connection("nope"))),
    Target::Existing,
    Code::NotFound
)]
#[case::update_volume_missing(
    MachineOp::UpdateVolume(None),
    Target::Existing,
    Code::InvalidArgument
)]
#[case::update_volume_unknown_machine(
    MachineOp::UpdateVolume(Some(connection("vol-1"))),
    Target::Unknown,
    Code::NotFound
)]
#[case::attach_nic(
    MachineOp::AttachNic(Some(fixtures::nic("nic-2"))),
    Target::Existing,
    Code::Ok
)]
#[case::attach_nic_duplicate(
    MachineOp::AttachNic(Some(fixtures::nic("nic-1"))),
    Target::Existing,
    Code::AlreadyExists
)]
#[case::attach_nic_missing(MachineOp::AttachNic(None), Target::Existing, Code::InvalidArgument)]
#[case::attach_nic_no_name(
    MachineOp::AttachNic(Some(fixtures::nic(""))),
    Target::Existing,
    Code::InvalidArgument
)]
#[case::attach_nic_unknown_machine(
    MachineOp::AttachNic(Some(fixtures::nic("nic-2"))),
    Target::Unknown,
    Code::NotFound
)]
#[case::detach_nic(MachineOp::DetachNic("nic-1"), Target::Existing, Code::Ok)]
#[case::detach_nic_unknown_name(MachineOp::DetachNic("nope"), Target::Existing, Code::NotFound)]
#[case::detach_nic_empty_name(MachineOp::DetachNic(""), Target::Existing, Code::InvalidArgument)]
#[case::detach_nic_unknown_machine(MachineOp::DetachNic("nic-1"), Target::Unknown, Code::NotFound)]
#[case::exec(MachineOp::Exec, Target::Existing, Code::Ok)]
#[case::exec_unknown(MachineOp::Exec, Target::Unknown, Code::NotFound)]
#[case::exec_empty(MachineOp::Exec, Target::Empty, Code::InvalidArgument)]
#[tokio::test]
async fn machine_ops(#[case] op: MachineOp, #[case] target: Target, #[case] want: Code) {
    let mut w = world().await;
    let machine_id = target.id(&w.machine_id);
    let c = &mut w.clients.machine;
    let shown = format!("{op:?}");
    let got = match op {
        MachineOp::Delete => code(w.clients.delete_machine(&machine_id).await),
        MachineOp::Annotations => code(
            c.update_machine_annotations(machine::UpdateMachineAnnotationsRequest {
                machine_id,
                annotations: [("a".to_owned(), "b".to_owned())].into(),
            })
            .await,
        ),
        MachineOp::Power(power) => code(
            c.update_machine_power(machine::UpdateMachinePowerRequest { machine_id, power })
                .await,
        ),
        MachineOp::AttachVolume(volume) => code(
            c.attach_volume(machine::AttachVolumeRequest { machine_id, volume })
                .await,
        ),
        MachineOp::DetachVolume(name) => code(
            c.detach_volume(machine::DetachVolumeRequest {
                machine_id,
                name: name.to_owned(),
            })
            .await,
        ),
        MachineOp::UpdateVolume(volume) => code(
            c.update_volume(machine::UpdateVolumeRequest { machine_id, volume })
                .await,
        ),
        MachineOp::AttachNic(network_interface) => code(
            c.attach_network_interface(machine::AttachNetworkInterfaceRequest {
                machine_id,
                network_interface,
            })
            .await,
        ),
        MachineOp::DetachNic(name) => code(
            c.detach_network_interface(machine::DetachNetworkInterfaceRequest {
                machine_id,
                name: name.to_owned(),
            })
            .await,
        ),
        MachineOp::Exec => code(w.clients.exec(&machine_id).await),
    };
    assert_eq!(got, want, "{shown} on {target:?}");
}

#[rstest]
#[case::unknown_id(Target::Unknown, 0)]
#[case::existing_id(Target::Existing, 1)]
#[case::no_id(Target::Empty, 1)]
#[tokio::test]
async fn list_machines_by_id(#[case] target: Target, #[case] want: usize) {
    let mut w = world().await;
    let filter = machine::MachineFilter {
        id: target.id(&w.machine_id),
        ..Default::default()
    };
    let machines = w.clients.find_machines(Some(filter)).await;
    assert_eq!(machines.len(), want);
}

fn volume_with(f: impl FnOnce(&mut volume::Volume)) -> Option<volume::Volume> {
    let mut v = fixtures::volume();
    f(&mut v);
    Some(v)
}

#[rstest]
#[case::ok(volume_with(|_| ()), Code::Ok)]
#[case::no_volume(None, Code::InvalidArgument)]
#[case::no_spec(volume_with(|v| v.spec = None), Code::InvalidArgument)]
#[case::unknown_class(volume_with(|v| v.spec.as_mut().unwrap().class = "nope".into()), Code::InvalidArgument)]
#[case::no_resources(volume_with(|v| v.spec.as_mut().unwrap().resources = None), Code::InvalidArgument)]
#[case::zero_size(volume_with(|v| v.spec.as_mut().unwrap().resources = Some(volume::VolumeResources { storage_bytes: 0 })), Code::InvalidArgument)]
#[case::negative_size(volume_with(|v| v.spec.as_mut().unwrap().resources = Some(volume::VolumeResources { storage_bytes: -5 })), Code::InvalidArgument)]
#[case::two_data_sources(volume_with(|v| v.spec.as_mut().unwrap().volume_data_source = Some(volume::VolumeDataSource {
    image_data_source: Some(Default::default()),
    snapshot_data_source: Some(Default::default()),
})), Code::InvalidArgument)]
#[case::image_source(volume_with(|v| v.spec.as_mut().unwrap().volume_data_source = Some(volume::VolumeDataSource {
    image_data_source: Some(volume::ImageDataSource { image: "gardenlinux".into(), architecture: "amd64".into() }),
    snapshot_data_source: None,
})), Code::Ok)]
#[tokio::test]
async fn create_volume(#[case] v: Option<volume::Volume>, #[case] want: Code) {
    let mut w = world().await;
    assert_eq!(create_volume_code(&mut w, v).await, want);
}

async fn create_volume_code(w: &mut World, v: Option<volume::Volume>) -> Code {
    code(
        w.clients
            .volume
            .create_volume(volume::CreateVolumeRequest { volume: v })
            .await,
    )
}

#[rstest]
#[case::existing(Target::Existing, Code::Ok)]
#[case::unknown(Target::Unknown, Code::NotFound)]
#[case::empty(Target::Empty, Code::InvalidArgument)]
#[tokio::test]
async fn create_volume_from_snapshot(#[case] snapshot: Target, #[case] want: Code) {
    let mut w = world().await;
    let v = volume_with(|v| {
        v.spec.as_mut().unwrap().volume_data_source = Some(volume::VolumeDataSource {
            image_data_source: None,
            snapshot_data_source: Some(volume::SnapshotDataSource {
                snapshot_id: snapshot.id(&w.snapshot_id),
            }),
        });
    });
    assert_eq!(create_volume_code(&mut w, v).await, want);
}

#[rstest]
#[case::grow(Target::Existing, Some(2 << 30), Code::Ok)]
#[case::same(Target::Existing, Some(1 << 30), Code::Ok)]
#[case::shrink(Target::Existing, Some(1 << 20), Code::InvalidArgument)]
#[case::zero(Target::Existing, Some(0), Code::InvalidArgument)]
#[case::no_resources(Target::Existing, None, Code::InvalidArgument)]
#[case::unknown(Target::Unknown, Some(2 << 30), Code::NotFound)]
#[case::empty(Target::Empty, Some(2 << 30), Code::InvalidArgument)]
#[tokio::test]
async fn expand_volume(#[case] target: Target, #[case] size: Option<i64>, #[case] want: Code) {
    let mut w = world().await;
    let volume_id = target.id(&w.volume_id);
    let got = code(
        w.clients
            .volume
            .expand_volume(volume::ExpandVolumeRequest {
                volume_id,
                resources: size.map(|storage_bytes| volume::VolumeResources { storage_bytes }),
            })
            .await,
    );
    assert_eq!(got, want);
}

#[derive(Debug, Clone, Copy)]
enum Deletable {
    Volume,
    Snapshot,
    Bucket,
}

#[rstest]
#[tokio::test]
async fn deletes(
    #[values(Deletable::Volume, Deletable::Snapshot, Deletable::Bucket)] kind: Deletable,
    #[values(
        (Target::Existing, Code::Ok),
        (Target::Unknown, Code::NotFound),
        (Target::Empty, Code::InvalidArgument)
    )]
    case: (Target, Code),
) {
    let (target, want) = case;
    let mut w = world().await;
    let c = &mut w.clients;
    let got = match kind {
        Deletable::Volume => code(c.delete_volume(&target.id(&w.volume_id)).await),
        Deletable::Snapshot => code(c.delete_snapshot(&target.id(&w.snapshot_id)).await),
        Deletable::Bucket => code(c.delete_bucket(&target.id(&w.bucket_id)).await),
    };
    assert_eq!(got, want, "{kind:?} {target:?}");
}

#[rstest]
#[case::ok(Some(Target::Existing), true, Code::Ok)]
#[case::unknown_volume(Some(Target::Unknown), true, Code::NotFound)]
#[case::empty_volume_id(Some(Target::Empty), true, Code::InvalidArgument)]
#[case::no_spec(Some(Target::Existing), false, Code::InvalidArgument)]
#[case::no_snapshot(None, true, Code::InvalidArgument)]
#[tokio::test]
async fn create_snapshot(
    #[case] target: Option<Target>,
    #[case] with_spec: bool,
    #[case] want: Code,
) {
    let mut w = world().await;
    let volume_snapshot = target.map(|t| volume::VolumeSnapshot {
        metadata: None,
        spec: with_spec.then(|| volume::VolumeSnapshotSpec {
            volume_id: t.id(&w.volume_id),
        }),
        status: None,
    });
    let got = code(
        w.clients
            .volume
            .create_volume_snapshot(volume::CreateVolumeSnapshotRequest { volume_snapshot })
            .await,
    );
    assert_eq!(got, want);
}

#[rstest]
#[case::ok(Some(fixtures::bucket()), Code::Ok)]
#[case::no_bucket(None, Code::InvalidArgument)]
#[case::no_spec(Some(bucket::Bucket { spec: None, ..fixtures::bucket() }), Code::InvalidArgument)]
#[case::unknown_class(Some(bucket::Bucket { spec: Some(bucket::BucketSpec { class: "nope".into() }), ..fixtures::bucket() }), Code::InvalidArgument)]
#[tokio::test]
async fn create_bucket(#[case] b: Option<bucket::Bucket>, #[case] want: Code) {
    let mut w = world().await;
    let got = code(
        w.clients
            .bucket
            .create_bucket(bucket::CreateBucketRequest { bucket: b })
            .await,
    );
    assert_eq!(got, want);
}

/// Calls that take no object always answer OK.
#[tokio::test]
async fn parameterless_calls_answer() {
    let mut w = world().await;
    let c = &mut w.clients;
    let (m, v, b) = (&mut c.machine, &mut c.volume, &mut c.bucket);
    let codes = [
        code(m.version(machine::VersionRequest::default()).await),
        code(m.status(machine::StatusRequest {}).await),
        code(m.list_events(machine::ListEventsRequest::default()).await),
        code(v.version(volume::VersionRequest::default()).await),
        code(v.status(volume::StatusRequest {}).await),
        code(v.list_events(volume::ListEventsRequest::default()).await),
        code(v.list_volumes(volume::ListVolumesRequest::default()).await),
        code(
            v.list_volume_snapshots(volume::ListVolumeSnapshotsRequest::default())
                .await,
        ),
        code(b.version(bucket::VersionRequest::default()).await),
        code(b.list_events(bucket::ListEventsRequest::default()).await),
        code(b.list_buckets(bucket::ListBucketsRequest::default()).await),
        code(
            b.list_bucket_classes(bucket::ListBucketClassesRequest {})
                .await,
        ),
    ];
    assert_eq!(codes, [Code::Ok; 12]);
}
