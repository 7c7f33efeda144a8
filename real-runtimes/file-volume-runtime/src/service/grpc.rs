//! The gRPC surface of the volume service: `VolumeRuntime` over [`VolumeService`]'s methods,
//! with the required-field checks tonic's decoding cannot express.

use super::*;

fn require(id: &str, what: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    Ok(())
}

#[tonic::async_trait]
impl VolumeRuntime for VolumeService {
    async fn version(
        &self,
        _request: Request<volume::VersionRequest>,
    ) -> Result<Response<volume::VersionResponse>, Status> {
        Ok(Response::new(volume::VersionResponse {
            runtime_name: env!("CARGO_PKG_NAME").to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<volume::ListEventsRequest>,
    ) -> Result<Response<volume::ListEventsResponse>, Status> {
        let filter = request.into_inner().filter;
        let state = self.state.lock().await;
        let events = state
            .events
            .iter()
            .filter(|ev| {
                let Some(f) = &filter else { return true };
                let Some(spec) = &ev.spec else { return false };
                let meta = spec.involved_object_meta.clone().unwrap_or_default();
                (f.id.is_empty() || f.id == meta.id)
                    && iri_spec::selector::matches(&f.label_selector, &meta.labels)
                    && (f.events_from_time <= 0
                        || f.events_to_time <= 0
                        || (spec.event_time >= f.events_from_time
                            && spec.event_time <= f.events_to_time))
            })
            .cloned()
            .collect();
        Ok(Response::new(volume::ListEventsResponse { events }))
    }

    async fn list_volumes(
        &self,
        request: Request<volume::ListVolumesRequest>,
    ) -> Result<Response<volume::ListVolumesResponse>, Status> {
        let filter = request.into_inner().filter;
        let state = self.state.lock().await;
        let mut records: Vec<&VolumeRecord> = state
            .volumes
            .values()
            .filter(|v| {
                filter.as_ref().is_none_or(|f| {
                    (f.id.is_empty() || f.id == v.id)
                        && iri_spec::selector::matches(&f.label_selector, &v.labels)
                })
            })
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(Response::new(volume::ListVolumesResponse {
            volumes: records.into_iter().map(Self::volume_proto).collect(),
        }))
    }

    async fn create_volume(
        &self,
        request: Request<volume::CreateVolumeRequest>,
    ) -> Result<Response<volume::CreateVolumeResponse>, Status> {
        let volume = self.create(request.into_inner().volume).await?;
        Ok(Response::new(volume::CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn expand_volume(
        &self,
        request: Request<volume::ExpandVolumeRequest>,
    ) -> Result<Response<volume::ExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        self.expand(&req.volume_id, req.resources).await?;
        Ok(Response::new(volume::ExpandVolumeResponse {}))
    }

    async fn delete_volume(
        &self,
        request: Request<volume::DeleteVolumeRequest>,
    ) -> Result<Response<volume::DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        self.delete(&req.volume_id).await?;
        Ok(Response::new(volume::DeleteVolumeResponse {}))
    }

    async fn create_volume_snapshot(
        &self,
        request: Request<volume::CreateVolumeSnapshotRequest>,
    ) -> Result<Response<volume::CreateVolumeSnapshotResponse>, Status> {
        let snapshot = self
            .create_snapshot(request.into_inner().volume_snapshot)
            .await?;
        Ok(Response::new(volume::CreateVolumeSnapshotResponse {
            volume_snapshot: Some(snapshot),
        }))
    }

    async fn delete_volume_snapshot(
        &self,
        request: Request<volume::DeleteVolumeSnapshotRequest>,
    ) -> Result<Response<volume::DeleteVolumeSnapshotResponse>, Status> {
        let req = request.into_inner();
        require(&req.volume_snapshot_id, "volume_snapshot_id")?;
        self.delete_snapshot(&req.volume_snapshot_id).await?;
        Ok(Response::new(volume::DeleteVolumeSnapshotResponse {}))
    }

    async fn list_volume_snapshots(
        &self,
        request: Request<volume::ListVolumeSnapshotsRequest>,
    ) -> Result<Response<volume::ListVolumeSnapshotsResponse>, Status> {
        let filter = request.into_inner().filter;
        let state = self.state.lock().await;
        let mut records: Vec<&SnapshotRecord> = state
            .snapshots
            .values()
            .filter(|s| {
                filter.as_ref().is_none_or(|f| {
                    (f.id.is_empty() || f.id == s.id)
                        && iri_spec::selector::matches(&f.label_selector, &s.labels)
                })
            })
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(Response::new(volume::ListVolumeSnapshotsResponse {
            volume_snapshots: records.into_iter().map(Self::snapshot_proto).collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<volume::StatusRequest>,
    ) -> Result<Response<volume::StatusResponse>, Status> {
        let free = self.free_bytes();
        Ok(Response::new(volume::StatusResponse {
            volume_class_status: self
                .cfg
                .classes
                .iter()
                .map(|c| volume::VolumeClassStatus {
                    volume_class: Some(volume::VolumeClass {
                        name: c.name.clone(),
                        capabilities: Some(volume::VolumeClassCapabilities {
                            tps: c.tps,
                            iops: c.iops,
                        }),
                    }),
                    quantity: free,
                })
                .collect(),
        }))
    }
}
