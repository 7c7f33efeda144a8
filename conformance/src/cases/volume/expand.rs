//! Volume cases: ExpandVolume.

use anyhow::{Context as _, ensure};
use iri_spec::volume::v1alpha1::{self as v};
use tonic::Code;

use crate::{
    case::{Case, pass},
    ctx::{expect_code, expect_ok, unknown_id},
};

pub(super) fn cases(v: &mut Vec<Case>) {
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
