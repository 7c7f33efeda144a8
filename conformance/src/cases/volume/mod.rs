//! Cases for `volume.v1alpha1.VolumeRuntime`: version, status, create/list/expand/delete,
//! snapshots, events, error codes and idempotency (reference §1.5, §2, §7.4), one file per RPC
//! group, in report order.

use crate::case::Case;

macro_rules! case {
    ($($case:tt)*) => { service_case!(Volume, $($case)*) };
}

mod create;
mod delete;
mod rpc;

/// All volume cases.
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    create::status_cases(&mut v);
    create::create_cases(&mut v);
    create::list_cases(&mut v);
    delete::expand_cases(&mut v);
    delete::delete_cases(&mut v);
    delete::snapshots_cases(&mut v);
    delete::events_cases(&mut v);
    v
}
