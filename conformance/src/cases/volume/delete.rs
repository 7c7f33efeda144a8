//! Volume cases: DeleteVolume: codes, the deletion phase, idempotency.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tonic::Code;

use crate::{
    case::{Case, pass, skip_gone_at_once},
    ctx::{expect_code, expect_ok, plausible_ns, unknown_id},
};

pub(super) fn cases(v: &mut Vec<Case>) {
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
            expect_ok(ctx.delete_volume(&id).await, "DeleteVolume")?;
            let Some(vol) = ctx.get_volume(&id).await? else {
                return skip_gone_at_once("volume", "the deletion phase");
            };
            let t = vol.metadata.context("no metadata")?.deleted_at;
            ensure!(
                plausible_ns(t, Duration::from_secs(600)),
                "deleted_at {t} is not now in Unix ns"
            );
            pass()
        }
    );
    case!(
        v,
        "volume.delete.eventually_gone",
        "a deleted volume disappears from ListVolumes within the state budget",
        |ctx| {
            let id = ctx.available_volume().await?;
            expect_ok(ctx.delete_volume(&id).await, "DeleteVolume")?;
            ctx.wait_volume(&id, "to be gone", |x| x.is_none()).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.delete.idempotent",
        "repeated DeleteVolume calls return OK, or NotFound only once the volume is gone",
        |ctx| {
            let id = ctx.new_volume().await?;
            for i in 0..ctx.params().idempotent_count {
                match ctx.delete_volume(&id).await {
                    Ok(()) => {}
                    Err(st) if st.code() == Code::NotFound => {
                        ensure!(i > 0, "first DeleteVolume returned NotFound");
                        ensure!(
                            ctx.get_volume(&id).await?.is_none(),
                            "DeleteVolume #{i} returned NotFound while the volume is listed"
                        );
                    }
                    Err(st) => bail!("DeleteVolume #{i}: {:?}: {}", st.code(), st.message()),
                }
            }
            ctx.wait_volume(&id, "to be gone", |x| x.is_none()).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.delete.not_found_after_gone",
        "DeleteVolume of a volume that is gone returns NotFound",
        |ctx| {
            let id = ctx.new_volume().await?;
            expect_ok(ctx.delete_volume(&id).await, "DeleteVolume")?;
            ctx.wait_volume(&id, "to be gone", |x| x.is_none()).await?;
            expect_code(
                ctx.delete_volume(&id).await,
                Code::NotFound,
                "DeleteVolume after gone",
            )?;
            pass()
        }
    );
}
