//! Machine cases: ListMachines: filters by id and label selector, and what a listed machine
//! carries.

use std::collections::HashMap;

use anyhow::ensure;
use iri_spec::machine::v1alpha1::{self as m, MachineState};

use crate::{
    case::{Case, pass},
    ctx::{expect_ok, meta_id, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
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
