//! Validation as IronCore's API server does it (create and update), with errors that name
//! the field path, in the Kubernetes `field.Error` style.

use std::{collections::HashSet, fmt};

use crate::{
    compute::Machine,
    core::{Event, Secret},
    meta::{ObjectMeta, Taint, Toleration},
    object::Object,
    quantity::ResourceList,
    reservation::{self, Reservation},
    storage::{self, VolumeSnapshot},
};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.volumes[1].device`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collected field errors of one object.
#[derive(Debug, Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    /// Checks that `name` (at `path`) is a DNS label not in `seen`, and adds it.
    fn unique_dns_label<'a>(&mut self, path: &str, name: &'a str, seen: &mut HashSet<&'a str>) {
        self.unique(path, name, seen, (is_dns_label, "a DNS label"));
    }

    /// Checks that `value` (at `path`) passes `rule` (the check, and what it says a value must
    /// be) and is not in `seen`, and adds it.
    fn unique<'a>(
        &mut self,
        path: &str,
        value: &'a str,
        seen: &mut HashSet<&'a str>,
        (valid, must_be): (fn(&str) -> bool, &str),
    ) {
        if !valid(value) {
            self.push(path, format!("Invalid value: {value:?}: must be {must_be}"));
        } else if !seen.insert(value) {
            self.push(path, format!("Duplicate value: {value:?}"));
        }
    }

    /// Checks that the pool reference `field` of `spec`, once set, stays as it is.
    fn set_once<T: PartialEq>(&mut self, field: &str, old: &Option<T>, new: &Option<T>) {
        if let Some(old) = old
            && new.as_ref() != Some(old)
        {
            self.push(
                format!("spec.{field}"),
                format!("Invalid value: {field} is set once and cannot be changed"),
            );
        }
    }

    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Whether `s` is an RFC 1123 DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 DNS subdomain (dot-separated labels, at most 253).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Whether `s` is a valid device name: two prefix letters plus one or two letters (`oda`,
/// `odab`), as IronCore's `validateVolumeDevice` requires.
pub fn is_device_name(s: &str) -> bool {
    (3..=4).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_lowercase())
}

fn validate_meta(meta: &ObjectMeta, namespaced: bool, errs: &mut Errors) {
    if meta.name.is_empty() {
        errs.push("metadata.name", "Required value: name is required");
    } else if !is_dns_subdomain(&meta.name) {
        errs.push(
            "metadata.name",
            format!(
                "Invalid value: {:?}: must be a lowercase RFC 1123 subdomain",
                meta.name
            ),
        );
    }
    if namespaced {
        if meta.namespace.is_empty() {
            errs.push(
                "metadata.namespace",
                "Required value: namespace is required",
            );
        } else if !is_dns_label(&meta.namespace) {
            errs.push(
                "metadata.namespace",
                format!("Invalid value: {:?}: must be a DNS label", meta.namespace),
            );
        }
    } else if !meta.namespace.is_empty() {
        errs.push(
            "metadata.namespace",
            "Forbidden: not allowed on this type (cluster-scoped)",
        );
    }
}

fn validate_resources(list: &ResourceList, path: &str, errs: &mut Errors) {
    for (name, qty) in list {
        if qty.is_negative() {
            errs.push(
                format!("{path}[{name}]"),
                format!("Invalid value: \"{qty}\": must be greater than or equal to 0"),
            );
        }
    }
}

fn validate_tolerations(tolerations: &[Toleration], path: &str, errs: &mut Errors) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match t.operator.as_str() {
            "Exists" => {
                if !t.value.is_empty() {
                    errs.push(
                        format!("{p}.value"),
                        "Invalid value: value must be empty when operator is Exists",
                    );
                }
            }
            "" | "Equal" => {
                if t.key.is_empty() {
                    errs.push(
                        format!("{p}.operator"),
                        "Invalid value: operator must be Exists when key is empty",
                    );
                }
            }
            other => errs.push(
                format!("{p}.operator"),
                format!("Unsupported value: {other:?}: supported values: \"Equal\", \"Exists\""),
            ),
        }
        validate_effect(&t.effect, true, &format!("{p}.effect"), errs);
    }
}

fn validate_effect(effect: &str, allow_empty: bool, path: &str, errs: &mut Errors) {
    match effect {
        "NoSchedule" | "NoExecute" => {}
        "" if allow_empty => {}
        "" => errs.push(path, "Required value: effect is required"),
        other => errs.push(
            path,
            format!(
                "Unsupported value: {other:?}: supported values: \"NoExecute\", \"NoSchedule\""
            ),
        ),
    }
}

fn validate_taints(taints: &[Taint], path: &str, errs: &mut Errors) {
    for (i, t) in taints.iter().enumerate() {
        if t.key.is_empty() {
            errs.push(
                format!("{path}[{i}].key"),
                "Required value: key is required",
            );
        }
        validate_effect(&t.effect, false, &format!("{path}[{i}].effect"), errs);
    }
}

fn validate_machine(m: &Machine, errs: &mut Errors) {
    let spec = &m.spec;
    if spec.machine_class_ref.name.is_empty() {
        errs.push(
            "spec.machineClassRef",
            "Required value: must specify a machine class",
        );
    } else if !is_dns_subdomain(&spec.machine_class_ref.name) {
        errs.push(
            "spec.machineClassRef.name",
            format!(
                "Invalid value: {:?}: must be a DNS subdomain",
                spec.machine_class_ref.name
            ),
        );
    }
    if let Some(pool) = &spec.machine_pool_ref
        && !is_dns_subdomain(&pool.name)
    {
        errs.push(
            "spec.machinePoolRef.name",
            format!("Invalid value: {:?}: must be a DNS subdomain", pool.name),
        );
    }
    let mut nic_names = HashSet::new();
    for (i, nic) in spec.network_interfaces.iter().enumerate() {
        let p = format!("spec.networkInterfaces[{i}]");
        errs.unique_dns_label(&format!("{p}.name"), &nic.name, &mut nic_names);
        let sources =
            usize::from(nic.network_interface_ref.is_some()) + usize::from(nic.ephemeral.is_some());
        if sources != 1 {
            errs.push(
                p,
                format!("Invalid value: must specify exactly one source (networkInterfaceRef or ephemeral), found {sources}"),
            );
        }
    }
    let mut vol_names = HashSet::new();
    let mut devices = HashSet::new();
    for (i, vol) in spec.volumes.iter().enumerate() {
        let p = format!("spec.volumes[{i}]");
        errs.unique_dns_label(&format!("{p}.name"), &vol.name, &mut vol_names);
        if let Some(device) = &vol.device {
            let rule = "two prefix letters followed by one or two letters (e.g. \"oda\")";
            errs.unique(
                &format!("{p}.device"),
                device,
                &mut devices,
                (is_device_name, rule),
            );
        }
        let sources = [
            vol.volume_ref.is_some(),
            vol.empty_disk.is_some(),
            vol.local_disk.is_some(),
            vol.ephemeral.is_some(),
        ]
        .into_iter()
        .filter(|s| *s)
        .count();
        if sources != 1 {
            errs.push(
                p.clone(),
                format!("Invalid value: must specify exactly one source (volumeRef, emptyDisk, localDisk or ephemeral), found {sources}"),
            );
        }
        let size = vol
            .empty_disk
            .as_ref()
            .and_then(|d| d.size_limit)
            .or(vol.local_disk.as_ref().and_then(|d| d.size_limit));
        if let Some(size) = size
            && size.is_negative()
        {
            errs.push(
                format!("{p}.sizeLimit"),
                format!("Invalid value: \"{size}\": must be greater than or equal to 0"),
            );
        }
    }
    if let Some(ignition) = &spec.ignition_ref
        && ignition.name.is_empty()
    {
        errs.push(
            "spec.ignitionRef.name",
            "Required value: must specify a secret name",
        );
    }
    validate_tolerations(&spec.tolerations, "spec.tolerations", errs);
    if let Some(guest) = &spec.guest_config
        && !guest.hostname.is_empty()
        && !is_dns_label(&guest.hostname)
    {
        errs.push(
            "spec.guestConfig.hostname",
            format!("Invalid value: {:?}: must be a DNS label", guest.hostname),
        );
    }
}

fn validate_machine_update(old: &Machine, new: &Machine, errs: &mut Errors) {
    if old.spec.machine_class_ref != new.spec.machine_class_ref {
        errs.push("spec.machineClassRef", "Invalid value: field is immutable");
    }
    errs.set_once(
        "machinePoolRef",
        &old.spec.machine_pool_ref,
        &new.spec.machine_pool_ref,
    );
    for (i, vol) in new.spec.volumes.iter().enumerate() {
        let Some(old_vol) = old.spec.volumes.iter().find(|v| v.name == vol.name) else {
            continue;
        };
        let (Some(old_disk), new_disk) = (&old_vol.local_disk, &vol.local_disk) else {
            continue;
        };
        if old_disk.image.is_empty() {
            continue;
        }
        if new_disk.as_ref().map(|d| d.image.as_str()) != Some(old_disk.image.as_str()) {
            errs.push(
                format!("spec.volumes[{i}].localDisk.image"),
                "Invalid value: image cannot be removed or changed once set",
            );
        }
    }
}

fn validate_storage_volume(v: &storage::Volume, errs: &mut Errors) {
    let spec = &v.spec;
    if let Some(class) = &spec.volume_class_ref {
        if class.name.is_empty() {
            errs.push(
                "spec.volumeClassRef.name",
                "Required value: must specify a name",
            );
        }
        match spec.resources.get("storage") {
            None => errs.push(
                "spec.resources[storage]",
                "Required value: must specify storage when volumeClassRef is set",
            ),
            Some(q) if q.is_negative() || q.is_zero() => {
                errs.push(
                    "spec.resources[storage]",
                    format!("Invalid value: \"{q}\": must be greater than 0"),
                );
            }
            Some(_) => {}
        }
    }
    validate_resources(&spec.resources, "spec.resources", errs);
    validate_tolerations(&spec.tolerations, "spec.tolerations", errs);
    if let Some(ds) = &spec.data_source {
        let n = usize::from(ds.volume_snapshot_ref.is_some()) + usize::from(ds.os_image.is_some());
        if n > 1 {
            errs.push(
                "spec.dataSource",
                "Forbidden: must specify at most one data source",
            );
        }
    }
    if let Some(enc) = &spec.encryption
        && enc.secret_ref.name.is_empty()
    {
        errs.push(
            "spec.encryption.secretRef.name",
            "Required value: must specify a secret name",
        );
    }
}

fn validate_storage_volume_update(old: &storage::Volume, new: &storage::Volume, errs: &mut Errors) {
    if old.spec.volume_class_ref.is_some() && old.spec.volume_class_ref != new.spec.volume_class_ref
    {
        errs.push("spec.volumeClassRef", "Invalid value: field is immutable");
    }
    errs.set_once(
        "volumePoolRef",
        &old.spec.volume_pool_ref,
        &new.spec.volume_pool_ref,
    );
}

fn validate_snapshot(s: &VolumeSnapshot, errs: &mut Errors) {
    if s.spec.volume_ref.name.is_empty() {
        errs.push(
            "spec.volumeRef.name",
            "Required value: must specify a volume",
        );
    }
}

fn validate_event(e: &Event, errs: &mut Errors) {
    if e.involved_object.name.is_empty() {
        errs.push(
            "involvedObject.name",
            "Required value: must specify the involved object",
        );
    }
    if e.reason.is_empty() {
        errs.push("reason", "Required value: must specify a reason");
    }
    if !matches!(e.type_.as_str(), "" | "Normal" | "Warning") {
        errs.push(
            "type",
            format!(
                "Unsupported value: {:?}: supported values: \"Normal\", \"Warning\"",
                e.type_
            ),
        );
    }
}

fn validate_secret(s: &Secret, errs: &mut Errors) {
    for key in s.data.keys().chain(s.string_data.keys()) {
        let ok = !key.is_empty()
            && key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            errs.push(format!("data[{key}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'");
        }
    }
}

fn validate_lease(l: &crate::coordination::Lease, errs: &mut Errors) {
    if let Some(seconds) = l.spec.lease_duration_seconds
        && seconds <= 0
    {
        errs.push(
            "spec.leaseDurationSeconds",
            format!("Invalid value: {seconds}: must be greater than 0"),
        );
    }
    if l.spec.lease_transitions.is_some_and(|n| n < 0) {
        errs.push(
            "spec.leaseTransitions",
            "Invalid value: must be greater than or equal to 0",
        );
    }
}

fn validate_reservation(r: &Reservation, errs: &mut Errors) {
    let mut pools = HashSet::new();
    for (i, pool) in r.spec.pools.iter().enumerate() {
        let rule = (is_dns_subdomain as fn(&str) -> bool, "a DNS subdomain");
        errs.unique(&format!("spec.pools[{i}]"), pool, &mut pools, rule);
    }
    if r.spec.resources.is_empty() {
        errs.push(
            "spec.resources",
            "Required value: must specify at least one resource",
        );
    }
    for (name, qty) in &r.spec.resources {
        let path = format!("spec.resources[{name}]");
        if let Some(class) = name.strip_prefix(crate::compute::CLASS_RESOURCE_PREFIX) {
            if !is_dns_subdomain(class) {
                errs.push(
                    path,
                    format!("Invalid value: {class:?}: class must be a DNS subdomain"),
                );
            } else if qty.milli_value() % 1000 != 0 || qty.value() < 1 {
                errs.push(
                    path,
                    format!("Invalid value: \"{qty}\": a machine count must be a whole number of at least 1"),
                );
            }
        } else if !matches!(
            name.as_str(),
            reservation::CPU_RESOURCE
                | reservation::MEMORY_RESOURCE
                | reservation::LOCAL_STORAGE_RESOURCE
        ) {
            errs.push(
                path,
                format!(
                    "Unsupported value: {name:?}: supported values: \"class/machine.<class>\", \"cpu\", \"localStorage\", \"memory\""
                ),
            );
        } else if qty.is_negative() {
            errs.push(
                path,
                format!("Invalid value: \"{qty}\": must be greater than or equal to 0"),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, pool) in r.status.pools.iter().enumerate() {
        if !is_dns_subdomain(&pool.name) {
            errs.push(
                format!("status.pools[{i}].name"),
                format!("Invalid value: {:?}: must be a DNS subdomain", pool.name),
            );
        } else if !seen.insert(pool.name.as_str()) {
            errs.push(
                format!("status.pools[{i}].name"),
                format!("Duplicate value: {:?}", pool.name),
            );
        }
    }
}

/// Validates an object for create. Returns every field error found (empty = valid).
pub fn validate(obj: &Object) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(obj.metadata(), obj.kind().namespaced(), &mut errs);
    match obj {
        Object::Machine(m) => validate_machine(m, &mut errs),
        Object::MachinePool(p) => validate_taints(&p.spec.taints, "spec.taints", &mut errs),
        Object::MachineClass(c) => {
            if c.capabilities.is_empty() {
                errs.push("capabilities", "Required value: must specify capabilities");
            }
            validate_resources(&c.capabilities, "capabilities", &mut errs);
        }
        Object::Volume(v) => validate_storage_volume(v, &mut errs),
        Object::VolumePool(p) => validate_taints(&p.spec.taints, "spec.taints", &mut errs),
        Object::VolumeClass(c) => {
            validate_resources(&c.capabilities, "capabilities", &mut errs);
            if !matches!(c.resize_policy.as_str(), "" | "Static" | "ExpandOnly") {
                errs.push(
                    "resizePolicy",
                    format!(
                        "Unsupported value: {:?}: supported values: \"ExpandOnly\", \"Static\"",
                        c.resize_policy
                    ),
                );
            }
        }
        Object::VolumeSnapshot(s) => validate_snapshot(s, &mut errs),
        Object::Event(e) => validate_event(e, &mut errs),
        Object::Secret(s) => validate_secret(s, &mut errs),
        Object::Lease(l) => validate_lease(l, &mut errs),
        Object::Reservation(r) => validate_reservation(r, &mut errs),
    }
    if let Object::MachinePool(p) = obj {
        validate_resources(&p.status.capacity, "status.capacity", &mut errs);
    }
    errs.0
}

/// Validates an update from `old` to `new` (the create rules plus immutability rules).
pub fn validate_update(old: &Object, new: &Object) -> Vec<FieldError> {
    let mut errs = Errors(validate(new));
    if old.metadata().is_deleting() {
        let added: Vec<_> = new
            .metadata()
            .finalizers
            .iter()
            .filter(|f| !old.metadata().finalizers.contains(f))
            .collect();
        if !added.is_empty() {
            errs.push(
                "metadata.finalizers",
                "Forbidden: no new finalizers can be added if the object is being deleted",
            );
        }
    }
    match (old, new) {
        (Object::Machine(a), Object::Machine(b)) => validate_machine_update(a, b, &mut errs),
        (Object::Volume(a), Object::Volume(b)) => validate_storage_volume_update(a, b, &mut errs),
        (Object::VolumeSnapshot(a), Object::VolumeSnapshot(b))
            if a.spec.volume_ref != b.spec.volume_ref =>
        {
            errs.push("spec.volumeRef", "Invalid value: field is immutable");
        }
        (Object::MachineClass(a), Object::MachineClass(b)) if a.capabilities != b.capabilities => {
            errs.push("capabilities", "Invalid value: field is immutable");
        }
        (Object::VolumeClass(a), Object::VolumeClass(b)) if a.capabilities != b.capabilities => {
            errs.push("capabilities", "Invalid value: field is immutable");
        }
        // The poollets have passed the resources down to the runtimes: changed resources would
        // leave the holds behind them stale, so a different request is a new object. The pools
        // asked may change (the scheduler narrows them once it bound the Machine, a broker asks
        // its pools in turns): a pool no longer asked releases its hold, a newly asked one
        // answers. Only going back from some pools to every pool is refused (nobody chose them).
        (Object::Reservation(a), Object::Reservation(b)) => {
            if a.spec.resources != b.spec.resources {
                errs.push("spec.resources", "Invalid value: field is immutable");
            }
            if !a.spec.pools.is_empty() && b.spec.pools.is_empty() {
                errs.push(
                    "spec.pools",
                    "Invalid value: may not go back to every pool once some are named",
                );
            }
        }
        _ => {}
    }
    errs.0
}

/// Formats a list of field errors as one line (`a: x; b: y`).
pub fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
