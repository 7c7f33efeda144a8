//! The machine RPCs the machine cases call (each under the per-call deadline) and the small
//! readers they share.

use std::collections::HashMap;

use anyhow::Context as _;
use iri_spec::machine::v1alpha1::{self as m, MachineState};

pub(super) use crate::cases::shared::{ids_of, with_spec};
use crate::ctx::{Ctx, expect_ok};

pub(super) const RUNNING: i32 = MachineState::MachineRunning as i32;
pub(super) const PENDING: i32 = MachineState::MachinePending as i32;
pub(super) const TERMINATING: i32 = MachineState::MachineTerminating as i32;

pub(super) fn status_of(mm: &m::Machine) -> anyhow::Result<&m::MachineStatus> {
    mm.status.as_ref().context("machine has no status")
}

pub(super) fn spec_of(mm: &m::Machine) -> anyhow::Result<&m::MachineSpec> {
    mm.spec.as_ref().context("machine has no spec")
}

pub(super) async fn status(ctx: &Ctx) -> anyhow::Result<m::StatusResponse> {
    let mut c = ctx.mc()?;
    expect_ok(ctx.rpc(c.status(m::StatusRequest {})).await, "Status")
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

/// A RUNNING machine of the default template, powered off (UpdateMachinePower OFF, which
/// must succeed); its id.
pub(crate) async fn powered_off_machine(ctx: &Ctx) -> anyhow::Result<String> {
    let id = ctx.running_machine().await?;
    let off = m::Power::Off as i32;
    expect_ok(power(ctx, &id, off).await, "UpdateMachinePower OFF")?;
    Ok(id)
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

pub(crate) async fn detach_volume(ctx: &Ctx, id: &str, name: &str) -> Result<(), tonic::Status> {
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

pub(super) async fn update_volume(
    ctx: &Ctx,
    id: &str,
    v: Option<m::Volume>,
) -> Result<(), tonic::Status> {
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

pub(super) async fn detach_nic(ctx: &Ctx, id: &str, name: &str) -> Result<(), tonic::Status> {
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

pub(crate) async fn exec(ctx: &Ctx, id: &str) -> Result<m::ExecResponse, tonic::Status> {
    let mut c = ctx
        .mc()
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ctx.rpc(c.exec(m::ExecRequest {
        machine_id: id.to_owned(),
    }))
    .await
}

/// Events about machine `id`, waiting until at least one exists.
pub(crate) async fn wait_events_of(
    ctx: &Ctx,
    id: &str,
) -> anyhow::Result<Vec<iri_spec::event::v1alpha1::Event>> {
    crate::cases::shared::wait_events_of::<m::Machine>(ctx, id).await
}

pub(super) fn volume_names(mm: &m::Machine) -> Vec<String> {
    mm.spec
        .as_ref()
        .map(|s| s.volumes.iter().map(|v| v.name.clone()).collect())
        .unwrap_or_default()
}

pub(super) fn nic_names(mm: &m::Machine) -> Vec<String> {
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

pub(super) fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Checks that the volume `name` reaches status ATTACHED with a handle.
pub(super) async fn wait_volume_attached(ctx: &Ctx, id: &str, name: &str) -> anyhow::Result<()> {
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

pub(super) async fn wait_nic_attached(ctx: &Ctx, id: &str, name: &str) -> anyhow::Result<()> {
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
