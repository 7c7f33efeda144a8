//! Volume cases: CreateVolumeSnapshot, ListVolumeSnapshots and DeleteVolumeSnapshot, and volumes
//! restored from a snapshot.

use anyhow::{Context as _, ensure};
use iri_spec::volume::v1alpha1::{self as v};
use tonic::Code;

use crate::{
    case::{Case, pass},
    ctx::{expect_code, expect_ok, meta_id, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ snapshots
    case!(
        v,
        "volume.snapshot.create_returns_id",
        "CreateVolumeSnapshot returns the snapshot with id, spec.volume_id and status",
        |ctx| {
            let vid = ctx.available_volume().await?;
            let s = expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            meta_id(s.metadata.as_ref(), "CreateVolumeSnapshot response")?;
            ensure!(
                s.spec.as_ref().is_some_and(|sp| sp.volume_id == vid),
                "spec.volume_id is not {vid}: {:?}",
                s.spec
            );
            ensure!(s.status.is_some(), "response snapshot has no status");
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.becomes_ready",
        "a snapshot reaches READY within the state budget",
        |ctx| {
            let vid = ctx.available_volume().await?;
            let s = expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            let sid = meta_id(s.metadata.as_ref(), "snapshot")?;
            ctx.wait_snapshot(&sid, "to be READY", |x| {
                x.and_then(|x| x.status.as_ref())
                    .is_some_and(|st| st.state == READY)
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.size_set",
        "a READY snapshot reports a size > 0 bytes",
        |ctx| {
            let vid = ctx.available_volume().await?;
            let s = expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            let sid = meta_id(s.metadata.as_ref(), "snapshot")?;
            let s = ctx
                .wait_snapshot(&sid, "to be READY", |x| {
                    x.and_then(|x| x.status.as_ref())
                        .is_some_and(|st| st.state == READY)
                })
                .await?
                .context("snapshot vanished")?;
            let size = s.status.map_or(0, |st| st.size);
            ensure!(size > 0, "READY snapshot has size {size}");
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.labels_preserved",
        "snapshot labels are listed verbatim",
        |ctx| {
            let vid = ctx.new_volume().await?;
            let s = expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            let sid = meta_id(s.metadata.as_ref(), "snapshot")?;
            let got = ctx
                .get_snapshot(&sid)
                .await?
                .context("snapshot not listed")?
                .metadata
                .context("no metadata")?
                .labels;
            ensure!(got == ctx.labels(&[]), "labels differ: {got:?}");
            pass()
        }
    );
    code_cases! { v, Volume;
        "volume.snapshot.unknown_volume_not_found", "CreateVolumeSnapshot of an unknown volume returns NotFound",
        NotFound, "CreateVolumeSnapshot unknown volume",
        |ctx| ctx.try_create_snapshot(&unknown_id()).await;
        "volume.snapshot.empty_volume_id_invalid", "CreateVolumeSnapshot with an empty spec.volume_id returns InvalidArgument",
        InvalidArgument, "CreateVolumeSnapshot empty volume id",
        |ctx| ctx.try_create_snapshot("").await;
    }
    case!(
        v,
        "volume.snapshot.missing_snapshot_invalid",
        "CreateVolumeSnapshot without a volume_snapshot returns InvalidArgument",
        |ctx| {
            let mut c = ctx.vc()?;
            let res = ctx
                .rpc(c.create_volume_snapshot(v::CreateVolumeSnapshotRequest {
                    volume_snapshot: None,
                }))
                .await;
            if let Ok(r) = &res
                && let Some(md) = r.volume_snapshot.as_ref().and_then(|x| x.metadata.as_ref())
            {
                let _ = ctx.delete_snapshot(&md.id).await;
            }
            expect_code(res, Code::InvalidArgument, "CreateVolumeSnapshot{None}")?;
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.list_by_id",
        "ListVolumeSnapshots with an id filter returns exactly that snapshot",
        |ctx| {
            let vid = ctx.new_volume().await?;
            let a = meta_id(
                expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?
                    .metadata
                    .as_ref(),
                "snapshot",
            )?;
            let _b = expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            let l = expect_ok(
                ctx.list_snapshots(Some(v::VolumeSnapshotFilter {
                    id: a.clone(),
                    ..Default::default()
                }))
                .await,
                "ListVolumeSnapshots by id",
            )?;
            let ids: Vec<String> = l
                .iter()
                .filter_map(|s| s.metadata.as_ref().map(|m| m.id.clone()))
                .collect();
            ensure!(ids == vec![a.clone()], "by id {a} returned {ids:?}");
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.list_unknown_id_empty",
        "ListVolumeSnapshots with an unknown id returns an empty list",
        |ctx| {
            let vid = ctx.new_volume().await?;
            expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            let l = expect_ok(
                ctx.list_snapshots(Some(v::VolumeSnapshotFilter {
                    id: unknown_id(),
                    ..Default::default()
                }))
                .await,
                "ListVolumeSnapshots unknown id",
            )?;
            ensure!(l.is_empty(), "returned {} snapshots", l.len());
            pass()
        }
    );
    code_cases! { v, Volume;
        "volume.snapshot.delete_unknown_not_found", "DeleteVolumeSnapshot of an unknown id returns NotFound",
        NotFound, "DeleteVolumeSnapshot unknown id",
        |ctx| ctx.delete_snapshot(&unknown_id()).await;
        "volume.snapshot.delete_empty_id_invalid", "DeleteVolumeSnapshot with an empty id returns InvalidArgument",
        InvalidArgument, "DeleteVolumeSnapshot empty id",
        |ctx| ctx.delete_snapshot("").await;
    }
    case!(
        v,
        "volume.snapshot.delete_eventually_gone",
        "a deleted snapshot disappears from ListVolumeSnapshots (a later delete: volume.snapshot.delete_not_found_after_gone)",
        |ctx| {
            snapshot_deleted_and_gone(&ctx).await?;
            pass()
        }
    );
    code_cases! { v, Volume;
        "volume.snapshot.delete_not_found_after_gone", "DeleteVolumeSnapshot of a snapshot that is gone returns NotFound",
        NotFound, "DeleteVolumeSnapshot after gone",
        |ctx| { let sid = snapshot_deleted_and_gone(&ctx).await?; ctx.delete_snapshot(&sid).await };
    }
    case!(
        v,
        "volume.snapshot.restore",
        "a volume created from a READY snapshot becomes AVAILABLE",
        |ctx| {
            let vid = ctx.available_volume().await?;
            let sid = meta_id(
                expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?
                    .metadata
                    .as_ref(),
                "snapshot",
            )?;
            ctx.wait_snapshot(&sid, "to be READY", |x| {
                x.and_then(|x| x.status.as_ref())
                    .is_some_and(|st| st.state == READY)
            })
            .await?;
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.volume_data_source = Some(snapshot_source(sid));
            let (id, _) = ctx.create_volume(spec).await?;
            ctx.wait_volume(&id, "restored from a snapshot to be AVAILABLE", |x| {
                x.and_then(|x| x.status.as_ref())
                    .is_some_and(|s| s.state == AVAILABLE)
            })
            .await?;
            pass()
        }
    );
}
