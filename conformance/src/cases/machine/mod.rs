//! Cases for `machine.v1alpha1.MachineRuntime`: every RPC, its error codes, idempotency,
//! concurrency and the state machine (reference §1.4, §2, §7.4), one file per RPC group, in
//! report order.

use crate::case::Case;

macro_rules! case {
    ($($case:tt)*) => { service_case!(Machine, $($case)*) };
}

mod attach;
mod create;
mod rpc;
mod state;

pub(crate) use rpc::{
    annotate, attach_nic, attach_volume, detach_volume, exec, power, powered_off_machine,
    wait_events_of,
};

/// All machine cases.
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    create::status_cases(&mut v);
    create::create_cases(&mut v);
    state::power_cases(&mut v);
    create::annotations_cases(&mut v);
    state::list_cases(&mut v);
    attach::volumes_cases(&mut v);
    attach::nics_cases(&mut v);
    state::delete_cases(&mut v);
    state::exec_cases(&mut v);
    state::events_cases(&mut v);
    state::concurrency_cases(&mut v);
    v
}
