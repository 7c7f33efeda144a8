//! Cases for irikit's IRI extension `irikit.reservation.v1alpha1.ReservationRuntime`
//! (reservation-based scheduling, IronCore IEP-11), served on the machine runtime's socket.
//! Every case skips, with the reason, when the runtime answers `Unimplemented` (it has no
//! reservations, which is allowed). The cases run alone (exclusive): they fill the machine
//! class's free capacity, so concurrent creates of other cases would change the answers.

use anyhow::{Context as _, bail, ensure};
use iri_spec::{
    irikit::reservation::v1alpha1::{self as rsv, ReservationState},
    keys::RESERVATION_ID_ANNOTATION,
    machine::v1alpha1 as machine,
    reservation::{Reply, ReservationClient},
};

use crate::{
    case::{Case, Profile, Service, Skip, pass},
    ctx::{Ctx, expect_ok},
};

const ACCEPTED: i32 = ReservationState::ReservationAccepted as i32;
const REJECTED: i32 = ReservationState::ReservationRejected as i32;
const BOUND: i32 = ReservationState::ReservationBound as i32;

macro_rules! case {
    ($v:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(
            Case::new(
                $id,
                Service::Machine,
                Profile::Core,
                $desc,
                |$ctx: Ctx| async move { $body },
            )
            .exclusive(),
        );
    };
}

fn state_name(state: i32) -> String {
    ReservationState::try_from(state)
        .map_or(format!("state {state}"), |s| s.as_str_name().to_owned())
}

/// The class to reserve and its quantity from Status. The other cases create their machines
/// (and leave them until the run's cleanup) in the suite's machine class, which the runtime
/// may be out of by now; so the class is, when Status lists one, another class with positive
/// quantity (the largest), else the suite's class. A skip when none has a positive quantity.
async fn class(ctx: &Ctx) -> anyhow::Result<(String, i64)> {
    let suite_class = ctx.machine_class()?;
    let mut c = ctx.mc()?;
    let status = expect_ok(ctx.rpc(c.status(machine::StatusRequest {})).await, "Status")?;
    let mut classes: Vec<(bool, i64, String)> = status
        .machine_class_status
        .iter()
        .filter_map(|s| {
            let name = s.machine_class.as_ref()?.name.clone();
            (s.quantity > 0).then(|| (name != suite_class, s.quantity, name))
        })
        .collect();
    classes.sort();
    match classes.pop() {
        Some((_, q, name)) => Ok((name, q)),
        None => {
            Err(Skip("Status reports no machine class with a positive quantity".to_owned()).into())
        }
    }
}

/// A reservation of `n` machines of `class` (plus `local` local-disk bytes per machine), with
/// the run's labels.
fn reservation(ctx: &Ctx, class: &str, n: i64, local: i64) -> rsv::Reservation {
    rsv::Reservation {
        metadata: Some(ctx.metadata(&[])),
        spec: Some(rsv::ReservationSpec {
            machine_classes: [(class.to_owned(), n)].into(),
            local_storage_bytes_per_machine: local,
            ..Default::default()
        }),
        status: None,
    }
}

/// CreateReservation that must be served; returns (id, state).
async fn create(
    ctx: &Ctx,
    c: &mut ReservationClient,
    r: rsv::Reservation,
) -> anyhow::Result<(String, i32)> {
    let reply = ctx
        .rpc(async { c.create(r).await.map(tonic::Response::new) })
        .await;
    let r = match expect_ok(reply, "CreateReservation")? {
        Reply::Served(r) => r,
        Reply::Unsupported => bail!("CreateReservation answered Unimplemented after List did not"),
    };
    let id = r
        .metadata
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    ensure!(!id.is_empty(), "CreateReservation returned no metadata.id");
    let state = r.status.as_ref().map_or(-1, |s| s.state);
    Ok((id, state))
}

async fn delete(ctx: &Ctx, c: &mut ReservationClient, id: &str) -> anyhow::Result<()> {
    let res = ctx
        .rpc(async { c.delete(id).await.map(tonic::Response::new) })
        .await;
    expect_ok(res, "DeleteReservation").map(|_| ())
}

/// The listed state of reservation `id` (`None` when not listed).
async fn listed_state(
    ctx: &Ctx,
    c: &mut ReservationClient,
    id: &str,
) -> anyhow::Result<Option<i32>> {
    let filter = rsv::ReservationFilter {
        id: id.to_owned(),
        ..Default::default()
    };
    let list = expect_ok(
        ctx.rpc(async { c.list(Some(filter)).await.map(tonic::Response::new) })
            .await,
        "ListReservations",
    )?;
    Ok(list
        .iter()
        .find(|r| r.metadata.as_ref().is_some_and(|m| m.id == id))
        .map(|r| r.status.as_ref().map_or(-1, |s| s.state)))
}

/// Waits (best effort, within the state budget) until no listed machine is terminating, so
/// that no capacity frees up while a case compares two answers.
async fn settle(ctx: &Ctx) {
    let _ = ctx
        .wait_until("no terminating machine", || async {
            let machines = ctx.list_machines(None).await?;
            let terminating = machines
                .iter()
                .filter(|m| m.metadata.as_ref().is_some_and(|md| md.deleted_at != 0))
                .count();
            Ok(if terminating == 0 {
                Ok(())
            } else {
                Err(format!("{terminating} terminating"))
            })
        })
        .await;
}

/// The largest count of `class` (at most `q`) the runtime accepts now, found with accepted
/// probes that are deleted at once; 0 when not even one fits.
async fn largest_fit(
    ctx: &Ctx,
    c: &mut ReservationClient,
    class: &str,
    q: i64,
) -> anyhow::Result<i64> {
    let (mut lo, mut hi) = (0, q);
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        let (id, state) = create(ctx, c, reservation(ctx, class, mid, 0)).await?;
        delete(ctx, c, &id).await?;
        if state == ACCEPTED {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Fills the class's free capacity with one accepted reservation; returns (id, count).
async fn fill(
    ctx: &Ctx,
    c: &mut ReservationClient,
    class: &str,
    q: i64,
) -> anyhow::Result<(String, i64)> {
    settle(ctx).await;
    let n = largest_fit(ctx, c, class, q).await?;
    if n == 0 {
        return Err(Skip(format!("no free capacity of class {class:?} to reserve")).into());
    }
    let (id, state) = create(ctx, c, reservation(ctx, class, n, 0)).await?;
    ensure!(
        state == ACCEPTED,
        "a reservation of {n} {class:?} machines, which the runtime had just accepted, is now {}",
        state_name(state)
    );
    Ok((id, n))
}

/// All reservation cases.
pub(crate) fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let v = &mut out;

    // First: the release case fills a class by probes it deletes, so a runtime that keeps the
    // holds of deleted reservations is caught here before earlier cases' leaked holds leave
    // nothing free to fill (which would be a skip).
    case!(
        v,
        "reservation.delete.releases_hold",
        "DeleteReservation releases the hold: after deleting a reservation that filled the class, the same reservation is RESERVATION_ACCEPTED again",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, q) = class(&ctx).await?;
            let (held, n) = fill(&ctx, &mut c, &class, q).await?;
            delete(&ctx, &mut c, &held).await?;
            ensure!(
                listed_state(&ctx, &mut c, &held).await?.is_none(),
                "a deleted reservation is still listed"
            );
            let (again, state) = create(&ctx, &mut c, reservation(&ctx, &class, n, 0)).await?;
            delete(&ctx, &mut c, &again).await?;
            ensure!(
                state == ACCEPTED,
                "{n} {class:?} machines after the reservation holding them was deleted: want RESERVATION_ACCEPTED, got {}",
                state_name(state)
            );
            pass()
        }
    );

    case!(
        v,
        "reservation.create.accepted_within_capacity",
        "CreateReservation of one machine of a class with free capacity is RESERVATION_ACCEPTED, with a fresh id and the labels kept, and listed so",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, _) = class(&ctx).await?;
            let mut r = reservation(&ctx, &class, 1, 0);
            if let Some(md) = r.metadata.as_mut() {
                md.id = "client-chosen-id".to_owned();
            }
            let reply = ctx
                .rpc(async { c.create(r).await.map(tonic::Response::new) })
                .await;
            let created = expect_ok(reply, "CreateReservation")?
                .served()
                .context("CreateReservation answered Unimplemented")?;
            let md = created.metadata.clone().unwrap_or_default();
            let state = created.status.as_ref().map_or(-1, |s| s.state);
            if !md.id.is_empty() {
                delete(&ctx, &mut c, &md.id).await.ok();
            }
            ensure!(
                !md.id.is_empty() && md.id != "client-chosen-id",
                "the reservation id must be the runtime's own, got {:?}",
                md.id
            );
            ensure!(
                md.labels == ctx.labels(&[]),
                "labels not kept: {:?}",
                md.labels
            );
            ensure!(
                state == ACCEPTED,
                "one {class:?} machine within capacity: want RESERVATION_ACCEPTED, got {}",
                state_name(state)
            );
            pass()
        }
    );

    case!(
        v,
        "reservation.create.rejected_beyond_capacity",
        "CreateReservation beyond the class's quantity, or beyond any host's local storage, is RESERVATION_REJECTED (and listed so until deleted)",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, q) = class(&ctx).await?;
            let (over, state) = create(&ctx, &mut c, reservation(&ctx, &class, q + 1, 0)).await?;
            let listed = listed_state(&ctx, &mut c, &over).await?;
            delete(&ctx, &mut c, &over).await?;
            ensure!(
                state == REJECTED,
                "{} {class:?} machines with a quantity of {q}: want RESERVATION_REJECTED, got {}",
                q + 1,
                state_name(state)
            );
            ensure!(
                listed == Some(REJECTED),
                "the rejected reservation must be listed as RESERVATION_REJECTED, got {listed:?}"
            );
            // 2^62 bytes (4 EiB) of local disk for one machine fits no host.
            let (huge, state) = create(&ctx, &mut c, reservation(&ctx, &class, 1, 1 << 62)).await?;
            delete(&ctx, &mut c, &huge).await?;
            ensure!(
                state == REJECTED,
                "4 EiB of local storage per machine: want RESERVATION_REJECTED, got {}",
                state_name(state)
            );
            pass()
        }
    );

    case!(
        v,
        "reservation.hold.blocks_competing",
        "an accepted reservation holds its capacity: once it fills the class, a competing reservation of one more machine is RESERVATION_REJECTED",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, q) = class(&ctx).await?;
            let (held, n) = fill(&ctx, &mut c, &class, q).await?;
            let (other, state) = create(&ctx, &mut c, reservation(&ctx, &class, 1, 0)).await?;
            delete(&ctx, &mut c, &other).await?;
            delete(&ctx, &mut c, &held).await?;
            ensure!(
                state == REJECTED,
                "with {n} {class:?} machines held (all that fitted), one more: want RESERVATION_REJECTED, got {}",
                state_name(state)
            );
            pass()
        }
    );

    case!(
        v,
        "reservation.create_machine.consumes",
        "CreateMachine annotated reservation.irikit.dev/id=<id> consumes that accepted reservation: it turns RESERVATION_BOUND",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, _) = class(&ctx).await?;
            let (id, state) = create(&ctx, &mut c, reservation(&ctx, &class, 1, 0)).await?;
            if state != ACCEPTED {
                delete(&ctx, &mut c, &id).await.ok();
                bail!(
                    "one {class:?} machine: want RESERVATION_ACCEPTED, got {}",
                    state_name(state)
                );
            }
            let mut m = ctx.machine_spec(&[])?;
            if let Some(spec) = m.spec.as_mut() {
                spec.class.clone_from(&class);
            }
            if let Some(md) = m.metadata.as_mut() {
                md.annotations
                    .insert(RESERVATION_ID_ANNOTATION.to_owned(), id.clone());
            }
            let created = ctx.create_machine(m).await;
            let bound = match created {
                Ok(_) => {
                    ctx.wait_until(&format!("reservation {id} to be RESERVATION_BOUND"), || {
                        let mut c = c.clone();
                        let id = id.clone();
                        let ctx = ctx.clone();
                        async move {
                            let state = listed_state(&ctx, &mut c, &id).await?;
                            Ok(match state {
                                Some(BOUND) => Ok(()),
                                Some(s) => Err(state_name(s)),
                                None => Err("not listed".to_owned()),
                            })
                        }
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            delete(&ctx, &mut c, &id).await.ok();
            bound?;
            pass()
        }
    );

    case!(
        v,
        "reservation.create_machine.consumes_one_at_a_time",
        "a reservation of 2 machines is consumed one machine at a time: two CreateMachine calls naming it succeed, then it is RESERVATION_BOUND and a third is FailedPrecondition",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, _) = class(&ctx).await?;
            settle(&ctx).await;
            let (id, state) = create(&ctx, &mut c, reservation(&ctx, &class, 2, 0)).await?;
            if state != ACCEPTED {
                delete(&ctx, &mut c, &id).await.ok();
                return Err(Skip(format!(
                    "a reservation of 2 {class:?} machines is {} (fewer than 2 free)",
                    state_name(state)
                ))
                .into());
            }
            let against = || -> anyhow::Result<machine::Machine> {
                let mut m = ctx.machine_spec(&[])?;
                if let Some(spec) = m.spec.as_mut() {
                    spec.class.clone_from(&class);
                }
                if let Some(md) = m.metadata.as_mut() {
                    md.annotations
                        .insert(RESERVATION_ID_ANNOTATION.to_owned(), id.clone());
                }
                Ok(m)
            };
            let mut created = Vec::new();
            let outcome = async {
                for nth in ["first", "second"] {
                    let m = ctx.try_create_machine(against()?).await.map_err(|s| {
                        anyhow::anyhow!(
                            "the {nth} CreateMachine against a reservation of 2: want OK, got {:?}: {}",
                            s.code(),
                            s.message()
                        )
                    })?;
                    created.push(m.metadata.map(|md| md.id).unwrap_or_default());
                }
                ctx.wait_until(&format!("reservation {id} to be RESERVATION_BOUND"), || {
                    let mut c = c.clone();
                    let (id, ctx) = (id.clone(), ctx.clone());
                    async move {
                        Ok(match listed_state(&ctx, &mut c, &id).await? {
                            Some(BOUND) => Ok(()),
                            Some(s) => Err(state_name(s)),
                            None => Err("not listed".to_owned()),
                        })
                    }
                })
                .await?;
                match ctx.try_create_machine(against()?).await {
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
                    Err(s) => bail!(
                        "a third CreateMachine against a consumed reservation of 2: want FailedPrecondition, got {:?}: {}",
                        s.code(),
                        s.message()
                    ),
                    Ok(m) => {
                        created.push(m.metadata.map(|md| md.id).unwrap_or_default());
                        bail!("a third CreateMachine against a consumed reservation of 2 succeeded")
                    }
                }
            }
            .await;
            for m in created.iter().filter(|m| !m.is_empty()) {
                ctx.delete_machine(m).await.ok();
            }
            delete(&ctx, &mut c, &id).await.ok();
            outcome?;
            pass()
        }
    );

    case!(
        v,
        "reservation.create_machine.unreserved_not_from_hold",
        "a CreateMachine that names no reservation cannot take capacity held by reservations: with the class's free capacity held, it is ResourceExhausted",
        |ctx| {
            let mut c = ctx.reservation_client().await?;
            let (class, q) = class(&ctx).await?;
            let (held, n) = fill(&ctx, &mut c, &class, q).await?;
            let mut m = ctx.machine_spec(&[])?;
            if let Some(spec) = m.spec.as_mut() {
                spec.class.clone_from(&class);
            }
            let res = ctx.try_create_machine(m).await;
            if let Ok(m) = &res
                && let Some(md) = m.metadata.as_ref()
            {
                ctx.delete_machine(&md.id).await.ok();
            }
            delete(&ctx, &mut c, &held).await?;
            match res {
                Err(s) if s.code() == tonic::Code::ResourceExhausted => pass(),
                Err(s) => bail!(
                    "with {n} {class:?} machines held (all that fitted), an unreserved CreateMachine: want ResourceExhausted, got {:?}: {}",
                    s.code(),
                    s.message()
                ),
                Ok(_) => bail!(
                    "with {n} {class:?} machines held (all that fitted), an unreserved CreateMachine succeeded: it took held capacity"
                ),
            }
        }
    );

    out
}
