//! The machine RPCs the machine cases call (each under the per-call deadline) and the small
//! readers they share.

use std::collections::HashMap;

use anyhow::Context as _;
use iri_spec::{
    kind::Attachment,
    machine::v1alpha1::{self as m, MachineState, machine_runtime_client::MachineRuntimeClient},
};
use tonic::Status;

pub(super) use crate::cases::shared::{ids_of, with_spec};
use crate::{
    breaker::Guarded,
    ctx::{Ctx, expect_ok},
};

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

/// Runs one machine RPC under the per-call deadline, raw (no machine endpoint: Unavailable).
async fn call<T, Fut>(
    ctx: &Ctx,
    rpc: impl FnOnce(MachineRuntimeClient<Guarded>) -> Fut,
) -> Result<T, Status>
where
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let c = ctx.mc().map_err(|e| Status::unavailable(e.to_string()))?;
    ctx.rpc(rpc(c)).await
}

/// The machine RPCs on one machine that answer nothing to look at, as table rows:
/// `vis fn name(args) = method(Request { fields });` is `name(ctx, id, args)`, the RPC's raw
/// result for the request with `machine_id: id` and `fields`.
macro_rules! machine_rpcs {
    ($($vis:vis fn $name:ident($($arg:ident: $ty:ty),*) = $method:ident($req:ident { $($field:ident: $val:expr),* });)*) => {$(
        $vis async fn $name(ctx: &Ctx, id: &str, $($arg: $ty),*) -> Result<(), Status> {
            let req = m::$req { machine_id: id.to_owned(), $($field: $val),* };
            call(ctx, |mut c| async move { c.$method(req).await }).await.map(drop)
        }
    )*};
}

machine_rpcs! {
    pub(crate) fn annotate(annotations: HashMap<String, String>) = update_machine_annotations(UpdateMachineAnnotationsRequest { annotations: annotations });
    pub(crate) fn power(p: i32) = update_machine_power(UpdateMachinePowerRequest { power: p });
    pub(crate) fn attach_volume(v: Option<m::Volume>) = attach_volume(AttachVolumeRequest { volume: v });
    pub(crate) fn detach_volume(name: &str) = detach_volume(DetachVolumeRequest { name: name.to_owned() });
    pub(super) fn update_volume(v: Option<m::Volume>) = update_volume(UpdateVolumeRequest { volume: v });
    pub(crate) fn attach_nic(n: Option<m::NetworkInterface>) = attach_network_interface(AttachNetworkInterfaceRequest { network_interface: n });
    pub(super) fn detach_nic(name: &str) = detach_network_interface(DetachNetworkInterfaceRequest { name: name.to_owned() });
}

/// Exec on machine `id`, raw.
pub(crate) async fn exec(ctx: &Ctx, id: &str) -> Result<m::ExecResponse, Status> {
    let req = m::ExecRequest {
        machine_id: id.to_owned(),
    };
    call(ctx, |mut c| async move { c.exec(req).await }).await
}

/// A RUNNING machine of the default template, powered off (UpdateMachinePower OFF, which
/// must succeed); its id.
pub(crate) async fn powered_off_machine(ctx: &Ctx) -> anyhow::Result<String> {
    let id = ctx.running_machine().await?;
    let off = m::Power::Off as i32;
    expect_ok(power(ctx, &id, off).await, "UpdateMachinePower OFF")?;
    Ok(id)
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

/// Polls until machine `id` reports the `A` (volume or NIC) `name` ATTACHED with a handle.
pub(super) async fn wait_attached<A: Attachment>(
    ctx: &Ctx,
    id: &str,
    name: &str,
) -> anyhow::Result<()> {
    let what = format!("to report {} {name} ATTACHED with a handle", A::NAME);
    ctx.wait_machine_status(id, &what, |s| {
        A::statuses(s).iter().any(|e| {
            A::status_name(e) == name
                && !A::status_handle(e).is_empty()
                && A::status_state(e) == A::ATTACHED
        })
    })
    .await?;
    Ok(())
}

/// Polls until machine `id` reports the volume `name` ATTACHED with a handle.
pub(super) async fn wait_volume_attached(ctx: &Ctx, id: &str, name: &str) -> anyhow::Result<()> {
    wait_attached::<m::Volume>(ctx, id, name).await
}

/// Polls until machine `id` reports the NIC `name` ATTACHED with a handle.
pub(super) async fn wait_nic_attached(ctx: &Ctx, id: &str, name: &str) -> anyhow::Result<()> {
    wait_attached::<m::NetworkInterface>(ctx, id, name).await
}
