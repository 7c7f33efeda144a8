//! The lifecycle cases: each applies objects to the store and checks one thing that the
//! scheduler and the poollet must propagate between the store and the runtime under test
//! (reference §3.1–§3.7, §4.3–§4.5, §5.1). The runtime is checked through the generated gRPC
//! client, the control plane through the store.

use std::collections::HashMap;

use anyhow::{Context as _, bail, ensure};
use iri_spec::{keys, machine::v1alpha1 as machine, volume::v1alpha1 as volume};
use irikit_api::{
    Kind, ListOptions, Object, Resource, StoreExt,
    compute::{self, Machine, MachinePool, Power},
    core::Event,
    meta::{LocalObjectReference, ObjectMeta, condition_status},
    quantity::{Format, Quantity},
    storage::{Volume, VolumePool},
};

use crate::{
    case::{Case, Outcome, Profile, Service, Skip, pass},
    ctx::Ctx,
    lifecycle::env::{Env, MachineSide, VolumeSide, dns_part},
};

type Body = fn(Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>>;

/// Every lifecycle case, in a stable order.
pub fn cases() -> Vec<Case> {
    let m = |id: &str, rule: &str, f: Body| {
        Case::new(id, Service::Machine, Profile::Core, rule, f).lifecycle()
    };
    let v = |id: &str, rule: &str, f: Body| {
        Case::new(id, Service::Volume, Profile::Core, rule, f).lifecycle()
    };
    vec![
        m(
            "lifecycle.pool.announced",
            "the MachinePool is announced Ready with every runtime class in availableMachineClasses and capacity class/machine.<class> = the class quantity of Status",
            |ctx| Box::pin(pool_announced(ctx)),
        ),
        m(
            "lifecycle.machine.scheduled",
            "an applied Machine without machinePoolRef is bound to the pool that offers its class",
            |ctx| Box::pin(machine_scheduled(ctx)),
        ),
        m(
            "lifecycle.machine.created_with_labels",
            "the runtime gets one machine labelled machine-uid/-namespace/-name of the Machine, with the runtime's class",
            |ctx| Box::pin(machine_created_with_labels(ctx)),
        ),
        m(
            "lifecycle.machine.generation_annotations",
            "the runtime machine carries the machine-generation and irimachine-generation annotations (§3.4)",
            |ctx| Box::pin(machine_generation_annotations(ctx)),
        ),
        m(
            "lifecycle.machine.running_propagated",
            "status.state Running reaches the Machine with observedGeneration = generation and machineID <runtime_name>://<id>",
            |ctx| Box::pin(machine_running_propagated(ctx)),
        ),
        m(
            "lifecycle.machine.power_off_propagated",
            "spec.power Off reaches the runtime's spec.power and the Machine turns Terminated (or Shutdown) at the new generation",
            |ctx| Box::pin(machine_power_off_propagated(ctx)),
        ),
        m(
            "lifecycle.machine.power_on_propagated",
            "a Machine created powered off is created off on the runtime, and spec.power On makes it Running at the new generation",
            |ctx| Box::pin(machine_power_on_propagated(ctx)),
        ),
        m(
            "lifecycle.machine.delete_finalized",
            "a deleted Machine is held by the machinepoollet finalizer until the runtime no longer lists its machine, then it is gone",
            |ctx| Box::pin(machine_delete_finalized(ctx)),
        ),
        m(
            "lifecycle.pool.unreachable_not_ready",
            "when the poollet cannot reach the runtime the pool turns Ready=False (RuntimeUnreachable), and Ready=True once it can again",
            |ctx| Box::pin(pool_unreachable_not_ready(ctx)),
        )
        .exclusive(),
        m(
            "lifecycle.scheduler.avoids_unready_pool",
            "a Machine selecting an unready pool stays unscheduled with an OutOfCapacity event, and is scheduled and Running once the pool is Ready",
            |ctx| Box::pin(scheduler_avoids_unready_pool(ctx)),
        )
        .exclusive(),
        v(
            "lifecycle.volume.pool_announced",
            "the VolumePool is announced with every runtime volume class in availableVolumeClasses and capacity class/volume.<class> = the class quantity of Status",
            |ctx| Box::pin(volume_pool_announced(ctx)),
        ),
        v(
            "lifecycle.volume.available",
            "an applied Volume is bound to the pool, created on the runtime labelled volume-uid/-namespace/-name, and turns Available with volumeID <runtime_name>://<id> and access",
            |ctx| Box::pin(volume_available(ctx)),
        ),
        v(
            "lifecycle.volume.expanded",
            "a larger spec.resources.storage reaches the runtime (ExpandVolume) and comes back in the Volume's status.resources.storage",
            |ctx| Box::pin(volume_expanded(ctx)),
        ),
        v(
            "lifecycle.volume.attached",
            "a Machine with a volumeRef gets the Volume's connection (driver, handle) on the runtime and its status shows the volume Attached",
            |ctx| Box::pin(volume_attached(ctx)),
        ),
        v(
            "lifecycle.volume.attached_resized",
            "expanding an attached Volume updates the runtime machine's volume connection (UpdateVolume with the new effective_storage_bytes)",
            |ctx| Box::pin(volume_attached_resized(ctx)),
        ),
        v(
            "lifecycle.volume.delete_finalized",
            "a deleted Volume is held by the volumepoollet finalizer until the runtime no longer lists it, then it is gone",
            |ctx| Box::pin(volume_delete_finalized(ctx)),
        ),
    ]
    .into_iter()
    .chain(super::reservation::cases())
    .collect()
}

// ------------------------------------------------------------------------------- helpers

pub(super) fn machine_side(env: &Env) -> anyhow::Result<&MachineSide> {
    env.machine()
        .map_err(|reason| anyhow::anyhow!("the lifecycle machine side did not start: {reason}"))
}

/// Fails with the control plane's failures, if a component stopped.
pub(super) fn plane_ok(env: &Env) -> anyhow::Result<()> {
    let failures = env.plane().failures();
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// The Machine name of this case (`suffix` distinguishes several in one case).
pub(super) fn machine_name(ctx: &Ctx, suffix: &str) -> String {
    let base = dns_part(ctx.case_id().trim_start_matches("lifecycle."));
    if suffix.is_empty() {
        base
    } else {
        format!("{base}-{suffix}")
    }
}

/// Applies a Machine of the run's class that selects the run's pool.
async fn apply_machine(ctx: &Ctx, env: &Env, name: &str, power: Power) -> anyhow::Result<Machine> {
    let side = machine_side(env)?;
    let mut m = Machine {
        metadata: case_meta(ctx, env, name),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new(&side.class);
    m.spec
        .machine_pool_selector
        .insert(keys::TOPOLOGY_ZONE_LABEL.to_owned(), side.pool.clone());
    m.spec.power = power;
    env.store()
        .create_typed(m)
        .await
        .with_context(|| format!("applying Machine {}/{name}", env.namespace()))
}

pub(super) fn describe(m: &Machine) -> String {
    format!(
        "state {:?}, observedGeneration {} of generation {}, machinePoolRef {:?}, machineID {:?}, deleting {}",
        m.status.state,
        m.status.observed_generation,
        m.metadata.generation,
        m.spec.machine_pool_ref.as_ref().map(|r| r.name.as_str()),
        m.status.machine_id,
        m.metadata.is_deleting()
    )
}

/// Polls the store until the object satisfies `check` (`Ok(())`, else the reason why not).
pub(super) async fn wait_object<R: Resource>(
    ctx: &Ctx,
    env: &Env,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&R) -> Result<(), String>,
) -> anyhow::Result<R> {
    ctx.wait_until(what, || async {
        plane_ok(env)?;
        match env.store().get_typed::<R>(namespace, name).await {
            Ok(obj) => Ok(check(&obj).map(|()| obj)),
            Err(irikit_api::store::Error::NotFound { .. }) => Ok(Err(format!(
                "{} {namespace}/{name} not found",
                R::KIND.as_str()
            ))),
            Err(err) => Err(anyhow::Error::new(err).context("reading the store")),
        }
    })
    .await
}

pub(super) async fn wait_machine(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&Machine) -> bool,
) -> anyhow::Result<Machine> {
    wait_object(
        ctx,
        env,
        env.namespace(),
        name,
        &format!("Machine {name} {what}"),
        |m: &Machine| {
            if pred(m) { Ok(()) } else { Err(describe(m)) }
        },
    )
    .await
}

pub(super) fn running_at_generation(m: &Machine) -> bool {
    m.status.state == "Running" && m.status.observed_generation == m.metadata.generation
}

fn off_at_generation(m: &Machine) -> bool {
    matches!(m.status.state.as_str(), "Terminated" | "Shutdown")
        && m.status.observed_generation == m.metadata.generation
}

/// The runtime machines labelled with `uid` (ListMachines by the machine-uid label).
pub(super) async fn runtime_machines(
    ctx: &Ctx,
    uid: &str,
) -> anyhow::Result<Vec<machine::Machine>> {
    let selector: HashMap<String, String> =
        [(keys::MACHINE_UID_LABEL.to_owned(), uid.to_owned())].into();
    let listed = ctx.list_machines_by_labels(selector).await?;
    // A runtime that ignores selectors returns everything: check the label ourselves.
    Ok(listed
        .into_iter()
        .filter(|m| {
            m.metadata.as_ref().is_some_and(|md| {
                md.labels
                    .get(keys::MACHINE_UID_LABEL)
                    .is_some_and(|v| v == uid)
            })
        })
        .collect())
}

/// Polls until the runtime lists exactly one machine for `m` satisfying `pred`.
pub(super) async fn wait_runtime_machine(
    ctx: &Ctx,
    m: &Machine,
    what: &str,
    pred: impl Fn(&machine::Machine) -> bool,
) -> anyhow::Result<machine::Machine> {
    let uid = m.metadata.uid.clone();
    ctx.wait_until(
        &format!(
            "the runtime machine of Machine {} (machine-uid={uid}) {what}",
            m.metadata.name
        ),
        || async {
            let mut listed = runtime_machines(ctx, &uid).await?;
            Ok(match listed.len() {
                0 => Err("ListMachines by the machine-uid label returns no machine".to_owned()),
                1 => {
                    let iri = listed.remove(0);
                    if pred(&iri) {
                        Ok(iri)
                    } else {
                        Err(crate::ctx::describe_machine(Some(&iri)))
                    }
                }
                n => Err(format!("{n} runtime machines carry this machine-uid")),
            })
        },
    )
    .await
}

fn iri_id(m: &machine::Machine) -> String {
    m.metadata
        .as_ref()
        .map(|md| md.id.clone())
        .unwrap_or_default()
}

fn iri_power(m: &machine::Machine) -> i32 {
    m.spec.as_ref().map_or(-1, |s| s.power)
}

/// Sets `spec.power` of Machine `name`.
async fn set_power(env: &Env, name: &str, power: Power) -> anyhow::Result<Machine> {
    update_spec(env, name, |m: &mut Machine| m.spec.power = power).await
}

/// Waits until the run's pool is Ready=True and offers `class`.
async fn wait_pool_ready(ctx: &Ctx, env: &Env, what: &str) -> anyhow::Result<MachinePool> {
    let side = machine_side(env)?;
    let key = format!("class/machine.{}", side.class);
    wait_object(
        ctx,
        env,
        "",
        &side.pool,
        &format!("MachinePool {} {what}", side.pool),
        |p: &MachinePool| {
            let ready = condition_status(&p.status.conditions, "Ready");
            let allocatable = p.status.allocatable.get(&key).map(|q| q.value());
            if ready == Some("True") && allocatable.is_some_and(|a| a > 0) {
                Ok(())
            } else {
                Err(format!(
                    "Ready {ready:?}, allocatable[{key}] {allocatable:?}"
                ))
            }
        },
    )
    .await
}

/// Deletes `name` of kind `R` through the store and waits until it is gone, checking that the
/// finalizer held it and was dropped only once `runtime` (the runtime object's description
/// while it is still listed) returns `None`.
async fn deleted_through_finalizer<R, F, Fut>(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    finalizer: &str,
    describe_obj: fn(&R) -> String,
    runtime: F,
) -> anyhow::Result<()>
where
    R: Resource,
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let kind = R::KIND.as_str();
    let held = env
        .store()
        .delete(R::KIND, env.namespace(), name, None)
        .await
        .with_context(|| format!("deleting the {kind}"))?;
    ensure!(
        held.is_some(),
        "{kind} {name} was removed at once: the finalizer {finalizer} was not set"
    );
    ctx.wait_until(&format!("{kind} {name} to be gone after its runtime object"), || async {
        plane_ok(env)?;
        // Store first: once it says gone, the runtime (read after it) must not list the object.
        let stored = env.store().get_typed::<R>(env.namespace(), name).await;
        let listed = runtime().await?;
        match stored {
            Ok(obj) => Ok(Err(format!(
                "{kind} still present ({}); runtime lists {}",
                describe_obj(&obj),
                listed.as_deref().unwrap_or("nothing")
            ))),
            Err(irikit_api::store::Error::NotFound { .. }) => {
                if let Some(listed) = listed {
                    bail!("{kind} {name} is gone while the runtime still lists its {listed}: the finalizer was dropped too early");
                }
                Ok(Ok(()))
            }
            Err(err) => Err(anyhow::Error::new(err).context("reading the store")),
        }
    })
    .await
}

/// Updates the spec of `name` with `change` (re-reading on a conflict).
async fn update_spec<R: Resource>(
    env: &Env,
    name: &str,
    change: impl Fn(&mut R),
) -> anyhow::Result<R> {
    for _ in 0..10 {
        let mut obj: R = env.store().get_typed(env.namespace(), name).await?;
        change(&mut obj);
        match env.store().update_typed(obj).await {
            Ok(obj) => return Ok(obj),
            Err(irikit_api::store::Error::Conflict { .. }) => {}
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("updating {} {name}", R::KIND.as_str())));
            }
        }
    }
    bail!(
        "updating {} {name}: conflicts on every attempt",
        R::KIND.as_str()
    )
}

/// Metadata of an object of this case: in the run's namespace, with the run-id label.
pub(super) fn case_meta(ctx: &Ctx, env: &Env, name: &str) -> ObjectMeta {
    let mut meta = ObjectMeta::namespaced(env.namespace(), name);
    meta.labels
        .insert(crate::ctx::RUN_ID_LABEL.to_owned(), ctx.run_id().to_owned());
    meta
}

/// Whether a pool announces every runtime class `(name, quantity)` of `what` (`machine`,
/// `volume`) with capacity `class/<what>.<name>` = the quantity; else why not.
fn announced<'a>(
    available: &[LocalObjectReference],
    capacity: &irikit_api::ResourceList,
    what: &str,
    classes: impl Iterator<Item = (&'a str, i64)>,
) -> Result<(), String> {
    for (class, quantity) in classes {
        if !available.iter().any(|c| c.name == class) {
            let names: Vec<&str> = available.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "available {what} classes {names:?} lack the runtime class {class}"
            ));
        }
        let key = format!("class/{what}.{class}");
        let got = capacity.get(&key).map(Quantity::value);
        if got != Some(i128::from(quantity)) {
            return Err(format!(
                "capacity[{key}] is {got:?}, the runtime's Status says {quantity}"
            ));
        }
    }
    Ok(())
}

/// Checks that the runtime object's labels carry the store object's identity.
fn identity_labels(
    md: &iri_spec::meta::v1alpha1::ObjectMetadata,
    what: &str,
    wanted: [(&str, &str); 2],
) -> anyhow::Result<()> {
    for (key, want) in wanted {
        let got = md.labels.get(key).map(String::as_str);
        ensure!(
            got == Some(want),
            "runtime {what} {}: label {key} is {got:?}, want {want:?}",
            md.id
        );
    }
    Ok(())
}

/// Restores the gate when dropped (also when the case fails or times out).
struct Restore<'a>(&'a crate::lifecycle::gate::Gate);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.restore();
    }
}

// --------------------------------------------------------------------------------- cases

async fn pool_announced(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    wait_object(
        &ctx,
        env,
        "",
        &side.pool,
        &format!("MachinePool {} announced", side.pool),
        |p: &MachinePool| {
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
        },
    )
    .await?;
    pass()
}

async fn machine_scheduled(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    let m = wait_machine(&ctx, env, &name, "bound to a pool", |m| {
        m.spec.machine_pool_ref.is_some()
    })
    .await?;
    let bound = m.spec.machine_pool_ref.map(|r| r.name).unwrap_or_default();
    ensure!(
        bound == side.pool,
        "Machine {name} was bound to pool {bound:?}, want {:?}",
        side.pool
    );
    pass()
}

async fn machine_created_with_labels(ctx: Ctx) -> anyhow::Result<Outcome> {
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

async fn machine_generation_annotations(ctx: Ctx) -> anyhow::Result<Outcome> {
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

async fn machine_running_propagated(ctx: Ctx) -> anyhow::Result<Outcome> {
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

async fn machine_power_off_propagated(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    wait_machine(
        &ctx,
        env,
        &name,
        "Running at its generation",
        running_at_generation,
    )
    .await?;
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

async fn machine_power_on_propagated(ctx: Ctx) -> anyhow::Result<Outcome> {
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

async fn machine_delete_finalized(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    let m = wait_machine(
        &ctx,
        env,
        &name,
        "Running at its generation",
        running_at_generation,
    )
    .await?;
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

async fn pool_unreachable_not_ready(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    wait_pool_ready(&ctx, env, "Ready while the runtime is reachable").await?;
    let _restore = Restore(&side.gate);
    side.gate.cut();
    let pool = wait_object(
        &ctx,
        env,
        "",
        &side.pool,
        &format!(
            "MachinePool {} Ready=False after the runtime was cut off",
            side.pool
        ),
        |p: &MachinePool| match condition_status(&p.status.conditions, "Ready") {
            Some("False") => Ok(()),
            other => Err(format!("Ready is {other:?}")),
        },
    )
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

async fn scheduler_avoids_unready_pool(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    wait_pool_ready(&ctx, env, "Ready and offering the class").await?;
    let _restore = Restore(&side.gate);
    side.gate.cut();
    wait_object(
        &ctx,
        env,
        "",
        &side.pool,
        &format!(
            "MachinePool {} Ready=False after the runtime was cut off",
            side.pool
        ),
        |p: &MachinePool| match condition_status(&p.status.conditions, "Ready") {
            Some("True") => Err("Ready is still True".to_owned()),
            _ => Ok(()),
        },
    )
    .await?;
    let name = machine_name(&ctx, "");
    apply_machine(&ctx, env, &name, Power::On).await?;
    let namespace = env.namespace().to_owned();
    ctx.wait_until(&format!("an OutOfCapacity event for Machine {name}"), || async {
        plane_ok(env)?;
        let m: Machine = env.store().get_typed(&namespace, &name).await?;
        if let Some(pool) = &m.spec.machine_pool_ref {
            bail!("Machine {name} was bound to the unready pool {:?}", pool.name);
        }
        let events = env
            .store()
            .list(
                Kind::Event,
                &ListOptions::all()
                    .in_namespace(&namespace)
                    .field("involvedObject.name", &name)
                    .field("reason", "OutOfCapacity"),
            )
            .await?;
        let found = events.items.iter().any(|e| matches!(e, Object::Event(Event { involved_object, .. }) if involved_object.uid == m.metadata.uid));
        Ok(if found { Ok(()) } else { Err("no OutOfCapacity event yet".to_owned()) })
    })
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
    let bound = m.spec.machine_pool_ref.map(|r| r.name).unwrap_or_default();
    ensure!(
        bound == side.pool,
        "Machine {name} was bound to {bound:?}, want {:?}",
        side.pool
    );
    pass()
}

// -------------------------------------------------------------------------- volume cases

fn volume_side(env: &Env) -> anyhow::Result<&VolumeSide> {
    env.volume()
        .map_err(|reason| anyhow::anyhow!("the lifecycle volume side did not start: {reason}"))
}

/// The machine side for a volume case that also needs a machine runtime (a skip without one).
fn machine_side_for_volumes(env: &Env) -> anyhow::Result<&MachineSide> {
    match env.machine() {
        Ok(side) => Ok(side),
        Err(reason) if reason.starts_with("no machine runtime endpoint") => {
            Err(Skip("needs a machine runtime endpoint too".to_owned()).into())
        }
        Err(reason) => bail!("the lifecycle machine side did not start: {reason}"),
    }
}

fn describe_volume(v: &Volume) -> String {
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

fn storage(bytes: i64) -> Quantity {
    Quantity::from_int(bytes, Format::BinarySI)
}

/// Applies a Volume of the run's volume class, `--size` bytes, selecting the run's pool.
async fn apply_volume(ctx: &Ctx, env: &Env, name: &str) -> anyhow::Result<Volume> {
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

async fn wait_volume(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&Volume) -> bool,
) -> anyhow::Result<Volume> {
    wait_object(
        ctx,
        env,
        env.namespace(),
        name,
        &format!("Volume {name} {what}"),
        |v: &Volume| {
            if pred(v) {
                Ok(())
            } else {
                Err(describe_volume(v))
            }
        },
    )
    .await
}

fn available(v: &Volume) -> bool {
    v.status.state == "Available" && v.status.access.is_some() && !v.status.volume_id.is_empty()
}

/// The runtime volumes labelled with the volumepoollet uid label `uid`.
async fn runtime_volumes(ctx: &Ctx, uid: &str) -> anyhow::Result<Vec<volume::Volume>> {
    let key = keys::VOLUMEPOOLLET_VOLUME_UID_LABEL;
    let listed = crate::ctx::expect_ok(
        ctx.list_volumes(Some(volume::VolumeFilter {
            id: String::new(),
            label_selector: [(key.to_owned(), uid.to_owned())].into(),
        }))
        .await,
        "ListVolumes by label",
    )?;
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
async fn set_storage(env: &Env, name: &str, bytes: i64) -> anyhow::Result<Volume> {
    update_spec(env, name, |v: &mut Volume| {
        v.spec
            .resources
            .insert("storage".to_owned(), storage(bytes));
    })
    .await
}

fn status_storage(v: &Volume) -> Option<i128> {
    v.status.resources.get("storage").map(Quantity::value)
}

/// A Volume of this case that is Available.
async fn available_volume(ctx: &Ctx, env: &Env, name: &str) -> anyhow::Result<Volume> {
    apply_volume(ctx, env, name).await?;
    wait_volume(
        ctx,
        env,
        name,
        "Available with access and a volumeID",
        available,
    )
    .await
}

async fn volume_pool_announced(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let side = volume_side(env)?;
    wait_object(
        &ctx,
        env,
        "",
        &side.pool,
        &format!("VolumePool {} announced", side.pool),
        |p: &VolumePool| {
            announced(
                &p.status.available_volume_classes,
                &p.status.capacity,
                "volume",
                side.classes
                    .iter()
                    .map(|(name, _, quantity)| (name.as_str(), *quantity)),
            )
        },
    )
    .await?;
    pass()
}

async fn volume_available(ctx: Ctx) -> anyhow::Result<Outcome> {
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

async fn volume_expanded(ctx: Ctx) -> anyhow::Result<Outcome> {
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
    wait_volume(
        &ctx,
        env,
        &name,
        &format!("status.resources.storage {size}"),
        |v| status_storage(v) == Some(i128::from(size)),
    )
    .await?;
    pass()
}

/// Applies a Machine that mounts Volume `volume` as `data` on device `odb`, and waits until
/// the Machine reports it Attached.
async fn machine_with_volume(
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

fn iri_volume<'a>(iri: &'a machine::Machine, name: &str) -> Option<&'a machine::Volume> {
    iri.spec.as_ref()?.volumes.iter().find(|v| v.name == name)
}

async fn volume_attached(ctx: Ctx) -> anyhow::Result<Outcome> {
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

async fn volume_attached_resized(ctx: Ctx) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    let name = machine_name(&ctx, "");
    let v = available_volume(&ctx, env, &name).await?;
    let (m, _) = machine_with_volume(&ctx, env, &v).await?;
    let size = ctx.params().expand_size;
    set_storage(env, &name, size).await?;
    wait_volume(
        &ctx,
        env,
        &name,
        &format!("status.resources.storage {size}"),
        |v| status_storage(v) == Some(i128::from(size)),
    )
    .await?;
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

async fn volume_delete_finalized(ctx: Ctx) -> anyhow::Result<Outcome> {
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
