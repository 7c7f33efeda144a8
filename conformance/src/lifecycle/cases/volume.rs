//! The lifecycle cases of the volume side: the pool announced, Volumes available, expanded,
//! attached to Machines and deleted through the volumepoollet.

use anyhow::{Context as _, bail, ensure};
use iri_spec::{keys, machine::v1alpha1 as machine, volume::v1alpha1 as volume};
use irikit_api::{
    StoreExt,
    compute::{self, Machine},
    meta::LocalObjectReference,
    quantity::{Format, Quantity},
    storage::{Volume, VolumePool},
};

use crate::{
    case::{Outcome, Skip, pass},
    ctx::Ctx,
    lifecycle::env::{Env, MachineSide, VolumeSide},
};

use super::common::*;

pub(super) fn volume_side(env: &Env) -> anyhow::Result<&VolumeSide> {
    env.volume()
        .map_err(|reason| anyhow::anyhow!("the lifecycle volume side did not start: {reason}"))
}

/// The machine side for a volume case that also needs a machine runtime (a skip without one).
pub(super) fn machine_side_for_volumes(env: &Env) -> anyhow::Result<&MachineSide> {
    match env.machine() {
        Ok(side) => Ok(side),
        Err(reason) if reason.starts_with("no machine runtime endpoint") => {
            Err(Skip("needs a machine runtime endpoint too".to_owned()).into())
        }
        Err(reason) => bail!("the lifecycle machine side did not start: {reason}"),
    }
}

pub(super) fn describe_volume(v: &Volume) -> String {
    format!(
        "state {:?}, volumeID {:?}, volumePoolRef {:?}, access {}, status storage {:?}, deleting {}",
        v.status.state,
        v.status.volume_id,
        v.spec.volume_pool_ref.as_ref().map(|r| r.name.as_str()),
        v.status
            .access
            .as_ref()
            .map_or("none".to_owned(), |a| format!("{}:{}", a.driver, a.handle)),
        v.status.resources.get("storage").map(ToString::to_string),
        v.metadata.is_deleting()
    )
}

pub(super) fn storage(bytes: i64) -> Quantity {
    Quantity::from_int(bytes, Format::BinarySI)
}

/// Applies a Volume of the run's volume class, `--size` bytes, selecting the run's pool.
pub(super) async fn apply_volume(ctx: &Ctx, env: &Env, name: &str) -> anyhow::Result<Volume> {
    let side = volume_side(env)?;
    let mut v = Volume {
        metadata: case_meta(ctx, env, name),
        ..Volume::default()
    };
    v.spec.volume_class_ref = Some(LocalObjectReference::new(&side.class));
    v.spec
        .volume_pool_selector
        .insert(keys::TOPOLOGY_ZONE_LABEL.to_owned(), side.pool.clone());
    v.spec
        .resources
        .insert("storage".to_owned(), storage(ctx.params().volume_size));
    env.store()
        .create_typed(v)
        .await
        .with_context(|| format!("applying Volume {}/{name}", env.namespace()))
}

pub(super) fn available(v: &Volume) -> bool {
    v.status.state == "Available" && v.status.access.is_some() && !v.status.volume_id.is_empty()
}

/// The runtime volumes labelled with the volumepoollet uid label `uid`.
pub(super) async fn runtime_volumes(ctx: &Ctx, uid: &str) -> anyhow::Result<Vec<volume::Volume>> {
    let key = keys::VOLUMEPOOLLET_VOLUME_UID_LABEL;
    let selector = [(key.to_owned(), uid.to_owned())].into();
    let listed = ctx.list_by_labels::<volume::Volume>(selector).await?;
    Ok(listed
        .into_iter()
        .filter(|v| {
            v.metadata
                .as_ref()
                .is_some_and(|md| md.labels.get(key).is_some_and(|l| l == uid))
        })
        .collect())
}

/// Sets `spec.resources.storage` of Volume `name`.
pub(super) async fn set_storage(env: &Env, name: &str, bytes: i64) -> anyhow::Result<Volume> {
    update_spec(env, name, |v: &mut Volume| {
        v.spec
            .resources
            .insert("storage".to_owned(), storage(bytes));
    })
    .await
}

pub(super) fn status_storage(v: &Volume) -> Option<i128> {
    v.status.resources.get("storage").map(Quantity::value)
}

/// Waits until Volume `name` reports `status.resources.storage` of `size` bytes.
async fn wait_status_storage(ctx: &Ctx, env: &Env, name: &str, size: i64) -> anyhow::Result<()> {
    let what = format!("status.resources.storage {size}");
    let pred = |v: &Volume| status_storage(v) == Some(i128::from(size));
    wait_named(ctx, env, name, &what, (pred, describe_volume)).await?;
    Ok(())
}

/// A Volume of this case that is Available.
pub(super) async fn available_volume(ctx: &Ctx, env: &Env, name: &str) -> anyhow::Result<Volume> {
    apply_volume(ctx, env, name).await?;
    let what = "Available with access and a volumeID";
    wait_named(ctx, env, name, what, (available, describe_volume)).await
}

pub(super) async fn volume_pool_announced(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = volume_side(env)?;
    wait_pool(&ctx, env, &side.pool, "announced", |p: &VolumePool| {
        announced(
            &p.status.available_volume_classes,
            &p.status.capacity,
            "volume",
            side.classes
                .iter()
                .map(|(name, _, quantity)| (name.as_str(), *quantity)),
        )
    })
    .await?;
    pass()
}

pub(super) async fn volume_available(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = volume_side(env)?;
    let name = machine_name(&ctx, "");
    let v = available_volume(&ctx, env, &name).await?;
    let bound = v.spec.volume_pool_ref.as_ref().map(|r| r.name.as_str());
    ensure!(
        bound == Some(side.pool.as_str()),
        "Volume {name} was bound to {bound:?}, want {:?}",
        side.pool
    );
    let listed = runtime_volumes(&ctx, &v.metadata.uid).await?;
    ensure!(
        listed.len() == 1,
        "ListVolumes by {}={} returns {} volumes, want 1",
        keys::VOLUMEPOOLLET_VOLUME_UID_LABEL,
        v.metadata.uid,
        listed.len()
    );
    let md = listed[0].metadata.clone().unwrap_or_default();
    identity_labels(
        &md,
        "volume",
        [
            (keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL, env.namespace()),
            (keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL, &name),
        ],
    )?;
    let want = format!("{}://{}", side.runtime_name, md.id);
    ensure!(
        v.status.volume_id == want,
        "Volume {name}: status.volumeID is {:?}, want {want:?}",
        v.status.volume_id
    );
    pass()
}

pub(super) async fn volume_expanded(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let v = available_volume(&ctx, env, &name).await?;
    let size = ctx.params().expand_size;
    set_storage(env, &name, size).await?;
    let uid = v.metadata.uid.clone();
    ctx.wait_until(
        &format!("the runtime volume of Volume {name} to be expanded to {size} bytes"),
        || async {
            let listed = runtime_volumes(&ctx, &uid).await?;
            let sizes: Vec<i64> = listed
                .iter()
                .map(|v| {
                    v.spec
                        .as_ref()
                        .and_then(|s| s.resources)
                        .map_or(0, |r| r.storage_bytes)
                })
                .collect();
            Ok(if sizes == [size] {
                Ok(())
            } else {
                Err(format!("spec.resources.storage_bytes {sizes:?}"))
            })
        },
    )
    .await?;
    wait_status_storage(&ctx, env, &name, size).await?;
    pass()
}

/// Applies a Machine that mounts Volume `volume` as `data` on device `odb`, and waits until
/// the Machine reports it Attached.
pub(super) async fn machine_with_volume(
    ctx: &Ctx,
    env: &Env,
    volume: &Volume,
) -> anyhow::Result<(Machine, machine::Machine)> {
    let side = machine_side_for_volumes(env)?;
    let name = machine_name(ctx, "vm");
    let mut m = Machine {
        metadata: case_meta(ctx, env, &name),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new(&side.class);
    m.spec
        .machine_pool_selector
        .insert(keys::TOPOLOGY_ZONE_LABEL.to_owned(), side.pool.clone());
    m.spec.volumes = vec![compute::Volume {
        name: "data".to_owned(),
        device: Some("odb".to_owned()),
        volume_ref: Some(LocalObjectReference::new(&volume.metadata.name)),
        ..compute::Volume::default()
    }];
    env.store()
        .create_typed(m)
        .await
        .with_context(|| format!("applying Machine {}/{name}", env.namespace()))?;
    let m = wait_machine(ctx, env, &name, "Running with volume data Attached", |m| {
        running_at_generation(m)
            && m.status
                .volumes
                .iter()
                .any(|v| v.name == "data" && v.state == "Attached")
    })
    .await
    .map_err(|e| {
        e.context(format!(
            "Machine {name} mounts Volume {} through a volumeRef",
            volume.metadata.name
        ))
    })?;
    let iri = wait_runtime_machine(ctx, &m, "to exist", |_| true).await?;
    Ok((m, iri))
}

pub(super) fn iri_volume<'a>(iri: &'a machine::Machine, name: &str) -> Option<&'a machine::Volume> {
    iri.spec.as_ref()?.volumes.iter().find(|v| v.name == name)
}

pub(super) async fn volume_attached(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let v = available_volume(&ctx, env, &name).await?;
    let (_, iri) = machine_with_volume(&ctx, env, &v).await?;
    let access = v.status.access.clone().unwrap_or_default();
    let attached = iri_volume(&iri, "data").with_context(|| {
        format!(
            "runtime machine {} has no volume named data in its spec",
            iri_id(&iri)
        )
    })?;
    let connection = attached.connection.as_ref().with_context(|| {
        format!(
            "runtime machine {}: volume data has no connection",
            iri_id(&iri)
        )
    })?;
    ensure!(
        connection.driver == access.driver && connection.handle == access.handle,
        "runtime machine {}: volume data connects to {}:{}, the Volume's access is {}:{}",
        iri_id(&iri),
        connection.driver,
        connection.handle,
        access.driver,
        access.handle
    );
    ensure!(
        attached.device == "odb",
        "runtime machine {}: volume data has device {:?}, want \"odb\"",
        iri_id(&iri),
        attached.device
    );
    pass()
}

pub(super) async fn volume_attached_resized(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let v = available_volume(&ctx, env, &name).await?;
    let (m, _) = machine_with_volume(&ctx, env, &v).await?;
    let size = ctx.params().expand_size;
    set_storage(env, &name, size).await?;
    wait_status_storage(&ctx, env, &name, size).await?;
    wait_runtime_machine(
        &ctx,
        &m,
        &format!("to have volume data with effective_storage_bytes {size}"),
        |iri| {
            iri_volume(iri, "data")
                .and_then(|v| v.connection.as_ref())
                .is_some_and(|c| c.effective_storage_bytes == size)
        },
    )
    .await?;
    pass()
}

pub(super) async fn volume_delete_finalized(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let v = available_volume(&ctx, env, &name).await?;
    let listed = runtime_volumes(&ctx, &v.metadata.uid).await?;
    let id = listed
        .first()
        .and_then(|v| v.metadata.as_ref())
        .map(|md| md.id.clone())
        .context("the runtime lists no volume for the Volume")?;
    let probe_ctx = &ctx;
    deleted_through_finalizer::<Volume, _, _>(
        &ctx,
        env,
        &name,
        keys::VOLUME_FINALIZER,
        describe_volume,
        || async {
            let listed = probe_ctx.get_volume(&id).await?;
            Ok(listed.map(|_| format!("volume {id}")))
        },
    )
    .await?;
    pass()
}
