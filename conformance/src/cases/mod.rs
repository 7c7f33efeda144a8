//! The case registry: every case of every service and profile, in a stable order.

mod bucket;
pub(crate) mod machine;
mod poollet;
mod reservation;
mod volume;

use crate::case::Case;

pub(crate) use machine::{
    annotate as machine_annotate, attach_nic as machine_attach_nic,
    attach_volume as machine_attach_volume, power as machine_power,
};

/// Every case of both levels (RPC: core and go-poollet profiles, all services; then the
/// lifecycle level), in a stable order.
pub fn all() -> Vec<Case> {
    let mut v = rpc();
    v.extend(crate::lifecycle::cases());
    v
}

/// The RPC-level cases only.
pub fn rpc() -> Vec<Case> {
    let mut v = machine::cases();
    v.extend(volume::cases());
    v.extend(bucket::cases());
    v.extend(poollet::cases());
    v.extend(reservation::cases());
    v
}

#[cfg(test)]
mod tests {
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
        }
    }
}
