//! Machine cases: ListMachines (filters by id and label selector, what a listed machine carries)
//! and ListEvents (what events carry, how they filter).

use std::collections::HashMap;

use anyhow::{Context as _, ensure};
use iri_spec::machine::v1alpha1::{self as m, MachineState};

use super::rpc::*;
use crate::{
    case::{Case, pass},
    ctx::{expect_ok, meta_id, unknown_id},
};

pub(super) fn list_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ ListMachines
    case!(
        v,
        "machine.list.by_id",
        "ListMachines with an id filter returns exactly that machine",
        |ctx| {
            let a = ctx.new_machine().await?;
            let _b = ctx.new_machine().await?;
            let list = expect_ok(
                ctx.list_machines(Some(m::MachineFilter {
                    id: a.clone(),
                    ..Default::default()
                }))
                .await,
                "ListMachines by id",
            )?;
            ensure!(
                ids_of(&list) == vec![a.clone()],
                "ListMachines by id {a} returned {:?}",
                ids_of(&list)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.list.by_label",
        "ListMachines with a label selector returns exactly the matching machines",
        |ctx| {
            let a = ctx
                .create_machine(ctx.machine_spec(&[("color", "red")])?)
                .await?
                .0;
            let _b = ctx
                .create_machine(ctx.machine_spec(&[("color", "blue")])?)
                .await?
                .0;
            let mut sel = ctx.case_selector();
            sel.insert("color".into(), "red".into());
            let list = ctx.list_machines_by_labels(sel).await?;
            ensure!(
                ids_of(&list) == vec![a.clone()],
                "selector color=red returned {:?}, want [{a}]",
                ids_of(&list)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.list.selector_needs_all_keys",
        "a label selector matches only machines that have every key with an equal value",
        |ctx| {
            let a = ctx
                .create_machine(ctx.machine_spec(&[("k1", "v1"), ("k2", "v2")])?)
                .await?
                .0;
            let _b = ctx
                .create_machine(ctx.machine_spec(&[("k1", "v1")])?)
                .await?
                .0;
            let mut sel = ctx.case_selector();
            sel.insert("k1".into(), "v1".into());
            sel.insert("k2".into(), "v2".into());
            let list = ctx.list_machines_by_labels(sel).await?;
            ensure!(
                ids_of(&list) == vec![a.clone()],
                "selector k1=v1,k2=v2 returned {:?}, want [{a}]",
                ids_of(&list)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.list.selector_no_match_empty",
        "a label selector no machine matches returns an empty list",
        |ctx| {
            ctx.new_machine().await?;
            let mut sel = ctx.case_selector();
            sel.insert("conformance.example/none".into(), "nothing".into());
            let list = ctx.list_machines_by_labels(sel).await?;
            ensure!(list.is_empty(), "selector matched {:?}", ids_of(&list));
            pass()
        }
    );
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
    case!(
        v,
        "machine.list.unknown_id_empty",
        "ListMachines with an unknown id returns an empty list, not an error",
        |ctx| {
            ctx.new_machine().await?;
            let list = expect_ok(
                ctx.list_machines(Some(m::MachineFilter {
                    id: unknown_id(),
                    ..Default::default()
                }))
                .await,
                "ListMachines unknown id",
            )?;
            ensure!(
                list.is_empty(),
                "ListMachines by unknown id returned {:?}",
                ids_of(&list)
            );
            pass()
        }
    );
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
    case!(
        v,
        "machine.list.items_complete",
        "every listed machine has metadata, spec and status set",
        |ctx| {
            ctx.new_machine().await?;
            let list = ctx.list_machines_by_labels(ctx.case_selector()).await?;
            ensure!(!list.is_empty(), "the machine is not listed by its labels");
            for mm in &list {
                meta_id(mm.metadata.as_ref(), "listed machine")?;
                ensure!(
                    mm.spec.is_some() && mm.status.is_some(),
                    "listed machine lacks spec or status: {mm:?}"
                );
            }
            pass()
        }
    );
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
    case!(
        v,
        "machine.events.listed",
        "creating a machine produces at least one event about it",
        |ctx| {
            let id = ctx.new_machine().await?;
            wait_events_of(&ctx, &id).await?;
            pass()
        }
    );
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
    case!(
        v,
        "machine.events.time_in_seconds",
        "event_time is in Unix seconds",
        |ctx| {
            let id = ctx.new_machine().await?;
            let now = crate::ctx::unix_secs();
            for e in wait_events_of(&ctx, &id).await? {
                let t = e.spec.as_ref().map_or(0, |s| s.event_time);
                ensure!(
                    (now - 600..=now + 600).contains(&t),
                    "event_time {t} is not within 10 min of now in Unix seconds ({now})"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.involved_labels",
        "involved_object_meta carries the machine's labels",
        |ctx| {
            let spec = ctx.machine_spec(&[("evt", "yes")])?;
            let want = spec
                .metadata
                .as_ref()
                .map(|md| md.labels.clone())
                .unwrap_or_default();
            let (id, _) = ctx.create_machine(spec).await?;
            for e in wait_events_of(&ctx, &id).await? {
                let got = e
                    .spec
                    .as_ref()
                    .and_then(|s| s.involved_object_meta.as_ref())
                    .map(|md| md.labels.clone())
                    .unwrap_or_default();
                ensure!(
                    got == want,
                    "event labels {got:?} != machine labels {want:?}"
                );
            }
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
            let evs = events(
                &ctx,
                m::EventFilter {
                    id: a.clone(),
                    ..Default::default()
                },
            )
            .await?;
            for e in evs {
                let id = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|md| md.id)
                    .unwrap_or_default();
                ensure!(id == a, "event about {id} returned for id filter {a}");
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.label_filter",
        "ListEvents with a label selector returns only events of matching objects",
        |ctx| {
            let a = ctx
                .create_machine(ctx.machine_spec(&[("which", "a")])?)
                .await?
                .0;
            let _b = ctx
                .create_machine(ctx.machine_spec(&[("which", "b")])?)
                .await?
                .0;
            wait_events_of(&ctx, &a).await?;
            let mut sel = ctx.case_selector();
            sel.insert("which".into(), "a".into());
            let evs = events(
                &ctx,
                m::EventFilter {
                    label_selector: sel,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(!evs.is_empty(), "no events for selector which=a");
            for e in evs {
                let id = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|md| md.id)
                    .unwrap_or_default();
                ensure!(
                    id == a,
                    "event about {id} returned for selector which=a (machine {a})"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.time_window",
        "ListEvents with both time bounds > 0 returns only events inside the window",
        |ctx| {
            let id = ctx.new_machine().await?;
            wait_events_of(&ctx, &id).await?;
            let evs = events(
                &ctx,
                m::EventFilter {
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
            let now = crate::ctx::unix_secs();
            let evs = events(
                &ctx,
                m::EventFilter {
                    id,
                    events_from_time: now - 600,
                    events_to_time: now + 600,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(!evs.is_empty(), "a window around now returned no events");
            pass()
        }
    );
}
