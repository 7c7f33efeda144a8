//! The mock `VolumeRuntime`: volumes (PENDING → AVAILABLE with access), expansion, snapshots
//! (PENDING → READY), deletion phases, events and class status.

use std::sync::Arc;

use iri_spec::volume::v1alpha1::{
    self as volume, VolumeSnapshotState, VolumeState,
    volume_runtime_server::{VolumeRuntime, VolumeRuntimeServer},
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{
    Method, Mutant,
    core::{Core, EventLog, EventQuery, Store, Timers, invalid, labels_match, not_found},
    lock,
};

/// Stored volumes, snapshots and their events.
#[derive(Debug)]
pub(crate) struct VolumeStore {
    pub(crate) volumes: Store<volume::Volume>,
    pub(crate) snapshots: Store<volume::VolumeSnapshot>,
    pub(crate) events: EventLog,
}

impl VolumeStore {
    pub(crate) fn new(event_capacity: usize) -> Self {
        VolumeStore {
            volumes: Store::default(),
            snapshots: Store::default(),
            events: EventLog::new(event_capacity),
        }
    }
}

fn meta_id(m: Option<&iri_spec::meta::v1alpha1::ObjectMetadata>) -> String {
    m.map(|m| m.id.clone()).unwrap_or_default()
}

impl Core {
    fn access_for(&self, id: &str, class: &str) -> Option<volume::VolumeAccess> {
        if self.has(Mutant::VolumeAccessMissing) {
            return None;
        }
        Some(volume::VolumeAccess {
            driver: "iri-mock".to_owned(),
            handle: format!("iri-mock-volume-{id}"),
            attributes: [
                ("volume-id".to_owned(), id.to_owned()),
                ("class".to_owned(), class.to_owned()),
            ]
            .into_iter()
            .collect(),
            secret_data: Default::default(),
        })
    }

    /// Applies every due volume and snapshot transition.
    pub(crate) fn advance_volumes(&self, st: &mut VolumeStore) {
        let now = Instant::now();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for seq in st.volumes.due(now) {
            let Some(timers) = st.volumes.timers_by_seq(seq) else {
                continue;
            };
            if due(timers.gone) {
                if let Some(md) = st.volumes.remove_seq(seq).as_ref() {
                    let ev = self.event(md, "volume", "Deleted", "Delete", "volume deleted");
                    st.events.push(ev);
                }
                continue;
            }
            let Some(slot) = st.volumes.slot_by_seq_mut(seq) else {
                continue;
            };
            let mut changed = None;
            if due(timers.ready) {
                slot.timers.ready = None;
                if !timers.deleting && !self.has(Mutant::VolumeNeverAvailable) {
                    let id = meta_id(slot.obj.metadata.as_ref());
                    let spec = slot.obj.spec.clone().unwrap_or_default();
                    let access = self.access_for(&id, &spec.class);
                    let status = slot.obj.status.get_or_insert_default();
                    if status.state == VolumeState::VolumePending as i32 {
                        status.state = VolumeState::VolumeAvailable as i32;
                        status.access = access;
                        status.resources = spec.resources;
                        changed = Some("volume available");
                    }
                }
            }
            if due(timers.apply) {
                slot.timers.apply = None;
                if !self.has(Mutant::ExpandSpecOnly) {
                    let resources = slot.obj.spec.as_ref().and_then(|s| s.resources);
                    let status = slot.obj.status.get_or_insert_default();
                    if status.state == VolumeState::VolumeAvailable as i32 {
                        status.resources = resources;
                        changed = changed.or(Some("volume expanded"));
                    }
                }
            }
            if let Some(message) = changed
                && let Some(md) = slot.obj.metadata.clone()
            {
                let ev = self.event(&md, "volume", "StateChanged", "UpdateState", message);
                st.events.push(ev);
            }
        }
        for seq in st.snapshots.due(now) {
            let Some(timers) = st.snapshots.timers_by_seq(seq) else {
                continue;
            };
            if due(timers.gone) {
                if let Some(md) = st.snapshots.remove_seq(seq).as_ref() {
                    let ev = self.event(
                        md,
                        "snapshot",
                        "Deleted",
                        "Delete",
                        "volume snapshot deleted",
                    );
                    st.events.push(ev);
                }
                continue;
            }
            let Some(slot) = st.snapshots.slot_by_seq_mut(seq) else {
                continue;
            };
            if due(timers.ready) {
                slot.timers.ready = None;
                if !timers.deleting && !self.has(Mutant::SnapshotNeverReady) {
                    let status = slot.obj.status.get_or_insert_default();
                    status.state = VolumeSnapshotState::VolumeSnapshotReady as i32;
                    if self.has(Mutant::SnapshotSizeZero) {
                        status.size = 0;
                    }
                    if let Some(md) = slot.obj.metadata.clone() {
                        let ev = self.event(
                            &md,
                            "snapshot",
                            "StateChanged",
                            "UpdateState",
                            "volume snapshot ready",
                        );
                        st.events.push(ev);
                    }
                }
            }
        }
    }

    fn render_volume(&self, v: &volume::Volume) -> volume::Volume {
        let mut v = v.clone();
        if self.has(Mutant::VolumeNoStatus) {
            v.status = None;
        }
        if self.has(Mutant::VolumeNoSpec) {
            v.spec = None;
        }
        v
    }

    fn create_volume(
        &self,
        req: volume::CreateVolumeRequest,
    ) -> Result<volume::CreateVolumeResponse, Status> {
        let lax = self.has(Mutant::VolumeMissingSpecAccepted);
        let mut v = match req.volume {
            Some(v) => v,
            None if lax => volume::Volume::default(),
            None => return Err(invalid("volume is required")),
        };
        let (spec, spec_given) = match v.spec.take() {
            Some(spec) => (spec, true),
            None if lax => (volume::VolumeSpec::default(), false),
            None => return Err(invalid("volume.spec is required")),
        };
        if spec_given
            && self.volume_class(&spec.class).is_none()
            && !self.has(Mutant::VolumeUnknownClassAccepted)
        {
            return Err(invalid(format!("unknown volume class {:?}", spec.class)));
        }
        let size = spec.resources.map_or(0, |r| r.storage_bytes);
        if spec_given && size <= 0 && !self.has(Mutant::ZeroSizeAccepted) {
            return Err(invalid(format!(
                "volume.spec.resources.storage_bytes must be positive, got {size}"
            )));
        }
        if let Some(src) = spec.volume_data_source.as_ref()
            && src.image_data_source.is_some()
            && src.snapshot_data_source.is_some()
            && !self.has(Mutant::VolumeTwoSourcesAccepted)
        {
            return Err(invalid(
                "volume_data_source has both an image and a snapshot source: set at most one",
            ));
        }
        // The snapshot a volume is restored from must exist in this runtime: an empty id is
        // malformed (InvalidArgument), an unknown one is NotFound (as CSI's CreateVolume answers
        // for a missing source snapshot). The id is the IRI snapshot id, not the ironcore object
        // name the Go volumepoollet sends (reference §8.3).
        let source_snapshot = spec
            .volume_data_source
            .as_ref()
            .and_then(|src| src.snapshot_data_source.as_ref())
            .filter(|_| !self.has(Mutant::UnknownSnapshotSourceAccepted))
            .map(|src| src.snapshot_id.clone());
        if source_snapshot.as_ref().is_some_and(String::is_empty) {
            return Err(invalid("snapshot_data_source.snapshot_id is required"));
        }
        let mut md = v.metadata.take().unwrap_or_default();
        let id = if self.has(Mutant::VolumeClientIdHonoured) && !md.id.is_empty() {
            md.id.clone()
        } else {
            self.new_id()
        };
        if self.has(Mutant::VolumeAnnotationsDropped) {
            md.annotations.clear();
        }
        md.id = id.clone();
        md.generation = 0;
        md.deleted_at = 0;
        md.created_at = self.created_at(false, self.has(Mutant::VolumeCreatedAtSeconds));
        if self.has(Mutant::VolumeLabelsDropped) {
            md.labels.clear();
        }
        let stored = volume::Volume {
            metadata: Some(md),
            spec: Some(spec),
            status: Some(volume::VolumeStatus {
                state: VolumeState::VolumePending as i32,
                access: None,
                resources: None,
            }),
        };
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        if let Some(snapshot_id) = source_snapshot
            && !st.snapshots.contains(&snapshot_id)
        {
            return Err(not_found("volume snapshot", &snapshot_id));
        }
        let at = Instant::now() + self.config.delays.provision;
        st.volumes.insert(
            &id,
            stored.clone(),
            Timers {
                ready: Some(at),
                ..Timers::default()
            },
        );
        if let Some(md) = stored.metadata.as_ref() {
            let ev = self.event(md, "volume", "Created", "Create", "volume created");
            st.events.push(ev);
        }
        drop(st);
        tracing::info!(volume.id = %id, "volume created");
        Ok(volume::CreateVolumeResponse {
            volume: Some(self.render_volume(&stored)),
        })
    }

    fn check_volume_id(&self, id: &str, what: &str) -> Result<(), Status> {
        if id.is_empty() && !self.has(Mutant::VolumeEmptyIdAccepted) {
            return Err(invalid(format!("{what} is required")));
        }
        Ok(())
    }

    fn expand_volume(&self, req: volume::ExpandVolumeRequest) -> Result<(), Status> {
        self.check_volume_id(&req.volume_id, "volume_id")?;
        let Some(size) = req.resources.map(|r| r.storage_bytes) else {
            if self.has(Mutant::ExpandMissingResourcesOk) {
                return Ok(());
            }
            return Err(invalid("resources is required"));
        };
        if size <= 0 {
            return Err(invalid(format!(
                "storage_bytes must be positive, got {size}"
            )));
        }
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let id = req.volume_id;
        let Some(slot) = st.volumes.get_mut(&id) else {
            if self.has(Mutant::ExpandUnknownOk) {
                return Ok(());
            }
            return Err(not_found("volume", &id));
        };
        let resources = slot
            .obj
            .spec
            .get_or_insert_default()
            .resources
            .get_or_insert_default();
        if size < resources.storage_bytes && !self.has(Mutant::ExpandShrinkAccepted) {
            return Err(invalid(format!(
                "volume {id:?} cannot shrink from {} to {size} bytes",
                resources.storage_bytes
            )));
        }
        if size == resources.storage_bytes {
            if self.has(Mutant::ExpandSameSizeErrors) {
                return Err(Status::internal(format!(
                    "volume {id:?} already has {size} bytes"
                )));
            }
            return Ok(());
        }
        resources.storage_bytes = size;
        let at = Instant::now() + self.config.delays.apply;
        slot.timers.apply = Some(at);
        st.volumes.wake_at(&id, at);
        tracing::info!(volume.id = %id, size, "volume expanding");
        Ok(())
    }

    fn delete_volume(&self, id: &str) -> Result<(), Status> {
        self.check_volume_id(id, "volume_id")?;
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let Some(timers) = st.volumes.timers(id) else {
            if self.has(Mutant::VolumeDeleteUnknownOk) {
                return Ok(());
            }
            return Err(not_found("volume", id));
        };
        if timers.deleting {
            if self.has(Mutant::VolumeDeleteTwiceNotFound) {
                return Err(not_found("volume", id));
            }
            return Ok(());
        }
        if self.has(Mutant::VolumeDeleteImmediate) {
            if let Some(md) = st.volumes.remove(id).as_ref() {
                let ev = self.event(md, "volume", "Deleted", "Delete", "volume deleted");
                st.events.push(ev);
            }
            return Ok(());
        }
        let at = Instant::now() + self.config.delays.terminate;
        let md = {
            let Some(slot) = st.volumes.get_mut(id) else {
                return Err(not_found("volume", id));
            };
            slot.timers.deleting = true;
            slot.timers.gone = Some(at);
            if !self.has(Mutant::VolumeDeletedAtUnset) {
                slot.obj.metadata.get_or_insert_default().deleted_at = self.clock.unix_nanos();
            }
            slot.obj.metadata.clone().unwrap_or_default()
        };
        st.volumes.wake_at(id, at);
        let ev = self.event(
            &md,
            "volume",
            "Deleting",
            "Delete",
            "volume is being deleted",
        );
        st.events.push(ev);
        tracing::info!(volume.id = %id, "volume deleting");
        Ok(())
    }

    pub(crate) fn list_volumes(&self, filter: Option<volume::VolumeFilter>) -> Vec<volume::Volume> {
        let filter = filter.unwrap_or_default();
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let by_id = !filter.id.is_empty() && !self.has(Mutant::VolumeIdFilterIgnored);
        st.volumes
            .iter()
            .filter(|obj| !by_id || obj.metadata.as_ref().is_some_and(|m| m.id == filter.id))
            .filter(|obj| {
                self.has(Mutant::VolumeLabelSelectorIgnored)
                    || labels_match(&filter.label_selector, obj.metadata.as_ref())
            })
            .map(|obj| {
                let mut v = self.render_volume(&obj);
                if self.has(Mutant::VolumeIdUnstable)
                    && let Some(md) = v.metadata.as_mut()
                {
                    md.id = md.id.chars().rev().collect();
                }
                v
            })
            .collect()
    }

    fn create_snapshot(
        &self,
        req: volume::CreateVolumeSnapshotRequest,
    ) -> Result<volume::CreateVolumeSnapshotResponse, Status> {
        let lax = self.has(Mutant::SnapshotValidationOff);
        let Some(mut snap) = req.volume_snapshot else {
            if lax {
                return Err(not_found("volume", ""));
            }
            return Err(invalid("volume_snapshot is required"));
        };
        let Some(spec) = snap.spec.take() else {
            if lax {
                return Err(not_found("volume", ""));
            }
            return Err(invalid("volume_snapshot.spec is required"));
        };
        if spec.volume_id.is_empty() && !lax {
            return Err(invalid("volume_snapshot.spec.volume_id is required"));
        }
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let size = match st.volumes.get(&spec.volume_id) {
            Some(v) => v
                .spec
                .as_ref()
                .and_then(|s| s.resources)
                .map_or(0, |r| r.storage_bytes),
            None if self.has(Mutant::SnapshotUnknownVolumeAccepted) => 0,
            None => return Err(not_found("volume", &spec.volume_id)),
        };
        let mut md = snap.metadata.take().unwrap_or_default();
        if self.has(Mutant::SnapshotLabelsDropped) {
            md.labels.clear();
        }
        let id = self.new_id();
        md.id = id.clone();
        md.generation = 0;
        md.deleted_at = 0;
        md.created_at = self.clock.unix_nanos();
        let stored = volume::VolumeSnapshot {
            metadata: Some(md),
            spec: Some(spec),
            status: Some(volume::VolumeSnapshotStatus {
                state: VolumeSnapshotState::VolumeSnapshotPending as i32,
                size,
            }),
        };
        let at = Instant::now() + self.config.delays.provision;
        st.snapshots.insert(
            &id,
            stored.clone(),
            Timers {
                ready: Some(at),
                ..Timers::default()
            },
        );
        if let Some(md) = stored.metadata.as_ref() {
            let ev = self.event(
                md,
                "snapshot",
                "Created",
                "Create",
                "volume snapshot created",
            );
            st.events.push(ev);
        }
        tracing::info!(volume_snapshot.id = %id, "volume snapshot created");
        let mut stored = stored;
        if self.has(Mutant::SnapshotNoStatus) {
            stored.status = None;
        }
        Ok(volume::CreateVolumeSnapshotResponse {
            volume_snapshot: Some(stored),
        })
    }

    fn delete_snapshot(&self, id: &str) -> Result<(), Status> {
        self.check_volume_id(id, "volume_snapshot_id")?;
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let Some(timers) = st.snapshots.timers(id) else {
            if self.has(Mutant::SnapshotDeleteUnknownOk) {
                return Ok(());
            }
            return Err(not_found("volume snapshot", id));
        };
        if timers.deleting {
            return Ok(());
        }
        let at = Instant::now() + self.config.delays.terminate;
        let md = {
            let Some(slot) = st.snapshots.get_mut(id) else {
                return Err(not_found("volume snapshot", id));
            };
            slot.timers.deleting = true;
            slot.timers.gone = (!self.has(Mutant::SnapshotNeverGone)).then_some(at);
            slot.obj.metadata.get_or_insert_default().deleted_at = self.clock.unix_nanos();
            slot.obj.metadata.clone().unwrap_or_default()
        };
        st.snapshots.wake_at(id, at);
        let ev = self.event(
            &md,
            "snapshot",
            "Deleting",
            "Delete",
            "volume snapshot is being deleted",
        );
        st.events.push(ev);
        Ok(())
    }

    pub(crate) fn list_snapshots(
        &self,
        filter: Option<volume::VolumeSnapshotFilter>,
    ) -> Vec<volume::VolumeSnapshot> {
        let filter = filter.unwrap_or_default();
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let by_id = !filter.id.is_empty() && !self.has(Mutant::SnapshotIdFilterIgnored);
        st.snapshots
            .iter()
            .filter(|obj| !by_id || obj.metadata.as_ref().is_some_and(|m| m.id == filter.id))
            .filter(|obj| labels_match(&filter.label_selector, obj.metadata.as_ref()))
            .map(|mut s| {
                if self.has(Mutant::SnapshotNoStatus) {
                    s.status = None;
                }
                s
            })
            .collect()
    }

    fn volume_status(&self) -> volume::StatusResponse {
        if self.has(Mutant::VolumeStatusNoClasses) {
            return volume::StatusResponse::default();
        }
        volume::StatusResponse {
            volume_class_status: self
                .config
                .volume_classes
                .iter()
                .map(|class| volume::VolumeClassStatus {
                    volume_class: Some(volume::VolumeClass {
                        name: class.name.clone(),
                        capabilities: if self.has(Mutant::VolumeNilClassCapabilities) {
                            None
                        } else {
                            Some(volume::VolumeClassCapabilities {
                                tps: class.tps,
                                iops: class.iops,
                            })
                        },
                    }),
                    quantity: if self.has(Mutant::VolumeNegativeQuantity) {
                        -class.quantity.max(1)
                    } else {
                        class.quantity
                    },
                })
                .collect(),
        }
    }

    pub(crate) fn seed_volume(&self, mut v: volume::Volume) -> String {
        let md = v.metadata.get_or_insert_default();
        if md.id.is_empty() {
            md.id = self.new_id();
        }
        if md.created_at == 0 {
            md.created_at = self.clock.unix_nanos();
        }
        let id = md.id.clone();
        v.spec.get_or_insert_default();
        v.status.get_or_insert_default();
        lock(&self.volumes)
            .volumes
            .insert(&id, v, Timers::default());
        id
    }

    pub(crate) fn get_volume(&self, id: &str) -> Option<volume::Volume> {
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        st.volumes.get(id)
    }

    pub(crate) fn modify_volume(&self, id: &str, f: impl FnOnce(&mut volume::Volume)) -> bool {
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        match st.volumes.get_mut(id) {
            Some(slot) => {
                f(slot.obj);
                true
            }
            None => false,
        }
    }

    pub(crate) fn force_volume_state(&self, id: &str, state: VolumeState) -> bool {
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let Some(slot) = st.volumes.get_mut(id) else {
            return false;
        };
        slot.timers.ready = None;
        slot.obj.status.get_or_insert_default().state = state as i32;
        true
    }

    pub(crate) fn force_snapshot_state(&self, id: &str, state: VolumeSnapshotState) -> bool {
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        let Some(slot) = st.snapshots.get_mut(id) else {
            return false;
        };
        slot.timers.ready = None;
        slot.obj.status.get_or_insert_default().state = state as i32;
        true
    }

    pub(crate) fn volume_events(&self, q: &EventQuery) -> Vec<iri_spec::event::v1alpha1::Event> {
        let mut st = lock(&self.volumes);
        self.advance_volumes(&mut st);
        self.filter_events(&st.events, q)
    }
}

/// The `VolumeRuntime` gRPC service of a mock.
#[derive(Debug, Clone)]
pub struct VolumeService {
    pub(crate) core: Arc<Core>,
}

impl VolumeService {
    /// The tonic server for this service.
    pub fn into_server(self) -> VolumeRuntimeServer<Self> {
        VolumeRuntimeServer::new(self)
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl VolumeRuntime for VolumeService {
    async fn version(
        &self,
        request: Request<volume::VersionRequest>,
    ) -> R<volume::VersionResponse> {
        let (call, _req) = self.core.begin(Method::VolumeVersion, request).await?;
        let (runtime_name, runtime_version) = self.core.version();
        call.finish(Ok(volume::VersionResponse {
            runtime_name,
            runtime_version,
        }))
    }

    async fn list_events(
        &self,
        request: Request<volume::ListEventsRequest>,
    ) -> R<volume::ListEventsResponse> {
        let (call, req) = self.core.begin(Method::VolumeListEvents, request).await?;
        let f = req.filter.unwrap_or_default();
        let q = EventQuery {
            id: f.id,
            labels: f.label_selector,
            from: f.events_from_time,
            to: f.events_to_time,
        };
        call.finish(Ok(volume::ListEventsResponse {
            events: self.core.volume_events(&q),
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<volume::ListVolumesRequest>,
    ) -> R<volume::ListVolumesResponse> {
        let (call, req) = self.core.begin(Method::ListVolumes, request).await?;
        let id = req
            .filter
            .as_ref()
            .map(|f| f.id.clone())
            .unwrap_or_default();
        let volumes = self.core.list_volumes(req.filter);
        if volumes.is_empty() && !id.is_empty() && self.core.has(Mutant::VolumeUnknownIdInternal) {
            return call.finish(Err(Status::internal(format!("volume {id:?} not found"))));
        }
        call.finish(Ok(volume::ListVolumesResponse { volumes }))
    }

    async fn create_volume(
        &self,
        request: Request<volume::CreateVolumeRequest>,
    ) -> R<volume::CreateVolumeResponse> {
        let (call, req) = self.core.begin(Method::CreateVolume, request).await?;
        let res = self.core.create_volume(req);
        call.finish(res)
    }

    async fn expand_volume(
        &self,
        request: Request<volume::ExpandVolumeRequest>,
    ) -> R<volume::ExpandVolumeResponse> {
        let (call, req) = self.core.begin(Method::ExpandVolume, request).await?;
        let res = self.core.expand_volume(req);
        call.finish(res.map(|()| volume::ExpandVolumeResponse {}))
    }

    async fn delete_volume(
        &self,
        request: Request<volume::DeleteVolumeRequest>,
    ) -> R<volume::DeleteVolumeResponse> {
        let (call, req) = self.core.begin(Method::DeleteVolume, request).await?;
        let res = self.core.delete_volume(&req.volume_id);
        call.finish(res.map(|()| volume::DeleteVolumeResponse {}))
    }

    async fn create_volume_snapshot(
        &self,
        request: Request<volume::CreateVolumeSnapshotRequest>,
    ) -> R<volume::CreateVolumeSnapshotResponse> {
        let (call, req) = self
            .core
            .begin(Method::CreateVolumeSnapshot, request)
            .await?;
        let res = self.core.create_snapshot(req);
        call.finish(res)
    }

    async fn delete_volume_snapshot(
        &self,
        request: Request<volume::DeleteVolumeSnapshotRequest>,
    ) -> R<volume::DeleteVolumeSnapshotResponse> {
        let (call, req) = self
            .core
            .begin(Method::DeleteVolumeSnapshot, request)
            .await?;
        let res = self.core.delete_snapshot(&req.volume_snapshot_id);
        call.finish(res.map(|()| volume::DeleteVolumeSnapshotResponse {}))
    }

    async fn list_volume_snapshots(
        &self,
        request: Request<volume::ListVolumeSnapshotsRequest>,
    ) -> R<volume::ListVolumeSnapshotsResponse> {
        let (call, req) = self
            .core
            .begin(Method::ListVolumeSnapshots, request)
            .await?;
        let id = req
            .filter
            .as_ref()
            .map(|f| f.id.clone())
            .unwrap_or_default();
        let volume_snapshots = self.core.list_snapshots(req.filter);
        if volume_snapshots.is_empty()
            && !id.is_empty()
            && self.core.has(Mutant::VolumeUnknownIdInternal)
        {
            return call.finish(Err(Status::internal(format!("snapshot {id:?} not found"))));
        }
        call.finish(Ok(volume::ListVolumeSnapshotsResponse { volume_snapshots }))
    }

    async fn status(&self, request: Request<volume::StatusRequest>) -> R<volume::StatusResponse> {
        let (call, _req) = self.core.begin(Method::VolumeStatus, request).await?;
        call.finish(Ok(self.core.volume_status()))
    }
}
