//! Shared test helpers: clients for a mock, and conversions of IRI messages to sorted JSON values
//! (prost messages hold HashMaps, so their Debug output is not deterministic).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use iri_mock::{MockRuntime, MockRuntimeBuilder};
use iri_spec::{
    bucket::v1alpha1::{self as bucket, bucket_runtime_client::BucketRuntimeClient},
    event::v1alpha1 as event,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    meta::v1alpha1 as meta,
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use iri_spec::{
    machine::v1alpha1::{ListEventsRequest, ListMachinesRequest},
    volume::v1alpha1::ListVolumesRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Generated clients of all three services for one mock.
#[derive(Clone)]
pub struct Clients {
    pub machine: MachineRuntimeClient<Channel>,
    pub volume: VolumeRuntimeClient<Channel>,
    pub bucket: BucketRuntimeClient<Channel>,
}

/// A client method: the `$field` of what `$rpc` answers for a `filter` (everything for `None`).
macro_rules! filtered_list {
    ($(#[$doc:meta])* $name:ident: $client:ident.$rpc:ident($req:ident, $filter:ty) -> $field:ident: $item:ty) => {
        $(#[$doc])*
        pub async fn $name(&mut self, filter: Option<$filter>) -> Vec<$item> {
            let res = self.$client.$rpc($req { filter }).await.unwrap();
            res.into_inner().$field
        }
    };
}

/// A client method: what `$rpc` answers for the object `id` (named in the request's `$field`).
macro_rules! by_id {
    ($(#[$doc:meta])* $name:ident: $client:ident.$rpc:ident($module:ident::$req:ident { $field:ident }) -> $resp:ty) => {
        $(#[$doc])*
        pub async fn $name(&mut self, id: &str) -> Reply<$resp> {
            let req = $module::$req { $field: id.to_owned() };
            self.$client.$rpc(req).await
        }
    };
}

impl Clients {
    by_id!(
        /// Deletes machine `id`.
        delete_machine: machine.delete_machine(machine::DeleteMachineRequest { machine_id }) -> machine::DeleteMachineResponse
    );
    by_id!(
        /// Asks for an exec session on machine `id`.
        exec: machine.exec(machine::ExecRequest { machine_id }) -> machine::ExecResponse
    );
    by_id!(
        /// Deletes volume `id`.
        delete_volume: volume.delete_volume(volume::DeleteVolumeRequest { volume_id }) -> volume::DeleteVolumeResponse
    );
    by_id!(
        /// Deletes volume snapshot `id`.
        delete_snapshot: volume.delete_volume_snapshot(volume::DeleteVolumeSnapshotRequest { volume_snapshot_id }) -> volume::DeleteVolumeSnapshotResponse
    );
    by_id!(
        /// Deletes bucket `id`.
        delete_bucket: bucket.delete_bucket(bucket::DeleteBucketRequest { bucket_id }) -> bucket::DeleteBucketResponse
    );
    filtered_list!(
        /// The machines the filter matches.
        find_machines: machine.list_machines(ListMachinesRequest, machine::MachineFilter) -> machines: machine::Machine
    );
    filtered_list!(
        /// The machine events the filter matches.
        machine_events_by: machine.list_events(ListEventsRequest, machine::EventFilter) -> events: event::Event
    );
    filtered_list!(
        /// The volumes the filter matches.
        find_volumes: volume.list_volumes(ListVolumesRequest, volume::VolumeFilter) -> volumes: volume::Volume
    );

    pub fn new(mock: &MockRuntime) -> Self {
        Clients {
            machine: MachineRuntimeClient::new(mock.machine_channel()),
            volume: VolumeRuntimeClient::new(mock.volume_channel()),
            bucket: BucketRuntimeClient::new(mock.bucket_channel()),
        }
    }

    /// Creates a machine; its id.
    pub async fn create_machine(&mut self, m: machine::Machine) -> String {
        id_of(self.create_machine_object(m).await.metadata)
    }

    /// Creates a machine; the machine CreateMachine answered.
    pub async fn create_machine_object(&mut self, m: machine::Machine) -> machine::Machine {
        let req = machine::CreateMachineRequest { machine: Some(m) };
        let res = self.machine.create_machine(req).await.unwrap();
        res.into_inner().machine.unwrap()
    }

    /// The state of machine `id`, which must be listed.
    pub async fn machine_state(&mut self, id: &str) -> machine::MachineState {
        let m = self.get_machine(id).await.unwrap();
        machine::MachineState::try_from(m.status.unwrap().state).unwrap()
    }

    /// Changes a machine's power.
    pub async fn power(&mut self, id: &str, power: machine::Power) {
        let req = machine::UpdateMachinePowerRequest {
            machine_id: id.to_owned(),
            power: power as i32,
        };
        self.machine.update_machine_power(req).await.unwrap();
    }

    /// Snapshots volume `volume_id`; the snapshot CreateVolumeSnapshot answered.
    pub async fn create_snapshot(&mut self, volume_id: &str) -> volume::VolumeSnapshot {
        let res = self.volume.create_volume_snapshot(snapshot_of(volume_id));
        res.await.unwrap().into_inner().volume_snapshot.unwrap()
    }

    /// Creates a bucket; the bucket CreateBucket answered.
    pub async fn create_bucket(&mut self, b: bucket::Bucket) -> bucket::Bucket {
        let req = bucket::CreateBucketRequest { bucket: Some(b) };
        let res = self.bucket.create_bucket(req).await.unwrap();
        res.into_inner().bucket.unwrap()
    }

    pub async fn get_machine(&mut self, id: &str) -> Option<machine::Machine> {
        let filter = machine::MachineFilter {
            id: id.to_owned(),
            ..Default::default()
        };
        self.find_machines(Some(filter)).await.into_iter().next()
    }

    pub async fn list_machines(&mut self) -> Vec<machine::Machine> {
        self.find_machines(None).await
    }

    /// Attaches volume `v` to machine `id`; the call's result.
    pub async fn attach_volume(
        &mut self,
        id: &str,
        v: machine::Volume,
    ) -> Reply<machine::AttachVolumeResponse> {
        let machine_id = id.to_owned();
        let req = machine::AttachVolumeRequest {
            machine_id,
            volume: Some(v),
        };
        self.machine.attach_volume(req).await
    }

    /// The machine service's Version answer.
    pub async fn machine_version(&mut self) -> machine::VersionResponse {
        let req = machine::VersionRequest::default();
        self.machine.version(req).await.unwrap().into_inner()
    }

    /// Every machine event.
    pub async fn machine_events(&mut self) -> Vec<event::Event> {
        self.machine_events_by(None).await
    }

    /// The machine service's class status.
    pub async fn machine_status(&mut self) -> machine::StatusResponse {
        let req = machine::StatusRequest {};
        self.machine.status(req).await.unwrap().into_inner()
    }

    /// The volume service's class status.
    pub async fn volume_status(&mut self) -> volume::StatusResponse {
        let req = volume::StatusRequest {};
        self.volume.status(req).await.unwrap().into_inner()
    }

    /// Every volume.
    pub async fn list_volumes(&mut self) -> Vec<volume::Volume> {
        self.find_volumes(None).await
    }

    /// Volume `id`, if it is listed.
    pub async fn get_volume(&mut self, id: &str) -> Option<volume::Volume> {
        let filter = volume::VolumeFilter {
            id: id.to_owned(),
            ..Default::default()
        };
        self.find_volumes(Some(filter)).await.pop()
    }

    /// Every volume snapshot.
    pub async fn list_snapshots(&mut self) -> Vec<volume::VolumeSnapshot> {
        let req = volume::ListVolumeSnapshotsRequest::default();
        let res = self.volume.list_volume_snapshots(req).await.unwrap();
        res.into_inner().volume_snapshots
    }

    /// Expands volume `id` to `storage_bytes`; the call's result.
    pub async fn expand_volume(
        &mut self,
        id: &str,
        storage_bytes: i64,
    ) -> Reply<volume::ExpandVolumeResponse> {
        let resources = Some(volume::VolumeResources { storage_bytes });
        let volume_id = id.to_owned();
        let req = volume::ExpandVolumeRequest {
            volume_id,
            resources,
        };
        self.volume.expand_volume(req).await
    }

    /// The bucket classes.
    pub async fn bucket_classes(&mut self) -> Vec<bucket::BucketClass> {
        let req = bucket::ListBucketClassesRequest {};
        let res = self.bucket.list_bucket_classes(req).await.unwrap();
        res.into_inner().bucket_classes
    }

    /// Every bucket.
    pub async fn list_buckets(&mut self) -> Vec<bucket::Bucket> {
        let req = bucket::ListBucketsRequest::default();
        let res = self.bucket.list_buckets(req).await.unwrap();
        res.into_inner().buckets
    }

    /// Creates a volume; its id.
    pub async fn create_volume(&mut self, v: volume::Volume) -> String {
        let req = volume::CreateVolumeRequest { volume: Some(v) };
        let res = self.volume.create_volume(req).await.unwrap();
        id_of(res.into_inner().volume.unwrap().metadata)
    }
}

/// Starts `builder`'s mock in process; the mock and clients for it.
pub async fn start(builder: MockRuntimeBuilder) -> (MockRuntime, Clients) {
    let mock = builder.start_in_process().await.unwrap();
    let clients = Clients::new(&mock);
    (mock, clients)
}

/// What a unary call answers.
pub type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

/// The resources (`cpu`, `memory`) a machine class status entry announces.
pub fn class_resources(c: &machine::MachineClassStatus) -> &HashMap<String, i64> {
    &c.machine_class
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap()
        .resources
}

/// The id in an object's metadata, which must be set.
pub fn id_of(md: Option<meta::ObjectMetadata>) -> String {
    md.unwrap().id
}

/// A CreateVolumeSnapshot request for volume `volume_id`.
pub fn snapshot_of(volume_id: &str) -> volume::CreateVolumeSnapshotRequest {
    volume::CreateVolumeSnapshotRequest {
        volume_snapshot: Some(volume::VolumeSnapshot {
            metadata: None,
            spec: Some(volume::VolumeSnapshotSpec {
                volume_id: volume_id.to_owned(),
            }),
            status: None,
        }),
    }
}

/// A label map of `pairs`.
pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The code a call answered (`Ok` for a response).
pub fn code<T>(res: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    res.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
}

/// A gRPC result whose response does not matter: `{"ok": "ok"}` or `{"err": "<Code>"}`.
pub fn done<T>(res: Result<tonic::Response<T>, tonic::Status>) -> Value {
    outcome(res, |_| json!("ok"))
}

fn sorted<V: Clone + Into<Value>>(map: &HashMap<String, V>) -> Value {
    let sorted: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, v.clone().into())).collect();
    json!(sorted)
}

fn bytes_map(map: &HashMap<String, Vec<u8>>) -> Value {
    let sorted: BTreeMap<&String, String> = map
        .iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned()))
        .collect();
    json!(sorted)
}

pub fn meta_json(m: &meta::ObjectMetadata) -> Value {
    json!({
        "id": m.id,
        "annotations": sorted(&m.annotations),
        "labels": sorted(&m.labels),
        "generation": m.generation,
        "created_at": m.created_at,
        "deleted_at": m.deleted_at,
    })
}

fn opt<T>(v: Option<&T>, f: impl Fn(&T) -> Value) -> Value {
    v.map_or(Value::Null, f)
}

pub fn machine_volume_json(v: &machine::Volume) -> Value {
    json!({
        "name": v.name,
        "device": v.device,
        "local_disk": opt(v.local_disk.as_ref(), |d| json!({
            "size_bytes": d.size_bytes,
            "image": opt(d.image.as_ref(), |i| json!(i.image)),
        })),
        "connection": opt(v.connection.as_ref(), |c| json!({
            "driver": c.driver,
            "handle": c.handle,
            "attributes": sorted(&c.attributes),
            "effective_storage_bytes": c.effective_storage_bytes,
        })),
    })
}

pub fn machine_json(m: &machine::Machine) -> Value {
    json!({
        "metadata": opt(m.metadata.as_ref(), meta_json),
        "spec": opt(m.spec.as_ref(), |s| json!({
            "power": machine::Power::try_from(s.power).map_or("?", |p| p.as_str_name()),
            "class": s.class,
            "ignition_data_len": s.ignition_data.len(),
            "volumes": s.volumes.iter().map(machine_volume_json).collect::<Vec<_>>(),
            "network_interfaces": s.network_interfaces.iter().map(|n| json!({
                "name": n.name,
                "network_id": n.network_id,
                "ips": n.ips,
                "attributes": sorted(&n.attributes),
            })).collect::<Vec<_>>(),
            "guest_config": opt(s.guest_config.as_ref(), |g| json!(g.hostname)),
        })),
        "status": opt(m.status.as_ref(), |s| json!({
            "observed_generation": s.observed_generation,
            "state": machine::MachineState::try_from(s.state).map_or("?", |st| st.as_str_name()),
            "image_ref": s.image_ref,
            "volumes": s.volumes.iter().map(|v| json!({
                "name": v.name, "handle": v.handle,
                "state": machine::VolumeState::try_from(v.state).map_or("?", |st| st.as_str_name()),
            })).collect::<Vec<_>>(),
            "network_interfaces": s.network_interfaces.iter().map(|v| json!({
                "name": v.name, "handle": v.handle,
                "state": machine::NetworkInterfaceState::try_from(v.state).map_or("?", |st| st.as_str_name()),
            })).collect::<Vec<_>>(),
        })),
    })
}

pub fn volume_json(v: &volume::Volume) -> Value {
    json!({
        "metadata": opt(v.metadata.as_ref(), meta_json),
        "spec": opt(v.spec.as_ref(), |s| json!({
            "class": s.class,
            "storage_bytes": opt(s.resources.as_ref(), |r| json!(r.storage_bytes)),
            "encryption": s.encryption.is_some(),
            "data_source": opt(s.volume_data_source.as_ref(), |d| json!({
                "image": opt(d.image_data_source.as_ref(), |i| json!(i.image)),
                "snapshot": opt(d.snapshot_data_source.as_ref(), |s| json!(s.snapshot_id)),
            })),
        })),
        "status": opt(v.status.as_ref(), |s| json!({
            "state": volume::VolumeState::try_from(s.state).map_or("?", |st| st.as_str_name()),
            "access": opt(s.access.as_ref(), |a| json!({
                "driver": a.driver,
                "handle": a.handle,
                "attributes": sorted(&a.attributes),
                "secret_data": bytes_map(&a.secret_data),
            })),
            "storage_bytes": opt(s.resources.as_ref(), |r| json!(r.storage_bytes)),
        })),
    })
}

pub fn snapshot_json(s: &volume::VolumeSnapshot) -> Value {
    json!({
        "metadata": opt(s.metadata.as_ref(), meta_json),
        "spec": opt(s.spec.as_ref(), |s| json!({ "volume_id": s.volume_id })),
        "status": opt(s.status.as_ref(), |s| json!({
            "state": volume::VolumeSnapshotState::try_from(s.state).map_or("?", |st| st.as_str_name()),
            "size": s.size,
        })),
    })
}

pub fn bucket_json(b: &bucket::Bucket) -> Value {
    json!({
        "metadata": opt(b.metadata.as_ref(), meta_json),
        "spec": opt(b.spec.as_ref(), |s| json!({ "class": s.class })),
        "status": opt(b.status.as_ref(), |s| json!({
            "state": bucket::BucketState::try_from(s.state).map_or("?", |st| st.as_str_name()),
            "access": opt(s.access.as_ref(), |a| json!({
                "endpoint": a.endpoint,
                "secret_keys": a.secret_data.keys().collect::<std::collections::BTreeSet<_>>(),
            })),
        })),
    })
}

pub fn event_json(e: &event::Event) -> Value {
    json!(opt(e.spec.as_ref(), |s| json!({
        "involved_object_meta": opt(s.involved_object_meta.as_ref(), meta_json),
        "reason": s.reason,
        "message": s.message,
        "type": s.r#type,
        "event_time": s.event_time,
        "action": s.action,
    })))
}

pub fn machine_status_json(s: &machine::StatusResponse) -> Value {
    json!(
        s.machine_class_status
            .iter()
            .map(|c| json!({
                "class": opt(c.machine_class.as_ref(), |c| json!({
                    "name": c.name,
                    "capabilities": opt(c.capabilities.as_ref(), |cap| sorted(&cap.resources)),
                })),
                "quantity": c.quantity,
            }))
            .collect::<Vec<_>>()
    )
}

pub fn volume_status_json(s: &volume::StatusResponse) -> Value {
    json!(s.volume_class_status.iter().map(|c| json!({
        "class": opt(c.volume_class.as_ref(), |c| json!({
            "name": c.name,
            "capabilities": opt(c.capabilities.as_ref(), |cap| json!({"tps": cap.tps, "iops": cap.iops})),
        })),
        "quantity": c.quantity,
    })).collect::<Vec<_>>())
}

/// A gRPC result as a JSON value: `{"ok": <value>}` or `{"err": "<Code>"}`.
pub fn outcome<T>(
    res: Result<tonic::Response<T>, tonic::Status>,
    f: impl Fn(&T) -> Value,
) -> Value {
    match res {
        Ok(resp) => json!({ "ok": f(resp.get_ref()) }),
        Err(status) => json!({ "err": format!("{:?}", status.code()) }),
    }
}

/// A create whose response does not matter: `{"ok": "created"}` or `{"err": "<Code>"}`.
pub fn created<T>(res: Result<tonic::Response<T>, tonic::Status>) -> Value {
    outcome(res, |_| json!("created"))
}
