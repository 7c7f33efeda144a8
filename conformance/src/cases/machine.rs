//! Cases for `machine.v1alpha1.MachineRuntime`: every RPC, its error codes, idempotency,
//! concurrency and the state machine (reference §1.4, §2, §7.4).

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, bail, ensure};
use iri_spec::machine::v1alpha1::{self as m, MachineState, Power};
use tonic::Code;

use crate::{
    case::{Case, Profile, Service, pass, skip_gone_at_once},
    ctx::{Ctx, expect_code, expect_error, expect_ok, meta_id, plausible_ns, unknown_id},
};

const RUNNING: i32 = MachineState::MachineRunning as i32;
const PENDING: i32 = MachineState::MachinePending as i32;
const TERMINATING: i32 = MachineState::MachineTerminating as i32;

macro_rules! case {
    ($v:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(Case::new(
            $id,
            Service::Machine,
            Profile::Core,
            $desc,
            |$ctx: Ctx| async move { $body },
        ));
    };
}

fn status_of(mm: &m::Machine) -> anyhow::Result<&m::MachineStatus> {
    mm.status.as_ref().context("machine has no status")
}

fn spec_of(mm: &m::Machine) -> anyhow::Result<&m::MachineSpec> {
    mm.spec.as_ref().context("machine has no spec")
}

async fn status(ctx: &Ctx) -> anyhow::Result<m::StatusResponse> {
    let mut c = ctx.mc()?;
    expect_ok(ctx.rpc(c.status(m::StatusRequest {})).await, "Status")
}

async fn version(ctx: &Ctx, v: &str) -> anyhow::Result<m::VersionResponse> {
    let mut c = ctx.mc()?;
    expect_ok(
        ctx.rpc(c.version(m::VersionRequest {
            version: v.to_owned(),
        }))
        .await,
        "Version",
    )
}

pub(crate) async fn annotate(
    ctx: &Ctx,
    id: &str,
    annotations: HashMap<String, String>,
) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(
        c.update_machine_annotations(m::UpdateMachineAnnotationsRequest {
            machine_id: id.to_owned(),
            annotations,
        }),
    )
    .await
    .map(|_| ())
}

pub(crate) async fn power(ctx: &Ctx, id: &str, p: i32) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(c.update_machine_power(m::UpdateMachinePowerRequest {
        machine_id: id.to_owned(),
        power: p,
    }))
    .await
    .map(|_| ())
}

pub(crate) async fn attach_volume(
    ctx: &Ctx,
    id: &str,
    v: Option<m::Volume>,
) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(c.attach_volume(m::AttachVolumeRequest {
        machine_id: id.to_owned(),
        volume: v,
    }))
    .await
    .map(|_| ())
}

async fn detach_volume(ctx: &Ctx, id: &str, name: &str) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(c.detach_volume(m::DetachVolumeRequest {
        machine_id: id.to_owned(),
        name: name.to_owned(),
    }))
    .await
    .map(|_| ())
}

async fn update_volume(ctx: &Ctx, id: &str, v: Option<m::Volume>) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(c.update_volume(m::UpdateVolumeRequest {
        machine_id: id.to_owned(),
        volume: v,
    }))
    .await
    .map(|_| ())
}

pub(crate) async fn attach_nic(
    ctx: &Ctx,
    id: &str,
    n: Option<m::NetworkInterface>,
) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(
        c.attach_network_interface(m::AttachNetworkInterfaceRequest {
            machine_id: id.to_owned(),
            network_interface: n,
        }),
    )
    .await
    .map(|_| ())
}

async fn detach_nic(ctx: &Ctx, id: &str, name: &str) -> Result<(), tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(
        c.detach_network_interface(m::DetachNetworkInterfaceRequest {
            machine_id: id.to_owned(),
            name: name.to_owned(),
        }),
    )
    .await
    .map(|_| ())
}

async fn exec(ctx: &Ctx, id: &str) -> Result<m::ExecResponse, tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(c.exec(m::ExecRequest {
        machine_id: id.to_owned(),
    }))
    .await
}

pub(crate) async fn events(
    ctx: &Ctx,
    f: m::EventFilter,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    let mut c = ctx.mc()?;
    Ok(expect_ok(
        ctx.rpc(c.list_events(m::ListEventsRequest { filter: Some(f) }))
            .await,
        "ListEvents",
    )?
    .events)
}

/// Events about machine `id` (filtered by the case labels), waiting until at least one exists.
pub(crate) async fn wait_events_of(
    ctx: &Ctx,
    id: &str,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    ctx.wait_until(&format!("an event about machine {id}"), || async {
        let evs = events(
            ctx,
            m::EventFilter {
                id: id.to_owned(),
                ..Default::default()
            },
        )
        .await?;
        let about: Vec<_> = evs
            .into_iter()
            .filter(|e| {
                e.spec
                    .as_ref()
                    .and_then(|s| s.involved_object_meta.as_ref())
                    .is_some_and(|md| md.id == id)
            })
            .collect();
        if about.is_empty() {
            Ok(Err("no events".to_owned()))
        } else {
            Ok(Ok(about))
        }
    })
    .await
}

fn volume_names(mm: &m::Machine) -> Vec<String> {
    mm.spec
        .as_ref()
        .map(|s| s.volumes.iter().map(|v| v.name.clone()).collect())
        .unwrap_or_default()
}

fn nic_names(mm: &m::Machine) -> Vec<String> {
    mm.spec
        .as_ref()
        .map(|s| {
            s.network_interfaces
                .iter()
                .map(|v| v.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn ids_of(list: &[m::Machine]) -> Vec<String> {
    list.iter()
        .filter_map(|x| x.metadata.as_ref().map(|md| md.id.clone()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Checks that the volume `name` reaches status ATTACHED with a handle.
async fn wait_volume_attached(ctx: &Ctx, id: &str, name: &str) -> anyhow::Result<()> {
    ctx.wait_machine_status(
        id,
        &format!("to report volume {name} ATTACHED with a handle"),
        |s| {
            s.volumes.iter().any(|v| {
                v.name == name
                    && !v.handle.is_empty()
                    && v.state == m::VolumeState::VolumeAttached as i32
            })
        },
    )
    .await?;
    Ok(())
}

async fn wait_nic_attached(ctx: &Ctx, id: &str, name: &str) -> anyhow::Result<()> {
    ctx.wait_machine_status(
        id,
        &format!("to report NIC {name} ATTACHED with a handle"),
        |s| {
            s.network_interfaces.iter().any(|v| {
                v.name == name
                    && !v.handle.is_empty()
                    && v.state == m::NetworkInterfaceState::NetworkInterfaceAttached as i32
            })
        },
    )
    .await?;
    Ok(())
}

/// All machine cases.
#[allow(clippy::too_many_lines)]
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // ------------------------------------------------------------ Version
    case!(
        v,
        "machine.version.name_and_version_set",
        "Version returns a non-empty runtime_name and runtime_version",
        |ctx| {
            let r = version(&ctx, "").await?;
            ensure!(!r.runtime_name.is_empty(), "runtime_name is empty");
            ensure!(!r.runtime_version.is_empty(), "runtime_version is empty");
            pass()
        }
    );
    case!(
        v,
        "machine.version.any_request_version",
        "Version answers OK whatever the request's version field says (Go clients send \"\")",
        |ctx| {
            let r = version(&ctx, "v9.9.9-conformance").await?;
            ensure!(!r.runtime_name.is_empty(), "runtime_name is empty");
            pass()
        }
    );
    case!(
        v,
        "machine.version.stable",
        "two Version calls return the same runtime_name and runtime_version",
        |ctx| {
            let (a, b) = (version(&ctx, "").await?, version(&ctx, "").await?);
            ensure!(a == b, "Version changed between calls: {a:?} vs {b:?}");
            ensure!(!a.runtime_name.is_empty(), "runtime_name is empty");
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
    case!(
        v,
        "machine.create.rejects_missing_spec",
        "CreateMachine with a machine without spec returns InvalidArgument",
        |ctx| {
            let res = ctx
                .try_create_machine(m::Machine {
                    metadata: Some(ctx.metadata(&[])),
                    spec: None,
                    status: None,
                })
                .await;
            expect_code(res, Code::InvalidArgument, "CreateMachine without spec")?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.unknown_class_fails",
        "CreateMachine with a class Status does not report fails (any code; the exact code is machine.create.rejects_unknown_class)",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("template has spec")?.class =
                "conformance-no-such-class".to_owned();
            expect_error(
                ctx.try_create_machine(spec).await,
                "CreateMachine with an unknown class",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_unknown_class",
        "CreateMachine with a class Status does not report returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("template has spec")?.class =
                "conformance-no-such-class".to_owned();
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with an unknown class",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_empty_class",
        "CreateMachine with an empty class returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("template has spec")?.class = String::new();
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with an empty class",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_invalid_power",
        "CreateMachine with a power value outside the enum returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("template has spec")?.power = 7;
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with power 7",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_duplicate_volume_names",
        "CreateMachine with two volumes of the same name returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let s = spec.spec.as_mut().context("template has spec")?;
            s.volumes = vec![ctx.local_disk("disk"), ctx.local_disk("disk")];
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with duplicate volume names",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_duplicate_nic_names",
        "CreateMachine with two NICs of the same name returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let s = spec.spec.as_mut().context("template has spec")?;
            s.network_interfaces = vec![ctx.nic("eth"), ctx.nic("eth")];
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with duplicate NIC names",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_unnamed_volume",
        "CreateMachine with a volume without a name returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            spec.spec.as_mut().context("template has spec")?.volumes = vec![ctx.local_disk("")];
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with an unnamed volume",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.create.rejects_volume_without_source",
        "CreateMachine with a volume that has neither local_disk nor connection returns InvalidArgument",
        |ctx| {
            let mut spec = ctx.machine_spec(&[])?;
            let mut vol = ctx.local_disk("empty");
            vol.local_disk = None;
            spec.spec.as_mut().context("template has spec")?.volumes = vec![vol];
            expect_code(
                ctx.try_create_machine(spec).await,
                Code::InvalidArgument,
                "CreateMachine with a sourceless volume",
            )?;
            pass()
        }
    );
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

    // ------------------------------------------------------------ state machine
    case!(
        v,
        "machine.state.pending_to_running",
        "a powered-on machine reaches RUNNING within the state budget",
        |ctx| {
            ctx.running_machine().await?;
            pass()
        }
    );
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
            let id = ctx.running_machine().await?;
            expect_ok(
                power(&ctx, &id, Power::Off as i32).await,
                "UpdateMachinePower OFF",
            )?;
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
            let id = ctx.running_machine().await?;
            expect_ok(
                power(&ctx, &id, Power::Off as i32).await,
                "UpdateMachinePower OFF",
            )?;
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
            let id = ctx.running_machine().await?;
            expect_ok(
                power(&ctx, &id, Power::Off as i32).await,
                "UpdateMachinePower OFF",
            )?;
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
    case!(
        v,
        "machine.power.unknown_id_not_found",
        "UpdateMachinePower of an unknown id returns NotFound",
        |ctx| {
            expect_code(
                power(&ctx, &unknown_id(), Power::Off as i32).await,
                Code::NotFound,
                "UpdateMachinePower unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.power.empty_id_invalid",
        "UpdateMachinePower with an empty machine_id returns InvalidArgument",
        |ctx| {
            expect_code(
                power(&ctx, "", Power::Off as i32).await,
                Code::InvalidArgument,
                "UpdateMachinePower empty id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.power.invalid_value",
        "UpdateMachinePower with a value outside the enum returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                power(&ctx, &id, 9).await,
                Code::InvalidArgument,
                "UpdateMachinePower power=9",
            )?;
            pass()
        }
    );

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
            let spec = ctx.machine_spec(&[("stay", "here")])?;
            let want = spec
                .metadata
                .as_ref()
                .map(|md| md.labels.clone())
                .unwrap_or_default();
            let (id, _) = ctx.create_machine(spec).await?;
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
    case!(
        v,
        "machine.annotations.unknown_id_not_found",
        "UpdateMachineAnnotations of an unknown id returns NotFound",
        |ctx| {
            expect_code(
                annotate(&ctx, &unknown_id(), map(&[("a", "b")])).await,
                Code::NotFound,
                "UpdateMachineAnnotations unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.annotations.empty_id_invalid",
        "UpdateMachineAnnotations with an empty machine_id returns InvalidArgument",
        |ctx| {
            expect_code(
                annotate(&ctx, "", map(&[("a", "b")])).await,
                Code::InvalidArgument,
                "UpdateMachineAnnotations empty id",
            )?;
            pass()
        }
    );

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

    // ------------------------------------------------------------ volumes on machines
    case!(
        v,
        "machine.volume.attach_in_spec",
        "AttachVolume adds the volume to spec.volumes",
        |ctx| {
            let id = ctx.running_machine().await?;
            let vol = ctx.local_disk("data");
            expect_ok(
                attach_volume(&ctx, &id, Some(vol.clone())).await,
                "AttachVolume",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes.contains(&vol),
                "spec.volumes {:?} lacks {vol:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_status_by_name",
        "an attached volume is reported in status by name with a non-empty handle",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("data"))).await,
                "AttachVolume",
            )?;
            ctx.wait_machine_status(&id, "to report volume data with a handle", |s| {
                s.volumes
                    .iter()
                    .any(|v| v.name == "data" && !v.handle.is_empty())
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_becomes_attached",
        "an attached volume reaches VOLUME_ATTACHED within the state budget",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("data"))).await,
                "AttachVolume",
            )?;
            wait_volume_attached(&ctx, &id, "data").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_connection",
        "a connection (remote) volume attaches and is reported with a handle",
        |ctx| {
            let id = ctx.running_machine().await?;
            let vol = ctx.connection_volume("remote", "pool/image-1");
            expect_ok(
                attach_volume(&ctx, &id, Some(vol.clone())).await,
                "AttachVolume",
            )?;
            wait_volume_attached(&ctx, &id, "remote").await?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes.contains(&vol),
                "spec.volumes lacks the connection volume as sent"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_duplicate_already_exists",
        "AttachVolume of a name that is already attached returns AlreadyExists",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("dup"))).await,
                "AttachVolume",
            )?;
            expect_code(
                attach_volume(&ctx, &id, Some(ctx.local_disk("dup"))).await,
                Code::AlreadyExists,
                "second AttachVolume dup",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                volume_names(&mm) == vec!["dup".to_owned()],
                "spec.volumes is {:?}",
                volume_names(&mm)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_unknown_machine",
        "AttachVolume on an unknown machine returns NotFound",
        |ctx| {
            expect_code(
                attach_volume(&ctx, &unknown_id(), Some(ctx.local_disk("x"))).await,
                Code::NotFound,
                "AttachVolume unknown machine",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_empty_machine_id",
        "AttachVolume with an empty machine_id returns InvalidArgument",
        |ctx| {
            expect_code(
                attach_volume(&ctx, "", Some(ctx.local_disk("x"))).await,
                Code::InvalidArgument,
                "AttachVolume empty id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_missing_volume",
        "AttachVolume without a volume returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                attach_volume(&ctx, &id, None).await,
                Code::InvalidArgument,
                "AttachVolume{volume: None}",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_empty_name",
        "AttachVolume of a volume with an empty name returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                attach_volume(&ctx, &id, Some(ctx.local_disk(""))).await,
                Code::InvalidArgument,
                "AttachVolume unnamed",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.detach_removes",
        "DetachVolume removes the volume from spec and status",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("data"))).await,
                "AttachVolume",
            )?;
            wait_volume_attached(&ctx, &id, "data").await?;
            expect_ok(detach_volume(&ctx, &id, "data").await, "DetachVolume")?;
            let mm = ctx
                .wait_machine(&id, "to drop volume data from status", |mm| {
                    mm.and_then(|mm| mm.status.as_ref())
                        .is_some_and(|s| s.volumes.iter().all(|v| v.name != "data"))
                })
                .await?
                .context("machine vanished")?;
            ensure!(
                volume_names(&mm).is_empty(),
                "spec.volumes still has {:?}",
                volume_names(&mm)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.detach_unknown_name",
        "DetachVolume of a name that is not attached returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                detach_volume(&ctx, &id, "nope").await,
                Code::NotFound,
                "DetachVolume unknown name",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.detach_twice",
        "a second DetachVolume of the same name returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("once"))).await,
                "AttachVolume",
            )?;
            expect_ok(detach_volume(&ctx, &id, "once").await, "first DetachVolume")?;
            expect_code(
                detach_volume(&ctx, &id, "once").await,
                Code::NotFound,
                "second DetachVolume",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.detach_unknown_machine",
        "DetachVolume on an unknown machine returns NotFound",
        |ctx| {
            expect_code(
                detach_volume(&ctx, &unknown_id(), "x").await,
                Code::NotFound,
                "DetachVolume unknown machine",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.detach_empty_name",
        "DetachVolume with an empty name returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                detach_volume(&ctx, &id, "").await,
                Code::InvalidArgument,
                "DetachVolume empty name",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.reattach",
        "a volume can be attached again after it was detached",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("again"))).await,
                "AttachVolume",
            )?;
            expect_ok(detach_volume(&ctx, &id, "again").await, "DetachVolume")?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("again"))).await,
                "AttachVolume again",
            )?;
            wait_volume_attached(&ctx, &id, "again").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.update_in_spec",
        "UpdateVolume replaces the spec entry of that name",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.connection_volume("grow", "pool/a"))).await,
                "AttachVolume",
            )?;
            let mut vol = ctx.connection_volume("grow", "pool/a");
            if let Some(c) = vol.connection.as_mut() {
                c.effective_storage_bytes *= 2;
            }
            expect_ok(
                update_volume(&ctx, &id, Some(vol.clone())).await,
                "UpdateVolume",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes == vec![vol],
                "spec.volumes is {:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.update_unknown_name",
        "UpdateVolume of a name that is not attached returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                update_volume(&ctx, &id, Some(ctx.local_disk("nope"))).await,
                Code::NotFound,
                "UpdateVolume unknown name",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.update_unknown_machine",
        "UpdateVolume on an unknown machine returns NotFound",
        |ctx| {
            expect_code(
                update_volume(&ctx, &unknown_id(), Some(ctx.local_disk("x"))).await,
                Code::NotFound,
                "UpdateVolume unknown machine",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.update_missing_volume",
        "UpdateVolume without a volume returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                update_volume(&ctx, &id, None).await,
                Code::InvalidArgument,
                "UpdateVolume{volume: None}",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.update_idempotent",
        "repeating UpdateVolume with the same volume is OK",
        |ctx| {
            let id = ctx.new_machine().await?;
            let vol = ctx.connection_volume("same", "pool/s");
            expect_ok(
                attach_volume(&ctx, &id, Some(vol.clone())).await,
                "AttachVolume",
            )?;
            for i in 0..ctx.params().idempotent_count {
                expect_ok(
                    update_volume(&ctx, &id, Some(vol.clone())).await,
                    &format!("UpdateVolume #{i}"),
                )?;
            }
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes == vec![vol],
                "spec.volumes is {:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.parallel_attach",
        "parallel AttachVolume calls with distinct names all end up in spec",
        |ctx| {
            let id = ctx.running_machine().await?;
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|i| {
            let ctx = ctx.clone();
            let id = id.clone();
            async move { attach_volume(&ctx, &id, Some(ctx.local_disk(&format!("p{i}")))).await }
        });
            for (i, r) in futures::future::join_all(futs)
                .await
                .into_iter()
                .enumerate()
            {
                expect_ok(r, &format!("AttachVolume p{i}"))?;
            }
            let mm = ctx.must_machine(&id).await?;
            let mut names = volume_names(&mm);
            names.sort();
            let mut want: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            want.sort();
            ensure!(names == want, "spec.volumes names {names:?}, want {want:?}");
            pass()
        }
    );

    // ------------------------------------------------------------ NICs
    case!(
        v,
        "machine.nic.attach_in_spec",
        "AttachNetworkInterface adds the NIC to spec.network_interfaces as sent",
        |ctx| {
            let id = ctx.running_machine().await?;
            let nic = ctx.nic("eth1");
            expect_ok(
                attach_nic(&ctx, &id, Some(nic.clone())).await,
                "AttachNetworkInterface",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.network_interfaces.contains(&nic),
                "spec.network_interfaces {:?} lacks {nic:?}",
                spec_of(&mm)?.network_interfaces
            );
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_status_by_name",
        "an attached NIC is reported in status by name with a non-empty handle",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth1"))).await,
                "AttachNetworkInterface",
            )?;
            ctx.wait_machine_status(&id, "to report NIC eth1 with a handle", |s| {
                s.network_interfaces
                    .iter()
                    .any(|n| n.name == "eth1" && !n.handle.is_empty())
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_becomes_attached",
        "an attached NIC reaches NETWORK_INTERFACE_ATTACHED within the state budget",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth1"))).await,
                "AttachNetworkInterface",
            )?;
            wait_nic_attached(&ctx, &id, "eth1").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_duplicate_already_exists",
        "AttachNetworkInterface of a name already attached returns AlreadyExists",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("dup"))).await,
                "AttachNetworkInterface",
            )?;
            expect_code(
                attach_nic(&ctx, &id, Some(ctx.nic("dup"))).await,
                Code::AlreadyExists,
                "second AttachNetworkInterface dup",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                nic_names(&mm) == vec!["dup".to_owned()],
                "spec.network_interfaces is {:?}",
                nic_names(&mm)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_unknown_machine",
        "AttachNetworkInterface on an unknown machine returns NotFound",
        |ctx| {
            expect_code(
                attach_nic(&ctx, &unknown_id(), Some(ctx.nic("x"))).await,
                Code::NotFound,
                "AttachNetworkInterface unknown machine",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_missing_nic",
        "AttachNetworkInterface without a network_interface returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                attach_nic(&ctx, &id, None).await,
                Code::InvalidArgument,
                "AttachNetworkInterface{None}",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_empty_name",
        "AttachNetworkInterface of a NIC with an empty name returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                attach_nic(&ctx, &id, Some(ctx.nic(""))).await,
                Code::InvalidArgument,
                "AttachNetworkInterface unnamed",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.detach_removes",
        "DetachNetworkInterface removes the NIC from spec and status",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth1"))).await,
                "AttachNetworkInterface",
            )?;
            wait_nic_attached(&ctx, &id, "eth1").await?;
            expect_ok(
                detach_nic(&ctx, &id, "eth1").await,
                "DetachNetworkInterface",
            )?;
            let mm = ctx
                .wait_machine(&id, "to drop NIC eth1 from status", |mm| {
                    mm.and_then(|mm| mm.status.as_ref())
                        .is_some_and(|s| s.network_interfaces.iter().all(|n| n.name != "eth1"))
                })
                .await?
                .context("machine vanished")?;
            ensure!(
                nic_names(&mm).is_empty(),
                "spec still has {:?}",
                nic_names(&mm)
            );
            pass()
        }
    );
    case!(
        v,
        "machine.nic.detach_unknown_name",
        "DetachNetworkInterface of a name that is not attached returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                detach_nic(&ctx, &id, "nope").await,
                Code::NotFound,
                "DetachNetworkInterface unknown name",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.detach_unknown_machine",
        "DetachNetworkInterface on an unknown machine returns NotFound",
        |ctx| {
            expect_code(
                detach_nic(&ctx, &unknown_id(), "x").await,
                Code::NotFound,
                "DetachNetworkInterface unknown machine",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.detach_empty_name",
        "DetachNetworkInterface with an empty name returns InvalidArgument",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_code(
                detach_nic(&ctx, &id, "").await,
                Code::InvalidArgument,
                "DetachNetworkInterface empty name",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.detach_twice",
        "a second DetachNetworkInterface of the same name returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("once"))).await,
                "AttachNetworkInterface",
            )?;
            expect_ok(
                detach_nic(&ctx, &id, "once").await,
                "first DetachNetworkInterface",
            )?;
            expect_code(
                detach_nic(&ctx, &id, "once").await,
                Code::NotFound,
                "second DetachNetworkInterface",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_empty_machine_id",
        "AttachNetworkInterface with an empty machine_id returns InvalidArgument",
        |ctx| {
            expect_code(
                attach_nic(&ctx, "", Some(ctx.nic("x"))).await,
                Code::InvalidArgument,
                "AttachNetworkInterface empty id",
            )?;
            pass()
        }
    );

    // ------------------------------------------------------------ DeleteMachine
    case!(
        v,
        "machine.delete.unknown_id_not_found",
        "DeleteMachine of an unknown id returns NotFound",
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
        "machine.delete.empty_id_invalid",
        "DeleteMachine with an empty machine_id returns InvalidArgument",
        |ctx| {
            expect_code(
                ctx.delete_machine("").await,
                Code::InvalidArgument,
                "DeleteMachine empty id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.delete.terminating_listed",
        "a machine still listed after DeleteMachine has deleted_at set and state TERMINATING",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            let Some(mm) = ctx.get_machine(&id).await? else {
                return skip_gone_at_once("machine", "the terminating phase");
            };
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
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            let Some(mm) = ctx.get_machine(&id).await? else {
                return skip_gone_at_once("machine", "deleted_at");
            };
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
    case!(
        v,
        "machine.delete.eventually_gone",
        "a deleted machine disappears from ListMachines within the state budget",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            ctx.wait_machine_gone(&id).await?;
            pass()
        }
    );
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
    case!(
        v,
        "machine.delete.not_found_after_gone",
        "DeleteMachine of a machine that is gone returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            ctx.wait_machine_gone(&id).await?;
            expect_code(
                ctx.delete_machine(&id).await,
                Code::NotFound,
                "DeleteMachine after gone",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.delete.others_untouched",
        "deleting one machine leaves another machine listed and unchanged",
        |ctx| {
            let a = ctx.new_machine().await?;
            let b = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&a).await, "DeleteMachine")?;
            ctx.wait_machine_gone(&a).await?;
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
    case!(
        v,
        "machine.delete.idempotent",
        "repeated DeleteMachine calls return only OK or NotFound and the machine ends up gone",
        |ctx| {
            let id = ctx.new_machine().await?;
            for i in 0..ctx.params().idempotent_count {
                match ctx.delete_machine(&id).await {
                    Ok(()) => {}
                    Err(st) if st.code() == Code::NotFound => {
                        ensure!(i > 0, "first DeleteMachine returned NotFound");
                        ensure!(
                            ctx.get_machine(&id).await?.is_none(),
                            "DeleteMachine #{i} returned NotFound while the machine is listed"
                        );
                    }
                    Err(st) => bail!("DeleteMachine #{i}: {:?}: {}", st.code(), st.message()),
                }
            }
            ctx.wait_machine_gone(&id).await?;
            pass()
        }
    );
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
    case!(
        v,
        "machine.exec.unknown_id_not_found",
        "Exec on an unknown machine returns NotFound",
        |ctx| {
            expect_code(
                exec(&ctx, &unknown_id()).await,
                Code::NotFound,
                "Exec unknown id",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.exec.empty_id_invalid",
        "Exec with an empty machine_id returns InvalidArgument",
        |ctx| {
            expect_code(exec(&ctx, "").await, Code::InvalidArgument, "Exec empty id")?;
            pass()
        }
    );

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

    v
}
