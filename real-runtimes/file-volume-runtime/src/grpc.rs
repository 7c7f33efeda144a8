//! The IRI `VolumeRuntime` gRPC service: each RPC unpacked, checked for its required ids and
//! handed to the operations of [`VolumeService`].

use iri_spec::volume::v1alpha1::{self as volume, volume_runtime_server::VolumeRuntime};
use tonic::{Request, Response, Status};

use crate::{
    service::VolumeService,
    store::{SnapshotRecord, VolumeRecord},
};

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
        let events = self.events(request.into_inner().filter).await;
        Ok(Response::new(volume::ListEventsResponse { events }))
    }

    async fn list_volumes(
        &self,
        request: Request<volume::ListVolumesRequest>,
    ) -> Result<Response<volume::ListVolumesResponse>, Status> {
        let filter = request.into_inner().filter;
        let filter = filter.as_ref().map(|f| (f.id.as_str(), &f.label_selector));
        Ok(Response::new(volume::ListVolumesResponse {
            volumes: self.list::<VolumeRecord>(filter).await,
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
        self.delete::<VolumeRecord>(&req.volume_id).await?;
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
        self.delete::<SnapshotRecord>(&req.volume_snapshot_id)
            .await?;
        Ok(Response::new(volume::DeleteVolumeSnapshotResponse {}))
    }

    async fn list_volume_snapshots(
        &self,
        request: Request<volume::ListVolumeSnapshotsRequest>,
    ) -> Result<Response<volume::ListVolumeSnapshotsResponse>, Status> {
        let filter = request.into_inner().filter;
        let filter = filter.as_ref().map(|f| (f.id.as_str(), &f.label_selector));
        Ok(Response::new(volume::ListVolumeSnapshotsResponse {
            volume_snapshots: self.list::<SnapshotRecord>(filter).await,
        }))
    }

    async fn status(
        &self,
        _request: Request<volume::StatusRequest>,
    ) -> Result<Response<volume::StatusResponse>, Status> {
        Ok(Response::new(volume::StatusResponse {
            volume_class_status: self.class_status(),
        }))
    }
}
