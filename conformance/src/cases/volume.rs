//! Cases for `volume.v1alpha1.VolumeRuntime`: version, status, create/list/expand/delete,
//! snapshots, events, error codes and idempotency (reference §1.5, §2, §7.4).

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, bail, ensure};
use iri_spec::volume::v1alpha1::{self as v, VolumeSnapshotState, VolumeState};
use tonic::Code;

use crate::{
    case::{Case, Profile, Service, pass, skip_gone_at_once},
    ctx::{Ctx, expect_code, expect_error, expect_ok, meta_id, plausible_ns, unknown_id},
};

const AVAILABLE: i32 = VolumeState::VolumeAvailable as i32;
const PENDING: i32 = VolumeState::VolumePending as i32;
const READY: i32 = VolumeSnapshotState::VolumeSnapshotReady as i32;

macro_rules! case {
    ($v:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(Case::new(
            $id,
            Service::Volume,
            Profile::Core,
            $desc,
            |$ctx: Ctx| async move { $body },
        ));
    };
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

pub(crate) async fn wait_events_of(
    ctx: &Ctx,
    id: &str,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    ctx.wait_until(&format!("an event about volume {id}"), || async {
        let evs = events(
            ctx,
            v::EventFilter {
                id: id.to_owned(),
                ..Default::default()
            },
        )
        .await?;
        let about: Vec<_> = evs
            .into_iter()
            .filter(|e| {
                e.spec
                    .as_ref()
                    .and_then(|s| s.involved_object_meta.as_ref())
                    .is_some_and(|md| md.id == id)
            })
            .collect();
        Ok(if about.is_empty() {
            Err("no events".to_owned())
        } else {
            Ok(about)
        })
    })
    .await
}

fn ids_of(list: &[v::Volume]) -> Vec<String> {
    list.iter()
        .filter_map(|x| x.metadata.as_ref().map(|md| md.id.clone()))
        .collect()
}

fn status_of(vol: &v::Volume) -> anyhow::Result<&v::VolumeStatus> {
    vol.status.as_ref().context("volume has no status")
}

async fn by_labels(ctx: &Ctx, sel: HashMap<String, String>) -> anyhow::Result<Vec<v::Volume>> {
    expect_ok(
        ctx.list_volumes(Some(v::VolumeFilter {
            id: String::new(),
            label_selector: sel,
        }))
        .await,
        "ListVolumes by label",
    )
}

async fn must_volume(ctx: &Ctx, id: &str) -> anyhow::Result<v::Volume> {
    ctx.get_volume(id)
        .await?
        .with_context(|| format!("volume {id} is not listed by ListVolumes by id"))
}

/// A data source restoring from snapshot `snapshot_id`.
/// A snapshot of a new volume, deleted and waited for until ListVolumeSnapshots no longer
/// lists it; its id.
async fn snapshot_deleted_and_gone(ctx: &Ctx) -> anyhow::Result<String> {
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

fn snapshot_source(snapshot_id: String) -> v::VolumeDataSource {
    v::VolumeDataSource {
        image_data_source: None,
        snapshot_data_source: Some(v::SnapshotDataSource { snapshot_id }),
    }
}

/// All volume cases.
#[allow(clippy::too_many_lines)]
pub(crate) fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let v = &mut out;

    case!(
        v,
        "volume.version.name_and_version_set",
        "volume Version returns a non-empty runtime_name and runtime_version",
        |ctx| {
            let mut c = ctx.vc()?;
            let r = expect_ok(
                ctx.rpc(c.version(v::VersionRequest::default())).await,
                "Version",
            )?;
            ensure!(
                !r.runtime_name.is_empty() && !r.runtime_version.is_empty(),
                "empty Version answer: {r:?}"
            );
            pass()
        }
    );

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
            let spec = ctx.volume_spec(&[("conformance.example/disk", "data")])?;
            let want = spec
                .metadata
                .as_ref()
                .map(|m| m.labels.clone())
                .unwrap_or_default();
            let (id, _) = ctx.create_volume(spec).await?;
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
            let id = ctx.new_volume().await?;
            let t = must_volume(&ctx, &id)
                .await?
                .metadata
                .context("no metadata")?
                .created_at;
            ensure!(
                plausible_ns(t, Duration::from_secs(600)),
                "created_at {t} is not now in Unix ns"
            );
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
            let mut listed = ids_of(&by_labels(&ctx, ctx.case_selector()).await?);
            listed.sort();
            ensure!(listed == ids, "listed {listed:?}, created {ids:?}");
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_missing_volume",
        "CreateVolume without a volume returns InvalidArgument",
        |ctx| {
            let mut c = ctx.vc()?;
            let res = ctx
                .rpc(c.create_volume(v::CreateVolumeRequest { volume: None }))
                .await;
            if let Ok(r) = &res
                && let Some(md) = r.volume.as_ref().and_then(|x| x.metadata.as_ref())
            {
                let _ = ctx.delete_volume(&md.id).await;
            }
            expect_code(res, Code::InvalidArgument, "CreateVolume{volume: None}")?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_missing_spec",
        "CreateVolume with a volume without spec returns InvalidArgument",
        |ctx| {
            let res = ctx
                .try_create_volume(v::Volume {
                    metadata: Some(ctx.metadata(&[])),
                    spec: None,
                    status: None,
                })
                .await;
            expect_code(res, Code::InvalidArgument, "CreateVolume without spec")?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.unknown_class_fails",
        "CreateVolume with a class Status does not report fails (any code; the exact code is volume.create.rejects_unknown_class)",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.class = "conformance-no-such-class".to_owned();
            expect_error(
                ctx.try_create_volume(spec).await,
                "CreateVolume with an unknown class",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_unknown_class",
        "CreateVolume with a class Status does not report returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.class = "conformance-no-such-class".to_owned();
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::InvalidArgument,
                "CreateVolume unknown class",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_empty_class",
        "CreateVolume with an empty class returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.class = String::new();
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::InvalidArgument,
                "CreateVolume empty class",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_missing_resources",
        "CreateVolume without resources returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.resources = None;
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::InvalidArgument,
                "CreateVolume without resources",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_zero_size",
        "CreateVolume with storage_bytes 0 returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.resources =
                Some(v::VolumeResources { storage_bytes: 0 });
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::InvalidArgument,
                "CreateVolume size 0",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_negative_size",
        "CreateVolume with a negative storage_bytes returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.resources =
                Some(v::VolumeResources { storage_bytes: -1 });
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::InvalidArgument,
                "CreateVolume size -1",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_two_data_sources",
        "CreateVolume with both an image and a snapshot data source returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.volume_data_source = Some(v::VolumeDataSource {
                image_data_source: Some(v::ImageDataSource {
                    image: ctx.params().image.clone(),
                    architecture: "amd64".to_owned(),
                }),
                snapshot_data_source: Some(v::SnapshotDataSource {
                    snapshot_id: unknown_id(),
                }),
            });
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::InvalidArgument,
                "CreateVolume with two data sources",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.rejects_unknown_snapshot_source",
        "CreateVolume with a snapshot data source naming an unknown snapshot returns NotFound",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            spec.spec.as_mut().context("spec")?.volume_data_source =
                Some(snapshot_source(unknown_id()));
            expect_code(
                ctx.try_create_volume(spec).await,
                Code::NotFound,
                "CreateVolume from an unknown snapshot",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.create.from_image",
        "a volume with an image data source becomes AVAILABLE and keeps the source in spec",
        |ctx| {
            let mut spec = ctx.volume_spec(&[])?;
            let src = v::VolumeDataSource {
                image_data_source: Some(v::ImageDataSource {
                    image: ctx.params().image.clone(),
                    architecture: "amd64".to_owned(),
                }),
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
    case!(
        v,
        "volume.state.becomes_available",
        "a volume reaches AVAILABLE within the state budget",
        |ctx| {
            ctx.available_volume().await?;
            pass()
        }
    );
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
    case!(
        v,
        "volume.expand.shrink_rejected",
        "ExpandVolume to a smaller size returns InvalidArgument",
        |ctx| {
            let id = ctx.available_volume().await?;
            expect_code(
                ctx.expand_volume(&id, ctx.params().volume_size / 2).await,
                Code::InvalidArgument,
                "ExpandVolume shrink",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.expand.unknown_id_not_found",
        "ExpandVolume of an unknown id returns NotFound",
        |ctx| {
            expect_code(
                ctx.expand_volume(&unknown_id(), 1 << 31).await,
                Code::NotFound,
                "ExpandVolume unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.expand.empty_id_invalid",
        "ExpandVolume with an empty volume_id returns InvalidArgument",
        |ctx| {
            expect_code(
                ctx.expand_volume("", 1 << 31).await,
                Code::InvalidArgument,
                "ExpandVolume empty id",
            )?;
            pass()
        }
    );
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

    // ------------------------------------------------------------ DeleteVolume
    case!(
        v,
        "volume.delete.unknown_id_not_found",
        "DeleteVolume of an unknown id returns NotFound",
        |ctx| {
            expect_code(
                ctx.delete_volume(&unknown_id()).await,
                Code::NotFound,
                "DeleteVolume unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.delete.empty_id_invalid",
        "DeleteVolume with an empty volume_id returns InvalidArgument",
        |ctx| {
            expect_code(
                ctx.delete_volume("").await,
                Code::InvalidArgument,
                "DeleteVolume empty id",
            )?;
            pass()
        }
    );
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
    case!(
        v,
        "volume.snapshot.unknown_volume_not_found",
        "CreateVolumeSnapshot of an unknown volume returns NotFound",
        |ctx| {
            expect_code(
                ctx.try_create_snapshot(&unknown_id()).await,
                Code::NotFound,
                "CreateVolumeSnapshot unknown volume",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.empty_volume_id_invalid",
        "CreateVolumeSnapshot with an empty spec.volume_id returns InvalidArgument",
        |ctx| {
            expect_code(
                ctx.try_create_snapshot("").await,
                Code::InvalidArgument,
                "CreateVolumeSnapshot empty volume id",
            )?;
            pass()
        }
    );
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
    case!(
        v,
        "volume.snapshot.delete_unknown_not_found",
        "DeleteVolumeSnapshot of an unknown id returns NotFound",
        |ctx| {
            expect_code(
                ctx.delete_snapshot(&unknown_id()).await,
                Code::NotFound,
                "DeleteVolumeSnapshot unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.delete_empty_id_invalid",
        "DeleteVolumeSnapshot with an empty id returns InvalidArgument",
        |ctx| {
            expect_code(
                ctx.delete_snapshot("").await,
                Code::InvalidArgument,
                "DeleteVolumeSnapshot empty id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.delete_eventually_gone",
        "a deleted snapshot disappears from ListVolumeSnapshots (a later delete: volume.snapshot.delete_not_found_after_gone)",
        |ctx| {
            snapshot_deleted_and_gone(&ctx).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.snapshot.delete_not_found_after_gone",
        "DeleteVolumeSnapshot of a snapshot that is gone returns NotFound",
        |ctx| {
            let sid = snapshot_deleted_and_gone(&ctx).await?;
            expect_code(
                ctx.delete_snapshot(&sid).await,
                Code::NotFound,
                "DeleteVolumeSnapshot after gone",
            )?;
            pass()
        }
    );
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

    // ------------------------------------------------------------ events
    case!(
        v,
        "volume.events.listed",
        "creating a volume produces at least one event about it",
        |ctx| {
            let id = ctx.new_volume().await?;
            wait_events_of(&ctx, &id).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.events.time_in_seconds",
        "volume event_time is in Unix seconds",
        |ctx| {
            let id = ctx.new_volume().await?;
            let now = crate::ctx::unix_secs();
            for e in wait_events_of(&ctx, &id).await? {
                let t = e.spec.as_ref().map_or(0, |s| s.event_time);
                ensure!(
                    (now - 600..=now + 600).contains(&t),
                    "event_time {t} is not now in Unix seconds"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.events.involved_labels",
        "volume events carry the volume's labels in involved_object_meta",
        |ctx| {
            let (id, vol) = ctx.create_volume(ctx.volume_spec(&[("evt", "v")])?).await?;
            let want = vol.metadata.map(|m| m.labels).unwrap_or_default();
            for e in wait_events_of(&ctx, &id).await? {
                let got = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|m| m.labels)
                    .unwrap_or_default();
                ensure!(got == want, "event labels {got:?} != {want:?}");
            }
            pass()
        }
    );
    case!(
        v,
        "volume.events.label_filter",
        "volume ListEvents with a label selector returns only events of matching volumes",
        |ctx| {
            let a = ctx
                .create_volume(ctx.volume_spec(&[("which", "a")])?)
                .await?
                .0;
            let _b = ctx
                .create_volume(ctx.volume_spec(&[("which", "b")])?)
                .await?
                .0;
            wait_events_of(&ctx, &a).await?;
            let mut sel = ctx.case_selector();
            sel.insert("which".into(), "a".into());
            let evs = events(
                &ctx,
                v::EventFilter {
                    label_selector: sel,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(!evs.is_empty(), "no events for which=a");
            for e in evs {
                let id = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|m| m.id)
                    .unwrap_or_default();
                ensure!(id == a, "event about {id} for selector which=a");
            }
            pass()
        }
    );
    case!(
        v,
        "volume.events.time_window",
        "volume ListEvents with both bounds > 0 honours the window",
        |ctx| {
            let id = ctx.new_volume().await?;
            wait_events_of(&ctx, &id).await?;
            let evs = events(
                &ctx,
                v::EventFilter {
                    id: id.clone(),
                    events_from_time: 1,
                    events_to_time: 1000,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(
                evs.is_empty(),
                "a window in 1970 returned {} events",
                evs.len()
            );
            pass()
        }
    );

    out
}
