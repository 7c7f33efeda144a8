//! The lifecycle cases of the machine side: the pool announced, Machines scheduled, created,
//! powered and deleted through the machinepoollet, and an unreachable runtime.

use anyhow::{Context as _, ensure};
use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::{
    StoreExt,
    compute::{Machine, MachinePool, Power},
    meta::condition_status,
};

use crate::{
    case::{Outcome, pass},
    ctx::Ctx,
};

use super::common::*;
use crate::lifecycle::env::Env;

pub(super) async fn pool_announced(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    wait_pool(&ctx, env, &side.pool, "announced", |p: &MachinePool| {
        let ready = condition_status(&p.status.conditions, "Ready");
        if ready != Some("True") {
            return Err(format!("Ready is {ready:?}"));
        }
        announced(
            &p.status.available_machine_classes,
            &p.status.capacity,
            "machine",
            side.classes.iter().map(|c| (c.name.as_str(), c.quantity)),
        )
    })
    .await?;
    pass()
}

pub(super) async fn machine_scheduled(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    let m = wait_machine(&ctx, env, &name, "bound to a pool", |m| {
        m.spec.machine_pool_ref.is_some()
    })
    .await?;
    bound_to(&m, &side.pool)?;
    pass()
}

pub(super) async fn machine_created_with_labels(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    let name = machine_name(&ctx, "");
    let m = apply_machine(&ctx, env, &name, Power::On).await?;
    let iri = wait_runtime_machine(&ctx, &m, "to be created", |_| true).await?;
    let md = iri.metadata.clone().unwrap_or_default();
    identity_labels(
        &md,
        "machine",
        [
            (keys::MACHINE_NAMESPACE_LABEL, env.namespace()),
            (keys::MACHINE_NAME_LABEL, &name),
        ],
    )?;
    let class = iri
        .spec
        .as_ref()
        .map(|s| s.class.as_str())
        .unwrap_or_default();
    ensure!(
        class == side.class,
        "runtime machine {}: spec.class is {class:?}, want {:?}",
        md.id,
        side.class
    );
    pass()
}

pub(super) async fn machine_generation_annotations(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let m = apply_machine(&ctx, env, &name, Power::On).await?;
    wait_runtime_machine(&ctx, &m, "to be created", |_| true).await?;
    // Binding set spec.machinePoolRef, so the generation the poollet saw is the current one.
    let m: Machine = env.store().get_typed(env.namespace(), &name).await?;
    let want = m.metadata.generation.to_string();
    let iri = wait_runtime_machine(
        &ctx,
        &m,
        &format!("to carry {}={want}", keys::MACHINE_GENERATION_ANNOTATION),
        |iri| {
            iri.metadata
                .as_ref()
                .and_then(|md| md.annotations.get(keys::MACHINE_GENERATION_ANNOTATION))
                == Some(&want)
        },
    )
    .await
    .with_context(|| {
        format!(
            "the runtime machine must carry the annotation {} = Machine.metadata.generation",
            keys::MACHINE_GENERATION_ANNOTATION
        )
    })?;
    let md = iri.metadata.unwrap_or_default();
    let iri_generation = md.annotations.get(keys::IRI_MACHINE_GENERATION_ANNOTATION);
    ensure!(
        iri_generation.is_some_and(|g| g.parse::<i64>().is_ok()),
        "runtime machine {}: annotation {} is {iri_generation:?}, want a decimal IRI generation",
        md.id,
        keys::IRI_MACHINE_GENERATION_ANNOTATION
    );
    pass()
}

pub(super) async fn machine_running_propagated(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    let m = wait_machine(&ctx, env, &name, "Running at its generation", |m| {
        running_at_generation(m) && !m.status.machine_id.is_empty()
    })
    .await?;
    let iri = wait_runtime_machine(&ctx, &m, "to exist", |_| true).await?;
    let want = format!("{}://{}", side.runtime_name, iri_id(&iri));
    ensure!(
        m.status.machine_id == want,
        "Machine {name}: status.machineID is {:?}, want {want:?}",
        m.status.machine_id
    );
    pass()
}

pub(super) async fn machine_power_off_propagated(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let (name, _) = running_machine(&ctx, env).await?;
    let updated = set_power(env, &name, Power::Off).await?;
    wait_runtime_machine(&ctx, &updated, "to have spec.power POWER_OFF", |iri| {
        iri_power(iri) == machine::Power::Off as i32
    })
    .await?;
    wait_machine(
        &ctx,
        env,
        &name,
        "Terminated or Shutdown at its new generation",
        |m| m.metadata.generation >= updated.metadata.generation && off_at_generation(m),
    )
    .await?;
    pass()
}

pub(super) async fn machine_power_on_propagated(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let m = apply_machine(&ctx, env, &name, Power::Off).await?;
    wait_machine(
        &ctx,
        env,
        &name,
        "Terminated or Shutdown at its generation",
        off_at_generation,
    )
    .await?;
    let iri = wait_runtime_machine(&ctx, &m, "to exist", |_| true).await?;
    ensure!(
        iri_power(&iri) == machine::Power::Off as i32,
        "runtime machine {} of a Machine created with power Off has spec.power {} (want POWER_OFF)",
        iri_id(&iri),
        iri_power(&iri)
    );
    let updated = set_power(env, &name, Power::On).await?;
    wait_runtime_machine(&ctx, &updated, "to have spec.power POWER_ON", |iri| {
        iri_power(iri) == machine::Power::On as i32
    })
    .await?;
    wait_machine(&ctx, env, &name, "Running at its new generation", |m| {
        m.metadata.generation >= updated.metadata.generation && running_at_generation(m)
    })
    .await?;
    pass()
}

pub(super) async fn machine_delete_finalized(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let (name, m) = running_machine(&ctx, env).await?;
    let iri = wait_runtime_machine(&ctx, &m, "to exist", |_| true).await?;
    let id = iri_id(&iri);
    let probe_id = id.clone();
    let probe_ctx = &ctx;
    deleted_through_finalizer::<Machine, _, _>(
        &ctx,
        env,
        &name,
        keys::MACHINE_FINALIZER,
        describe,
        || async {
            let listed = probe_ctx.get_machine(&probe_id).await?;
            Ok(listed.map(|m| {
                format!(
                    "machine {probe_id} ({})",
                    crate::ctx::describe_machine(Some(&m))
                )
            }))
        },
    )
    .await?;
    let left = runtime_machines(&ctx, &m.metadata.uid).await?;
    ensure!(
        left.is_empty(),
        "the runtime still lists {} machine(s) for the deleted Machine",
        left.len()
    );
    pass()
}

pub(super) async fn pool_unreachable_not_ready(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    let ready = "Ready while the runtime is reachable";
    let (_restore, pool) = cut_off(&ctx, env, ready, |ready| match ready {
        Some("False") => Ok(()),
        other => Err(format!("Ready is {other:?}")),
    })
    .await?;
    let reason = pool
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    ensure!(
        reason == "RuntimeUnreachable",
        "MachinePool {}: Ready=False with reason {reason:?}, want RuntimeUnreachable",
        side.pool
    );
    side.gate.restore();
    wait_pool_ready(
        &ctx,
        env,
        "Ready again after the runtime is reachable again",
    )
    .await?;
    pass()
}

pub(super) async fn scheduler_avoids_unready_pool(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    let ready = "Ready and offering the class";
    let (_restore, _) = cut_off(&ctx, env, ready, |ready| match ready {
        Some("True") => Err("Ready is still True".to_owned()),
        _ => Ok(()),
    })
    .await?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    wait_out_of_capacity(
        &ctx,
        env,
        &name,
        ("an OutOfCapacity event", "though its pool is not Ready"),
        |_| true,
    )
    .await?;
    side.gate.restore();
    let m = wait_machine(
        &ctx,
        env,
        &name,
        "scheduled and Running once the pool is Ready again",
        |m| m.spec.machine_pool_ref.is_some() && running_at_generation(m),
    )
    .await?;
    bound_to(&m, &side.pool)?;
    pass()
}

/// Machine `m` is bound to `pool`.
fn bound_to(m: &Machine, pool: &str) -> anyhow::Result<()> {
    let bound = m.spec.machine_pool_ref.as_ref().map(|r| r.name.as_str());
    ensure!(
        bound == Some(pool),
        "Machine {} was bound to pool {bound:?}, want {pool:?}",
        m.metadata.name
    );
    Ok(())
}

/// A Machine of this case applied with power On and Running at its generation: its name and
/// the Machine.
async fn running_machine(ctx: &Ctx, env: &Env) -> anyhow::Result<(String, Machine)> {
    let name = machine_name(ctx, "");
    apply_machine(ctx, env, &name, Power::On).await?;
    let what = "Running at its generation";
    let m = wait_machine(ctx, env, &name, what, running_at_generation).await?;
    Ok((name, m))
}

/// Once the machine side's pool is Ready (`ready` says for what), cuts the poollet off the
/// runtime and waits until the pool's Ready condition passes `check`; the guard that restores
/// the connection when dropped, and the pool.
async fn cut_off<'e>(
    ctx: &Ctx,
    env: &'e Env,
    ready: &str,
    check: impl Fn(Option<&str>) -> Result<(), String>,
) -> anyhow::Result<(Restore<'e>, MachinePool)> {
    let side = machine_side(env)?;
    wait_pool_ready(ctx, env, ready).await?;
    let restore = Restore(&side.gate);
    side.gate.cut();
    let pool = wait_pool(
        ctx,
        env,
        &side.pool,
        "Ready=False after the runtime was cut off",
        |p: &MachinePool| check(condition_status(&p.status.conditions, "Ready")),
    )
    .await?;
    Ok((restore, pool))
}
