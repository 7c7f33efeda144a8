//! The go-poollet profile: what breaks IronCore's Go machinepoollet and volumepoollet beyond the
//! wire format (reference §1.8 nil dereferences, §3.4 generation handshake, §7.4): STOPPED
//! emitted, nil sub-messages, wrong time units, quantity semantics, label lookups.

use std::collections::HashMap;

use anyhow::{Context as _, ensure};
use iri_spec::{
    keys,
    machine::v1alpha1::{self as m, MachineState, Power},
    volume::v1alpha1 as v,
};
use tonic::Code;

use crate::{
    case::{Case, Profile, Service, pass},
    cases::machine::{annotate, attach_nic, detach_volume, powered_off_machine, wait_events_of},
    cases::shared::{created_at_now, ids_of, new, version},
    ctx::{Ctx, expect_code, expect_ok, unknown_id},
};

macro_rules! case {
    ($v:ident, $svc:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(Case::new(
            $id,
            Service::$svc,
            Profile::GoPoollet,
            $desc,
            |$ctx: Ctx| async move { $body },
        ));
    };
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The go-poollet cases.
#[allow(clippy::too_many_lines)]
pub(crate) fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let v = &mut out;

    case!(
        v,
        Machine,
        "poollet.version.runtime_name_usable",
        "runtime_name is non-empty and usable as the <name>:// prefix of machine ids",
        |ctx| {
            let name = version(&ctx, Service::Machine, "").await?.name;
            ensure!(
                !name.is_empty(),
                "runtime_name is empty: the poollet writes \"://<id>\" as machineID"
            );
            ensure!(
                !name.contains("://") && !name.contains(char::is_whitespace),
                "runtime_name {name:?} cannot prefix an id"
            );
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.status.class_submessages",
        "every MachineClassStatus has machine_class and capabilities (the class mapper dereferences both)",
        |ctx| {
            let mut c = ctx.mc()?;
            let s = expect_ok(ctx.rpc(c.status(m::StatusRequest {})).await, "Status")?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "no classes: the pool announces nothing"
            );
            for cs in s.machine_class_status {
                let cl = cs.machine_class.context("nil machine_class")?;
                ensure!(
                    cl.capabilities.is_some(),
                    "nil capabilities in class {:?}",
                    cl.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.status.resources_deep_equal_units",
        "class resources use cpu in cores and memory in bytes so they deep-equal an ironcore MachineClass",
        |ctx| {
            let mut c = ctx.mc()?;
            let s = expect_ok(ctx.rpc(c.status(m::StatusRequest {})).await, "Status")?;
            ensure!(!s.machine_class_status.is_empty(), "no classes");
            for cs in s.machine_class_status {
                let cl = cs.machine_class.context("nil machine_class")?;
                let r = cl.capabilities.context("nil capabilities")?.resources;
                let cpu = *r
                    .get("cpu")
                    .with_context(|| format!("class {:?}: no cpu key", cl.name))?;
                let mem = *r
                    .get("memory")
                    .with_context(|| format!("class {:?}: no memory key", cl.name))?;
                ensure!(
                    (1..1000).contains(&cpu),
                    "class {:?}: cpu {cpu} is not whole cores",
                    cl.name
                );
                ensure!(
                    mem >= 64 << 20,
                    "class {:?}: memory {mem} is not bytes",
                    cl.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.status.quantity_total",
        "quantity is a non-negative instance count (the poollet subtracts usage itself)",
        |ctx| {
            let mut c = ctx.mc()?;
            let s = expect_ok(ctx.rpc(c.status(m::StatusRequest {})).await, "Status")?;
            for cs in s.machine_class_status {
                ensure!(cs.quantity >= 0, "negative quantity {}", cs.quantity);
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.create_response_submessages",
        "the CreateMachine response has machine.metadata and machine.status (the create path dereferences them)",
        |ctx| {
            let created = ctx
                .try_create_machine(ctx.machine_spec(&[])?)
                .await
                .map_err(|s| anyhow::anyhow!("CreateMachine: {s}"))?;
            ensure!(
                created.metadata.is_some(),
                "nil metadata in CreateMachine response"
            );
            ensure!(
                created.status.is_some(),
                "nil status in CreateMachine response"
            );
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.listed_submessages",
        "every listed machine has metadata, spec and status (the reconciler dereferences all three)",
        |ctx| {
            ctx.new_machine().await?;
            let l = ctx.list_machines_by_labels(ctx.case_selector()).await?;
            ensure!(!l.is_empty(), "machine not listed by label");
            for mm in l {
                ensure!(
                    mm.metadata.is_some() && mm.spec.is_some() && mm.status.is_some(),
                    "nil sub-message in listed machine: {mm:?}"
                );
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.lookup_by_uid_label",
        "ListMachines by the machine-uid label finds exactly the machine (the poollet's idempotent create)",
        |ctx| {
            let uid = format!("uid-{}", &unknown_id()[..12]);
            let (id, _) = ctx
                .create_machine(ctx.machine_spec(&[(keys::MACHINE_UID_LABEL, &uid)])?)
                .await?;
            let _other = ctx
                .create_machine(ctx.machine_spec(&[(keys::MACHINE_UID_LABEL, "uid-other")])?)
                .await?;
            let l = ctx
                .list_machines_by_labels(map(&[(keys::MACHINE_UID_LABEL, &uid)]))
                .await?;
            let ids: Vec<String> = l
                .iter()
                .filter_map(|x| x.metadata.as_ref().map(|md| md.id.clone()))
                .collect();
            ensure!(
                ids == vec![id.clone()],
                "machine-uid={uid} returned {ids:?}, want [{id}]"
            );
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.created_at_nanos",
        "created_at is Unix nanoseconds (the event generator reads it)",
        |ctx| {
            created_at_now::<m::Machine>(&ctx).await?;
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.generation_handshake",
        "poollet annotations survive verbatim and observed_generation catches up with the recorded irimachine-generation",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.metadata.as_mut().context("metadata")?.annotations = map(&[
                (keys::MACHINE_GENERATION_ANNOTATION, "1"),
                (keys::IRI_MACHINE_GENERATION_ANNOTATION, "0"),
            ]);
            let (id, _) = ctx.create_machine(spec).await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth0"))).await,
                "AttachNetworkInterface",
            )?;
            let listed = ctx.must_machine(&id).await?;
            let g = listed.metadata.as_ref().context("nil metadata")?.generation;
            let want = map(&[
                (keys::MACHINE_GENERATION_ANNOTATION, "2"),
                (keys::IRI_MACHINE_GENERATION_ANNOTATION, &g.to_string()),
            ]);
            expect_ok(
                annotate(&ctx, &id, want.clone()).await,
                "UpdateMachineAnnotations",
            )?;
            let mm = ctx
                .wait_machine_status(&id, &format!("to reach observed_generation >= {g}"), |s| {
                    s.observed_generation >= g
                })
                .await?;
            let got = mm.metadata.context("nil metadata")?.annotations;
            ensure!(
                got == want,
                "annotations {got:?} != {want:?}: the poollet's status update would fail"
            );
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.power_off_not_stopped",
        "a powered-off machine never reports MACHINE_STOPPED (5), which Go poollets cannot map",
        |ctx| {
            let id = powered_off_machine(&ctx).await?;
            // A runtime that never shuts the VM down (libvirt-provider, reference §2.1a) stays
            // RUNNING: that is machine.power.off_leaves_running (a should); here only the state
            // it reports counts.
            let mm = match ctx
                .wait_machine_status(&id, "to leave RUNNING after power off", |s| {
                    s.state != MachineState::MachineRunning as i32
                })
                .await
            {
                Ok(mm) => Some(mm),
                Err(_) => ctx.get_machine(&id).await?,
            };
            let st = mm.and_then(|m| m.status).map_or(-1, |s| s.state);
            ensure!(
                (0..=4).contains(&st),
                "state {st} after power off; Go poollets map only states 0-4"
            );
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.created_off_not_stopped",
        "a machine created powered off reports a state in 0-4, not STOPPED",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("spec")?.power = Power::Off as i32;
            let (id, _) = ctx.create_machine(spec).await?;
            let mm = ctx
                .wait_machine_status(&id, "to leave PENDING", |s| {
                    s.state != MachineState::MachinePending as i32
                })
                .await?;
            let st = mm.status.map_or(-1, |s| s.state);
            ensure!(
                (0..=4).contains(&st),
                "state {st}; Go poollets map only states 0-4"
            );
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.delete_keeps_listed_terminating",
        "a machine being deleted is listed as TERMINATING or not at all (never RUNNING with deleted_at)",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            if let Some(mm) = ctx.get_machine(&id).await? {
                let st = mm.status.as_ref().map_or(-1, |s| s.state);
                ensure!(
                    st == MachineState::MachineTerminating as i32,
                    "state {st} while deleting: the poollet keeps reporting the old state"
                );
                ensure!(
                    mm.metadata.is_some_and(|md| md.deleted_at > 0),
                    "deleted_at unset while deleting"
                );
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.delete_unknown_not_found",
        "DeleteMachine of a gone machine returns NotFound (the poollet's only 'deleted' signal)",
        |ctx| {
            expect_code(
                ctx.delete_machine(&unknown_id()).await,
                Code::NotFound,
                "DeleteMachine unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.machine.detach_unknown_not_found",
        "DetachVolume of a missing name returns NotFound, which the poollet ignores (other codes fail its reconcile)",
        |ctx| {
            let id = ctx.new_machine().await?;
            let res = detach_volume(&ctx, &id, "gone").await;
            expect_code(res, Code::NotFound, "DetachVolume missing name")?;
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.events.time_seconds",
        "event_time is Unix seconds (the event mapper's window is in seconds)",
        |ctx| {
            let id = ctx.new_machine().await?;
            let now = crate::ctx::unix_secs();
            for e in wait_events_of(&ctx, &id).await? {
                let t = e.spec.map_or(0, |s| s.event_time);
                ensure!(
                    (now - 600..=now + 600).contains(&t),
                    "event_time {t} is not Unix seconds"
                );
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.events.involved_object_labels",
        "events carry involved_object_meta with the object's labels (events without labels are dropped)",
        |ctx| {
            let id = ctx.new_machine().await?;
            for e in wait_events_of(&ctx, &id).await? {
                let md = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .context("nil spec or involved_object_meta")?;
                ensure!(
                    md.labels.contains_key(crate::ctx::RUN_ID_LABEL),
                    "involved_object_meta lacks the machine's labels: {:?}",
                    md.labels
                );
            }
            pass()
        }
    );
    case!(
        v,
        Machine,
        "poollet.events.action_set",
        "events set action (the poollet substitutes \"Unknown\" otherwise)",
        |ctx| {
            let id = ctx.new_machine().await?;
            for e in wait_events_of(&ctx, &id).await? {
                ensure!(
                    e.spec.is_some_and(|s| !s.action.is_empty()),
                    "event with an empty action"
                );
            }
            pass()
        }
    );
    case!(
        v,
        Volume,
        "poollet.volume.status_submessages",
        "every VolumeClassStatus has volume_class and capabilities; quantity is bytes >= 0",
        |ctx| {
            let mut c = ctx.vc()?;
            let s = expect_ok(
                ctx.rpc(c.status(v::StatusRequest {})).await,
                "volume Status",
            )?;
            ensure!(!s.volume_class_status.is_empty(), "no volume classes");
            for cs in s.volume_class_status {
                let cl = cs.volume_class.context("nil volume_class")?;
                ensure!(
                    cl.capabilities.is_some(),
                    "nil capabilities in class {:?}",
                    cl.name
                );
                ensure!(cs.quantity >= 0, "negative quantity {}", cs.quantity);
            }
            pass()
        }
    );
    case!(
        v,
        Volume,
        "poollet.volume.listed_submessages",
        "every listed volume has metadata, spec, spec.resources and status (the reconciler dereferences them)",
        |ctx| {
            ctx.new_volume().await?;
            let l = ctx.list_by_labels::<v::Volume>(ctx.case_selector()).await?;
            ensure!(!l.is_empty(), "volume not listed by label");
            for vol in l {
                ensure!(
                    vol.metadata.is_some() && vol.status.is_some(),
                    "nil metadata or status"
                );
                ensure!(
                    vol.spec.is_some_and(|s| s.resources.is_some()),
                    "nil spec or spec.resources"
                );
            }
            pass()
        }
    );
    case!(
        v,
        Volume,
        "poollet.volume.lookup_by_uid_label",
        "ListVolumes by the volume-uid label finds exactly the volume",
        |ctx| {
            let uid = format!("uid-{}", &unknown_id()[..12]);
            let key = keys::VOLUMEPOOLLET_VOLUME_UID_LABEL;
            let id = new::<v::Volume>(&ctx, &[(key, &uid)]).await?;
            let _o = new::<v::Volume>(&ctx, &[(key, "uid-other")]).await?;
            let l = ctx.list_by_labels::<v::Volume>(map(&[(key, &uid)])).await?;
            let ids = ids_of(&l);
            ensure!(ids == vec![id.clone()], "volume-uid={uid} returned {ids:?}");
            pass()
        }
    );
    case!(
        v,
        Volume,
        "poollet.volume.created_at_nanos",
        "volume created_at is Unix nanoseconds",
        |ctx| {
            created_at_now::<v::Volume>(&ctx).await?;
            pass()
        }
    );
    case!(
        v,
        Volume,
        "poollet.volume.access_when_available",
        "an AVAILABLE volume has access set (the poollet builds the access secret from it)",
        |ctx| {
            let id = ctx.available_volume().await?;
            let vol = ctx.get_volume(&id).await?.context("not listed")?;
            ensure!(
                vol.status.and_then(|s| s.access).is_some(),
                "nil access on an AVAILABLE volume"
            );
            pass()
        }
    );
    case!(
        v,
        Volume,
        "poollet.snapshot.submessages",
        "CreateVolumeSnapshot and ListVolumeSnapshots return metadata and status",
        |ctx| {
            let vid = ctx.new_volume().await?;
            let s = ctx
                .try_create_snapshot(&vid)
                .await
                .map_err(|s| anyhow::anyhow!("CreateVolumeSnapshot: {s}"))?;
            ensure!(
                s.metadata.is_some() && s.status.is_some(),
                "nil metadata or status in the response"
            );
            let sid = s.metadata.map(|m| m.id).unwrap_or_default();
            let listed = ctx
                .get_snapshot(&sid)
                .await?
                .context("snapshot not listed")?;
            ensure!(listed.status.is_some(), "nil status in a listed snapshot");
            pass()
        }
    );

    out
}
