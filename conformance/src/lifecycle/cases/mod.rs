//! The lifecycle cases: each applies objects to the store and checks one thing that the
//! scheduler and the poollet must propagate between the store and the runtime under test
//! (reference §3.1–§3.7, §4.3–§4.5, §5.1). The runtime is checked through the generated gRPC
//! client, the control plane through the store. This file is the list, in a stable order;
//! the bodies live in `machine.rs` and `volume.rs` (`lifecycle::reservation` has its own).

pub(super) mod common;
mod machine;
mod volume;

use self::{
    machine::{
        machine_created_with_labels, machine_delete_finalized, machine_generation_annotations,
        machine_power_off_propagated, machine_power_on_propagated, machine_running_propagated,
        machine_scheduled, pool_announced, pool_unreachable_not_ready,
        scheduler_avoids_unready_pool,
    },
    volume::{
        volume_attached, volume_attached_resized, volume_available, volume_delete_finalized,
        volume_expanded, volume_pool_announced,
    },
};
use crate::{
    case::{Case, Outcome, Profile, Service},
    ctx::Ctx,
};

type Body = fn(Ctx) -> futures::future::BoxFuture<'static, anyhow::Result<Outcome>>;

/// Every lifecycle case, in a stable order.
pub fn cases() -> Vec<Case> {
    let m = |id: &str, rule: &str, f: Body| {
        Case::new(id, Service::Machine, Profile::Core, rule, f).lifecycle()
    };
    let v = |id: &str, rule: &str, f: Body| {
        Case::new(id, Service::Volume, Profile::Core, rule, f).lifecycle()
    };
    vec![
        m(
            "lifecycle.pool.announced",
            "the MachinePool is announced Ready with every runtime class in availableMachineClasses and capacity class/machine.<class> = the class quantity of Status",
            |ctx| Box::pin(pool_announced(ctx)),
        ),
        m(
            "lifecycle.machine.scheduled",
            "an applied Machine without machinePoolRef is bound to the pool that offers its class",
            |ctx| Box::pin(machine_scheduled(ctx)),
        ),
        m(
            "lifecycle.machine.created_with_labels",
            "the runtime gets one machine labelled machine-uid/-namespace/-name of the Machine, with the runtime's class",
            |ctx| Box::pin(machine_created_with_labels(ctx)),
        ),
        m(
            "lifecycle.machine.generation_annotations",
            "the runtime machine carries the machine-generation and irimachine-generation annotations (§3.4)",
            |ctx| Box::pin(machine_generation_annotations(ctx)),
        ),
        m(
            "lifecycle.machine.running_propagated",
            "status.state Running reaches the Machine with observedGeneration = generation and machineID <runtime_name>://<id>",
            |ctx| Box::pin(machine_running_propagated(ctx)),
        ),
        m(
            "lifecycle.machine.power_off_propagated",
            "spec.power Off reaches the runtime's spec.power and the Machine turns Terminated (or Shutdown) at the new generation",
            |ctx| Box::pin(machine_power_off_propagated(ctx)),
        ),
        m(
            "lifecycle.machine.power_on_propagated",
            "a Machine created powered off is created off on the runtime, and spec.power On makes it Running at the new generation",
            |ctx| Box::pin(machine_power_on_propagated(ctx)),
        ),
        m(
            "lifecycle.machine.delete_finalized",
            "a deleted Machine is held by the machinepoollet finalizer until the runtime no longer lists its machine, then it is gone",
            |ctx| Box::pin(machine_delete_finalized(ctx)),
        ),
        m(
            "lifecycle.pool.unreachable_not_ready",
            "when the poollet cannot reach the runtime the pool turns Ready=False (RuntimeUnreachable), and Ready=True once it can again",
            |ctx| Box::pin(pool_unreachable_not_ready(ctx)),
        )
        .exclusive(),
        m(
            "lifecycle.scheduler.avoids_unready_pool",
            "a Machine selecting an unready pool stays unscheduled with an OutOfCapacity event, and is scheduled and Running once the pool is Ready",
            |ctx| Box::pin(scheduler_avoids_unready_pool(ctx)),
        )
        .exclusive(),
        v(
            "lifecycle.volume.pool_announced",
            "the VolumePool is announced with every runtime volume class in availableVolumeClasses and capacity class/volume.<class> = the class quantity of Status",
            |ctx| Box::pin(volume_pool_announced(ctx)),
        ),
        v(
            "lifecycle.volume.available",
            "an applied Volume is bound to the pool, created on the runtime labelled volume-uid/-namespace/-name, and turns Available with volumeID <runtime_name>://<id> and access",
            |ctx| Box::pin(volume_available(ctx)),
        ),
        v(
            "lifecycle.volume.expanded",
            "a larger spec.resources.storage reaches the runtime (ExpandVolume) and comes back in the Volume's status.resources.storage",
            |ctx| Box::pin(volume_expanded(ctx)),
        ),
        v(
            "lifecycle.volume.attached",
            "a Machine with a volumeRef gets the Volume's connection (driver, handle) on the runtime and its status shows the volume Attached",
            |ctx| Box::pin(volume_attached(ctx)),
        ),
        v(
            "lifecycle.volume.attached_resized",
            "expanding an attached Volume updates the runtime machine's volume connection (UpdateVolume with the new effective_storage_bytes)",
            |ctx| Box::pin(volume_attached_resized(ctx)),
        ),
        v(
            "lifecycle.volume.delete_finalized",
            "a deleted Volume is held by the volumepoollet finalizer until the runtime no longer lists it, then it is gone",
            |ctx| Box::pin(volume_delete_finalized(ctx)),
        ),
    ]
    .into_iter()
    .chain(crate::lifecycle::reservation::cases())
    .collect()
}
