//! What the lifecycle cases share: the environment's sides, names and metadata of the case's
//! objects, waiting on the store and on the runtime, and the gate's restore guard.

use std::collections::HashMap;

use anyhow::{Context as _, bail, ensure};
use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::{
    Kind, ListOptions, Object, Resource, StoreExt,
    compute::{Machine, MachinePool, Power},
    core::Event,
    meta::{LocalObjectReference, ObjectMeta, condition_status},
    quantity::Quantity,
};

use crate::{
    ctx::Ctx,
    lifecycle::env::{Env, MachineSide, dns_part},
};

pub(in crate::lifecycle) fn machine_side(env: &Env) -> anyhow::Result<&MachineSide> {
    env.machine()
        .map_err(|reason| anyhow::anyhow!("the lifecycle machine side did not start: {reason}"))
}

/// Fails with the control plane's failures, if a component stopped.
pub(in crate::lifecycle) fn plane_ok(env: &Env) -> anyhow::Result<()> {
    let failures = env.plane().failures();
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// Waits until Machine `name`, which must stay unbound (`unbound` ends the failure: why it
/// should), has an OutOfCapacity event that `pick` accepts; returns that event. `what` names
/// the event in the timeout.
pub(in crate::lifecycle) async fn wait_out_of_capacity(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    (what, unbound): (&str, &str),
    pick: impl Fn(&Event) -> bool,
) -> anyhow::Result<Event> {
    let namespace = env.namespace().to_owned();
    ctx.wait_until(&format!("{what} for Machine {name}"), || async {
        plane_ok(env)?;
        let m: Machine = env.store().get_typed(&namespace, name).await?;
        if let Some(pool) = &m.spec.machine_pool_ref {
            bail!("Machine {name} was bound to {:?} {unbound}", pool.name);
        }
        let options = ListOptions::all()
            .in_namespace(&namespace)
            .field("involvedObject.name", name)
            .field("reason", "OutOfCapacity");
        let events = env.store().list(Kind::Event, &options).await?;
        let found = events.items.into_iter().find_map(|e| match e {
            Object::Event(e) if e.involved_object.uid == m.metadata.uid && pick(&e) => Some(e),
            _ => None,
        });
        Ok(found.ok_or_else(|| format!("no {what} yet")))
    })
    .await
}

/// The Machine name of this case (`suffix` distinguishes several in one case).
pub(in crate::lifecycle) fn machine_name(ctx: &Ctx, suffix: &str) -> String {
    let base = dns_part(ctx.case_id().trim_start_matches("lifecycle."));
    if suffix.is_empty() {
        base
    } else {
        format!("{base}-{suffix}")
    }
}

/// Applies a Machine of the run's class that selects the run's pool.
pub(in crate::lifecycle) async fn apply_machine(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    power: Power,
) -> anyhow::Result<Machine> {
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

pub(in crate::lifecycle) fn describe(m: &Machine) -> String {
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

/// Polls the store until the `R` `namespace/name` satisfies `check` (`Ok(())`, else the reason
/// why not); `what` ends the timeout message (`Machine <name> <what>`).
pub(in crate::lifecycle) async fn wait_object<R: Resource>(
    ctx: &Ctx,
    env: &Env,
    (namespace, name): (&str, &str),
    what: &str,
    check: impl Fn(&R) -> Result<(), String>,
) -> anyhow::Result<R> {
    let what = format!("{} {name} {what}", R::KIND);
    ctx.wait_until(&what, || async {
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

/// Polls the store until the pool `pool` (a cluster-scoped `P`) passes `check`; `what` ends the
/// timeout message.
pub(in crate::lifecycle) async fn wait_pool<P: Resource>(
    ctx: &Ctx,
    env: &Env,
    pool: &str,
    what: &str,
    check: impl Fn(&P) -> Result<(), String>,
) -> anyhow::Result<P> {
    wait_object(ctx, env, ("", pool), what, check).await
}

/// Polls the store until the `R` named `name` in the case's namespace satisfies `pred`; `what`
/// ends the timeout message, `describe` says what was seen.
pub(in crate::lifecycle) async fn wait_named<R: Resource>(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    what: &str,
    (pred, describe): (impl Fn(&R) -> bool, fn(&R) -> String),
) -> anyhow::Result<R> {
    let check = |obj: &R| {
        if pred(obj) {
            Ok(())
        } else {
            Err(describe(obj))
        }
    };
    wait_object(ctx, env, (env.namespace(), name), what, check).await
}

pub(in crate::lifecycle) async fn wait_machine(
    ctx: &Ctx,
    env: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&Machine) -> bool,
) -> anyhow::Result<Machine> {
    wait_named(ctx, env, name, what, (pred, describe)).await
}

pub(in crate::lifecycle) fn running_at_generation(m: &Machine) -> bool {
    m.status.state == "Running" && m.status.observed_generation == m.metadata.generation
}

pub(in crate::lifecycle) fn off_at_generation(m: &Machine) -> bool {
    matches!(m.status.state.as_str(), "Terminated" | "Shutdown")
        && m.status.observed_generation == m.metadata.generation
}

/// The runtime machines labelled with `uid` (ListMachines by the machine-uid label).
pub(in crate::lifecycle) async fn runtime_machines(
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
pub(in crate::lifecycle) async fn wait_runtime_machine(
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

pub(in crate::lifecycle) fn iri_id(m: &machine::Machine) -> String {
    m.metadata
        .as_ref()
        .map(|md| md.id.clone())
        .unwrap_or_default()
}

pub(in crate::lifecycle) fn iri_power(m: &machine::Machine) -> i32 {
    m.spec.as_ref().map_or(-1, |s| s.power)
}

/// Sets `spec.power` of Machine `name`.
pub(in crate::lifecycle) async fn set_power(
    env: &Env,
    name: &str,
    power: Power,
) -> anyhow::Result<Machine> {
    update_spec(env, name, |m: &mut Machine| m.spec.power = power).await
}

/// Waits until the run's pool is Ready=True and offers `class`.
pub(in crate::lifecycle) async fn wait_pool_ready(
    ctx: &Ctx,
    env: &Env,
    what: &str,
) -> anyhow::Result<MachinePool> {
    let side = machine_side(env)?;
    let key = format!("class/machine.{}", side.class);
    wait_pool(ctx, env, &side.pool, what, |p: &MachinePool| {
        let ready = condition_status(&p.status.conditions, "Ready");
        let allocatable = p.status.allocatable.get(&key).map(|q| q.value());
        if ready == Some("True") && allocatable.is_some_and(|a| a > 0) {
            Ok(())
        } else {
            Err(format!(
                "Ready {ready:?}, allocatable[{key}] {allocatable:?}"
            ))
        }
    })
    .await
}

/// Deletes `name` of kind `R` through the store and waits until it is gone, checking that the
/// finalizer held it and was dropped only once `runtime` (the runtime object's description
/// while it is still listed) returns `None`.
pub(in crate::lifecycle) async fn deleted_through_finalizer<R, F, Fut>(
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
pub(in crate::lifecycle) async fn update_spec<R: Resource>(
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
pub(in crate::lifecycle) fn case_meta(ctx: &Ctx, env: &Env, name: &str) -> ObjectMeta {
    let mut meta = ObjectMeta::namespaced(env.namespace(), name);
    meta.labels
        .insert(crate::ctx::RUN_ID_LABEL.to_owned(), ctx.run_id().to_owned());
    meta
}

/// Whether a pool announces every runtime class `(name, quantity)` of `what` (`machine`,
/// `volume`) with capacity `class/<what>.<name>` = the quantity; else why not.
pub(in crate::lifecycle) fn announced<'a>(
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
pub(in crate::lifecycle) fn identity_labels(
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
pub(in crate::lifecycle) struct Restore<'a>(pub(super) &'a crate::lifecycle::gate::Gate);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.restore();
    }
}
