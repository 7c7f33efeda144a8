//! The mock `VolumeRuntime`: volumes (PENDING → AVAILABLE with access), expansion, snapshots
//! (PENDING → READY), deletion phases, events and class status.

use iri_spec::{
    kind::{IriKind, Service},
    volume::v1alpha1::{
        self as volume, VolumeSnapshotState, VolumeState,
        volume_runtime_server::{VolumeRuntime, VolumeRuntimeServer},
    },
};
use tokio::time::Instant;
use tonic::Status;

use crate::{
    Mutant,
    core::{Core, invalid, not_found, rpc_service},
    objects::{Due, KindMutants, MockKind, fresh_meta, kept_in, take_spec},
    store::Timers,
};

impl MockKind for volume::Volume {
    const MUTANTS: KindMutants = KindMutants {
        empty_id_accepted: Some(Mutant::VolumeEmptyIdAccepted),
        id_filter_ignored: Some(Mutant::VolumeIdFilterIgnored),
        label_selector_ignored: Some(Mutant::VolumeLabelSelectorIgnored),
        delete_unknown_ok: Some(Mutant::VolumeDeleteUnknownOk),
        delete_twice_not_found: Some(Mutant::VolumeDeleteTwiceNotFound),
        delete_immediate: Some(Mutant::VolumeDeleteImmediate),
        deleted_at_unset: Some(Mutant::VolumeDeletedAtUnset),
        ..KindMutants::NONE
    };
    const ID_FIELD: &'static str = "volume_id";

    kept_in!(volumes);

    /// PENDING → AVAILABLE with access; an expansion reaching the status.
    fn transition(core: &Core, v: &mut Self, timers: &Timers, due: Due) -> Option<String> {
        let mut changed = None;
        if due.ready && !timers.deleting && !core.has(Mutant::VolumeNeverAvailable) {
            let spec = v.spec.clone().unwrap_or_default();
            let access = core.access_for(v.id(), &spec.class);
            let status = v.status.get_or_insert_default();
            if status.state == VolumeState::VolumePending as i32 {
                status.state = VolumeState::VolumeAvailable as i32;
                status.access = access;
                status.resources = spec.resources;
                changed = Some("volume available");
            }
        }
        if due.apply && !core.has(Mutant::ExpandSpecOnly) {
            let resources = v.spec.as_ref().and_then(|s| s.resources);
            let status = v.status.get_or_insert_default();
            if status.state == VolumeState::VolumeAvailable as i32 {
                status.resources = resources;
                changed = changed.or(Some("volume expanded"));
            }
        }
        changed.map(str::to_owned)
    }

    fn listed(core: &Core, v: Self) -> Self {
        let mut v = core.render_volume(v);
        if core.has(Mutant::VolumeIdUnstable)
            && let Some(md) = v.metadata.as_mut()
        {
            md.id = md.id.chars().rev().collect();
        }
        v
    }
}

impl MockKind for volume::VolumeSnapshot {
    const MUTANTS: KindMutants = KindMutants {
        empty_id_accepted: Some(Mutant::VolumeEmptyIdAccepted),
        id_filter_ignored: Some(Mutant::SnapshotIdFilterIgnored),
        delete_unknown_ok: Some(Mutant::SnapshotDeleteUnknownOk),
        never_gone: Some(Mutant::SnapshotNeverGone),
        ..KindMutants::NONE
    };
    const ID_FIELD: &'static str = "volume_snapshot_id";

    kept_in!(snapshots);

    /// PENDING → READY.
    fn transition(core: &Core, s: &mut Self, timers: &Timers, due: Due) -> Option<String> {
        if !due.ready || timers.deleting || core.has(Mutant::SnapshotNeverReady) {
            return None;
        }
        let status = s.status.get_or_insert_default();
        status.state = VolumeSnapshotState::VolumeSnapshotReady as i32;
        if core.has(Mutant::SnapshotSizeZero) {
            status.size = 0;
        }
        Some("volume snapshot ready".to_owned())
    }

    fn listed(core: &Core, mut s: Self) -> Self {
        if core.has(Mutant::SnapshotNoStatus) {
            s.status = None;
        }
        s
    }
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

    /// List, where an id that lists nothing is Internal under
    /// [`Mutant::VolumeUnknownIdInternal`] (as IronCore's own volume runtime answers).
    fn list_calibrated<K: MockKind>(
        &self,
        id: &str,
        selector: &std::collections::HashMap<String, String>,
        what: &str,
    ) -> Result<Vec<K>, Status> {
        let listed = self.list::<K>(id, selector)?;
        if listed.is_empty() && !id.is_empty() && self.has(Mutant::VolumeUnknownIdInternal) {
            return Err(Status::internal(format!("{what} {id:?} not found")));
        }
        Ok(listed)
    }

    fn render_volume(&self, mut v: volume::Volume) -> volume::Volume {
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
        let (mut v, spec) = take_spec(req.volume, self.has(Mutant::VolumeMissingSpecAccepted))?;
        let spec_given = spec.is_some();
        let spec = spec.unwrap_or_default();
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
        let created_at = self.created_at(false, self.has(Mutant::VolumeCreatedAtSeconds));
        fresh_meta(&mut md, &id, created_at);
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
        if let Some(snapshot_id) = source_snapshot
            && !self
                .objects::<volume::VolumeSnapshot>()
                .contains(&snapshot_id)
        {
            return Err(not_found("volume snapshot", &snapshot_id));
        }
        let timers = Timers {
            ready: Some(Instant::now() + self.config.delays.provision),
            ..Timers::default()
        };
        let stored = self.insert_new(stored, timers);
        Ok(volume::CreateVolumeResponse {
            volume: Some(self.render_volume(stored)),
        })
    }

    fn expand_volume(&self, req: volume::ExpandVolumeRequest) -> Result<(), Status> {
        self.check_id::<volume::Volume>(&req.volume_id, "volume_id")?;
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
        let mut st = self.objects::<volume::Volume>();
        let id = req.volume_id;
        let Some(slot) = st.get_mut(&id) else {
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
        st.wake_at(&id, at);
        tracing::info!(volume.id = %id, size, "volume expanding");
        Ok(())
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
        let size = match self.get::<volume::Volume>(&spec.volume_id) {
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
        fresh_meta(&mut md, &self.new_id(), self.clock.unix_nanos());
        let stored = volume::VolumeSnapshot {
            metadata: Some(md),
            spec: Some(spec),
            status: Some(volume::VolumeSnapshotStatus {
                state: VolumeSnapshotState::VolumeSnapshotPending as i32,
                size,
            }),
        };
        let timers = Timers {
            ready: Some(Instant::now() + self.config.delays.provision),
            ..Timers::default()
        };
        let stored = self.insert_new(stored, timers);
        Ok(volume::CreateVolumeSnapshotResponse {
            volume_snapshot: Some(MockKind::listed(self, stored)),
        })
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
}

rpc_service! {
    /// The `VolumeRuntime` gRPC service of a mock.
    VolumeService: VolumeRuntime, VolumeRuntimeServer {
        @common(volume, VolumeVersion, VolumeListEvents, Service::Volume, [volume::Volume, volume::VolumeSnapshot]);
        list_volumes(ListVolumes, volume::ListVolumesRequest) -> volume::ListVolumesResponse = |core, req| {
            let filter = req.filter.unwrap_or_default();
            let volumes = core.list_calibrated(&filter.id, &filter.label_selector, "volume");
            volumes.map(|volumes| volume::ListVolumesResponse { volumes })
        };
        create_volume(CreateVolume, volume::CreateVolumeRequest) -> volume::CreateVolumeResponse = |core, req| {
            core.create_volume(req)
        };
        expand_volume(ExpandVolume, volume::ExpandVolumeRequest) -> volume::ExpandVolumeResponse = |core, req| {
            core.expand_volume(req).map(|()| volume::ExpandVolumeResponse {})
        };
        delete_volume(DeleteVolume, volume::DeleteVolumeRequest) -> volume::DeleteVolumeResponse = |core, req| {
            core.delete::<volume::Volume>(&req.volume_id).map(|()| volume::DeleteVolumeResponse {})
        };
        create_volume_snapshot(CreateVolumeSnapshot, volume::CreateVolumeSnapshotRequest)
            -> volume::CreateVolumeSnapshotResponse = |core, req| {
            core.create_snapshot(req)
        };
        delete_volume_snapshot(DeleteVolumeSnapshot, volume::DeleteVolumeSnapshotRequest)
            -> volume::DeleteVolumeSnapshotResponse = |core, req| {
            let res = core.delete::<volume::VolumeSnapshot>(&req.volume_snapshot_id);
            res.map(|()| volume::DeleteVolumeSnapshotResponse {})
        };
        list_volume_snapshots(ListVolumeSnapshots, volume::ListVolumeSnapshotsRequest)
            -> volume::ListVolumeSnapshotsResponse = |core, req| {
            let filter = req.filter.unwrap_or_default();
            let snapshots = core.list_calibrated(&filter.id, &filter.label_selector, "snapshot");
            snapshots.map(|volume_snapshots| volume::ListVolumeSnapshotsResponse { volume_snapshots })
        };
        status(VolumeStatus, volume::StatusRequest) -> volume::StatusResponse = |core, _req| {
            Ok(core.volume_status())
        };
    }
}
