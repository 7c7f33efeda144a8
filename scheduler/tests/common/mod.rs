//! Helpers shared by the scheduler's store-backed tests: pools and machines of class `small`,
//! resource lists, and etcd found at run time (a `skip:` line when it is missing and not required).
#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use irikit_api::{
    compute::{Machine, MachinePool},
    meta::{Condition, LocalObjectReference, ObjectMeta},
};

/// A Ready MachinePool `name` with `capacity` machines of class `small`.
pub(crate) fn machine_pool(name: &str, capacity: i64) -> MachinePool {
    let mut pool = MachinePool {
        metadata: ObjectMeta::named(name),
        ..Default::default()
    };
    pool.status.conditions = vec![Condition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    }];
    pool.status.capacity.insert(
        "class/machine.small".into(),
        capacity.to_string().parse().unwrap(),
    );
    pool
}

/// A resource list of `(name, quantity)` pairs.
pub(crate) fn resources(pairs: &[(&str, &str)]) -> irikit_api::ResourceList {
    pairs
        .iter()
        .map(|(name, quantity)| ((*name).to_owned(), quantity.parse().unwrap()))
        .collect()
}

/// An unbound Machine `default/<name>` of class `small`.
pub(crate) fn machine(name: &str) -> Machine {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced("default", name),
        ..Default::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new("small");
    m
}

/// Whether `IRIKIT_REQUIRE` names etcd.
fn etcd_required() -> bool {
    std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == "etcd")
}

/// A throw-away etcd, or `None` after one `skip:` line (a failure when `IRIKIT_REQUIRE`
/// names etcd).
#[cfg(feature = "etcd")]
pub(crate) async fn local_etcd() -> Option<irikit_api::store::etcd::LocalEtcd> {
    use irikit_api::store::etcd::LocalEtcd;
    if LocalEtcd::binary().is_none() {
        assert!(
            !etcd_required(),
            "etcd is required (IRIKIT_REQUIRE) but not on PATH"
        );
        eprintln!("skip: etcd not on PATH (install etcd-server)");
        return None;
    }
    Some(LocalEtcd::start(None).await.unwrap())
}

/// Without the `etcd` feature: fails when `IRIKIT_REQUIRE` names etcd, else one `skip:` line.
#[cfg(not(feature = "etcd"))]
pub(crate) fn etcd_unavailable() {
    assert!(
        !etcd_required(),
        "etcd is required (IRIKIT_REQUIRE) but scheduler was built without the `etcd` feature"
    );
    eprintln!("skip: scheduler built without the `etcd` feature");
}
