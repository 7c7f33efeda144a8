//! Machine cases on a machine's life after creation: the state machine (PENDING to RUNNING,
//! generations), UpdateMachinePower, DeleteMachine (codes, the terminating phase, idempotency),
//! Exec and parallel calls, and how ListMachines and ListEvents report it.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, bail, ensure};
use iri_spec::machine::v1alpha1::{self as m, MachineState, Power};
use tonic::Code;

use super::rpc::*;
use crate::{
    case::{Case, pass},
    cases::shared::{
        Events as _, about, delete_not_found_after_gone, delete_repeatedly, delete_until_gone,
        deleted, events_carry_labels, events_label_filter, events_none_in_1970,
        events_time_in_seconds, labelled, list_by_id, list_by_label, list_items_complete,
        list_no_match_empty, list_unknown_id_empty,
    },
    ctx::{expect_ok, plausible_ns, unknown_id},
};

pub(super) fn power_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ state machine
    check_cases! { v, Machine;
        "machine.state.pending_to_running", "a powered-on machine reaches RUNNING within the state budget",
        |ctx| { ctx.running_machine().await?; };
    }
    case!(
        v,
        "machine.state.observed_generation_catches_up",
        "status.observed_generation reaches metadata.generation after a spec change",
        |ctx| {
            let id = ctx.running_machine().await?;
            attach_nic(&ctx, &id, Some(ctx.nic("gen")))
                .await
                .map_err(|s| anyhow::anyhow!("AttachNetworkInterface: {s}"))?;
            ctx.wait_machine(&id, "to have observed_generation >= generation", |mm| {
                mm.is_some_and(|mm| {
                    let g = mm.metadata.as_ref().map_or(0, |md| md.generation);
                    mm.status
                        .as_ref()
                        .is_some_and(|s| s.observed_generation >= g)
                })
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.state.generation_monotonic",
        "metadata.generation never decreases across spec changes",
        |ctx| {
            let id = ctx.running_machine().await?;
            let g0 = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .generation;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("g1"))).await,
                "AttachVolume",
            )?;
            let g1 = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .generation;
            expect_ok(detach_volume(&ctx, &id, "g1").await, "DetachVolume")?;
            let g2 = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .generation;
            ensure!(g0 <= g1 && g1 <= g2, "generation went {g0} -> {g1} -> {g2}");
            ensure!(g2 >= 0, "negative generation");
            let mm = ctx
                .wait_machine_status(&id, "to observe the last generation", |s| {
                    s.observed_generation >= g2
                })
                .await?;
            ensure!(volume_names(&mm).is_empty(), "volume g1 still in spec");
            pass()
        }
    );

    // ------------------------------------------------------------ power
    case!(
        v,
        "machine.power.off_in_spec",
        "UpdateMachinePower OFF is reflected in spec.power",
        |ctx| {
            let id = powered_off_machine(&ctx).await?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.power == Power::Off as i32,
                "spec.power is {}, want OFF",
                spec_of(&mm)?.power
            );
            pass()
        }
    );
    case!(
        v,
        "machine.power.off_leaves_running",
        "a powered-off machine leaves RUNNING within the state budget",
        |ctx| {
            let id = powered_off_machine(&ctx).await?;
            ctx.wait_machine_status(&id, "to leave RUNNING after power off", |s| {
                s.state != RUNNING
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.power.on_again_running",
        "powering a machine off and on again brings it back to RUNNING",
        |ctx| {
            let id = powered_off_machine(&ctx).await?;
            // A runtime that never shuts the VM down (libvirt-provider, reference §2.1a) stays
            // RUNNING: that is machine.power.off_leaves_running (a should); this case only
            // needs RUNNING again after power on.
            let _ = ctx
                .wait_machine_status(&id, "to leave RUNNING after power off", |s| {
                    s.state != RUNNING
                })
                .await;
            expect_ok(
                power(&ctx, &id, Power::On as i32).await,
                "UpdateMachinePower ON",
            )?;
            ctx.wait_machine_status(&id, "to be RUNNING again after power on", |s| {
                s.state == RUNNING
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.power.idempotent",
        "repeating UpdateMachinePower with the same value is OK and changes nothing more",
        |ctx| {
            let id = ctx.running_machine().await?;
            for i in 0..ctx.params().idempotent_count {
                expect_ok(
                    power(&ctx, &id, Power::Off as i32).await,
                    &format!("UpdateMachinePower OFF #{i}"),
                )?;
            }
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.power == Power::Off as i32,
                "spec.power is not OFF"
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.power.unknown_id_not_found", "UpdateMachinePower of an unknown id returns NotFound",
        NotFound, "UpdateMachinePower unknown id",
        |ctx| power(&ctx, &unknown_id(), Power::Off as i32).await;
        "machine.power.empty_id_invalid", "UpdateMachinePower with an empty machine_id returns InvalidArgument",
        InvalidArgument, "UpdateMachinePower empty id",
        |ctx| power(&ctx, "", Power::Off as i32).await;
        "machine.power.invalid_value", "UpdateMachinePower with a value outside the enum returns InvalidArgument",
        InvalidArgument, "UpdateMachinePower power=9",
        |ctx| { let id = ctx.new_machine().await?; power(&ctx, &id, 9).await };
    }
}

pub(super) fn delete_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ DeleteMachine
    code_cases! { v, Machine;
        "machine.delete.unknown_id_not_found", "DeleteMachine of an unknown id returns NotFound",
        NotFound, "DeleteMachine unknown id",
        |ctx| ctx.delete_machine(&unknown_id()).await;
        "machine.delete.empty_id_invalid", "DeleteMachine with an empty machine_id returns InvalidArgument",
        InvalidArgument, "DeleteMachine empty id",
        |ctx| ctx.delete_machine("").await;
    }
    case!(
        v,
        "machine.delete.terminating_listed",
        "a machine still listed after DeleteMachine has deleted_at set and state TERMINATING",
        |ctx| {
            let id = ctx.running_machine().await?;
            let mm = deleted::<m::Machine>(&ctx, &id, "the terminating phase").await?;
            let md = mm.metadata.as_ref().context("no metadata")?;
            ensure!(
                md.deleted_at > 0,
                "deleted_at is 0 on a machine being deleted"
            );
            ensure!(
                status_of(&mm)?.state == TERMINATING,
                "state is {}, want TERMINATING (4)",
                status_of(&mm)?.state
            );
            pass()
        }
    );
    case!(
        v,
        "machine.delete.deleted_at_ns",
        "deleted_at of a machine being deleted is the deletion time in Unix nanoseconds",
        |ctx| {
            // A running machine: a runtime may forget a machine that never started at once
            // (nothing to tear down), which leaves deleted_at unobservable.
            let id = ctx.running_machine().await?;
            let mm = deleted::<m::Machine>(&ctx, &id, "deleted_at").await?;
            let t = mm.metadata.as_ref().context("no metadata")?.deleted_at;
            ensure!(
                plausible_ns(t, Duration::from_secs(600)),
                "deleted_at {t} is not now in Unix ns"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.delete.repeat_while_terminating_ok",
        "a repeated DeleteMachine returns OK while the machine is still listed, NotFound only once it is gone",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            let res = ctx.delete_machine(&id).await;
            match res {
                Ok(()) => {}
                Err(st) if st.code() == Code::NotFound => {
                    ensure!(
                        ctx.get_machine(&id).await?.is_none(),
                        "second DeleteMachine returned NotFound while the machine is still listed"
                    );
                }
                Err(st) => bail!("second DeleteMachine: {:?}: {}", st.code(), st.message()),
            }
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.delete.eventually_gone", "a deleted machine disappears from ListMachines within the state budget",
        |ctx| { let id = ctx.running_machine().await?; delete_until_gone::<m::Machine>(&ctx, &id).await?; };
    }
    case!(
        v,
        "machine.delete.gone_from_label_list",
        "a deleted machine eventually disappears from ListMachines by label too",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            ctx.wait_until("the label list to be empty after delete", || async {
                let l = ctx.list_machines_by_labels(ctx.case_selector()).await?;
                Ok(if l.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{:?}", ids_of(&l)))
                })
            })
            .await?;
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.delete.not_found_after_gone", "DeleteMachine of a machine that is gone returns NotFound",
        |ctx| { let id = ctx.new_machine().await?; delete_not_found_after_gone::<m::Machine>(&ctx, &id).await?; };
    }
    case!(
        v,
        "machine.delete.others_untouched",
        "deleting one machine leaves another machine listed and unchanged",
        |ctx| {
            let a = ctx.new_machine().await?;
            let b = ctx.running_machine().await?;
            delete_until_gone::<m::Machine>(&ctx, &a).await?;
            let mm = ctx.must_machine(&b).await?;
            ensure!(
                mm.metadata.as_ref().is_some_and(|md| md.deleted_at == 0),
                "the other machine has deleted_at set"
            );
            ensure!(
                status_of(&mm)?.state == RUNNING,
                "the other machine is no longer RUNNING"
            );
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.delete.idempotent", "repeated DeleteMachine calls return only OK or NotFound and the machine ends up gone",
        |ctx| { let id = ctx.new_machine().await?; delete_repeatedly::<m::Machine>(&ctx, &id).await?; };
    }
    case!(
        v,
        "machine.delete.parallel",
        "parallel DeleteMachine calls on one machine return only OK or NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|_| ctx.delete_machine(&id));
            let res = futures::future::join_all(futs).await;
            ensure!(
                res.iter().any(Result::is_ok),
                "no parallel DeleteMachine returned OK"
            );
            for r in res {
                if let Err(st) = r {
                    ensure!(
                        st.code() == Code::NotFound,
                        "parallel DeleteMachine: {:?}: {}",
                        st.code(),
                        st.message()
                    );
                    ensure!(
                        ctx.get_machine(&id).await?.is_none(),
                        "parallel DeleteMachine returned NotFound while the machine is listed"
                    );
                }
            }
            ctx.wait_machine_gone(&id).await?;
            pass()
        }
    );
}

pub(super) fn exec_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ Exec
    case!(
        v,
        "machine.exec.known_machine",
        "Exec on an existing machine returns OK with an empty or absolute URL",
        |ctx| {
            let id = ctx.running_machine().await?;
            let r = expect_ok(exec(&ctx, &id).await, "Exec")?;
            ensure!(
                r.url.is_empty() || r.url.contains("://"),
                "Exec URL {:?} is neither empty nor absolute",
                r.url
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.exec.unknown_id_not_found", "Exec on an unknown machine returns NotFound",
        NotFound, "Exec unknown id",
        |ctx| exec(&ctx, &unknown_id()).await;
        "machine.exec.empty_id_invalid", "Exec with an empty machine_id returns InvalidArgument",
        InvalidArgument, "Exec empty id",
        |ctx| exec(&ctx, "").await;
    }
}

pub(super) fn concurrency_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ concurrency
    case!(
        v,
        "machine.concurrency.parallel_creates",
        "N parallel CreateMachine calls yield N distinct, listed machines",
        |ctx| {
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|_| async { ctx.create_machine(ctx.machine_spec(&[])?).await });
            let mut ids = Vec::new();
            for r in futures::future::join_all(futs).await {
                ids.push(r?.0);
            }
            let mut uniq = ids.clone();
            uniq.sort();
            uniq.dedup();
            ensure!(
                uniq.len() == n,
                "{n} parallel creates returned {} distinct ids",
                uniq.len()
            );
            let mut listed = ids_of(&ctx.list_machines_by_labels(ctx.case_selector()).await?);
            listed.sort();
            ensure!(listed == uniq, "listed {listed:?}, created {uniq:?}");
            pass()
        }
    );
    case!(
        v,
        "machine.concurrency.parallel_power",
        "parallel UpdateMachinePower calls on distinct machines all take effect",
        |ctx| {
            let n = ctx.params().parallel_creates.min(4);
            let mut ids = Vec::new();
            for _ in 0..n {
                ids.push(ctx.new_machine().await?);
            }
            let res =
                futures::future::join_all(ids.iter().map(|id| power(&ctx, id, Power::Off as i32)))
                    .await;
            for r in res {
                expect_ok(r, "UpdateMachinePower")?;
            }
            for id in &ids {
                let mm = ctx.must_machine(id).await?;
                ensure!(
                    spec_of(&mm)?.power == Power::Off as i32,
                    "machine {id} not powered off"
                );
            }
            pass()
        }
    );
}

pub(super) fn list_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ ListMachines
    check_cases! { v, Machine;
        "machine.list.by_id", "ListMachines with an id filter returns exactly that machine",
        |ctx| { list_by_id::<m::Machine>(&ctx).await?; };
        "machine.list.by_label", "ListMachines with a label selector returns exactly the matching machines",
        |ctx| { list_by_label::<m::Machine>(&ctx, &[("color", "red")], &[("color", "blue")]).await?; };
    }
    case!(
        v,
        "machine.list.selector_needs_all_keys",
        "a label selector matches only machines that have every key with an equal value",
        |ctx| {
            let (both, one) = ([("k1", "v1"), ("k2", "v2")], [("k1", "v1")]);
            list_by_label::<m::Machine>(&ctx, &both, &one).await?;
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.list.selector_no_match_empty", "a label selector no machine matches returns an empty list",
        |ctx| { list_no_match_empty::<m::Machine>(&ctx).await?; };
    }
    case!(
        v,
        "machine.list.empty_selector_matches_all",
        "an empty label selector matches every machine",
        |ctx| {
            let a = ctx.new_machine().await?;
            let list = ctx.list_machines_by_labels(HashMap::new()).await?;
            ensure!(
                ids_of(&list).contains(&a),
                "an empty selector does not return machine {a}"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.list.no_filter_lists_all",
        "ListMachines without a filter includes a newly created machine",
        |ctx| {
            let a = ctx.new_machine().await?;
            let list = expect_ok(ctx.list_machines(None).await, "ListMachines")?;
            ensure!(
                ids_of(&list).contains(&a),
                "ListMachines without filter lacks machine {a}"
            );
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.list.unknown_id_empty", "ListMachines with an unknown id returns an empty list, not an error",
        |ctx| { ctx.new_machine().await?; list_unknown_id_empty::<m::Machine>(&ctx).await?; };
    }
    case!(
        v,
        "machine.list.id_and_selector",
        "ListMachines with an id and a selector the machine does not match returns an empty list",
        |ctx| {
            let a = ctx.new_machine().await?;
            let list = expect_ok(
                ctx.list_machines(Some(m::MachineFilter {
                    id: a,
                    label_selector: map(&[("conformance.example/none", "x")]),
                }))
                .await,
                "ListMachines id+selector",
            )?;
            ensure!(list.is_empty(), "returned {:?}", ids_of(&list));
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.list.items_complete", "every listed machine has metadata, spec and status set",
        |ctx| { list_items_complete::<m::Machine>(&ctx).await?; };
    }
    case!(
        v,
        "machine.list.state_valid",
        "every listed machine reports a MachineState defined by the proto",
        |ctx| {
            ctx.running_machine().await?;
            for mm in ctx.list_machines_by_labels(ctx.case_selector()).await? {
                let s = status_of(&mm)?.state;
                ensure!(
                    MachineState::try_from(s).is_ok(),
                    "state {s} is not a MachineState"
                );
            }
            pass()
        }
    );
}

pub(super) fn events_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ events
    check_cases! { v, Machine;
        "machine.events.listed", "creating a machine produces at least one event about it",
        |ctx| { let id = ctx.new_machine().await?; wait_events_of(&ctx, &id).await?; };
    }
    case!(
        v,
        "machine.events.complete",
        "every event has spec and involved_object_meta with the object's id",
        |ctx| {
            let id = ctx.new_machine().await?;
            for e in wait_events_of(&ctx, &id).await? {
                let s = e.spec.as_ref().context("event without spec")?;
                let md = s
                    .involved_object_meta
                    .as_ref()
                    .context("event without involved_object_meta")?;
                ensure!(!md.id.is_empty(), "involved_object_meta has no id");
                ensure!(
                    !s.reason.is_empty() || !s.message.is_empty(),
                    "event has neither reason nor message"
                );
            }
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.events.time_in_seconds", "event_time is in Unix seconds",
        |ctx| { events_time_in_seconds::<m::Machine>(&ctx).await?; };
    }
    case!(
        v,
        "machine.events.involved_labels",
        "involved_object_meta carries the machine's labels",
        |ctx| {
            let (id, want) = labelled::<m::Machine>(&ctx, &[("evt", "yes")]).await?;
            events_carry_labels(wait_events_of(&ctx, &id).await?, &want)?;
            pass()
        }
    );
    case!(
        v,
        "machine.events.action_set",
        "every event has a non-empty action",
        |ctx| {
            let id = ctx.new_machine().await?;
            for e in wait_events_of(&ctx, &id).await? {
                let s = e.spec.as_ref().context("event without spec")?;
                ensure!(
                    !s.action.is_empty(),
                    "event {:?} has an empty action",
                    s.reason
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.id_filter",
        "ListEvents with an id filter returns only events about that object",
        |ctx| {
            let a = ctx.new_machine().await?;
            let _b = ctx.new_machine().await?;
            wait_events_of(&ctx, &a).await?;
            let evs = m::Machine::events(&ctx, &a, HashMap::new(), (0, 0)).await?;
            for id in evs.into_iter().map(about) {
                ensure!(id == a, "event about {id} returned for id filter {a}");
            }
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.events.label_filter", "ListEvents with a label selector returns only events of matching objects",
        |ctx| { events_label_filter::<m::Machine>(&ctx).await?; };
    }
    case!(
        v,
        "machine.events.time_window",
        "ListEvents with both time bounds > 0 returns only events inside the window",
        |ctx| {
            let id = events_none_in_1970::<m::Machine>(&ctx).await?;
            let now = crate::ctx::unix_secs();
            let evs = m::Machine::events(&ctx, &id, HashMap::new(), (now - 600, now + 600)).await?;
            ensure!(!evs.is_empty(), "a window around now returned no events");
            pass()
        }
    );
}
