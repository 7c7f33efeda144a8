//! Cases for `machine.v1alpha1.MachineRuntime`: every RPC, its error codes, idempotency,
//! concurrency and the state machine (reference §1.4, §2, §7.4), one file per RPC group, in
//! report order.

use crate::case::Case;

macro_rules! case {
    ($v:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(crate::case::Case::new(
            $id,
            crate::case::Service::Machine,
            crate::case::Profile::Core,
            $desc,
            |$ctx: crate::ctx::Ctx| async move { $body },
        ));
    };
}

mod annotations;
mod concurrency;
mod create;
mod delete;
mod events;
mod exec;
mod list;
mod nics;
mod power;
mod rpc;
mod status;
mod volumes;

pub(crate) use rpc::{annotate, attach_nic, attach_volume, power, wait_events_of};

/// All machine cases.
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    status::cases(&mut v);
    create::cases(&mut v);
    power::cases(&mut v);
    annotations::cases(&mut v);
    list::cases(&mut v);
    volumes::cases(&mut v);
    nics::cases(&mut v);
    delete::cases(&mut v);
    exec::cases(&mut v);
    events::cases(&mut v);
    concurrency::cases(&mut v);
    v
}
