//! Machine cases: UpdateMachineAnnotations.

use std::collections::HashMap;

use anyhow::{Context as _, ensure};

use crate::{
    case::{Case, pass},
    ctx::{expect_ok, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ annotations
    case!(
        v,
        "machine.annotations.replaced_whole",
        "UpdateMachineAnnotations replaces the whole map (old keys disappear)",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.metadata.as_mut().context("metadata")?.annotations =
                map(&[("old", "1"), ("keep", "a")]);
            let (id, _) = ctx.create_machine(spec).await?;
            let want = map(&[("keep", "b"), ("new", "2")]);
            expect_ok(
                annotate(&ctx, &id, want.clone()).await,
                "UpdateMachineAnnotations",
            )?;
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(
                got == want,
                "annotations are {got:?}, want exactly {want:?}"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.update_listed",
        "annotations set by UpdateMachineAnnotations are listed verbatim",
        |ctx| {
            let id = ctx.new_machine().await?;
            let want = map(&[("conformance.example/a", "x y z")]);
            expect_ok(
                annotate(&ctx, &id, want.clone()).await,
                "UpdateMachineAnnotations",
            )?;
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(got == want, "annotations are {got:?}, want {want:?}");
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.cleared_by_empty_map",
        "UpdateMachineAnnotations with an empty map removes every annotation",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.metadata.as_mut().context("metadata")?.annotations = map(&[("a", "1")]);
            let (id, _) = ctx.create_machine(spec).await?;
            expect_ok(
                annotate(&ctx, &id, HashMap::new()).await,
                "UpdateMachineAnnotations {}",
            )?;
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(got.is_empty(), "annotations are {got:?} after clearing");
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.labels_untouched",
        "UpdateMachineAnnotations does not change labels",
        |ctx| {
            let spec = ctx.machine_spec(&[("stay", "here")])?;
            let want = spec
                .metadata
                .as_ref()
                .map(|md| md.labels.clone())
                .unwrap_or_default();
            let (id, _) = ctx.create_machine(spec).await?;
            expect_ok(
                annotate(&ctx, &id, map(&[("x", "y")])).await,
                "UpdateMachineAnnotations",
            )?;
            let md = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?;
            ensure!(md.labels == want, "labels changed to {:?}", md.labels);
            ensure!(
                md.annotations == map(&[("x", "y")]),
                "annotations are {:?}",
                md.annotations
            );
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.idempotent",
        "repeating UpdateMachineAnnotations with the same map is OK and yields that map",
        |ctx| {
            let id = ctx.new_machine().await?;
            let want = map(&[("r", "1")]);
            for i in 0..ctx.params().idempotent_count {
                expect_ok(
                    annotate(&ctx, &id, want.clone()).await,
                    &format!("UpdateMachineAnnotations #{i}"),
                )?;
            }
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(got == want, "annotations are {got:?}, want {want:?}");
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.annotations.unknown_id_not_found", "UpdateMachineAnnotations of an unknown id returns NotFound",
        NotFound, "UpdateMachineAnnotations unknown id",
        |ctx| annotate(&ctx, &unknown_id(), map(&[("a", "b")])).await;
        "machine.annotations.empty_id_invalid", "UpdateMachineAnnotations with an empty machine_id returns InvalidArgument",
        InvalidArgument, "UpdateMachineAnnotations empty id",
        |ctx| annotate(&ctx, "", map(&[("a", "b")])).await;
    }
}
