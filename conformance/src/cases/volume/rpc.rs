//! The volume RPCs and templates the volume cases share.

use anyhow::Context as _;
use iri_spec::volume::v1alpha1::{self as v, VolumeSnapshotState, VolumeState};

pub(super) use crate::cases::shared::{ids_of, with_spec};
use crate::{
    cases::shared::delete_until_gone,
    ctx::{Ctx, expect_ok, meta_id},
};

pub(super) const AVAILABLE: i32 = VolumeState::VolumeAvailable as i32;
pub(super) const PENDING: i32 = VolumeState::VolumePending as i32;
pub(super) const READY: i32 = VolumeSnapshotState::VolumeSnapshotReady as i32;

pub(super) fn size(storage_bytes: i64) -> v::VolumeResources {
    v::VolumeResources { storage_bytes }
}

/// The image data source of the run's image.
pub(super) fn image_source(ctx: &Ctx) -> v::ImageDataSource {
    v::ImageDataSource {
        image: ctx.params().image.clone(),
        architecture: "amd64".to_owned(),
    }
}

pub(crate) async fn status(ctx: &Ctx) -> anyhow::Result<v::StatusResponse> {
    let mut c = ctx.vc()?;
    expect_ok(
        ctx.rpc(c.status(v::StatusRequest {})).await,
        "volume Status",
    )
}

/// Events about volume `id`, waiting until at least one exists.
pub(crate) async fn wait_events_of(
    ctx: &Ctx,
    id: &str,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    crate::cases::shared::wait_events_of::<v::Volume>(ctx, id).await
}

pub(super) fn status_of(vol: &v::Volume) -> anyhow::Result<&v::VolumeStatus> {
    vol.status.as_ref().context("volume has no status")
}

pub(super) async fn must_volume(ctx: &Ctx, id: &str) -> anyhow::Result<v::Volume> {
    ctx.get_volume(id)
        .await?
        .with_context(|| format!("volume {id} is not listed by ListVolumes by id"))
}

/// A snapshot of volume `vid`, created (which must succeed); its id.
pub(super) async fn new_snapshot(ctx: &Ctx, vid: &str) -> anyhow::Result<String> {
    let s = expect_ok(ctx.try_create_snapshot(vid).await, "CreateVolumeSnapshot")?;
    meta_id(s.metadata.as_ref(), "snapshot")
}

/// A snapshot of volume `vid`, created and waited for until it is READY.
pub(super) async fn ready_snapshot(ctx: &Ctx, vid: &str) -> anyhow::Result<v::VolumeSnapshot> {
    let sid = new_snapshot(ctx, vid).await?;
    ctx.wait_snapshot(&sid, "to be READY", |x| {
        x.and_then(|x| x.status.as_ref())
            .is_some_and(|st| st.state == READY)
    })
    .await?
    .context("snapshot vanished")
}

/// A snapshot of a new volume, deleted and waited for until ListVolumeSnapshots no longer
/// lists it; its id.
pub(super) async fn snapshot_deleted_and_gone(ctx: &Ctx) -> anyhow::Result<String> {
    let vid = ctx.new_volume().await?;
    let sid = new_snapshot(ctx, &vid).await?;
    delete_until_gone::<v::VolumeSnapshot>(ctx, &sid).await?;
    Ok(sid)
}

/// A data source restoring from snapshot `snapshot_id`.
pub(super) fn snapshot_source(snapshot_id: String) -> v::VolumeDataSource {
    v::VolumeDataSource {
        image_data_source: None,
        snapshot_data_source: Some(v::SnapshotDataSource { snapshot_id }),
    }
}
