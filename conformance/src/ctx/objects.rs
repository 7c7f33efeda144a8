//! The IRI object kinds as the runtime's RPCs reach them: how each [`IriKind`] is created,
//! listed and deleted through the generated clients, and where a run records its ids. The case
//! context's create/get/list/wait/delete helpers and the runner's cleanup are written once,
//! generic over [`RuntimeKind`].

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use iri_spec::{
    bucket::v1alpha1 as bucket, kind::IriKind, machine::v1alpha1 as machine,
    volume::v1alpha1 as volume,
};
use tonic::Status;

use super::clients::Clients;

/// Slack of the outer per-call timeout over the transport's deadline (see [`call`]).
pub(crate) const BACKSTOP: Duration = Duration::from_millis(250);

/// Runs one RPC under the per-call deadline `d`. The transport (`breaker::Guarded`) applies
/// the deadline and counts it per method; this outer one only backs it up (a response whose
/// body never ends).
pub(crate) async fn call<T>(
    d: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(d + BACKSTOP, fut).await {
        Ok(res) => res.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within the RPC deadline of {d:?}"
        ))),
    }
}

/// Ids of objects created by a run (objects may lack the run label if a runtime drops labels).
#[derive(Debug, Default)]
pub struct Created {
    pub(crate) machines: Mutex<BTreeSet<String>>,
    pub(crate) volumes: Mutex<BTreeSet<String>>,
    pub(crate) snapshots: Mutex<BTreeSet<String>>,
    pub(crate) buckets: Mutex<BTreeSet<String>>,
}

impl Created {
    /// Records the id of a created `T` (an empty id is not recorded).
    pub(crate) fn add<T: RuntimeKind>(&self, id: &str) {
        if !id.is_empty() {
            T::recorded(self)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.to_owned());
        }
    }

    /// The recorded ids of `T`.
    pub(crate) fn ids<T: RuntimeKind>(&self) -> BTreeSet<String> {
        T::recorded(self)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn no_endpoint<T: RuntimeKind>() -> Status {
    Status::unavailable(format!(
        "skipped: no {} runtime endpoint",
        T::SERVICE.name()
    ))
}

/// An [`IriKind`] with the RPCs that create, list and delete it.
pub trait RuntimeKind: IriKind<Status: std::fmt::Debug> + std::fmt::Debug {
    /// The list filter message (`MachineFilter`, ...).
    type Filter: Send + 'static;
    /// The kind in leftover and cleanup reports: `machine`, `volume`, `volume-snapshot`,
    /// `bucket`.
    const SLUG: &'static str;
    /// The create RPC's name (`CreateMachine`).
    const CREATE: &'static str;
    /// The list RPC's name (`ListMachines`).
    const LIST: &'static str;
    /// The delete RPC's name (`DeleteMachine`).
    const DELETE: &'static str;
    /// Whether a failed list by id is retried as a list by the case's labels: ceph-provider
    /// answers Internal for an unknown id (reference §2.1a; `volume.list.unknown_id_empty`, a
    /// should), so the suite looks volumes and snapshots up as the volume poollet does.
    const LIST_BY_LABEL_FALLBACK: bool = false;

    /// A filter by id and label selector.
    fn filter(id: &str, label_selector: HashMap<String, String>) -> Self::Filter;
    /// Where a run records the ids of this kind.
    fn recorded(created: &Created) -> &Mutex<BTreeSet<String>>;
    /// Whether the runtime has an endpoint for this kind's service.
    fn served(clients: &Clients) -> bool;
    /// The create RPC (`None`: a request without the object), raw.
    fn create(
        clients: &Clients,
        d: Duration,
        obj: Option<Self>,
    ) -> impl Future<Output = Result<Self, Status>> + Send;
    /// The list RPC, raw.
    fn list(
        clients: &Clients,
        d: Duration,
        filter: Option<Self::Filter>,
    ) -> impl Future<Output = Result<Vec<Self>, Status>> + Send;
    /// The delete RPC, raw.
    fn delete(
        clients: &Clients,
        d: Duration,
        id: String,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    /// A short description of a listed object (or of its absence) for timeout messages.
    fn describe(obj: Option<&Self>) -> String {
        format!("{:?}", obj.map(IriKind::status))
    }
}

macro_rules! runtime_kind {
    (
        $ty:ty, $filter:ty, $slug:literal, $create:literal, $list:literal, $delete:literal,
        $fallback:literal,
        $recorded:ident, $client:ident,
        create: |$c:ident, $obj:ident| $create_call:expr, $create_field:ident,
        list: |$lc:ident, $filt:ident| $list_call:expr, $list_field:ident,
        delete: |$dc:ident, $id:ident| $delete_call:expr
        $(, describe: $describe:path)?
    ) => {
        impl RuntimeKind for $ty {
            type Filter = $filter;
            const SLUG: &'static str = $slug;
            const CREATE: &'static str = $create;
            const LIST: &'static str = $list;
            const DELETE: &'static str = $delete;
            const LIST_BY_LABEL_FALLBACK: bool = $fallback;

            fn filter(id: &str, label_selector: HashMap<String, String>) -> Self::Filter {
                <$filter>::from_parts(id, label_selector)
            }
            fn recorded(created: &Created) -> &Mutex<BTreeSet<String>> {
                &created.$recorded
            }
            fn served(clients: &Clients) -> bool {
                clients.$client.is_some()
            }
            async fn create(
                clients: &Clients,
                d: Duration,
                $obj: Option<Self>,
            ) -> Result<Self, Status> {
                let mut $c = clients.$client.clone().ok_or_else(no_endpoint::<Self>)?;
                Ok(call(d, $create_call).await?.$create_field.unwrap_or_default())
            }
            async fn list(
                clients: &Clients,
                d: Duration,
                $filt: Option<Self::Filter>,
            ) -> Result<Vec<Self>, Status> {
                let mut $lc = clients.$client.clone().ok_or_else(no_endpoint::<Self>)?;
                Ok(call(d, $list_call).await?.$list_field)
            }
            async fn delete(clients: &Clients, d: Duration, $id: String) -> Result<(), Status> {
                let mut $dc = clients.$client.clone().ok_or_else(no_endpoint::<Self>)?;
                call(d, $delete_call).await.map(|_| ())
            }
            $(fn describe(obj: Option<&Self>) -> String {
                $describe(obj)
            })?
        }
    };
}

/// The `{id, label_selector}` filters every list RPC takes.
trait FromParts {
    fn from_parts(id: &str, label_selector: HashMap<String, String>) -> Self;
}

macro_rules! from_parts {
    ($($filter:ty),*) => {$(
        impl FromParts for $filter {
            fn from_parts(id: &str, label_selector: HashMap<String, String>) -> Self {
                Self { id: id.to_owned(), label_selector }
            }
        }
    )*};
}
from_parts!(
    machine::MachineFilter,
    volume::VolumeFilter,
    volume::VolumeSnapshotFilter,
    bucket::BucketFilter
);

runtime_kind!(
    machine::Machine, machine::MachineFilter, "machine", "CreateMachine", "ListMachines", "DeleteMachine",
    false,
    machines, machine,
    create: |c, obj| c.create_machine(machine::CreateMachineRequest { machine: obj }), machine,
    list: |c, filter| c.list_machines(machine::ListMachinesRequest { filter }), machines,
    delete: |c, id| c.delete_machine(machine::DeleteMachineRequest { machine_id: id }),
    describe: describe_machine
);
runtime_kind!(
    volume::Volume, volume::VolumeFilter, "volume", "CreateVolume", "ListVolumes", "DeleteVolume",
    true,
    volumes, volume,
    create: |c, obj| c.create_volume(volume::CreateVolumeRequest { volume: obj }), volume,
    list: |c, filter| c.list_volumes(volume::ListVolumesRequest { filter }), volumes,
    delete: |c, id| c.delete_volume(volume::DeleteVolumeRequest { volume_id: id })
);
runtime_kind!(
    volume::VolumeSnapshot, volume::VolumeSnapshotFilter, "volume-snapshot",
    "CreateVolumeSnapshot", "ListVolumeSnapshots", "DeleteVolumeSnapshot", true,
    snapshots, volume,
    create: |c, obj| c.create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
        volume_snapshot: obj,
    }), volume_snapshot,
    list: |c, filter| c.list_volume_snapshots(volume::ListVolumeSnapshotsRequest { filter }),
        volume_snapshots,
    delete: |c, id| c.delete_volume_snapshot(volume::DeleteVolumeSnapshotRequest {
        volume_snapshot_id: id,
    })
);
runtime_kind!(
    bucket::Bucket, bucket::BucketFilter, "bucket", "CreateBucket", "ListBuckets", "DeleteBucket",
    false,
    buckets, bucket,
    create: |c, obj| c.create_bucket(bucket::CreateBucketRequest { bucket: obj }), bucket,
    list: |c, filter| c.list_buckets(bucket::ListBucketsRequest { filter }), buckets,
    delete: |c, id| c.delete_bucket(bucket::DeleteBucketRequest { bucket_id: id })
);

/// A short description of a listed machine for timeout messages.
pub fn describe_machine(m: Option<&machine::Machine>) -> String {
    match m {
        None => "not listed".to_owned(),
        Some(m) => {
            let state = m.status.as_ref().map_or("no status".to_owned(), |s| {
                machine::MachineState::try_from(s.state)
                    .map_or(format!("state {}", s.state), |st| {
                        st.as_str_name().to_owned()
                    })
            });
            let gens = format!(
                "generation {} observed {}",
                m.metadata.as_ref().map_or(-1, |md| md.generation),
                m.status.as_ref().map_or(-1, |s| s.observed_generation)
            );
            format!("{state}, {gens}")
        }
    }
}
