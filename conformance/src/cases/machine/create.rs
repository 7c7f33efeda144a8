//! Machine cases: CreateMachine: the response, what the runtime keeps of the request, and the
//! requests it must reject.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use iri_spec::machine::v1alpha1::{self as m, Power};
use tonic::Code;

use crate::{
    case::{Case, pass},
    ctx::{expect_code, expect_error, plausible_ns, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ CreateMachine
    case!(
        v,
        "machine.create.returns_id",
        "CreateMachine returns the machine with a non-empty metadata.id",
        |ctx| {
            ctx.new_machine().await?;
            pass()
        }
    );
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
            let id = ctx.new_machine().await?;
            let mm = ctx.must_machine(&id).await?;
            let t = mm.metadata.as_ref().context("no metadata")?.created_at;
            ensure!(
                plausible_ns(t, Duration::from_secs(600)),
                "created_at {t} is not within 10 min of now in Unix ns"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.create.labels_preserved",
        "labels given at create are listed verbatim",
        |ctx| {
            let spec = ctx.machine_spec(&[("conformance.example/app", "web"), ("tier", "")])?;
            let want = spec
                .metadata
                .as_ref()
                .map(|m| m.labels.clone())
                .unwrap_or_default();
            let (id, _) = ctx.create_machine(spec).await?;
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
    case!(
        v,
        "machine.create.listed_with_same_id",
        "ListMachines by id returns the machine under the id CreateMachine returned",
        |ctx| {
            let id = ctx.new_machine().await?;
            ctx.must_machine(&id).await?;
            pass()
        }
    );
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
    case!(
        v,
        "machine.create.rejects_missing_machine",
        "CreateMachine without a machine returns InvalidArgument",
        |ctx| {
            let mut c = ctx.mc()?;
            let res = ctx
                .rpc(c.create_machine(m::CreateMachineRequest { machine: None }))
                .await;
            if let Ok(r) = &res
                && let Some(id) = r
                    .machine
                    .as_ref()
                    .and_then(|x| x.metadata.as_ref())
                    .map(|md| md.id.clone())
            {
                let _ = ctx.delete_machine(&id).await;
            }
            expect_code(res, Code::InvalidArgument, "CreateMachine{machine: None}")?;
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.create.rejects_missing_spec", "CreateMachine with a machine without spec returns InvalidArgument",
        InvalidArgument, "CreateMachine without spec",
        |ctx| ctx.try_create_machine(m::Machine { metadata: Some(ctx.metadata(&[])), spec: None, status: None}).await;
    }
    case!(
        v,
        "machine.create.unknown_class_fails",
        "CreateMachine with a class Status does not report fails (any code; the exact code is machine.create.rejects_unknown_class)",
        |ctx| {
            let spec = template(&ctx, |s| s.class = NO_SUCH_CLASS.to_owned())?;
            expect_error(
                ctx.try_create_machine(spec).await,
                "CreateMachine with an unknown class",
            )?;
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.create.rejects_unknown_class",
        "CreateMachine with a class Status does not report returns InvalidArgument",
        InvalidArgument, "CreateMachine with an unknown class",
        |ctx| ctx.try_create_machine(template(&ctx, |s| s.class = NO_SUCH_CLASS.to_owned())?).await;
        "machine.create.rejects_empty_class", "CreateMachine with an empty class returns InvalidArgument",
        InvalidArgument, "CreateMachine with an empty class",
        |ctx| ctx.try_create_machine(template(&ctx, |s| s.class = String::new())?).await;
        "machine.create.rejects_invalid_power",
        "CreateMachine with a power value outside the enum returns InvalidArgument",
        InvalidArgument, "CreateMachine with power 7",
        |ctx| ctx.try_create_machine(template(&ctx, |s| s.power = 7)?).await;
        "machine.create.rejects_duplicate_volume_names",
        "CreateMachine with two volumes of the same name returns InvalidArgument",
        InvalidArgument, "CreateMachine with duplicate volume names",
        |ctx| {
            let volumes = vec![ctx.local_disk("disk"), ctx.local_disk("disk")];
            ctx.try_create_machine(template(&ctx, |s| s.volumes = volumes)?).await
        };
        "machine.create.rejects_duplicate_nic_names",
        "CreateMachine with two NICs of the same name returns InvalidArgument",
        InvalidArgument, "CreateMachine with duplicate NIC names",
        |ctx| {
            let nics = vec![ctx.nic("eth"), ctx.nic("eth")];
            ctx.try_create_machine(template(&ctx, |s| s.network_interfaces = nics)?).await
        };
        "machine.create.rejects_unnamed_volume",
        "CreateMachine with a volume without a name returns InvalidArgument",
        InvalidArgument, "CreateMachine with an unnamed volume",
        |ctx| {
            let volumes = vec![ctx.local_disk("")];
            ctx.try_create_machine(template(&ctx, |s| s.volumes = volumes)?).await
        };
        "machine.create.rejects_volume_without_source",
        "CreateMachine with a volume that has neither local_disk nor connection returns InvalidArgument",
        InvalidArgument, "CreateMachine with a sourceless volume",
        |ctx| {
            let mut volume = ctx.local_disk("empty");
            volume.local_disk = None;
            ctx.try_create_machine(template(&ctx, |s| s.volumes = vec![volume])?).await
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
