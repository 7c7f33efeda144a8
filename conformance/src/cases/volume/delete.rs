//! Volume cases: ExpandVolume, DeleteVolume (codes, the deletion phase, idempotency), snapshots
//! (create, list, delete, restore) and ListEvents.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use iri_spec::volume::v1alpha1::{self as v};
use tonic::Code;

use super::rpc::*;
use crate::{
    case::{Case, pass},
    cases::shared::{
        create_none_rejected, delete_not_found_after_gone, delete_repeatedly, delete_until_gone,
        deleted, events_carry_labels, events_label_filter, events_none_in_1970,
        events_time_in_seconds, list_unknown_id_empty, listed_alone_by_id,
    },
    ctx::{expect_code, expect_ok, meta_id, plausible_ns, unknown_id},
};

pub(super) fn expand_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ ExpandVolume
    case!(
        v,
        "volume.expand.grows",
        "ExpandVolume grows spec.resources and, once applied, status.resources",
        |ctx| {
            let id = ctx.available_volume().await?;
            let size = ctx.params().expand_size;
            expect_ok(ctx.expand_volume(&id, size).await, "ExpandVolume")?;
            let vol = ctx
                .wait_volume(&id, "to report the expanded size in status", |x| {
                    x.and_then(|x| x.status.as_ref())
                        .and_then(|s| s.resources)
                        .is_some_and(|r| r.storage_bytes >= size)
                })
                .await?
                .context("volume vanished")?;
            ensure!(
                vol.spec
                    .and_then(|s| s.resources)
                    .is_some_and(|r| r.storage_bytes == size),
                "spec.resources not updated"
            );
            pass()
        }
    );
    code_cases! { v, Volume;
        "volume.expand.shrink_rejected", "ExpandVolume to a smaller size returns InvalidArgument",
        InvalidArgument, "ExpandVolume shrink",
        |ctx| { let id = ctx.available_volume().await?; ctx.expand_volume(&id, ctx.params().volume_size / 2).await };
        "volume.expand.unknown_id_not_found", "ExpandVolume of an unknown id returns NotFound",
        NotFound, "ExpandVolume unknown id",
        |ctx| ctx.expand_volume(&unknown_id(), 1 << 31).await;
        "volume.expand.empty_id_invalid", "ExpandVolume with an empty volume_id returns InvalidArgument",
        InvalidArgument, "ExpandVolume empty id",
        |ctx| ctx.expand_volume("", 1 << 31).await;
    }
    case!(
        v,
        "volume.expand.missing_resources_invalid",
        "ExpandVolume without resources returns InvalidArgument",
        |ctx| {
            let id = ctx.new_volume().await?;
            let mut c = ctx.vc()?;
            let res = ctx
                .rpc(c.expand_volume(v::ExpandVolumeRequest {
                    volume_id: id,
                    resources: None,
                }))
                .await;
            expect_code(res, Code::InvalidArgument, "ExpandVolume{resources: None}")?;
            pass()
        }
    );
    case!(
        v,
        "volume.expand.idempotent",
        "repeating ExpandVolume with the same size is OK and keeps that size",
        |ctx| {
            let id = ctx.available_volume().await?;
            let size = ctx.params().expand_size;
            for i in 0..ctx.params().idempotent_count {
                expect_ok(
                    ctx.expand_volume(&id, size).await,
                    &format!("ExpandVolume #{i}"),
                )?;
            }
            ctx.wait_volume(&id, "to report the expanded size", |x| {
                x.and_then(|x| x.status.as_ref())
                    .and_then(|s| s.resources)
                    .is_some_and(|r| r.storage_bytes == size)
            })
            .await?;
            pass()
        }
    );
}

pub(super) fn delete_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ DeleteVolume
    code_cases! { v, Volume;
        "volume.delete.unknown_id_not_found", "DeleteVolume of an unknown id returns NotFound",
        NotFound, "DeleteVolume unknown id",
        |ctx| ctx.delete_volume(&unknown_id()).await;
        "volume.delete.empty_id_invalid", "DeleteVolume with an empty volume_id returns InvalidArgument",
        InvalidArgument, "DeleteVolume empty id",
        |ctx| ctx.delete_volume("").await;
    }
    case!(
        v,
        "volume.delete.deleted_at_while_listed",
        "a volume still listed after DeleteVolume has deleted_at set in Unix ns",
        |ctx| {
            let id = ctx.available_volume().await?;
            let vol = deleted::<v::Volume>(&ctx, &id, "the deletion phase").await?;
            let t = vol.metadata.context("no metadata")?.deleted_at;
            ensure!(
                plausible_ns(t, Duration::from_secs(600)),
                "deleted_at {t} is not now in Unix ns"
            );
            pass()
        }
    );
    check_cases! { v, Volume;
        "volume.delete.eventually_gone", "a deleted volume disappears from ListVolumes within the state budget",
        |ctx| { let id = ctx.available_volume().await?; delete_until_gone::<v::Volume>(&ctx, &id).await?; };
        "volume.delete.idempotent", "repeated DeleteVolume calls return OK, or NotFound only once the volume is gone",
        |ctx| { let id = ctx.new_volume().await?; delete_repeatedly::<v::Volume>(&ctx, &id).await?; };
        "volume.delete.not_found_after_gone", "DeleteVolume of a volume that is gone returns NotFound",
        |ctx| { let id = ctx.new_volume().await?; delete_not_found_after_gone::<v::Volume>(&ctx, &id).await?; };
    }
}

pub(super) fn snapshots_cases(v: &mut Vec<Case>) {
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
    check_cases! { v, Volume;
        "volume.snapshot.becomes_ready", "a snapshot reaches READY within the state budget",
        |ctx| { let vid = ctx.available_volume().await?; ready_snapshot(&ctx, &vid).await?; };
    }
    case!(
        v,
        "volume.snapshot.size_set",
        "a READY snapshot reports a size > 0 bytes",
        |ctx| {
            let vid = ctx.available_volume().await?;
            let s = ready_snapshot(&ctx, &vid).await?;
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
            let sid = new_snapshot(&ctx, &vid).await?;
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
    check_cases! { v, Volume;
        "volume.snapshot.missing_snapshot_invalid", "CreateVolumeSnapshot without a volume_snapshot returns InvalidArgument",
        |ctx| { create_none_rejected::<v::VolumeSnapshot>(&ctx, "CreateVolumeSnapshot{None}").await?; };
    }
    case!(
        v,
        "volume.snapshot.list_by_id",
        "ListVolumeSnapshots with an id filter returns exactly that snapshot",
        |ctx| {
            let vid = ctx.new_volume().await?;
            let a = new_snapshot(&ctx, &vid).await?;
            let _b = expect_ok(ctx.try_create_snapshot(&vid).await, "CreateVolumeSnapshot")?;
            listed_alone_by_id::<v::VolumeSnapshot>(&ctx, &a).await?;
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
            list_unknown_id_empty::<v::VolumeSnapshot>(&ctx).await?;
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
    check_cases! { v, Volume;
        "volume.snapshot.delete_eventually_gone", "a deleted snapshot disappears from ListVolumeSnapshots (a later delete: volume.snapshot.delete_not_found_after_gone)",
        |ctx| { snapshot_deleted_and_gone(&ctx).await?; };
    }
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
                ready_snapshot(&ctx, &vid).await?.metadata.as_ref(),
                "snapshot",
            )?;
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

pub(super) fn events_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ events
    check_cases! { v, Volume;
        "volume.events.listed", "creating a volume produces at least one event about it",
        |ctx| { let id = ctx.new_volume().await?; wait_events_of(&ctx, &id).await?; };
        "volume.events.time_in_seconds", "volume event_time is in Unix seconds",
        |ctx| { events_time_in_seconds::<v::Volume>(&ctx).await?; };
    }
    case!(
        v,
        "volume.events.involved_labels",
        "volume events carry the volume's labels in involved_object_meta",
        |ctx| {
            let (id, vol) = ctx.create_volume(ctx.volume_spec(&[("evt", "v")])?).await?;
            let want = vol.metadata.map(|m| m.labels).unwrap_or_default();
            events_carry_labels(wait_events_of(&ctx, &id).await?, &want)?;
            pass()
        }
    );
    check_cases! { v, Volume;
        "volume.events.label_filter", "volume ListEvents with a label selector returns only events of matching volumes",
        |ctx| { events_label_filter::<v::Volume>(&ctx).await?; };
        "volume.events.time_window", "volume ListEvents with both bounds > 0 honours the window",
        |ctx| { events_none_in_1970::<v::Volume>(&ctx).await?; };
    }
}
