//! The case registry: every case of every service and profile, in a stable order.

use crate::case::Case;

/// The error-code cases as table rows, in place (the order of cases is the report's):
/// `id, description, expected code, what the call is, |ctx| call;` where `call` is the RPC's
/// raw result (after any setup, whose errors fail the case). Each row is one `shared::code_case`.
macro_rules! code_cases {
    ($v:ident, $service:ident; $($id:literal, $desc:literal, $code:ident, $what:literal, |$ctx:ident| $call:expr;)*) => {
        $($v.push(crate::cases::shared::code_case(
            crate::case::Service::$service,
            $id,
            $desc,
            tonic::Code::$code,
            $what,
            |$ctx: crate::ctx::Ctx| async move { Ok($call) },
        ));)*
    };
}

/// The cases whose body is a few checks as table rows, in place (the order of cases is the
/// report's): `id, description, |ctx| { statements };` where each statement's errors fail the
/// case and the case passes once they all ran. Each row is one `service_case!`.
macro_rules! check_cases {
    ($v:ident, $service:ident; $($id:literal, $desc:literal, |$ctx:ident| $body:block;)*) => {
        $(service_case!($service, $v, $id, $desc, |$ctx| {
            $body;
            crate::case::pass()
        });)*
    };
}

/// One case of `$service` (core profile) from an async block: the per-service `case!` macros
/// forward here.
macro_rules! service_case {
    ($service:ident, $v:ident, $id:literal, $desc:literal, |$ctx:ident| $body:block) => {
        $v.push(crate::case::Case::new(
            $id,
            crate::case::Service::$service,
            crate::case::Profile::Core,
            $desc,
            |$ctx: crate::ctx::Ctx| async move { $body },
        ));
    };
}

mod bucket;
mod exec;
pub(crate) mod machine;
mod poollet;
mod reservation;
mod shared;
mod transport;
mod volume;

pub(crate) use machine::{
    annotate as machine_annotate, attach_nic as machine_attach_nic,
    attach_volume as machine_attach_volume, power as machine_power,
};

/// Every case of both levels (RPC: core and go-poollet profiles, all services; then the
/// lifecycle level), in a stable order.
pub fn all() -> Vec<Case> {
    let mut v = rpc();
    let mut lifecycle = crate::lifecycle::cases();
    crate::requirement::apply(&mut lifecycle);
    v.extend(lifecycle);
    v
}

/// The RPC-level cases only.
pub fn rpc() -> Vec<Case> {
    let mut v = machine::cases();
    v.extend(exec::cases());
    v.extend(volume::cases());
    v.extend(bucket::cases());
    v.extend(poollet::cases());
    v.extend(transport::cases());
    v.extend(reservation::cases());
    crate::requirement::apply(&mut v);
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_should_case_exists_and_the_five_of_issue_14_are_should() {
        let cases = super::all();
        for (id, _) in crate::requirement::SHOULD {
            assert!(
                cases.iter().any(|c| c.id == *id),
                "SHOULD names unknown case {id}"
            );
        }
        for id in [
            "machine.create.rejects_invalid_power",
            "machine.power.invalid_value",
            "machine.create.rejects_volume_without_source",
            "volume.create.rejects_two_data_sources",
            "volume.create.rejects_unknown_snapshot_source",
        ] {
            let c = cases.iter().find(|c| c.id == id).unwrap();
            assert_eq!(c.requirement, crate::case::Requirement::Should, "{id}");
        }
        for id in [
            "machine.create.unknown_class_fails",
            "machine.delete.unknown_id_not_found",
            "poollet.machine.power_off_not_stopped",
        ] {
            let c = cases.iter().find(|c| c.id == id).unwrap();
            assert_eq!(c.requirement, crate::case::Requirement::Must, "{id}");
        }
    }

    #[test]
    fn ids_are_unique_dotted_and_described() {
        let cases = super::all();
        let mut seen = std::collections::HashSet::new();
        for c in &cases {
            assert!(seen.insert(c.id.clone()), "duplicate id {}", c.id);
            assert!(
                c.id.starts_with(c.service.name())
                    || c.id.starts_with("poollet.")
                    || (c.service == crate::Service::Machine && c.id.starts_with("reservation."))
                    || (c.level == crate::Level::Lifecycle && c.id.starts_with("lifecycle.")),
                "{} does not start with its service",
                c.id
            );
            assert!(
                c.id.split('.').count() >= 3,
                "{} is not service.group.rule",
                c.id
            );
            assert!(
                c.id.chars().all(|ch| ch.is_ascii_lowercase()
                    || ch.is_ascii_digit()
                    || ch == '.'
                    || ch == '_'),
                "{}",
                c.id
            );
            assert!(
                !c.description.is_empty() && !c.description.contains('\n'),
                "{}",
                c.id
            );
            assert!(
                !c.evidence.is_empty() && !c.evidence.contains('\n'),
                "{} states no evidence for its level",
                c.id
            );
        }
    }
}
