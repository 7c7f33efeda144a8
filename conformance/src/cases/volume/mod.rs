//! Cases for `volume.v1alpha1.VolumeRuntime`: version, status, create/list/expand/delete,
//! snapshots, events, error codes and idempotency (reference §1.5, §2, §7.4), one file per RPC
//! group, in report order.

use crate::case::Case;

macro_rules! case {
    ($v:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(crate::case::Case::new(
            $id,
            crate::case::Service::Volume,
            crate::case::Profile::Core,
            $desc,
            |$ctx: crate::ctx::Ctx| async move { $body },
        ));
    };
}

mod create;
mod delete;
mod events;
mod expand;
mod list;
mod rpc;
mod snapshots;
mod status;

/// All volume cases.
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    status::cases(&mut v);
    create::cases(&mut v);
    list::cases(&mut v);
    expand::cases(&mut v);
    delete::cases(&mut v);
    snapshots::cases(&mut v);
    events::cases(&mut v);
    v
}
