//! Volume cases: Version and Status (the runtime and its classes), CreateVolume (the response, what
//! the runtime keeps, the requests it must reject, data sources, the state machine) and
//! ListVolumes.

use std::collections::HashMap;

use anyhow::{Context as _, ensure};
use iri_spec::volume::v1alpha1::{self as v};

use super::rpc::*;
use crate::{
    case::{Case, Service, pass},
    cases::shared::{
        create_none_rejected, created_at_now, labelled, list_by_id, list_by_label,
        list_items_complete, list_no_match_empty, list_unknown_id_empty, unknown_class_fails,
        version_set, with_unknown_class,
    },
    ctx::{expect_ok, unknown_id},
};

pub(super) fn status_cases(v: &mut Vec<Case>) {
    check_cases! { v, Volume;
        "volume.version.name_and_version_set", "volume Version returns a non-empty runtime_name and runtime_version",
        |ctx| { version_set(&ctx, Service::Volume).await?; };
    }

    // ------------------------------------------------------------ Status
    case!(
        v,
        "volume.status.has_classes",
        "volume Status reports at least one volume class",
        |ctx| {
            ensure!(
                !status(&ctx).await?.volume_class_status.is_empty(),
                "volume Status returned no classes"
            );
            pass()
        }
    );
    case!(
        v,
        "volume.status.class_set",
        "every VolumeClassStatus has volume_class with a non-empty, unique name",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.volume_class_status.is_empty(),
                "volume Status returned no classes"
            );
            let mut seen = std::collections::HashSet::new();
            for cs in &s.volume_class_status {
                let c = cs
                    .volume_class
                    .as_ref()
                    .context("a VolumeClassStatus has no volume_class")?;
                ensure!(
                    !c.name.is_empty() && seen.insert(c.name.clone()),
                    "empty or duplicate class name {:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.status.capabilities_set",
        "every volume class has capabilities with tps and iops >= 0",
        |ctx| {
            for cs in status(&ctx).await?.volume_class_status {
                let c = cs
                    .volume_class
                    .context("a VolumeClassStatus has no volume_class")?;
                let caps = c
                    .capabilities
                    .with_context(|| format!("volume class {:?} has no capabilities", c.name))?;
                ensure!(
                    caps.tps >= 0 && caps.iops >= 0,
                    "class {:?}: negative tps/iops {caps:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.status.quantity_non_negative",
        "every VolumeClassStatus quantity (bytes) is >= 0",
        |ctx| {
            for cs in status(&ctx).await?.volume_class_status {
                ensure!(
                    cs.quantity >= 0,
                    "class {:?} has quantity {}",
                    cs.volume_class.map(|c| c.name),
                    cs.quantity
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.status.class_usable",
        "the volume class used by the run is one Status reports",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.volume_class_status.is_empty(),
                "Status returned no volume classes"
            );
            let class = ctx.volume_class()?;
            ensure!(
                s.volume_class_status
                    .iter()
                    .any(|cs| cs.volume_class.as_ref().is_some_and(|c| c.name == class)),
                "class {class:?} is not reported by Status"
            );
            pass()
        }
    );
}

pub(super) fn create_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ CreateVolume
    case!(
        v,
        "volume.create.returns_id_pending",
        "CreateVolume returns the volume with an id, spec and status in state PENDING",
        |ctx| {
            let (_, vol) = ctx.create_volume(ctx.volume_spec(&[])?).await?;
            ensure!(vol.spec.is_some(), "response volume has no spec");
            ensure!(
                status_of(&vol)?.state == PENDING,
                "response state is {}, want PENDING",
                status_of(&vol)?.state
            );
            pass()
        }
    );
    case!(
        v,
        "volume.create.labels_preserved",
        "labels given at create are listed verbatim",
        |ctx| {
            let (id, want) =
                labelled::<v::Volume>(&ctx, &[("conformance.example/disk", "data")]).await?;
            let got = must_volume(&ctx, &id)
                .await?
                .metadata
                .context("no metadata")?
                .labels;
            ensure!(got == want, "labels differ: sent {want:?}, listed {got:?}");
            pass()
        }
    );
    case!(
        v,
        "volume.create.annotations_preserved",
        "annotations given at create are listed verbatim",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            let want: HashMap<String, String> = [("note".to_owned(), "x=y".to_owned())].into();
            spec.metadata.as_mut().context("metadata")?.annotations = want.clone();
            let (id, _) = ctx.create_volume(spec).await?;
            let got = must_volume(&ctx, &id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(
                got == want,
                "annotations differ: sent {want:?}, listed {got:?}"
            );
            pass()
        }
    );
    case!(
        v,
        "volume.create.created_at_ns",
        "metadata.created_at of a volume is the creation time in Unix nanoseconds",
        |ctx| {
            created_at_now::<v::Volume>(&ctx).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.spec_preserved",
        "class and requested size are listed as sent",
        |ctx| {
            let (id, _) = ctx.create_volume(ctx.volume_spec(&[])?).await?;
            let vol = must_volume(&ctx, &id).await?;
            let spec = vol.spec.as_ref().context("listed volume has no spec")?;
            ensure!(spec.class == ctx.volume_class()?, "class {:?}", spec.class);
            ensure!(
                spec.resources
                    .is_some_and(|r| r.storage_bytes == ctx.params().volume_size),
                "resources {:?}",
                spec.resources
            );
            pass()
        }
    );
    case!(
        v,
        "volume.create.ignores_client_id",
        "CreateVolume assigns a fresh id and ignores one sent by the client",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            let forged = unknown_id();
            spec.metadata.as_mut().context("metadata")?.id = forged.clone();
            let (id, _) = ctx.create_volume(spec).await?;
            ensure!(id != forged, "the runtime kept the client's id");
            must_volume(&ctx, &id).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.unique_ids",
        "parallel CreateVolume calls yield distinct, listed volumes",
        |ctx| {
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|_| async { ctx.create_volume(ctx.volume_spec(&[])?).await });
            let mut ids = Vec::new();
            for r in futures::future::join_all(futs).await {
                ids.push(r?.0);
            }
            ids.sort();
            ids.dedup();
            ensure!(
                ids.len() == n,
                "{n} creates gave {} distinct ids",
                ids.len()
            );
            let mut listed = ids_of(&ctx.list_by_labels::<v::Volume>(ctx.case_selector()).await?);
            listed.sort();
            ensure!(listed == ids, "listed {listed:?}, created {ids:?}");
            pass()
        }
    );
    check_cases! { v, Volume;
        "volume.create.rejects_missing_volume", "CreateVolume without a volume returns InvalidArgument",
        |ctx| { create_none_rejected::<v::Volume>(&ctx, "CreateVolume{volume: None}").await?; };
    }
    code_cases! { v, Volume;
        "volume.create.rejects_missing_spec", "CreateVolume with a volume without spec returns InvalidArgument",
        InvalidArgument, "CreateVolume without spec",
        |ctx| ctx.try_create_volume(v::Volume { metadata: Some(ctx.metadata(&[])), spec: None, status: None}).await;
    }
    check_cases! { v, Volume;
        "volume.create.unknown_class_fails", "CreateVolume with a class Status does not report fails (any code; the exact code is volume.create.rejects_unknown_class)",
        |ctx| { unknown_class_fails::<v::Volume>(&ctx).await?; };
    }
    code_cases! { v, Volume;
        "volume.create.rejects_unknown_class",
        "CreateVolume with a class Status does not report returns InvalidArgument",
        InvalidArgument, "CreateVolume unknown class",
        |ctx| ctx.try_create_volume(with_unknown_class::<v::Volume>(&ctx)?).await;
        "volume.create.rejects_empty_class", "CreateVolume with an empty class returns InvalidArgument",
        InvalidArgument, "CreateVolume empty class",
        |ctx| ctx.try_create_volume(with_spec::<v::Volume>(&ctx, |s| s.class = String::new())?).await;
        "volume.create.rejects_missing_resources", "CreateVolume without resources returns InvalidArgument",
        InvalidArgument, "CreateVolume without resources",
        |ctx| ctx.try_create_volume(with_spec::<v::Volume>(&ctx, |s| s.resources = None)?).await;
        "volume.create.rejects_zero_size", "CreateVolume with storage_bytes 0 returns InvalidArgument",
        InvalidArgument, "CreateVolume size 0",
        |ctx| ctx.try_create_volume(with_spec::<v::Volume>(&ctx, |s| s.resources = Some(size(0)))?).await;
        "volume.create.rejects_negative_size",
        "CreateVolume with a negative storage_bytes returns InvalidArgument",
        InvalidArgument, "CreateVolume size -1",
        |ctx| ctx.try_create_volume(with_spec::<v::Volume>(&ctx, |s| s.resources = Some(size(-1)))?).await;
        "volume.create.rejects_two_data_sources",
        "CreateVolume with both an image and a snapshot data source returns InvalidArgument",
        InvalidArgument, "CreateVolume with two data sources",
        |ctx| {
            let source = v::VolumeDataSource {
                image_data_source: Some(image_source(&ctx)),
                snapshot_data_source: Some(v::SnapshotDataSource { snapshot_id: unknown_id() }),
            };
            ctx.try_create_volume(with_spec::<v::Volume>(&ctx, |s| s.volume_data_source = Some(source))?).await
        };
        "volume.create.rejects_unknown_snapshot_source",
        "CreateVolume with a snapshot data source naming an unknown snapshot returns NotFound",
        NotFound, "CreateVolume from an unknown snapshot",
        |ctx| {
            let source = snapshot_source(unknown_id());
            ctx.try_create_volume(with_spec::<v::Volume>(&ctx, |s| s.volume_data_source = Some(source))?).await
        };
    }
    case!(
        v,
        "volume.create.from_image",
        "a volume with an image data source becomes AVAILABLE and keeps the source in spec",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            let src = v::VolumeDataSource {
                image_data_source: Some(image_source(&ctx)),
                snapshot_data_source: None,
            };
            spec.spec.as_mut().context("spec")?.volume_data_source = Some(src.clone());
            let (id, _) = ctx.create_volume(spec).await?;
            let vol = ctx
                .wait_volume(&id, "to be AVAILABLE", |x| {
                    x.and_then(|x| x.status.as_ref())
                        .is_some_and(|s| s.state == AVAILABLE)
                })
                .await?
                .context("volume vanished")?;
            ensure!(
                vol.spec.and_then(|s| s.volume_data_source) == Some(src),
                "volume_data_source not kept"
            );
            pass()
        }
    );

    // ------------------------------------------------------------ state
    check_cases! { v, Volume;
        "volume.state.becomes_available", "a volume reaches AVAILABLE within the state budget",
        |ctx| { ctx.available_volume().await?; };
    }
    case!(
        v,
        "volume.state.access_when_available",
        "an AVAILABLE volume has access with a driver and a handle",
        |ctx| {
            let id = ctx.available_volume().await?;
            let vol = must_volume(&ctx, &id).await?;
            let a = status_of(&vol)?
                .access
                .as_ref()
                .context("AVAILABLE volume has no access")?;
            ensure!(
                !a.driver.is_empty() && !a.handle.is_empty(),
                "access lacks driver or handle: {a:?}"
            );
            pass()
        }
    );
    case!(
        v,
        "volume.state.effective_size",
        "an AVAILABLE volume reports status.resources of at least the requested size",
        |ctx| {
            let id = ctx.available_volume().await?;
            let vol = must_volume(&ctx, &id).await?;
            let r = status_of(&vol)?
                .resources
                .context("AVAILABLE volume has no status.resources")?;
            ensure!(
                r.storage_bytes >= ctx.params().volume_size,
                "status size {} < requested {}",
                r.storage_bytes,
                ctx.params().volume_size
            );
            pass()
        }
    );
}

pub(super) fn list_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ ListVolumes
    check_cases! { v, Volume;
        "volume.list.by_id", "ListVolumes with an id filter returns exactly that volume",
        |ctx| { list_by_id::<v::Volume>(&ctx).await?; };
        "volume.list.by_label", "ListVolumes with a label selector returns exactly the matching volumes",
        |ctx| { list_by_label::<v::Volume>(&ctx, &[("color", "red")], &[("color", "blue")]).await?; };
        "volume.list.selector_no_match_empty", "a label selector no volume matches returns an empty list",
        |ctx| { list_no_match_empty::<v::Volume>(&ctx).await?; };
        "volume.list.unknown_id_empty", "ListVolumes with an unknown id returns an empty list, not an error",
        |ctx| { ctx.new_volume().await?; list_unknown_id_empty::<v::Volume>(&ctx).await?; };
    }
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
            for vol in list_items_complete::<v::Volume>(&ctx).await? {
                let spec = vol.spec.as_ref().context("listed volume has no spec")?;
                ensure!(
                    spec.resources.is_some(),
                    "listed volume has no spec.resources"
                );
            }
            pass()
        }
    );
}
