//! Volume cases: ListVolumes: filters by id and label selector.

use anyhow::{Context as _, ensure};
use iri_spec::volume::v1alpha1::{self as v};

use crate::{
    case::{Case, pass},
    ctx::{expect_ok, meta_id, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ ListVolumes
    case!(
        v,
        "volume.list.by_id",
        "ListVolumes with an id filter returns exactly that volume",
        |ctx| {
            let a = ctx.new_volume().await?;
            let _b = ctx.new_volume().await?;
            let l = expect_ok(
                ctx.list_volumes(Some(v::VolumeFilter {
                    id: a.clone(),
                    ..Default::default()
                }))
                .await,
                "ListVolumes by id",
            )?;
            ensure!(
                ids_of(&l) == vec![a.clone()],
                "by id {a} returned {:?}",
                ids_of(&l)
            );
            pass()
        }
    );
    case!(
        v,
        "volume.list.by_label",
        "ListVolumes with a label selector returns exactly the matching volumes",
        |ctx| {
            let a = ctx
                .create_volume(ctx.volume_spec(&[("color", "red")])?)
                .await?
                .0;
            let _b = ctx
                .create_volume(ctx.volume_spec(&[("color", "blue")])?)
                .await?
                .0;
            let mut sel = ctx.case_selector();
            sel.insert("color".into(), "red".into());
            let l = by_labels(&ctx, sel).await?;
            ensure!(
                ids_of(&l) == vec![a.clone()],
                "color=red returned {:?}, want [{a}]",
                ids_of(&l)
            );
            pass()
        }
    );
    case!(
        v,
        "volume.list.selector_no_match_empty",
        "a label selector no volume matches returns an empty list",
        |ctx| {
            ctx.new_volume().await?;
            let mut sel = ctx.case_selector();
            sel.insert("conformance.example/none".into(), "x".into());
            ensure!(
                by_labels(&ctx, sel).await?.is_empty(),
                "a non-matching selector returned volumes"
            );
            pass()
        }
    );
    case!(
        v,
        "volume.list.unknown_id_empty",
        "ListVolumes with an unknown id returns an empty list, not an error",
        |ctx| {
            ctx.new_volume().await?;
            let l = expect_ok(
                ctx.list_volumes(Some(v::VolumeFilter {
                    id: unknown_id(),
                    ..Default::default()
                }))
                .await,
                "ListVolumes unknown id",
            )?;
            ensure!(l.is_empty(), "returned {:?}", ids_of(&l));
            pass()
        }
    );
    case!(
        v,
        "volume.list.no_filter_lists_all",
        "ListVolumes without a filter includes a newly created volume",
        |ctx| {
            let a = ctx.new_volume().await?;
            let l = expect_ok(ctx.list_volumes(None).await, "ListVolumes")?;
            ensure!(ids_of(&l).contains(&a), "volume {a} missing");
            pass()
        }
    );
    case!(
        v,
        "volume.list.items_complete",
        "every listed volume has metadata, spec with resources, and status",
        |ctx| {
            ctx.new_volume().await?;
            let l = by_labels(&ctx, ctx.case_selector()).await?;
            ensure!(!l.is_empty(), "the volume is not listed by its labels");
            for vol in &l {
                meta_id(vol.metadata.as_ref(), "listed volume")?;
                let spec = vol.spec.as_ref().context("listed volume has no spec")?;
                ensure!(
                    spec.resources.is_some(),
                    "listed volume has no spec.resources"
                );
                ensure!(vol.status.is_some(), "listed volume has no status");
            }
            pass()
        }
    );
}
