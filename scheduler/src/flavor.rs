//! What differs between the machine and the volume scheduler (reference §5.1, §5.2): which
//! kinds they watch, how a request and a pool are read, and how a bind is written.

use irikit_api::{
    Kind, Object,
    compute::{self, Machine, MachinePool},
    meta::{LocalObjectReference, ObjectMeta, Taint, condition_status},
    quantity::ResourceList,
    storage::{self, Volume, VolumePool},
};

use crate::core::{PoolInfo, Request};

/// The annotation a bind writes on the pool, so that two schedulers binding to the same pool
/// conflict (the pool's resourceVersion is a precondition of every bind).
pub const BIND_ANNOTATION: &str = "scheduler.irikit.dev/last-bound";

/// A kind of object to schedule onto a kind of pool.
pub trait Flavor: Send + Sync + 'static {
    /// Objects scheduled.
    const OBJECT: Kind;
    /// Pools.
    const POOL: Kind;
    /// Event source component, as in IronCore.
    const COMPONENT: &'static str;
    /// The object's request, or `None` if it is bound, deleting or not to be scheduled.
    fn request(obj: &Object) -> Option<Request>;
    /// `(pool, class, demand)` of a bound object.
    fn bound(obj: &Object) -> Option<(String, String, i128)>;
    /// The object with its pool reference set.
    fn bind(obj: &Object, pool: &str) -> Object;
    /// The scheduler's view of a pool object.
    fn pool_info(obj: &Object) -> Option<PoolInfo>;
}

fn class_capacity(
    capacity: &ResourceList,
    allocatable: &ResourceList,
    prefix: &str,
) -> std::collections::BTreeMap<String, i128> {
    let mut out = std::collections::BTreeMap::new();
    // Capacity wins; allocatable only fills classes that have no capacity entry.
    for list in [allocatable, capacity] {
        for (key, qty) in list {
            if let Some(class) = key.strip_prefix(prefix) {
                out.insert(class.to_string(), qty.value());
            }
        }
    }
    out
}

/// The scheduler's view of a pool: name and labels from `metadata`, `taints`, the Ready
/// filter's verdict, and the class capacity of `(capacity, allocatable)` under `prefix`.
fn pool_info(
    metadata: &ObjectMeta,
    taints: &[Taint],
    ready: bool,
    (capacity, allocatable): (&ResourceList, &ResourceList),
    prefix: &str,
) -> PoolInfo {
    PoolInfo {
        name: metadata.name.clone(),
        labels: metadata.labels.clone(),
        taints: taints.to_vec(),
        ready,
        capacity: class_capacity(capacity, allocatable, prefix),
    }
}

fn key(obj: &Object) -> String {
    obj.key()
}

/// The machine scheduler (`machine-scheduler`).
pub struct MachineFlavor;

impl Flavor for MachineFlavor {
    const OBJECT: Kind = Kind::Machine;
    const POOL: Kind = Kind::MachinePool;
    const COMPONENT: &'static str = "machine-scheduler";

    fn request(obj: &Object) -> Option<Request> {
        let Object::Machine(m) = obj else { return None };
        if m.spec.machine_pool_ref.is_some() || m.metadata.is_deleting() {
            return None;
        }
        Some(Request {
            key: key(obj),
            uid: m.metadata.uid.clone(),
            class: m.spec.machine_class_ref.name.clone(),
            demand: 1,
            selector: m.spec.machine_pool_selector.clone(),
            tolerations: m.spec.tolerations.clone(),
        })
    }

    fn bound(obj: &Object) -> Option<(String, String, i128)> {
        let Object::Machine(m) = obj else { return None };
        let pool = m.spec.machine_pool_ref.as_ref()?;
        Some((pool.name.clone(), m.spec.machine_class_ref.name.clone(), 1))
    }

    fn bind(obj: &Object, pool: &str) -> Object {
        let mut obj = obj.clone();
        if let Object::Machine(Machine { spec, .. }) = &mut obj {
            spec.machine_pool_ref = Some(LocalObjectReference::new(pool));
        }
        obj
    }

    fn pool_info(obj: &Object) -> Option<PoolInfo> {
        let Object::MachinePool(MachinePool {
            metadata,
            spec,
            status,
            ..
        }) = obj
        else {
            return None;
        };
        // Ready filter: condition Ready must be True (Unknown or absent excludes the pool).
        let ready = condition_status(&status.conditions, "Ready") == Some("True");
        Some(pool_info(
            metadata,
            &spec.taints,
            ready,
            (&status.capacity, &status.allocatable),
            compute::CLASS_RESOURCE_PREFIX,
        ))
    }
}

/// The volume scheduler (`volume-scheduler`).
pub struct VolumeFlavor;

impl Flavor for VolumeFlavor {
    const OBJECT: Kind = Kind::Volume;
    const POOL: Kind = Kind::VolumePool;
    const COMPONENT: &'static str = "volume-scheduler";

    fn request(obj: &Object) -> Option<Request> {
        let Object::Volume(v) = obj else { return None };
        // Volumes without a class are provisioned externally.
        let class = v.spec.volume_class_ref.as_ref()?;
        if v.spec.volume_pool_ref.is_some() || v.metadata.is_deleting() {
            return None;
        }
        Some(Request {
            key: key(obj),
            uid: v.metadata.uid.clone(),
            class: class.name.clone(),
            demand: v.spec.resources.get("storage").map_or(0, |q| q.value()),
            selector: v.spec.volume_pool_selector.clone(),
            tolerations: v.spec.tolerations.clone(),
        })
    }

    fn bound(obj: &Object) -> Option<(String, String, i128)> {
        let Object::Volume(v) = obj else { return None };
        let pool = v.spec.volume_pool_ref.as_ref()?;
        let class = v.spec.volume_class_ref.as_ref()?;
        Some((
            pool.name.clone(),
            class.name.clone(),
            v.spec.resources.get("storage").map_or(0, |q| q.value()),
        ))
    }

    fn bind(obj: &Object, pool: &str) -> Object {
        let mut obj = obj.clone();
        if let Object::Volume(Volume { spec, .. }) = &mut obj {
            spec.volume_pool_ref = Some(LocalObjectReference::new(pool));
        }
        obj
    }

    fn pool_info(obj: &Object) -> Option<PoolInfo> {
        let Object::VolumePool(VolumePool {
            metadata,
            spec,
            status,
            ..
        }) = obj
        else {
            return None;
        };
        // VolumePools have no Ready condition today (§8.12); filter only when one is present.
        let ready = condition_status(&status.conditions, "Ready").is_none_or(|s| s == "True");
        Some(pool_info(
            metadata,
            &spec.taints,
            ready,
            (&status.capacity, &status.allocatable),
            storage::CLASS_RESOURCE_PREFIX,
        ))
    }
}
