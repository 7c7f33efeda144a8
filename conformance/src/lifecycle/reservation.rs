//! The reservation path end to end (IronCore IEP-11, irikit issue 15): the plane's machine
//! scheduler runs in reservation mode for these cases (they run alone and switch it back
//! afterwards), the machinepoollet passes the Reservation to the runtime under test, and the
//! cases check what comes back. They skip when the runtime answers `Unimplemented` for
//! irikit's `ReservationRuntime` (no reservations).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use iri_spec::irikit::reservation::v1alpha1 as rsv;
use irikit_api::{
    Kind, Resource, StoreExt,
    compute::{EmptyDisk, Machine, MachinePool, Power, Volume},
    core::Event,
    meta::LocalObjectReference,
    reservation::{
        RESERVATION_ID_ANNOTATION, RESERVATION_NAME_ANNOTATION, RESERVATION_SUPPORTED_ANNOTATION,
        Reservation, ReservationState,
    },
    store,
};

use crate::{
    case::{Case, Outcome, Profile, Service, Skip, pass},
    ctx::Ctx,
    lifecycle::{
        cases::common::{
            case_meta, describe, machine_name, machine_side, plane_ok, running_at_generation,
            wait_machine, wait_out_of_capacity, wait_pool, wait_runtime_machine,
        },
        env::{Env, MachineSide},
    },
};

type Body = fn(Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>>;

/// More than any host's local storage (4 EiB): every pool that serves reservations rejects it.
const HUGE_LOCAL_DISK: &str = "4Ei";

/// Label joining the pools the fallback case's Machine selects.
const CASE_POOL_LABEL: &str = "lifecycle.irikit.dev/reservation-case";

/// The lifecycle reservation cases.
pub(super) fn cases() -> Vec<Case> {
    let m = |id: &str, rule: &str, f: Body| {
        Case::new(id, Service::Machine, Profile::Core, rule, f)
            .lifecycle()
            .exclusive()
    };
    vec![
        m(
            "lifecycle.reservation.bound_where_reserved",
            "reservation mode: an unbound Machine gets a Reservation, the pool turns it Accepted, the Machine is bound there, created on the runtime against the runtime reservation (reservation.irikit.dev/id), the pool reports Bound, the Reservation is deleted and the runtime's hold released",
            |ctx| Box::pin(in_reservation_mode(ctx, bound_where_reserved)),
        ),
        m(
            "lifecycle.reservation.all_rejected_unbound",
            "reservation mode: when every pool rejects the Machine's Reservation (4 EiB of local disk) the Machine stays unbound with an OutOfCapacity event, and deleting it deletes its Reservation",
            |ctx| Box::pin(in_reservation_mode(ctx, all_rejected_unbound)),
        ),
        m(
            "lifecycle.reservation.fallback_best_effort",
            "reservation mode: a pool whose runtime has no reservations is announced reservation.irikit.dev/supported=false and, when the pools with reservations reject, takes the Machine best-effort (no reservation annotation) and runs it",
            |ctx| Box::pin(in_reservation_mode(ctx, fallback_best_effort)),
        ),
    ]
}

fn reservation_config(ctx: &Ctx) -> scheduler::ReservationConfig {
    // The fallback waits this long at most; well inside the case's state timeout.
    let timeout =
        (ctx.params().state_timeout / 4).clamp(Duration::from_millis(500), Duration::from_secs(3));
    scheduler::ReservationConfig {
        timeout,
        retry: Duration::from_millis(500),
        max_retry: Duration::from_secs(2),
        ..scheduler::ReservationConfig::default()
    }
}

/// Skips unless the runtime serves reservations; switches the plane's machine scheduler to
/// reservation mode for `body` and back to the plane's own mode afterwards.
async fn in_reservation_mode(
    ctx: Ctx,
    body: fn(Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>>,
) -> anyhow::Result<Outcome> {
    let env = ctx.lifecycle()?;
    machine_side(env)?;
    ctx.reservation_client().await?; // skips without reservations
    let plane = env.plane();
    plane
        .set_machine_scheduler(Some(reservation_config(&ctx)))
        .await;
    let res = body(ctx.clone()).await;
    let env = ctx.lifecycle()?;
    env.plane()
        .set_machine_scheduler(env.plane().config().reservations.clone())
        .await;
    res
}

/// A runtime class that has room for one more machine now (found with a probe reservation,
/// deleted at once): the RPC level's machines may still use up the suite's class. Classes
/// other than the suite's are tried first.
async fn free_class(ctx: &Ctx, env: &Env) -> anyhow::Result<String> {
    let side = machine_side(env)?;
    let Some(mut c) = ctx.clients.reservation.clone() else {
        return Err(Skip("no machine runtime endpoint".to_owned()).into());
    };
    let mut classes: Vec<&str> = side.classes.iter().map(|c| c.name.as_str()).collect();
    classes.sort_by_key(|c| *c == side.class);
    for class in classes {
        let probe = rsv::Reservation {
            metadata: Some(ctx.metadata(&[])),
            spec: Some(rsv::ReservationSpec {
                machine_classes: [(class.to_owned(), 1)].into(),
                ..Default::default()
            }),
            status: None,
        };
        let created = ctx
            .rpc(async { c.create(probe).await.map(tonic::Response::new) })
            .await
            .context("CreateReservation (probe)")?
            .served();
        let Some(r) = created else {
            return Err(Skip("the runtime has no reservations".to_owned()).into());
        };
        let id = r
            .metadata
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        let state = r.status.as_ref().map_or(0, |s| s.state);
        let _ = ctx
            .rpc(async { c.delete(&id).await.map(tonic::Response::new) })
            .await;
        if state == rsv::ReservationState::ReservationAccepted as i32 {
            return Ok(class.to_owned());
        }
    }
    // What takes the room, for the reason: a runtime that loses the poollet's labels makes it
    // create machines again and again.
    let machines = ctx.list_machines(None).await.map_or_else(
        |st| format!("ListMachines failed: {}", st.message()),
        |l| l.len().to_string(),
    );
    let held = ctx
        .rpc(async { c.list(None).await.map(tonic::Response::new) })
        .await
        .map_or_else(
            |st| format!("ListReservations failed: {}", st.message()),
            |l| {
                l.iter()
                    .filter(|r| {
                        r.status.as_ref().map(|s| s.state)
                            == Some(rsv::ReservationState::ReservationAccepted as i32)
                    })
                    .count()
                    .to_string()
            },
        );
    Err(Skip(format!(
        "no machine class has room for one more machine (the runtime lists {machines} machines and {held} accepted reservations)"
    ))
    .into())
}

/// Waits until the MachinePool `pool` carries `supported=<want>`.
/// The lifecycle environment and its machine side, once the pool is annotated as supporting
/// reservations.
async fn supported_side(ctx: &Ctx) -> anyhow::Result<(&Env, &MachineSide)> {
    let env = ctx.lifecycle()?;
    let side = machine_side(env)?;
    wait_supported(ctx, env, &side.pool, true).await?;
    Ok((env, side))
}

async fn wait_supported(ctx: &Ctx, env: &Env, pool: &str, want: bool) -> anyhow::Result<()> {
    let want = want.to_string();
    wait_pool(
        ctx,
        env,
        pool,
        &format!("annotated {RESERVATION_SUPPORTED_ANNOTATION}={want}"),
        |p: &MachinePool| match p.metadata.annotations.get(RESERVATION_SUPPORTED_ANNOTATION) {
            Some(v) if *v == want => Ok(()),
            other => Err(format!("annotation {other:?}")),
        },
    )
    .await
    .map(|_| ())
}

/// What a store watch saw of one Reservation: the states one pool reported, in order, and
/// whether its deletion has been delivered.
#[derive(Debug, Default)]
struct Seen {
    states: Vec<ReservationState>,
    deleted: bool,
}

/// Records what `pool` reported for Reservation `namespace/name`, from a store watch.
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(env: &Env, namespace: &str, name: &str, pool: &str) -> Recorder {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let store = env.store().clone();
        let (namespace, name, pool) = (namespace.to_owned(), name.to_owned(), pool.to_owned());
        let out = seen.clone();
        // The revision is read before the case writes anything: every later state is recorded.
        let rev = store.revision().await.unwrap_or(0);
        let task = tokio::spawn(async move {
            let Ok(mut stream) = store.watch(Some(Kind::Reservation), rev).await else {
                return;
            };
            while let Some(Ok(ev)) = stream.next().await {
                let deleted = ev.type_ == store::EventType::Deleted;
                let Some(r) = Reservation::from_object(ev.object) else {
                    continue;
                };
                if r.metadata.namespace != namespace || r.metadata.name != name {
                    continue;
                }
                let mut seen = out.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(state) = r.pool_state(&pool)
                    && seen.states.last() != Some(&state)
                {
                    seen.states.push(state);
                }
                seen.deleted |= deleted;
            }
        });
        Recorder { seen, task }
    }

    fn states(&self) -> Vec<ReservationState> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .states
            .clone()
    }

    /// The states, once the watch has delivered the deletion: a store read can see the
    /// Reservation gone before the watch has delivered the pool's last report.
    async fn states_through_deletion(&self, ctx: &Ctx) -> anyhow::Result<Vec<ReservationState>> {
        ctx.wait_until(
            "the store watch to deliver the Reservation's deletion",
            || async {
                Ok(
                    if self
                        .seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .deleted
                    {
                        Ok(())
                    } else {
                        Err(format!("states so far {:?}", self.states()))
                    },
                )
            },
        )
        .await?;
        Ok(self.states())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reservation_gone(ctx: &Ctx, env: &Env, name: &str, why: &str) -> anyhow::Result<()> {
    let namespace = env.namespace().to_owned();
    ctx.wait_until(
        &format!("Reservation {namespace}/{name} deleted {why}"),
        || async {
            plane_ok(env)?;
            match env.store().get_typed::<Reservation>(&namespace, name).await {
                Err(store::Error::NotFound { .. }) => Ok(Ok(())),
                Ok(r) => Ok(Err(format!("still there, status {:?}", r.status.pools))),
                Err(err) => Err(anyhow::Error::new(err)),
            }
        },
    )
    .await
}

fn bound_where_reserved(ctx: Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let (env, side) = supported_side(&ctx).await?;
        let name = machine_name(&ctx, "");
        let class = free_class(&ctx, env).await?;
        let recorder = Recorder::start(env, env.namespace(), &name, &side.pool).await;
        let mut m = Machine {
            metadata: case_meta(&ctx, env, &name),
            ..Machine::default()
        };
        m.spec.machine_class_ref = LocalObjectReference::new(&class);
        m.spec.machine_pool_selector.insert(
            iri_spec::keys::TOPOLOGY_ZONE_LABEL.to_owned(),
            side.pool.clone(),
        );
        m.spec.power = Power::On;
        let applied = env.store().create_typed(m).await?;
        let res = async {
            let m = wait_machine(&ctx, env, &name, "bound with its Reservation", |m| {
                m.spec.machine_pool_ref.is_some()
            })
            .await?;
            let pool = m.spec.machine_pool_ref.as_ref().map(|r| r.name.clone());
            ensure!(
                pool.as_deref() == Some(side.pool.as_str()),
                "Machine {name} bound to {pool:?}, want {:?}",
                side.pool
            );
            ensure!(
                m.metadata.annotations.get(RESERVATION_NAME_ANNOTATION) == Some(&name),
                "a reservation bind carries {RESERVATION_NAME_ANNOTATION}={name}: {:?}",
                m.metadata.annotations
            );
            let iri =
                wait_runtime_machine(&ctx, &applied, "created against a reservation", |iri| {
                    iri.metadata
                        .as_ref()
                        .and_then(|md| md.annotations.get(RESERVATION_ID_ANNOTATION))
                        .is_some_and(|id| !id.is_empty())
                })
                .await?;
            let id = iri
                .metadata
                .as_ref()
                .and_then(|md| md.annotations.get(RESERVATION_ID_ANNOTATION).cloned())
                .unwrap_or_default();
            reservation_gone(&ctx, env, &name, "once the pool reported it Bound").await?;
            let states = recorder.states_through_deletion(&ctx).await?;
            ensure!(
                states.contains(&ReservationState::Accepted)
                    && states.last() == Some(&ReservationState::Bound),
                "pool {} reported {states:?}, want Accepted … Bound",
                side.pool
            );
            let Some(c) = ctx.clients.reservation.clone() else {
                anyhow::bail!("no reservation client");
            };
            ctx.wait_until(&format!("the runtime reservation {id} released"), || {
                let mut c = c.clone();
                let id = id.clone();
                async move {
                    let listed = c
                        .list(Some(rsv::ReservationFilter {
                            id: id.clone(),
                            ..Default::default()
                        }))
                        .await
                        .map_err(|s| anyhow::anyhow!("ListReservations: {s}"))?;
                    Ok(
                        if listed
                            .iter()
                            .any(|r| r.metadata.as_ref().is_some_and(|m| m.id == id))
                        {
                            Err("still listed".to_owned())
                        } else {
                            Ok(())
                        },
                    )
                }
            })
            .await?;
            wait_machine(&ctx, env, &name, "Running", running_at_generation).await?;
            pass()
        }
        .await;
        drop(recorder);
        res
    })
}

fn huge_machine(ctx: &Ctx, env: &Env, name: &str) -> anyhow::Result<Machine> {
    let side = machine_side(env)?;
    let mut m = Machine {
        metadata: case_meta(ctx, env, name),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new(&side.class);
    m.spec.volumes.push(Volume {
        name: "scratch".into(),
        empty_disk: Some(EmptyDisk {
            size_limit: Some(HUGE_LOCAL_DISK.parse().context("quantity")?),
        }),
        ..Volume::default()
    });
    Ok(m)
}

async fn out_of_capacity(ctx: &Ctx, env: &Env, name: &str) -> anyhow::Result<Event> {
    wait_out_of_capacity(
        ctx,
        env,
        name,
        (
            "an OutOfCapacity event naming the rejected Reservation",
            "though every pool should reject its Reservation",
        ),
        |e| e.message.contains("no pool accepted Reservation"),
    )
    .await
}

fn all_rejected_unbound(ctx: Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let (env, side) = supported_side(&ctx).await?;
        let name = machine_name(&ctx, "");
        let mut m = huge_machine(&ctx, env, &name)?;
        m.spec.machine_pool_selector.insert(
            iri_spec::keys::TOPOLOGY_ZONE_LABEL.to_owned(),
            side.pool.clone(),
        );
        let recorder = Recorder::start(env, env.namespace(), &name, &side.pool).await;
        env.store().create_typed(m).await?;
        let res = async {
            let event = out_of_capacity(&ctx, env, &name).await?;
            ensure!(
                event.message.contains(&format!("{}=Rejected", side.pool)),
                "the event names the pool's answer: {}",
                event.message
            );
            // Still unbound a moment later (the retry re-creates the Reservation, which the
            // pool rejects again).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let m: Machine = env.store().get_typed(env.namespace(), &name).await?;
            ensure!(
                m.spec.machine_pool_ref.is_none(),
                "Machine {name} was bound: {}",
                describe(&m)
            );
            let states = recorder.states();
            ensure!(
                !states.contains(&ReservationState::Accepted),
                "pool {} accepted 4 EiB of local disk: {states:?}",
                side.pool
            );
            env.store()
                .delete(Kind::Machine, env.namespace(), &name, None)
                .await?;
            reservation_gone(&ctx, env, &name, "with its Machine").await?;
            pass()
        }
        .await;
        drop(recorder);
        res
    })
}

/// Adds `CASE_POOL_LABEL=<value>` to MachinePool `pool` (conflicts retried).
async fn label_pool(env: &Env, pool: &str, value: Option<&str>) -> anyhow::Result<()> {
    for _ in 0..20 {
        let mut p: MachinePool = env.store().get_typed("", pool).await?;
        match value {
            Some(v) => p
                .metadata
                .labels
                .insert(CASE_POOL_LABEL.to_owned(), v.to_owned()),
            None => p.metadata.labels.remove(CASE_POOL_LABEL),
        };
        match env.store().update(p.into_object()).await {
            Ok(_) => return Ok(()),
            Err(store::Error::Conflict { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    anyhow::bail!("MachinePool {pool}: 20 conflicts while labelling it")
}

fn fallback_best_effort(ctx: Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let (env, side) = supported_side(&ctx).await?;
        // A second pool on a runtime without reservations, with the classes of the runtime
        // under test (same names and capabilities, so the MachineClasses map).
        let classes = side.classes.iter().map(|c| {
            let mut extra = c.resources.clone();
            let cpu = extra.remove("cpu").unwrap_or(0);
            let memory = extra.remove("memory").unwrap_or(0);
            let mut class = iri_mock::classes::MachineClassConfig::new(&c.name, cpu, memory)
                .quantity(c.quantity.max(1));
            class.extra = extra;
            class
        });
        let plain = iri_mock::MockRuntime::builder()
            .runtime_name("iri-mock-without-reservations")
            .machine_classes(classes)
            .reservations(false)
            .start_in_process()
            .await
            .context("starting the runtime without reservations")?;
        let pool = format!("{}-plain", env.namespace());
        let token = env.plane().add_machine_poollet(
            &pool,
            &format!("iri-conformance://{}-plain", env.namespace()),
            plain.machine_channel(),
        );
        let name = machine_name(&ctx, "");
        let res = async {
            wait_supported(&ctx, env, &pool, false).await?;
            let ns = env.namespace().to_owned();
            label_pool(env, &side.pool, Some(&ns)).await?;
            label_pool(env, &pool, Some(&ns)).await?;
            let mut m = huge_machine(&ctx, env, &name)?;
            m.spec
                .machine_pool_selector
                .insert(CASE_POOL_LABEL.to_owned(), ns);
            env.store().create_typed(m).await?;
            let m = wait_machine(&ctx, env, &name, "bound and Running", |m| {
                m.spec.machine_pool_ref.is_some() && running_at_generation(m)
            })
            .await?;
            let bound = m.spec.machine_pool_ref.as_ref().map(|r| r.name.clone());
            ensure!(
                bound.as_deref() == Some(pool.as_str()),
                "Machine {name} bound to {bound:?}: want the pool without reservations {pool:?} (the runtime under test must reject 4 EiB of local disk)"
            );
            ensure!(
                !m.metadata.annotations.contains_key(RESERVATION_NAME_ANNOTATION),
                "a best-effort bind names no reservation: {:?}",
                m.metadata.annotations
            );
            reservation_gone(&ctx, env, &name, "after the best-effort bind").await?;
            ensure!(
                plain.machine_count() == 1,
                "the runtime without reservations runs {} machines, want 1",
                plain.machine_count()
            );
            pass()
        }
        .await;
        // Clean up: the Machine (finalized by the plain pool's poollet), that poollet, its pool.
        let _ = env
            .store()
            .delete(Kind::Machine, env.namespace(), &name, None)
            .await;
        let ns = env.namespace().to_owned();
        let _ = ctx
            .wait_until(&format!("Machine {ns}/{name} gone"), || async {
                Ok(match env.store().get(Kind::Machine, &ns, &name).await {
                    Err(store::Error::NotFound { .. }) => Ok(()),
                    _ => Err("still there".to_owned()),
                })
            })
            .await;
        token.cancel();
        // The stopping poollet may write its pool once more: delete until it stays gone.
        for _ in 0..10 {
            let _ = env.store().delete(Kind::MachinePool, "", &pool, None).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if matches!(
                env.store().get(Kind::MachinePool, "", &pool).await,
                Err(store::Error::NotFound { .. })
            ) {
                break;
            }
        }
        let _ = env
            .store()
            .delete(
                Kind::Lease,
                irikit_api::coordination::MACHINE_POOL_LEASE_NAMESPACE,
                &pool,
                None,
            )
            .await;
        let _ = label_pool(env, &side.pool, None).await;
        res
    })
}
