//! What a Machine's own Reservation asks for and how the scheduler recognises its
//! Reservations: the pure object mapping of the reservation mode (no IO).

use irikit_api::{
    Kind, Object,
    compute::{self, Machine, MachineClass},
    meta::{ObjectMeta, OwnerReference},
    quantity::{Format, Quantity, ResourceList},
    reservation::{self, RESERVATION_MACHINE_LABEL, RESERVATION_SUPPORTED_ANNOTATION, Reservation},
};

/// The local disk bytes a Machine needs on its host: the `sizeLimit`s of its `emptyDisk` and
/// `localDisk` volumes (volumes without one count 0).
pub fn local_storage_bytes(m: &Machine) -> i128 {
    m.spec
        .volumes
        .iter()
        .filter_map(|v| {
            v.empty_disk
                .as_ref()
                .and_then(|d| d.size_limit.as_ref())
                .or_else(|| v.local_disk.as_ref().and_then(|d| d.size_limit.as_ref()))
        })
        .map(|q| q.value().max(0))
        .sum()
}

/// The Reservation the scheduler creates for `m` (see the module documentation); `class` is
/// the Machine's MachineClass when known.
pub fn reservation_for(m: &Machine, class: Option<&MachineClass>) -> Reservation {
    let mut resources = ResourceList::new();
    resources.insert(
        format!(
            "{}{}",
            compute::CLASS_RESOURCE_PREFIX,
            m.spec.machine_class_ref.name
        ),
        Quantity::from_int(1, Format::DecimalSI),
    );
    if let Some(class) = class {
        for key in [reservation::CPU_RESOURCE, reservation::MEMORY_RESOURCE] {
            if let Some(q) = class.capabilities.get(key) {
                resources.insert(key.to_owned(), *q);
            }
        }
    }
    let local = local_storage_bytes(m);
    if local > 0 {
        let q = i64::try_from(local).map_or_else(
            |_| format!("{local}").parse().unwrap_or_default(),
            |v| Quantity::from_int(v, Format::BinarySI),
        );
        resources.insert(reservation::LOCAL_STORAGE_RESOURCE.to_owned(), q);
    }
    let mut metadata = ObjectMeta::namespaced(&m.metadata.namespace, &m.metadata.name);
    metadata.labels.insert(
        RESERVATION_MACHINE_LABEL.to_owned(),
        m.metadata.name.clone(),
    );
    metadata.owner_references.push(OwnerReference {
        api_version: compute::API_VERSION.to_owned(),
        kind: Kind::Machine.as_str().to_owned(),
        name: m.metadata.name.clone(),
        uid: m.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    Reservation {
        api_version: reservation::API_VERSION.to_owned(),
        kind: Kind::Reservation.as_str().to_owned(),
        metadata,
        spec: reservation::ReservationSpec {
            pools: Vec::new(),
            resources,
        },
        status: reservation::ReservationStatus::default(),
    }
}

/// Whether a MachinePool's runtime serves reservations (its `supported` annotation).
pub fn pool_supports_reservations(pool: &Object) -> bool {
    pool.metadata()
        .annotations
        .get(RESERVATION_SUPPORTED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Whether `r` is the own Reservation of the Machine with `name` and `uid`.
pub(super) fn owned_by(r: &Reservation, name: &str, uid: &str) -> bool {
    r.metadata
        .labels
        .get(RESERVATION_MACHINE_LABEL)
        .map(String::as_str)
        == Some(name)
        && r.metadata
            .owner_references
            .iter()
            .any(|o| o.uid == uid && o.kind == Kind::Machine.as_str())
}

/// Whether `r` was created by this scheduler for some Machine.
pub(super) fn is_own(r: &Reservation) -> bool {
    r.metadata.labels.contains_key(RESERVATION_MACHINE_LABEL)
}

/// The name of the Machine an own Reservation belongs to (its label).
pub(super) fn owner_name(r: &Reservation) -> String {
    r.metadata
        .labels
        .get(RESERVATION_MACHINE_LABEL)
        .cloned()
        .unwrap_or_default()
}
