//! Machine cases on what a runtime reports and keeps about a machine as created: its Version
//! and Status (the classes a machine is created with), CreateMachine (the response, the spec and
//! metadata it keeps, the requests it must reject) and the annotations it keeps after
//! UpdateMachineAnnotations.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, ensure};
use iri_spec::machine::v1alpha1::{self as m, Power};

use super::rpc::*;
use crate::{
    case::{Case, Service, pass},
    cases::shared::{
        create_none_rejected, created_at_now, labelled, unknown_class_fails, version, version_set,
        with_unknown_class,
    },
    ctx::{expect_ok, plausible_ns, unknown_id},
};

pub(super) fn status_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ Version
    check_cases! { v, Machine;
        "machine.version.name_and_version_set", "Version returns a non-empty runtime_name and runtime_version",
        |ctx| { version_set(&ctx, Service::Machine).await?; };
    }
    check_cases! { v, Machine;
        "machine.version.any_request_version", "Version answers OK whatever the request's version field says (Go clients send \"\")",
        |ctx| { let r = version(&ctx, Service::Machine, "v9.9.9-conformance").await?; ensure!(!r.name.is_empty(), "runtime_name is empty"); };
    }
    case!(
        v,
        "machine.version.stable",
        "two Version calls return the same runtime_name and runtime_version",
        |ctx| {
            let a = version(&ctx, Service::Machine, "").await?;
            let b = version(&ctx, Service::Machine, "").await?;
            ensure!(a == b, "Version changed between calls: {a:?} vs {b:?}");
            ensure!(!a.name.is_empty(), "runtime_name is empty");
            pass()
        }
    );

    // ------------------------------------------------------------ Status
    case!(
        v,
        "machine.status.has_classes",
        "Status reports at least one machine class",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.status.class_set",
        "every MachineClassStatus has machine_class set with a non-empty, unique name",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            let mut seen = std::collections::HashSet::new();
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                ensure!(!c.name.is_empty(), "a machine class has an empty name");
                ensure!(
                    seen.insert(c.name.clone()),
                    "machine class {:?} is listed twice",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.capabilities_set",
        "every machine class has capabilities set",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                ensure!(
                    c.capabilities.is_some(),
                    "machine class {:?} has no capabilities",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.cpu_memory_keys",
        "every machine class capability map has the keys cpu and memory",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                ensure!(
                    r.contains_key("cpu"),
                    "machine class {:?} lacks the cpu key: {r:?}",
                    c.name
                );
                ensure!(
                    r.contains_key("memory"),
                    "machine class {:?} lacks the memory key: {r:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.resources_positive",
        "cpu and memory capabilities are positive",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                for k in ["cpu", "memory"] {
                    let q = *r
                        .get(k)
                        .with_context(|| format!("class {:?} lacks {k}", c.name))?;
                    ensure!(q > 0, "class {:?}: {k} = {q} is not positive", c.name);
                }
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.quantity_non_negative",
        "every MachineClassStatus quantity is >= 0",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                ensure!(
                    cs.quantity >= 0,
                    "class {:?} has quantity {}",
                    cs.machine_class.as_ref().map(|c| &c.name),
                    cs.quantity
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.memory_in_bytes",
        "memory capabilities are in bytes (at least 64 MiB), not MiB or GiB",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                let mem = *r
                    .get("memory")
                    .with_context(|| format!("class {:?} lacks memory", c.name))?;
                ensure!(
                    mem >= 64 << 20,
                    "class {:?}: memory {mem} is below 64 MiB: not in bytes?",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.cpu_in_cores",
        "cpu capabilities are whole cores (1..=999), not millicores",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                let cpu = *r
                    .get("cpu")
                    .with_context(|| format!("class {:?} lacks cpu", c.name))?;
                ensure!(
                    (1..1000).contains(&cpu),
                    "class {:?}: cpu {cpu} is not in whole cores (millicores?)",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.class_usable",
        "the class used by the run is one Status reports",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            let class = ctx.machine_class()?;
            ensure!(
                s.machine_class_status
                    .iter()
                    .any(|cs| cs.machine_class.as_ref().is_some_and(|c| c.name == class)),
                "class {class:?} is not reported by Status"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.status.stable",
        "two Status calls report the same class names",
        |ctx| {
            let names = |s: m::StatusResponse| {
                let mut n: Vec<String> = s
                    .machine_class_status
                    .into_iter()
                    .filter_map(|c| c.machine_class.map(|c| c.name))
                    .collect();
                n.sort();
                n
            };
            let a = names(status(&ctx).await?);
            let b = names(status(&ctx).await?);
            ensure!(a == b, "class names changed between calls: {a:?} vs {b:?}");
            ensure!(!a.is_empty(), "Status returned no machine classes");
            pass()
        }
    );
}

pub(super) fn create_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ CreateMachine
    check_cases! { v, Machine;
        "machine.create.returns_id", "CreateMachine returns the machine with a non-empty metadata.id",
        |ctx| { ctx.new_machine().await?; };
    }
    case!(
        v,
        "machine.create.response_complete",
        "the CreateMachine response carries metadata, spec and status",
        |ctx| {
            let (_, mm) = ctx.create_machine(ctx.machine_spec(&[])?).await?;
            ensure!(mm.spec.is_some(), "response machine has no spec");
            ensure!(mm.status.is_some(), "response machine has no status");
            pass()
        }
    );
    case!(
        v,
        "machine.create.response_pending",
        "the CreateMachine response reports state PENDING",
        |ctx| {
            let (_, mm) = ctx.create_machine(ctx.machine_spec(&[])?).await?;
            let st = status_of(&mm)?.state;
            ensure!(
                st == PENDING,
                "CreateMachine response state is {st}, want PENDING (0)"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.create.ignores_client_id",
        "CreateMachine ignores a metadata.id sent by the client and assigns a fresh one",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let forged = unknown_id();
            spec.metadata.as_mut().context("template has metadata")?.id = forged.clone();
            let (id, _) = ctx.create_machine(spec).await?;
            ensure!(id != forged, "the runtime kept the client's id {forged}");
            pass()
        }
    );
    case!(
        v,
        "machine.create.ignores_client_status",
        "CreateMachine ignores a status sent by the client and starts at PENDING",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.status = Some(m::MachineStatus {
                state: TERMINATING,
                observed_generation: 42,
                ..Default::default()
            });
            let (id, mm) = ctx.create_machine(spec).await?;
            let st = status_of(&mm)?;
            ensure!(
                st.state != TERMINATING && st.observed_generation != 42,
                "the runtime kept the client's status: {st:?}"
            );
            let listed = ctx.must_machine(&id).await?;
            ensure!(
                status_of(&listed)?.state != TERMINATING,
                "listed machine kept the client's TERMINATING state"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.create.ignores_client_times",
        "CreateMachine sets created_at itself and leaves deleted_at 0 whatever the client sent",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let md = spec.metadata.as_mut().context("template has metadata")?;
            md.created_at = 1;
            md.deleted_at = 2;
            let (id, _) = ctx.create_machine(spec).await?;
            let mm = ctx.must_machine(&id).await?;
            let md = mm.metadata.as_ref().context("no metadata")?;
            ensure!(
                md.deleted_at == 0,
                "deleted_at is {} on a new machine",
                md.deleted_at
            );
            ensure!(
                plausible_ns(md.created_at, Duration::from_secs(600)),
                "created_at {} is not now in Unix ns",
                md.created_at
            );
            pass()
        }
    );
    case!(
        v,
        "machine.create.created_at_ns",
        "metadata.created_at is the creation time in Unix nanoseconds",
        |ctx| {
            created_at_now::<m::Machine>(&ctx).await?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.labels_preserved",
        "labels given at create are listed verbatim",
        |ctx| {
            let (id, want) =
                labelled::<m::Machine>(&ctx, &[("conformance.example/app", "web"), ("tier", "")])
                    .await?;
            let mm = ctx.must_machine(&id).await?;
            let got = &mm.metadata.as_ref().context("no metadata")?.labels;
            ensure!(*got == want, "labels differ: sent {want:?}, listed {got:?}");
            pass()
        }
    );
    case!(
        v,
        "machine.create.annotations_preserved",
        "annotations given at create are listed verbatim",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let want = map(&[
                ("conformance.example/note", "hello, world"),
                ("json", "{\"a\":[1,2]}"),
            ]);
            spec.metadata
                .as_mut()
                .context("template has metadata")?
                .annotations = want.clone();
            let (id, _) = ctx.create_machine(spec).await?;
            let mm = ctx.must_machine(&id).await?;
            let got = &mm.metadata.as_ref().context("no metadata")?.annotations;
            ensure!(
                *got == want,
                "annotations differ: sent {want:?}, listed {got:?}"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.create.spec_preserved",
        "class, power, ignition data and guest config are listed as sent",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let s = spec.spec.as_mut().context("template has spec")?;
            s.ignition_data = b"{\"ignition\":{\"version\":\"3.4.0\"}}".to_vec();
            s.guest_config = Some(m::GuestConfig {
                hostname: "conformance-host".to_owned(),
            });
            let want = s.clone();
            let (id, _) = ctx.create_machine(spec).await?;
            let mm = ctx.must_machine(&id).await?;
            let got = spec_of(&mm)?;
            ensure!(
                got.class == want.class,
                "class {:?} != {:?}",
                got.class,
                want.class
            );
            ensure!(
                got.power == want.power,
                "power {} != {}",
                got.power,
                want.power
            );
            ensure!(
                got.ignition_data == want.ignition_data,
                "ignition_data differs"
            );
            ensure!(
                got.guest_config == want.guest_config,
                "guest_config {:?} != {:?}",
                got.guest_config,
                want.guest_config
            );
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.create.listed_with_same_id", "ListMachines by id returns the machine under the id CreateMachine returned",
        |ctx| { let id = ctx.new_machine().await?; ctx.must_machine(&id).await?; };
    }
    case!(
        v,
        "machine.create.unique_ids",
        "consecutive CreateMachine calls return distinct ids and both machines stay listed",
        |ctx| {
            let a = ctx.new_machine().await?;
            let b = ctx.new_machine().await?;
            ensure!(a != b, "two creates returned the same id {a}");
            ctx.must_machine(&a).await?;
            ctx.must_machine(&b).await?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.with_volume_and_nic",
        "a machine created with a volume and a NIC reports both in status by name with a handle",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let s = spec.spec.as_mut().context("template has spec")?;
            s.volumes.push(ctx.local_disk("root"));
            s.network_interfaces.push(ctx.nic("primary"));
            let (id, _) = ctx.create_machine(spec).await?;
            wait_volume_attached(&ctx, &id, "root").await?;
            wait_nic_attached(&ctx, &id, "primary").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.root_disk_image",
        "a local disk with an image is kept in the spec",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let mut disk = ctx.local_disk("root");
            if let Some(d) = disk.local_disk.as_mut() {
                d.image = Some(m::ImageSpec {
                    image: ctx.params().image.clone(),
                });
            }
            spec.spec
                .as_mut()
                .context("template has spec")?
                .volumes
                .push(disk.clone());
            let (id, _) = ctx.create_machine(spec).await?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes == vec![disk],
                "volumes differ: {:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    check_cases! { v, Machine;
        "machine.create.rejects_missing_machine", "CreateMachine without a machine returns InvalidArgument",
        |ctx| { create_none_rejected::<m::Machine>(&ctx, "CreateMachine{machine: None}").await?; };
    }
    code_cases! { v, Machine;
        "machine.create.rejects_missing_spec", "CreateMachine with a machine without spec returns InvalidArgument",
        InvalidArgument, "CreateMachine without spec",
        |ctx| ctx.try_create_machine(m::Machine { metadata: Some(ctx.metadata(&[])), spec: None, status: None}).await;
    }
    check_cases! { v, Machine;
        "machine.create.unknown_class_fails", "CreateMachine with a class Status does not report fails (any code; the exact code is machine.create.rejects_unknown_class)",
        |ctx| { unknown_class_fails::<m::Machine>(&ctx).await?; };
    }
    code_cases! { v, Machine;
        "machine.create.rejects_unknown_class",
        "CreateMachine with a class Status does not report returns InvalidArgument",
        InvalidArgument, "CreateMachine with an unknown class",
        |ctx| ctx.try_create_machine(with_unknown_class::<m::Machine>(&ctx)?).await;
        "machine.create.rejects_empty_class", "CreateMachine with an empty class returns InvalidArgument",
        InvalidArgument, "CreateMachine with an empty class",
        |ctx| ctx.try_create_machine(with_spec::<m::Machine>(&ctx, |s| s.class = String::new())?).await;
        "machine.create.rejects_invalid_power",
        "CreateMachine with a power value outside the enum returns InvalidArgument",
        InvalidArgument, "CreateMachine with power 7",
        |ctx| ctx.try_create_machine(with_spec::<m::Machine>(&ctx, |s| s.power = 7)?).await;
        "machine.create.rejects_duplicate_volume_names",
        "CreateMachine with two volumes of the same name returns InvalidArgument",
        InvalidArgument, "CreateMachine with duplicate volume names",
        |ctx| {
            let volumes = vec![ctx.local_disk("disk"), ctx.local_disk("disk")];
            ctx.try_create_machine(with_spec::<m::Machine>(&ctx, |s| s.volumes = volumes)?).await
        };
        "machine.create.rejects_duplicate_nic_names",
        "CreateMachine with two NICs of the same name returns InvalidArgument",
        InvalidArgument, "CreateMachine with duplicate NIC names",
        |ctx| {
            let nics = vec![ctx.nic("eth"), ctx.nic("eth")];
            ctx.try_create_machine(with_spec::<m::Machine>(&ctx, |s| s.network_interfaces = nics)?).await
        };
        "machine.create.rejects_unnamed_volume",
        "CreateMachine with a volume without a name returns InvalidArgument",
        InvalidArgument, "CreateMachine with an unnamed volume",
        |ctx| {
            let volumes = vec![ctx.local_disk("")];
            ctx.try_create_machine(with_spec::<m::Machine>(&ctx, |s| s.volumes = volumes)?).await
        };
        "machine.create.rejects_volume_without_source",
        "CreateMachine with a volume that has neither local_disk nor connection returns InvalidArgument",
        InvalidArgument, "CreateMachine with a sourceless volume",
        |ctx| {
            let mut volume = ctx.local_disk("empty");
            volume.local_disk = None;
            ctx.try_create_machine(with_spec::<m::Machine>(&ctx, |s| s.volumes = vec![volume])?).await
        };
    }
    case!(
        v,
        "machine.create.powered_off",
        "a machine created with power OFF never reports RUNNING and leaves PENDING",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("template has spec")?.power = Power::Off as i32;
            let (id, _) = ctx.create_machine(spec).await?;
            let mm = ctx
                .wait_machine_status(&id, "to leave PENDING", |s| s.state != PENDING)
                .await?;
            let st = status_of(&mm)?.state;
            ensure!(
                st != RUNNING,
                "a machine created powered off reports RUNNING"
            );
            ensure!(
                spec_of(&mm)?.power == Power::Off as i32,
                "spec.power is not OFF"
            );
            pass()
        }
    );
}

pub(super) fn annotations_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ annotations
    case!(
        v,
        "machine.annotations.replaced_whole",
        "UpdateMachineAnnotations replaces the whole map (old keys disappear)",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.metadata.as_mut().context("metadata")?.annotations =
                map(&[("old", "1"), ("keep", "a")]);
            let (id, _) = ctx.create_machine(spec).await?;
            let want = map(&[("keep", "b"), ("new", "2")]);
            expect_ok(
                annotate(&ctx, &id, want.clone()).await,
                "UpdateMachineAnnotations",
            )?;
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(
                got == want,
                "annotations are {got:?}, want exactly {want:?}"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.update_listed",
        "annotations set by UpdateMachineAnnotations are listed verbatim",
        |ctx| {
            let id = ctx.new_machine().await?;
            let want = map(&[("conformance.example/a", "x y z")]);
            expect_ok(
                annotate(&ctx, &id, want.clone()).await,
                "UpdateMachineAnnotations",
            )?;
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(got == want, "annotations are {got:?}, want {want:?}");
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.cleared_by_empty_map",
        "UpdateMachineAnnotations with an empty map removes every annotation",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.metadata.as_mut().context("metadata")?.annotations = map(&[("a", "1")]);
            let (id, _) = ctx.create_machine(spec).await?;
            expect_ok(
                annotate(&ctx, &id, HashMap::new()).await,
                "UpdateMachineAnnotations {}",
            )?;
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(got.is_empty(), "annotations are {got:?} after clearing");
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.labels_untouched",
        "UpdateMachineAnnotations does not change labels",
        |ctx| {
            let (id, want) = labelled::<m::Machine>(&ctx, &[("stay", "here")]).await?;
            expect_ok(
                annotate(&ctx, &id, map(&[("x", "y")])).await,
                "UpdateMachineAnnotations",
            )?;
            let md = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?;
            ensure!(md.labels == want, "labels changed to {:?}", md.labels);
            ensure!(
                md.annotations == map(&[("x", "y")]),
                "annotations are {:?}",
                md.annotations
            );
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.idempotent",
        "repeating UpdateMachineAnnotations with the same map is OK and yields that map",
        |ctx| {
            let id = ctx.new_machine().await?;
            let want = map(&[("r", "1")]);
            for i in 0..ctx.params().idempotent_count {
                expect_ok(
                    annotate(&ctx, &id, want.clone()).await,
                    &format!("UpdateMachineAnnotations #{i}"),
                )?;
            }
            let got = ctx
                .must_machine(&id)
                .await?
                .metadata
                .context("no metadata")?
                .annotations;
            ensure!(got == want, "annotations are {got:?}, want {want:?}");
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.annotations.unknown_id_not_found", "UpdateMachineAnnotations of an unknown id returns NotFound",
        NotFound, "UpdateMachineAnnotations unknown id",
        |ctx| annotate(&ctx, &unknown_id(), map(&[("a", "b")])).await;
        "machine.annotations.empty_id_invalid", "UpdateMachineAnnotations with an empty machine_id returns InvalidArgument",
        InvalidArgument, "UpdateMachineAnnotations empty id",
        |ctx| annotate(&ctx, "", map(&[("a", "b")])).await;
    }
}
