//! The volume RPCs and templates the volume cases share.

use std::collections::HashMap;

use anyhow::Context as _;
use iri_spec::volume::v1alpha1::{self as v, VolumeSnapshotState, VolumeState};

use crate::ctx::{Ctx, expect_ok, meta_id};

pub(super) const AVAILABLE: i32 = VolumeState::VolumeAvailable as i32;
pub(super) const PENDING: i32 = VolumeState::VolumePending as i32;
pub(super) const READY: i32 = VolumeSnapshotState::VolumeSnapshotReady as i32;

/// A class no runtime offers.
pub(super) const NO_SUCH_CLASS: &str = "conformance-no-such-class";

/// The valid volume template (class, size, run labels) with `change` applied to its spec.
pub(super) fn template(
    ctx: &Ctx,
    change: impl FnOnce(&mut v::VolumeSpec),
) -> anyhow::Result<v::Volume> {
    let mut volume = ctx.volume_spec(&[])?;
    change(volume.spec.as_mut().context("spec")?);
    Ok(volume)
}

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

pub(crate) async fn events(
    ctx: &Ctx,
    f: v::EventFilter,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    let mut c = ctx.vc()?;
    Ok(expect_ok(
        ctx.rpc(c.list_events(v::ListEventsRequest { filter: Some(f) }))
            .await,
        "volume ListEvents",
    )?
    .events)
}

/// Events about volume `id`, waiting until at least one exists.
pub(crate) async fn wait_events_of(
    ctx: &Ctx,
    id: &str,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    let filter = || v::EventFilter {
        id: id.to_owned(),
        ..Default::default()
    };
    crate::cases::shared::wait_events_about(ctx, "volume", id, || events(ctx, filter())).await
}

pub(super) fn ids_of(list: &[v::Volume]) -> Vec<String> {
    list.iter()
        .filter_map(|x| x.metadata.as_ref().map(|md| md.id.clone()))
        .collect()
}

pub(super) fn status_of(vol: &v::Volume) -> anyhow::Result<&v::VolumeStatus> {
    vol.status.as_ref().context("volume has no status")
}

pub(super) async fn by_labels(
    ctx: &Ctx,
    sel: HashMap<String, String>,
) -> anyhow::Result<Vec<v::Volume>> {
    expect_ok(
        ctx.list_volumes(Some(v::VolumeFilter {
            id: String::new(),
            label_selector: sel,
        }))
        .await,
        "ListVolumes by label",
    )
}

pub(super) async fn must_volume(ctx: &Ctx, id: &str) -> anyhow::Result<v::Volume> {
    ctx.get_volume(id)
        .await?
        .with_context(|| format!("volume {id} is not listed by ListVolumes by id"))
}

/// A data source restoring from snapshot `snapshot_id`.
/// A snapshot of a new volume, deleted and waited for until ListVolumeSnapshots no longer
/// lists it; its id.
pub(super) async fn snapshot_deleted_and_gone(ctx: &Ctx) -> anyhow::Result<String> {
    let vid = ctx.new_volume().await?;
    let sid = meta_id(
        expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?
            .metadata
            .as_ref(),
        "snapshot",
    )?;
    expect_ok(ctx.delete_snapshot(&sid).await, "DeleteVolumeSnapshot")?;
    ctx.wait_snapshot(&sid, "to be gone", |x| x.is_none())
        .await?;
    Ok(sid)
}

pub(super) fn snapshot_source(snapshot_id: String) -> v::VolumeDataSource {
    v::VolumeDataSource {
        image_data_source: None,
        snapshot_data_source: Some(v::SnapshotDataSource { snapshot_id }),
    }
}
